use std::sync::Arc;
use std::time::Duration;

use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
use tokio::sync::mpsc::Receiver;

use crate::{Delivery, Filters, History, MemHistory, WatchError, WatchHub, WatchSpec, STREAM_PROGRESS_ID};

fn put(key: &str, rev: i64) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: key.into(),
            mod_revision: rev,
            create_revision: rev,
            version: 1,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

fn delete(key: &str, rev: i64) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue { key: key.into(), mod_revision: rev, ..Default::default() }),
        prev_kv: None,
    }
}

/// A store stand-in: records each revision in history, then notifies.
struct Writer {
    history: Arc<MemHistory>,
    hub: Arc<WatchHub>,
    revision: i64,
}

impl Writer {
    fn new() -> Writer {
        let history = Arc::new(MemHistory::new());
        let hub = WatchHub::new(history.clone() as Arc<dyn History>, 1);
        Writer { history, hub, revision: 1 }
    }

    fn write(&mut self, changes: &[(&str, bool)]) -> i64 {
        self.revision += 1;
        let rev = self.revision;
        let events: Vec<Event> =
            changes.iter().map(|&(k, is_put)| if is_put { put(k, rev) } else { delete(k, rev) }).collect();
        self.history.record(rev, events.clone());
        self.hub.notify(rev, events);
        rev
    }
}

async fn next(rx: &mut Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a delivery within 5 s").expect("stream open")
}

fn event_revs(d: &Delivery) -> Vec<(String, i64)> {
    match d {
        Delivery::Events { events, .. } => events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision)
            })
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

fn assert_created(d: Delivery) -> i64 {
    match d {
        Delivery::Created { watch_id, error: None, .. } => watch_id,
        other => panic!("expected created, got {other:?}"),
    }
}

