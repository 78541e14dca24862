//! Real etcd 3.4 (Debian's etcd-server) beside Keel, for tests that move
//! data between them: members on free loopback ports, killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Fails the test unless `etcd` and `etcdctl` are installed (CI installs them).
pub fn require_etcd() {
    for (binary, arg) in [("etcd", "--version"), ("etcdctl", "version")] {
        let found = Command::new(binary).env("ETCDCTL_API", "3").arg(arg).output().is_ok_and(|o| o.status.success());
        assert!(found, "`{binary}` (etcd 3.4) must be in PATH for this test: install etcd-server and etcd-client");
    }
}

/// `etcdctl` against `endpoints` (comma-separated), its output whatever it is.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "20s"])
        .args(args)
        .output()
        .expect("running etcdctl")
}

/// `etcdctl`'s stdout, failing the test when it fails.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let output = etcdctl(endpoints, args);
    assert!(
        output.status.success(),
        "etcdctl {args:?} against {endpoints}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Names, ports and data dirs of a cluster's members; the same plan serves
/// an etcd cluster and the Keel cluster that takes its place.
#[derive(Clone, Debug)]
pub struct Plan {
    pub names: Vec<String>,
    pub client_ports: Vec<u16>,
    pub peer_ports: Vec<u16>,
    pub token: String,
}

impl Plan {
    pub fn new(size: usize, token: &str) -> Plan {
        Plan {
            names: (0..size).map(|i| format!("m{i}")).collect(),
            client_ports: (0..size).map(|_| free_port()).collect(),
            peer_ports: (0..size).map(|_| free_port()).collect(),
            token: token.to_string(),
        }
    }

    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.peer_ports[i])
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    pub fn endpoints(&self) -> String {
        (0..self.names.len()).map(|i| self.client_url(i)).collect::<Vec<_>>().join(",")
    }

    pub fn initial_cluster(&self) -> String {
        (0..self.names.len()).map(|i| format!("{}={}", self.names[i], self.peer_url(i))).collect::<Vec<_>>().join(",")
    }

    /// The flags that place member `i` (etcd's and Keel's are the same).
    pub fn member_flags(&self, i: usize) -> Vec<String> {
        [
            "--name",
            &self.names[i],
            "--listen-client-urls",
            &self.client_url(i),
            "--advertise-client-urls",
            &self.client_url(i),
            "--listen-peer-urls",
            &self.peer_url(i),
            "--initial-advertise-peer-urls",
            &self.peer_url(i),
            "--initial-cluster",
            &self.initial_cluster(),
            "--initial-cluster-token",
            &self.token,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Member `i`'s flags for [`super::Keel::spawn`], which sets the client
    /// URLs and data dir itself.
    pub fn keel_flags(&self, i: usize) -> Vec<String> {
        self.member_flags(i)
            .into_iter()
            .skip(6)
            .collect::<Vec<_>>()
            .into_iter()
            .chain(["--name".to_string(), self.names[i].clone()])
            .collect()
    }

    /// The flags of `etcdctl snapshot restore` that make member `i`'s data dir.
    pub fn restore_flags(&self, i: usize, data_dir: &Path) -> Vec<String> {
        vec![
            "--name".into(),
            self.names[i].clone(),
            "--initial-cluster".into(),
            self.initial_cluster(),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(i),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ]
    }
}

/// One etcd member process.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Stops the member with SIGTERM, as an operator would.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Starts every member of `plan` on `data_dirs[i]` and waits until each is
/// healthy.
pub fn start_etcd_cluster(plan: &Plan, data_dirs: &[PathBuf], logs: &Path) -> Vec<Etcd> {
    start_etcd_cluster_with(plan, data_dirs, logs, &[])
}

/// As [`start_etcd_cluster`], every member also getting `extra` flags (such
/// as `--enable-v2`).
pub fn start_etcd_cluster_with(plan: &Plan, data_dirs: &[PathBuf], logs: &Path, extra: &[&str]) -> Vec<Etcd> {
    let members: Vec<Etcd> = (0..plan.names.len())
        .map(|i| {
            let log = logs.join(format!("etcd-{}.log", plan.names[i]));
            let child = Command::new("etcd")
                .args(plan.member_flags(i))
                .args(extra)
                .arg("--data-dir")
                .arg(&data_dirs[i])
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .expect("starting etcd");
            Etcd { child, endpoint: plan.client_url(i), log }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for etcd in &members {
        while !etcdctl(&etcd.endpoint, &["endpoint", "health"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "etcd at {} did not become healthy; its log:\n{}",
                etcd.endpoint,
                std::fs::read_to_string(&etcd.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    members
}
