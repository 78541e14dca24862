//! The Docker engine as the deploy check uses it: commands that fail with
//! their output, waits with deadlines, and one owner for everything the
//! check creates.
//!
//! Every container, network and volume the check makes carries the label
//! `org.keel.xtask=<pid>`, and every Compose project is named
//! `keel-xtask-<pid>-...`; [`Docker`] removes all of them, and the images it
//! tagged, when dropped, so a failed check leaves nothing behind. Leftovers
//! of a run that was killed (its pid gone) are swept at the next start.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const LABEL: &str = "org.keel.xtask";
const COMPOSE_LABEL: &str = "com.docker.compose.project";
const PROJECT_PREFIX: &str = "keel-xtask-";

pub struct Docker {
    pid: u32,
    /// How to run Compose: `docker compose` (v2) or `docker-compose` (v1).
    compose: Vec<String>,
    images: RefCell<Vec<String>>,
}

impl Docker {
    /// The engine, if `docker info` reaches it, with a Compose; `Ok(None)`
    /// when there is no engine, with the reason.
    pub fn connect() -> Result<std::result::Result<Self, String>> {
        match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
            Err(err) => return Ok(Err(format!("cannot run docker: {err}"))),
            Ok(out) if !out.status.success() => {
                return Ok(Err(format!("docker info failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
            }
            Ok(_) => {}
        }
        let compose = if succeeds(Command::new("docker").args(["compose", "version"])) {
            vec!["docker".to_owned(), "compose".to_owned()]
        } else if succeeds(Command::new("docker-compose").arg("version")) {
            vec!["docker-compose".to_owned()]
        } else {
            bail!("the Docker engine answers but there is no Compose (docker compose or docker-compose)");
        };
        let docker = Self { pid: std::process::id(), compose, images: RefCell::new(Vec::new()) };
        docker.sweep_stale();
        Ok(Ok(docker))
    }

    /// `--label` for what this run creates.
    pub fn label(&self) -> String {
        format!("{LABEL}={}", self.pid)
    }

    /// A name unique to this run: `keel-xtask-<pid>-<what>`.
    pub fn name(&self, what: &str) -> String {
        format!("{PROJECT_PREFIX}{}-{what}", self.pid)
    }

    /// Removes `tag` when the check ends.
    pub fn own_image(&self, tag: &str) {
        self.images.borrow_mut().push(tag.to_owned());
    }

    /// `docker <args>`, its stdout on success.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut command = Command::new("docker");
        command.args(&args);
        output(command, &format!("docker {}", args.join(" ")))
    }

    /// A Compose command on `file` as project `project`, with `env` added.
    pub fn compose(&self, project: &str, file: &Path, env: &[(&str, String)], args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.compose[0]);
        command.args(&self.compose[1..]).arg("--project-name").arg(project).arg("--file").arg(file).args(args);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        output(command, &format!("{} {}", self.compose.join(" "), args.join(" ")))
    }

    /// Waits until the container's health check says healthy (failing at
    /// once if it says unhealthy or the container stops).
    pub fn wait_healthy(&self, container: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let state = self.run(&["inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", container])?;
            match state.trim() {
                "running healthy" => return Ok(()),
                "running starting" if Instant::now() < deadline => thread::sleep(Duration::from_millis(300)),
                other => bail!("container {container} is {other:?}, not healthy\n{}", self.logs(container)),
            }
        }
    }

    /// The host address a container's port is published on.
    pub fn published(&self, container: &str, port: u16) -> Result<SocketAddr> {
        let out = self.run(&["port", container, &format!("{port}/tcp")])?;
        let first = out.lines().next().unwrap_or_default();
        first.trim().parse().with_context(|| format!("docker port {container} {port} said {out:?}"))
    }

    /// The last lines of a container's log, for an error message.
    pub fn logs(&self, container: &str) -> String {
        match Command::new("docker").args(["logs", "--tail", "40", container]).output() {
            Ok(out) => format!(
                "--- last log lines of {container}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(err) => format!("(no logs of {container}: {err})"),
        }
    }

    /// Removes this run's containers, volumes and networks (also those of
    /// its Compose projects), and its images.
    fn remove_all(&self) {
        let pid = self.pid.to_string();
        remove_labelled(|key, value| {
            (key == LABEL && value == pid)
                || (key == COMPOSE_LABEL && project_pid(value).is_some_and(|p| p == self.pid))
        });
        let images = self.images.take();
        if !images.is_empty() {
            let _ = Command::new("docker").args(["rmi", "--force"]).args(&images).output();
        }
    }

    /// What runs that no longer exist left behind.
    fn sweep_stale(&self) {
        let dead = |pid: u32| pid != self.pid && !Path::new(&format!("/proc/{pid}")).exists();
        remove_labelled(|key, value| {
            (key == LABEL && value.parse().is_ok_and(dead))
                || (key == COMPOSE_LABEL && project_pid(value).is_some_and(dead))
        });
        if let Ok(tags) = self.run(&["images", "--filter", "reference=keel:xtask-*", "--format", "{{.Tag}}"]) {
            for tag in tags.lines() {
                if tag.strip_prefix("xtask-").and_then(|pid| pid.parse().ok()).is_some_and(dead) {
                    let _ = self.run(&["rmi", "--force", &format!("keel:{tag}")]);
                }
            }
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// The pid in a Compose project name `keel-xtask-<pid>-...`.
fn project_pid(project: &str) -> Option<u32> {
    project.strip_prefix(PROJECT_PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes every container, then network and volume, carrying a label
/// `key=value` that `doomed(key, value)` accepts.
fn remove_labelled(doomed: impl Fn(&str, &str) -> bool) {
    for (kind, id_field, remove) in [
        ("container", "{{.ID}}", &["rm", "--force", "--volumes"][..]),
        ("network", "{{.ID}}", &["network", "rm"][..]),
        ("volume", "{{.Name}}", &["volume", "rm", "--force"][..]),
    ] {
        let mut ids = Vec::new();
        for key in [LABEL, COMPOSE_LABEL] {
            let mut list = Command::new("docker");
            match kind {
                "container" => list.args(["ps", "--all"]),
                other => list.args([other, "ls"]),
            };
            list.args(["--filter", &format!("label={key}"), "--format"])
                .arg(format!("{id_field}\t{{{{.Label \"{key}\"}}}}"));
            let Ok(out) = list.output() else { continue };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((id, value)) = line.split_once('\t') {
                    if doomed(key, value) && !ids.contains(&id.to_owned()) {
                        ids.push(id.to_owned());
                    }
                }
            }
        }
        if !ids.is_empty() {
            let _ = Command::new("docker").args(remove).args(&ids).output();
        }
    }
}

fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|out| out.status.success())
}

/// Runs `command`; its stdout, or an error with everything it printed.
pub fn output(mut command: Command, what: &str) -> Result<String> {
    let out: Output = command.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `attempt` until it succeeds or `within` has passed (then its
/// last error).
pub fn retry<T>(within: Duration, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// A free port on the host's loopback, for a published port.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An HTTP/1.1 GET (as a kubelet's probe): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response from {addr}{path}: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// etcd's own etcdctl (3.4, from Debian), against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").arg("--endpoints").arg(endpoints).args(args);
    output(command, &format!("etcdctl --endpoints {endpoints} {}", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_carry_the_pid() {
        assert_eq!(project_pid("keel-xtask-4242-compose"), Some(4242));
        assert_eq!(project_pid("keel-compose"), None);
        assert_eq!(project_pid("keel-xtask-x-compose"), None);
    }
}
