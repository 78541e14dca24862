//! deploy/compose: the three-member cluster comes up, answers `etcdctl
//! member list`, and every member still has the data after `docker compose
//! restart`, and after `down` and `up` (new containers, the same volumes).

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::docker::{etcdctl, free_port, retry, Docker};
use crate::cargo;

const MEMBERS: [&str; 3] = ["keel0", "keel1", "keel2"];

pub fn cluster_keeps_data_across_restart(docker: &Docker, image: &str) -> Result<()> {
    let file = cargo::workspace_root().join("deploy/compose/compose.yaml");
    let project = docker.name("compose");
    // The client ports, published on loopback: free ones, not 2379, so a
    // member running on this machine is no obstacle.
    let ports = [free_port()?, free_port()?, free_port()?];
    let mut env = vec![("KEEL_IMAGE", image.to_owned())];
    for (var, port) in ["KEEL0_CLIENT_PORT", "KEEL1_CLIENT_PORT", "KEEL2_CLIENT_PORT"].into_iter().zip(ports) {
        env.push((var, port.to_string()));
    }
    let endpoints: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let all = endpoints.join(",");

    docker.compose(&project, &file, &env, &["config", "--quiet"])?;
    docker.compose(&project, &file, &env, &["up", "--detach"])?;
    let containers = project_containers(docker, &project, &file, &env)?;
    for container in &containers {
        docker.wait_healthy(container, Duration::from_secs(60))?;
    }
    let members = etcdctl(&all, &["member", "list"])?;
    for name in MEMBERS {
        ensure!(members.contains(&format!(", started, {name}, ")), "{name} is not a started member:\n{members}");
    }
    etcdctl(&all, &["put", "/deploy/compose", "kept"])?;

    let started_before = started_at(docker, &containers)?;
    docker.compose(&project, &file, &env, &["restart"])?;
    ensure!(started_at(docker, &containers)? != started_before, "docker compose restart restarted nothing");
    every_member_kept_it(docker, &containers, &endpoints, "docker compose restart")?;

    // A restart keeps the containers' own files too; new containers have
    // only the named volumes.
    docker.compose(&project, &file, &env, &["down", "--timeout", "10"])?;
    docker.compose(&project, &file, &env, &["up", "--detach"])?;
    let recreated = project_containers(docker, &project, &file, &env)?;
    ensure!(recreated.iter().all(|c| !containers.contains(c)), "docker compose up reused the old containers");
    every_member_kept_it(docker, &recreated, &endpoints, "docker compose down and up")?;
    docker.compose(&project, &file, &env, &["down", "--volumes", "--timeout", "10"])?;
    Ok(())
}

/// Each member, healthy again, reads the key alone: a serializable read
/// answers from the member's own store, so each shows its data dir survived.
fn every_member_kept_it(docker: &Docker, containers: &[String], endpoints: &[String], after: &str) -> Result<()> {
    for container in containers {
        docker.wait_healthy(container, Duration::from_secs(60))?;
    }
    for endpoint in endpoints {
        let value = retry(Duration::from_secs(20), || {
            etcdctl(endpoint, &["get", "/deploy/compose", "--print-value-only", "--consistency=s"])
        })
        .with_context(|| format!("reading the member at {endpoint} after {after}"))?;
        ensure!(value.trim() == "kept", "the member at {endpoint} read {value:?} after {after}");
    }
    Ok(())
}

/// The project's containers, by service name.
fn project_containers(
    docker: &Docker,
    project: &str,
    file: &std::path::Path,
    env: &[(&str, String)],
) -> Result<Vec<String>> {
    MEMBERS
        .iter()
        .map(|service| {
            let id = docker.compose(project, file, env, &["ps", "--quiet", service])?;
            let id = id.trim().to_owned();
            ensure!(!id.is_empty(), "compose started no container for {service}");
            Ok(id)
        })
        .collect()
}

fn started_at(docker: &Docker, containers: &[String]) -> Result<Vec<String>> {
    containers.iter().map(|c| docker.run(&["inspect", "--format", "{{.State.StartedAt}}", c])).collect()
}
