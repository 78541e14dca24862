//! Lock safety with fencing revisions, checked on the reference history
//! ([`crate::events`]).
//!
//! etcd's lock recipe queues each contender as a key under the lock's
//! prefix; the owner is the contender whose key has the lowest create
//! revision, and that revision is its fencing token. Clients that hold the
//! lock write a *fenced key* only in a txn guarded by their own queue key,
//! with their token in the value. Then, for every such write in the
//! history:
//!
//! - the writer **owned the lock** when the write was applied: its token is
//!   the lowest create revision among the queue keys alive just before;
//! - tokens **never go back**: a lower token after a higher one means two
//!   clients acted as owners in overlapping times.
//!
//! Queue keys are written once each (a put creates them, a delete or their
//! lease's end removes them), so a key's put revision is its create revision.

use std::collections::BTreeMap;

use crate::events::{Event, EventKind};

/// A broken lock guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockAnomaly {
    /// A fenced write by a client that was not the owner at that revision.
    NotOwner {
        /// The write's revision.
        revision: u64,
        /// The writer's token.
        token: u64,
        /// The owner's token then (`None`: nobody held the lock).
        owner: Option<u64>,
    },
    /// A fenced write with a lower token than one before it.
    TokenWentBack {
        /// The write's revision.
        revision: u64,
        /// Its token.
        token: u64,
        /// The highest token written before it.
        previous: u64,
    },
    /// A fenced write whose value carries no token.
    Unreadable {
        /// The write's revision.
        revision: u64,
    },
}

/// Checks the writes of `fenced_key` in `reference` against the queue keys
/// under `queue_prefix`; `token` reads the token out of a fenced value.
pub fn check_fencing(
    reference: &[Event],
    queue_prefix: &[u8],
    fenced_key: &[u8],
    token: impl Fn(&[u8]) -> Option<u64>,
) -> Vec<LockAnomaly> {
    let mut anomalies = Vec::new();
    // Live queue keys by create revision, as of the events applied so far.
    let mut queue: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut created: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut highest = 0;
    // The events of one revision are one txn: the fenced write is judged by
    // the queue as it was before that revision's other changes.
    let mut i = 0;
    while i < reference.len() {
        let revision = reference[i].revision;
        let end = reference[i..].iter().position(|e| e.revision != revision).map_or(reference.len(), |n| i + n);
        let events = &reference[i..end];
        for event in events.iter().filter(|e| e.key == fenced_key && e.kind == EventKind::Put) {
            let Some(t) = token(&event.value) else {
                anomalies.push(LockAnomaly::Unreadable { revision });
                continue;
            };
            let owner = queue.keys().next().copied();
            if owner != Some(t) {
                anomalies.push(LockAnomaly::NotOwner { revision, token: t, owner });
            }
            if t < highest {
                anomalies.push(LockAnomaly::TokenWentBack { revision, token: t, previous: highest });
            }
            highest = highest.max(t);
        }
        for event in events.iter().filter(|e| e.key.starts_with(queue_prefix)) {
            match event.kind {
                EventKind::Put => {
                    if !created.contains_key(&event.key) {
                        created.insert(event.key.clone(), event.revision);
                        queue.insert(event.revision, event.key.clone());
                    }
                }
                EventKind::Delete => {
                    if let Some(r) = created.remove(&event.key) {
                        queue.remove(&r);
                    }
                }
            }
        }
        i = end;
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(v: &[u8]) -> Option<u64> {
        std::str::from_utf8(v).ok()?.parse().ok()
    }

    fn check(h: &[Event]) -> Vec<LockAnomaly> {
        check_fencing(h, b"/lock/", b"/fenced", token)
    }

    #[test]
    fn owners_writing_in_turn_pass() {
        let h = [
            Event::put(2, "/lock/a", ""),
            Event::put(3, "/lock/b", ""),
            Event::put(4, "/fenced", "2"),
            Event::delete(5, "/lock/a"),
            Event::put(6, "/fenced", "3"),
            Event::delete(7, "/lock/b"),
        ];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_write_by_a_waiter_is_caught() {
        let h = [Event::put(2, "/lock/a", ""), Event::put(3, "/lock/b", ""), Event::put(4, "/fenced", "3")];
        assert_eq!(check(&h), vec![LockAnomaly::NotOwner { revision: 4, token: 3, owner: Some(2) }]);
    }

    #[test]
    fn a_write_after_the_owner_lost_its_key_is_caught() {
        // a's lease expired (its key deleted); b owns the lock; a writes.
        let h = [
            Event::put(2, "/lock/a", ""),
            Event::put(3, "/lock/b", ""),
            Event::delete(4, "/lock/a"),
            Event::put(5, "/fenced", "3"),
            Event::put(6, "/fenced", "2"),
        ];
        assert_eq!(
            check(&h),
            vec![
                LockAnomaly::NotOwner { revision: 6, token: 2, owner: Some(3) },
                LockAnomaly::TokenWentBack { revision: 6, token: 2, previous: 3 },
            ]
        );
    }

    #[test]
    fn a_release_in_the_same_txn_as_the_write_counts_after_it() {
        let h = [Event::put(2, "/lock/a", ""), Event::put(3, "/fenced", "2"), Event::delete(3, "/lock/a")];
        assert_eq!(check(&h), vec![]);
    }
}
