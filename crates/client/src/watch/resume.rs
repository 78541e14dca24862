//! Where a re-opened watch starts, so that across reconnects the consumer
//! sees every event once, in order.
//!
//! Invariant: every event with a revision below `next` has been handed to
//! the consumer (or filtered out by the server), and none at or above it has.
//! A watch re-opened at `next` therefore has no gap and no duplicate.
//!
//! `next` advances on delivered events (to the last one's revision + 1) and
//! on progress notifications (to the notified revision + 1: etcd sends them
//! only to watchers that have caught up). A watch started "from now"
//! (revision 0) is anchored by its creation: events start after the
//! revision in the created response's header. A watch started at a past
//! revision is not: etcd creates it before replaying history, so the created
//! header says nothing about what was delivered.

use keel_proto::etcdserverpb::WatchResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// 0 until anchored: the watch was asked for "from now" and not yet created.
    next: i64,
}

impl Resume {
    pub(crate) fn new(start_revision: i64) -> Resume {
        Resume { next: start_revision.max(0) }
    }

    /// The `start_revision` for (re-)creating the watch.
    pub(crate) fn start_revision(&self) -> i64 {
        self.next
    }

    /// Records a created response.
    pub(crate) fn created(&mut self, response: &WatchResponse) {
        if self.next == 0 {
            self.next = header_revision(response) + 1;
        }
    }

    /// Drops events already delivered and advances past the rest. Returns
    /// whether anything is left to hand to the consumer.
    pub(crate) fn accept(&mut self, response: &mut WatchResponse) -> bool {
        if response.events.is_empty() {
            // A progress notification: every event up to its revision was sent.
            self.next = self.next.max(header_revision(response) + 1);
            return true;
        }
        let next = self.next;
        response.events.retain(|event| event.kv.as_ref().is_some_and(|kv| kv.mod_revision >= next));
        match response.events.last().and_then(|event| event.kv.as_ref()) {
            Some(kv) => {
                self.next = kv.mod_revision + 1;
                true
            }
            None => false,
        }
    }
}

fn header_revision(response: &WatchResponse) -> i64 {
    response.header.as_ref().map_or(0, |header| header.revision)
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::ResponseHeader;
    use keel_proto::mvccpb::{Event, KeyValue};

    use super::*;

    fn response(header: i64, event_revisions: &[i64]) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader { revision: header, ..Default::default() }),
            events: event_revisions
                .iter()
                .map(|&rev| Event {
                    kv: Some(KeyValue { key: format!("k{rev}").into_bytes(), mod_revision: rev, ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn revisions(response: &WatchResponse) -> Vec<i64> {
        response.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect()
    }

    #[test]
    fn a_watch_from_now_is_anchored_by_its_creation() {
        let mut resume = Resume::new(0);
        assert_eq!(resume.start_revision(), 0);
        resume.created(&response(41, &[]));
        assert_eq!(resume.start_revision(), 42);
        // Re-creating after a reconnect does not move it.
        resume.created(&response(50, &[]));
        assert_eq!(resume.start_revision(), 42);
    }

    #[test]
    fn a_watch_from_the_past_is_not_anchored_by_its_creation() {
        let mut resume = Resume::new(5);
        resume.created(&response(100, &[]));
        assert_eq!(resume.start_revision(), 5);
    }

    #[test]
    fn events_advance_past_the_last_one() {
        let mut resume = Resume::new(10);
        let mut batch = response(12, &[10, 11, 11, 12]);
        assert!(resume.accept(&mut batch));
        assert_eq!(revisions(&batch), [10, 11, 11, 12]);
        assert_eq!(resume.start_revision(), 13);
    }

    #[test]
    fn replayed_events_are_dropped() {
        let mut resume = Resume::new(10);
        assert!(resume.accept(&mut response(11, &[10, 11])));
        let mut overlap = response(13, &[11, 12, 13]);
        assert!(resume.accept(&mut overlap));
        assert_eq!(revisions(&overlap), [12, 13]);
        let mut stale = response(13, &[12, 13]);
        assert!(!resume.accept(&mut stale));
        assert_eq!(resume.start_revision(), 14);
    }

    #[test]
    fn progress_notifications_advance_but_never_rewind() {
        let mut resume = Resume::new(10);
        assert!(resume.accept(&mut response(20, &[])));
        assert_eq!(resume.start_revision(), 21);
        assert!(resume.accept(&mut response(15, &[])));
        assert_eq!(resume.start_revision(), 21);
    }
}
