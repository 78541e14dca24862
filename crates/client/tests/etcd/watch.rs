use std::time::Duration;

use keel_client::proto::etcdserverpb::WatchResponse;
use keel_client::proto::mvccpb::event::EventType;
use keel_client::{Client, ClientError, ClientOptions, WatchOptions, Watcher};
use tokio_stream::StreamExt;

use crate::harness::{Etcd, Proxy};

/// (type, key, mod revision) of one event.
type Seen = (EventType, String, i64);

fn seen(response: &WatchResponse) -> Vec<Seen> {
    response
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("event kv");
            let kind = if event.r#type == EventType::Delete as i32 { EventType::Delete } else { EventType::Put };
            (kind, String::from_utf8_lossy(&kv.key).into_owned(), kv.mod_revision)
        })
        .collect()
}

/// Reads events until `count` have arrived.
async fn next_events(watcher: &mut Watcher, count: usize) -> Vec<Seen> {
    let mut events = Vec::new();
    while events.len() < count {
        let response = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .unwrap_or_else(|_| panic!("timed out with {events:?}"))
            .expect("watch stream open")
            .unwrap();
        events.extend(seen(&response));
    }
    events
}

#[tokio::test]
async fn watch_sees_puts_and_deletes_in_order() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let mut watcher = client.watch("/w/", WatchOptions::new().with_prefix().with_prev_kv()).await.unwrap();

    let a = client.put("/w/a", "1").await.unwrap().header.unwrap().revision;
    let b = client.put("/w/b", "2").await.unwrap().header.unwrap().revision;
    client.put("/elsewhere", "x").await.unwrap();
    let del = client.delete("/w/a").await.unwrap().header.unwrap().revision;
    let a2 = client.put("/w/a", "3").await.unwrap().header.unwrap().revision;

    let events = next_events(&mut watcher, 4).await;
    assert_eq!(
        events,
        [
            (EventType::Put, "/w/a".into(), a),
            (EventType::Put, "/w/b".into(), b),
            (EventType::Delete, "/w/a".into(), del),
            (EventType::Put, "/w/a".into(), a2),
        ]
    );
    assert!(watcher.created_revision() < a);
}

