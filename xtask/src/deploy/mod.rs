//! The deploy check of `cargo xtask test`: what deploy/ ships works.
//!
//! - systemd: the units pass `systemd-analyze verify`, the sysusers file
//!   `systemd-sysusers --dry-run`, the proxy's flags parse ([`systemd`]);
//! - Kubernetes: the manifests pass their schemas and hang together, the
//!   proxy DaemonSet's flags included ([`kubernetes`], [`check_proxy_args`]);
//! - the image, built from the debug binaries the test suite has just built:
//!   it holds only Keel; `docker run` with etcd's flags, with ETCD_*
//!   variables, and with the systemd environment file gives a healthy member
//!   running as the keel user, which etcdctl reaches through the published
//!   port ([`container`]);
//! - Compose: three members and a proxy beside each come up, answer
//!   `etcdctl member list`, serve through one proxy what was written through
//!   another, and keep their data across `docker compose restart` ([`compose`]);
//! - Kubernetes again: the pod template run by Docker forms a cluster that
//!   passes its probes, and the README's scaling steps add a member.
//!
//! Without a Docker engine the check fails: deploy/ would otherwise pass
//! untested, and CI runs where the engine is. Someone without Docker opts
//! out explicitly with `KEEL_SKIP_DOCKER=1`, and is told loudly what did
//! not run.

mod compose;
mod container;
mod docker;
mod kubernetes;
mod systemd;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::image::{self, Binaries};
use docker::Docker;

/// Set to 1 to run the deploy check without Docker (its static half only).
const SKIP_DOCKER: &str = "KEEL_SKIP_DOCKER";

pub fn check() -> Result<()> {
    let started = Instant::now();
    let binaries = Binaries::build(true)?;
    step("systemd: systemd-analyze verify keel{,-proxy}.service, systemd-sysusers keel.sysusers", || {
        systemd::verify_unit(&binaries.keel)
    })?;
    let manifests = kubernetes::Manifests::load()?;
    step("kubernetes: schemas (kubernetes-validate --strict)", || kubernetes::validate_schemas(&manifests))?;
    let mut pods = step("kubernetes: services, selectors, probes", || kubernetes::check_consistency(&manifests))?;
    step("kubernetes: the proxy DaemonSet, its node-local Service, its flags", || {
        check_proxy_args(&binaries.keel, &kubernetes::check_proxy(&manifests)?)
    })?;

    let docker = match Docker::connect()? {
        Ok(docker) => docker,
        Err(reason) if std::env::var(SKIP_DOCKER).is_ok_and(|v| v == "1") => {
            eprintln!("\n!!! deploy: NO DOCKER ({reason}).");
            eprintln!("!!! The image, Compose and Kubernetes pod checks did NOT run ({SKIP_DOCKER}=1 allowed that).\n");
            return Ok(());
        }
        Err(reason) => bail!(
            "the deploy check needs a Docker engine, and there is none ({reason}); \
             set {SKIP_DOCKER}=1 to run without it knowingly"
        ),
    };
    let tag = format!("keel:xtask-{}", std::process::id());
    docker.own_image(&tag);
    step("image: cargo xtask image --debug", || image::build(&binaries, &tag))?;
    step("image: keel, keelctl, their libraries, nothing else", || {
        container::holds_only_keel(&docker, &tag, &binaries)
    })?;
    step("image: docker run with etcd's flags", || container::runs_with_flags(&docker, &tag))?;
    step("image: docker run with ETCD_* variables", || container::runs_with_environment(&docker, &tag))?;
    step("systemd: keel.env and DAEMON_ARGS", || container::runs_with_systemd_environment(&docker, &tag))?;
    step("compose: three members and three proxies, data kept across a restart", || {
        compose::cluster_keeps_data_across_restart(&docker, &tag)
    })?;
    step("kubernetes: the pod template in Docker, probes, scaling to four", || {
        kubernetes::pods_run_in_docker(&docker, &tag, &mut pods)
    })?;
    drop(docker);
    eprintln!("deploy: passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Whether `args` (after `grpc-proxy start`) are flags the proxy takes, asked
/// of the binary that will run them. Each must be `--name=value`, or a bare
/// `--name` for a boolean, with a name `keel grpc-proxy start --help` lists
/// as accepted (the flags it refuses are listed apart). Then the values:
/// `start ARGS --help` parses ARGS in order and prints the usage only if
/// each one parsed (an unknown flag, a refused one or a bad value is an
/// error before `--help` is reached). The first step makes the second safe:
/// with every value inline, no flag can take `--help` as its value and
/// start a proxy instead.
pub(super) fn check_proxy_args(keel: &Path, args: &[String]) -> Result<()> {
    let out = Command::new(keel).args(["grpc-proxy", "start", "--help"]).output().context("running keel")?;
    ensure!(out.status.success(), "keel grpc-proxy start --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let flags = proxy_flags(&String::from_utf8_lossy(&out.stdout));
    ensure!(flags.contains_key("endpoints"), "keel grpc-proxy start --help lists no --endpoints:\n{flags:?}");
    for arg in args {
        let body = arg.strip_prefix("--").with_context(|| format!("{arg:?}: write flags as --name=value"))?;
        let (name, inline) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        let takes_value = *flags.get(name).with_context(|| format!("{arg}: not a flag keel grpc-proxy start takes"))?;
        ensure!(!takes_value || inline, "{arg}: give its value as --{name}=VALUE");
    }

    let mut child = Command::new(keel)
        .args(["grpc-proxy", "start"])
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running keel")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("keel grpc-proxy start {} --help started a proxy instead of parsing", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("start the grpc proxy"),
        "keel grpc-proxy start refuses {}:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default()
    );
    Ok(())
}

/// The flags a pflag usage lists, each with whether it takes a value
/// (`--name type  description`: one space before a type, two or more before
/// the description), up to the list of flags refused ("Not supported").
fn proxy_flags(usage: &str) -> BTreeMap<String, bool> {
    let mut flags = BTreeMap::new();
    for line in usage.lines().map(str::trim_start) {
        if line.starts_with("Not supported") {
            break;
        }
        let line = line.strip_prefix("-h, ").unwrap_or(line);
        let Some(rest) = line.strip_prefix("--") else { continue };
        let (name, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let takes_value = after.starts_with(|c: char| !c.is_whitespace());
        flags.insert(name.to_owned(), takes_value);
    }
    flags
}

fn step<T>(name: &str, run: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    eprintln!("deploy: {name} ...");
    let value = run().with_context(|| format!("deploy: {name}"))?;
    eprintln!("deploy: {name}: ok ({:.1?})", started.elapsed());
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_flags_from_the_usage() {
        let usage = "start the grpc proxy

Usage:
  keel grpc-proxy start [flags]

Flags:
      --debug                           Enable debug-level logging for grpc-proxy.
      --endpoints strings               comma separated etcd cluster endpoints (default [127.0.0.1:2379])
  -h, --help                            help for start
      --insecure-skip-tls-verify        skip authentication of etcd server TLS certificates
      --resolver-ttl int                specify TTL, in seconds, when registering proxy endpoints

Keel's own:
      --read-only                       refuse every write

Not supported yet (refused): --enable-pprof, --discovery-srv,
--auto-tls.
";
        let flags = proxy_flags(usage);
        let expected = [
            ("debug", false),
            ("endpoints", true),
            ("help", false),
            ("insecure-skip-tls-verify", false),
            ("read-only", false),
            ("resolver-ttl", true),
        ];
        let expected: BTreeMap<String, bool> = expected.map(|(name, value)| (name.to_owned(), value)).into();
        assert_eq!(flags, expected);
    }
}
