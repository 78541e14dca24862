//! etcdctl v2 (`ETCDCTL_API=2`): the key verbs of etcdctl 3.4's `ctlv2`
//! over etcd's v2 HTTP keys API, printing what etcdctl 3.4.23 prints.
//!
//! - [`args`]: Go `flag` and urfave/cli's argument reordering;
//! - [`http`]: a small HTTP/1.1 client;
//! - [`keys`]: etcd's v2 Go client (endpoint sync, failover, errors);
//! - [`format`]: `printResponseKey` and `ls`'s listing;
//! - [`commands`]: the verbs.
//!
//! Not here: TLS (`https://` endpoints, `--ca-file`, `--cert-file`,
//! `--key-file`), `--username`, `--discovery-srv`, and the v2 `member`,
//! `user`, `role`, `auth`, `backup` and `cluster-health` commands.

mod args;
mod commands;
mod format;
mod help;
mod http;
mod keys;

use std::time::Duration;

use args::{flag, Flag, FlagKind};

use crate::global::Io;

/// etcdctl v2's exit codes (`ctlv2/command/error.go`).
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const BAD_ARGS: i32 = 1;
    pub const BAD_CONNECTION: i32 = 2;
    pub const SERVER_ERROR: i32 = 4;
}

/// The application's flags (`ctlv2/ctl.go`), parsed before the command
/// name and never reordered.
const GLOBAL_FLAGS: &[Flag] = &[
    flag(&["debug"], FlagKind::Bool),
    flag(&["no-sync"], FlagKind::Bool),
    flag(&["output", "o"], FlagKind::String),
    flag(&["discovery-srv", "D"], FlagKind::String),
    flag(&["insecure-discovery"], FlagKind::Bool),
    flag(&["peers", "C"], FlagKind::String),
    flag(&["endpoint"], FlagKind::String),
    flag(&["endpoints"], FlagKind::String),
    flag(&["cert-file"], FlagKind::String),
    flag(&["key-file"], FlagKind::String),
    flag(&["ca-file"], FlagKind::String),
    flag(&["username", "u"], FlagKind::String),
    flag(&["timeout"], FlagKind::Duration),
    flag(&["total-timeout"], FlagKind::Duration),
    flag(&["help", "h"], FlagKind::Bool),
    flag(&["version", "v"], FlagKind::Bool),
];

const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:4001";

/// The global settings a command runs with.
#[derive(Debug, Clone)]
pub struct Globals {
    pub debug: bool,
    pub no_sync: bool,
    pub output: format::Output,
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    pub total_timeout: Duration,
    /// The environment commands pass on (`exec-watch`), without
    /// `ETCDCTL_API`, which etcdctl unsets before anything else.
    pub env: Vec<(String, String)>,
}

/// Whether this command line is for v2: `ETCDCTL_API=2` (as etcdctl
/// decides), or keelctl's own `v2` namespace word first.
pub fn selected(args: &[String], env: &[(String, String)]) -> Option<usize> {
    if env.iter().any(|(k, v)| k == "ETCDCTL_API" && v == "2") {
        Some(0)
    } else if args.first().is_some_and(|a| a == "v2") {
        Some(1)
    } else {
        None
    }
}

