//! The store's own history as watches report it: one [`Event`] per key
//! changed, in revision order. The robustness checkers ([`crate::watch`],
//! [`crate::persisted`], [`crate::lease`]) compare what clients saw against
//! a *reference* history: a watch from revision 1 opened after the faults
//! end, which every member must answer identically.

use std::fmt;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was set.
    Put,
    /// The key was removed.
    Delete,
}

/// One change of one key at one revision, as a watch delivers it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// The revision of the change (the key's `mod_revision`).
    pub revision: u64,
    /// Set or removed.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The value set (empty for a delete).
    pub value: Vec<u8>,
    /// The lease the key was attached to by this put (0: none).
    pub lease: i64,
}

impl Event {
    /// A put of `value` at `revision`.
    pub fn put(revision: u64, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Event { revision, kind: EventKind::Put, key: key.into(), value: value.into(), lease: 0 }
    }

    /// A put attached to `lease`.
    pub fn put_with_lease(revision: u64, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> Self {
        Event { lease, ..Event::put(revision, key, value) }
    }

    /// A delete at `revision`.
    pub fn delete(revision: u64, key: impl Into<Vec<u8>>) -> Self {
        Event { revision, kind: EventKind::Delete, key: key.into(), value: Vec::new(), lease: 0 }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = String::from_utf8_lossy(&self.key);
        match self.kind {
            EventKind::Put => {
                write!(f, "put {key}={} @{}", String::from_utf8_lossy(&self.value), self.revision)?;
                if self.lease != 0 {
                    write!(f, " lease {:x}", self.lease)?;
                }
                Ok(())
            }
            EventKind::Delete => write!(f, "delete {key} @{}", self.revision),
        }
    }
}

/// Something wrong with the reference history itself: it is what a watch
/// from revision 1 saw, so it obeys the watch guarantees too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceAnomaly {
    /// A revision lower than one before it.
    OutOfOrder {
        /// Index of the event in the reference.
        index: usize,
        /// The event.
        event: Event,
        /// The revision before it.
        previous: u64,
    },
    /// The same key twice at one revision.
    Duplicate {
        /// The event seen twice.
        event: Event,
    },
}

/// Checks that `reference` is ordered by revision and changes each key at
/// most once per revision.
pub fn check_reference(reference: &[Event]) -> Vec<ReferenceAnomaly> {
    let mut anomalies = Vec::new();
    let mut previous: Option<&Event> = None;
    let mut keys_at_revision: Vec<&[u8]> = Vec::new();
    for (index, event) in reference.iter().enumerate() {
        if let Some(prev) = previous {
            if event.revision < prev.revision {
                anomalies.push(ReferenceAnomaly::OutOfOrder { index, event: event.clone(), previous: prev.revision });
            }
            if event.revision != prev.revision {
                keys_at_revision.clear();
            }
        }
        if keys_at_revision.contains(&event.key.as_slice()) {
            anomalies.push(ReferenceAnomaly::Duplicate { event: event.clone() });
        }
        keys_at_revision.push(&event.key);
        previous = Some(event);
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordered_history_passes() {
        let h = [Event::put(2, "a", "1"), Event::put(3, "a", "2"), Event::delete(3, "b"), Event::delete(5, "a")];
        assert!(check_reference(&h).is_empty());
    }

    #[test]
    fn a_revision_going_back_is_caught() {
        let h = [Event::put(3, "a", "1"), Event::put(2, "b", "2")];
        assert!(matches!(check_reference(&h)[..], [ReferenceAnomaly::OutOfOrder { index: 1, previous: 3, .. }]));
    }

    #[test]
    fn a_key_twice_in_one_revision_is_caught() {
        let h = [Event::put(3, "a", "1"), Event::put(3, "a", "1")];
        assert!(matches!(check_reference(&h)[..], [ReferenceAnomaly::Duplicate { .. }]));
    }
}
