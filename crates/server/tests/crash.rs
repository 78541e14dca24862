//! kill -9 at a random moment loses nothing that was acknowledged, with the
//! raft log compacted often (every 100 entries) so restarts also start from
//! a compacted log.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::Keel;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest};
use parking_lot::Mutex;
use rand::Rng;

const ROUNDS: usize = 20;
const WRITERS: usize = 8;
/// Longer than any put takes on a live member (request timeout: 7 s).
const CALL_LIMIT: Duration = Duration::from_secs(15);

async fn start(dir: &std::path::Path) -> Keel {
    let flags = ["--snapshot-count", "100", "--snapshot-catchup-entries", "10"].map(String::from);
    let keel = Keel::spawn(dir, common::free_port(), &flags);
    keel.wait_ready().await;
    keel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // key -> revision it was acknowledged with, over all rounds
    let acked: Arc<Mutex<HashMap<Vec<u8>, i64>>> = Arc::default();
    let mut last_revision = 0;
    for round in 0..ROUNDS {
        let mut keel = start(dir.path()).await;
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let acked = acked.clone();
                let endpoint = keel.endpoint();
                tokio::spawn(async move {
                    // Bounded: once, a client call to the killed member stayed
                    // pending with no socket left open and no timer (seen
                    // once in eight runs; the cause is not found yet). A put
                    // that never answers was not acknowledged, which is all
                    // this test needs to know of it.
                    let connect = keel_proto::etcdserverpb::kv_client::KvClient::connect(endpoint);
                    let Ok(Ok(mut kv)) = tokio::time::timeout(CALL_LIMIT, connect).await else {
                        return;
                    };
                    for i in 0.. {
                        let key = format!("round{round:02}/writer{writer}/{i:06}").into_bytes();
                        let request = PutRequest { key: key.clone(), value: vec![b'v'; 64], ..Default::default() };
                        let Ok(answer) = tokio::time::timeout(CALL_LIMIT, kv.put(request)).await else {
                            return;
                        };
                        match answer {
                            Ok(response) => {
                                let revision = response.into_inner().header.unwrap().revision;
                                acked.lock().insert(key, revision);
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        let delay = rand::thread_rng().gen_range(20..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        keel.kill9();
        for writer in writers {
            let _ = writer.await;
        }

        let keel = start(dir.path()).await;
        let mut kv = keel.kv().await;
        let everything = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        let all =
            tokio::time::timeout(CALL_LIMIT, kv.range(everything)).await.expect("keel answers a read after restart");
        let all = all.unwrap().into_inner();
        let found: HashMap<Vec<u8>, i64> = all.kvs.iter().map(|kv| (kv.key.clone(), kv.mod_revision)).collect();
        let acked = acked.lock();
        for (key, revision) in acked.iter() {
            assert_eq!(
                found.get(key),
                Some(revision),
                "round {round}: acknowledged put of {} lost or changed after kill -9",
                String::from_utf8_lossy(key)
            );
        }
        let revision = all.header.unwrap().revision;
        assert!(revision >= last_revision, "revision went backwards after restart");
        last_revision = revision;
        assert!(!acked.is_empty() || round > 0, "the writer never got a put acknowledged");
        drop(keel);
    }
    assert!(acked.lock().len() > ROUNDS, "too few acknowledged puts to mean anything");
}

/// Three members under heavy load (fresh keys, overwritten and deleted hot
/// keys, txns) with compactions of their history in flight, and one member
/// killed -9 in each round and restarted. With the default snapshot count
/// the killed member's store holds thousands of unflushed applies (it keeps
/// no WAL of its own: the raft log is its only record) and replays them.
/// Afterwards every acknowledged put is on every member, and every member's
/// store hashes the same at the same revision: the replay applied nothing
/// twice, skipped nothing and compacted the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_under_load_and_compaction_replays_to_the_same_state() {
    use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use keel_proto::etcdserverpb::{
        compare, kv_client::KvClient, request_op, CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest,
        RequestOp, TxnRequest,
    };
    use std::sync::atomic::{AtomicBool, Ordering};

    const HEAVY_WRITERS: usize = 32;
    const HEAVY_ROUNDS: usize = 4;
    let mut cluster = common::Cluster::start(3).await;
    cluster.wait_for_quorum(0).await;
    let acked: Arc<Mutex<HashMap<Vec<u8>, i64>>> = Arc::default();
    for round in 0..HEAVY_ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let endpoints: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
        let mut tasks = Vec::new();
        for writer in 0..HEAVY_WRITERS {
            let (acked, stop, endpoint) = (acked.clone(), stop.clone(), endpoints[writer % 3].clone());
            tasks.push(tokio::spawn(async move {
                let Ok(Ok(mut kv)) = tokio::time::timeout(CALL_LIMIT, KvClient::connect(endpoint)).await else {
                    return;
                };
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let hot = format!("hot/{}", i % 8).into_bytes();
                    let call = async {
                        match i % 8 {
                            3 => kv
                                .put(PutRequest { key: hot, value: vec![b'h'; 512], ..Default::default() })
                                .await
                                .map(|_| None),
                            5 => {
                                let put = RequestOp {
                                    request: Some(request_op::Request::RequestPut(PutRequest {
                                        key: hot.clone(),
                                        value: i.to_be_bytes().to_vec(),
                                        ..Default::default()
                                    })),
                                };
                                let compare = Compare {
                                    key: hot,
                                    target: compare::CompareTarget::Version as i32,
                                    result: compare::CompareResult::Greater as i32,
                                    target_union: Some(compare::TargetUnion::Version(0)),
                                    ..Default::default()
                                };
                                let txn = TxnRequest {
                                    compare: vec![compare],
                                    success: vec![put.clone()],
                                    failure: vec![put],
                                };
                                kv.txn(txn).await.map(|_| None)
                            }
                            7 => kv
                                .delete_range(DeleteRangeRequest { key: hot, ..Default::default() })
                                .await
                                .map(|_| None),
                            _ => {
                                let key = format!("heavy{round}/writer{writer:02}/{i:06}").into_bytes();
                                let put = PutRequest { key: key.clone(), value: vec![b'v'; 128], ..Default::default() };
                                kv.put(put)
                                    .await
                                    .map(|answer| Some((key, answer.into_inner().header.unwrap().revision)))
                            }
                        }
                    };
                    match tokio::time::timeout(CALL_LIMIT, call).await {
                        Ok(Ok(Some((key, revision)))) => {
                            acked.lock().insert(key, revision);
                        }
                        Ok(Ok(None)) => {}
                        _ => return,
                    }
                }
            }));
        }
        // Compactions keep only the last few revisions, so each deletes
        // the history the writers made since the one before.
        let compactor = {
            let (stop, endpoint) = (stop.clone(), endpoints[(round + 1) % 3].clone());
            tokio::spawn(async move {
                let Ok(mut kv) = KvClient::connect(endpoint).await else { return };
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let request = RangeRequest { key: b"hot/".to_vec(), serializable: true, ..Default::default() };
                    let Ok(Ok(answer)) = tokio::time::timeout(CALL_LIMIT, kv.range(request)).await else { return };
                    let revision = answer.into_inner().header.unwrap().revision;
                    let compact = CompactionRequest { revision: revision - 5, physical: false };
                    let _ = tokio::time::timeout(CALL_LIMIT, kv.compact(compact)).await;
                }
            })
        };
        let victim = round % 3;
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(500..1500))).await;
        cluster.kill9(victim);
        // The others go on writing and compacting without it for a while.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        let _ = compactor.await;
        cluster.restart(victim).await;
        cluster.wait_for_quorum(victim).await;
    }
    assert!(acked.lock().len() > 1000, "too few acknowledged puts for heavy load: {}", acked.lock().len());

    // Settled: every member applied the same last revision. (Every call
    // below is bounded: a wedged member fails the test rather than hang it.)
    let revision_of = |i: usize| {
        let endpoint = cluster.member(i).endpoint();
        async move {
            let mut kv = KvClient::connect(endpoint).await.unwrap();
            let request = RangeRequest { key: vec![0], serializable: true, count_only: true, ..Default::default() };
            let answer = tokio::time::timeout(CALL_LIMIT, kv.range(request)).await.expect("a member answers a read");
            answer.unwrap().into_inner().header.unwrap().revision
        }
    };
    common::wait_for("every member at the same revision", Duration::from_secs(20), || async {
        let first = revision_of(0).await;
        revision_of(1).await == first && revision_of(2).await == first
    })
    .await;
    let revision = revision_of(0).await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut maintenance = MaintenanceClient::connect(cluster.member(i).endpoint()).await.unwrap();
        let answer = tokio::time::timeout(CALL_LIMIT, maintenance.hash_kv(HashKvRequest { revision }))
            .await
            .expect("a member answers HashKV")
            .unwrap()
            .into_inner();
        hashes.push((answer.hash, answer.compact_revision));

        let mut kv = KvClient::connect(cluster.member(i).endpoint()).await.unwrap();
        let request = RangeRequest {
            key: b"heavy".to_vec(),
            range_end: b"heavz".to_vec(),
            serializable: true,
            ..Default::default()
        };
        let all = tokio::time::timeout(CALL_LIMIT, kv.range(request)).await.expect("a member answers a read");
        let all = all.unwrap().into_inner();
        let found: HashMap<Vec<u8>, i64> = all.kvs.iter().map(|kv| (kv.key.clone(), kv.mod_revision)).collect();
        for (key, revision) in acked.lock().iter() {
            assert_eq!(
                found.get(key),
                Some(revision),
                "member {i}: acknowledged put of {} lost or changed",
                String::from_utf8_lossy(key)
            );
        }
    }
    assert!(hashes.iter().all(|hash| *hash == hashes[0]), "members differ at revision {revision}: {hashes:?}");
    assert!(hashes[0].1 > 0, "no compaction happened");
}
