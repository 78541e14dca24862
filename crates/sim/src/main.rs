//! `keel-sim`: runs simulated clusters over many seeds (`cargo xtask
//! simulate`). `--seeds N` runs seeds `--first` .. `--first + N`; `--seed S`
//! replays one seed and prints its fault schedule.

use std::process::ExitCode;
use std::time::Instant;

use keel_sim::{run, SimConfig};

fn main() -> ExitCode {
    // KEEL_SIM_LOG=info (or any filter) shows the members' logs.
    if let Ok(filter) = std::env::var("KEEL_SIM_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        let at = args.iter().position(|a| a == name)?;
        args.get(at + 1)?.parse().ok()
    };
    let (first, count, verbose) = match value("--seed") {
        Some(seed) => (seed, 1, true),
        None => (value("--first").unwrap_or(0), value("--seeds").unwrap_or(1000), false),
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    for seed in first..first + count {
        match run(&SimConfig::for_seed(seed)) {
            Ok(report) => {
                if verbose {
                    println!("{report:#?}");
                }
            }
            Err(failure) => {
                eprintln!("{failure}");
                failed.push(seed);
            }
        }
        let done = seed - first + 1;
        if done % 50 == 0 {
            eprintln!("{done}/{count} seeds, {} failed, {:.0?}", failed.len(), started.elapsed());
        }
    }
    println!("{count} seeds from {first}: {} failed {failed:?} in {:.1?}", failed.len(), started.elapsed());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
