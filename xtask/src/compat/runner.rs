//! Runs one etcdctl invocation against one server and captures what it printed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Generous next to `--command-timeout`: only a wedged etcdctl or server gets here.
const HARD_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: &str = "--command-timeout=5s";
const DIAL_TIMEOUT: &str = "--dial-timeout=2s";
/// etcdctl v2's per-request header timeout and whole-command timeout (its defaults, spelt out;
/// a v2 `watch` is not bound by either).
const V2_TIMEOUTS: [&str; 2] = ["--timeout=2s", "--total-timeout=5s"];
/// How long a background watch gets to connect, and its events to arrive. etcdctl says
/// nothing when its watch is in place, so the harness can only wait.
const WATCH_SETTLE: Duration = Duration::from_millis(700);

/// How long an interrupted etcdctl gets to release what it holds and exit.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// A command run in the background of a case; see [`Etcdctl::run_watching`].
#[derive(Debug, Clone, Copy)]
pub struct Background<'a> {
    pub args: &'a [&'a str],
    /// For `watch -i`: the watch commands, one per line; stdin stays open after them.
    pub stdin: Option<&'a str>,
    /// Stop it with SIGINT, as a user's Ctrl-C (etcdctl `lock` then unlocks and `elect`
    /// resigns, so nothing they hold outlives the case), instead of SIGKILL.
    pub interrupt: bool,
    /// The foreground command too runs until stopped (a lock without a command, a campaign, an
    /// observer), and the order in which the two are interrupted.
    pub held: Option<StopOrder>,
}

/// Which of two commands that run until stopped is interrupted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOrder {
    ForegroundFirst,
    /// The background command's release lets the waiting foreground one proceed first.
    BackgroundFirst,
}

/// What one etcdctl invocation did, before normalisation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `exit N`, `killed by a signal`, or `timed out`.
    pub exit: String,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit == "exit 0"
    }
}

/// Which etcdctl API a case speaks: `ETCDCTL_API=3` (gRPC), or `ETCDCTL_API=2` (the v2 keys
/// API over HTTP, which needs `--enable-v2` on the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V3,
    V2,
}

#[derive(Debug, Clone)]
pub struct Etcdctl {
    bin: PathBuf,
    api: Api,
    /// The endpoint URL's scheme: `http`, or `https` for the TLS matrix.
    scheme: &'static str,
    /// Global flags before the command (`--cacert`, `--cert`, `--key`, ...).
    transport: Vec<String>,
}

impl Etcdctl {
    pub fn new(bin: PathBuf) -> Self {
        Self { bin, api: Api::V3, scheme: "http", transport: Vec::new() }
    }

    /// The same etcdctl dialling `<scheme>://` endpoints with the global `flags` (TLS options).
    pub fn with_transport(&self, scheme: &'static str, flags: Vec<String>) -> Self {
        Self { bin: self.bin.clone(), api: self.api, scheme, transport: flags }
    }

    /// The same etcdctl speaking `api` (`ETCDCTL_API=2` for the v2 cases).
    pub fn with_api(&self, api: Api) -> Self {
        Self { bin: self.bin.clone(), api, scheme: self.scheme, transport: self.transport.clone() }
    }

    pub fn api(&self) -> Api {
        self.api
    }

    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    pub fn transport(&self) -> &[String] {
        &self.transport
    }

