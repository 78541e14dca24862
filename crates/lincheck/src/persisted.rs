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
//!
//! Both assume the history holds every client write of the keys it touches
//! (nothing else writes them), and that a client sends each request once
//! (a write is retried only when it provably never left the process).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::checker::{Operation, Outcome};
use crate::events::{Event, EventKind};
use crate::kv::{KvInput, KvOperation, KvOutput};

/// What [`resolve_unknown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Unknown writes found in the history: now known to have taken effect.
    pub persisted: usize,
    /// Unknown writes not in the history, and reads of unknown outcome:
    /// removed.
    pub dropped: usize,
    /// Unknown deletes that cannot be matched to the history's delete
    /// events (see [`Resolution::unexplained`]): left unknown, for the
    /// search to place.
    pub unresolved: usize,
    /// Delete events of the history's keys that no delete of the history
    /// can account for: more than its unknown deletes, once each
    /// acknowledged delete has claimed the revision it was answered. These
    /// are the events no acknowledged delete claims, all of a key's. A
    /// store that removes a key nobody asked it to remove (with every write
    /// of the key in the history) is wrong whatever the search finds.
    pub unexplained: Vec<Event>,
}

/// Replaces each write of unknown outcome with what the reference shows.
///
/// - A put or compare-and-swap whose unique value is in the reference took
///   effect at that revision; one whose value is not never did, and is
///   removed.
/// - A delete that deleted something made a delete event; one that deleted
///   nothing changed nothing, exactly as if it had never run. So a key's
///   delete events that no acknowledged delete claims (by the revision it
///   was answered) were made by its unknown deletes, one each, and the
///   other unknown deletes are removed. Which unknown delete made which
///   event is not recorded, and need not be: they differ only in their call
///   times, and giving the earliest-called delete the lowest revision, the
///   next the next, is the assignment that allows the most linearizations
///   (the j-th event takes effect after j of the deletes were called, so
///   after the j-th earliest call). When the events cannot be matched (more
///   than the unknown deletes, or a key with an acknowledged delete that
///   reported no revision), that key's unknown deletes stay unknown.
/// - Reads of unknown outcome constrain nothing and are removed.
///
/// A write found applied gets its revision, and the interval it can take
/// effect in narrowed to what the acknowledged operations of its key prove:
/// it is called again (for the search) at the latest call of one the model
/// orders before it (a write at a lower revision, a read of one), or its
/// own call if later, and returns at the earliest return of one the model
/// orders after it (a write at a higher revision, a read of its revision or
/// a higher one), or +infinity. This only states what every linearization
/// must do anyway (per key, writes take increasing revisions), so no
/// verdict changes; but a write that hung for seconds, or an unknown delete
/// given an event made long after its call, is otherwise a candidate the
/// search tries at every step of that span, and backtracks from each time.
pub fn resolve_unknown(history: &[KvOperation], reference: &[Event]) -> (Vec<KvOperation>, Resolution) {
    let written = puts_by_value(reference);
    let mut resolution = Resolution::default();
    let deletes = match_unknown_deletes(history, reference, &mut resolution);
    let windows = Windows::new(history);
    let mut out = Vec::with_capacity(history.len());
    for (i, op) in history.iter().enumerate() {
        if !matches!(op.outcome, Outcome::Unknown) {
            out.push(op.clone());
            continue;
        }
        let (revision, output) = match &op.input {
            KvInput::Get { .. } => {
                resolution.dropped += 1;
                continue;
            }
            KvInput::Delete { .. } => match deletes.get(&i) {
                None => {
                    resolution.unresolved += 1;
                    out.push(op.clone());
                    continue;
                }
                Some(None) => {
                    resolution.dropped += 1;
                    continue;
                }
                Some(&Some(revision)) => (revision, KvOutput::Delete { deleted: true, revision: Some(revision) }),
            },
            KvInput::Put { key, value } | KvInput::CompareAndSwap { key, new: value, .. } => {
                let Some(&revision) = written.get(&(key.as_slice(), value.as_slice())) else {
                    resolution.dropped += 1;
                    continue;
                };
                let output = match op.input {
                    KvInput::Put { .. } => KvOutput::Put { revision: Some(revision) },
                    _ => KvOutput::CompareAndSwap { succeeded: true, revision: Some(revision) },
                };
                (revision, output)
            }
        };
        resolution.persisted += 1;
        let (call, time) = windows.of(op.input.key(), revision, op.call);
        out.push(Operation { call, outcome: Outcome::Returned { time, output }, ..op.clone() });
    }
    (out, resolution)
}

