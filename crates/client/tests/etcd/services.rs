use std::time::Duration;

use keel_client::ClientError;
use tokio_stream::StreamExt;

use crate::harness::{eventually, Etcd};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn lock_service_serializes_holders() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let first = client.lease_grant(10, 0).await.unwrap().id;
    let second = client.lease_grant(10, 0).await.unwrap().id;

    let held = client.lock("svc-lock", first).await.unwrap();
    assert!(held.key.starts_with(b"svc-lock/"), "{:?}", String::from_utf8_lossy(&held.key));

    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("svc-lock", second).await.unwrap() })
    };
    eventually("the second holder to queue", WAIT, || async {
        let queued = client
            .get_with("svc-lock/", keel_client::GetOptions::new().with_prefix().with_count_only())
            .await
            .unwrap()
            .count;
        (queued == 2).then_some(())
    })
    .await;
    assert!(!waiter.is_finished());
    client.unlock(held.key.clone()).await.unwrap();
    let next = tokio::time::timeout(WAIT, waiter).await.expect("second holder gets the lock").unwrap();
    assert_ne!(next.key, held.key);
    client.unlock(next.key).await.unwrap();
}

#[tokio::test]
async fn election_service_campaign_proclaim_observe_resign() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let lease = client.lease_grant(10, 0).await.unwrap().id;

    assert!(matches!(client.leader("svc-election").await, Err(ClientError::NoLeader)));
    let leader = client.campaign("svc-election", "a", lease).await.unwrap();
    assert_eq!(leader.name, b"svc-election");
    assert_eq!(client.leader("svc-election").await.unwrap().value, b"a");

    let mut observed = client.observe("svc-election").await.unwrap();
    let first = tokio::time::timeout(WAIT, observed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.kv.unwrap().value, b"a");

    client.proclaim(leader.clone(), "b").await.unwrap();
    let second = tokio::time::timeout(WAIT, observed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.kv.unwrap().value, b"b");

    client.resign(leader).await.unwrap();
    assert!(matches!(client.leader("svc-election").await, Err(ClientError::NoLeader)));
}

#[tokio::test]
async fn member_list_and_status() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let members = client.member_list(false).await.unwrap();
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].client_ur_ls, [etcd.endpoint()]);
    let status = client.status().await.unwrap();
    assert!(!status.version.is_empty());
    assert_eq!(status.leader, members.members[0].id);
}
