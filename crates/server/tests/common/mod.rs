//! Real `keel` processes on loopback for integration tests: free ports, a
//! temp data dir, and a kill on drop so no test leaves a process behind.

#![allow(dead_code)]

pub mod etcd;
pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

/// A port nothing listens on. Taken below the kernel's ephemeral range
/// (32768 and up): a port the kernel hands out for `bind(0)` can be given
/// again to any outgoing connection before keel binds it, which made tests
/// fail with "address in use". Each process starts at its own offset so test
/// binaries running side by side do not race for the same ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let port = (FIRST + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Keel {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Keel {
    /// Starts a single-member keel on `data_dir` and waits until it answers a read.
    pub async fn start(data_dir: &Path) -> Keel {
        let keel = Keel::spawn(data_dir, free_port(), &[]);
        keel.wait_ready().await;
        keel
    }

    /// Starts keel with extra flags on a given client port, without waiting.
    pub fn spawn(data_dir: &Path, port: u16, extra: &[String]) -> Keel {
        Keel::spawn_with_env(data_dir, port, extra, &[])
    }

    /// As [`Keel::spawn`], with `env` set for the process (such as `FAILPOINTS`).
    pub fn spawn_with_env(data_dir: &Path, port: u16, extra: &[String], env: &[(&str, &str)]) -> Keel {
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--log-level")
            .arg("warn")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn keel");
        Keel { child: Some(child), port, data_dir: data_dir.to_path_buf() }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::connect(self.endpoint()).await.expect("connect to keel")
    }

    pub async fn wait_ready(&self) {
        // Serializable: "serving", even before (or without) a leader.
        // Auth refusing an anonymous read is serving too.
        let served = |answer: Result<(), tonic::Status>| match answer {
            Ok(()) => true,
            Err(status) => status.message() == "etcdserver: user name is empty",
        };
        if !answers_a_range(&self.endpoint(), true, served).await {
            panic!("keel did not become ready on port {}", self.port);
        }
    }

    /// Waits until a linearizable read succeeds: a leader is there, so
    /// writes go through.
    pub async fn wait_for_quorum(&self) {
        if !answers_a_range(&self.endpoint(), false, |answer| answer.is_ok()).await {
            panic!("keel on port {} found no leader", self.port);
        }
    }

    /// Whether the process ended on its own.
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes with its sockets open, so its peers see
    /// a member that accepts connections and never answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a paused process runs on from where it stopped.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().expect("wait keel")
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Several members of one cluster on loopback, each with its own data dir.
pub struct Cluster {
    pub members: Vec<Option<Keel>>,
    names: Vec<String>,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
    /// Flags every member gets, after the cluster's own.
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(size: usize) -> Cluster {
        Cluster::start_with(size, &[]).await
    }

