//! Client writes against the store's own history ([`crate::events`]).
//!
//! Two jobs, both relying on every put writing a value no other put writes:
//!
//! - [`resolve_unknown`]: a write whose outcome the client never learned
//!   (timeout, broken connection) either shows up in the reference history,
//!   at a revision, or never happened. Telling the checker which turns an
//!   operation it would have to try everywhere into one with a known effect
//!   (or none), which keeps the search over a faulty run's history small, as
//!   etcd's robustness suite does with its watch.
//! - [`check_acknowledged`]: every write a client was told succeeded is in
//!   the reference history, at the revision the client was told. A lost or
//!   moved acknowledged write is an anomaly on its own, whatever the
//!   linearizability search makes of the rest.

use std::collections::HashMap;

use crate::checker::{Operation, Outcome};
use crate::events::{Event, EventKind};
use crate::kv::{KvInput, KvOperation, KvOutput};

/// What [`resolve_unknown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Unknown writes found in the history: now known to have taken effect.
    pub persisted: usize,
    /// Unknown writes not in the history: removed.
    pub dropped: usize,
    /// Unknown writes that cannot be told apart (deletes): left unknown.
    pub unresolved: usize,
}

/// Replaces each put or compare-and-swap of unknown outcome with what the
/// reference shows: one that took effect returns, with its revision, after
/// everything else (it may have been applied at any time after its call);
/// one that did not is removed. Deletes write no value of their own and
/// stay unknown. Reads of unknown outcome constrain nothing and are removed.
pub fn resolve_unknown(history: &[KvOperation], reference: &[Event]) -> (Vec<KvOperation>, Resolution) {
    let written = puts_by_value(reference);
    let mut resolution = Resolution::default();
    let mut out = Vec::with_capacity(history.len());
    for op in history {
        if !matches!(op.outcome, Outcome::Unknown) {
            out.push(op.clone());
            continue;
        }
        let found = match &op.input {
            KvInput::Get { .. } => {
                resolution.dropped += 1;
                continue;
            }
            KvInput::Delete { .. } => {
                resolution.unresolved += 1;
                out.push(op.clone());
                continue;
            }
            KvInput::Put { key, value } | KvInput::CompareAndSwap { key, new: value, .. } => {
                written.get(&(key.as_slice(), value.as_slice())).copied()
            }
        };
        let Some(revision) = found else {
            resolution.dropped += 1;
            continue;
        };
        resolution.persisted += 1;
        let output = match op.input {
            KvInput::Put { .. } => KvOutput::Put { revision: Some(revision) },
            _ => KvOutput::CompareAndSwap { succeeded: true, revision: Some(revision) },
        };
        out.push(Operation { outcome: Outcome::Returned { time: u64::MAX, output }, ..op.clone() });
    }
    (out, resolution)
}

/// An acknowledged write the reference history contradicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// The operation, as recorded.
    pub operation: KvOperation,
    /// What the reference has at the acknowledged revision for that key
    /// (`None`: nothing).
    pub found: Option<Event>,
}

/// Checks that every acknowledged put, successful compare-and-swap and
/// delete that removed a key is in `reference` at its acknowledged
/// revision (writes acknowledged without a revision: anywhere, by value).
pub fn check_acknowledged(history: &[KvOperation], reference: &[Event]) -> Vec<LostWrite> {
    let by_revision: HashMap<(u64, &[u8]), &Event> =
        reference.iter().map(|e| ((e.revision, e.key.as_slice()), e)).collect();
    let written = puts_by_value(reference);
    let mut lost = Vec::new();
    for op in history {
        let Outcome::Returned { output, time } = &op.outcome else { continue };
        if *time == u64::MAX {
            // Resolved from the reference itself by resolve_unknown.
            continue;
        }
        let (kind, value, revision) = match (&op.input, output) {
            (KvInput::Put { value, .. }, KvOutput::Put { revision }) => (EventKind::Put, Some(value), *revision),
            (KvInput::CompareAndSwap { new, .. }, KvOutput::CompareAndSwap { succeeded: true, revision }) => {
                (EventKind::Put, Some(new), *revision)
            }
            (KvInput::Delete { .. }, KvOutput::Delete { deleted: true, revision }) => {
                (EventKind::Delete, None, *revision)
            }
            _ => continue,
        };
        let key = op.input.key();
        let found = match (revision, value) {
            (Some(r), _) => by_revision.get(&(r, key)).copied(),
            (None, Some(v)) => written.get(&(key, v.as_slice())).and_then(|r| by_revision.get(&(*r, key)).copied()),
            // A delete without a revision cannot be placed.
            (None, None) => continue,
        };
        let matches = found.is_some_and(|e| e.kind == kind && value.is_none_or(|v| *v == e.value));
        if !matches {
            lost.push(LostWrite { operation: op.clone(), found: found.cloned() });
        }
    }
    lost
}

