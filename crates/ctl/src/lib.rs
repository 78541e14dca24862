//! keelctl: an etcdctl-compatible command line for Keel (and etcd), on
//! `keel-client`.
//!
//! Scripts written for etcdctl v3.4 (`ETCDCTL_API=3`) run unchanged: the
//! same flags and `ETCDCTL_*` variables, and byte for byte the same stdout,
//! stderr and exit codes. The parts that make that so:
//!
//! - [`flags`]: spf13/pflag's grammar and error texts;
//! - cobra's command lookup (prefix matching, suggestions) in [`run`] and
//!   `command`; etcdctl's help text in `help`;
//! - `printer`: the simple, json, fields and protobuf formats;
//! - `error`: etcdctl's exit codes and error lines, including the log line
//!   clientv3 writes for a failed call.
//!
//! `ETCDCTL_API=2` (or a first word `v2`) selects etcdctl's v2 mode, in
//! `v2`: the key verbs over the v2 HTTP keys API.

pub mod flags;

mod command;
mod discovery;
mod error;
mod global;
mod gostr;
mod help;
mod printer;
mod progress;
mod v2;

use std::io::Write;

pub use error::exit;
pub use global::Io;

use command::{Command, Entry, Group, HELP};
use error::Failure;
use flags::{FlagSpec, Parsed};
use global::{Context, GLOBAL_FLAGS};
use help::{Listing, Usage};

/// The top-level command names keelctl implements.
pub fn implemented_commands() -> Vec<&'static str> {
    command::COMMANDS.iter().map(|c| c.name()).collect()
}

/// Runs one etcdctl command line (`args` without the program name) and
/// returns the exit code.
pub fn run(args: &[String], env: Vec<(String, String)>, io: Io<'_>) -> i32 {
    if let Some(code) = command::completion::hidden_entry(args, io.stdout, io.stderr) {
        return code;
    }
    if let Some(skip) = v2::selected(args, &env) {
        return v2::run(&args[skip..], env, io);
    }
    let stderr_is_terminal = io.stderr_is_terminal;
    match dispatch(args, env, io.stdout, io.stderr, io.stdin, stderr_is_terminal) {
        Ok(code) => code,
        Err(failed) => {
            let (failure, stdout, stderr) = *failed;
            failure.report_to(stdout, stderr, stderr_is_terminal)
        }
    }
}

/// A failure with the streams to report it on; boxed, as it is large.
type Failed<'a> = Box<(Failure, &'a mut dyn Write, &'a mut dyn Write)>;

fn dispatch<'a>(
    args: &[String],
    env: Vec<(String, String)>,
    stdout: &'a mut dyn Write,
    stderr: &'a mut dyn Write,
    stdin: &'a mut dyn std::io::Read,
    stderr_is_terminal: bool,
) -> Result<i32, Failed<'a>> {
    let root_specs: Vec<FlagSpec> = GLOBAL_FLAGS.iter().copied().chain([HELP]).collect();
    let words = strip_flags(args, &root_specs);
    let Some(word) = words.first() else {
        // The root command has no action of its own: cobra shows its help.
        let mut parsed = Parsed::new(&root_specs);
        if let Err(error) = parsed.parse(args) {
            return Err(Box::new((Failure::Flag { error, usage: root_usage() }, stdout, stderr)));
        }
        let _ = stdout.write_all(root_usage().as_bytes());
        return Ok(0);
    };
    let name = command::find_next(command::ETCDCTL_COMMANDS, word)
        .or_else(|| command::KEELCTL_ONLY.iter().find(|name| **name == word.as_str()).copied());
    let Some(name) = name else {
        let mut message = format!("unknown command {} for \"etcdctl\"", gostr::quote(word.as_bytes()));
        let suggestions = command::suggestions(word);
        if !suggestions.is_empty() {
            message.push_str("\n\nDid you mean this?\n");
            for s in suggestions {
                message.push_str(&format!("\t{s}\n"));
            }
        }
        return Err(Box::new((Failure::UnknownCommand { message }, stdout, stderr)));
    };
    let rest = without_word(args, word);
    if name == "help" {
        return Ok(help_command(&rest, &root_specs, stdout, stderr));
    }
    let (cmd, parent, rest) = match command::lookup(name) {
        None => {
            let failure = Failure::exit(exit::ERROR, format!("keelctl does not implement \"{name}\" yet"));
            return Err(Box::new((failure, stdout, stderr)));
        }
        Some(Entry::Leaf(cmd)) => (cmd, None, rest),
        Some(Entry::Group(group)) => {
            let group_specs: Vec<FlagSpec> = group.flags.iter().chain(GLOBAL_FLAGS).copied().chain([HELP]).collect();
            let words = strip_flags(&rest, &group_specs);
            match words.first().and_then(|w| Some((group.find(w)?, w))) {
                Some((cmd, word)) => (cmd, Some(group), without_word(&rest, word)),
                None => {
                    // No (known) subcommand: cobra parses the group's flags,
                    // then shows its help, as a group cannot run.
                    let mut parsed = Parsed::new(&group_specs);
                    if let Err(error) = parsed.parse(&rest) {
                        return Err(Box::new((Failure::Flag { error, usage: group_usage(group) }, stdout, stderr)));
                    }
                    let _ = stdout.write_all(group_usage(group).as_bytes());
                    return Ok(0);
                }
            }
        }
    };
    let inherited = inherited_flags(parent);
    let specs: Vec<FlagSpec> = cmd.flags.iter().chain(&inherited).copied().chain([HELP]).collect();
    let mut parsed = Parsed::new(&specs);
    if let Err(error) = parsed.parse(&rest) {
        return Err(Box::new((Failure::Flag { error, usage: command_usage(cmd, parent) }, stdout, stderr)));
    }
    if parsed.bool("help") {
        let _ = stdout.write_all(command_usage(cmd, parent).as_bytes());
        return Ok(0);
    }
    let positional = parsed.positional.clone();
    let mut ctx = Context::new(Io { stdout, stderr, stdin, stderr_is_terminal }, parsed, env);
    match (cmd.run)(&mut ctx, &positional) {
        Ok(()) => Ok(0),
        Err(failure) => {
            let Io { stdout, stderr, .. } = ctx.into_io();
            Err(Box::new((failure, stdout, stderr)))
        }
    }
}

