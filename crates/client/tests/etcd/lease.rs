use std::time::Duration;

use keel_client::{ClientError, PutOptions, WatchOptions};
use tokio_stream::StreamExt;

use crate::harness::{Etcd, MIN_TTL};

/// The server's shortest TTL, so expiry tests stay short.
const TTL: i64 = MIN_TTL;

#[tokio::test]
async fn keep_alive_holds_a_key_past_its_ttl_and_revoke_deletes_it() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let lease = client.lease_grant(TTL, 0).await.unwrap();
    assert_eq!(lease.ttl, TTL);
    client.put_with("/lease/kept", "v", PutOptions::new().with_lease(lease.id)).await.unwrap();

    let mut keep_alive = client.lease_keep_alive(lease.id).await.unwrap();
    assert_eq!(keep_alive.id(), lease.id);
    // The point is the passage of time: three TTLs without the key
    // expiring, while renewals keep arriving.
    let started = tokio::time::Instant::now();
    let mut renewals = 0;
    while started.elapsed() < Duration::from_secs(3 * TTL as u64) {
        let renewal = tokio::time::timeout(Duration::from_secs(2), keep_alive.next())
            .await
            .expect("a renewal within a TTL")
            .expect("keep-alive stream open")
            .unwrap();
        assert_eq!(renewal.ttl, TTL);
        renewals += 1;
    }
    assert!(renewals >= 4, "renewed about every TTL/3, got {renewals}");
    assert_eq!(client.get("/lease/kept").await.unwrap().kvs.len(), 1);
    let ttl = client.lease_time_to_live(lease.id, true).await.unwrap();
    assert!(ttl.ttl >= 0);
    assert_eq!(ttl.keys, [b"/lease/kept".to_vec()]);
    assert!(client.lease_leases().await.unwrap().leases.iter().any(|l| l.id == lease.id));

    client.lease_revoke(lease.id).await.unwrap();
    assert!(client.get("/lease/kept").await.unwrap().kvs.is_empty());
    assert_eq!(client.lease_time_to_live(lease.id, false).await.unwrap().ttl, -1);
    // The keep-alive learns that the lease is gone and ends with that.
    let last = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match keep_alive.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("keep-alive notices the revoke");
    assert!(matches!(last, Some(Err(ClientError::LeaseExpired { id })) if id == lease.id), "{last:?}");
    assert!(matches!(client.lease_revoke(lease.id).await, Err(ClientError::LeaseNotFound)));
}

#[tokio::test]
async fn without_keep_alive_the_key_expires() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let lease = client.lease_grant(TTL, 0).await.unwrap();
    let put = client.put_with("/lease/expiring", "v", PutOptions::new().with_lease(lease.id)).await.unwrap();
    let mut watcher = client
        .watch("/lease/expiring", WatchOptions::new().with_start_revision(put.header.unwrap().revision + 1))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("the key expires within a few TTLs")
        .unwrap()
        .unwrap();
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].r#type, keel_client::proto::mvccpb::event::EventType::Delete as i32);
}

#[tokio::test]
async fn keep_alive_of_an_unknown_lease_fails() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let error = client.lease_keep_alive(0x1234).await.unwrap_err();
    assert!(matches!(error, ClientError::LeaseExpired { id: 0x1234 }), "{error:?}");
    let error = client.put_with("/k", "v", PutOptions::new().with_lease(0x1234)).await.unwrap_err();
    assert!(matches!(error, ClientError::LeaseNotFound), "{error:?}");
}