/// For each unknown delete (by index into `history`) of a key whose delete
/// events can be matched: the revision of the event it made, or `None` if
/// it made none. Unknown deletes of other keys are left out.
fn match_unknown_deletes(
    history: &[KvOperation],
    reference: &[Event],
    resolution: &mut Resolution,
) -> HashMap<usize, Option<u64>> {
    #[derive(Default)]
    struct Key {
        unknown: Vec<usize>,
        claimed: HashSet<u64>,
        /// An acknowledged delete removed something at a revision it did
        /// not report: it claims an event, but which one is unknown.
        blind: bool,
    }
    let mut keys: BTreeMap<&[u8], Key> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        let key = keys.entry(op.input.key()).or_default();
        match (&op.input, op.output(), &op.outcome) {
            (KvInput::Delete { .. }, _, Outcome::Unknown) => key.unknown.push(i),
            (KvInput::Delete { .. }, Some(KvOutput::Delete { deleted: true, revision }), _) => match revision {
                Some(r) => {
                    key.claimed.insert(*r);
                }
                None => key.blind = true,
            },
            _ => {}
        }
    }
    let mut events: BTreeMap<&[u8], Vec<&Event>> = BTreeMap::new();
    for e in reference.iter().filter(|e| e.kind == EventKind::Delete) {
        if keys.contains_key(e.key.as_slice()) {
            events.entry(e.key.as_slice()).or_default().push(e);
        }
    }
    let mut matched = HashMap::new();
    for (name, mut key) in keys {
        if key.blind {
            continue;
        }
        let mut unclaimed: Vec<&Event> = events
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !key.claimed.contains(&e.revision))
            .collect();
        if unclaimed.len() > key.unknown.len() {
            resolution.unexplained.extend(unclaimed.into_iter().cloned());
            continue;
        }
        unclaimed.sort_by_key(|e| e.revision);
        key.unknown.sort_by_key(|&i| (history[i].call, i));
        for (j, &i) in key.unknown.iter().enumerate() {
            matched.insert(i, unclaimed.get(j).map(|e| e.revision));
        }
    }
    matched
}

/// Per key, what acknowledged operations prove about where a write at a
/// given revision can take effect, given that the model makes a key's
/// writes take increasing revisions.
#[derive(Default)]
struct Window {
    /// (w, call): an operation called at `call` that the model can only
    /// place before every write above revision `w` (a write at `w`, a read
    /// of a value at mod revision `w`). Sorted by `w`, each `call` replaced
    /// by the latest among this entry and every earlier (lower-`w`) one.
    after: Vec<(u64, u64)>,
    /// (b, time): an operation that returned at `time` that the model can
    /// only place after every write below revision `b` (a write at `b`; a
    /// read of a value at mod revision `b - 1`). Sorted by `b`, each `time`
    /// replaced by the earliest among this entry and every later one.
    before: Vec<(u64, u64)>,
}

struct Windows<'a> {
    by_key: HashMap<&'a [u8], Window>,
}

impl<'a> Windows<'a> {
    fn new(history: &'a [KvOperation]) -> Self {
        let mut by_key: HashMap<&[u8], Window> = HashMap::new();
        for op in history {
            let Outcome::Returned { time, output } = &op.outcome else { continue };
            let time = (*time).max(op.call);
            // A write at revision w leaves the key's revision at w, so a
            // write below w cannot follow it, nor one above precede it; a
            // read of a value at mod revision m leaves it at m, so no write
            // at or below m can follow it, nor one above precede it.
            // Answers that wrote nothing bound nothing.
            let (after, before) = match output {
                KvOutput::Put { revision: Some(w) }
                | KvOutput::CompareAndSwap { succeeded: true, revision: Some(w) }
                | KvOutput::Delete { deleted: true, revision: Some(w) } => (*w, *w),
                KvOutput::Get { value: Some(_), mod_revision: Some(m) } => (*m, m.saturating_add(1)),
                _ => continue,
            };
            let window = by_key.entry(op.input.key()).or_default();
            window.after.push((after, op.call));
            window.before.push((before, time));
        }
        for window in by_key.values_mut() {
            window.after.sort_unstable();
            let mut latest = 0;
            for entry in &mut window.after {
                latest = latest.max(entry.1);
                entry.1 = latest;
            }
            window.before.sort_unstable();
            let mut earliest = u64::MAX;
            for entry in window.before.iter_mut().rev() {
                earliest = earliest.min(entry.1);
                entry.1 = earliest;
            }
        }
        Windows { by_key }
    }

