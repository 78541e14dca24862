//! deploy/systemd: the unit checked by `systemd-analyze verify`, the
//! sysusers file by `systemd-sysusers --dry-run`, and the environment file
//! read as systemd reads it (its use by Keel is checked in a container,
//! [`super::container::runs_with_systemd_environment`]).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::cargo;

/// `systemd-analyze verify` on keel.service, in a scratch root that holds
/// the unit, keel where ExecStart names it (verify insists the program
/// exists) and the machine's own system units (for the dependencies every
/// service has). verify exits 0 after some complaints (an unknown key, a
/// bad value), so anything it prints fails the check too.
pub fn verify_unit(keel: &Path) -> Result<()> {
    let dir = cargo::workspace_root().join("deploy/systemd");
    let root = tempfile::Builder::new().prefix("keel-systemd-").tempdir()?;
    let units = root.path().join("etc/systemd/system");
    fs::create_dir_all(&units)?;
    fs::copy(dir.join("keel.service"), units.join("keel.service"))?;
    let exec_start = exec_start(&fs::read_to_string(dir.join("keel.service"))?)?;
    let program = root.path().join(exec_start.trim_start_matches('/'));
    fs::create_dir_all(program.parent().context("ExecStart names a directory")?)?;
    fs::copy(keel, &program)?;
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|dir| dir.is_dir())
        .context("no /usr/lib/systemd/system: install Debian's systemd package")?;
    copy_dir(system_units, &root.path().join("usr/lib/systemd/system"))?;

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("keel.service")
        .output()
        .context("running systemd-analyze (Debian's systemd package)")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify keel.service:\n{said}");

    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg("--dry-run")
        .arg(dir.join("keel.sysusers"))
        .output()
        .context("running systemd-sysusers")?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && said.contains("Creating user 'keel'"),
        "systemd-sysusers --dry-run keel.sysusers:\n{said}"
    );
    Ok(())
}

/// The program ExecStart runs.
fn exec_start(unit: &str) -> Result<String> {
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).context("keel.service has no ExecStart")?;
    Ok(line.trim_start_matches(['-', '@', ':', '+', '!']).split_whitespace().next().unwrap_or_default().to_owned())
}

/// An EnvironmentFile as systemd reads one: `KEY=VALUE` lines, `#` and `;`
/// comments, blank lines. Quotes are refused rather than interpreted: the
/// same file also goes to `docker run --env-file`, which keeps them.
pub fn environment_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut vars = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}:{}: not KEY=VALUE: {line}", path.display(), number + 1);
        };
        ensure!(
            !value.contains(['"', '\'', '\\']),
            "{}:{}: keep values unquoted, so systemd and docker read them alike",
            path.display(),
            number + 1
        );
        vars.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(vars)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_program() {
        assert_eq!(
            exec_start("[Service]\nExecStart=/usr/local/bin/keel $DAEMON_ARGS\n").unwrap(),
            "/usr/local/bin/keel"
        );
        assert_eq!(exec_start("ExecStart=-/bin/x").unwrap(), "/bin/x");
    }

    #[test]
    fn the_environment_file_parses() {
        let vars = environment_file(&cargo::workspace_root().join("deploy/systemd/keel.env")).unwrap();
        assert!(vars.iter().any(|(key, _)| key == "DAEMON_ARGS"), "{vars:?}");
        assert!(vars.iter().all(|(key, _)| key == "DAEMON_ARGS" || key.starts_with("ETCD_")), "{vars:?}");
    }
}
