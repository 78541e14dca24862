//! Seeds whose members also crash at exact points inside their steps (the
//! fault points, compiled in with the `failpoints` feature; `cargo xtask
//! test` runs this file with it): every check must still hold.
#![cfg(feature = "failpoints")]

use std::collections::BTreeSet;

use keel_sim::fault_points::POINTS;
use keel_sim::{run, SimConfig};

/// Seeds checked by every `cargo xtask test`; `KEEL_SIM_SEEDS` changes the count.
fn seed_count() -> u64 {
    std::env::var("KEEL_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(100)
}

#[test]
fn seeds_survive_crashes_at_fault_points() {
    let mut failures = Vec::new();
    let mut points_hit = BTreeSet::new();
    // Seeds apart from the plain run's, so these histories are new ones.
    for seed in 10_000..10_000 + seed_count() {
        match run(&SimConfig::for_seed(seed)) {
            Ok(report) => {
                for fault in &report.faults {
                    if let Some(point) = POINTS.iter().find(|p| fault.ends_with(&format!(" at {p}"))) {
                        points_hit.insert(*point);
                    }
                }
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(failure.seed);
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    // The points on every write's path must have crashed someone.
    for point in ["raft-log-before-sync", "raft-log-after-sync", "apply-before", "apply-after"] {
        assert!(points_hit.contains(point), "no crash at {point}; crashed at {points_hit:?}");
    }
    assert!(points_hit.iter().any(|p| p.starts_with("snapshot-install")), "no crash installing a snapshot");
    eprintln!("crashed at {points_hit:?}");
}
