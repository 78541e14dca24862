//! The image on its own: what it holds, and `docker run` with etcd's flags,
//! with ETCD_* variables, and with the systemd environment file.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use super::docker::{etcdctl, retry, Docker};
use crate::cargo;
use crate::image::{shared_libraries, Binaries};

/// The image's user (deploy/rootfs/etc/passwd, the Dockerfile's USER).
pub const KEEL_UID: u32 = 65532;

const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// The image's files are the two programs, the links named for etcd's, the
/// libraries ldd names, passwd, group and nsswitch.conf, and directories:
/// nothing else, a shell least of all.
pub fn holds_only_keel(docker: &Docker, image: &str, binaries: &Binaries) -> Result<()> {
    let container = docker.name("files");
    docker.run(&["create", "--name", &container, "--label", &docker.label(), image])?;
    let mut export = Command::new("docker")
        .args(["export", &container])
        .stdout(Stdio::piped())
        .spawn()
        .context("running docker export")?;
    let listing = Command::new("tar")
        .args(["--list", "--verbose", "--numeric-owner", "--file", "-"])
        .stdin(export.stdout.take().expect("piped"))
        .output()
        .context("running tar")?;
    ensure!(export.wait()?.success() && listing.status.success(), "docker export {container} | tar failed");

    let mut expected: BTreeSet<String> =
        ["usr/local/bin/keel", "usr/local/bin/keelctl", "usr/local/bin/etcd", "usr/local/bin/etcdctl"]
            .into_iter()
            .chain(["etc/passwd", "etc/group", "etc/nsswitch.conf"])
            // The engine's own, in every container.
            .chain([".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "dev/console"])
            .map(str::to_owned)
            .collect();
    for library in shared_libraries(&binaries.keel)?.into_iter().chain(shared_libraries(&binaries.keelctl)?) {
        expected.insert(library.to_string_lossy().trim_start_matches('/').to_owned());
    }
    let mut data_dirs = 0;
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        // drwx------ 65532/65532 0 2026-01-01 00:00 var/lib/keel/
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _size, _date, _time, path, ..] = fields[..] else {
            bail!("tar listed {line:?}");
        };
        let path = path.trim_end_matches('/');
        if mode.starts_with('d') {
            if path == "var/lib/keel" || path == "var/lib/etcd" {
                ensure!(
                    mode == "drwx------" && owner == format!("{KEEL_UID}/{KEEL_UID}"),
                    "{path} is {mode} {owner}, not the keel user's with mode 0700"
                );
                data_dirs += 1;
            }
            continue;
        }
        ensure!(expected.contains(path), "the image holds {path}, which it should not:\n{line}");
    }
    ensure!(data_dirs == 2, "the image lacks /var/lib/keel or /var/lib/etcd");
    let _ = docker.run(&["rm", &container]);
    Ok(())
}

/// `docker run IMAGE <etcd's flags>`: healthy, not root, and serving
/// etcdctl through the published port and keelctl inside.
pub fn runs_with_flags(docker: &Docker, image: &str) -> Result<()> {
    let container = docker.name("flags");
    let mut args = run_args(docker, &container);
    args.extend(strings(&[image, "--name", "flags", "--listen-client-urls", "http://0.0.0.0:2379"]));
    args.extend(strings(&["--advertise-client-urls", "http://127.0.0.1:2379"]));
    docker.run(&args)?;
    docker.wait_healthy(&container, HEALTHY_WITHIN)?;
    runs_as_keel(docker, &container)?;
    let endpoint = docker.published(&container, 2379)?.to_string();
    etcdctl(&endpoint, &["put", "/deploy/flags", "through the published port"])?;
    let inside = docker.run(&["exec", &container, "keelctl", "get", "/deploy/flags", "--print-value-only"])?;
    ensure!(inside.trim() == "through the published port", "keelctl in the container read {inside:?}");
    // etcd's name for it runs it too.
    let members = docker.run(&["exec", &container, "etcdctl", "member", "list"])?;
    ensure!(members.contains(", flags, "), "member list in the container said {members:?}");
    Ok(())
}

/// `docker run -e ETCD_...=... IMAGE`: the same member, configured by etcd's
/// variables alone.
pub fn runs_with_environment(docker: &Docker, image: &str) -> Result<()> {
    let container = docker.name("env");
    let mut args = run_args(docker, &container);
    args.extend(strings(&["--env", "ETCD_NAME=from-env", "--env", "ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379"]));
    args.extend(strings(&["--env", "ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379", image]));
    docker.run(&args)?;
    docker.wait_healthy(&container, HEALTHY_WITHIN)?;
    runs_as_keel(docker, &container)?;
    let endpoint = docker.published(&container, 2379)?.to_string();
    let members = etcdctl(&endpoint, &["member", "list"])?;
    ensure!(members.contains(", from-env, "), "ETCD_NAME was not used: member list said {members:?}");
    etcdctl(&endpoint, &["put", "/deploy/env", "v"])?;
    let value = etcdctl(&endpoint, &["get", "/deploy/env", "--print-value-only"])?;
    ensure!(value.trim() == "v", "etcdctl get read {value:?}");
    Ok(())
}

/// The systemd environment file, as keel.service hands it to keel: its
/// variables, and DAEMON_ARGS split into arguments. The container only
/// isolates its ports; what is checked is that Keel takes the file.
pub fn runs_with_systemd_environment(docker: &Docker, image: &str) -> Result<()> {
    let file = cargo::workspace_root().join("deploy/systemd/keel.env");
    let vars = super::systemd::environment_file(&file)?;
    let container = docker.name("systemd-env");
    let mut args = run_args(docker, &container);
    for (key, value) in &vars {
        args.extend(["--env".to_owned(), format!("{key}={value}")]);
    }
    args.push(image.to_owned());
    let daemon_args = vars.iter().find(|(key, _)| key == "DAEMON_ARGS").map(|(_, v)| v.as_str()).unwrap_or("");
    args.extend(daemon_args.split_whitespace().map(str::to_owned));
    docker.run(&args)?;
    docker.wait_healthy(&container, HEALTHY_WITHIN)?;
    let name = vars.iter().find(|(key, _)| key == "ETCD_NAME").map(|(_, v)| v.as_str()).unwrap_or("default");
    let members = docker.run(&["exec", &container, "keelctl", "member", "list"])?;
    ensure!(members.contains(&format!(", {name}, ")), "keel.env's ETCD_NAME was not used: {members:?}");
    Ok(())
}

/// `docker run --detach` with this run's label, the client port published
/// on loopback, and the image's health check run every second instead of
/// every ten (its command stays the image's).
fn run_args(docker: &Docker, container: &str) -> Vec<String> {
    let mut args = strings(&["run", "--detach", "--name", container, "--label"]);
    args.push(docker.label());
    args.extend(strings(&["--publish", "127.0.0.1::2379", "--health-interval", "1s"]));
    args
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// The container's keel process has the keel user's ids, real and effective.
fn runs_as_keel(docker: &Docker, container: &str) -> Result<()> {
    let user = docker.run(&["inspect", "--format", "{{.Config.User}}", container])?;
    ensure!(user.trim() == format!("{KEEL_UID}:{KEEL_UID}"), "the image's user is {user:?}");
    let pid = docker.run(&["inspect", "--format", "{{.State.Pid}}", container])?;
    let status = retry(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).context("reading the process's status")
    })?;
    for field in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(field)).context("no Uid/Gid in /proc status")?;
        let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
        if ids.iter().any(|id| *id != KEEL_UID.to_string()) {
            bail!("keel in {container} runs with {line}, not as the keel user");
        }
    }
    Ok(())
}