#[tokio::test]
async fn watch_replays_from_a_past_revision_with_prev_kv_and_filters() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let first = client.put("/h", "1").await.unwrap().header.unwrap().revision;
    client.put("/h", "2").await.unwrap();
    client.delete("/h").await.unwrap();

    let mut puts_only = client
        .watch("/h", WatchOptions::new().with_start_revision(first).with_prev_kv().with_no_delete())
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), puts_only.next()).await.unwrap().unwrap().unwrap();
    let values: Vec<_> = response.events.iter().map(|e| e.kv.as_ref().unwrap().value.clone()).collect();
    assert_eq!(values, [b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(response.events[1].prev_kv.as_ref().unwrap().value, b"1");
}

#[tokio::test]
async fn watch_resumes_after_a_reconnect_without_gap_or_duplicate() {
    let etcd = Etcd::start().await;
    let writer = etcd.client().await;
    let mut proxy = Proxy::start(etcd.addr());
    let client = Client::connect([proxy.endpoint()], ClientOptions::default()).await.unwrap();
    let mut watcher = client.watch("/r/", WatchOptions::new().with_prefix()).await.unwrap();

    let mut expected = Vec::new();
    let rev = writer.put("/r/1", "a").await.unwrap().header.unwrap().revision;
    expected.push((EventType::Put, "/r/1".to_string(), rev));
    assert_eq!(next_events(&mut watcher, 1).await, expected);

    // Cut the watcher off; these changes happen while it cannot see them.
    proxy.stop().await;
    for key in ["/r/2", "/r/3"] {
        let rev = writer.put(key, "b").await.unwrap().header.unwrap().revision;
        expected.push((EventType::Put, key.to_string(), rev));
    }
    let rev = writer.delete("/r/1").await.unwrap().header.unwrap().revision;
    expected.push((EventType::Delete, "/r/1".to_string(), rev));

    proxy.resume();
    let rev = writer.put("/r/4", "c").await.unwrap().header.unwrap().revision;
    expected.push((EventType::Put, "/r/4".to_string(), rev));

    let mut events = vec![expected[0].clone()];
    events.extend(next_events(&mut watcher, expected.len() - 1).await);
    assert_eq!(events, expected);
}

/// The stream breaks, and the member it comes back to answers nothing for
/// longer than the request timeout (frozen, or catching up): the watch's
/// re-creation times out and is tried again until the member answers,
/// instead of ending the watch with the timeout. Nothing is missed.
#[tokio::test]
async fn a_re_creation_that_times_out_is_retried() {
    let etcd = Etcd::start().await;
    let writer = etcd.client().await;
    let mut proxy = Proxy::start(etcd.addr());
    let options = ClientOptions { request_timeout: Some(Duration::from_millis(500)), ..ClientOptions::default() };
    let client = Client::connect([proxy.endpoint()], options).await.unwrap();
    let mut watcher = client.watch("/t/", WatchOptions::new().with_prefix()).await.unwrap();
    let first = writer.put("/t/1", "a").await.unwrap().header.unwrap().revision;
    assert_eq!(next_events(&mut watcher, 1).await, [(EventType::Put, "/t/1".to_string(), first)]);

    proxy.stop().await;
    let missed = writer.put("/t/2", "b").await.unwrap().header.unwrap().revision;
    etcd.pause();
    proxy.resume();
    // Several request timeouts go by while the re-created watch gets no answer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.unpause();
    let after = writer.put("/t/3", "c").await.unwrap().header.unwrap().revision;
    assert_eq!(
        next_events(&mut watcher, 2).await,
        [(EventType::Put, "/t/2".to_string(), missed), (EventType::Put, "/t/3".to_string(), after)]
    );
}

#[tokio::test]
async fn a_progress_request_is_answered_with_the_current_revision() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let mut watcher = client.watch("/p/", WatchOptions::new().with_prefix()).await.unwrap();
    let rev = client.put("/elsewhere", "x").await.unwrap().header.unwrap().revision;
    // etcd answers with watch id -1: for every watch of the stream.
    watcher.request_progress().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("no answer to the progress request")
        .expect("watch stream open")
        .unwrap();
    assert!(response.events.is_empty(), "{response:?}");
    assert!(response.header.unwrap().revision >= rev);

    // An event after it still arrives.
    let later = client.put("/p/a", "1").await.unwrap().header.unwrap().revision;
    assert_eq!(next_events(&mut watcher, 1).await, [(EventType::Put, "/p/a".to_string(), later)]);

    watcher.cancel().await;
    while watcher.next().await.is_some() {}
    assert!(watcher.request_progress().is_err(), "a progress request on an ended watch");
}

#[tokio::test]
async fn canceled_watch_ends_its_stream() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let mut watcher = client.watch("/x", WatchOptions::new()).await.unwrap();
    client.put("/x", "1").await.unwrap();
    assert_eq!(next_events(&mut watcher, 1).await.len(), 1);
    watcher.cancel().await;
    client.put("/x", "2").await.unwrap();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(5), watcher.collect::<Vec<_>>()).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn watch_below_the_compaction_revision_fails_as_compacted() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let first = client.put("/old", "1").await.unwrap().header.unwrap().revision;
    let last = client.put("/old", "2").await.unwrap().header.unwrap().revision;
    client.compact(last, true).await.unwrap();

    let outcome = match client.watch("/old", WatchOptions::new().with_start_revision(first)).await {
        Err(e) => e,
        Ok(mut watcher) => tokio::time::timeout(Duration::from_secs(5), watcher.next())
            .await
            .unwrap()
            .expect("an error before the end")
            .unwrap_err(),
    };
    assert!(matches!(outcome, ClientError::Compacted { compact_revision: Some(r) } if r == last), "{outcome:?}");
}
