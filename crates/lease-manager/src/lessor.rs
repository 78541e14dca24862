//! [`Lessor`]: every lease of one member, its attached keys, and (while the
//! member is primary) the deadline and checkpoint schedules.
//!
//! State comes in two kinds, and keeping them apart is what keeps members
//! identical:
//! - **Replicated**: which leases exist, their granted TTL, their last
//!   checkpointed remaining TTL, their keys. Changed only by operations the
//!   node applies from committed raft entries (`grant`, `revoke`,
//!   `checkpoint`, `attach`, `detach`), whose results depend on this state and
//!   the entry alone, never on the clock or on leadership.
//! - **Local to the primary**: deadlines, the expiry and checkpoint
//!   schedules, pending checkpoint resets. Built by `promote`, moved by
//!   `renew`, dropped by `demote`. A follower keeps no deadlines at all
//!   (etcd's "forever"), so a stale clock on a follower can never expire
//!   anything.
//!
//! While primary, every lease has a deadline and exactly one entry in the
//! expiry queue, filed at its deadline or, once handed out by `expired`, at
//! the retry time (never earlier than the deadline). While not primary, no
//! lease has a deadline and both queues are empty. A key belongs to at most
//! one lease: `items[key] == id` exactly when `key` is in lease `id`'s set.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::config::{LessorConfig, MAX_LEASE_TTL};
use crate::error::LeaseError;
use crate::metrics::LeaseMetrics;
use crate::queue::DeadlineQueue;

#[cfg(test)]
mod tests;

/// A lease id as on the wire.
pub type LeaseId = i64;

/// The id that means "no lease" (a Put without a lease, or a grant request
/// that lets the server choose).
pub const NO_LEASE: LeaseId = 0;

/// One lease as persisted by the node (etcd's `leasepb.Lease`): enough to
/// rebuild the lessor after a restart, together with MVCC's leased keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Last checkpointed remaining TTL in seconds; 0 (or less) when none.
    pub remaining_ttl: i64,
}

/// A snapshot of one lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// Granted TTL in seconds, after raising it to the minimum. This is what
    /// a LeaseGrant response carries.
    pub ttl: i64,
    /// Last checkpointed remaining TTL in seconds; 0 when none is recorded.
    pub remaining_ttl: i64,
    /// When the lease expires; `None` while this member is not primary.
    pub deadline: Option<Instant>,
    /// How many keys are attached.
    pub keys: usize,
}

impl LeaseInfo {
    /// What the node persists for this lease.
    pub fn record(&self) -> LeaseRecord {
        LeaseRecord { id: self.id, ttl: self.ttl, remaining_ttl: self.remaining_ttl }
    }
}

/// The answer to LeaseTimeToLive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    pub id: LeaseId,
    /// The TTL the lease was granted with, in seconds.
    pub granted_ttl: i64,
    /// Seconds until the deadline, truncated toward zero as etcd does; 0 or
    /// negative for a lease that has expired but is not revoked yet.
    pub ttl: i64,
    /// The attached keys in byte order, if asked for.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    remaining_ttl: i64,
    deadline: Option<Instant>,
    /// Where the lease is filed in `Lessor::expiry`.
    expiry_slot: Option<Instant>,
    /// Where the lease is filed in `Lessor::checkpoints`.
    checkpoint_slot: Option<Instant>,
    /// Handed out by `expired` since this member last became primary: its
    /// revoke counts as an expiry.
    expiring: bool,
    keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    fn new(ttl: i64, remaining_ttl: i64) -> Self {
        Lease {
            ttl,
            remaining_ttl,
            deadline: None,
            expiry_slot: None,
            checkpoint_slot: None,
            expiring: false,
            keys: BTreeSet::new(),
        }
    }

    /// The TTL a newly promoted leader gives the lease: the checkpointed
    /// remainder if there is one (etcd's `getRemainingTTL`).
    fn resume_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }

    fn info(&self, id: LeaseId) -> LeaseInfo {
        LeaseInfo {
            id,
            ttl: self.ttl,
            remaining_ttl: self.remaining_ttl,
            deadline: self.deadline,
            keys: self.keys.len(),
        }
    }
}

