//! `lock <name> [command ...]`: etcd's `concurrency.Mutex` recipe, held
//! until Ctrl-C (SIGINT) or SIGTERM, or while a command runs.
//!
//! As etcdctl does, the session's lease is never revoked: releasing deletes
//! the lock key, and the lease, no longer kept alive, expires after
//! `--ttl` seconds.

use std::io::Write;

use keel_client::concurrency::{Mutex, Session, SessionOptions};
use keel_client::{Client, ClientError};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::Command;
use crate::error::{exit, Failure, RpcError};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;
use crate::printer::Printer;

pub const LOCK: Command = Command {
    name: "lock",
    short: "Acquires a named lock",
    usage: "lock <lockname> [exec-command arg1 arg2 ...]",
    long: "",
    flags: &[FlagSpec::new("ttl", Kind::Int64, "10", "timeout for session")],
    run,
};

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let Some((name, command)) = args.split_first() else {
        return Err(Failure::exit(
            exit::BAD_ARGS,
            "lock takes a lock name argument and an optional command to execute",
        ));
    };
    let printer = ctx.setup()?;
    let ttl = ctx.flags.int64("ttl");
    let failed = Failed::new(&ctx.flags);
    let client = connect(ctx)?;
    let out = take_stdout(ctx);
    let holder = Holder { client: &client, printer, failed: &failed };
    let result = ctx.block_on(holder.hold(name, command, ttl, &mut *out));
    ctx.io.stdout = out;
    result.and_then(|r| r)
}

struct Holder<'h> {
    client: &'h Client,
    printer: Printer,
    failed: &'h Failed,
}

impl Holder<'_> {
    async fn hold(self, name: &str, command: &[String], ttl: i64, out: &mut dyn Write) -> Result<(), Failure> {
        let mut interrupt = Interrupt::new()?;
        let options = SessionOptions { ttl, lease: None };
        let session = Session::new(self.client, options).await.map_err(|e| self.failed.of(e))?;
        let mut mutex = Mutex::new(&session, name.as_bytes());
        let result = self.locked(&session, &mut mutex, command, out, &mut interrupt).await;
        // Left to expire, as etcdctl leaves it.
        session.orphan();
        result
    }

    async fn locked(
        &self,
        session: &Session,
        mutex: &mut Mutex,
        command: &[String],
        out: &mut dyn Write,
        interrupt: &mut Interrupt,
    ) -> Result<(), Failure> {
        let failed = |e| self.failed.of(e);
        let interrupted = tokio::select! {
            locked = mutex.lock() => {
                locked.map_err(failed)?;
                false
            }
            () = interrupt.recv() => true,
        };
        if interrupted {
            // Leave the queue, as clientv3's Mutex does when its wait is
            // cancelled.
            let _ = mutex.unlock().await;
            return Err(Failure::exit(exit::ERROR, "context canceled"));
        }
        if !command.is_empty() {
            let key = String::from_utf8_lossy(mutex.key()).into_owned();
            let revision = mutex.header().map_or(0, |h| h.revision);
            let env = vec![("ETCD_LOCK_KEY".to_owned(), key), ("ETCD_LOCK_REV".to_owned(), revision.to_string())];
            let _ = out.flush();
            let ran = run_command(command.to_vec(), env).await;
            let unlocked = mutex.unlock().await;
            ran?;
            return unlocked.map_err(failed);
        }
        let response = self.client.get(mutex.key().to_vec()).await.map_err(failed)?;
        if response.kvs.is_empty() {
            return Err(Failure::exit(exit::ERROR, "lock lost on init"));
        }
        self.printer.get(out, &response)?;
        tokio::select! {
            () = interrupt.recv() => mutex.unlock().await.map_err(failed),
            () = session.expired() => Err(Failure::exit(exit::ERROR, "session expired")),
        }
    }
}

/// Connects (under `--command-timeout`) and returns the client.
pub(super) fn connect(ctx: &mut Context<'_>) -> Result<Client, Failure> {
    ctx.call(|client| async move { Ok::<_, ClientError>(client) })
}

/// Takes the command's stdout out of the context, a sink standing in, so
/// a future run by `Context::block_on` (which borrows the context) can
/// print as it goes; put it back after.
pub(super) fn take_stdout<'a>(ctx: &mut Context<'a>) -> &'a mut dyn Write {
    // `Sink` is zero-sized: leaking it leaks nothing.
    std::mem::replace(&mut ctx.io.stdout, Box::leak(Box::new(std::io::sink())))
}