#[tokio::test]
async fn live_events_reach_matching_watchers_only() {
    let mut w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(16);
    let single = stream.watch(WatchSpec::new("a", "")).await.unwrap();
    let prefix = stream.watch(WatchSpec::new("b", "c")).await.unwrap();
    assert_eq!((single, prefix), (0, 1));
    assert_created(next(&mut rx).await);
    assert_created(next(&mut rx).await);

    w.write(&[("a", true)]);
    w.write(&[("zz", true)]);
    w.write(&[("b1", true), ("a", false), ("b2", true)]);

    let d = next(&mut rx).await;
    assert!(matches!(d, Delivery::Events { watch_id: 0, revision: 2, .. }));
    assert_eq!(event_revs(&d), vec![("a".into(), 2)]);
    // Revision 4's events arrive whole for each watcher, in their order.
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|d| match d {
        Delivery::Events { watch_id, .. } => *watch_id,
        _ => -9,
    });
    assert_eq!(event_revs(&got[0]), vec![("a".into(), 4)]);
    assert_eq!(event_revs(&got[1]), vec![("b1".into(), 4), ("b2".into(), 4)]);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn filters_drop_unwanted_kinds() {
    let mut w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(16);
    let mut spec = WatchSpec::new("k", "\0");
    spec.filters = Filters { no_put: true, no_delete: false };
    stream.watch(spec).await.unwrap();
    assert_created(next(&mut rx).await);
    w.write(&[("k1", true)]);
    w.write(&[("k1", false)]);
    assert_eq!(event_revs(&next(&mut rx).await), vec![("k1".into(), 3)]);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn past_start_revision_replays_history_then_goes_live() {
    let mut w = Writer::new();
    for i in 0..5 {
        w.write(&[(&format!("k{i}"), true)]);
    }
    let (stream, mut rx) = w.hub.open_stream(16);
    stream.watch(WatchSpec::new("k", "l").from_revision(3)).await.unwrap();
    assert_created(next(&mut rx).await);
    let replay = next(&mut rx).await;
    assert_eq!(event_revs(&replay), vec![("k1".into(), 3), ("k2".into(), 4), ("k3".into(), 5), ("k4".into(), 6)]);
    w.write(&[("k5", true)]);
    assert_eq!(event_revs(&next(&mut rx).await), vec![("k5".into(), 7)]);
}

#[tokio::test]
async fn future_start_revision_waits_for_it() {
    let mut w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(16);
    stream.watch(WatchSpec::new("k", "").from_revision(4)).await.unwrap();
    assert_created(next(&mut rx).await);
    w.write(&[("k", true)]);
    w.write(&[("k", true)]);
    w.write(&[("k", true)]);
    assert_eq!(event_revs(&next(&mut rx).await), vec![("k".into(), 4)]);
}

#[tokio::test]
async fn a_slow_reader_falls_back_to_history_and_misses_nothing() {
    let mut w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(2);
    stream.watch(WatchSpec::new("k", "")).await.unwrap();
    // Nobody reads while 100 revisions go by: notify must not wait.
    for _ in 0..100 {
        w.write(&[("k", true)]);
    }
    assert_created(next(&mut rx).await);
    let mut seen = Vec::new();
    while seen.len() < 100 {
        seen.extend(event_revs(&next(&mut rx).await).into_iter().map(|(_, r)| r));
    }
    assert_eq!(seen, (2..=101).collect::<Vec<_>>());
    assert_eq!(w.hub.watcher_counts(), (1, 0), "caught up and synced again");
    w.write(&[("k", true)]);
    assert_eq!(event_revs(&next(&mut rx).await), vec![("k".into(), 102)]);
}

#[tokio::test]
async fn a_compacted_start_revision_cancels_the_watch() {
    let mut w = Writer::new();
    for _ in 0..5 {
        w.write(&[("k", true)]);
    }
    w.history.compact(4);
    let (stream, mut rx) = w.hub.open_stream(16);
    stream.watch(WatchSpec::new("k", "").from_revision(2)).await.unwrap();
    assert_created(next(&mut rx).await);
    match next(&mut rx).await {
        Delivery::Canceled { watch_id: 0, compact_revision: 4, .. } => {}
        other => panic!("expected a compaction cancel, got {other:?}"),
    }
    assert_eq!(w.hub.watcher_counts(), (0, 0));
}

#[tokio::test]
async fn bad_watches_are_refused_in_order() {
    let w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(16);
    let mut spec = WatchSpec::new("a", "");
    spec.watch_id = 7;
    assert_eq!(stream.watch(spec.clone()).await, Ok(7));
    assert_eq!(stream.watch(spec).await, Err(WatchError::DuplicateId));
    assert_eq!(stream.watch(WatchSpec::new("b", "a")).await, Err(WatchError::EmptyRange));
    assert_eq!(assert_created(next(&mut rx).await), 7);
    assert!(matches!(
        next(&mut rx).await,
        Delivery::Created { watch_id: -1, error: Some(WatchError::DuplicateId), .. }
    ));
    assert!(matches!(next(&mut rx).await, Delivery::Created { watch_id: -1, error: Some(WatchError::EmptyRange), .. }));
    // Automatic ids skip the ones clients chose.
    let mut ids = Vec::new();
    for _ in 0..9 {
        ids.push(stream.watch(WatchSpec::new("x", "")).await.unwrap());
    }
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 6, 8, 9]);
}

