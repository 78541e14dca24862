//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! - `cargo xtask test`: the project's single test command: `cargo test --workspace`, then the
//!   etcd compatibility suite.
//! - `cargo xtask compat`: the differential compatibility suite alone (see [`compat`]).
//! - `cargo xtask bench put|range|txn-put|txn-mixed|compare`: etcd's benchmark workloads, and
//!   Keel-vs-etcd runs (see [`bench`]).
//! - `cargo xtask cluster up|down|status`: a local cluster on loopback (see [`cluster`]).

mod bench;
mod cargo;
mod cluster;
mod compat;

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
    /// Run `cargo test --workspace`, then the etcd compatibility suite.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test { compat } => test(&compat),
        Command::Compat(opts) => compat::run(&opts),
        Command::Bench(bench) => bench::run(bench),
        Command::Cluster(command) => cluster::run(command),
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
    let status = cargo::command().args(["test", "--workspace"]).status()?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    compat::run(compat_opts)
}
