//! The v2 verbs, after `ctlv2/command/*.go` of etcd 3.4: each reorders and
//! parses its flags, then (as etcdctl's `handleKey` does) builds the client
//! and syncs its endpoints, then checks its arguments, sends one request
//! (or a loop of waits) and prints.
//!
//! Printing is plain blocking writes between `block_on` calls, never inside
//! the runtime; stdout is flushed after each print, since a watch is often
//! ended by a signal.

use std::io::{Read, Write};
use std::process::{Child, Stdio};

use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use super::args::{self, flag, Flag, FlagKind};
use super::exit;
use super::format::{self, KeysResponse, Output};
use super::keys::{Action, Endpoint, KeysClient, KeysError};
use super::Globals;
use crate::global::Io;

/// urfave/cli gives every command `--help, -h`; it is reordered like the
/// verb's own flags.
const HELP: Flag = flag(&["help", "h"], FlagKind::Bool);
const TTL: Flag = flag(&["ttl"], FlagKind::Int);
const SORT: Flag = flag(&["sort"], FlagKind::Bool);
const QUORUM: Flag = flag(&["quorum", "q"], FlagKind::Bool);
const RECURSIVE: Flag = flag(&["recursive", "r"], FlagKind::Bool);
const AFTER_INDEX: Flag = flag(&["after-index"], FlagKind::Int);

const SET_FLAGS: &[Flag] =
    &[TTL, flag(&["swap-with-value"], FlagKind::String), flag(&["swap-with-index"], FlagKind::Int), HELP];
const GET_FLAGS: &[Flag] = &[SORT, QUORUM, HELP];
const TTL_ONLY: &[Flag] = &[TTL, HELP];
const MK_FLAGS: &[Flag] = &[flag(&["in-order"], FlagKind::Bool), TTL, HELP];
const RM_FLAGS: &[Flag] = &[
    flag(&["dir"], FlagKind::Bool),
    RECURSIVE,
    flag(&["with-value"], FlagKind::String),
    flag(&["with-index"], FlagKind::Int),
    HELP,
];
const LS_FLAGS: &[Flag] = &[SORT, RECURSIVE, flag(&["p"], FlagKind::Bool), QUORUM, HELP];
const WATCH_FLAGS: &[Flag] = &[flag(&["forever", "f"], FlagKind::Bool), AFTER_INDEX, RECURSIVE, HELP];
const EXEC_WATCH_FLAGS: &[Flag] = &[AFTER_INDEX, RECURSIVE, HELP];

/// Each verb's own flags: only these are reordered (see `args`).
fn verb_flags(verb: &str) -> Option<&'static [Flag]> {
    Some(match verb {
        "set" => SET_FLAGS,
        "get" => GET_FLAGS,
        "update" | "mkdir" | "setdir" | "updatedir" => TTL_ONLY,
        "mk" => MK_FLAGS,
        "rm" => RM_FLAGS,
        "rmdir" => &[HELP],
        "ls" => LS_FLAGS,
        "watch" => WATCH_FLAGS,
        "exec-watch" => EXEC_WATCH_FLAGS,
        _ => return None,
    })
}

fn verb_help(verb: &str) -> &'static str {
    super::help::verb(verb).unwrap_or_default()
}

/// etcdctl v2's other commands, which keelctl does not have.
const NOT_IMPLEMENTED: &[&str] = &["backup", "cluster-health", "member", "user", "role", "auth"];

/// How a command ends other than by success.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// `handleError`: `Error:  <err>`, the cluster detail, the exit code.
    #[error("{error}")]
    Handled { error: KeysError, code: i32 },
    /// `handleError` with an argument error of etcdctl's own.
    #[error("{message}")]
    BadArgs { message: &'static str },
    /// Text already complete, and an exit code.
    #[error("{text}")]
    Exit { text: String, code: i32 },
}

impl Failure {
    fn report(self, stderr: &mut dyn Write) -> i32 {
        let (text, code) = match self {
            Failure::Handled { error, code } => {
                let mut text = format!("Error:  {error}\n");
                if let Some(detail) = error.detail() {
                    text.push_str(&detail);
                    text.push('\n');
                }
                (text, code)
            }
            Failure::BadArgs { message } => (format!("Error:  {message}\n"), exit::BAD_ARGS),
            Failure::Exit { text, code } => (text, code),
        };
        let _ = stderr.write_all(text.as_bytes());
        let _ = stderr.flush();
        code
    }
}

fn server_error(error: KeysError) -> Failure {
    Failure::Handled { error, code: exit::SERVER_ERROR }
}

