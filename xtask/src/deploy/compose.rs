//! deploy/compose: the three-member cluster and its three proxies come up,
//! `etcdctl member list` shows the members (and, through a proxy, the
//! proxies), a key written through one proxy is read through another, and
//! every member still has it after `docker compose restart`, and after
//! `down` and `up` (new containers, the same volumes), as every proxy does.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::docker::{etcdctl, free_port, http_get, retry, Docker};
use crate::cargo;

const MEMBERS: [&str; 3] = ["keel0", "keel1", "keel2"];
const PROXIES: [&str; 3] = ["keel-proxy0", "keel-proxy1", "keel-proxy2"];

pub fn cluster_keeps_data_across_restart(docker: &Docker, image: &str) -> Result<()> {
    let file = cargo::workspace_root().join("deploy/compose/compose.yaml");
    let project = docker.name("compose");
    // The client ports, published on loopback: free ones, not 2379 or
    // 23790, so a member or proxy running on this machine is no obstacle.
    let ports = [free_port()?, free_port()?, free_port()?];
    let proxy_ports = [free_port()?, free_port()?, free_port()?];
    let mut env = vec![("KEEL_IMAGE", image.to_owned())];
    for (var, port) in ["KEEL0_CLIENT_PORT", "KEEL1_CLIENT_PORT", "KEEL2_CLIENT_PORT"].into_iter().zip(ports) {
        env.push((var, port.to_string()));
    }
    for (var, port) in ["KEEL_PROXY0_PORT", "KEEL_PROXY1_PORT", "KEEL_PROXY2_PORT"].into_iter().zip(proxy_ports) {
        env.push((var, port.to_string()));
    }
    let endpoints: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let proxies: Vec<String> = proxy_ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
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
    proxies_listed(&proxies[2], "start")?;

    // Written through one proxy, read (linearizable) through another, then
    // from each member alone below.
    etcdctl(&proxies[0], &["put", "/deploy/compose", "kept"])?;
    let value = etcdctl(&proxies[1], &["get", "/deploy/compose", "--print-value-only"])?;
    ensure!(value.trim() == "kept", "the key written through keel-proxy0 read {value:?} through keel-proxy1");

    let started_before = started_at(docker, &containers)?;
    docker.compose(&project, &file, &env, &["restart"])?;
    ensure!(started_at(docker, &containers)? != started_before, "docker compose restart restarted nothing");
    every_member_kept_it(docker, &containers, &endpoints, &proxies, "docker compose restart")?;

    // A restart keeps the containers' own files too; new containers have
    // only the named volumes.
    docker.compose(&project, &file, &env, &["down", "--timeout", "10"])?;
    docker.compose(&project, &file, &env, &["up", "--detach"])?;
    let recreated = project_containers(docker, &project, &file, &env)?;
    ensure!(recreated.iter().all(|c| !containers.contains(c)), "docker compose up reused the old containers");
    every_member_kept_it(docker, &recreated, &endpoints, &proxies, "docker compose down and up")?;
    docker.compose(&project, &file, &env, &["down", "--volumes", "--timeout", "10"])?;
    Ok(())
}

/// Each member, healthy again, reads the key alone: a serializable read
/// answers from the member's own store, so each shows its data dir survived.
/// Each proxy, healthy again, is ready (`/readyz` on its client port) and
/// reads the key through the cluster.
fn every_member_kept_it(
    docker: &Docker,
    containers: &[String],
    endpoints: &[String],
    proxies: &[String],
    after: &str,
) -> Result<()> {
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
    for proxy in proxies {
        let addr = proxy.parse()?;
        retry(Duration::from_secs(20), || {
            let (status, body) = http_get(addr, "/readyz")?;
            ensure!(status == 200, "the proxy at {proxy} is not ready after {after}: {status} {body}");
            Ok(())
        })?;
        let value =
            retry(Duration::from_secs(20), || etcdctl(proxy, &["get", "/deploy/compose", "--print-value-only"]))
                .with_context(|| format!("reading through the proxy at {proxy} after {after}"))?;
        ensure!(value.trim() == "kept", "the proxy at {proxy} read {value:?} after {after}");
    }
    proxies_listed(&proxies[0], after)
}

/// Each proxy registers under --resolver-prefix shortly after it starts; the
/// member list through any of them then lists the three, and not the members.
fn proxies_listed(proxy: &str, after: &str) -> Result<()> {
    retry(Duration::from_secs(20), || {
        let listed = etcdctl(proxy, &["member", "list"])?;
        for name in PROXIES {
            let line = format!(", started, {name}, , {name}:23790, ");
            ensure!(listed.contains(&line), "{name} is not listed after {after}:\n{listed}");
        }
        ensure!(!listed.contains(", keel0, "), "the member list through a proxy shows the members:\n{listed}");
        Ok(())
    })
    .with_context(|| format!("member list through the proxy at {proxy} after {after}"))
}

/// The project's containers, members then proxies, by service name.
fn project_containers(
    docker: &Docker,
    project: &str,
    file: &std::path::Path,
    env: &[(&str, String)],
) -> Result<Vec<String>> {
    MEMBERS
        .iter()
        .chain(&PROXIES)
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