    /// Runs `etcdctl --endpoints=<scheme>://<client_addr> <timeouts> <transport flags> <args>`
    /// with this etcdctl's API (v3 unless [`Etcdctl::with_api`] said otherwise), feeding `stdin`
    /// (closed immediately when `None`).
    pub fn run(&self, client_addr: &str, args: &[&str], stdin: Option<&str>) -> Result<Outcome> {
        let mut child = self.spawn(client_addr, args, stdin.is_some())?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // etcdctl may exit before reading everything (e.g. on a malformed line).
            let _ = pipe.write_all(input.as_bytes());
        }
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let exit = wait_with_deadline(&mut child, HARD_TIMEOUT)?;
        Ok(Outcome { exit, stdout: join(stdout), stderr: join(stderr) })
    }

    /// Runs `etcdctl <background>` (a watch, a held lock, a campaign; its stdin, `background.stdin`
    /// for `watch -i`, held open), lets it settle, runs `then` (when not empty) and lets the
    /// effects arrive, then stops the background command. With `background.held`, `then` also runs
    /// until stopped: it is started, left to settle, and stopped in the given order. The outcome is
    /// `then`'s, followed by what the background command printed.
    pub fn run_watching(
        &self,
        client_addr: &str,
        background: &Background<'_>,
        then: &[&str],
        then_stdin: Option<&str>,
    ) -> Result<Outcome> {
        let mut watcher = self.spawn(client_addr, background.args, true)?;
        let mut pipe = watcher.stdin.take().expect("stdin is piped");
        if let Some(input) = background.stdin {
            let _ = pipe.write_all(input.as_bytes());
        }
        let stdout = drain(watcher.stdout.take().expect("stdout is piped"));
        let stderr = drain(watcher.stderr.take().expect("stderr is piped"));
        thread::sleep(WATCH_SETTLE);
        let mut outcome = match (then.is_empty(), background.held) {
            (true, _) => Outcome { exit: "exit 0".into(), stdout: String::new(), stderr: String::new() },
            (false, None) => self.run(client_addr, then, then_stdin)?,
            (false, Some(order)) => {
                let mut held = self.spawn(client_addr, then, false)?;
                let held_stdout = drain(held.stdout.take().expect("stdout is piped"));
                let held_stderr = drain(held.stderr.take().expect("stderr is piped"));
                thread::sleep(WATCH_SETTLE);
                let exit = match order {
                    StopOrder::ForegroundFirst => interrupt(&mut held)?,
                    StopOrder::BackgroundFirst => {
                        // Its release is what the foreground command was waiting for.
                        interrupt(&mut watcher)?;
                        thread::sleep(WATCH_SETTLE);
                        interrupt(&mut held)?
                    }
                };
                Outcome { exit, stdout: join(held_stdout), stderr: join(held_stderr) }
            }
        };
        thread::sleep(WATCH_SETTLE);
        let watch_exit = match watcher.try_wait()? {
            Some(status) => exit_text(status),
            None if background.interrupt => interrupt(&mut watcher)?,
            None => {
                let _ = watcher.kill();
                let _ = watcher.wait();
                "still watching".to_owned()
            }
        };
        drop(pipe);
        let label = background.args.first().copied().unwrap_or("etcdctl");
        outcome.stdout.push_str(&format!("--- {label} ({watch_exit}) ---\n"));
        outcome.stdout.push_str(&join(stdout));
        outcome.stderr.push_str(&join(stderr));
        Ok(outcome)
    }

    fn spawn(&self, client_addr: &str, args: &[&str], piped_stdin: bool) -> Result<Child> {
        let mut cmd = Command::new(&self.bin);
        // An ETCDCTL_ENDPOINTS or similar in the caller's environment must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(name);
            }
        }
        let (api, timeouts) = match self.api {
            Api::V3 => ("3", [COMMAND_TIMEOUT, DIAL_TIMEOUT]),
            Api::V2 => ("2", V2_TIMEOUTS),
        };
        cmd.env("ETCDCTL_API", api)
            .arg(format!("--endpoints={}://{client_addr}", self.scheme))
            .args(timeouts)
            .args(&self.transport)
            .args(args)
            .stdin(if piped_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().with_context(|| format!("spawning {}", self.bin.display()))
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join(reader: thread::JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned()
}

/// SIGINT to a child this harness started, then its exit once it has released what it held;
/// killed if it does not exit within [`INTERRUPT_GRACE`].
fn interrupt(child: &mut Child) -> Result<String> {
    if child.try_wait()?.is_none() {
        let status =
            Command::new("kill").args(["-INT", &child.id().to_string()]).status().context("running kill -INT")?;
        anyhow::ensure!(status.success(), "kill -INT {} failed", child.id());
    }
    Ok(wait_with_deadline(child, INTERRUPT_GRACE)?.replace("timed out", "still running"))
}

fn exit_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".to_owned(),
    }
}

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(exit_text(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(format!("timed out after {}s", timeout.as_secs()));
        }
        thread::sleep(Duration::from_millis(2));
    }
}
