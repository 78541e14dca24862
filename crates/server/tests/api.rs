//! The keel binary end to end over gRPC: etcd's answers, etcd's errors, and a
//! graceful stop that keeps everything.

mod common;

use common::Keel;
use keel_proto::etcdserverpb::request_op::Request;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest};
use tonic::Code;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

#[tokio::test]
async fn put_get_and_header_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    let response = kv.put(put("foo", "bar")).await.unwrap().into_inner();
    let header = response.header.unwrap();
    assert_eq!(header.revision, 2, "the first write of an empty store is revision 2");
    assert_eq!(header.raft_term, 2);
    assert_eq!(header.cluster_id, 0xcdf818194e3a8c32, "etcd's default cluster id");
    assert_eq!(header.member_id, 0x8e9e05c52164694d, "etcd's default member id");
    let got = kv.range(RangeRequest { key: b"foo".to_vec(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(got.kvs[0].value, b"bar");
    assert_eq!((got.kvs[0].create_revision, got.kvs[0].mod_revision, got.kvs[0].version), (2, 2, 1));

    let mut maintenance =
        keel_proto::etcdserverpb::maintenance_client::MaintenanceClient::connect(keel.endpoint()).await.unwrap();
    let status = maintenance.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.version, "3.6.0");
    assert_eq!(status.leader, 0x8e9e05c52164694d);
    assert!(status.raft_applied_index >= 2 && status.raft_index >= status.raft_applied_index);
}

#[tokio::test]
async fn bad_requests_get_etcd_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;

    let err = kv.put(put("", "v")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: key is not provided"));

    let err = kv.put(PutRequest { lease: 1234, ..put("k", "v") }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: requested lease not found"));

    let too_big = "x".repeat(1536 * 1024 + 1);
    let err = kv.put(put("k", &too_big)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: request is too large"));

    let ops = (0..129)
        .map(|i| RequestOp { request: Some(Request::RequestPut(put(&format!("k{i}"), "v"))) })
        .collect();
    let err = kv.txn(TxnRequest { compare: vec![], success: ops, failure: vec![] }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: too many operations in txn request"));

    let dup = vec![
        RequestOp { request: Some(Request::RequestPut(put("a", "1"))) },
        RequestOp { request: Some(Request::RequestPut(put("a", "2"))) },
    ];
    let err = kv.txn(TxnRequest { compare: vec![], success: dup, failure: vec![] }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: duplicate key given in txn request"));

    let err = kv.range(RangeRequest { key: b"k".to_vec(), revision: 100, ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"));

    let all = kv.range(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).await.unwrap().into_inner();
    assert!(all.kvs.is_empty(), "a refused request wrote something");
    assert_eq!(all.header.unwrap().revision, 1);
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = Keel::start(dir.path()).await;
    keel.kv().await.put(put("kept", "yes")).await.unwrap();
    let status = keel.terminate();
    assert!(status.success(), "keel exited with {status} on SIGTERM");

    let keel = Keel::start(dir.path()).await;
    let got = keel.kv().await.range(RangeRequest { key: b"kept".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(got.into_inner().kvs[0].value, b"yes");
}
