//! Member disks that can lose what was not synced: a power failure, not
//! just a crash. `kill -9` alone loses only what the process held in
//! memory; what it wrote is in the kernel's page cache and survives it.
//!
//! Each member's data dir is an ext4 filesystem on a loop device whose
//! backing file lives on an XFS filesystem (itself a loop-mounted file in
//! the run's temp dir). To lose the unsynced writes of member *i*: kill it,
//! clone its backing file (`cp --reflink=always`: XFS shares the blocks, and
//! the clone is atomic, taken under the file's locks), so the clone holds
//! exactly the blocks the loop device had written — everything fsynced, and
//! whatever writeback happened to flush, as after a power cut — while dirty
//! pages still in the ext4 page cache are not in it. Then unmount the old
//! filesystem (its flush goes to the old file), put the clone in its place
//! and mount it (ext4 replays its journal). This is what xfstests does with
//! dm-flakey's `drop_writes`; the kernel here has no device-mapper.
//!
//! Loop devices are attached with `mount -o loop` (autoclear), so an
//! unmount frees them. Dropping [`Disks`] unmounts everything;
//! [`sweep_stale`] unmounts what a run killed with SIGKILL left behind (the
//! temp dir's name carries its pid).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::net::run;

/// Sparse sizes: only written blocks cost anything.
const OUTER_SIZE: &str = "16G";
const MEMBER_SIZE: &str = "4G";

/// The members' disks. Dropping it unmounts them (their members must be
/// gone: `Cluster` drops it after killing them).
pub struct Disks {
    outer: PathBuf,
    /// Each member's mount point, mounted or not.
    members: Vec<PathBuf>,
    mounted: Vec<bool>,
    outer_mounted: bool,
}

impl Disks {
    /// Makes `n` member disks under `dir`, mounted at `dir/disk-m<i>`.
    pub fn create(dir: &Path, n: usize) -> Result<Disks> {
        for tool in ["mkfs.xfs", "mkfs.ext4", "cp", "mount"] {
            if which(tool).is_none() {
                bail!("{tool} is not installed (apt-get install xfsprogs e2fsprogs)");
            }
        }
        let image = dir.join("disks.img");
        let outer = dir.join("disks");
        std::fs::create_dir_all(&outer)?;
        run("truncate", &["-s", OUTER_SIZE, &s(&image)])?;
        run("mkfs.xfs", &["-q", "-m", "reflink=1", &s(&image)])?;
        let mut disks = Disks { outer: outer.clone(), members: Vec::new(), mounted: Vec::new(), outer_mounted: false };
        run("mount", &["-o", "loop", &s(&image), &s(&outer)]).context("mounting a loop device")?;
        disks.outer_mounted = true;
        for i in 0..n {
            let img = disks.image(i);
            run("truncate", &["-s", MEMBER_SIZE, &s(&img)])?;
            run("mkfs.ext4", &["-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", &s(&img)])?;
            let mount = dir.join(format!("disk-m{i}"));
            std::fs::create_dir_all(&mount)?;
            disks.members.push(mount);
            disks.mounted.push(false);
            disks.mount(i)?;
        }
        // Cloning must work, or the fault would silently lose nothing.
        let probe = outer.join("probe");
        run("cp", &["--reflink=always", &s(&disks.image(0)), &s(&probe)]).context("cloning a disk image")?;
        std::fs::remove_file(probe)?;
        Ok(disks)
    }

    /// Member `i`'s data dir, on its disk.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].join("data")
    }

    fn image(&self, i: usize) -> PathBuf {
        self.outer.join(format!("m{i}.img"))
    }

    fn mount(&mut self, i: usize) -> Result<()> {
        run("mount", &["-o", "loop", &s(&self.image(i)), &s(&self.members[i])])?;
        self.mounted[i] = true;
        Ok(())
    }

    fn unmount(&mut self, i: usize) -> Result<()> {
        if self.mounted[i] {
            run("umount", &[&s(&self.members[i])])?;
            self.mounted[i] = false;
        }
        Ok(())
    }

    /// Member `i`'s disk as a power cut would leave it. The member must not
    /// be running.
    pub fn lose_unsynced(&mut self, i: usize) -> Result<()> {
        let (image, crash) = (self.image(i), self.outer.join(format!("m{i}.crash.img")));
        run("cp", &["--reflink=always", &s(&image), &s(&crash)])?;
        self.unmount(i)?;
        std::fs::rename(&crash, &image)?;
        self.mount(i)
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Err(err) = self.unmount(i) {
                eprintln!("robustness: cleanup: {err:#}");
            }
        }
        if self.outer_mounted {
            // An autoclear loop device lets go of its backing file a moment
            // after its filesystem is unmounted, and until then the outer
            // filesystem is busy (seen after a 10-minute run). Wait for it,
            // then detach lazily rather than leave the mount to the next run.
            let outer = s(&self.outer);
            let mut unmounted = run("umount", &[&outer]).is_ok();
            for _ in 0..OUTER_UNMOUNT_TRIES {
                if unmounted {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                unmounted = run("umount", &[&outer]).is_ok();
            }
            if !unmounted {
                if let Err(err) = run("umount", &["-l", &outer]) {
                    eprintln!("robustness: cleanup: {err:#}");
                }
            }
        }
    }
}

/// Attempts at unmounting the outer filesystem, 200 ms apart, before a
/// lazy unmount.
const OUTER_UNMOUNT_TRIES: usize = 10;

/// The temp dir's name for this run: its pid lets [`sweep_stale`] tell a
/// dead run's mounts from a live one's.
pub fn temp_prefix() -> String {
    format!("keel-robustness-{}-", std::process::id())
}

/// Unmounts the disks of runs whose process is gone, innermost first.
pub fn sweep_stale() {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else { return };
    let mut stale: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|point| {
            let Some(rest) = point.split("/keel-robustness-").nth(1) else { return false };
            let pid = rest.split('-').next().unwrap_or("");
            pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists()
        })
        .collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in stale {
        eprintln!("robustness: unmounting {point}, left by an earlier run");
        if let Err(err) = run("umount", &["-l", point]) {
            eprintln!("robustness: cleanup: {err:#}");
        }
    }
    // And their temp dirs, now that nothing is mounted in them.
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("keel-robustness-") else { continue };
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}