/// All leases of one member. See the module docs for which calls are applied
/// identically on every member and which only the primary makes.
#[derive(Debug)]
pub struct Lessor {
    config: LessorConfig,
    leases: HashMap<LeaseId, Lease>,
    items: HashMap<Vec<u8>, LeaseId>,
    primary: bool,
    expiry: DeadlineQueue,
    checkpoints: DeadlineQueue,
    /// Leases renewed while they carried a checkpointed remaining TTL: the
    /// leader must checkpoint 0 for them so a successor does not resume them
    /// from the stale remainder (etcd does this inside Renew).
    resets: BTreeSet<LeaseId>,
    metrics: LeaseMetrics,
}

impl Lessor {
    /// An empty, demoted lessor.
    pub fn new(config: LessorConfig) -> Self {
        Lessor {
            config,
            leases: HashMap::new(),
            items: HashMap::new(),
            primary: false,
            expiry: DeadlineQueue::default(),
            checkpoints: DeadlineQueue::default(),
            resets: BTreeSet::new(),
            metrics: LeaseMetrics::new(),
        }
    }

    /// This lessor with `metrics` in place of its own: the node rebuilds
    /// its lessor after installing a snapshot, and the series it registered
    /// must go on counting.
    pub fn with_metrics(mut self, metrics: LeaseMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// This lessor's series (etcd's lease metrics), to register in the
    /// member's registry.
    pub fn metrics(&self) -> &LeaseMetrics {
        &self.metrics
    }

    /// Rebuilds a demoted lessor after a restart from the persisted lease
    /// records and the leased keys MVCC holds. As in etcd, a record's TTL is
    /// raised to the current minimum, and a key naming a lease that does not
    /// exist is left unattached (logged, not fatal).
    pub fn restore<L, K>(config: LessorConfig, leases: L, keys: K) -> Self
    where
        L: IntoIterator<Item = LeaseRecord>,
        K: IntoIterator<Item = (Vec<u8>, LeaseId)>,
    {
        let mut lessor = Lessor::new(config);
        for record in leases {
            if record.id == NO_LEASE {
                tracing::warn!("lease record with id 0 skipped");
                continue;
            }
            let ttl = record.ttl.max(lessor.config.min_ttl);
            lessor.leases.insert(record.id, Lease::new(ttl, record.remaining_ttl));
        }
        let mut orphans = 0usize;
        for (key, id) in keys {
            if lessor.attach_owned(id, key).is_err() {
                orphans += 1;
            }
        }
        if orphans > 0 {
            tracing::warn!(orphans, "keys attached to leases that do not exist were left unattached");
        }
        lessor
    }

    pub fn config(&self) -> &LessorConfig {
        &self.config
    }

    /// Whether this member's lessor runs expiry and answers Renew and
    /// TimeToLive.
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Applies a committed LeaseGrant. `id` is the one in the entry (the
    /// proposing member replaced a requested 0 with a generated id before
    /// proposing); `now` only matters on the primary, which starts the clock.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<LeaseInfo, LeaseError> {
        if id == NO_LEASE {
            return Err(LeaseError::NotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let mut lease = Lease::new(ttl.max(self.config.min_ttl), 0);
        if self.primary {
            arm(&self.config, &mut self.expiry, &mut self.checkpoints, id, &mut lease, now, Duration::ZERO);
        }
        let info = lease.info(id);
        self.leases.insert(id, lease);
        self.metrics.granted(info.ttl);
        Ok(info)
    }

    /// Applies a committed LeaseRevoke. Returns the attached keys in byte
    /// order: the node deletes them in the same MVCC revision (sorted, so
    /// every member writes the same deletes in the same order).
    pub fn revoke(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>, LeaseError> {
        let mut lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        self.expiry.reschedule(id, &mut lease.expiry_slot, None);
        self.checkpoints.reschedule(id, &mut lease.checkpoint_slot, None);
        self.resets.remove(&id);
        for key in &lease.keys {
            if self.items.get(key) == Some(&id) {
                self.items.remove(key);
            }
        }
        self.metrics.revoked(lease.expiring);
        Ok(lease.keys.into_iter().collect())
    }

    /// A keep-alive, answered by the primary alone and not replicated: the
    /// deadline becomes `now` + the granted TTL, which is returned.
    pub fn renew(&mut self, id: LeaseId, now: Instant) -> Result<i64, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        match lease.deadline {
            Some(deadline) if deadline > now => {}
            Some(_) => return Err(LeaseError::Expired),
            None => return Err(LeaseError::NotPrimary),
        }
        let deadline = after(now, secs(lease.ttl));
        lease.deadline = Some(deadline);
        self.expiry.reschedule(id, &mut lease.expiry_slot, Some(deadline));
        if self.config.checkpointing && lease.remaining_ttl > 0 {
            self.resets.insert(id);
        }
        self.metrics.renewed();
        Ok(lease.ttl)
    }

    /// Applies a committed LeaseCheckpoint entry item: the lease's remaining
    /// TTL as the leader computed it (0 clears it). Unknown ids are ignored,
    /// as in etcd: the lease may have been revoked after the leader proposed.
    pub fn checkpoint(&mut self, id: LeaseId, remaining_ttl: i64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.remaining_ttl = remaining_ttl;
            if remaining_ttl <= 0 {
                self.resets.remove(&id);
            }
        }
    }

    /// Attaches `key` to lease `id` (a Put with a lease was applied). A key
    /// attached to another lease moves: it belongs to one lease at most.
    pub fn attach(&mut self, id: LeaseId, key: &[u8]) -> Result<(), LeaseError> {
        if self.items.get(key) == Some(&id) {
            return Ok(());
        }
        self.attach_owned(id, key.to_vec())
    }

    fn attach_owned(&mut self, id: LeaseId, key: Vec<u8>) -> Result<(), LeaseError> {
        if !self.leases.contains_key(&id) {
            return Err(LeaseError::NotFound);
        }
        if let Some(prev) = self.items.insert(key.clone(), id) {
            if prev != id {
                if let Some(lease) = self.leases.get_mut(&prev) {
                    lease.keys.remove(&key);
                }
            }
        }
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key);
        }
        Ok(())
    }

