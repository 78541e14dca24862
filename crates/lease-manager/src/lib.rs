//! `keel-lease-manager`: etcd's lessor, the bookkeeping behind the Lease API.
//! A pure library: no raft, no gRPC, no storage, no clock and no threads of
//! its own. The node owns a [`Lessor`] (behind its lock, or on one thread),
//! feeds it committed entries and the time, and proposes what it asks for.
//!
//! Why it is shaped this way:
//! - **Expiry is decided by the primary only.** Clocks differ between
//!   members, so a lease cannot expire "when its deadline passes" on each of
//!   them. Only the leader keeps deadlines; when one passes,
//!   [`Lessor::expired`] names the lease, the leader proposes a LeaseRevoke,
//!   and the lease disappears everywhere when that entry is applied. A lease
//!   is never removed by time alone.
//! - **Every other change is applied identically on every member**, from
//!   committed raft entries: [`Lessor::grant`], [`Lessor::revoke`],
//!   [`Lessor::checkpoint`], [`Lessor::attach`], [`Lessor::detach`]. Their
//!   outcomes (including errors) depend only on the lessor's replicated state
//!   and the entry, so all members agree. The `now` passed to `grant` only
//!   starts the primary's local clock.
//! - **Keep-alives are not replicated.** [`Lessor::renew`] moves the
//!   primary's deadline only; a follower answers [`LeaseError::NotPrimary`]
//!   and the node forwards. A new leader therefore cannot know the old
//!   deadlines: [`Lessor::promote`] restarts every lease from its last
//!   checkpointed remaining TTL (see [`Lessor::checkpoints_due`]) or its full
//!   TTL, plus an election timeout of grace.
//! - **Time is an argument.** Every time-dependent call takes an
//!   [`Instant`](std::time::Instant), so tests (and a simulated cluster) run
//!   leases through hours in microseconds, deterministically.
//! - **Cost**: leases sit in a hash map; deadlines in an ordered set of
//!   `(deadline, id)`. A renew is O(log n); finding expired leases reads only
//!   the due prefix, so a million idle leases cost nothing per tick.
//!
//! How the node drives it (what etcd's server does):
//! 1. apply LeaseGrant/LeaseRevoke/LeaseCheckpoint entries with `grant`,
//!    `revoke` (then delete the returned keys in the same MVCC revision) and
//!    `checkpoint`; Put/Delete/Txn attach and detach keys;
//! 2. after applying the empty entry of a term it leads: `promote(now,
//!    election_timeout)`; on losing leadership: `demote()`;
//! 3. every 500 ms while leader: propose a revoke for each of
//!    `expired(now, revoke_rate / 2)`, and one LeaseCheckpoint entry with
//!    `checkpoints_due(now, MAX_CHECKPOINT_BATCH)`;
//! 4. after a restart: [`Lessor::restore`] from the persisted
//!    [`LeaseRecord`]s and MVCC's leased keys, then replay raft as usual.

mod config;
mod error;
mod lessor;
mod metrics;
mod queue;

pub use config::{
    min_lease_ttl, LessorConfig, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_EXPIRED_RETRY_INTERVAL, DEFAULT_REVOKE_RATE,
    MAX_CHECKPOINT_BATCH, MAX_LEASE_TTL,
};
pub use error::LeaseError;
pub use lessor::{LeaseId, LeaseInfo, LeaseRecord, Lessor, TimeToLive, NO_LEASE};
pub use metrics::LeaseMetrics;