    /// A cluster whose members all get `extra` flags.
    pub async fn start_with(size: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..size).map(|i| format!("m{i}")).collect();
        let peer_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let client_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster { members: Vec::new(), names, peer_ports, client_ports, extra, _dir: dir };
        for i in 0..size {
            let keel = cluster.spawn(i, &[]);
            cluster.members.push(Some(keel));
        }
        for keel in cluster.members.iter().flatten() {
            keel.wait_ready().await;
        }
        cluster
    }

    /// Starts member `i` with `extra` flags after the cluster's own.
    pub fn spawn(&self, i: usize, extra: &[String]) -> Keel {
        self.spawn_with_env(i, extra, &[])
    }

    /// As [`Cluster::spawn`], with `env` set for the process.
    pub fn spawn_with_env(&self, i: usize, extra: &[String], env: &[(&str, &str)]) -> Keel {
        let initial_cluster = self
            .names
            .iter()
            .zip(&self.peer_ports)
            .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let peer_url = format!("http://127.0.0.1:{}", self.peer_ports[i]);
        let flags = [
            "--name".to_string(),
            self.names[i].clone(),
            "--listen-peer-urls".to_string(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".to_string(),
            peer_url,
            "--initial-cluster".to_string(),
            initial_cluster,
        ];
        let flags: Vec<String> =
            flags.into_iter().chain(self.extra.iter().cloned()).chain(extra.iter().cloned()).collect();
        Keel::spawn_with_env(&self._dir.path().join(&self.names[i]), self.client_ports[i], &flags, env)
    }

    pub async fn restart(&mut self, i: usize) {
        let keel = self.spawn(i, &[]);
        keel.wait_ready().await;
        self.members[i] = Some(keel);
    }

    /// Waits until member `i` answers a linearizable read: a leader is in
    /// place and reachable from it. A write sent while the members elect a
    /// successor to a killed leader may be lost with it and time out, as
    /// etcd's may; tests that kill a member and then write wait for this.
    pub async fn wait_for_quorum(&self, i: usize) {
        self.member(i).wait_for_quorum().await;
    }

    /// The linearizable member list of member `i`, once every member has
    /// published its client URLs: until then a member is listed without
    /// them (as in etcd), and whoever routes by the list cannot reach it.
    pub async fn member_list_once_published(&self, i: usize) -> Vec<keel_proto::etcdserverpb::Member> {
        use keel_proto::etcdserverpb::cluster_client::ClusterClient;
        use keel_proto::etcdserverpb::MemberListRequest;
        let mut client = ClusterClient::connect(self.member(i).endpoint()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let members =
                client.member_list(MemberListRequest { linearizable: true }).await.unwrap().into_inner().members;
            if members.iter().all(|m| !m.client_ur_ls.is_empty()) {
                return members;
            }
            assert!(Instant::now() < deadline, "members never published their client URLs: {members:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut keel) = self.members[i].take() {
            keel.kill9();
        }
    }

    /// SIGTERM to member `i`, waiting for it to shut down cleanly.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut keel) = self.members[i].take() {
            let status = keel.terminate();
            assert!(status.success(), "member {i} did not stop cleanly: {status}");
        }
    }

    /// Makes room for one more member (not started, not yet added to the
    /// cluster); returns its index and peer URL.
    pub fn add_slot(&mut self) -> (usize, String) {
        let i = self.names.len();
        self.names.push(format!("m{i}"));
        self.peer_ports.push(free_port());
        self.client_ports.push(free_port());
        self.members.push(None);
        (i, format!("http://127.0.0.1:{}", self.peer_ports[i]))
    }

    /// Starts member `i` joining the running cluster, which must have added
    /// it already (MemberAdd), as etcd's `--initial-cluster-state existing`.
    pub async fn join(&mut self, i: usize) {
        let keel = self.spawn(i, &["--initial-cluster-state".to_string(), "existing".to_string()]);
        keel.wait_ready().await;
        self.members[i] = Some(keel);
    }

    /// Deletes member `i`'s data dir (it must be stopped).
    pub fn wipe(&self, i: usize) {
        assert!(self.members[i].is_none(), "wipe a stopped member");
        let _ = std::fs::remove_dir_all(self._dir.path().join(&self.names[i]));
    }

    pub fn member(&self, i: usize) -> &Keel {
        self.members[i].as_ref().expect("member is running")
    }
}

/// `keel` with no output and none of the test environment's configuration.
/// Polls a range at `endpoint` (serializable or linearizable) until `good`
/// says its answer is; false after 30 s.
async fn answers_a_range(endpoint: &str, serializable: bool, good: impl Fn(Result<(), tonic::Status>) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut kv) = KvClient::connect(endpoint.to_owned()).await {
            let request =
                keel_proto::etcdserverpb::RangeRequest { key: b"ready".to_vec(), serializable, ..Default::default() };
            // Bounded: a wedged member must fail the test, not hang it.
            let answer = tokio::time::timeout(Duration::from_secs(5), kv.range(request)).await;
            if let Ok(answer) = answer {
                if good(answer.map(|_| ())) {
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn keel_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    without_etcd_env(&mut command);
    command
}

/// `keelctl`, built beside `keel` (`cargo test --workspace` builds it for
/// keel-ctl's own integration tests), with the environment scrubbed as for
/// `keel` and every `ETCDCTL_*` variable removed.
pub fn keelctl_command() -> Command {
    let keel = Path::new(env!("CARGO_BIN_EXE_keel"));
    let keelctl = keel.with_file_name("keelctl");
    assert!(
        keelctl.is_file(),
        "{} is missing: build it first (cargo build --workspace, or cargo test --workspace)",
        keelctl.display()
    );
    let mut command = Command::new(keelctl);
    command.stdin(Stdio::null());
    without_etcd_env(&mut command);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            command.env_remove(key);
        }
    }
    command
}

/// Keeps the test's own environment (a CI's `ETCD_*` variables, a
/// developer's `KEEL_LOG`) from configuring the processes under test.
pub fn without_etcd_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            command.env_remove(key);
        }
    }
    command.env_remove("KEEL_LOG");
}

/// An HTTP/1.1 GET: (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_request(port, "GET", path).await
}

/// An HTTP/1.1 request without a body: (status, body, de-chunked).
pub async fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_exchange(port, method, path, &[], "").await
}

/// An HTTP/1.1 request with `headers` and `body`: (status, body, de-chunked).
pub async fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
}

/// A POST whose answer streams: what arrived within `wait`, or until a
/// finite stream ended (status, body de-chunked up to the last whole
/// chunk); the connection is then dropped.
pub async fn http_stream(port: u16, path: &str, body: &str, wait: Duration) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` until it holds; fails the test after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
