//! etcd's watch series (`server/storage/mvcc/metrics.go`, the ones its
//! watchable store moves), under etcd 3.6's names and help texts.
//!
//! A scrape reads a handful of atomics ([`Counters`]) and never takes the
//! hub's lock. The shape is etcd's: the hub adds the events of each delivery
//! it queues (etcd's `pendingEventsGauge.Add` in `notify`), and the stream's
//! reader adds those it takes off the channel ([`WatchStream::took`], etcd's
//! `ReportEventReceived`). Pending is the difference, less the events of
//! closed streams that no reader took (etcd leaves those pending forever).
//!
//! Cost, per delivery in `notify` (applier's thread, hub lock held): a plain
//! add on the watcher already in hand and one relaxed `fetch_add` on
//! [`Counters::queued`], which only the holder of the hub lock writes, so
//! its cache line stays with that core until a scrape reads it. The reader
//! pays two relaxed adds per delivery of events ([`Counters::taken`] sits
//! on its own cache line, away from `queued`). The gauges are stored when a
//! stream or watcher comes, goes, or moves between synced and unsynced.
//!
//! [`WatchStream::took`]: crate::WatchStream::took

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_metrics::prometheus::core::Collector;
use keel_metrics::{Computed, Measures};

/// The watch series of one [`WatchHub`](crate::WatchHub); see
/// [`WatchHub::metrics`](crate::WatchHub::metrics).
#[derive(Clone)]
pub struct WatchMetrics {
    /// Only the counters: a registry that outlives the hub keeps nothing
    /// else alive.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for WatchMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchMetrics").finish_non_exhaustive()
    }
}

impl WatchMetrics {
    pub(crate) fn new(counters: Arc<Counters>) -> WatchMetrics {
        WatchMetrics { counters }
    }

    fn computed(&self, read: fn(&Counters) -> u64) -> impl Fn() -> f64 + Send + Sync + 'static {
        let counters = self.counters.clone();
        move || read(&counters) as f64
    }
}

impl Measures for WatchMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
                self.computed(|c| c.streams.load(Ordering::Relaxed)),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
                self.computed(|c| c.watchers.load(Ordering::Relaxed)),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
                self.computed(|c| c.slow.load(Ordering::Relaxed)),
            )),
            Box::new(Computed::counter(
                "etcd_debugging_mvcc_events_total",
                "Total number of events sent by this member.",
                self.computed(|c| c.taken.0.load(Ordering::Relaxed)),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_pending_events_total",
                "Total number of pending events to be sent.",
                self.computed(Counters::pending),
            )),
        ]
    }
}

/// An atomic on a cache line of its own, so that its writers (the applier,
/// or the streams' readers) do not steal each other's line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Line(pub(crate) AtomicU64);

/// What the series read, written by the hub and the streams' readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Open streams, watchers, and unsynced watchers, as last stored under
    /// the hub lock.
    streams: AtomicU64,
    watchers: AtomicU64,
    slow: AtomicU64,
    /// Events in the deliveries the hub put on streams' channels. Written
    /// only under the hub lock.
    pub(crate) queued: AtomicU64,
    /// Events in the deliveries the readers took (etcd's events sent).
    taken: Line,
    /// Events queued on streams that closed before their reader took them.
    unread: AtomicU64,
}

impl Counters {
    pub(crate) fn set_counts(&self, streams: usize, watchers: usize, slow: usize) {
        self.streams.store(streams as u64, Ordering::Relaxed);
        self.watchers.store(watchers as u64, Ordering::Relaxed);
        self.slow.store(slow as u64, Ordering::Relaxed);
    }

    /// A reader took a delivery of `events` events.
    pub(crate) fn taken(&self, events: u64) {
        self.taken.0.fetch_add(events, Ordering::Relaxed);
    }

    /// A stream closed after `queued` events were put on its channel, of
    /// which its reader took `taken`; the rest will never be sent.
    pub(crate) fn closed(&self, queued: u64, taken: u64) {
        let unread = queued.saturating_sub(taken);
        if unread > 0 {
            self.unread.fetch_add(unread, Ordering::Relaxed);
        }
    }

