//! etcd's corruption checks on real processes: one member's store is
//! altered behind raft's back while it is down; the leader's periodic check
//! raises CORRUPT for it, and with the initial check it refuses to start.

mod common;

use std::time::Duration;

use common::etcd::etcdctl_ok;
use common::{wait_for, Cluster};
use keel_mvcc::{Backend, Keyspace, RocksBackend, WriteBatch};
use keel_proto::etcdserverpb::{PutRequest, RangeRequest};
use keel_proto::mvccpb::KeyValue;
use prost::Message;

/// Changes the value stored at every revision of `key` in the stopped
/// member's store, keeping everything else: a history raft never wrote.
fn corrupt(store_dir: &std::path::Path, key: &[u8]) {
    let backend = RocksBackend::open(store_dir).unwrap();
    let mut changes = WriteBatch::new();
    backend
        .scan(Keyspace::Revisions, &[], None, &mut |k, v| {
            let mut kv = KeyValue::decode(v).unwrap();
            if kv.key == key {
                kv.value = b"not what was written".to_vec();
                changes.put(Keyspace::Revisions, k.to_vec(), kv.encode_to_vec());
            }
            true
        })
        .unwrap();
    assert!(!changes.is_empty());
    backend.write(changes).unwrap();
    backend.sync().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_with_another_history_is_found_corrupt() {
    let mut cluster = Cluster::start_with(3, &["--experimental-corrupt-check-time", "1s"]).await;
    let mut kv = cluster.member(0).kv().await;
    for i in 0..5u8 {
        kv.put(PutRequest { key: b"k".to_vec(), value: vec![i], ..Default::default() }).await.unwrap();
    }
    // Every member has applied everything before member 2 goes down.
    for i in 0..3 {
        let mut kv = cluster.member(i).kv().await;
        wait_for("member to catch up", Duration::from_secs(10), || {
            let mut kv = kv.clone();
            async move {
                let r = kv.range(RangeRequest { key: b"k".to_vec(), serializable: true, ..Default::default() }).await;
                r.is_ok_and(|r| r.into_inner().header.unwrap().revision == 6)
            }
        })
        .await;
        let _ = &mut kv;
    }
    let victim = 2;
    let victim_id = {
        let mut kv = cluster.member(victim).kv().await;
        let header = kv.range(RangeRequest { key: b"k".to_vec(), serializable: true, ..Default::default() }).await;
        header.unwrap().into_inner().header.unwrap().member_id
    };
    let store = cluster.member(victim).data_dir.join("member").join("kv");
    // Stopped cleanly, so its store holds what it applied (after kill -9
    // the store, which keeps no WAL, would only get it back from the raft
    // log at the next start, past the alteration).
    cluster.stop(victim);
    corrupt(&store, b"k");

    // With the initial check the altered member refuses to start.
    let log = cluster.member(0).data_dir.with_file_name("checked.log");
    let flags = ["--experimental-initial-corrupt-check".to_string(), format!("--log-outputs={}", log.display())];
    let mut checked = cluster.spawn(victim, &flags);
    wait_for("the checked member to exit", Duration::from_secs(20), || {
        let exited = checked.has_exited();
        async move { exited }
    })
    .await;
    drop(checked);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("found different hash values from remote peer"), "{logged}");

    // Without it, it starts, and the leader's periodic check finds it.
    cluster.restart(victim).await;
    let endpoint = cluster.member(0).endpoint();
    let expected = format!("memberID:{victim_id} alarm:CORRUPT \n");
    wait_for("the CORRUPT alarm", Duration::from_secs(20), || {
        let alarms = etcdctl_ok(&endpoint, &["alarm", "list"]);
        let found = alarms == expected;
        async move { found }
    })
    .await;
    // A corrupt cluster serves no writes.
    let refused = kv.put(PutRequest { key: b"k".to_vec(), ..Default::default() }).await.unwrap_err();
    assert_eq!(refused.message(), "etcdserver: corrupt cluster");
}
