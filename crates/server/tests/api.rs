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

    let ops = (0..129).map(|i| RequestOp { request: Some(Request::RequestPut(put(&format!("k{i}"), "v"))) }).collect();
    let err = kv.txn(TxnRequest { compare: vec![], success: ops, failure: vec![] }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: too many operations in txn request"));

    let dup = vec![
        RequestOp { request: Some(Request::RequestPut(put("a", "1"))) },
        RequestOp { request: Some(Request::RequestPut(put("a", "2"))) },
    ];
    let err = kv.txn(TxnRequest { compare: vec![], success: dup, failure: vec![] }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: duplicate key given in txn request"));

    let err = kv.range(RangeRequest { key: b"k".to_vec(), revision: 100, ..Default::default() }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
    );

    let all =
        kv.range(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).await.unwrap().into_inner();
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

/// A data dir remembers whose it is: restarted with other bootstrap flags, the
/// member keeps its ids (as etcd ignores --initial-* once bootstrapped), and
/// lists itself with the name and client URL it published.
#[tokio::test]
async fn identity_and_membership_survive_a_restart_with_other_flags() {
    use keel_proto::etcdserverpb::cluster_client::ClusterClient;
    use keel_proto::etcdserverpb::MemberListRequest;

    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let token = |t: &str| vec!["--initial-cluster-token".to_string(), t.to_string()];
    let mut keel = Keel::spawn(dir.path(), port, &token("first"));
    keel.wait_ready().await;
    let first = keel.kv().await.put(put("k", "v")).await.unwrap().into_inner().header.unwrap();
    assert_ne!(first.member_id, 0x8e9e05c52164694d, "the token is part of the member id");
    keel.terminate();

    let keel = Keel::spawn(dir.path(), port, &token("second"));
    keel.wait_ready().await;
    let mut members = ClusterClient::connect(keel.endpoint()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let list = loop {
        let list = members.member_list(MemberListRequest { linearizable: true }).await.unwrap().into_inner();
        if list.members.iter().all(|m| !m.client_ur_ls.is_empty()) {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "never published: {list:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let header = list.header.unwrap();
    assert_eq!((header.member_id, header.cluster_id), (first.member_id, first.cluster_id));
    assert_eq!(list.members.len(), 1);
    assert_eq!(list.members[0].id, first.member_id);
    assert_eq!(list.members[0].name, "default");
    assert_eq!(list.members[0].peer_ur_ls, vec!["http://localhost:2380".to_string()]);
    assert_eq!(list.members[0].client_ur_ls, vec![keel.endpoint()]);
}

/// --heartbeat-interval and --election-timeout set raft's timing with etcd's
/// checks, and the shortest lease follows from them (1.5 election timeouts).
#[tokio::test]
async fn raft_timing_flags_are_checked_and_shape_lease_ttls() {
    use keel_proto::etcdserverpb::lease_client::LeaseClient;
    use keel_proto::etcdserverpb::LeaseGrantRequest;

    let dir = tempfile::tempdir().unwrap();
    let timing = |heartbeat: &str, election: &str| {
        ["--heartbeat-interval", heartbeat, "--election-timeout", election].map(String::from).to_vec()
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data-dir")
        .arg(dir.path().join("refused"))
        .args(timing("100", "400"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("should be at least as 5 times as --heartbeat-interval"), "{stderr}");

    let keel = Keel::spawn(dir.path(), common::free_port(), &timing("50", "500"));
    keel.wait_ready().await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let granted = leases.lease_grant(LeaseGrantRequest { ttl: 1, id: 0 }).await.unwrap().into_inner();
    assert_eq!(granted.ttl, 1, "1.5 x 500 ms rounds up to 1 s, not etcd's default 2 s");
}
