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

use super::disk::Disks;
use super::net::Net;
use super::watcher::PROGRESS_EVERY;

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
    /// The libfaketime file its wall clock's offset is read from, when it
    /// runs under libfaketime.
    clock_file: Option<PathBuf>,
    /// The offset written there, in seconds.
    clock_offset: i64,
}

pub struct Cluster {
    pub members: Vec<Member>,
    bin: PathBuf,
    /// libfaketime, preloaded into every member when clock jumps can be
    /// injected.
    faketime: Option<PathBuf>,
    /// The members' disks, when they can lose unsynced writes. Last, so it
    /// is dropped (unmounted) after `drop` killed the members.
    disks: Option<Disks>,
}

/// Where Debian's `faketime` package puts the thread-safe libfaketime.
const FAKETIME_LIBS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
];

/// libfaketime, or why the members' clocks cannot be moved.
pub fn faketime(target: Target) -> Result<PathBuf, String> {
    if target == Target::Etcd {
        // Checked: etcd 3.4 under LD_PRELOAD=libfaketime logs the real time.
        return Err("etcd is a Go program: it reads clocks through the vDSO, never through libc, so \
                    libfaketime (an LD_PRELOAD of libc's clock functions) cannot move its clock"
            .to_owned());
    }
    FAKETIME_LIBS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "libfaketime is not installed (apt-get install faketime)".to_owned())
}

impl Cluster {
    /// Starts one member per namespace of `net`, data and logs under `dir`.
    /// With `faketime`, every member runs under it, its wall clock offset
    /// by what its file says (see [`Cluster::jump_clock`]).
    /// With `disks`, data dirs are on them (see [`Cluster::lose_unsynced`]).
    pub fn start(
        net: &Net,
        bin: &Path,
        dir: &Path,
        faketime: Option<PathBuf>,
        disks: Option<Disks>,
    ) -> Result<Cluster> {
        let initial: Vec<String> =
            net.members.iter().enumerate().map(|(i, s)| format!("m{i}=http://{}:{PEER_PORT}", s.ip)).collect();
        let initial = initial.join(",");
        let mut cluster = Cluster { members: Vec::new(), bin: bin.to_path_buf(), faketime, disks };
        for (i, slot) in net.members.iter().enumerate() {
            let client = format!("http://{}:{CLIENT_PORT}", slot.ip);
            let peer = format!("http://{}:{PEER_PORT}", slot.ip);
            let data_dir = cluster.disks.as_ref().map_or_else(|| dir.join(format!("m{i}")), |d| d.data_dir(i));
            let clock_file = match &cluster.faketime {
                Some(_) => {
                    let file = dir.join(format!("m{i}.faketime"));
                    std::fs::write(&file, "+0\n")?;
                    Some(file)
                }
                None => None,
            };
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
                // Periodic progress notifications for the bookmarkable check
                // (etcd 3.4 knows only the experimental name; Keel takes both).
                format!("--experimental-watch-progress-notify-interval={}s", PROGRESS_EVERY.as_secs()),
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
                clock_file,
                clock_offset: 0,
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
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &member.ns]).arg(&self.bin).args(&member.args);
        if let (Some(lib), Some(file)) = (&self.faketime, &member.clock_file) {
            // Only the wall clock is moved: monotonic time (deadlines,
            // timers, raft's ticks, lease expiry) and file times are not.
            // The file is re-read at most once a second.
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("DONT_FAKE_MONOTONIC", "1")
                .env("NO_FAKE_STAT", "1");
        }
        let child = command
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

    /// Kills member `i` and leaves its disk as a power cut would: what it
    /// had not synced is gone. Started again when healed.
    pub fn lose_unsynced(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let Some(disks) = &mut self.disks else { anyhow::bail!("the members have no disks of their own") };
        disks.lose_unsynced(i)
    }

    /// Moves member `i`'s wall clock `offset` seconds away from the real
    /// one (libfaketime re-reads its file within a second). Fails unless the
    /// running member has libfaketime mapped.
    pub fn jump_clock(&mut self, i: usize, offset: i64) -> Result<()> {
        let member = &mut self.members[i];
        let Some(file) = &member.clock_file else { anyhow::bail!("{} does not run under libfaketime", member.name) };
        if let Some(child) = &member.child {
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap_or_default();
            if !maps.contains("libfaketime") {
                anyhow::bail!("{} (pid {}) has no libfaketime mapped", member.name, child.id());
            }
        }
        std::fs::write(file, format!("{offset:+}\n"))?;
        member.clock_offset = offset;
        Ok(())
    }

    /// Undoes process faults: paused members continued, killed ones
    /// started, clocks set right.
    pub fn heal(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.signal_pause(i, false)?;
            }
            if self.members[i].clock_offset != 0 {
                self.jump_clock(i, 0)?;
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