    /// Events queued and neither taken nor left behind by a closed stream.
    /// The hub counts a delivery just after queueing it, so a reader may
    /// count it taken a moment before: that moment reads low, never below 0.
    fn pending(&self) -> u64 {
        let taken = self.taken.0.load(Ordering::Relaxed);
        let unread = self.unread.load(Ordering::Relaxed);
        let queued = self.queued.load(Ordering::Relaxed);
        queued.saturating_sub(taken + unread)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keel_metrics::{Measures, Metrics};
    use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
    use tokio::sync::mpsc;

    use crate::{Delivery, History, MemHistory, WatchHub, WatchSpec, WatchStream};

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

    /// (events_total, pending_events_total) as a scrape shows them.
    fn events(metrics: &Metrics) -> (f64, f64) {
        let text = metrics.text().unwrap();
        (value(&text, "etcd_debugging_mvcc_events_total"), value(&text, "etcd_debugging_mvcc_pending_events_total"))
    }

    /// Takes `n` deliveries as the gRPC layer does, reporting each.
    async fn take(stream: &WatchStream, deliveries: &mut mpsc::Receiver<Delivery>, n: usize) {
        for _ in 0..n {
            stream.took(deliveries.recv().await.unwrap());
        }
    }

    fn setup() -> (Arc<MemHistory>, Arc<WatchHub>, Metrics) {
        let history = Arc::new(MemHistory::new());
        let hub = WatchHub::without_thread(history.clone() as Arc<dyn History>, 1);
        let metrics = Metrics::new().unwrap();
        hub.metrics().register(metrics.registry()).unwrap();
        (history, hub, metrics)
    }

    fn write(history: &MemHistory, hub: &WatchHub, rev: i64, keys: &[&str]) {
        let events: Vec<Event> = keys.iter().map(|key| put(key, rev)).collect();
        history.record(rev, events.clone());
        hub.notify(rev, events);
    }

    #[tokio::test]
    async fn streams_watchers_and_events_are_counted() {
        let (history, hub, metrics) = setup();

        let (stream, mut deliveries) = hub.open_stream(16);
        stream.watch(WatchSpec::new("a", "")).await.unwrap();
        // Starts in the past: unsynced until a catch-up round.
        stream.watch(WatchSpec::new("b", "").from_revision(1)).await.unwrap();
        let (_idle, _idle_deliveries) = hub.open_stream(16);
        write(&history, &hub, 2, &["a", "a2"]);

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
        assert_eq!(events(&metrics), (0.0, 1.0), "a@2 queued, not taken yet");

        // The reader takes the two creations and the event.
        take(&stream, &mut deliveries, 3).await;
        assert_eq!(events(&metrics), (1.0, 0.0));

        // Nothing for b at revision 2: it catches up with nothing to send.
        hub.catch_up_round();
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_slow_watcher_total"), 0.0);

        drop(stream);
        let text = metrics.text().unwrap();
        assert_eq!(value(&text, "etcd_debugging_mvcc_watch_stream_total"), 1.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_watcher_total"), 0.0);
        assert_eq!(events(&metrics), (1.0, 0.0), "a closed stream's events stay counted");

        drop((hub, _idle));
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_watch_stream_total"), 0.0);
    }

    /// Events the catch-up thread queues count as the live ones do; a
    /// watcher that falls behind counts as slow until it catches up.
    #[tokio::test]
    async fn caught_up_events_and_slow_watchers_are_counted() {
        let (history, hub, metrics) = setup();
        let (stream, mut deliveries) = hub.open_stream(2);
        stream.watch(WatchSpec::new("a", "")).await.unwrap();
        write(&history, &hub, 2, &["a"]);
        // Created and a@2 fill the buffer: a@3 sends the watcher to catch up.
        write(&history, &hub, 3, &["a"]);
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_slow_watcher_total"), 1.0);
        assert_eq!(events(&metrics), (0.0, 1.0));

        take(&stream, &mut deliveries, 2).await;
        assert_eq!(events(&metrics), (1.0, 0.0));
        assert!(hub.catch_up_round());
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_slow_watcher_total"), 0.0);
        assert_eq!(events(&metrics), (1.0, 1.0), "a@3, from history");
        take(&stream, &mut deliveries, 1).await;
        assert_eq!(events(&metrics), (2.0, 0.0));
    }

    /// A stream that closes with deliveries its reader never took: they
    /// stop counting as pending and never count as sent, whichever side
    /// goes first (tokio hands the permits of unread messages back when
    /// the receiver drops, which must not read as "taken").
    #[tokio::test]
    async fn unread_events_of_a_closed_stream_are_neither_pending_nor_sent() {
        let (history, hub, metrics) = setup();
        let (first, mut first_deliveries) = hub.open_stream(16);
        first.watch(WatchSpec::new("k", "\0")).await.unwrap();
        let (second, second_deliveries) = hub.open_stream(16);
        second.watch(WatchSpec::new("k", "\0")).await.unwrap();
        write(&history, &hub, 2, &["k1", "k2"]);
        write(&history, &hub, 3, &["k3"]);
        assert_eq!(events(&metrics), (0.0, 6.0), "3 events on each stream");

        // The first stream's reader takes Created and the two events of
        // revision 2, then the stream closes with revision 3 unread.
        take(&first, &mut first_deliveries, 2).await;
        assert_eq!(events(&metrics), (2.0, 4.0));
        drop(first);
        assert_eq!(events(&metrics), (2.0, 3.0));
        // Still on the channel, but nobody reports it any more.
        assert!(matches!(first_deliveries.recv().await, Some(Delivery::Events { .. })));
        drop(first_deliveries);
        assert_eq!(events(&metrics), (2.0, 3.0));

        // The second stream's receiver goes first, with all three unread.
        drop(second_deliveries);
        assert_eq!(events(&metrics), (2.0, 3.0), "pending until the stream closes");
        write(&history, &hub, 4, &["k4"]);
        assert_eq!(events(&metrics), (2.0, 3.0), "nothing queued on a closed channel");
        drop(second);
        assert_eq!(events(&metrics), (2.0, 0.0));
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_watch_stream_total"), 0.0);
    }

    /// A watch cancelled with events still queued: they stay pending until
    /// taken, or until the stream closes.
    #[tokio::test]
    async fn a_cancelled_watchers_events_stay_accounted() {
        let (history, hub, metrics) = setup();
        let (stream, mut deliveries) = hub.open_stream(16);
        let id = stream.watch(WatchSpec::new("a", "")).await.unwrap();
        let other = stream.watch(WatchSpec::new("b", "")).await.unwrap();
        write(&history, &hub, 2, &["a", "b"]);
        assert!(stream.cancel(id).await);
        assert_ne!(id, other);
        assert_eq!(events(&metrics), (0.0, 2.0));
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_mvcc_watcher_total"), 1.0);
        // Both creations and one of the events.
        take(&stream, &mut deliveries, 3).await;
        assert_eq!(events(&metrics), (1.0, 1.0));
        drop(stream);
        assert_eq!(events(&metrics), (1.0, 0.0));
    }
}
