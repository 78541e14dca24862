//! Running the cargo that invoked us, from the workspace root.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent directory")
}

/// A `cargo` command (the same toolchain that runs xtask), in the workspace root.
pub fn command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds the debug binary `bin`, compiling exactly what `cargo test --workspace`
/// compiles: selecting one package changes feature unification, and a new feature
/// set rebuilds RocksDB's C++ (minutes) for nothing.
pub fn build_bin(bin: &str) -> Result<PathBuf> {
    build_executable(&["build", "--workspace", "--all-targets"], bin)
}

/// Builds the release binary `bin` the way the README runs it
/// (`cargo run --release --bin keel`), so both share one build.
pub fn build_release_bin(bin: &str) -> Result<PathBuf> {
    build_executable(&["build", "--release", "--bin", bin], bin)
}

/// As [`build_release_bin`], with more arguments (features, packages).
pub fn build_release_bin_with(extra: &[&str], bin: &str) -> Result<PathBuf> {
    let args: Vec<&str> = ["build", "--release", "--bin", bin].iter().chain(extra).copied().collect();
    build_executable(&args, bin)
}

/// As [`build_bin`], for several binaries: their paths, in the order asked.
pub fn build_bins(bins: &[&str]) -> Result<Vec<PathBuf>> {
    build_executables(&["build", "--workspace", "--all-targets"], bins)
}

/// Builds the release binaries `bins` in one cargo run, selected with one
/// `--bin` each: `cargo build --release --bin keel --bin keelctl` shares its
/// build with the README's commands (another selection of packages or
/// features rebuilds RocksDB's C++).
pub fn build_release_bins(bins: &[&str]) -> Result<Vec<PathBuf>> {
    let mut args = vec!["build", "--release"];
    for bin in bins {
        args.extend(["--bin", bin]);
    }
    build_executables(&args, bins)
}

/// Runs `cargo <args>` and returns the path cargo reports for the executable
/// `bin`, so the answer is right whatever `target-dir` or `CARGO_TARGET_DIR` says.
fn build_executable(args: &[&str], bin: &str) -> Result<PathBuf> {
    Ok(build_executables(args, &[bin])?.remove(0))
}

/// As [`build_executable`], for each of `bins`.
fn build_executables(args: &[&str], bins: &[&str]) -> Result<Vec<PathBuf>> {
    eprintln!("cargo {} ...", args.join(" "));
    let mut child = command()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning cargo build")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executables: Vec<Option<PathBuf>> = vec![None; bins.len()];
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        // With --all-targets the bin's unit-test harness is an artifact named
        // `bin` too; only the real binary is built without the test profile.
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != false {
            continue;
        }
        let Some(slot) = bins.iter().position(|bin| msg["target"]["name"] == *bin) else { continue };
        if let Some(path) = msg["executable"].as_str() {
            executables[slot] = Some(PathBuf::from(path));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    bins.iter()
        .zip(executables)
        .map(|(bin, path)| path.with_context(|| format!("cargo build did not report an executable for {bin}")))
        .collect()
}
