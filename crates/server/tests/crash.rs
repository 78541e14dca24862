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
        let all = kv
            .range(RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
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
