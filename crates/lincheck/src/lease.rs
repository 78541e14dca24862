//! Lease safety, checked on what lease clients did against the reference
//! history ([`crate::events`]):
//!
//! - a lease that ends (revoked or expired) takes all its keys with it in
//!   **one revision**;
//! - a lease that was revoked, or left to expire long enough before the
//!   history ends, has **no key left**;
//! - **no key of a kept-alive lease is deleted**: a renewal sent at `S`
//!   that was answered with a TTL of `t` promises the lease lives until at
//!   least `S + t` (the server renewed it at some point after `S`), so its
//!   keys' deletion must not be seen before then, unless the client itself
//!   asked for a revoke first.
//!
//! A key belongs to the lease its put in the reference attached it to; the
//! workload must not write a lease's keys otherwise.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::{Event, EventKind};

/// A renewal (a grant counts as the first): sent at `sent`, answered at
/// `received` with `ttl` (in the run's time unit, not seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// When the request was sent.
    pub sent: u64,
    /// When the answer came.
    pub received: u64,
    /// The TTL the answer gave, in the run's time unit.
    pub ttl: u64,
}

/// What a client did with one lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLog {
    /// The lease id.
    pub id: i64,
    /// The grant and each answered keep-alive.
    pub renewals: Vec<Renewal>,
    /// When the client first asked to revoke it, whatever the answer.
    pub revoke_sent: Option<u64>,
    /// The lease must be gone by the end of the reference: its revoke was
    /// acknowledged, or its renewals stopped more than a TTL before the
    /// reference was taken.
    pub must_be_gone: bool,
}

/// A broken lease guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAnomaly {
    /// A lease's keys were deleted in more than one revision.
    NotAtomic {
        /// The lease.
        lease: i64,
        /// The revisions its keys were deleted at.
        revisions: Vec<u64>,
    },
    /// Keys of a lease that must be gone are still there.
    KeysLeft {
        /// The lease.
        lease: i64,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// A key of a lease was seen deleted while a renewal promised the lease
    /// was alive and no revoke had been asked for.
    ExpiredEarly {
        /// The lease.
        lease: i64,
        /// The revision of the deletion.
        revision: u64,
        /// When the deletion was first seen.
        seen_at: u64,
        /// Until when the lease was promised.
        promised_until: u64,
    },
}

