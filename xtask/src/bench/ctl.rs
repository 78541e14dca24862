//! `bench ctl`: the command line as scripts use it, a process per command.
//! `keelctl get` and `etcdctl get` alternate (A B A B) against one Keel,
//! each timed from spawn to exit; with `--check-perf`, `etcdctl check
//! perf` runs against etcd and `keelctl check perf` against Keel, both at
//! the same load, and their verdicts are shown side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::compare::median;
use super::server::{Server, Systems};

#[derive(Args, Debug)]
pub struct CtlOptions {
    /// `get`s per command line (alternating).
    #[arg(long, default_value_t = 40)]
    pub rounds: usize,
    #[arg(long, default_value = "etcdctl")]
    pub etcdctl_bin: PathBuf,
    /// A prebuilt keelctl; by default `cargo build --release --bin keelctl`.
    #[arg(long)]
    pub keelctl_bin: Option<PathBuf>,
    /// Also run `check perf --load <LOAD>` (60 s each): etcdctl against
    /// etcd, keelctl against Keel.
    #[arg(long)]
    pub check_perf: Option<String>,
    #[command(flatten)]
    pub systems: Systems,
}

/// One timed run of a command line: wall time from spawn to exit.
fn timed(bin: &Path, endpoint: &str, args: &[&str]) -> Result<(Duration, String)> {
    let started = Instant::now();
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("{} {args:?} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(options: &CtlOptions) -> Result<()> {
    if options.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let keel_bin = options.systems.keel_bin()?;
    let keelctl = match &options.keelctl_bin {
        Some(bin) => bin.clone(),
        None => crate::cargo::build_release_bin("keelctl")?,
    };
    let root = &options.systems.data_root;
    let mut keel = Server::start(&keel_bin, root, "keel")?;
    keel.wait_ready().await?;
    let endpoint = keel.url.clone();
    let (_, put) = timed(&keelctl, &endpoint, &["put", "bench/ctl", "value"])?;
    if put != "OK\n" {
        bail!("keelctl put printed {put:?}");
    }

    println!("ctl: `get bench/ctl` as a new process each time, {} rounds per command line, A B A B", options.rounds);
    let (mut etcdctl_ms, mut keelctl_ms) = (Vec::new(), Vec::new());
    for _ in 0..options.rounds {
        let (took, out) = timed(&options.etcdctl_bin, &endpoint, &["get", "bench/ctl"])?;
        etcdctl_ms.push(ms(took));
        let (took, same) = timed(&keelctl, &endpoint, &["get", "bench/ctl"])?;
        keelctl_ms.push(ms(took));
        if out != same {
            bail!("keelctl printed {same:?} where etcdctl printed {out:?}");
        }
    }
    let (etcdctl_median, keelctl_median) = (median(etcdctl_ms.clone()), median(keelctl_ms.clone()));
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!("| command line | median wall time | fastest |");
    println!("|---|---:|---:|");
    println!("| etcdctl 3.4 | {etcdctl_median:.1} ms | {:.1} ms |", best(&etcdctl_ms));
    println!("| keelctl | {keelctl_median:.1} ms | {:.1} ms |", best(&keelctl_ms));
    println!(
        "keelctl takes {:.2}× etcdctl's wall time (target: at most 0.5×)",
        keelctl_median / etcdctl_median.max(f64::MIN_POSITIVE)
    );

    if let Some(load) = &options.check_perf {
        drop(keel);
        for (name, ctl, server_bin) in
            [("etcd", &options.etcdctl_bin, &options.systems.etcd_bin), ("keel", &keelctl, &keel_bin)]
        {
            let mut server = Server::start(server_bin, root, name)?;
            server.wait_ready().await?;
            println!("check perf --load {load}: {} against {name}", ctl.display());
            let out = Command::new(ctl)
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &server.url, "check", "perf", "--load", load])
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {}", ctl.display()))?;
            // The progress bar goes to a terminal only: what is left is the verdict.
            for line in
                String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("PASS") || l.contains("FAIL"))
            {
                println!("    {line}");
            }
            println!("    exit status: {}", out.status.code().unwrap_or(-1));
        }
    }
    Ok(())
}