    /// Where a write of `key` at `revision` called at `call` can take
    /// effect: not before the latest call of an operation the model places
    /// before it (nor its own), not after the earliest return of one it
    /// places after it (+infinity if none).
    fn of(&self, key: &[u8], revision: u64, call: u64) -> (u64, u64) {
        let Some(window) = self.by_key.get(key) else { return (call, u64::MAX) };
        let below = window.after.partition_point(|&(w, _)| w < revision);
        let from = below.checked_sub(1).map_or(call, |i| call.max(window.after[i].1));
        let first_above = window.before.partition_point(|&(b, _)| b <= revision);
        let until = window.before.get(first_above).map_or(u64::MAX, |&(_, time)| time);
        (from, until)
    }
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
/// Meant for the history as recorded, before [`resolve_unknown`].
pub fn check_acknowledged(history: &[KvOperation], reference: &[Event]) -> Vec<LostWrite> {
    let by_revision: HashMap<(u64, &[u8]), &Event> =
        reference.iter().map(|e| ((e.revision, e.key.as_slice()), e)).collect();
    let written = puts_by_value(reference);
    let mut lost = Vec::new();
    for op in history {
        // Writes resolve_unknown resolved are in the reference by construction.
        let Outcome::Returned { output, .. } = &op.outcome else { continue };
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
        // The delete: no delete event, so it deleted nothing, or never ran.
        assert_eq!(resolution, Resolution { persisted: 1, dropped: 3, ..Resolution::default() });
        assert_eq!(resolved.len(), 3);
        assert_eq!(resolved[1].output(), Some(&KvOutput::Put { revision: Some(3) }));
        // The read of its revision returned at 11: it was applied by then.
        assert_eq!(resolved[1].return_time(), Some(11));
        assert!(check(&KvModel, &resolved, None).is_linearizable());
    }

    fn delete(call: u64, ret: Option<u64>, key: &str, deleted: bool, revision: Option<u64>) -> KvOperation {
        let input = KvInput::Delete { key: key.into() };
        match ret {
            Some(ret) => Operation::returned(3, call, input, ret, KvOutput::Delete { deleted, revision }),
            None => Operation::unknown(3, call, input),
        }
    }

    #[test]
    fn an_unknown_delete_takes_the_unclaimed_delete_event() {
        let reference =
            [Event::put(2, "a", "1"), Event::delete(3, "a"), Event::put(4, "a", "2"), Event::delete(5, "a")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            delete(2, None, "a", false, None),
            get(5, 6, "a", None, None),
            put(7, Some(8), "a", "2", Some(4)),
            // Acknowledged: claims revision 5.
            delete(9, Some(10), "a", true, Some(5)),
            get(11, 12, "a", None, None),
        ];
        let (resolved, resolution) = resolve_unknown(&history, &reference);
        assert_eq!(resolution, Resolution { persisted: 1, ..Resolution::default() });
        let Outcome::Returned { time, output } = &resolved[1].outcome else { panic!("still unknown: {resolved:?}") };
        assert_eq!(*output, KvOutput::Delete { deleted: true, revision: Some(3) });
        // Before the put at revision 4 returned.
        assert_eq!(*time, 8);
        assert!(check(&KvModel, &resolved, None).is_linearizable());
        assert_eq!(check_acknowledged(&history, &reference), vec![]);
    }

    #[test]
    fn a_read_only_an_unseen_delete_could_explain_is_caught() {
        // The value vanished with no delete event: the unknown delete did
        // not remove it (left unknown, the search would let it).
        let reference = [Event::put(2, "a", "1")];
        let history =
            vec![put(0, Some(1), "a", "1", Some(2)), delete(2, None, "a", false, None), get(5, 6, "a", None, None)];
        assert!(check(&KvModel, &history, None).is_linearizable());
        let (resolved, resolution) = resolve_unknown(&history, &reference);
        assert_eq!(resolution, Resolution { dropped: 1, ..Resolution::default() });
        assert!(!check(&KvModel, &resolved, None).is_linearizable());
    }

    #[test]
    fn an_unknown_delete_is_held_to_its_revision() {
        // The delete removed "1" at revision 3, before "2" was written: a
        // read of nothing after a read of "2" is stale. Left unknown, the
        // delete could have gone after the read of "2".
        let reference = [Event::put(2, "a", "1"), Event::delete(3, "a"), Event::put(4, "a", "2")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            delete(2, None, "a", false, None),
            put(3, Some(8), "a", "2", Some(4)),
            get(20, 21, "a", Some("2"), Some(4)),
            get(30, 31, "a", None, None),
        ];
        assert!(check(&KvModel, &history, None).is_linearizable());
        let (resolved, _) = resolve_unknown(&history, &reference);
        assert!(!check(&KvModel, &resolved, None).is_linearizable());
    }

    #[test]
    fn the_earliest_called_unknown_delete_takes_the_lowest_revision() {
        // Two unknown deletes, one event. Recorded latest-called first (a
        // history is in completion order); the read of nothing at 10..11
        // needs the delete called at 0, not the one called at 50.
        let reference = [Event::put(2, "a", "1"), Event::delete(3, "a"), Event::put(4, "a", "2")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            delete(50, None, "a", false, None),
            delete(0, None, "a", false, None),
            get(10, 11, "a", None, None),
            put(60, Some(61), "a", "2", Some(4)),
        ];
        let (resolved, resolution) = resolve_unknown(&history, &reference);
        assert_eq!(resolution, Resolution { persisted: 1, dropped: 1, ..Resolution::default() });
        assert_eq!(resolved[1].call, 0);
        assert!(check(&KvModel, &resolved, None).is_linearizable());
    }

    #[test]
    fn delete_events_nobody_can_account_for_are_reported() {
        let reference =
            [Event::put(2, "a", "1"), Event::delete(3, "a"), Event::put(4, "b", "1"), Event::delete(5, "b")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            get(5, 6, "a", None, None),
            put(0, Some(1), "b", "1", Some(4)),
            // Claims the event at 5, but no delete asked for the one at 3.
            delete(2, Some(3), "b", true, Some(5)),
        ];
        let (_, resolution) = resolve_unknown(&history, &reference);
        assert_eq!(resolution.unexplained, vec![Event::delete(3, "a")]);
        // More events than unknown deletes: those stay unknown.
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            delete(2, None, "a", false, None),
            put(3, Some(4), "a", "2", Some(5)),
            get(5, 6, "a", None, None),
        ];
        let reference =
            [Event::put(2, "a", "1"), Event::delete(3, "a"), Event::put(5, "a", "2"), Event::delete(6, "a")];
        let (resolved, resolution) = resolve_unknown(&history, &reference);
        assert_eq!(resolution.unresolved, 1);
        assert_eq!(resolution.unexplained.len(), 2);
        assert!(matches!(resolved[1].outcome, Outcome::Unknown));
    }

