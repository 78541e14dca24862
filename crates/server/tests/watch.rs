//! The Watch service end to end against a real keel process: live events,
//! history replay, compaction, progress, fragments, slow readers, and many
//! watchers on random ranges checked against the store's history.

mod common;

use std::time::Duration;

use common::Keel;
use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    request_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RequestOp, TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use keel_proto::mvccpb::event::EventType;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// One client watch stream.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Stream {
    async fn open(keel: &Keel) -> Stream {
        let mut client = WatchClient::connect(keel.endpoint()).await.unwrap();
        let (requests, rx) = mpsc::channel(16);
        let responses = client.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
        Stream { requests, responses }
    }

    async fn send(&self, request: RequestUnion) {
        self.requests.send(WatchRequest { request_union: Some(request) }).await.unwrap();
    }

    async fn create(&mut self, create: WatchCreateRequest) -> WatchResponse {
        self.send(RequestUnion::CreateRequest(create)).await;
        let created = self.next().await;
        assert!(created.created, "expected a created response, got {created:?}");
        created
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), self.responses.message())
            .await
            .expect("a watch response within 10 s")
            .expect("stream healthy")
            .expect("stream open")
    }
}

fn watch(key: &str, range_end: &str) -> WatchCreateRequest {
    WatchCreateRequest { key: key.into(), range_end: range_end.into(), ..Default::default() }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

/// (type, key, value, mod_revision) of each event.
fn events(response: &WatchResponse) -> Vec<(EventType, String, String, i64)> {
    response
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                EventType::try_from(e.r#type).unwrap(),
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
                kv.mod_revision,
            )
        })
        .collect()
}

#[tokio::test]
async fn live_events_arrive_in_order_with_previous_values() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let mut stream = Stream::open(&keel).await;
    let created = stream.create(WatchCreateRequest { prev_kv: true, ..watch("w/", "w0") }).await;
    assert_eq!(created.watch_id, 0);
    assert_eq!(created.header.unwrap().revision, 1);

    kv.put(put("w/a", "1")).await.unwrap();
    kv.put(put("other", "x")).await.unwrap();
    kv.put(put("w/a", "2")).await.unwrap();
    kv.delete_range(DeleteRangeRequest { key: b"w/a".to_vec(), ..Default::default() }).await.unwrap();

    let first = stream.next().await;
    assert_eq!(events(&first), vec![(EventType::Put, "w/a".into(), "1".into(), 2)]);
    assert_eq!(first.header.as_ref().unwrap().revision, 2);
    assert!(first.events[0].prev_kv.is_none(), "a creation has no previous value");
    let second = stream.next().await;
    assert_eq!(events(&second), vec![(EventType::Put, "w/a".into(), "2".into(), 4)]);
    assert_eq!(second.events[0].prev_kv.as_ref().unwrap().value, b"1");
    let third = stream.next().await;
    assert_eq!(events(&third), vec![(EventType::Delete, "w/a".into(), String::new(), 5)]);
    assert_eq!(third.events[0].prev_kv.as_ref().unwrap().value, b"2");
}

