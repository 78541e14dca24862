//! Test helpers that do not depend on which server the tests run against:
//! free ports, a TCP proxy that can cut a client off from its server, and
//! waiting on a condition. Shared with keel-server's run of these tests
//! against Keel (`crates/server/tests/client/`).

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Distinct free loopback ports; every listener is held until all are chosen.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
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
        let mut proxy = Proxy { addr: SocketAddr::from(([127, 0, 0, 1], port)), target, accept: None };
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
