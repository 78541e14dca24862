//! The deploy check of `cargo xtask test`: what deploy/ ships works.
//!
//! - systemd: the unit passes `systemd-analyze verify`, the sysusers file
//!   `systemd-sysusers --dry-run` ([`systemd`]);
//! - Kubernetes: the manifests pass their schemas and hang together
//!   ([`kubernetes`]);
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

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::image::{self, Binaries};
use docker::Docker;

/// Set to 1 to run the deploy check without Docker (its static half only).
const SKIP_DOCKER: &str = "KEEL_SKIP_DOCKER";

pub fn check() -> Result<()> {
    let started = Instant::now();
    let binaries = Binaries::build(true)?;
    step("systemd: systemd-analyze verify keel.service, systemd-sysusers keel.sysusers", || {
        systemd::verify_unit(&binaries.keel)
    })?;
    let manifests = kubernetes::Manifests::load()?;
    step("kubernetes: schemas (kubernetes-validate --strict)", || kubernetes::validate_schemas(&manifests))?;
    let mut pods = step("kubernetes: services, selectors, probes", || kubernetes::check_consistency(&manifests))?;

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

fn step<T>(name: &str, run: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    eprintln!("deploy: {name} ...");
    let value = run().with_context(|| format!("deploy: {name}"))?;
    eprintln!("deploy: {name}: ok ({:.1?})", started.elapsed());
    Ok(value)
}
