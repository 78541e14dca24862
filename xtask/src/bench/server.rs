//! A fresh server (etcd or Keel: they take the same flags), one member or a
//! cluster on loopback, for one measured run, and what it cost: peak RSS and
//! bytes on disk.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::RangeRequest;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The two systems a comparison runs, and where they keep their data.
#[derive(clap::Args, Debug)]
pub struct Systems {
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// A prebuilt keel binary; by default `cargo build --release --bin keel`.
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Where the servers keep data (same filesystem for both).
    #[arg(long, default_value = "/var/tmp")]
    pub data_root: PathBuf,
}

impl Systems {
    /// The keel binary to run, built first unless one was given.
    pub fn keel_bin(&self) -> Result<PathBuf> {
        match &self.keel_bin {
            Some(bin) => Ok(bin.clone()),
            None => crate::cargo::build_release_bin("keel"),
        }
    }
}

/// Where a server listens: (client, peer) ports, and whether with TLS.
struct Listen {
    ports: (u16, u16),
    tls: bool,
}

/// A running server; killed, and its directory removed, on drop.
pub struct Server {
    pub url: String,
    child: Child,
    data_dir: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` with a fresh data dir under `root` (the log sits beside the
    /// data dir, so it is not counted as data), on free loopback ports. Only
    /// etcd is told `--initial-cluster` (Keel's single member needs no peers).
    pub fn start(bin: &Path, root: &Path, name: &str) -> Result<Self> {
        Ok(Server::start_cluster(bin, root, name, 1, false, &[])?.remove(0))
    }

    /// One member of a cluster that grows a member at a time: `member` in
    /// `initial_cluster`, on `ports` (from [`free_ports`]), with `flags` after
    /// the usual ones (`--initial-cluster-state existing` for a member that
    /// joins, `--snapshot-count`, ...).
    pub fn start_member(
        bin: &Path,
        root: &Path,
        name: &str,
        member: &str,
        ports: (u16, u16),
        initial_cluster: &str,
        flags: &[String],
    ) -> Result<Self> {
        let listen = Listen { ports, tls: false };
        Server::spawn(bin, root, name, Some(member), listen, Some(initial_cluster), flags)
    }

    /// `members` fresh members of one cluster on loopback (etcd and Keel take
    /// the same flags), with `flags` after the usual ones; one member is as
    /// [`Server::start`]. With `tls`, every client and peer URL is https, all
    /// on one self-signed certificate that the members trust for their peers
    /// (see `dial::certificate`).
    pub fn start_cluster(
        bin: &Path,
        root: &Path,
        name: &str,
        members: usize,
        tls: bool,
        flags: &[String],
    ) -> Result<Vec<Self>> {
        let scheme = if tls { "https" } else { "http" };
        if members <= 1 {
            let (client, peer) = free_ports()?;
            // Keel's single member needs no --initial-cluster; etcd wants its own.
            let initial = (name == "etcd").then(|| format!("default={scheme}://127.0.0.1:{peer}"));
            let listen = Listen { ports: (client, peer), tls };
            return Ok(vec![Server::spawn(bin, root, name, None, listen, initial.as_deref(), flags)?]);
        }
        let ports = (0..members).map(|_| free_ports()).collect::<Result<Vec<_>>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}={scheme}://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        ports
            .iter()
            .enumerate()
            .map(|(i, &ports)| {
                let listen = Listen { ports, tls };
                Server::spawn(bin, root, name, Some(&format!("m{i}")), listen, Some(&initial), flags)
            })
            .collect()
    }

    fn spawn(
        bin: &Path,
        root: &Path,
        name: &str,
        member: Option<&str>,
        Listen { ports: (client, peer), tls }: Listen,
        initial_cluster: Option<&str>,
        flags: &[String],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("bench-{name}-")).tempdir_in(root)?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path).context("creating the server log")?;
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("{scheme}://127.0.0.1:{peer}");
        let mut command = Command::new(bin);
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--log-level", &std::env::var("KEEL_BENCH_LOG_LEVEL").unwrap_or_else(|_| "error".into())]);
        if let Some(member) = member {
            command.args(["--name", member]);
        }
        if let Some(initial) = initial_cluster {
            command.args(["--initial-cluster", initial]);
        }
        if tls {
            let (cert, key) = super::dial::certificate()?;
            command
                .arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--peer-cert-file")
                .arg(cert)
                .arg("--peer-key-file")
                .arg(key)
                .arg("--peer-trusted-ca-file")
                .arg(cert);
        }
        command.args(flags);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Server { url, child, data_dir, log_path, _dir: dir })
    }

    /// A proxy in front of a cluster: `bin` run with `args` (`grpc-proxy
    /// start --endpoints ...`) and `--listen-addr` on a free loopback port,
    /// in a fresh directory under `root` (its working directory, where
    /// etcd's proxy would put its `default.proxy` data).
    pub fn start_proxy(bin: &Path, root: &Path, name: &str, args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("bench-{name}-")).tempdir_in(root)?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("proxy.log");
        let log = File::create(&log_path).context("creating the proxy log")?;
        let (port, _) = free_ports()?;
        let child = Command::new(bin)
            .args(args)
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} {}", bin.display(), args.join(" ")))?;
        Ok(Server { url: format!("http://127.0.0.1:{port}"), child, data_dir, log_path, _dir: dir })
    }

    /// Waits until a Range succeeds (a single member elects itself first).
    pub async fn wait_ready(&mut self) -> Result<()> {
        self.wait_ready_within(STARTUP_TIMEOUT).await
    }

    /// As [`Server::wait_ready`], for a start that does more (an import).
    pub async fn wait_ready_within(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) during start-up:\n{}", self.url, self.log_tail(20));
            }
            let endpoint = tonic::transport::Endpoint::from_shared(self.url.clone())?;
            if let Ok(mut kv) = super::dial::dial(endpoint).await.map(KvClient::new) {
                if kv.range(RangeRequest { key: b"ready".to_vec(), ..Default::default() }).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{} did not become ready:\n{}", self.url, self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// VmHWM: the most resident memory the server has used.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// VmRSS: the resident memory the server uses now.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The anonymous part of the RSS (heap, not mapped files).
    pub fn rss_anon_kib(&self) -> u64 {
        self.status_kib("RssAnon:")
    }

    /// The file-backed part of the RSS (mapped files, shared libraries).
    pub fn rss_file_kib(&self) -> u64 {
        self.status_kib("RssFile:")
    }

    /// Starts VmHWM over from the current RSS (Linux 4.0 and later), so that
    /// [`Server::peak_rss_kib`] covers what comes next alone; false if the
    /// kernel refused.
    pub fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").is_ok()
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Apparent size of every file under the data dir (preallocated WAL segments count in full).
    pub fn disk_bytes(&self) -> u64 {
        tree_size(&self.data_dir)
    }

    /// Whether the server is still running (it must be, after a run).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Log lines that report trouble, whatever the server's log format.
    pub fn log_complaints(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        log.lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                ["error", "panic", "fatal"].iter().any(|w| l.contains(w))
            })
            .map(str::to_owned)
            .collect()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tree_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => tree_size(&entry.path()),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

/// Two distinct free loopback ports (both listeners held until both are chosen).
pub fn free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    let b = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_size_sums_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        assert_eq!(tree_size(dir.path()), 15);
        assert_eq!(tree_size(&dir.path().join("missing")), 0);
    }
}
