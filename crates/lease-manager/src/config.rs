//! Lessor settings and etcd's constants.

use std::time::Duration;

/// The largest TTL a grant may ask for, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's `defaultLeaseCheckpointInterval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// etcd's `defaultExpiredleaseRetryInterval`. (etcd's server passes its
/// request timeout instead, 5 s + 2 × election timeout, 7 s by default.)
pub const DEFAULT_EXPIRED_RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// etcd's `leaseRevokeRate`: expired leases revoked per second at most. The
/// leader's loop asks [`Lessor::expired`](crate::Lessor::expired) for half of
/// it every 500 ms; promotion spreads expiries so no more than 3/4 of it fall
/// in one second.
pub const DEFAULT_REVOKE_RATE: usize = 1000;

/// etcd's `maxLeaseCheckpointBatchSize`: checkpoints per raft entry.
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// The shortest TTL a lease gets, in seconds, for a member whose election
/// timeout is `election_ticks` heartbeats of `heartbeat` each: etcd's
/// `ceil(((3 * electionTicks) / 2) * heartbeat)`, integer division included.
/// A lease shorter than 1.5 election timeouts could expire during an
/// ordinary leader change, before any client had a chance to renew it.
pub fn min_lease_ttl(election_ticks: u64, heartbeat: Duration) -> i64 {
    let ticks = u32::try_from(election_ticks.saturating_mul(3) / 2).unwrap_or(u32::MAX);
    let min = heartbeat.saturating_mul(ticks);
    let secs = min.as_secs() + u64::from(min.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// How a [`Lessor`](crate::Lessor) behaves; every member of a cluster must
/// use the same `min_ttl`, since it changes the outcome of an applied grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessorConfig {
    /// Grants asking for less get this many seconds (see [`min_lease_ttl`]).
    pub min_ttl: i64,
    /// Propose checkpoints of remaining TTLs, so a new leader resumes leases
    /// where the old one left them instead of granting each a full TTL
    /// again. Off by default, as in etcd (`--experimental-enable-lease-checkpoint`).
    pub checkpointing: bool,
    /// How often the leader checkpoints each lease whose TTL is longer than this.
    pub checkpoint_interval: Duration,
    /// After [`Lessor::expired`](crate::Lessor::expired) hands out a lease,
    /// how long before it hands it out again if the revoke never got applied
    /// (lost proposal, leader change in flight).
    pub expired_retry_interval: Duration,
    /// See [`DEFAULT_REVOKE_RATE`]; promotion spreads expiries once at least
    /// this many leases exist.
    pub revoke_rate: usize,
}

impl Default for LessorConfig {
    /// etcd's defaults: 100 ms heartbeat, 1 s election timeout (min TTL 2 s).
    fn default() -> Self {
        LessorConfig {
            min_ttl: min_lease_ttl(10, Duration::from_millis(100)),
            checkpointing: false,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            expired_retry_interval: DEFAULT_EXPIRED_RETRY_INTERVAL,
            revoke_rate: DEFAULT_REVOKE_RATE,
        }
    }
}