#[tokio::test]
async fn cancel_comes_after_the_last_event() {
    let mut w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(16);
    let id = stream.watch(WatchSpec::new("k", "")).await.unwrap();
    w.write(&[("k", true)]);
    assert!(stream.cancel(id).await);
    assert!(!stream.cancel(id).await, "a second cancel is unknown");
    w.write(&[("k", true)]);
    assert_created(next(&mut rx).await);
    assert_eq!(event_revs(&next(&mut rx).await), vec![("k".into(), 2)]);
    assert!(matches!(next(&mut rx).await, Delivery::Canceled { watch_id: 0, compact_revision: 0, revision: 2 }));
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn stream_progress_waits_until_every_watch_is_synced() {
    let mut w = Writer::new();
    for _ in 0..3 {
        w.write(&[("k", true)]);
    }
    let (stream, mut rx) = w.hub.open_stream(16);
    stream.request_progress_all();
    stream.watch(WatchSpec::new("k", "").from_revision(2)).await.unwrap();
    stream.request_progress_all();
    assert_created(next(&mut rx).await);
    // The replay must come before the progress that covers it.
    assert_eq!(event_revs(&next(&mut rx).await).len(), 3);
    assert!(matches!(next(&mut rx).await, Delivery::Progress { watch_id: STREAM_PROGRESS_ID, revision: 4 }));
    stream.request_progress(0);
    assert!(matches!(next(&mut rx).await, Delivery::Progress { watch_id: 0, revision: 4 }));
}

#[tokio::test]
async fn dropping_a_stream_removes_its_watches() {
    let mut w = Writer::new();
    w.write(&[("k", true)]);
    let (stream, rx) = w.hub.open_stream(4);
    stream.watch(WatchSpec::new("k", "")).await.unwrap();
    stream.watch(WatchSpec::new("k", "").from_revision(1)).await.unwrap();
    drop(rx);
    assert_eq!(stream.watch(WatchSpec::new("k", "")).await, Err(WatchError::StreamClosed));
    w.write(&[("k", true)]);
    assert_eq!(w.hub.watcher_counts().0, 2);
    drop(stream);
    assert_eq!(w.hub.watcher_counts(), (0, 0));
}

/// One revision that deletes 100,000 keys (a range delete) reaches each
/// watcher with exactly its keys, in revision order, within the harness's
/// 5 s per delivery. Matching was quadratic in the revision's events (a scan
/// of the keys seen so far per event): this revision held the hub lock, and
/// with it the applier, for 39 s in a debug build (0.15 s now).
#[tokio::test]
async fn a_huge_revision_reaches_each_watcher_with_its_keys() {
    const KEYS: usize = 100_000;
    let mut w = Writer::new();
    let (stream, mut rx) = w.hub.open_stream(16);
    let specs = [
        WatchSpec::new("k050000", ""),
        WatchSpec::new("unrelated", ""),
        WatchSpec::new("k00100", "k00102"),
        WatchSpec::new("k09999", "\0"),
        WatchSpec::new("a", "b"),
    ];
    for spec in specs {
        stream.watch(spec).await.unwrap();
        assert_created(next(&mut rx).await);
    }
    let rev = w.revision + 1;
    let writer = std::thread::spawn(move || {
        let keys: Vec<String> = (0..KEYS).rev().map(|i| format!("k{i:06}")).collect();
        let changes: Vec<(&str, bool)> = keys.iter().map(|key| (key.as_str(), false)).collect();
        w.write(&changes);
    });

    let mut by_watch = std::collections::BTreeMap::new();
    for _ in 0..3 {
        match next(&mut rx).await {
            d @ Delivery::Events { watch_id, .. } => {
                by_watch.insert(watch_id, event_revs(&d));
            }
            other => panic!("expected events, got {other:?}"),
        }
    }
    writer.join().unwrap();
    assert!(rx.try_recv().is_err(), "the unrelated watchers got nothing");
    assert_eq!(by_watch[&0], vec![("k050000".to_string(), rev)]);
    let in_order = |from: usize, to: usize| -> Vec<(String, i64)> {
        (from..to).rev().map(|i| (format!("k{i:06}"), rev)).collect()
    };
    assert_eq!(by_watch[&2], in_order(1000, 1020), "k00100..k00102 covers k001000..k001019");
    assert_eq!(
        by_watch[&3],
        in_order(9999, KEYS).into_iter().filter(|(k, _)| k.as_str() >= "k09999").collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_stream_holds_a_bounded_number_of_watches() {
    let hub = WatchHub::new(Arc::new(MemHistory::default()), 0);
    // Room for every Created, the refusal, the cancel and the last watch.
    let (stream, mut rx) = hub.open_stream(crate::MAX_WATCHES_PER_STREAM + 4);
    for _ in 0..crate::MAX_WATCHES_PER_STREAM {
        stream.watch(WatchSpec::new("k", "")).await.unwrap();
    }
    assert_eq!(stream.watch(WatchSpec::new("k", "")).await, Err(WatchError::TooManyWatches));
    // Cancelling one makes room again.
    assert!(stream.cancel(0).await);
    stream.watch(WatchSpec::new("k", "")).await.unwrap();
    rx.close();
}