    #[test]
    fn a_resolved_write_is_searched_only_where_it_can_go() {
        // Called at 0, applied at revision 4: after the put at 3 (called
        // at 5) and the read of revision 3 (called at 7), before the read
        // of revision 4 (returned at 20) and the put at 5 (at 30).
        let reference =
            [Event::put(2, "a", "0"), Event::put(3, "a", "1"), Event::put(4, "a", "2"), Event::put(5, "a", "3")];
        let history = vec![
            put(0, Some(1), "a", "0", Some(2)),
            put(0, None, "a", "2", None),
            put(5, Some(6), "a", "1", Some(3)),
            get(7, 8, "a", Some("1"), Some(3)),
            get(10, 20, "a", Some("2"), Some(4)),
            put(25, Some(30), "a", "3", Some(5)),
        ];
        let (resolved, _) = resolve_unknown(&history, &reference);
        assert_eq!((resolved[1].call, resolved[1].return_time()), (7, Some(20)));
        assert!(check(&KvModel, &resolved, None).is_linearizable());
    }

    #[test]
    fn a_resolved_write_nothing_bounds_returns_at_infinity() {
        let reference = [Event::put(2, "a", "1"), Event::put(3, "a", "2")];
        let history = vec![
            put(0, Some(1), "a", "1", Some(2)),
            put(2, None, "a", "2", None),
            // Reads of the older revision, and of nothing, prove nothing.
            get(5, 6, "a", Some("1"), Some(2)),
            get(7, 8, "a", None, None),
        ];
        let (resolved, _) = resolve_unknown(&history, &reference);
        assert_eq!(resolved[1].return_time(), Some(u64::MAX));
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
