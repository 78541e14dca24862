//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! - `cargo xtask test`: the project's single test command: `cargo fmt --check`, `cargo clippy`
//!   (warnings are errors), `cargo test --workspace`, the crash tests with fault points, then the
//!   etcd compatibility suite, the check of deploy/ ([`deploy`]), a short `robustness` run, then
//!   a small smoke run of `bench compare`.
//! - `cargo xtask compat`: the differential compatibility suite alone (see [`compat`]).
//! - `cargo xtask bench put|range|txn-put|txn-mixed|watch|watch-latency|slow-watcher|
//!   lease-keepalive|lease-grant-revoke|compare`: etcd's benchmark workloads, and Keel-vs-etcd
//!   runs (see [`bench`]).
//! - `cargo xtask cluster up|down|status`: a local cluster on loopback (see [`cluster`]).
//! - `cargo xtask docs`: regenerate `docs/configuration.md` from the flag table in `keel-config`.
//! - `cargo xtask simulate --seeds N [--first F] | --seed S`: simulated clusters under faults
//!   (`keel-sim`, release build); `cargo xtask test` runs 200 seeds as a test.
//! - `cargo xtask image [--debug] [--tag T]`: the container image (see [`image`]);
//!   `cargo xtask deploy`: the check of deploy/ that `cargo xtask test` runs (see [`deploy`]).
//! - `cargo xtask robustness [--target keel|etcd] [--duration 30m] [--seed S]`: a cluster of real
//!   processes in network namespaces under seeded faults, every answer checked (see [`robustness`]).

mod bench;
mod cargo;
mod cluster;
mod compat;
mod deploy;
mod image;
mod robustness;

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Keel project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run fmt and clippy checks, `cargo test --workspace`, the etcd compatibility suite, the deploy check, and a bench smoke run.
    Test {
        #[command(flatten)]
        compat: compat::Options,
    },
    /// Run the same etcdctl script against real etcd and Keel and diff the outputs.
    Compat(compat::Options),
    /// Load generator and side-by-side comparison with real etcd.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// A local Keel cluster on loopback: `up --members 3`, `status`, `down`.
    #[command(subcommand)]
    Cluster(cluster::Cluster),
    /// Regenerate docs/configuration.md from the flag table (a test fails while it is stale).
    Docs,
    /// Deterministic cluster simulation over many seeds (`--seeds N`, `--first F`), or one (`--seed S`).
    Simulate {
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Replay one seed, printing what happened.
        #[arg(long)]
        seed: Option<u64>,
        /// Members also crash at the fault points inside their steps
        /// (keel-sim built with its `failpoints` feature).
        #[arg(long)]
        fault_points: bool,
    },
    /// Build the container image (deploy/Dockerfile) from keel and keelctl built here.
    Image(image::Options),
    /// Check deploy/: the image, Compose, Kubernetes manifests and systemd unit (part of `test`).
    Deploy,
    /// A 3-member cluster in network namespaces under seeded faults, every client answer checked.
    Robustness(robustness::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test { compat } => test(&compat),
        Command::Compat(opts) => compat::run(&opts),
        Command::Bench(bench) => bench::run(bench),
        Command::Cluster(command) => cluster::run(command),
        Command::Docs => docs(),
        Command::Simulate { seeds, first, seed, fault_points } => simulate(seeds, first, seed, fault_points),
        Command::Image(opts) => image::run(&opts),
        Command::Deploy => deploy::check(),
        Command::Robustness(opts) => robustness::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(compat_opts: &compat::Options) -> Result<()> {
    let status = cargo::command().args(["fmt", "--all", "--check"]).status()?;
    if !status.success() {
        bail!("cargo fmt --check found unformatted code (run cargo fmt)");
    }
    // With the fault points compiled in, so their code is linted too.
    let status = cargo::command()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "keel-server/failpoints,keel-sim/failpoints",
            "--",
            "-D",
            "warnings",
        ])
        .status()?;
    if !status.success() {
        bail!("cargo clippy found warnings");
    }
    let status = cargo::command().args(["test", "--workspace"]).status()?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    // The crash tests need keel built with its fault points.
    let status = cargo::command()
        .args(["test", "-p", "keel-server", "--features", "failpoints", "--test", "failpoints"])
        .status()?;
    if !status.success() {
        bail!("the crash tests (failpoints) failed ({status})");
    }
    // And the simulation, whose members crash at those fault points.
    let status = cargo::command()
        .args(["test", "-p", "keel-sim", "--features", "failpoints", "--test", "fault_points"])
        .status()?;
    if !status.success() {
        bail!("the simulation with crashes at fault points failed ({status})");
    }
    compat::run(compat_opts)?;
    // The image, Compose, Kubernetes and systemd files, on the debug build.
    deploy::check()?;
    robustness_smoke()?;
    bench_smoke()
}

