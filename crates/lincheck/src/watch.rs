//! etcd's watch guarantees, checked on what one watcher received against
//! the reference history ([`crate::events`]):
//!
//! - **ordered**: revisions never go back;
//! - **unique**: no event is delivered twice;
//! - **atomic**: the events of one revision arrive in one response;
//! - **reliable** and **resumable**: between the revision the watch started
//!   at and the last revision it is known to have caught up to, the events
//!   delivered are exactly the reference's events for the watched keys,
//!   across every reconnect the client made.
//!
//! - **bookmarkable**: a progress notification at revision R (a response
//!   with no events, sent periodically with `progress_notify` or on a
//!   progress request) promises that every event at or below R was already
//!   delivered; a client resumes from R + 1 on the strength of it (as
//!   Kubernetes' reflector resumes from a bookmark), so an event at or below
//!   R delivered after it, or never, is an anomaly.
//!
//! A watch that started in the past (a non-zero start revision) checks
//! resumption from history too: its first events are replayed ones.

use std::collections::{BTreeMap, HashSet};

use crate::events::Event;

/// One response of a watch stream: the events it carried and when the
/// client received it (any clock shared with the rest of the run), or a
/// progress notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Receive time.
    pub received: u64,
    /// The events, in the order delivered.
    pub events: Vec<Event>,
    /// For a progress notification (no events): the revision in its
    /// header, up to which every event must already have been delivered.
    pub progress: Option<u64>,
}

impl Delivery {
    /// A response carrying `events`.
    pub fn events(received: u64, events: Vec<Event>) -> Self {
        Delivery { received, events, progress: None }
    }

    /// A progress notification at `revision`.
    pub fn progress(received: u64, revision: u64) -> Self {
        Delivery { received, events: Vec::new(), progress: Some(revision) }
    }
}

/// Everything one watcher received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchLog {
    /// For reports.
    pub name: String,
    /// The keys watched: those starting with this prefix.
    pub prefix: Vec<u8>,
    /// The first revision the watch asked for (etcd's `start_revision`; the
    /// revision after creation's header when it asked for 0).
    pub start_revision: u64,
    /// The last revision the watcher is known to have received everything
    /// up to (e.g. the revision of a final write it was waited for), or
    /// `None` when it never caught up: then only the revisions up to its
    /// last event or progress notification are checked.
    pub caught_up_to: Option<u64>,
    /// The responses, in the order received.
    pub deliveries: Vec<Delivery>,
}

/// A broken watch guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchAnomaly {
    /// An event with a lower revision than one delivered before it.
    Unordered {
        /// The watcher.
        watcher: String,
        /// The event.
        event: Event,
        /// The highest revision delivered before it.
        after: u64,
    },
    /// The same event delivered twice.
    Duplicate {
        /// The watcher.
        watcher: String,
        /// The event.
        event: Event,
    },
    /// One revision's events spread over several responses.
    SplitRevision {
        /// The watcher.
        watcher: String,
        /// The revision.
        revision: u64,
    },
    /// An event in the reference that the watcher should have received and
    /// did not.
    Missing {
        /// The watcher.
        watcher: String,
        /// The event.
        event: Event,
    },
    /// An event the watcher received that the reference does not have
    /// (a change that never happened, a wrong value, or one outside the
    /// watched keys or revisions).
    Unexpected {
        /// The watcher.
        watcher: String,
        /// The event.
        event: Event,
    },
    /// A progress notification at `progress` came before an event at or
    /// below that revision had been delivered: the event came after it
    /// (`delivered_later`) or never. Reported once per event, at the first
    /// notification that covered it.
    NotBookmarkable {
        /// The watcher.
        watcher: String,
        /// The notification's revision.
        progress: u64,
        /// The first event it should have followed (the reference's).
        event: Event,
        /// Whether the event arrived after the notification.
        delivered_later: bool,
    },
}

