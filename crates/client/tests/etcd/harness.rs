//! Real etcd processes on loopback, and a TCP proxy that can cut a client
//! off from one, for the integration tests.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions};
use tempfile::TempDir;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH.
fn etcd_binary() -> PathBuf {
    let bin = std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
    match Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => bin,
        Ok(status) => panic!(
            "`{} --version` failed ({status}); keel-client's integration tests need etcd",
            bin.display()
        ),
        Err(e) => panic!(
            "cannot run `{}` ({e}): keel-client's integration tests need a real etcd; \
             install it (Debian: `apt-get install etcd-server`) or point ETCD_BIN at one",
            bin.display()
        ),
    }
}

/// Distinct free loopback ports; every listener is held until all are chosen.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
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
        let dir = tempfile::Builder::new()
            .prefix("keel-client-etcd-")
            .tempdir()
            .expect("temp dir");
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
        Etcd {
            child,
            client_port,
            log_path,
            _dir: dir,
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let options = ClientOptions {
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        loop {
            if let Some(status) = self.child.try_wait().expect("poll etcd") {
                return Err(format!(
                    "etcd exited ({status}); log tail:\n{}",
                    self.log_tail()
                ));
            }
            if let Ok(client) = Client::connect([self.endpoint()], options.clone()).await {
                if client.status().await.is_ok_and(|status| status.leader != 0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not ready after {STARTUP_TIMEOUT:?}; log tail:\n{}",
                    self.log_tail()
                ));
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

    /// A client connected to this etcd only.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], ClientOptions::default())
            .await
            .expect("connect to etcd")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that nothing listens on (connections are refused).
pub fn dead_endpoint() -> String {
    let [port] = free_ports::<1>();
    format!("http://127.0.0.1:{port}")
}

/// A TCP forwarder to `target` that can be stopped (refusing connections
/// and cutting the open ones, as if the server died) and started again on
/// the same port.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let [port] = free_ports::<1>();
        let mut proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            target,
            accept: None,
        };
        proxy.resume();
        proxy
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every forwarded connection.
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // Dropping the accept task drops its JoinSet, which aborts and
            // so closes every forwarded connection.
            let _ = accept.await;
        }
    }

    /// Listens again on the same port.
    pub fn resume(&mut self) {
        assert!(self.accept.is_none(), "proxy already running");
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("bind proxy port");
        let listener = socket.listen(64).expect("listen");
        let target = self.target;
        self.accept = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