#[tokio::test]
async fn history_is_replayed_then_live_events_follow_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    for i in 0..5 {
        kv.put(put(&format!("k{i}"), "v")).await.unwrap();
    }
    let mut stream = Stream::open(&keel).await;
    stream.create(WatchCreateRequest { start_revision: 3, ..watch("k", "l") }).await;
    let replay = stream.next().await;
    assert_eq!(replay.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    kv.put(put("k9", "v")).await.unwrap();
    assert_eq!(events(&stream.next().await), vec![(EventType::Put, "k9".into(), "v".into(), 7)]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compaction_point() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    for _ in 0..4 {
        kv.put(put("k", "v")).await.unwrap();
    }
    kv.compact(CompactionRequest { revision: 4, physical: true }).await.unwrap();
    let mut stream = Stream::open(&keel).await;
    stream.create(WatchCreateRequest { start_revision: 2, ..watch("k", "") }).await;
    let cancel = stream.next().await;
    assert!(cancel.canceled);
    assert_eq!(cancel.compact_revision, 4);
}

#[tokio::test]
async fn bad_requests_are_refused_as_etcd_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut stream = Stream::open(&keel).await;
    stream.send(RequestUnion::CreateRequest(watch("b", "a"))).await;
    let refused = stream.next().await;
    assert!(refused.created && refused.canceled);
    assert_eq!(refused.watch_id, -1);
    assert_eq!(refused.cancel_reason, "mvcc: watcher range is empty");

    stream.create(WatchCreateRequest { watch_id: 5, ..watch("a", "") }).await;
    stream.send(RequestUnion::CreateRequest(WatchCreateRequest { watch_id: 5, ..watch("b", "") })).await;
    let duplicate = stream.next().await;
    assert_eq!(duplicate.cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");

    stream.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 5 })).await;
    let canceled = stream.next().await;
    assert!(canceled.canceled && !canceled.created);
    assert_eq!(canceled.watch_id, 5);
}

#[tokio::test]
async fn progress_requests_report_the_current_revision() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    kv.put(put("x", "1")).await.unwrap();
    let mut stream = Stream::open(&keel).await;
    stream.create(watch("a", "")).await;
    stream.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    let progress = stream.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty() && !progress.created && !progress.canceled);
    assert_eq!(progress.header.unwrap().revision, 2);
}

#[tokio::test]
async fn periodic_progress_reaches_quiet_watches_that_asked() {
    let dir = tempfile::tempdir().unwrap();
    let keel =
        Keel::spawn(dir.path(), common::free_port(), &["--watch-progress-notify-interval".into(), "200ms".into()]);
    keel.wait_ready().await;
    let mut stream = Stream::open(&keel).await;
    let id = stream.create(WatchCreateRequest { progress_notify: true, ..watch("a", "") }).await.watch_id;
    let progress = stream.next().await;
    assert_eq!(progress.watch_id, id);
    assert!(progress.events.is_empty());
}

#[tokio::test]
async fn large_responses_are_fragmented_for_clients_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::spawn(dir.path(), common::free_port(), &["--max-request-bytes".into(), "4096".into()]);
    keel.wait_ready().await;
    let mut kv = keel.kv().await;
    // Each put is small, but a watch replaying them from history gets them
    // in one response of about 6 KiB.
    for i in 0..30 {
        kv.put(put(&format!("f/{i:02}"), &"v".repeat(200))).await.unwrap();
    }
    let mut whole = Stream::open(&keel).await;
    whole.create(WatchCreateRequest { start_revision: 1, ..watch("f/", "f0") }).await;
    let mut split = Stream::open(&keel).await;
    split.create(WatchCreateRequest { start_revision: 1, fragment: true, ..watch("f/", "f0") }).await;

    let all = whole.next().await;
    assert_eq!(all.events.len(), 30);
    assert!(!all.fragment);
    let mut parts = Vec::new();
    loop {
        let part = split.next().await;
        let last = !part.fragment;
        parts.push(part);
        if last {
            break;
        }
    }
    assert!(parts.len() > 1, "a 6 KiB response over a 4 KiB limit comes in fragments");
    let joined: Vec<_> = parts.iter().flat_map(events).collect();
    assert_eq!(joined, events(&all));
}

#[tokio::test]
async fn a_lease_revoke_is_seen_as_deletes_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let lease = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().into_inner().id;
    kv.put(PutRequest { lease, ..put("l/a", "1") }).await.unwrap();
    kv.put(PutRequest { lease, ..put("l/b", "1") }).await.unwrap();
    let mut stream = Stream::open(&keel).await;
    stream.create(watch("l/", "l0")).await;
    leases.lease_revoke(LeaseRevokeRequest { id: lease }).await.unwrap();
    let deletes = stream.next().await;
    assert_eq!(
        events(&deletes),
        vec![(EventType::Delete, "l/a".into(), String::new(), 4), (EventType::Delete, "l/b".into(), String::new(), 4)]
    );
}