/// A short `robustness` run against the debug keel (about two minutes), unless
/// `KEEL_SKIP_NETNS=1` or this machine cannot make network namespaces: then it
/// says so and skips, rather than pass without having run.
fn robustness_smoke() -> Result<()> {
    if std::env::var_os("KEEL_SKIP_NETNS").is_some_and(|v| v == "1") {
        eprintln!("robustness: SKIPPED (KEEL_SKIP_NETNS=1)");
        return Ok(());
    }
    if let Some(why) = robustness::unavailable() {
        eprintln!("robustness: SKIPPED, network namespaces are unavailable here: {why}");
        return Ok(());
    }
    let keel = cargo::build_bin("keel")?;
    let keel = keel.to_string_lossy();
    let args = ["robustness", "--duration", "90s", "--keel-bin", &keel];
    eprintln!("robustness smoke: cargo xtask {}", args.join(" "));
    let cli = Cli::try_parse_from(std::iter::once("xtask").chain(args))?;
    let Command::Robustness(opts) = cli.command else { unreachable!("parsed as robustness") };
    robustness::run(&opts)
}

fn simulate(seeds: u64, first: u64, seed: Option<u64>, fault_points: bool) -> Result<()> {
    let sim = if fault_points {
        cargo::build_release_bin_with(&["-p", "keel-sim", "--features", "failpoints"], "keel-sim")?
    } else {
        cargo::build_release_bin("keel-sim")?
    };
    let mut command = std::process::Command::new(sim);
    match seed {
        Some(seed) => command.args(["--seed", &seed.to_string()]),
        None => command.args(["--seeds", &seeds.to_string(), "--first", &first.to_string()]),
    };
    if !command.status()?.success() {
        bail!("some seeds failed");
    }
    Ok(())
}

fn docs() -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::write(&path, keel_config::markdown())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A small `bench compare` against the debug keel, so the harness (servers,
/// every kind of workload, the exactly-once checks) keeps working; its
/// numbers mean nothing.
fn bench_smoke() -> Result<()> {
    let keel = cargo::build_bin("keel")?;
    let keel = keel.to_string_lossy();
    let args = [
        "compare",
        "--rounds",
        "1",
        "--total",
        "200",
        "--prefill",
        "50",
        "--watch-puts",
        "50",
        "--fanout-secs",
        "1",
        "--fanout-put-rate",
        "50",
        "--workloads",
        "put-8,range-l-8,txn-put-8,txn-mixed-8,watch-2x2,watch-latency-2x2,watch-fanout-2x2,slow-watcher-8,lease-keepalive-8,lease-grant-revoke-8,json-put-8,json-range-8,v2-set-8,v2-get-8",
        "--keel-bin",
        &keel,
    ];
    eprintln!("bench smoke: cargo xtask bench {}", args.join(" "));
    #[derive(Parser)]
    struct BenchCli {
        #[command(subcommand)]
        bench: bench::Bench,
    }
    let cli = BenchCli::try_parse_from(std::iter::once("bench").chain(args))?;
    bench::run(cli.bench)
}