/// Checks `leases` against `reference`. `first_seen` gives, for a revision,
/// the earliest time any watcher received it (`None`: no watcher saw it as
/// it happened); the deletion happened no later than that.
pub fn check_leases(
    reference: &[Event],
    leases: &[LeaseLog],
    first_seen: impl Fn(u64) -> Option<u64>,
) -> Vec<LeaseAnomaly> {
    // Each key's owner and fate, following the reference in order.
    let mut owner: BTreeMap<&[u8], i64> = BTreeMap::new();
    let mut deleted: BTreeMap<i64, BTreeSet<u64>> = BTreeMap::new();
    let mut alive: BTreeMap<i64, BTreeSet<&[u8]>> = BTreeMap::new();
    for event in reference {
        match event.kind {
            EventKind::Put => {
                if let Some(previous) = owner.remove(event.key.as_slice()) {
                    if let Some(keys) = alive.get_mut(&previous) {
                        keys.remove(event.key.as_slice());
                    }
                }
                if event.lease != 0 {
                    owner.insert(&event.key, event.lease);
                    alive.entry(event.lease).or_default().insert(&event.key);
                }
            }
            EventKind::Delete => {
                if let Some(lease) = owner.remove(event.key.as_slice()) {
                    deleted.entry(lease).or_default().insert(event.revision);
                    if let Some(keys) = alive.get_mut(&lease) {
                        keys.remove(event.key.as_slice());
                    }
                }
            }
        }
    }

    let mut anomalies = Vec::new();
    for log in leases {
        let revisions = deleted.get(&log.id).cloned().unwrap_or_default();
        if revisions.len() > 1 {
            anomalies.push(LeaseAnomaly::NotAtomic { lease: log.id, revisions: revisions.iter().copied().collect() });
        }
        let left: Vec<Vec<u8>> = alive.get(&log.id).into_iter().flatten().map(|k| k.to_vec()).collect();
        if log.must_be_gone && !left.is_empty() {
            anomalies.push(LeaseAnomaly::KeysLeft { lease: log.id, keys: left });
        }
        for &revision in &revisions {
            let Some(seen_at) = first_seen(revision) else { continue };
            if log.revoke_sent.is_some_and(|r| r <= seen_at) {
                continue;
            }
            let promised_until =
                log.renewals.iter().filter(|r| r.sent <= seen_at).map(|r| r.sent + r.ttl).max().unwrap_or(0);
            if seen_at < promised_until {
                anomalies.push(LeaseAnomaly::ExpiredEarly { lease: log.id, revision, seen_at, promised_until });
            }
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: i64 = 0x10;

    fn log(renewals: &[(u64, u64)], revoke_sent: Option<u64>, must_be_gone: bool) -> LeaseLog {
        LeaseLog {
            id: L,
            renewals: renewals.iter().map(|&(sent, ttl)| Renewal { sent, received: sent + 1, ttl }).collect(),
            revoke_sent,
            must_be_gone,
        }
    }

    fn keys_then_deleted(at: &[u64]) -> Vec<Event> {
        let mut h = vec![Event::put_with_lease(2, "/l/a", "1", L), Event::put_with_lease(3, "/l/b", "2", L)];
        h.push(Event::delete(at[0], "/l/a"));
        h.push(Event::delete(at[1], "/l/b"));
        h
    }

    #[test]
    fn a_revoked_lease_whose_keys_go_together_passes() {
        let h = keys_then_deleted(&[10, 10]);
        assert_eq!(check_leases(&h, &[log(&[(0, 5)], Some(50), true)], |_| Some(60)), vec![]);
    }

    #[test]
    fn an_expired_lease_after_its_ttl_passes() {
        let h = keys_then_deleted(&[10, 10]);
        assert_eq!(check_leases(&h, &[log(&[(0, 50), (20, 50)], None, true)], |_| Some(75)), vec![]);
    }

    #[test]
    fn keys_deleted_in_two_revisions_are_caught() {
        let h = keys_then_deleted(&[10, 11]);
        let anomalies = check_leases(&h, &[log(&[(0, 5)], Some(50), true)], |_| Some(60));
        assert_eq!(anomalies, vec![LeaseAnomaly::NotAtomic { lease: L, revisions: vec![10, 11] }]);
    }

    #[test]
    fn keys_left_behind_are_caught() {
        let mut h = keys_then_deleted(&[10, 10]);
        h.pop();
        h.pop();
        let anomalies = check_leases(&h, &[log(&[(0, 5)], Some(50), true)], |_| Some(60));
        assert!(matches!(&anomalies[..], [LeaseAnomaly::KeysLeft { keys, .. }] if keys.len() == 2), "{anomalies:?}");
        // A lease still kept alive may keep its keys.
        assert_eq!(check_leases(&h, &[log(&[(0, 5)], None, false)], |_| None), vec![]);
    }

    #[test]
    fn an_expiry_before_the_promised_time_is_caught() {
        let h = keys_then_deleted(&[10, 10]);
        // Renewed at 20 for 50: alive until at least 70, deleted by 65.
        let anomalies = check_leases(&h, &[log(&[(0, 50), (20, 50)], None, true)], |_| Some(65));
        assert_eq!(
            anomalies,
            vec![LeaseAnomaly::ExpiredEarly { lease: L, revision: 10, seen_at: 65, promised_until: 70 }]
        );
        // Unless it was revoked first.
        assert_eq!(check_leases(&h, &[log(&[(0, 50), (20, 50)], Some(60), true)], |_| Some(65)), vec![]);
    }
}