/// cobra's `argsMinusFirstX`: `args` without the first `word`, the command
/// name found there.
pub(crate) fn without_word(args: &[String], word: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == word).expect("the word came from args");
    args[..at].iter().chain(&args[at + 1..]).cloned().collect()
}

/// A subcommand's inherited flags: its group's persistent flags and the
/// global ones.
fn inherited_flags(parent: Option<&Group>) -> Vec<FlagSpec> {
    parent.map_or(&[][..], |g| g.flags).iter().chain(GLOBAL_FLAGS).copied().collect()
}

/// cobra's `stripFlags`: the non-flag words, skipping the value after a
/// flag that takes one. An unknown `--flag` is taken to have a value.
pub(crate) fn strip_flags(args: &[String], specs: &[FlagSpec]) -> Vec<String> {
    let takes_no_value = |name: &str| specs.iter().any(|s| s.name == name && s.takes_no_value());
    let short_takes_no_value =
        |c: Option<char>| specs.iter().any(|s| s.shorthand.is_some() && s.shorthand == c && s.takes_no_value());
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        i += 1;
        if s == "--" {
            break;
        }
        let long_with_value = s.starts_with("--") && !s.contains('=') && !takes_no_value(&s[2..]);
        let short_with_value =
            s.starts_with('-') && !s.contains('=') && s.chars().count() == 2 && !short_takes_no_value(s.chars().nth(1));
        if long_with_value || short_with_value {
            if args.len() - i <= 1 {
                break;
            }
            i += 1;
            continue;
        }
        if !s.is_empty() && !s.starts_with('-') {
            words.push(s.clone());
        }
    }
    words
}

fn root_usage() -> String {
    root_page(true)
}

/// The root's help; cobra's `help` with an unknown topic prints it before
/// the root has its help flag, so without that flag's line.
fn root_page(help_flag: bool) -> String {
    Usage {
        name: "etcdctl",
        short: "A simple command line client for etcd3.",
        use_line: "etcdctl [flags]".to_owned(),
        listing: Some(Listing {
            version: Some(command::version::ETCDCTL_VERSION),
            api_version: command::version::API_VERSION,
            commands: command::ROOT_LISTING,
        }),
        long: "",
        local: GLOBAL_FLAGS,
        help_for: if help_flag { "etcdctl" } else { "" },
        inherited: &[],
    }
    .render()
}

fn group_usage(group: &Group) -> String {
    let commands: Vec<(&str, &str)> = group.subcommands.iter().map(|c| (c.name, c.short)).collect();
    Usage {
        name: group.name,
        short: group.short,
        use_line: format!("etcdctl {} [flags]", group.usage),
        listing: Some(Listing { version: None, api_version: command::version::API_VERSION, commands: &commands }),
        long: group.long,
        local: group.flags,
        help_for: group.name,
        inherited: GLOBAL_FLAGS,
    }
    .render()
}

