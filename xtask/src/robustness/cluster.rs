//! The members: real `keel` or `etcd` processes, each started inside its
//! namespace with etcd's flags (Keel takes the same ones), so one code path
//! runs both systems. Dropping the cluster SIGKILLs every member.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use keel_client::{Client, ClientOptions};

use super::net::Net;

/// Which store the lab runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `keel` (see `--keel-bin`).
    Keel,
    /// Real etcd (`etcd` on the PATH, or `--etcd-bin`).
    Etcd,
}

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// One member process.
pub struct Member {
    pub name: String,
    pub endpoint: String,
    pub peer_url: String,
    ns: String,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    pub members: Vec<Member>,
    bin: PathBuf,
}

impl Cluster {
    /// Starts one member per namespace of `net`, data and logs under `dir`.
    pub fn start(net: &Net, bin: &Path, dir: &Path) -> Result<Cluster> {
        let initial: Vec<String> =
            net.members.iter().enumerate().map(|(i, s)| format!("m{i}=http://{}:{PEER_PORT}", s.ip)).collect();
        let initial = initial.join(",");
        let mut cluster = Cluster { members: Vec::new(), bin: bin.to_path_buf() };
        for (i, slot) in net.members.iter().enumerate() {
            let client = format!("http://{}:{CLIENT_PORT}", slot.ip);
            let peer = format!("http://{}:{PEER_PORT}", slot.ip);
            let data_dir = dir.join(format!("m{i}"));
            let args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".to_owned(),
                "--initial-cluster-token=keel-robustness".to_owned(),
            ];
            cluster.members.push(Member {
                name: format!("m{i}"),
                endpoint: client,
                peer_url: peer,
                ns: slot.ns.clone(),
                data_dir,
                log: dir.join(format!("m{i}.log")),
                args,
                child: None,
                paused: false,
            });
        }
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let member = &mut self.members[i];
        let log = OpenOptions::new().create(true).append(true).open(&member.log)?;
        // `ip netns exec` execs the program in place, so the child's pid is
        // the member's.
        let child = Command::new("ip")
            .args(["netns", "exec", &member.ns])
            .arg(&self.bin)
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} in {}", self.bin.display(), member.ns))?;
        member.child = Some(child);
        member.paused = false;
        Ok(())
    }

    /// SIGKILLs member `i` and waits for it to be gone.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        self.members[i].paused = false;
        Ok(())
    }

    /// Starts member `i` again on its data dir, if it is not running.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.members[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// Kills member `i` and wipes its data dir; its next start joins the
    /// existing cluster as a new member (`--initial-cluster-state=existing`),
    /// once it has been added back.
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let member = &mut self.members[i];
        if member.data_dir.exists() {
            std::fs::remove_dir_all(&member.data_dir)
                .with_context(|| format!("wiping {}", member.data_dir.display()))?;
        }
        for arg in &mut member.args {
            if arg.starts_with("--initial-cluster-state=") {
                *arg = "--initial-cluster-state=existing".to_owned();
            }
        }
        Ok(())
    }

    /// Whether member `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// SIGSTOP (`pause`) or SIGCONT member `i`.
    pub fn signal_pause(&mut self, i: usize, pause: bool) -> Result<()> {
        let member = &mut self.members[i];
        let Some(child) = &member.child else { return Ok(()) };
        let signal = if pause { "-STOP" } else { "-CONT" };
        super::net::run("kill", &[signal, &child.id().to_string()])?;
        member.paused = pause;
        Ok(())
    }

    /// Undoes process faults: paused members continued, killed ones started.
    pub fn heal(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.signal_pause(i, false)?;
            }
            self.restart(i)?;
        }
        Ok(())
    }

    /// Members that exited on their own (a crash, not our kill), with the
    /// end of their log.
    pub fn crashed(&mut self) -> Vec<(String, String)> {
        let mut crashed = Vec::new();
        for member in &mut self.members {
            let Some(child) = &mut member.child else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                crashed.push((member.name.clone(), format!("{status}\n{}", tail(&member.log, 3000))));
                member.child = None;
            }
        }
        crashed
    }

    /// The last bytes of member `i`'s log.
    pub fn log_tail(&self, i: usize, bytes: u64) -> String {
        tail(&self.members[i].log, bytes)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // SIGKILL works on a stopped process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else { return String::new() };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut out = Vec::new();
    let _ = file.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A client for one member only: no failover, so every answer is that
/// member's, and a call to a member cut off fails within `timeout`.
pub async fn member_client(endpoint: &str, timeout: Duration) -> Result<Client> {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Some(timeout),
        ..ClientOptions::default()
    };
    // Connecting fails while the member is down; the lab starts clients
    // only once every member answers, and later failures are per call.
    Ok(Client::connect([endpoint.to_owned()], options).await?)
}
