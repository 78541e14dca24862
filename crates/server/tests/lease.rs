//! Leases end to end: keys die with their lease, by revoke or by expiry, and
//! a granted lease survives a restart.

mod common;

use std::time::{Duration, Instant};

use common::Keel;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use tonic::Code;

fn put(key: &str, lease: i64) -> PutRequest {
    PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() }
}

fn all() -> RangeRequest {
    RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }
}

#[tokio::test]
async fn revoke_deletes_every_attached_key_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let lease = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().into_inner();
    assert!(lease.id > 0);
    assert_eq!(lease.ttl, 60);
    kv.put(put("a", lease.id)).await.unwrap();
    kv.put(put("b", lease.id)).await.unwrap();
    kv.put(put("c", 0)).await.unwrap();
    let ttl =
        leases.lease_time_to_live(LeaseTimeToLiveRequest { id: lease.id, keys: true }).await.unwrap().into_inner();
    assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);

    let revoked = leases.lease_revoke(LeaseRevokeRequest { id: lease.id }).await.unwrap().into_inner();
    assert_eq!(revoked.header.unwrap().revision, 5, "a and b deleted together at revision 5");
    let left = kv.range(all()).await.unwrap().into_inner();
    assert_eq!(left.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"c".to_vec()]);

    let err = leases.lease_revoke(LeaseRevokeRequest { id: lease.id }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    let chosen = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 42 }).await.unwrap().into_inner();
    assert_eq!(chosen.id, 42, "a client-chosen id is kept");
    let err = leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 42 }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "etcdserver: lease already exists"));
}

#[tokio::test]
async fn an_expired_lease_takes_its_keys_and_a_live_one_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let short = leases.lease_grant(LeaseGrantRequest { ttl: 1, id: 0 }).await.unwrap().into_inner();
    assert_eq!(short.ttl, 2, "TTLs are raised to etcd's minimum (1.5 election timeouts)");
    let long = leases.lease_grant(LeaseGrantRequest { ttl: 600, id: 0 }).await.unwrap().into_inner();
    kv.put(put("short", short.id)).await.unwrap();
    kv.put(put("long", long.id)).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = kv.range(all()).await.unwrap().into_inner().kvs;
        if keys.iter().all(|kv| kv.key != b"short") {
            break;
        }
        assert!(Instant::now() < deadline, "the 2 s lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(kv);
    drop(leases);
    keel.terminate();
    let keel = Keel::start(dir.path()).await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let ttl = leases.lease_time_to_live(LeaseTimeToLiveRequest { id: long.id, keys: true }).await.unwrap().into_inner();
    assert_eq!(ttl.granted_ttl, 600);
    assert_eq!(ttl.keys, vec![b"long".to_vec()]);
    let gone = leases.lease_time_to_live(LeaseTimeToLiveRequest { id: short.id, keys: false }).await.unwrap();
    assert_eq!(gone.into_inner().ttl, -1);
}

/// The leader checkpoints remaining TTLs through raft: after a crash and
/// restart the lease resumes from where it was, not from a full TTL.
#[tokio::test]
async fn a_restarted_member_resumes_leases_from_their_checkpointed_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let flags = ["--lease-checkpoint-interval".to_string(), "1s".to_string()];
    let mut keel = Keel::spawn(dir.path(), port, &flags);
    keel.wait_ready().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let lease = leases.lease_grant(LeaseGrantRequest { ttl: 20, id: 0 }).await.unwrap().into_inner().id;
    keel.kv().await.put(put("k", lease)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    keel.kill9();

    let keel = Keel::spawn(dir.path(), port, &flags);
    keel.wait_ready().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let ttl = leases.lease_time_to_live(LeaseTimeToLiveRequest { id: lease, keys: true }).await.unwrap().into_inner();
    assert_eq!(ttl.granted_ttl, 20);
    assert_eq!(ttl.keys, vec![b"k".to_vec()]);
    // About 15 s were left at the last checkpoint, plus the 1 s election
    // grace a new leader gives; a full TTL again would be 20 or 21.
    assert!(ttl.ttl >= 12 && ttl.ttl <= 18, "resumed with {} s", ttl.ttl);
}

/// Leases that expire together are revoked in one raft entry, each in its
/// own revision with all of its keys: a watcher sees one revision of DELETEs
/// per lease.
#[tokio::test]
async fn leases_expiring_together_are_revoked_one_revision_each() {
    use futures::StreamExt;
    use keel_proto::etcdserverpb::watch_client::WatchClient;
    use keel_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};

    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let mut ids = Vec::new();
    for l in 0..5 {
        let id = leases.lease_grant(LeaseGrantRequest { ttl: 2, id: 0 }).await.unwrap().into_inner().id;
        ids.push(id);
        for k in 0..2 {
            kv.put(put(&format!("e/{l}/{k}"), id)).await.unwrap();
        }
    }
    let mut watch = WatchClient::connect(keel.endpoint()).await.unwrap();
    let create = WatchCreateRequest { key: b"e/".to_vec(), range_end: b"e0".to_vec(), ..Default::default() };
    let requests = futures::stream::iter([WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }])
        .chain(futures::stream::pending());
    let mut responses = watch.watch(requests).await.unwrap().into_inner();
    assert!(responses.message().await.unwrap().unwrap().created);

    let mut revisions: Vec<(i64, usize)> = Vec::new();
    while revisions.iter().map(|(_, n)| n).sum::<usize>() < 10 {
        let response = tokio::time::timeout(Duration::from_secs(15), responses.message())
            .await
            .expect("expiry within 15 s")
            .unwrap()
            .unwrap();
        let rev = response.events[0].kv.as_ref().unwrap().mod_revision;
        assert!(response.events.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == rev));
        revisions.push((rev, response.events.len()));
    }
    assert_eq!(revisions.len(), 5, "one revision per lease: {revisions:?}");
    assert!(revisions.iter().all(|(_, n)| *n == 2));
    assert!(revisions.windows(2).all(|w| w[1].0 == w[0].0 + 1), "consecutive revisions: {revisions:?}");
    assert!(kv.range(all()).await.unwrap().into_inner().kvs.is_empty());
}