/// A client that does not read while thousands of revisions go by still
/// gets every one of them, once, in order, after it starts reading.
#[tokio::test]
async fn a_reader_that_stalls_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let mut stream = Stream::open(&keel).await;
    stream.create(watch("s", "")).await;
    let big = "x".repeat(4096);
    const WRITES: i64 = 1500;
    for _ in 0..WRITES {
        kv.put(put("s", &big)).await.unwrap();
    }
    let mut revisions = Vec::new();
    while revisions.len() < WRITES as usize {
        revisions.extend(stream.next().await.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert_eq!(revisions, (2..2 + WRITES).collect::<Vec<_>>());
}

/// Writers and watchers at once; each watcher, on a random range from a
/// random revision, must see exactly what a watch over everything from
/// revision 1 says happened in its range.
#[tokio::test]
async fn random_watchers_see_exactly_the_history_of_their_range() {
    const KEYS: &[&str] = &["a", "ab", "b", "ba", "c", "d"];
    let seed: u64 = std::env::var("WATCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("WATCH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;

    let mut writers = Vec::new();
    for w in 0..3u64 {
        let mut kv = keel.kv().await;
        let mut rng = StdRng::seed_from_u64(seed ^ w);
        writers.push(tokio::spawn(async move {
            for i in 0..150 {
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                match rng.gen_range(0..10) {
                    0..=6 => drop(kv.put(put(key, &format!("{w}-{i}"))).await.unwrap()),
                    7..=8 => drop(
                        kv.delete_range(DeleteRangeRequest { key: key.into(), ..Default::default() }).await.unwrap(),
                    ),
                    _ => {
                        let missing = Compare {
                            result: CompareResult::Equal as i32,
                            target: CompareTarget::Version as i32,
                            key: key.into(),
                            target_union: Some(TargetUnion::Version(0)),
                            ..Default::default()
                        };
                        let create = RequestOp { request: Some(request_op::Request::RequestPut(put(key, "new"))) };
                        let other = RequestOp { request: Some(request_op::Request::RequestPut(put("z", "t"))) };
                        let txn = TxnRequest { compare: vec![missing], success: vec![create, other], failure: vec![] };
                        kv.txn(txn).await.unwrap();
                    }
                }
            }
        }));
    }
    let mut watchers = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        let start = rng.gen_range(
            1..=keel
                .kv()
                .await
                .range(keel_proto::etcdserverpb::RangeRequest {
                    key: b"a".to_vec(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .header
                .unwrap()
                .revision
                + 1,
        );
        let (key, end) = {
            let a = KEYS[rng.gen_range(0..KEYS.len())];
            let b = KEYS[rng.gen_range(0..KEYS.len())];
            match rng.gen_range(0..3) {
                0 => (a.to_string(), String::new()),
                1 => (a.to_string(), "\0".to_string()),
                _ => (a.min(b).to_string(), format!("{}\0", a.max(b))),
            }
        };
        let mut stream = Stream::open(&keel).await;
        stream.create(WatchCreateRequest { start_revision: start, ..watch(&key, &end) }).await;
        watchers.push((key, end, start, stream));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut kv = keel.kv().await;
    let last = kv.put(put("end", "")).await.unwrap().into_inner().header.unwrap().revision;

    let mut everything = Stream::open(&keel).await;
    everything.create(WatchCreateRequest { start_revision: 1, ..watch("\0", "\0") }).await;
    let mut history = Vec::new();
    while history.last().is_none_or(|e: &(EventType, String, String, i64)| e.3 < last) {
        history.extend(events(&everything.next().await));
    }
    for (key, end, start, mut stream) in watchers {
        let within = |k: &str| match end.as_str() {
            "" => k == key,
            "\0" => k >= key.as_str(),
            end => k >= key.as_str() && k < end,
        };
        let want: Vec<_> = history.iter().filter(|e| e.3 >= start && within(&e.1)).cloned().collect();
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.extend(events(&stream.next().await));
        }
        assert_eq!(got, want, "watch [{key:?}, {end:?}) from {start} (seed {seed})");
    }
}