/// Turns client errors into what etcdctl reports for them.
pub(super) struct Failed {
    target: String,
}

impl Failed {
    pub(super) fn new(flags: &Parsed) -> Failed {
        Failed { target: log_target(flags) }
    }

    pub(super) fn of(&self, error: ClientError) -> Failure {
        match error {
            ClientError::SessionExpired => Failure::exit(exit::ERROR, "session expired"),
            other => Failure::Rpc { rpc: RpcError::from_client(&other), target: self.target.clone() },
        }
    }
}

/// The endpoint clientv3's log lines name: the first, without scheme.
pub(super) fn log_target(flags: &Parsed) -> String {
    let first = flags.strings("endpoints").first().cloned().unwrap_or_default();
    match first.split_once("://") {
        Some((_, rest)) => rest.to_owned(),
        None => first,
    }
}

/// SIGINT or SIGTERM, which etcdctl's lock and elect stop on. Once made,
/// neither kills the process any more.
pub(super) struct Interrupt {
    int: Signal,
    term: Signal,
}

impl Interrupt {
    pub(super) fn new() -> Result<Interrupt, Failure> {
        let listen = |kind| signal(kind).map_err(|e| Failure::exit(exit::ERROR, e.to_string()));
        Ok(Interrupt { int: listen(SignalKind::interrupt())?, term: listen(SignalKind::terminate())? })
    }

    pub(super) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs `command` with the process's stdio and `env` added, as Go's
/// `exec.Command(...).Run()`; failures are Go's error texts.
async fn run_command(command: Vec<String>, env: Vec<(String, String)>) -> Result<(), Failure> {
    let waited = tokio::task::spawn_blocking(move || -> Result<std::process::ExitStatus, String> {
        let path = look_path(&command[0])?;
        let mut child = std::process::Command::new(&path);
        std::os::unix::process::CommandExt::arg0(&mut child, &command[0]);
        child.args(&command[1..]).envs(env);
        let status =
            child.status().map_err(|e| format!("fork/exec {}: {}", path.display(), crate::gostr::errno_text(&e)))?;
        Ok(status)
    })
    .await
    .map_err(|e| Failure::exit(exit::ERROR, e.to_string()))?;
    let status = waited.map_err(|message| Failure::exit(exit::ERROR, message))?;
    match exit_error(status) {
        None => Ok(()),
        Some(message) => Err(Failure::exit(exit::ERROR, message)),
    }
}

/// Go's `exec.Command`: a name with a slash is used as is (a bad one fails
/// to start), others are looked up in `$PATH` (`exec.LookPath`).
fn look_path(name: &str) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Ok(name.into());
    }
    let executable = |path: &std::path::Path| {
        std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = std::path::Path::new(dir).join(name);
        if executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!("exec: {}: executable file not found in $PATH", crate::gostr::quote(name.as_bytes())))
}

/// Go's `*exec.ExitError` text for a command that failed; `None` if it
/// succeeded.
fn exit_error(status: std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return (code != 0).then(|| format!("exit status {code}"));
    }
    let signal = status.signal()?;
    let name = match signal {
        1 => "hangup".to_owned(),
        2 => "interrupt".to_owned(),
        3 => "quit".to_owned(),
        6 => "aborted".to_owned(),
        9 => "killed".to_owned(),
        11 => "segmentation fault".to_owned(),
        13 => "broken pipe".to_owned(),
        15 => "terminated".to_owned(),
        other => format!("signal {other}"),
    };
    let core = if status.core_dumped() { " (core dumped)" } else { "" };
    Some(format!("signal: {name}{core}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn command_failures_read_as_go_s() {
        assert_eq!(exit_error(std::process::ExitStatus::from_raw(0)), None);
        assert_eq!(exit_error(std::process::ExitStatus::from_raw(1 << 8)).unwrap(), "exit status 1");
        assert_eq!(exit_error(std::process::ExitStatus::from_raw(9)).unwrap(), "signal: killed");
        // Captured from etcdctl 3.4.23.
        assert_eq!(
            look_path("keel-compat-no-such-command").unwrap_err(),
            "exec: \"keel-compat-no-such-command\": executable file not found in $PATH"
        );
        assert_eq!(look_path("./no-such").unwrap(), std::path::Path::new("./no-such"));
    }

    #[test]
    fn log_target_drops_the_scheme() {
        let mut flags = Parsed::new(crate::global::GLOBAL_FLAGS);
        flags.set("endpoints", "http://127.0.0.1:2379,b").unwrap();
        assert_eq!(log_target(&flags), "127.0.0.1:2379");
    }
}