/// Runs one etcdctl v2 command line (without the program name) and returns
/// the exit code.
pub fn run(args: &[String], env: Vec<(String, String)>, io: Io<'_>) -> i32 {
    let parsed = match args::parse(GLOBAL_FLAGS, args) {
        Ok(p) => p,
        Err(e) => {
            let _ = write!(io.stdout, "Incorrect Usage. {e}\n\n{}", help::APP);
            let _ = writeln!(io.stderr, "{e}");
            return exit::BAD_ARGS;
        }
    };
    if parsed.bool("help") {
        let _ = io.stdout.write_all(help::APP.as_bytes());
        return exit::SUCCESS;
    }
    if parsed.bool("version") {
        let _ = io.stdout.write_all(b"etcdctl version: 3.4.23\nAPI version: 2\n");
        return exit::SUCCESS;
    }
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let flag_or_env = |name: &str, var: &str| {
        parsed.string(name).filter(|v| !v.is_empty()).map(str::to_owned).or_else(|| lookup(var))
    };
    let endpoints = flag_or_env("endpoints", "ETCDCTL_ENDPOINTS")
        .or_else(|| flag_or_env("endpoint", "ETCDCTL_ENDPOINT"))
        .or_else(|| flag_or_env("peers", "ETCDCTL_PEERS"))
        .unwrap_or_else(|| DEFAULT_ENDPOINTS.to_owned());
    let duration = |name: &str, default: Duration| {
        parsed.string(name).and_then(|v| crate::gostr::parse_duration(v).ok()).unwrap_or(default)
    };
    let globals = Globals {
        debug: parsed.bool("debug"),
        no_sync: parsed.bool("no-sync"),
        output: format::Output::parse(parsed.string("output").unwrap_or("simple")),
        endpoints: endpoints.split(',').map(str::to_owned).collect(),
        timeout: duration("timeout", Duration::from_secs(2)),
        total_timeout: duration("total-timeout", Duration::from_secs(5)),
        env: env.iter().filter(|(k, _)| k != "ETCDCTL_API").cloned().collect(),
    };
    let Some(name) = parsed.args.first() else {
        // No command: urfave/cli shows the application's help.
        let _ = io.stdout.write_all(help::APP.as_bytes());
        return exit::SUCCESS;
    };
    commands::run(name, &parsed.args[1..], globals, io)
}

/// urfave/cli's answer to a command flag it cannot parse: the error and the
/// command's help on stdout, the error again on stderr (etcdctl's `main`).
fn incorrect_usage(io: Io<'_>, verb_help: &str, error: &str) -> i32 {
    let _ = write!(io.stdout, "Incorrect Usage: {error}\n\n{verb_help}");
    let _ = writeln!(io.stderr, "{error}");
    exit::BAD_ARGS
}

/// urfave/cli's `help [command]` (alias `h`).
fn help_command(args: &[String], io: Io<'_>) -> i32 {
    let text = match args.first() {
        None => help::APP,
        Some(verb) => match help::verb(verb) {
            Some(text) => text,
            None => {
                let _ = writeln!(io.stderr, "No help topic for '{verb}'");
                return 3;
            }
        },
    };
    let _ = io.stdout.write_all(text.as_bytes());
    exit::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn v2_is_selected_by_the_environment_or_a_first_word() {
        let api = |v: &str| vec![("ETCDCTL_API".to_owned(), v.to_owned())];
        assert_eq!(selected(&words(&["get", "/x"]), &api("2")), Some(0));
        assert_eq!(selected(&words(&["get", "/x"]), &api("3")), None);
        assert_eq!(selected(&words(&["v2", "get", "/x"]), &[]), Some(1));
        assert_eq!(selected(&words(&["get", "v2"]), &[]), None);
    }

    fn run_v2(s: &[&str]) -> (String, String, i32) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = Io { stdout: &mut out, stderr: &mut err, stdin: &mut &b""[..], stderr_is_terminal: false };
        let code = run(&words(s), Vec::new(), io);
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), code)
    }

    // Captured from `ETCDCTL_API=2 etcdctl` 3.4.23; none of these reach a server.
    #[test]
    fn usage_errors_and_help_match_etcdctl() {
        let (out, err, code) = run_v2(&["--bogus", "ls"]);
        assert_eq!((err.as_str(), code), ("flag provided but not defined: -bogus\n", 1));
        assert_eq!(out, format!("Incorrect Usage. flag provided but not defined: -bogus\n\n{}", help::APP));
        let (out, err, code) = run_v2(&["set", "--ttl", "abc", "/x", "v"]);
        assert_eq!((err.as_str(), code), ("invalid value \"abc\" for flag -ttl: parse error\n", 1));
        assert!(out.starts_with(
            "Incorrect Usage: invalid value \"abc\" for flag -ttl: parse error\n\nNAME:\n   etcdctl set - "
        ));
        assert_eq!(run_v2(&["help", "bogus"]), (String::new(), "No help topic for 'bogus'\n".to_owned(), 3));
        assert_eq!(run_v2(&["-v"]).0, "etcdctl version: 3.4.23\nAPI version: 2\n");
        assert_eq!(run_v2(&["rmdir", "-h"]).0, help::verb("rmdir").unwrap());
    }
}
