//! `cargo xtask cluster up|down|status`: a local Keel cluster on loopback for people to try
//! things against.
//!
//! Members get etcd's familiar ports (client 2379, 22379, 32379, …; peer 2380, 22380, …), one
//! data dir and one log each under a single folder (`target/keel-cluster` by default). The
//! processes outlive the command; their pids are kept in `<dir>/pids` for `down`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{MemberListRequest, StatusRequest};

use crate::cargo;

#[derive(Subcommand, Debug)]
pub enum Cluster {
    /// Start a cluster on loopback and print the endpoints to use.
    Up(UpOptions),
    /// Stop the cluster started by `up` (SIGTERM, then SIGKILL after 5 s).
    Down(DirOption),
    /// Show each member's status (leader, raft term and index).
    Status(DirOption),
}

#[derive(Args, Debug)]
pub struct DirOption {
    /// Where data dirs, logs and pids live.
    #[arg(long, default_value_os_t = default_dir())]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpOptions {
    /// Number of members.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Use the release build (`cargo build --release --bin keel`) instead of the debug one.
    #[arg(long)]
    pub release: bool,
    /// Start with empty data dirs even if an earlier cluster left some.
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub dir: DirOption,
}

fn default_dir() -> PathBuf {
    cargo::workspace_root().join("target/keel-cluster")
}

/// etcd's Procfile layout: member i listens on (i*10000 + 2379) for clients and +1 for peers.
fn ports(member: usize) -> (u16, u16) {
    let base = if member == 0 { 2379 } else { 2379 + 20000 + (member as u16 - 1) * 10000 };
    (base, base + 1)
}

pub fn run(command: Cluster) -> Result<()> {
    match command {
        Cluster::Up(options) => up(&options),
        Cluster::Down(options) => down(&options.dir),
        Cluster::Status(options) => status(&options.dir),
    }
}

fn up(options: &UpOptions) -> Result<()> {
    if !(1..=5).contains(&options.members) {
        bail!("--members must be between 1 and 5 (ports follow etcd's 2379, 22379, 32379, … layout)");
    }
    let dir = &options.dir.dir;
    if dir.join("pids").exists() {
        bail!("a cluster is already up in {} (run `cargo xtask cluster down` first)", dir.display());
    }
    let bin = if options.release { cargo::build_release_bin("keel")? } else { cargo::build_bin("keel")? };
    if options.fresh {
        for i in 0..options.members {
            let _ = fs::remove_dir_all(dir.join(format!("m{i}")));
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let initial_cluster =
        (0..options.members).map(|i| format!("m{i}=http://127.0.0.1:{}", ports(i).1)).collect::<Vec<_>>().join(",");
    let mut pids = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..options.members {
        let (client, peer) = ports(i);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = File::create(dir.join(format!("m{i}.log")))?;
        let child = Command::new(&bin)
            .arg(format!("--name=m{i}"))
            .arg(format!("--data-dir={}", dir.join(format!("m{i}")).display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        pids.push(child.id().to_string());
        endpoints.push(client_url);
    }
    fs::write(dir.join("pids"), pids.join("\n") + "\n")?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let leader = runtime.block_on(wait_for_leader(&endpoints, Duration::from_secs(30)));
    let Some(leader) = leader else {
        let _ = down(dir);
        bail!("the cluster elected no leader within 30 s; logs are in {}", dir.display());
    };
    println!("keel cluster of {} up (leader {leader:x}); logs and data in {}", options.members, dir.display());
    println!("export ETCDCTL_API=3 ETCDCTL_ENDPOINTS={}", endpoints.join(","));
    println!("stop it with: cargo xtask cluster down");
    Ok(())
}

/// Waits until a leader is elected and every member has published its client URLs (so
/// `etcdctl member list` is complete from the first command).
async fn wait_for_leader(endpoints: &[String], timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for endpoint in endpoints {
            let (Ok(mut maintenance), Ok(mut cluster)) =
                (MaintenanceClient::connect(endpoint.clone()).await, ClusterClient::connect(endpoint.clone()).await)
            else {
                continue;
            };
            let leader = maintenance.status(StatusRequest {}).await.map_or(0, |s| s.into_inner().leader);
            let published = cluster
                .member_list(MemberListRequest { linearizable: false })
                .await
                .is_ok_and(|l| l.into_inner().members.iter().all(|m| !m.client_ur_ls.is_empty()));
            if leader != 0 && published {
                return Some(leader);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn down(dir: &Path) -> Result<()> {
    let pid_file = dir.join("pids");
    let pids = fs::read_to_string(&pid_file)
        .with_context(|| format!("no cluster is up in {} ({} missing)", dir.display(), pid_file.display()))?;
    let pids: Vec<&str> = pids.lines().filter(|p| !p.is_empty()).collect();
    for pid in &pids {
        let _ = Command::new("kill").args(["-TERM", pid]).stderr(Stdio::null()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids.iter().filter(|pid| alive(pid)) {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    fs::remove_file(&pid_file)?;
    println!("keel cluster in {} stopped ({} members); data kept, `up --fresh` starts over", dir.display(), pids.len());
    Ok(())
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
        && !fs::read_to_string(Path::new("/proc").join(pid).join("stat")).is_ok_and(|s| s.contains(") Z "))
}

fn status(dir: &Path) -> Result<()> {
    let pids =
        fs::read_to_string(dir.join("pids")).with_context(|| format!("no cluster is up in {}", dir.display()))?;
    let members = pids.lines().filter(|p| !p.is_empty()).count();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        for i in 0..members {
            let endpoint = format!("http://127.0.0.1:{}", ports(i).0);
            match MaintenanceClient::connect(endpoint.clone()).await {
                Ok(mut client) => match client.status(StatusRequest {}).await {
                    Ok(s) => {
                        let s = s.into_inner();
                        let id = s.header.map_or(0, |h| h.member_id);
                        println!(
                            "m{i} {endpoint} id={id:x} leader={:x} term={} index={} applied={}",
                            s.leader, s.raft_term, s.raft_index, s.raft_applied_index
                        );
                    }
                    Err(err) => println!("m{i} {endpoint} error: {}", err.message()),
                },
                Err(_) => println!("m{i} {endpoint} down"),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ports;

    #[test]
    fn ports_follow_etcds_procfile() {
        assert_eq!(ports(0), (2379, 2380));
        assert_eq!(ports(1), (22379, 22380));
        assert_eq!(ports(2), (32379, 32380));
        assert_eq!(ports(4), (52379, 52380));
    }
}
