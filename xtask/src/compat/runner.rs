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

pub struct Etcdctl {
    bin: PathBuf,
}

impl Etcdctl {
    pub fn new(bin: PathBuf) -> Self {
        Self { bin }
    }

    /// Runs `etcdctl --endpoints=http://<client_addr> <args>` with the v3 API, feeding `stdin`
    /// (closed immediately when `None`).
    pub fn run(&self, client_addr: &str, args: &[&str], stdin: Option<&str>) -> Result<Outcome> {
        let mut cmd = Command::new(&self.bin);
        // An ETCDCTL_ENDPOINTS or similar in the caller's environment must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{client_addr}"))
            .args([COMMAND_TIMEOUT, DIAL_TIMEOUT])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // etcdctl may exit before reading everything (e.g. on a malformed line).
            let _ = pipe.write_all(input.as_bytes());
        }
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let exit = wait_with_deadline(&mut child, HARD_TIMEOUT)?;
        Ok(Outcome {
            exit,
            stdout: join(stdout),
            stderr: join(stderr),
        })
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

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(match status.code() {
                Some(code) => format!("exit {code}"),
                None => "killed by a signal".to_owned(),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(format!("timed out after {}s", timeout.as_secs()));
        }
        thread::sleep(Duration::from_millis(2));
    }
}