pub fn run(verb: &str, rest: &[String], globals: Globals, io: Io<'_>) -> i32 {
    if verb == "help" || verb == "h" {
        return super::help_command(rest, io);
    }
    let Some(flags) = verb_flags(verb) else {
        if NOT_IMPLEMENTED.contains(&verb) {
            let _ = writeln!(io.stderr, "keelctl does not implement the v2 {verb:?} command");
            return exit::BAD_ARGS;
        }
        // urfave/cli's help command, asked about an unknown topic.
        let _ = writeln!(io.stderr, "No help topic for '{verb}'");
        return 3;
    };
    let parsed = match args::parse_command(flags, rest) {
        Ok(p) => p,
        Err(e) => return super::incorrect_usage(io, verb_help(verb), &e.to_string()),
    };
    if parsed.bool("help") {
        let _ = io.stdout.write_all(verb_help(verb).as_bytes());
        return exit::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(io.stderr, "Error:  {e}");
            return exit::BAD_ARGS;
        }
    };
    let Io { stdout, stderr, stdin, .. } = io;
    let mut cmd = Cmd { runtime, client: None, globals, stdout, stderr, stdin, flags: parsed };
    let result = match cmd.connect() {
        Ok(()) => cmd.verb(verb),
        Err(failure) => Err(failure),
    };
    cmd.flush_debug();
    let _ = cmd.stdout.flush();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(failure) => failure.report(cmd.stderr),
    }
}

struct Cmd<'a> {
    runtime: Runtime,
    client: Option<KeysClient>,
    globals: Globals,
    stdout: &'a mut dyn Write,
    stderr: &'a mut dyn Write,
    stdin: &'a mut dyn Read,
    flags: args::Parsed,
}