/// The revision of each put, by (key, value).
fn puts_by_value(reference: &[Event]) -> HashMap<(&[u8], &[u8]), u64> {
    reference
        .iter()
        .filter(|e| e.kind == EventKind::Put)
        .map(|e| ((e.key.as_slice(), e.value.as_slice()), e.revision))
        .collect()
}

/// The value of every key after the last event of `reference` (absent keys
/// left out), to compare with what each member serves at the end.
pub fn final_values(reference: &[Event]) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut values = std::collections::BTreeMap::new();
    for event in reference {
        match event.kind {
            EventKind::Put => values.insert(event.key.clone(), event.value.clone()),
            EventKind::Delete => values.remove(&event.key),
        };
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::check;
    use crate::kv::KvModel;

    fn put(call: u64, ret: Option<u64>, key: &str, value: &str, revision: Option<u64>) -> KvOperation {
        let input = KvInput::Put { key: key.into(), value: value.into() };
        match ret {
            Some(ret) => Operation::returned(1, call, input, ret, KvOutput::Put { revision }),
            None => Operation::unknown(1, call, input),
        }
    }

    fn get(call: u64, ret: u64, key: &str, value: Option<&str>, rev: Option<u64>) -> KvOperation {
        let output = KvOutput::Get { value: value.map(|v| v.as_bytes().to_vec()), mod_revision: rev };
        Operation::returned(2, call, KvInput::Get { key: key.into() }, ret, output)
    }

    #[test]
    fn unknown_writes_become_known_or_vanish() {
        let reference = [Event::put(2, "a", "1"), Event::put(3, "a", "2")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            put(2, None, "a", "2", None),
            put(3, None, "a", "3", None),
            Operation::unknown(3, 4, KvInput::Get { key: "a".into() }),
            Operation::unknown(3, 4, KvInput::Delete { key: "a".into() }),
            get(10, 11, "a", Some("2"), Some(3)),
        ];
        let (resolved, resolution) = resolve_unknown(&history, &reference);
        assert_eq!(resolution, Resolution { persisted: 1, dropped: 2, unresolved: 1 });
        assert_eq!(resolved.len(), 4);
        assert_eq!(resolved[1].output(), Some(&KvOutput::Put { revision: Some(3) }));
        assert!(check(&KvModel, &resolved, None).is_linearizable());
    }

    #[test]
    fn a_write_resolved_at_a_revision_reads_contradict_is_caught() {
        // The unknown put of "2" was applied at revision 3; a read of "1"
        // after a read of "2" is stale, which the checker must find.
        let reference = [Event::put(2, "a", "1"), Event::put(3, "a", "2")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            put(2, None, "a", "2", None),
            get(5, 6, "a", Some("2"), Some(3)),
            get(7, 8, "a", Some("1"), Some(2)),
        ];
        let (resolved, _) = resolve_unknown(&history, &reference);
        assert!(!check(&KvModel, &resolved, None).is_linearizable());
    }

    #[test]
    fn acknowledged_writes_in_the_history_pass() {
        let reference = [Event::put(2, "a", "1"), Event::delete(3, "a")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            Operation::returned(
                1,
                2,
                KvInput::Delete { key: "a".into() },
                3,
                KvOutput::Delete { deleted: true, revision: Some(3) },
            ),
        ];
        assert_eq!(check_acknowledged(&history, &reference), vec![]);
    }

    #[test]
    fn a_lost_or_moved_acknowledged_write_is_caught() {
        let reference = [Event::put(2, "a", "1"), Event::put(4, "a", "3")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            // Acknowledged, never applied.
            put(1, Some(2), "a", "2", Some(3)),
            // Acknowledged at a revision where something else is.
            put(2, Some(3), "a", "3", Some(5)),
        ];
        let lost = check_acknowledged(&history, &reference);
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert_eq!(lost[0].found, None);
    }

    #[test]
    fn final_values_follow_the_last_event() {
        let reference = [Event::put(2, "a", "1"), Event::put(3, "b", "2"), Event::delete(4, "a")];
        let values = final_values(&reference);
        assert_eq!(values.into_iter().collect::<Vec<_>>(), vec![(b"b".to_vec(), b"2".to_vec())]);
    }
}
