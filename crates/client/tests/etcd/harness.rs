//! Real etcd processes on loopback for the integration tests.
//!
//! keel-server runs the same test files against Keel with a harness of the
//! same shape (`crates/server/tests/client/harness.rs`): `Etcd` is whatever
//! server the tests run against, `MIN_TTL` its shortest lease TTL.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions};
use tempfile::TempDir;

pub use crate::support::{dead_endpoint, eventually, free_ports, Proxy};

/// etcd's shortest lease TTL (seconds) with the raft timers below.
pub const MIN_TTL: i64 = 1;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH.
fn etcd_binary() -> PathBuf {
    let bin = std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
    match Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => bin,
        Ok(status) => {
            panic!("`{} --version` failed ({status}); keel-client's integration tests need etcd", bin.display())
        }
        Err(e) => panic!(
            "cannot run `{}` ({e}): keel-client's integration tests need a real etcd; \
             install it (Debian: `apt-get install etcd-server`) or point ETCD_BIN at one",
            bin.display()
        ),
    }
}

/// A single-member etcd cluster in a temp dir, killed on drop.
pub struct Etcd {
    child: Child,
    client_port: u16,
    log_path: PathBuf,
    // Removed after the process is killed (fields drop after `Drop::drop`).
    _dir: TempDir,
}

impl Etcd {
    /// Starts etcd on fresh loopback ports and waits until it has a leader.
    pub async fn start() -> Etcd {
        let bin = etcd_binary();
        let mut last_failure = String::new();
        // A port picked as free can be taken by another process before etcd
        // binds it; such a start fails fast and is retried on new ports.
        for _ in 0..START_ATTEMPTS {
            let mut etcd = Etcd::spawn(&bin);
            match etcd.wait_ready().await {
                Ok(()) => return etcd,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    fn spawn(bin: &PathBuf) -> Etcd {
        let dir = tempfile::Builder::new().prefix("keel-client-etcd-").tempdir().expect("temp dir");
        let [client_port, peer_port] = free_ports::<2>();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = File::create(&log_path).expect("create etcd log");
        let child = Command::new(bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            // Short raft timers: the member elects itself sooner, and the
            // minimum lease TTL drops to 1 s, which keeps lease tests short.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Etcd { child, client_port, log_path, _dir: dir }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let options = ClientOptions { connect_timeout: Duration::from_millis(500), ..Default::default() };
        loop {
            if let Some(status) = self.child.try_wait().expect("poll etcd") {
                return Err(format!("etcd exited ({status}); log tail:\n{}", self.log_tail()));
            }
            if let Ok(client) = Client::connect([self.endpoint()], options.clone()).await {
                if client.status().await.is_ok_and(|status| status.leader != 0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("etcd not ready after {STARTUP_TIMEOUT:?}; log tail:\n{}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<client port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// SIGSTOP: the process holds its connections but answers nothing,
    /// as a member that froze or is stuck catching up.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// A client connected to this etcd only.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], ClientOptions::default()).await.expect("connect to etcd")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // A paused etcd dies of SIGKILL all the same.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
