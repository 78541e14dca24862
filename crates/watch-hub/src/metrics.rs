//! etcd's watch series (`server/storage/mvcc/metrics.go`, the ones its
//! watchable store moves), under etcd 3.6's names and help texts.
//!
//! All five are read from the hub when scraped, so `notify` pays nothing for
//! them beyond noting, per delivery, how many events it queued. What etcd
//! learns from its gRPC layer (`ReportEventReceived`: events taken off a
//! stream's channel to be sent) the hub learns from the channel itself: a
//! stream's deliveries leave its channel in order, so once the channel holds
//! only `n` of them, every older one was taken (see [`QueuedEvents`]).

use std::collections::VecDeque;
use std::sync::Weak;

use keel_metrics::prometheus::core::Collector;
use keel_metrics::{Computed, Measures};
use tokio::sync::mpsc;

use crate::hub::{HubState, WatchHub};
use crate::Delivery;

/// The watch series of one [`WatchHub`]; see [`WatchHub::metrics`].
#[derive(Clone)]
pub struct WatchMetrics {
    /// Weak, so a registry that outlives the hub does not keep it alive.
    hub: Weak<WatchHub>,
}

impl std::fmt::Debug for WatchMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchMetrics").finish_non_exhaustive()
    }
}

impl WatchMetrics {
    pub(crate) fn new(hub: Weak<WatchHub>) -> WatchMetrics {
        WatchMetrics { hub }
    }

    fn computed(&self, read: fn(&mut HubState) -> u64) -> impl Fn() -> f64 + Send + Sync + 'static {
        let hub = self.hub.clone();
        move || hub.upgrade().map_or(0.0, |hub| hub.with_state(read) as f64)
    }
}

impl Measures for WatchMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
                self.computed(|st| st.streams.len() as u64),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
                self.computed(|st| st.watchers.len() as u64),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
                self.computed(|st| st.unsynced.len() as u64),
            )),
            Box::new(Computed::counter(
                "etcd_debugging_mvcc_events_total",
                "Total number of events sent by this member.",
                self.computed(HubState::events_sent),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_pending_events_total",
                "Total number of pending events to be sent.",
                self.computed(HubState::events_pending),
            )),
        ]
    }
}

/// The events of the deliveries on one stream's channel that its reader
/// has not taken yet, and of those it has.
#[derive(Debug, Default)]
pub(crate) struct QueuedEvents {
    /// Events per delivery still on the channel, oldest first; 0 for the
    /// deliveries that carry none, which keep the positions right.
    counts: VecDeque<u64>,
    /// Their sum.
    pending: u64,
    /// Events of the deliveries the reader took.
    taken: u64,
}

impl QueuedEvents {
    /// A delivery carrying `events` events was just put on the channel
    /// `sender` feeds. Every send on the channel must be noted, in order.
    pub(crate) fn sent(&mut self, events: usize, sender: &mpsc::Sender<Delivery>) {
        let events = events as u64;
        self.counts.push_back(events);
        self.pending += events;
        self.settle(sender);
    }

    /// Forgets the deliveries the reader has taken. The channel holds at
    /// most `max_capacity - capacity` deliveries (a permit reserved for a
    /// send not made yet counts too, which only delays the accounting); the
    /// ones before those were read.
    pub(crate) fn settle(&mut self, sender: &mpsc::Sender<Delivery>) {
        let held = sender.max_capacity().saturating_sub(sender.capacity());
        while self.counts.len() > held {
            let Some(events) = self.counts.pop_front() else { break };
            self.pending -= events;
            self.taken += events;
        }
    }

    pub(crate) fn pending(&self) -> u64 {
        self.pending
    }

    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keel_metrics::Metrics;
    use keel_proto::mvccpb::{event::EventType, Event, KeyValue};

    use super::*;
    use crate::{History, MemHistory, WatchSpec};

    fn put(key: &str, rev: i64) -> Event {
        let kv =
            KeyValue { key: key.into(), mod_revision: rev, create_revision: rev, version: 1, ..Default::default() };
        Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None }
    }

    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("{name} ");
        let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
        line[prefix.len()..].parse().unwrap()
    }

    #[tokio::test]
    async fn streams_watchers_and_events_are_read_from_the_hub() {
        let history = Arc::new(MemHistory::new());
        let hub = WatchHub::without_thread(history.clone() as Arc<dyn History>, 1);
        let metrics = Metrics::new().unwrap();
        hub.metrics().register(metrics.registry()).unwrap();

        let (stream, mut deliveries) = hub.open_stream(16);
        stream.watch(WatchSpec::new("a", "")).await.unwrap();
        // Starts in the past: unsynced until a catch-up round.
        stream.watch(WatchSpec::new("b", "").from_revision(1)).await.unwrap();
        let (_idle, _idle_deliveries) = hub.open_stream(16);
        let events = vec![put("a", 2), put("a2", 2)];
        history.record(2, events.clone());
        hub.notify(2, events);

        let text = metrics.text().unwrap();
        for (name, kind) in [
            ("etcd_debugging_mvcc_watch_stream_total", "gauge"),
            ("etcd_debugging_mvcc_watcher_total", "gauge"),
            ("etcd_debugging_mvcc_slow_watcher_total", "gauge"),
            ("etcd_debugging_mvcc_events_total", "counter"),
            ("etcd_debugging_mvcc_pending_events_total", "gauge"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} is a {kind}:\n{text}");
        }
        assert_eq!(value(&text, "etcd_debugging_mvcc_watch_stream_total"), 2.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_watcher_total"), 2.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_slow_watcher_total"), 1.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_pending_events_total"), 1.0, "a@2, not yet read");
        assert_eq!(value(&text, "etcd_debugging_mvcc_events_total"), 0.0);

        // The reader takes the two creations and the event.
        for _ in 0..3 {
            deliveries.recv().await.unwrap();
        }
        let text = metrics.text().unwrap();
        assert_eq!(value(&text, "etcd_debugging_mvcc_pending_events_total"), 0.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_events_total"), 1.0);

        // Nothing for b at revision 2: it catches up with nothing to send.
        hub.catch_up_round();
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_slow_watcher_total"), 0.0);

        drop(stream);
        let text = metrics.text().unwrap();
        assert_eq!(value(&text, "etcd_debugging_mvcc_watch_stream_total"), 1.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_watcher_total"), 0.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_events_total"), 1.0, "a closed stream's events stay counted");

        drop((hub, _idle));
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_watch_stream_total"), 0.0);
    }
}
