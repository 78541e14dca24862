//! Running the cargo that invoked us, from the workspace root.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
}

/// A `cargo` command (the same toolchain that runs xtask), in the workspace root.
pub fn command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds one binary target in the debug profile and returns the path cargo reports for it,
/// so the answer is right whatever `target-dir` or `CARGO_TARGET_DIR` says.
pub fn build_bin(package: &str, bin: &str) -> Result<PathBuf> {
    eprintln!("building {package} (bin {bin}) ...");
    let mut child = command()
        // The whole workspace with all targets, exactly what `cargo test --workspace`
        // builds: selecting one package changes feature unification, and a new
        // feature set rebuilds RocksDB's C++ (minutes) for nothing.
        .args(["build", "--workspace", "--all-targets"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning cargo build")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin {
            if let Some(path) = msg["executable"].as_str() {
                executable = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build --package {package} --bin {bin} failed ({status})");
    }
    executable.with_context(|| format!("cargo build did not report an executable for {bin}"))
}
