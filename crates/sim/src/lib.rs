//! Deterministic simulation of a Keel cluster.
//!
//! Three or five members run in one process on in-memory engines, stepped
//! one after another on virtual time (tokio's paused clock), over an
//! in-process network that holds every raft message and decides, from the
//! seed alone, whether it arrives, after how long, and so in which order.
//! Meanwhile a seeded schedule of faults plays: partitions, message loss and
//! delay, crashes that lose every write not yet synced, restarts, and
//! membership changes; built with the `failpoints` feature, members also
//! crash at exact points inside their steps ([`fault_points`]). Clients run KV, txn, lease and watch traffic against
//! whichever member they pick.
//!
//! At the end the network heals, every member restarts, and the run checks:
//! - the client history is linearizable ([`keel_lincheck`]);
//! - every watcher saw a gap-free, duplicate-free, ordered prefix of the
//!   cluster's one history of events;
//! - every acknowledged write is in that history, at its revision;
//! - the members converged on the same store.
//!
//! Everything that varies comes from the seed, so a failing seed replays
//! identically: [`run`] with the same [`SimConfig`].

mod checks;
pub mod fault_points;
mod workload;
mod world;

use std::time::Duration;

pub use world::Report;

/// What one simulated run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Voting members at the start: 3 or 5.
    pub members: usize,
    /// Virtual time of client traffic and faults (then a quiet phase).
    pub duration: Duration,
    /// Concurrent KV clients.
    pub clients: usize,
    /// Keys the KV clients share (few keys: more contention).
    pub keys: usize,
    pub faults: Faults,
    /// Clients read without the read index (serializable reads): stale
    /// answers the checks must catch. Only for testing the checks.
    pub stale_reads: bool,
}

/// How hostile the run is.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Chance that a raft message is lost.
    pub loss: f64,
    /// Usual delay of a message, at most; a few take far longer, which
    /// reorders them.
    pub max_delay: Duration,
    /// Faults (partition, crash, membership change) start at about this
    /// rate, one at a time.
    pub fault_every: Duration,
    pub partitions: bool,
    pub crashes: bool,
    pub membership_changes: bool,
    /// Members run with `--strict-reconfig-check`, which refuses most
    /// changes while faults keep members out of touch.
    pub strict_reconfig: bool,
    /// With the `failpoints` feature: one fault point reached in this many
    /// crashes the member that reached it (0: never).
    pub point_crash_one_in: u32,
}

impl SimConfig {
    /// The configuration `cargo xtask test` and `cargo xtask simulate` use
    /// for `seed`: the seed also picks 3 or 5 members.
    pub fn for_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            members: if seed % 4 == 3 { 5 } else { 3 },
            duration: Duration::from_secs(20),
            clients: 6,
            keys: 5,
            stale_reads: false,
            faults: Faults {
                loss: 0.02,
                max_delay: Duration::from_millis(15),
                fault_every: Duration::from_secs(3),
                partitions: true,
                crashes: true,
                membership_changes: true,
                strict_reconfig: seed % 3 == 0,
                point_crash_one_in: 20_000,
            },
        }
    }
}

/// Why a run failed; `Display` names the seed to replay it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} failed (replay: cargo xtask simulate --seed {}): {}", self.seed, self.seed, self.what)
    }
}

impl std::error::Error for Failure {}

/// Runs one simulation on a runtime of its own (one thread, paused clock).
pub fn run(config: &SimConfig) -> Result<Report, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| Failure { seed: config.seed, what: format!("cannot build a runtime: {e}") })?;
    runtime.block_on(world::simulate(config.clone()))
}
