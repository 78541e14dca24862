//! `cargo xtask image [--debug] [--tag TAG]`: Keel's container image, from
//! `deploy/Dockerfile`.
//!
//! There is no base image to start from (the machines this builds on reach no
//! container registry), so the image is `FROM scratch` and its files come from
//! the host: cargo builds `keel` and `keelctl` here, and [`build`] lays out a
//! build context holding them, every shared library `ldd` names for them (the
//! dynamic loader too) at the path it names, and `deploy/rootfs/` (passwd,
//! group, nsswitch.conf). Modes are set here, not inherited from the host's
//! umask, because the image runs as a non-root user who must read them.
//! `deploy/Dockerfile` says what the image holds and why it has two stages.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// The label on the Dockerfile's assembly stage, which the classic builder
/// leaves behind as an untagged image.
const STAGE_LABEL: &str = "org.keel.image.stage=rootfs";

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Debug binaries, as `cargo build --workspace --all-targets` (the test
    /// suite's build) makes them, instead of `cargo build --release`.
    #[arg(long)]
    debug: bool,
    /// The image's name and tag.
    #[arg(long, default_value = "keel:latest")]
    tag: String,
}

/// `keel` and `keelctl`, built.
pub struct Binaries {
    pub keel: PathBuf,
    pub keelctl: PathBuf,
}

impl Binaries {
    /// Builds both, debug (the test suite's build, no rebuild after it) or
    /// release (exactly `cargo build --release --bin keel --bin keelctl`).
    pub fn build(debug: bool) -> Result<Self> {
        let bins = ["keel", "keelctl"];
        let mut paths = if debug { cargo::build_bins(&bins)? } else { cargo::build_release_bins(&bins)? };
        let keelctl = paths.pop().expect("two binaries");
        let keel = paths.pop().expect("two binaries");
        Ok(Self { keel, keelctl })
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let binaries = Binaries::build(opts.debug)?;
    build(&binaries, &opts.tag)?;
    println!("{}", opts.tag);
    Ok(())
}

/// Builds the image `tag` from `binaries`.
pub fn build(binaries: &Binaries, tag: &str) -> Result<()> {
    let context = tempfile::Builder::new().prefix("keel-image-").tempdir()?;
    lay_out(context.path(), binaries)?;
    let dockerfile = cargo::workspace_root().join("deploy/Dockerfile");
    eprintln!("docker build --tag {tag} (context {})", context.path().display());
    let status = Command::new("docker")
        .args(["build", "--tag", tag, "--build-arg"])
        .arg(format!("KEEL_VERSION={}", env!("CARGO_PKG_VERSION")))
        .arg("--file")
        .arg(&dockerfile)
        .arg(context.path())
        .status()
        .context("running docker build")?;
    if !status.success() {
        bail!("docker build of {tag} failed ({status})");
    }
    // Only dangling images go: a stage some other build still uses is kept.
    let pruned = Command::new("docker")
        .args(["image", "prune", "--force", "--filter"])
        .arg(format!("label={STAGE_LABEL}"))
        .output()
        .context("running docker image prune")?;
    if !pruned.status.success() {
        eprintln!("warning: could not remove the image's assembly stage: {}", String::from_utf8_lossy(&pruned.stderr));
    }
    Ok(())
}

/// The build context `deploy/Dockerfile` expects: `rootfs/` and `data/`.
fn lay_out(context: &Path, binaries: &Binaries) -> Result<()> {
    let rootfs = context.join("rootfs");
    let bin = rootfs.join("usr/local/bin");
    fs::create_dir_all(&bin)?;
    for (name, path) in [("keel", &binaries.keel), ("keelctl", &binaries.keelctl)] {
        fs::copy(path, bin.join(name)).with_context(|| format!("copying {}", path.display()))?;
    }
    // etcd's image has /usr/local/bin/etcd and etcdctl: commands written for
    // it (a pod's `command: [etcd]`, `docker exec ... etcdctl`) run Keel's.
    std::os::unix::fs::symlink("keel", bin.join("etcd"))?;
    std::os::unix::fs::symlink("keelctl", bin.join("etcdctl"))?;

    let mut libraries = shared_libraries(&binaries.keel)?;
    libraries.extend(shared_libraries(&binaries.keelctl)?);
    libraries.sort();
    libraries.dedup();
    for library in &libraries {
        let target = rootfs.join(library.strip_prefix("/").expect("ldd names absolute paths"));
        fs::create_dir_all(target.parent().expect("a library is in a directory"))?;
        // The file itself, not a symlink to a name the image may not have.
        fs::copy(library, &target).with_context(|| format!("copying {}", library.display()))?;
    }

    copy_tree(&cargo::workspace_root().join("deploy/rootfs"), &rootfs)?;
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::create_dir_all(rootfs.join("var/lib"))?;
    normalise_modes(&rootfs)?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;

    let data = context.join("data");
    for dir in ["keel", "etcd"] {
        fs::create_dir_all(data.join(dir))?;
        fs::set_permissions(data.join(dir), fs::Permissions::from_mode(0o700))?;
    }
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The shared libraries `ldd` says `binary` loads, the dynamic loader
/// included, as the absolute paths it names.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&output.stderr).contains("not a dynamic")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&output.stderr));
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

/// `ldd`'s lines: `libc.so.6 => /lib/.../libc.so.6 (0x...)`, the loader as
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`, and the kernel's vDSO, which has
/// no file.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("{} is not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Directories 0755, files 0755 if anyone may run them and 0644 otherwise;
/// symlinks as they are.
fn normalise_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            normalise_modes(&entry.path())?;
        } else if kind.is_file() {
            let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5a3f1000)\n\
                    \tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f3a1c000000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3a1bc1e000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3a1e2f4000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            ["/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}
