//! deploy/systemd: the units checked by `systemd-analyze verify`, the
//! sysusers file by `systemd-sysusers --dry-run`, and the environment files
//! read as systemd reads them (keel.env's use by Keel is checked in a
//! container, [`super::container::runs_with_systemd_environment`]).
//! keel-proxy.service must run `keel grpc-proxy start $DAEMON_ARGS` in
//! keel.service's sandbox, and keel-proxy.env's DAEMON_ARGS must be flags
//! the proxy takes ([`super::check_proxy_args`]).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::cargo;

const UNITS: [&str; 2] = ["keel.service", "keel-proxy.service"];

/// What keel.service's sandbox and identity are made of; the proxy's unit
/// must set each as keel.service does.
const SANDBOX: &[&str] = &[
    "User",
    "Group",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "LockPersonality",
    "CapabilityBoundingSet",
    "SystemCallArchitectures",
    "LimitNOFILE",
];

/// `systemd-analyze verify` on each unit, in a scratch root that holds the
/// units, keel where their ExecStart names it (verify insists the program
/// exists) and the machine's own system units (for the dependencies every
/// service has). verify exits 0 after some complaints (an unknown key, a
/// bad value), so anything it prints fails the check too. Then the proxy's
/// unit and environment file (the module's doc).
pub fn verify_unit(keel: &Path) -> Result<()> {
    let dir = cargo::workspace_root().join("deploy/systemd");
    let root = tempfile::Builder::new().prefix("keel-systemd-").tempdir()?;
    let units = root.path().join("etc/systemd/system");
    fs::create_dir_all(&units)?;
    for unit in UNITS {
        fs::copy(dir.join(unit), units.join(unit))?;
        let exec_start = exec_start(&fs::read_to_string(dir.join(unit))?)?;
        let program = root.path().join(exec_start[0].trim_start_matches('/'));
        fs::create_dir_all(program.parent().context("ExecStart names a directory")?)?;
        fs::copy(keel, &program)?;
    }
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|dir| dir.is_dir())
        .context("no /usr/lib/systemd/system: install Debian's systemd package")?;
    copy_dir(system_units, &root.path().join("usr/lib/systemd/system"))?;

    for unit in UNITS {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(unit)
            .output()
            .context("running systemd-analyze (Debian's systemd package)")?;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {unit}:\n{said}");
    }

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

    let flags = proxy_unit(
        &fs::read_to_string(dir.join("keel.service"))?,
        &fs::read_to_string(dir.join("keel-proxy.service"))?,
        &environment_file(&dir.join("keel-proxy.env"))?,
    )?;
    super::check_proxy_args(keel, &flags).context("keel-proxy.env's DAEMON_ARGS")
}

/// keel-proxy.service against keel.service, and the flags its environment
/// file gives the proxy.
fn proxy_unit(keel_unit: &str, proxy_unit: &str, env: &[(String, String)]) -> Result<Vec<String>> {
    let keel_exec = exec_start(keel_unit)?;
    let proxy_exec = exec_start(proxy_unit)?;
    ensure!(
        proxy_exec[0] == keel_exec[0] && proxy_exec[1..] == ["grpc-proxy", "start", "$DAEMON_ARGS"],
        "keel-proxy.service should run `{} grpc-proxy start $DAEMON_ARGS`, not {proxy_exec:?}",
        keel_exec[0]
    );
    for key in SANDBOX {
        let keel = directive(keel_unit, key);
        ensure!(keel.is_some(), "keel.service has no {key}= (the proxy's sandbox is checked against it)");
        ensure!(
            directive(proxy_unit, key) == keel,
            "keel-proxy.service's {key}= should be keel.service's {keel:?}, not {:?}",
            directive(proxy_unit, key)
        );
    }
    ensure!(
        directive(proxy_unit, "Restart") == Some("on-failure"),
        "keel-proxy.service should have Restart=on-failure"
    );
    for key in ["Wants", "After"] {
        ensure!(
            directive(proxy_unit, key)
                .is_some_and(|units| units.split_whitespace().any(|u| u == "network-online.target")),
            "keel-proxy.service should have {key}=network-online.target"
        );
    }
    ensure!(
        directive(proxy_unit, "EnvironmentFile") == Some("-/etc/default/keel-proxy"),
        "keel-proxy.service should read EnvironmentFile=-/etc/default/keel-proxy"
    );
    // The proxy reads no ETCD_* variables (nor does etcd's grpc-proxy): any
    // other variable would look like configuration and do nothing.
    let mut flags = None;
    for (key, value) in env {
        ensure!(key == "DAEMON_ARGS", "keel-proxy.env sets {key}, which the proxy does not read: use DAEMON_ARGS");
        flags = Some(value.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    }
    flags.context("keel-proxy.env has no DAEMON_ARGS")
}

/// The value of the last `key=` line of a unit file.
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().rev().find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('=')).map(str::trim)
}

/// The words of ExecStart, the program's prefixes (`-`, `@`, ...) removed.
fn exec_start(unit: &str) -> Result<Vec<String>> {
    let line = directive(unit, "ExecStart").context("a unit has no ExecStart")?;
    let words: Vec<String> =
        line.trim_start_matches(['-', '@', ':', '+', '!']).split_whitespace().map(str::to_owned).collect();
    ensure!(!words.is_empty(), "an empty ExecStart");
    Ok(words)
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
            ["/usr/local/bin/keel", "$DAEMON_ARGS"]
        );
        assert_eq!(exec_start("ExecStart=-/bin/x").unwrap(), ["/bin/x"]);
        assert_eq!(directive("ExecStartPre=/bin/y\nExecStart=/bin/x\n", "ExecStart"), Some("/bin/x"));
    }

    fn shipped(name: &str) -> String {
        fs::read_to_string(cargo::workspace_root().join("deploy/systemd").join(name)).unwrap()
    }

    #[test]
    fn the_proxy_unit_matches_keels() {
        let env = environment_file(&cargo::workspace_root().join("deploy/systemd/keel-proxy.env")).unwrap();
        let flags = proxy_unit(&shipped("keel.service"), &shipped("keel-proxy.service"), &env).unwrap();
        assert!(flags.iter().any(|flag| flag.starts_with("--endpoints=")), "{flags:?}");

        let (keel, proxy) = (shipped("keel.service"), shipped("keel-proxy.service"));
        let broken = [
            proxy.replace("ProtectSystem=strict", "ProtectSystem=full"),
            proxy.replace("CapabilityBoundingSet=\n", ""),
            proxy.replace("Restart=on-failure", "Restart=always"),
            proxy.replace("After=network-online.target", "After=network.target"),
            proxy.replace("grpc-proxy start $DAEMON_ARGS", "$DAEMON_ARGS"),
            proxy.replace("User=keel", "User=root"),
        ];
        for unit in broken {
            assert_ne!(unit, proxy, "a replacement matched nothing");
            assert!(proxy_unit(&keel, &unit, &env).is_err(), "passed:\n{unit}");
        }
        let etcd_style = [("ETCD_ENDPOINTS".to_owned(), "a:2379".to_owned())];
        assert!(proxy_unit(&keel, &proxy, &etcd_style).is_err());
    }

    #[test]
    fn the_environment_file_parses() {
        let vars = environment_file(&cargo::workspace_root().join("deploy/systemd/keel.env")).unwrap();
        assert!(vars.iter().any(|(key, _)| key == "DAEMON_ARGS"), "{vars:?}");
        assert!(vars.iter().all(|(key, _)| key == "DAEMON_ARGS" || key.starts_with("ETCD_")), "{vars:?}");
    }
}