impl Cmd<'_> {
    /// `mustNewClient`: parse the endpoints, then sync them from the
    /// members unless `--no-sync`.
    fn connect(&mut self) -> Result<(), Failure> {
        let mut endpoints = Vec::new();
        for e in &self.globals.endpoints {
            match Endpoint::parse(e) {
                Ok(ep) => endpoints.push(ep),
                Err(e) => return Err(Failure::Exit { text: format!("{e}\n"), code: exit::BAD_ARGS }),
            }
        }
        let mut client = KeysClient::new(endpoints, self.globals.timeout, self.globals.debug);
        let debug = self.globals.debug;
        if !self.globals.no_sync {
            if debug {
                self.debug(&format!("start to sync cluster using endpoints({})", client.endpoint_urls().join(",")));
            }
            let deadline = self.deadline();
            let synced = self.runtime.block_on(client.sync(Some(deadline)));
            self.client = Some(client);
            self.flush_debug();
            let client = self.client.as_mut().expect("just set");
            match synced {
                Err(KeysError::NoEndpoints) => {
                    let text = format!(
                        "etcd cluster has no published client endpoints.\nTry '--no-sync' if you want to access non-published client endpoints({}).\n",
                        client.endpoint_urls().join(",")
                    );
                    let _ = self.stderr.write_all(text.as_bytes());
                    return Err(server_error(KeysError::NoEndpoints));
                }
                Err(e) if e.is_connection_error() => {
                    return Err(Failure::Handled { error: e, code: exit::BAD_CONNECTION })
                }
                // Other sync failures are ignored: the given endpoints stay.
                _ => {}
            }
            if debug {
                let urls = client.endpoint_urls().join(",");
                self.debug(&format!("got endpoints({urls}) after sync"));
            }
        } else {
            self.client = Some(client);
        }
        if debug {
            let urls = self.client.as_ref().expect("set above").endpoint_urls().join(", ");
            self.debug(&format!("Cluster-Endpoints: {urls}"));
        }
        Ok(())
    }

    fn debug(&mut self, line: &str) {
        let _ = writeln!(self.stderr, "{line}");
    }

    fn flush_debug(&mut self) {
        if let Some(client) = self.client.as_mut() {
            for line in client.debug_lines.drain(..) {
                let _ = writeln!(self.stderr, "{line}");
            }
        }
    }

    /// `contextWithTotalTimeout`, from now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.globals.total_timeout
    }

    fn send(&mut self, action: &Action, deadline: Option<Instant>) -> Result<KeysResponse, Failure> {
        let client = self.client.as_mut().expect("connected before any verb");
        let result = self.runtime.block_on(client.keys(action, deadline));
        self.flush_debug();
        result.map_err(server_error)
    }

    fn print(&mut self, resp: &KeysResponse) {
        let printed = format::response_key(resp, &self.globals.output);
        let _ = self.stdout.write_all(printed.stdout.as_bytes());
        let _ = self.stdout.flush();
        let _ = self.stderr.write_all(printed.stderr.as_bytes());
    }

    fn simple(&self) -> bool {
        self.globals.output == Output::Simple
    }

    fn key(&self) -> Result<String, Failure> {
        self.flags.args.first().cloned().ok_or(Failure::BadArgs { message: "key required" })
    }

    /// `argOrStdin`: the argument, or all of stdin (which must not be
    /// empty).
    fn value(&mut self) -> Result<String, Failure> {
        if let Some(v) = self.flags.args.get(1) {
            return Ok(v.clone());
        }
        let mut buf = Vec::new();
        let _ = self.stdin.read_to_end(&mut buf);
        if buf.is_empty() {
            return Err(Failure::BadArgs { message: "value required" });
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn ttl(&self) -> i64 {
        self.flags.int("ttl")
    }

    fn verb(&mut self, verb: &str) -> Result<(), Failure> {
        match verb {
            "set" => self.set(),
            "get" => self.get(),
            "update" => self.write(Some(true)),
            "mk" => self.mk(),
            "mkdir" => self.dir(Some(false)),
            "setdir" => self.dir(None),
            "updatedir" => self.dir(Some(true)),
            "rm" => self.rm(),
            "rmdir" => self.rmdir(),
            "ls" => self.ls(),
            "watch" => self.watch(),
            "exec-watch" => self.exec_watch(),
            _ => unreachable!("verb_flags knows every verb"),
        }
    }

    fn set(&mut self) -> Result<(), Failure> {
        let key = self.key()?;
        let value = self.value()?;
        let action = Action::Set {
            key,
            value,
            prev_value: self.flags.string("swap-with-value").unwrap_or_default().to_owned(),
            prev_index: self.flags.int("swap-with-index") as u64,
            prev_exist: None,
            ttl: self.ttl(),
            dir: false,
        };
        let resp = self.send(&action, Some(self.deadline()))?;
        self.print(&resp);
        Ok(())
    }

    /// `update`: a set that requires the key to exist.
    fn write(&mut self, prev_exist: Option<bool>) -> Result<(), Failure> {
        let key = self.key()?;
        let value = self.value()?;
        let action = Action::Set {
            key,
            value,
            prev_value: String::new(),
            prev_index: 0,
            prev_exist,
            ttl: self.ttl(),
            dir: false,
        };
        let resp = self.send(&action, Some(self.deadline()))?;
        self.print(&resp);
        Ok(())
    }

    fn mk(&mut self) -> Result<(), Failure> {
        if !self.flags.bool("in-order") {
            return self.write(Some(false));
        }
        let key = self.key()?;
        let value = self.value()?;
        let resp = self.send(&Action::CreateInOrder { dir: key, value, ttl: self.ttl() }, Some(self.deadline()))?;
        self.print(&resp);
        Ok(())
    }

    /// `mkdir`, `setdir`, `updatedir`: silent in simple output.
    fn dir(&mut self, prev_exist: Option<bool>) -> Result<(), Failure> {
        let key = self.key()?;
        let action = Action::Set {
            key,
            value: String::new(),
            prev_value: String::new(),
            prev_index: 0,
            prev_exist,
            ttl: self.ttl(),
            dir: true,
        };
        let resp = self.send(&action, Some(self.deadline()))?;
        if !self.simple() {
            self.print(&resp);
        }
        Ok(())
    }

    fn get(&mut self) -> Result<(), Failure> {
        let key = self.key()?;
        let action =
            Action::Get { key, recursive: false, sorted: self.flags.bool("sort"), quorum: self.flags.bool("quorum") };
        let resp = self.send(&action, Some(self.deadline()))?;
        let node = resp.node();
        if node.dir {
            return Err(Failure::Exit { text: format!("{}: is a directory\n", node.key), code: exit::BAD_ARGS });
        }
        self.print(&resp);
        Ok(())
    }

    fn rm(&mut self) -> Result<(), Failure> {
        let key = self.key()?;
        let action = Action::Delete {
            key,
            prev_value: self.flags.string("with-value").unwrap_or_default().to_owned(),
            prev_index: self.flags.int("with-index") as u64,
            dir: self.flags.bool("dir"),
            recursive: self.flags.bool("recursive"),
        };
        self.delete(&action)
    }

    fn rmdir(&mut self) -> Result<(), Failure> {
        let key = self.key()?;
        self.delete(&Action::Delete { key, prev_value: String::new(), prev_index: 0, dir: true, recursive: false })
    }

    /// A deleted directory prints nothing in simple output.
    fn delete(&mut self, action: &Action) -> Result<(), Failure> {
        let resp = self.send(action, Some(self.deadline()))?;
        if !resp.node().dir || !self.simple() {
            self.print(&resp);
        }
        Ok(())
    }

    /// `ls`: no total timeout (etcdctl passes `context.TODO()`).
    fn ls(&mut self) -> Result<(), Failure> {
        let key = self.flags.args.first().cloned().unwrap_or_else(|| "/".to_owned());
        let action = Action::Get {
            key,
            recursive: self.flags.bool("recursive"),
            sorted: self.flags.bool("sort"),
            quorum: self.flags.bool("quorum"),
        };
        let resp = self.send(&action, None)?;
        if self.simple() {
            let text = format::ls_simple(&resp, self.flags.bool("p"));
            let _ = self.stdout.write_all(text.as_bytes());
        } else {
            self.print(&resp);
        }
        Ok(())
    }

    /// The first wait index: `--after-index` + 1, or 0 (from now).
    fn first_wait_index(&self) -> u64 {
        match self.flags.int("after-index") {
            n if n > 0 => n as u64 + 1,
            _ => 0,
        }
    }

    /// One event from a wait loop (`httpWatcher.Next`): empty 200s are
    /// retried, and the next wait starts after this event. `None` when
    /// SIGINT came first.
    fn next_event(
        &mut self,
        key: &str,
        wait_index: &mut u64,
        interrupt: &mut Signal,
    ) -> Result<Option<KeysResponse>, Failure> {
        let recursive = self.flags.bool("recursive");
        let client = self.client.as_mut().expect("connected before any verb");
        loop {
            let action = Action::Wait { key: key.to_owned(), wait_index: *wait_index, recursive };
            let result = self.runtime.block_on(async {
                tokio::select! {
                    r = client.keys(&action, None) => Some(r),
                    _ = interrupt.recv() => None,
                }
            });
            for line in client.debug_lines.drain(..) {
                let _ = writeln!(self.stderr, "{line}");
            }
            match result {
                None => return Ok(None),
                Some(Err(KeysError::EmptyBody)) => continue,
                Some(Err(e)) => return Err(server_error(e)),
                Some(Ok(resp)) => {
                    *wait_index = resp.node().modified_index + 1;
                    return Ok(Some(resp));
                }
            }
        }
    }

    fn interrupt_signal(&self) -> Result<Signal, Failure> {
        let _guard = self.runtime.enter();
        signal(SignalKind::interrupt())
            .map_err(|e| Failure::Exit { text: format!("Error:  {e}\n"), code: exit::BAD_ARGS })
    }

    fn watch(&mut self) -> Result<(), Failure> {
        let key = self.key()?;
        let forever = self.flags.bool("forever");
        let recursive = self.flags.bool("recursive");
        let mut interrupt = self.interrupt_signal()?;
        let mut wait_index = self.first_wait_index();
        loop {
            let Some(resp) = self.next_event(&key, &mut wait_index, &mut interrupt)? else {
                return Ok(());
            };
            let node = resp.node();
            if node.dir {
                continue;
            }
            if recursive {
                let _ = writeln!(self.stdout, "[{}] {}", resp.action, node.key);
            }
            self.print(&resp);
            if !forever {
                return Ok(());
            }
        }
    }

    fn exec_watch(&mut self) -> Result<(), Failure> {
        let args = self.flags.args.clone();
        if args.len() < 2 {
            return Err(Failure::BadArgs { message: "key and command to exec required" });
        }
        // After reordering, `--` survives only right after the key.
        let (key, command) = if args.iter().skip(1).any(|a| a == "--") {
            (args[0].clone(), args[2..].to_vec())
        } else {
            (args[args.len() - 1].clone(), args[..args.len() - 1].to_vec())
        };
        let mut interrupt = self.interrupt_signal()?;
        let mut wait_index = self.first_wait_index();
        let mut children: Vec<Child> = Vec::new();
        loop {
            let Some(resp) = self.next_event(&key, &mut wait_index, &mut interrupt)? else {
                return Ok(());
            };
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            let node = resp.node();
            if node.dir {
                let _ = writeln!(self.stderr, "Ignored dir {} change", node.key);
                continue;
            }
            let Some((program, program_args)) = command.split_first() else {
                return Err(Failure::BadArgs { message: "key and command to exec required" });
            };
            let _ = self.stdout.flush();
            let spawned = std::process::Command::new(program)
                .args(program_args)
                .env_clear()
                .envs(self.globals.env.iter().map(|(k, v)| (k, v)))
                .env("ETCD_WATCH_ACTION", &resp.action)
                .env("ETCD_WATCH_MODIFIED_INDEX", node.modified_index.to_string())
                .env("ETCD_WATCH_KEY", &node.key)
                .env("ETCD_WATCH_VALUE", &node.value)
                .stdin(Stdio::null())
                .spawn();
            match spawned {
                // Not waited for: etcdctl runs the command asynchronously.
                Ok(child) => children.push(child),
                Err(e) => {
                    // Go's `fmt.Fprintf(os.Stderr, err.Error())`: no newline.
                    let text = if e.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
                        format!("exec: {}: executable file not found in $PATH", crate::gostr::quote(program.as_bytes()))
                    } else {
                        format!("fork/exec {program}: {e}")
                    };
                    return Err(Failure::Exit { text, code: exit::BAD_ARGS });
                }
            }
        }
    }
}
