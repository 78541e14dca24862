//! Crashes at exact points of the write path (fault points compiled in with
//! the `failpoints` feature; `cargo xtask test` runs this file with it):
//! before and after the raft log's sync, before and after applying, while
//! revoking a lease, while installing a leader's snapshot, between the
//! batches of a compaction's deletions; and a panic in
//! the applier thread, which must stop the process. After each crash the member restarts on its data: everything
//! acknowledged is there, applied exactly once.
#![cfg(feature = "failpoints")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Cluster, Keel};
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::{
    request_op, CompactionRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};

/// A keel with `FAILPOINTS` set, killed on drop.
struct Faulty {
    child: Child,
    endpoint: String,
}

impl Drop for Faulty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Faulty {
    async fn start(data_dir: &Path, port: u16, failpoints: &str) -> Faulty {
        let endpoint = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["--data-dir", &data_dir.display().to_string()])
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint, "--log-level", "warn"])
            .env("FAILPOINTS", failpoints)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let faulty = Faulty { child, endpoint };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&faulty.endpoint, "probe").await.is_err() {
            assert!(Instant::now() < deadline, "keel with {failpoints} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        faulty
    }

    /// Waits for the process to end by itself.
    fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

async fn put(endpoint: &str, key: &str) -> Result<(), tonic::Status> {
    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::connect(endpoint.to_string())
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let request = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
    tokio::time::timeout(Duration::from_secs(5), kv.put(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("put"))?
        .map(|_| ())
}

/// The version of `key` (none if absent), read linearizably.
async fn get(endpoint: &str, key: &str) -> Result<Option<i64>, tonic::Status> {
    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::connect(endpoint.to_string())
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let response = kv.range(RangeRequest { key: key.into(), ..Default::default() }).await?.into_inner();
    Ok(response.kvs.first().map(|kv| kv.version))
}

/// Writes two keys, crashes on a third at `point`, restarts without fault
/// points and returns the restarted member, after checking the two.
async fn crash_on_third_write(point: &str, marker: &str) -> (Keel, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut faulty = Faulty::start(dir.path(), port, &format!("{point}=return(crash:{marker})")).await;
    put(&faulty.endpoint, "acked/1").await.unwrap();
    put(&faulty.endpoint, "acked/2").await.unwrap();
    assert!(put(&faulty.endpoint, marker).await.is_err(), "the write that crashes is not acknowledged");
    assert!(faulty.exited_within(Duration::from_secs(10)), "{point} did not crash keel");
    drop(faulty);

    let keel = Keel::spawn(dir.path(), port, &[]);
    keel.wait_ready().await;
    for key in ["acked/1", "acked/2"] {
        assert_eq!(get(&keel.endpoint(), key).await.unwrap(), Some(1), "{key} after a crash at {point}");
    }
    (keel, dir)
}

#[tokio::test]
async fn a_crash_before_the_log_sync_loses_only_the_unacknowledged_write() {
    let (keel, _dir) = crash_on_third_write("raft-log-before-sync", "crash/before-sync").await;
    assert_eq!(get(&keel.endpoint(), "crash/before-sync").await.unwrap(), None);
}

#[tokio::test]
async fn a_write_synced_before_a_crash_is_applied_once_after_restart() {
    let (keel, _dir) = crash_on_third_write("raft-log-after-sync", "crash/after-sync").await;
    assert_eq!(get(&keel.endpoint(), "crash/after-sync").await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_crash_before_applying_replays_the_entry_once() {
    let (keel, _dir) = crash_on_third_write("apply-before", "crash/before-apply").await;
    assert_eq!(get(&keel.endpoint(), "crash/before-apply").await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_crash_after_applying_does_not_apply_twice() {
    let (keel, _dir) = crash_on_third_write("apply-after", "crash/after-apply").await;
    assert_eq!(get(&keel.endpoint(), "crash/after-apply").await.unwrap(), Some(1), "applied exactly once");
    put(&keel.endpoint(), "crash/after-apply").await.unwrap();
    assert_eq!(get(&keel.endpoint(), "crash/after-apply").await.unwrap(), Some(2));
}

#[tokio::test]
async fn a_crash_while_revoking_a_lease_revokes_it_after_restart() {
    const LEASE: i64 = 4242;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut faulty = Faulty::start(dir.path(), port, &format!("lease-revoke=return(crash:{LEASE})")).await;
    let mut leases = LeaseClient::connect(faulty.endpoint.clone()).await.unwrap();
    leases.lease_grant(LeaseGrantRequest { ttl: 600, id: LEASE }).await.unwrap();
    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::connect(faulty.endpoint.clone()).await.unwrap();
    kv.put(PutRequest { key: b"leased".to_vec(), value: b"v".to_vec(), lease: LEASE, ..Default::default() })
        .await
        .unwrap();
    let revoke =
        tokio::time::timeout(Duration::from_secs(5), leases.lease_revoke(LeaseRevokeRequest { id: LEASE })).await;
    assert!(!matches!(revoke, Ok(Ok(_))), "the revoke that crashes is not acknowledged");
    assert!(faulty.exited_within(Duration::from_secs(10)));
    drop(faulty);

    let keel = Keel::spawn(dir.path(), port, &[]);
    keel.wait_ready().await;
    // The revoke was in the log: replayed, it takes the key with it.
    assert_eq!(get(&keel.endpoint(), "leased").await.unwrap(), None);
}

/// A member behind the leader's compacted log crashes while it installs the
/// leader's snapshot (at `point`); restarted, it finishes what the crash cut
/// off (from the snapshot it spooled, or from the leader again) and ends
/// with exactly the cluster's data.
async fn crash_while_installing_a_snapshot(point: &str) {
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "50", "--snapshot-catchup-entries", "5"]).await;
    cluster.kill9(2);
    let mut kv = cluster.member(0).kv().await;
    for n in 0..200 {
        let request =
            PutRequest { key: format!("k/{n:03}").into_bytes(), value: vec![b'v'; 2000], ..Default::default() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while kv.put(request.clone()).await.is_err() {
            assert!(Instant::now() < deadline, "the two members took no write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let failpoints = format!("{point}=return(crash)");
    let mut crashing = cluster.spawn_with_env(2, &[], &[("FAILPOINTS", &failpoints)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crashing.has_exited() {
        assert!(Instant::now() < deadline, "{point} did not crash the member");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(crashing);

    cluster.restart(2).await;
    let mut behind = cluster.member(2).kv().await;
    let all = RangeRequest { key: b"k/".to_vec(), range_end: b"k0".to_vec(), serializable: true, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = behind.range(all.clone()).await.map(|r| r.into_inner().kvs.len()).unwrap_or(0);
        if found == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "after a crash at {point} the member has {found} of 200 keys");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader_view = kv.range(RangeRequest { serializable: false, ..all.clone() }).await.unwrap().into_inner();
    let follower_view = behind.range(all).await.unwrap().into_inner();
    assert_eq!(follower_view.kvs, leader_view.kvs, "the same keys, values and revisions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_midway_through_installing_a_snapshot_installs_it_again() {
    crash_while_installing_a_snapshot("snapshot-install-midway").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_installing_a_snapshot_keeps_it() {
    crash_while_installing_a_snapshot("snapshot-install-after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_installing_a_snapshot_takes_it_again() {
    crash_while_installing_a_snapshot("snapshot-install-before").await;
}

/// A dead applier used to leave the process up, its raft thread still
/// leading and taking writes that were never applied or answered.
#[tokio::test]
async fn a_panic_in_the_applier_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut faulty = Faulty::start(dir.path(), free_port(), "apply-before=return(panic:panic/apply)").await;
    put(&faulty.endpoint, "fine").await.unwrap();
    assert!(put(&faulty.endpoint, "panic/apply").await.is_err());
    assert!(faulty.exited_within(Duration::from_secs(10)), "a panicked applier left keel running");
}

/// With the applier slowed down (3 ms an entry), a burst of 10,000 writes
/// runs the committed log ahead of it; once it is 5,000 entries ahead, the
/// rest of the burst is refused at once with etcd's "too many requests"
/// instead of queueing without bound, and the member serves again once the
/// applier has caught up. (Refusals come from the burst itself: the window
/// in which a later write would be refused lasts only until the applier
/// takes the log back under 5,000 entries, too short to probe reliably.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_while_the_applier_lags_far_behind() {
    const BURST: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::start(dir.path(), free_port(), "apply-before=sleep(3)").await;
    let mut channels = Vec::new();
    // tonic queues at most 1,024 requests per channel: 16 channels let the
    // whole burst be in flight at once.
    for _ in 0..16 {
        channels
            .push(tonic::transport::Channel::from_shared(faulty.endpoint.clone()).unwrap().connect().await.unwrap());
    }
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::new(channels[i % channels.len()].clone());
        burst.spawn(async move {
            let request =
                PutRequest { key: format!("burst/{i}").into_bytes(), value: b"v".to_vec(), ..Default::default() };
            kv.put(request).await.err()
        });
    }
    let mut refused = Vec::new();
    while let Some(outcome) = burst.join_next().await {
        if let Some(status) = outcome.unwrap() {
            if status.code() == tonic::Code::ResourceExhausted {
                refused.push(status.message().to_string());
            }
        }
    }
    assert!(!refused.is_empty(), "no write was refused while the applier lagged 5,000 entries behind");
    assert!(refused.iter().all(|message| message == "etcdserver: too many requests"), "{:?}", refused.first());
    let deadline = Instant::now() + Duration::from_secs(120);
    while put(&faulty.endpoint, "after").await.is_err() {
        assert!(Instant::now() < deadline, "the member did not serve again after catching up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A compaction crashes between its batches of deletions, right after a
/// store flush made the batches before durable (as a memtable flush in the
/// middle of a compaction would): the restarted member finds the compaction
/// scheduled but not finished and already recorded as applied, so it must
/// resume it rather than replay it. Afterwards the history before the
/// compaction is gone from the store, every key keeps its last value, and
/// the store holds exactly the revisions the compaction keeps.
#[tokio::test]
async fn a_crash_between_compaction_batches_resumes_the_compaction() {
    const KEYS: usize = 100;
    const TXNS: usize = 300; // 30,000 stored revisions: three batches of deletions
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let failpoints = "compact-batch-sync=return;compact-batch=return(crash:compact-batch-2)";
    let mut faulty = Faulty::start(dir.path(), port, failpoints).await;
    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::connect(faulty.endpoint.clone()).await.unwrap();
    let mut revision = 0;
    for t in 0..TXNS {
        let success = (0..KEYS)
            .map(|k| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: format!("k/{k:03}").into_bytes(),
                    value: format!("{t}").into_bytes(),
                    ..Default::default()
                })),
            })
            .collect();
        let response = kv.txn(TxnRequest { success, ..Default::default() }).await.unwrap().into_inner();
        revision = response.header.unwrap().revision;
    }
    let compaction =
        tokio::time::timeout(Duration::from_secs(30), kv.compact(CompactionRequest { revision, physical: true })).await;
    assert!(!matches!(compaction, Ok(Ok(_))), "the compaction that crashes is not acknowledged");
    assert!(faulty.exited_within(Duration::from_secs(10)), "the second batch did not crash keel");
    drop(faulty);

    let mut keel = Keel::spawn(dir.path(), port, &[]);
    keel.wait_ready().await;
    let mut kv = keel.kv().await;
    let old = kv.range(RangeRequest { key: b"k/000".to_vec(), revision: revision - 1, ..Default::default() }).await;
    assert_eq!(old.unwrap_err().message(), "etcdserver: mvcc: required revision has been compacted");
    let again = kv.compact(CompactionRequest { revision, physical: true }).await;
    assert_eq!(again.unwrap_err().message(), "etcdserver: mvcc: required revision has been compacted");
    let all = RangeRequest { key: b"k/".to_vec(), range_end: b"k0".to_vec(), ..Default::default() };
    let now = kv.range(all).await.unwrap().into_inner();
    assert_eq!(now.kvs.len(), KEYS);
    let last = format!("{}", TXNS - 1);
    assert!(now.kvs.iter().all(|kv| kv.value == last.as_bytes() && kv.mod_revision == revision));
    assert!(keel.terminate().success());

    // What the store holds: the compaction kept one revision per key and
    // deleted the rest, the third batch's too.
    let backend = keel_mvcc::RocksBackend::open(&dir.path().join("member").join("kv")).unwrap();
    let mut stored = 0;
    keel_mvcc::Backend::scan(&backend, keel_mvcc::Keyspace::Revisions, &[], None, &mut |_, _| {
        stored += 1;
        true
    })
    .unwrap();
    assert_eq!(stored, KEYS, "revisions left in the store after the resumed compaction");
}