/// A leaf's help; a subcommand's name and use line carry its group's name.
pub(crate) fn command_usage(cmd: &Command, parent: Option<&Group>) -> String {
    let path = match parent {
        Some(group) => format!("{} {}", group.name, cmd.name),
        None => cmd.name.to_owned(),
    };
    let parent_path = parent.map_or(String::new(), |g| format!("{} ", g.name));
    let flags = if command::completion::flags_in_use_line(cmd, parent) { " [flags]" } else { "" };
    Usage {
        name: &path,
        short: cmd.short,
        use_line: format!("etcdctl {parent_path}{}{flags}", cmd.usage),
        listing: None,
        long: cmd.long,
        local: cmd.flags,
        help_for: cmd.name,
        inherited: &inherited_flags(parent),
    }
    .render()
}

/// cobra's `help [command]`: the help of the deepest command the words
/// name, or the root's.
fn help_command(args: &[String], root_specs: &[FlagSpec], stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let words = strip_flags(args, root_specs);
    // etcdctl's names by prefix, keelctl's own only in full.
    let first = words.first().and_then(|w| {
        command::find_next(command::ETCDCTL_COMMANDS, w).or_else(|| command::lookup(w).map(|e| e.name()))
    });
    let mut parsed = Parsed::new(root_specs);
    if (parsed.parse(args).is_ok() && parsed.bool("help")) || first == Some("help") {
        let _ = stdout.write_all(command_usage(&help::HELP_COMMAND, None).as_bytes());
        return 0;
    }
    let found = first.and_then(command::lookup);
    let text = match found {
        Some(Entry::Leaf(cmd)) => command_usage(cmd, None),
        Some(Entry::Group(group)) => match words.get(1).and_then(|w| group.find(w)) {
            Some(cmd) => command_usage(cmd, Some(group)),
            None => group_usage(group),
        },
        None => {
            if first.is_none() && !words.is_empty() {
                // cobra's `Printf("Unknown help topic %#q\n", args)`.
                let topics: Vec<String> = words.iter().map(|w| help::go_backquote(w)).collect();
                let _ = writeln!(stderr, "Unknown help topic [{}]", topics.join(" "));
                root_page(false)
            } else {
                root_usage()
            }
        }
    };
    let _ = stdout.write_all(text.as_bytes());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> &'static Group {
        match command::lookup("lease") {
            Some(Entry::Group(group)) => group,
            _ => panic!("lease is a group"),
        }
    }

    // Captured from etcdctl 3.4.23 (`lease --help`, `lease grant --help`).
    #[test]
    fn group_and_subcommand_help_match_etcdctl() {
        let group = group_usage(lease());
        assert!(group.starts_with("NAME:\n\tlease - Lease related commands\n\nUSAGE:\n\tetcdctl lease <subcommand> [flags]\n\nAPI VERSION:\n\t3.4\n\n\nCOMMANDS:\n\tgrant\t\tCreates leases\n\tkeep-alive\tKeeps leases alive (renew)\n\tlist\t\tList all active leases\n\trevoke\t\tRevokes leases\n\ttimetolive\tGet lease information\n\nOPTIONS:\n  -h, --help[=false]\thelp for lease\n\nGLOBAL OPTIONS:\n      --cacert=\"\"\t\t\t\tverify certificates of TLS-enabled secure servers using this CA bundle\n"));
        let grant = lease().find("grant").expect("grant");
        assert!(command_usage(grant, Some(lease())).starts_with("NAME:\n\tlease grant - Creates leases\n\nUSAGE:\n\tetcdctl lease grant <ttl> [flags]\n\nOPTIONS:\n  -h, --help[=false]\thelp for grant\n\n"));
    }

    #[test]
    fn subcommands_prefix_match() {
        assert_eq!(lease().find("gra").map(|c| c.name), Some("grant"));
        assert_eq!(lease().find("keep").map(|c| c.name), Some("keep-alive"));
        assert!(lease().find("x").is_none());
    }

    #[test]
    fn a_group_without_a_subcommand_prints_its_help() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args: Vec<String> = ["lease", "foo"].iter().map(|s| s.to_string()).collect();
        let io = Io { stdout: &mut out, stderr: &mut err, stdin: &mut &b""[..], stderr_is_terminal: false };
        let code = run(&args, Vec::new(), io);
        assert_eq!(code, 0);
        assert_eq!(String::from_utf8(out).unwrap(), group_usage(lease()));
        assert!(err.is_empty());
    }
}