    /// Detaches `key` from lease `id` (the key was deleted, or put again
    /// with another lease or none). A key not attached to `id` is left alone.
    pub fn detach(&mut self, id: LeaseId, key: &[u8]) -> Result<(), LeaseError> {
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        lease.keys.remove(key);
        if self.items.get(key) == Some(&id) {
            self.items.remove(key);
        }
        Ok(())
    }

    /// The lease `key` is attached to (etcd's `GetLease`).
    pub fn lease_of(&self, key: &[u8]) -> Option<LeaseId> {
        self.items.get(key).copied()
    }

    pub fn exists(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn lookup(&self, id: LeaseId) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|lease| lease.info(id))
    }

    /// The keys attached to lease `id`, in byte order.
    pub fn keys(&self, id: LeaseId) -> Option<Vec<Vec<u8>>> {
        self.leases.get(&id).map(|lease| lease.keys.iter().cloned().collect())
    }

    /// LeaseTimeToLive, answered by the primary alone (a follower forwards;
    /// remaining time is only known where the deadlines are).
    pub fn time_to_live(&self, id: LeaseId, now: Instant, with_keys: bool) -> Result<TimeToLive, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let lease = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        let deadline = lease.deadline.ok_or(LeaseError::NotPrimary)?;
        let ttl = match deadline.checked_duration_since(now) {
            Some(left) => clamp_secs(left.as_secs()),
            None => -clamp_secs(now.duration_since(deadline).as_secs()),
        };
        let keys = if with_keys { lease.keys.iter().cloned().collect() } else { Vec::new() };
        Ok(TimeToLive { id, granted_ttl: lease.ttl, ttl, keys })
    }

    /// Every lease id, soonest deadline first (etcd's `Leases()` order); by
    /// id when not primary, since no lease has a deadline then.
    pub fn leases(&self) -> Vec<LeaseId> {
        let mut all: Vec<(Option<Instant>, LeaseId)> =
            self.leases.iter().map(|(&id, lease)| (lease.deadline, id)).collect();
        all.sort_unstable();
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// Makes this member primary, once it leads and has applied everything
    /// of earlier terms (etcd promotes on applying the leader's empty entry,
    /// with `extend` = the election timeout). Every lease gets a fresh
    /// deadline, `now + extend +` its checkpointed remainder or full TTL:
    /// the old leader's deadlines died with it, so each lease restarts from
    /// the last window the cluster agreed on, and `extend` gives its client
    /// time to find the new leader. With many leases that would expire
    /// together, later ones are pushed back so that no more than 3/4 of the
    /// revoke rate fall in any one second.
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        self.expiry.clear();
        self.checkpoints.clear();
        for (&id, lease) in self.leases.iter_mut() {
            lease.expiry_slot = None;
            lease.checkpoint_slot = None;
            arm(&self.config, &mut self.expiry, &mut self.checkpoints, id, lease, now, extend);
        }
        if self.leases.len() >= self.config.revoke_rate.max(1) {
            self.spread_expiries(now, extend);
        }
        tracing::debug!(leases = self.leases.len(), "lessor promoted");
    }

    /// etcd's pile-up avoidance in `Promote`, step for step: walk leases by
    /// deadline in one-second windows; once a window holds more than the
    /// target, each further lease is delayed in proportion to the overflow.
    fn spread_expiries(&mut self, now: Instant, extend: Duration) {
        const SECOND: i128 = 1_000_000_000;
        let target = ((3 * self.config.revoke_rate) / 4).max(1);
        let order: Vec<(Instant, LeaseId)> = self.expiry.iter().collect();
        let remaining = |at: Instant| at.saturating_duration_since(now).as_nanos() as i128;
        let Some(&(first, _)) = order.first() else {
            return;
        };
        let mut base = remaining(first);
        let mut next = base + SECOND;
        let mut expires = 0usize;
        for (at, id) in order {
            let left = remaining(at);
            if left > next {
                base = left;
                next = base + SECOND;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target {
                continue;
            }
            // Go: time.Duration(float64(time.Second)*(expires/target) - float64(remaining-base)).
            let rate_delay = SECOND as f64 * (expires as f64 / target as f64) - (left - base) as f64;
            let delay = Duration::from_nanos(rate_delay.max(0.0) as u64);
            next = base + delay.as_nanos() as i128;
            if let Some(lease) = self.leases.get_mut(&id) {
                let deadline = after(now, delay.saturating_add(extend).saturating_add(secs(lease.resume_ttl())));
                lease.deadline = Some(deadline);
                self.expiry.reschedule(id, &mut lease.expiry_slot, Some(deadline));
            }
        }
    }

    /// Stops being primary (leadership lost or stepping down): deadlines and
    /// schedules are dropped; leases and keys stay.
    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.deadline = None;
            lease.expiry_slot = None;
            lease.checkpoint_slot = None;
            lease.expiring = false;
        }
        self.expiry.clear();
        self.checkpoints.clear();
        self.resets.clear();
        tracing::debug!(leases = self.leases.len(), "lessor demoted");
    }

    /// Up to `limit` leases whose deadline is at or before `now`, earliest
    /// first, for the leader to propose revokes for. They stay until the
    /// revoke is applied; meanwhile each is handed out again only after
    /// `expired_retry_interval`, in case its revoke was lost. Empty unless
    /// primary.
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<LeaseId> {
        if !self.primary {
            return Vec::new();
        }
        let due = self.expiry.pop_due(now, limit);
        let retry_at = after(now, self.config.expired_retry_interval);
        let mut ids = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(lease) = self.leases.get_mut(&id) {
                debug_assert!(lease.deadline.is_some_and(|d| d <= now), "queued before its deadline");
                lease.expiry_slot = None;
                lease.expiring = true;
                self.expiry.reschedule(id, &mut lease.expiry_slot, Some(retry_at));
                ids.push(id);
            }
        }
        ids
    }

    /// Up to `limit` `(id, remaining_ttl)` checkpoints for the leader to
    /// propose (in one LeaseCheckpoint entry), if checkpointing is on: first
    /// resets to 0 for leases renewed since their last checkpoint, then each
    /// lease whose turn has come (every `checkpoint_interval`) with its
    /// remaining seconds rounded up, skipping leases already expired or
    /// still at their full TTL. Empty unless primary.
    pub fn checkpoints_due(&mut self, now: Instant, limit: usize) -> Vec<(LeaseId, i64)> {
        let mut due = Vec::new();
        if !self.primary || !self.config.checkpointing {
            return due;
        }
        while due.len() < limit {
            let Some(id) = self.resets.pop_first() else {
                break;
            };
            if self.leases.get(&id).is_some_and(|lease| lease.remaining_ttl > 0) {
                due.push((id, 0));
            }
        }
        let mut visited = Vec::new();
        while due.len() < limit {
            let Some((_, id)) = self.checkpoints.pop_next_due(now) else {
                break;
            };
            let Some(lease) = self.leases.get_mut(&id) else {
                continue;
            };
            lease.checkpoint_slot = None;
            visited.push(id);
            let Some(left) = lease.deadline.and_then(|d| d.checked_duration_since(now)) else {
                continue;
            };
            if left.is_zero() {
                continue;
            }
            let remaining = clamp_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
            if remaining < lease.ttl {
                due.push((id, remaining));
            }
        }
        // etcd schedules the next checkpoint when this one is applied; doing it
        // here instead keeps a lost proposal from ending a lease's checkpoints.
        let next = after(now, self.config.checkpoint_interval);
        for id in visited {
            if let Some(lease) = self.leases.get_mut(&id) {
                self.checkpoints.reschedule(id, &mut lease.checkpoint_slot, Some(next));
            }
        }
        due
    }

    /// The earliest time [`Lessor::expired`] could return something, so the
    /// caller can sleep until then. `None` unless primary with leases.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first()
    }

    /// The earliest time [`Lessor::checkpoints_due`] could return a
    /// scheduled checkpoint (pending resets are due at once).
    pub fn next_checkpoint(&self) -> Option<Instant> {
        self.checkpoints.first()
    }
}

