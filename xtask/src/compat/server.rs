//! A server process under test: a fresh data dir, free loopback ports, and a guard that kills
//! the process and removes its directory on drop (also when unwinding from a panic). Every
//! server serves the v2 API too (`--enable-v2`), which the `ETCDCTL_API=2` cases use.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::runner::Etcdctl;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 40;
/// Both servers get the same member name, so nothing name-derived can differ.
const MEMBER_NAME: &str = "compat";

pub struct Server {
    label: String,
    client_addr: String,
    peer_addr: String,
    child: Child,
    log_path: PathBuf,
    /// Files the cases write (`{dir}`), inside the temp dir.
    scratch: String,
    // Dropped after `Drop::drop` has killed the process.
    _dir: TempDir,
}

impl Server {
    /// Starts `bin` as a single-member cluster and waits until `etcdctl endpoint health`
    /// succeeds against it. `etcdctl` dials `http://` or `https://` (its scheme is the client
    /// URL's); TLS flags for the server are in `extra_args`.
    pub fn start(label: &str, bin: &Path, extra_args: &[String], etcdctl: &Etcdctl) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-compat-{label}-"))
            .tempdir()
            .context("creating a temp dir")?;
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path).context("creating the server log")?;
        let ports = free_ports(2)?;
        let client_addr = format!("127.0.0.1:{}", ports[0]);
        let client_url = format!("{}://{client_addr}", etcdctl.scheme());

        let mut cmd = Command::new(bin);
        cmd.arg(format!("--name={MEMBER_NAME}"))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            // etcdctl v2 syncs its endpoints from `/v2/members` first: the advertised client URL
            // is the one it then talks to.
            .arg("--enable-v2");
        // Both get the same peer flags, so member ids are computed alike and
        // `member list` shows the same shape.
        let peer_addr = format!("127.0.0.1:{}", ports[1]);
        let peer_url = format!("http://{peer_addr}");
        cmd.arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={MEMBER_NAME}={peer_url}"));
        cmd.args(extra_args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {label} ({})", bin.display()))?;
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).context("creating the scratch dir")?;
        let scratch = scratch.display().to_string();
        let mut server =
            Server { label: label.to_owned(), client_addr, peer_addr, child, log_path, scratch, _dir: dir };
        server.wait_ready(etcdctl)?;
        Ok(server)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// `host:port` of the client listener.
    pub fn client_addr(&self) -> &str {
        &self.client_addr
    }

    /// Where cases write files (`{dir}`).
    pub fn scratch_dir(&self) -> &str {
        &self.scratch
    }

    /// `host:port` of the peer listener.
    pub fn peer_addr(&self) -> &str {
        &self.peer_addr
    }

    /// Fails, with the tail of the server's log, if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); last lines of its log:\n{}", self.label, self.log_tail());
        }
        Ok(())
    }

    fn wait_ready(&mut self, etcdctl: &Etcdctl) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.ensure_running()?;
            let health = etcdctl.run(&self.client_addr, &["endpoint", "health"], None)?;
            if health.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not become healthy within {}s; etcdctl said:\n{}{}\nlast lines of its log:\n{}",
                    self.label,
                    STARTUP_TIMEOUT.as_secs(),
                    health.stdout,
                    health.stderr,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` distinct free loopback ports: all listeners are held until every port is chosen.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free loopback port")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}
