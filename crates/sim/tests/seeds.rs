//! Simulated clusters under faults, many seeds (more with
//! `cargo xtask simulate --seeds N`).

use keel_sim::{run, SimConfig};

/// Seeds checked by every `cargo xtask test`; `KEEL_SIM_SEEDS` changes the count.
fn seed_count() -> u64 {
    std::env::var("KEEL_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(200)
}

#[test]
fn seeds_survive_faults_with_linearizable_histories() {
    let mut failures = Vec::new();
    for seed in 0..seed_count() {
        if let Err(failure) = run(&SimConfig::for_seed(seed)) {
            eprintln!("{failure}");
            failures.push(failure.seed);
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn a_seed_replays_identically() {
    for seed in [1, 7] {
        let first = run(&SimConfig::for_seed(seed)).unwrap_or_else(|f| panic!("{f}"));
        let second = run(&SimConfig::for_seed(seed)).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(first, second, "seed {seed} did not replay identically");
    }
}

/// The checks can fail: clients that read without the read index get stale
/// answers under partitions, and some seed must be caught at it.
#[test]
fn stale_reads_are_caught() {
    let caught = (0..40).find(|&seed| {
        let config = SimConfig { stale_reads: true, ..SimConfig::for_seed(seed) };
        run(&config).is_err_and(|failure| failure.what.contains("not linearizable"))
    });
    assert!(caught.is_some(), "40 seeds of stale reads passed the linearizability check");
}