/// Starts the primary's clock for a lease: a deadline `now + extend +` its
/// resume TTL, and its first checkpoint one interval from now.
fn arm(
    config: &LessorConfig,
    expiry: &mut DeadlineQueue,
    checkpoints: &mut DeadlineQueue,
    id: LeaseId,
    lease: &mut Lease,
    now: Instant,
    extend: Duration,
) {
    let deadline = after(now, extend.saturating_add(secs(lease.resume_ttl())));
    lease.deadline = Some(deadline);
    lease.expiring = false;
    expiry.reschedule(id, &mut lease.expiry_slot, Some(deadline));
    if wants_checkpoints(config, lease) {
        let at = after(now, config.checkpoint_interval);
        checkpoints.reschedule(id, &mut lease.checkpoint_slot, Some(at));
    }
}

/// Whether a lease is worth checkpointing: one whose TTL fits in an interval
/// expires or is renewed before its checkpoint would come round.
fn wants_checkpoints(config: &LessorConfig, lease: &Lease) -> bool {
    config.checkpointing && clamp_secs(config.checkpoint_interval.as_secs()) < lease.ttl
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn clamp_secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// `now + d`, saturating where the platform's clock cannot go that far (9e9 s,
/// etcd's largest TTL, fits everywhere Keel runs; this only avoids a panic).
fn after(now: Instant, mut d: Duration) -> Instant {
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}
