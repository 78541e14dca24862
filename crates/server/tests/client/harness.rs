//! The harness keel-client's tests expect (the shape of
//! `crates/client/tests/etcd/harness.rs`), starting keel instead of etcd.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions};
use tempfile::TempDir;

use crate::common::{free_port, Keel};
pub use crate::support::{dead_endpoint, eventually, Proxy};

/// Keel's shortest lease TTL (seconds) with its default raft timers: etcd's
/// rule, one and a half election timeouts rounded up to whole seconds.
pub const MIN_TTL: i64 = 2;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A single-member keel in a temp dir, killed on drop. The client's tests
/// call the server they run against `Etcd`.
pub struct Etcd {
    keel: Keel,
    // Removed after the process is killed (fields drop in order).
    _dir: TempDir,
}

impl Etcd {
    /// Starts keel on a free loopback port and waits until it has a leader
    /// and has published its client URLs.
    pub async fn start() -> Etcd {
        let dir = tempfile::Builder::new().prefix("keel-client-keel-").tempdir().expect("temp dir");
        let keel = Keel::spawn(&dir.path().join("data"), free_port(), &[]);
        let server = Etcd { keel, _dir: dir };
        server.wait_leader().await;
        server
    }

    async fn wait_leader(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let options = ClientOptions { connect_timeout: Duration::from_millis(500), ..Default::default() };
        loop {
            if let Ok(client) = Client::connect([self.endpoint()], options.clone()).await {
                // Keel serves clients before its member's attributes are
                // published (etcd only after, docs/compat.md): ready is when
                // `member list` shows the client URLs too.
                let published = client
                    .member_list(false)
                    .await
                    .is_ok_and(|list| list.members.iter().any(|m| !m.client_ur_ls.is_empty()));
                if published && client.status().await.is_ok_and(|status| status.leader != 0) {
                    return;
                }
            }
            let port = self.keel.port;
            assert!(Instant::now() < deadline, "keel on port {port} has no leader after {STARTUP_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        self.keel.endpoint()
    }

    /// `127.0.0.1:<client port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.keel.port))
    }

    /// SIGSTOP (see the etcd harness).
    pub fn pause(&self) {
        self.keel.pause();
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn unpause(&self) {
        self.keel.resume();
    }

    /// A client connected to this server only.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], ClientOptions::default()).await.expect("connect to keel")
    }
}