/// Checks one watcher's log against `reference`.
pub fn check_watch(reference: &[Event], log: &WatchLog) -> Vec<WatchAnomaly> {
    let watcher = || log.name.clone();
    let mut anomalies = Vec::new();

    let mut highest = 0;
    let mut seen = HashSet::new();
    let mut response_of_revision: BTreeMap<u64, usize> = BTreeMap::new();
    let mut split = HashSet::new();
    for (n, delivery) in log.deliveries.iter().enumerate() {
        for event in &delivery.events {
            if event.revision < highest {
                anomalies.push(WatchAnomaly::Unordered { watcher: watcher(), event: event.clone(), after: highest });
            }
            highest = highest.max(event.revision);
            if !seen.insert((event.revision, event.key.clone())) {
                anomalies.push(WatchAnomaly::Duplicate { watcher: watcher(), event: event.clone() });
            }
            let first = *response_of_revision.entry(event.revision).or_insert(n);
            if first != n && split.insert(event.revision) {
                anomalies.push(WatchAnomaly::SplitRevision { watcher: watcher(), revision: event.revision });
            }
        }
    }

    // Reliable: compared as sets keyed by (revision, key), so an ordering
    // or duplication problem above is not reported a second time here. A
    // progress notification vouches for the revisions up to it too.
    let last_progress = log.deliveries.iter().filter_map(|d| d.progress).max().unwrap_or(0);
    let end = log.caught_up_to.unwrap_or(0).max(highest).max(last_progress);
    let expected: BTreeMap<(u64, &[u8]), &Event> = reference
        .iter()
        .filter(|e| e.revision >= log.start_revision && e.revision <= end && e.key.starts_with(&log.prefix))
        .map(|e| ((e.revision, e.key.as_slice()), e))
        .collect();
    let mut received: BTreeMap<(u64, &[u8]), &Event> = BTreeMap::new();
    for event in log.deliveries.iter().flat_map(|d| &d.events) {
        received.entry((event.revision, event.key.as_slice())).or_insert(event);
    }
    for (id, event) in &expected {
        match received.get(id) {
            None => anomalies.push(WatchAnomaly::Missing { watcher: watcher(), event: (*event).clone() }),
            Some(got) if got != event => {
                anomalies.push(WatchAnomaly::Unexpected { watcher: watcher(), event: (*got).clone() })
            }
            Some(_) => {}
        }
    }
    for (id, event) in &received {
        if !expected.contains_key(id) {
            anomalies.push(WatchAnomaly::Unexpected { watcher: watcher(), event: (*event).clone() });
        }
    }

    // Bookmarkable: at each notification, every expected event at or below
    // it must be among those delivered so far. `expected` is in revision
    // order, so each event is looked at by the first notification covering
    // it only.
    let mut so_far: HashSet<(u64, &[u8])> = HashSet::new();
    let mut pending = expected.iter().peekable();
    for delivery in &log.deliveries {
        for event in &delivery.events {
            so_far.insert((event.revision, event.key.as_slice()));
        }
        let Some(progress) = delivery.progress else { continue };
        while let Some((id, event)) = pending.next_if(|((revision, _), _)| *revision <= progress) {
            if !so_far.contains(id) {
                anomalies.push(WatchAnomaly::NotBookmarkable {
                    watcher: watcher(),
                    progress,
                    event: (*event).clone(),
                    delivered_later: received.contains_key(id),
                });
            }
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Vec<Event> {
        vec![
            Event::put(2, "/k/a", "1"),
            Event::put(3, "/k/b", "2"),
            Event::put(4, "/k/a", "3"),
            Event::delete(4, "/k/b"),
            Event::put(5, "/other", "x"),
            Event::delete(6, "/k/a"),
        ]
    }

    fn log(start: u64, caught_up_to: Option<u64>, deliveries: Vec<Vec<Event>>) -> WatchLog {
        WatchLog {
            name: "w".into(),
            prefix: b"/k/".to_vec(),
            start_revision: start,
            caught_up_to,
            deliveries: deliveries
                .into_iter()
                .enumerate()
                .map(|(i, events)| Delivery::events(i as u64, events))
                .collect(),
        }
    }

    fn all_of_k() -> Vec<Vec<Event>> {
        let r = reference();
        vec![vec![r[0].clone()], vec![r[1].clone()], vec![r[2].clone(), r[3].clone()], vec![r[5].clone()]]
    }

    #[test]
    fn a_faithful_watch_passes() {
        assert_eq!(check_watch(&reference(), &log(1, Some(6), all_of_k())), vec![]);
    }

    #[test]
    fn a_watch_from_the_middle_passes() {
        let r = reference();
        let l = log(4, Some(7), vec![vec![r[2].clone(), r[3].clone()], vec![r[5].clone()]]);
        assert_eq!(check_watch(&r, &l), vec![]);
    }

    #[test]
    fn a_gap_is_caught() {
        let mut d = all_of_k();
        d.remove(1);
        let anomalies = check_watch(&reference(), &log(1, Some(6), d));
        assert!(
            matches!(&anomalies[..], [WatchAnomaly::Missing { event, .. }] if event.revision == 3),
            "{anomalies:?}"
        );
    }

    #[test]
    fn a_missing_tail_is_caught_when_the_watcher_caught_up() {
        let mut d = all_of_k();
        d.pop();
        assert!(check_watch(&reference(), &log(1, None, d.clone())).is_empty());
        let anomalies = check_watch(&reference(), &log(1, Some(6), d));
        assert!(
            matches!(&anomalies[..], [WatchAnomaly::Missing { event, .. }] if event.revision == 6),
            "{anomalies:?}"
        );
    }

    #[test]
    fn a_repeated_event_is_caught() {
        let mut d = all_of_k();
        // A resume that went back one revision too far.
        d.insert(2, vec![reference()[1].clone()]);
        let anomalies = check_watch(&reference(), &log(1, Some(6), d));
        assert!(anomalies.contains(&WatchAnomaly::Duplicate { watcher: "w".into(), event: reference()[1].clone() }));
    }

    #[test]
    fn an_event_out_of_order_is_caught() {
        let r = reference();
        let d = vec![vec![r[1].clone()], vec![r[0].clone()], vec![r[2].clone(), r[3].clone()], vec![r[5].clone()]];
        let anomalies = check_watch(&r, &log(1, Some(6), d));
        assert!(matches!(&anomalies[..], [WatchAnomaly::Unordered { after: 3, .. }]), "{anomalies:?}");
    }

    #[test]
    fn a_revision_split_over_responses_is_caught() {
        let r = reference();
        let d =
            vec![vec![r[0].clone()], vec![r[1].clone()], vec![r[2].clone()], vec![r[3].clone()], vec![r[5].clone()]];
        let anomalies = check_watch(&r, &log(1, Some(6), d));
        assert_eq!(anomalies, vec![WatchAnomaly::SplitRevision { watcher: "w".into(), revision: 4 }]);
    }

    #[test]
    fn a_wrong_value_or_foreign_key_is_caught() {
        let mut d = all_of_k();
        d[0][0].value = b"9".to_vec();
        d.push(vec![Event::put(7, "/k/c", "never written")]);
        let anomalies = check_watch(&reference(), &log(1, Some(7), d));
        assert_eq!(anomalies.len(), 2, "{anomalies:?}");
        assert!(anomalies.iter().all(|a| matches!(a, WatchAnomaly::Unexpected { .. })));
    }

    /// `all_of_k` with progress notifications at the given revisions
    /// inserted before the given delivery indexes.
    fn with_progress(deliveries: Vec<Vec<Event>>, notifications: &[(usize, u64)]) -> WatchLog {
        let mut l = log(1, None, deliveries);
        for &(at, revision) in notifications.iter().rev() {
            l.deliveries.insert(at, Delivery::progress(at as u64, revision));
        }
        l
    }

    fn bookmark_anomalies(anomalies: &[WatchAnomaly]) -> Vec<(u64, u64, bool)> {
        anomalies
            .iter()
            .filter_map(|a| match a {
                WatchAnomaly::NotBookmarkable { progress, event, delivered_later, .. } => {
                    Some((*progress, event.revision, *delivered_later))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn progress_notifications_after_their_events_pass() {
        // After rev 3; after rev 4 and the unwatched rev 5; at the end.
        let mut l = with_progress(all_of_k(), &[(2, 3), (3, 5), (4, 6)]);
        l.caught_up_to = Some(6);
        assert_eq!(check_watch(&reference(), &l), vec![]);
    }

    #[test]
    fn a_notification_ahead_of_an_event_is_caught() {
        // The notification at 3 overtook the event at 3 (etcd 3.4's progress
        // request answer, sent on the control stream ahead of queued events).
        let l = with_progress(all_of_k(), &[(1, 3)]);
        let anomalies = check_watch(&reference(), &l);
        assert_eq!(bookmark_anomalies(&anomalies), vec![(3, 3, true)], "{anomalies:?}");
        // Nothing else: the event did arrive, in order.
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    }

    #[test]
    fn a_client_resuming_from_a_wrong_bookmark_loses_events_and_both_are_caught() {
        // Told "up to 4" after rev 2, the client resumed from 5: revs 3 and 4
        // never came.
        let r = reference();
        let l = with_progress(vec![vec![r[0].clone()], vec![r[5].clone()]], &[(1, 4)]);
        let anomalies = check_watch(&r, &l);
        assert_eq!(bookmark_anomalies(&anomalies), vec![(4, 3, false), (4, 4, false), (4, 4, false)], "{anomalies:?}");
        let missing = anomalies.iter().filter(|a| matches!(a, WatchAnomaly::Missing { .. })).count();
        assert_eq!(missing, 3, "{anomalies:?}");
    }

    #[test]
    fn a_notification_vouches_for_the_revisions_below_it() {
        // A watcher that never caught up is checked up to its last
        // notification, not only up to its last event.
        let r = reference();
        let l = with_progress(vec![vec![r[0].clone()], vec![r[1].clone()]], &[(2, 6)]);
        let anomalies = check_watch(&r, &l);
        let missing: Vec<u64> = anomalies
            .iter()
            .filter_map(|a| match a {
                WatchAnomaly::Missing { event, .. } => Some(event.revision),
                _ => None,
            })
            .collect();
        assert_eq!(missing, vec![4, 4, 6], "{anomalies:?}");
    }

    #[test]
    fn an_event_is_reported_once_at_the_first_notification_covering_it() {
        let r = reference();
        // Two notifications before rev 3 arrives: one anomaly.
        let l = with_progress(vec![vec![r[0].clone()], vec![r[1].clone()]], &[(1, 3), (1, 3)]);
        assert_eq!(bookmark_anomalies(&check_watch(&r, &l)), vec![(3, 3, true)]);
    }
}
