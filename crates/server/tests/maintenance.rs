//! The Maintenance service's alarms on a real process: NOSPACE refuses the
//! writes that grow the store and nothing else, /health reports it, etcdctl
//! lists and disarms it, and it survives a restart.

mod common;

use std::time::Duration;

use common::{http_get, wait_for, Keel};
use keel_proto::etcdserverpb::alarm_request::AlarmAction;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, DeleteRangeRequest, HashRequest, PutRequest, RangeRequest, StatusRequest,
    TxnRequest,
};

fn alarm(action: AlarmAction, member_id: u64, kind: AlarmType) -> AlarmRequest {
    AlarmRequest { action: action as i32, member_id, alarm: kind as i32 }
}

async fn health(port: u16, query: &str) -> (u16, String) {
    http_get(port, &format!("/health{query}")).await.unwrap()
}

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client) is installed");
    assert!(output.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn nospace_refuses_growth_until_disarmed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    kv.put(PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() }).await.unwrap();
    let mut maintenance = MaintenanceClient::connect(keel.endpoint()).await.unwrap();
    let member_id = kv
        .range(RangeRequest { key: b"a".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .member_id;

    assert!(maintenance
        .alarm(alarm(AlarmAction::Get, 0, AlarmType::None))
        .await
        .unwrap()
        .into_inner()
        .alarms
        .is_empty());
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), "");
    let raised = maintenance.alarm(alarm(AlarmAction::Activate, member_id, AlarmType::Nospace)).await.unwrap();
    let nospace = AlarmMember { member_id, alarm: AlarmType::Nospace as i32 };
    assert_eq!(raised.into_inner().alarms, [nospace]);

    let refused = kv.put(PutRequest { key: b"b".to_vec(), value: b"2".to_vec(), ..Default::default() }).await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");
    // Reads and deletes go on, so the operator can make room.
    assert_eq!(
        kv.range(RangeRequest { key: b"a".to_vec(), ..Default::default() }).await.unwrap().into_inner().count,
        1
    );
    let txn_read = TxnRequest::default();
    kv.txn(txn_read).await.unwrap();
    kv.delete_range(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() }).await.unwrap();

    assert_eq!(health(keel.port, "").await, (503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n".to_string()));
    assert_eq!(health(keel.port, "?exclude=NOSPACE").await.0, 200);
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), format!("memberID:{member_id} alarm:NOSPACE \n"));
    let status = etcdctl(&keel.endpoint(), &["endpoint", "status", "-w", "json"]);
    assert!(status.contains(&format!("memberID:{member_id} alarm:NOSPACE ")), "{status}");

    // Raft carries it through a restart.
    keel.terminate();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    wait_for("the restarted member to lead", Duration::from_secs(10), || async {
        health(keel.port, "?exclude=NOSPACE").await.0 == 200
    })
    .await;
    assert!(kv.put(PutRequest { key: b"c".to_vec(), ..Default::default() }).await.is_err());
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "disarm"]), format!("memberID:{member_id} alarm:NOSPACE \n"));
    kv.put(PutRequest { key: b"c".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(health(keel.port, "").await.0, 200);
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), "");
}

fn random_value(bytes: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut value = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut value);
    value
}

async fn db_size_in_use(keel: &Keel) -> i64 {
    let mut maintenance = MaintenanceClient::connect(keel.endpoint()).await.unwrap();
    maintenance.status(StatusRequest {}).await.unwrap().into_inner().db_size_in_use
}

/// etcd's runbook: writes past the quota raise NOSPACE and fail while
/// reads, deletes and compactions go on; compact, defragment and disarm,
/// and writes work again.
#[tokio::test(flavor = "multi_thread")]
async fn the_quota_raises_nospace_and_etcds_runbook_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // Measure what an empty store takes, then allow 3 MiB more.
    let probe = Keel::start(&dir.path().join("probe")).await;
    let base = db_size_in_use(&probe).await;
    drop(probe);
    let quota = base + (3 << 20);
    let keel =
        Keel::spawn(&dir.path().join("d"), common::free_port(), &["--quota-backend-bytes".into(), quota.to_string()]);
    keel.wait_ready().await;
    let mut kv = keel.kv().await;
    let status = MaintenanceClient::connect(keel.endpoint()).await.unwrap().status(StatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().db_size_quota, quota);

    let mut refused = None;
    for i in 0..200 {
        let put = PutRequest {
            key: format!("k{}", i % 4).into_bytes(),
            value: random_value(100 << 10),
            ..Default::default()
        };
        if let Err(status) = kv.put(put).await {
            refused = Some((i, status));
            break;
        }
    }
    let (written, status) = refused.expect("the quota refuses writes well before 20 MiB");
    assert!(written >= 20, "refused after only {written} writes of 100 KiB under a 3 MiB margin");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "etcdserver: mvcc: database space exceeded");
    let alarms = etcdctl(&keel.endpoint(), &["alarm", "list"]);
    assert!(alarms.ends_with("alarm:NOSPACE \n"), "{alarms}");

    // Reads, deletes and compaction keep working; writes stay refused.
    let current = kv.range(RangeRequest { key: b"k0".to_vec(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(current.count, 1);
    let revision = current.header.unwrap().revision;
    assert!(kv.put(PutRequest { key: b"small".to_vec(), value: b"v".to_vec(), ..Default::default() }).await.is_err());
    kv.delete_range(DeleteRangeRequest { key: b"k3".to_vec(), ..Default::default() }).await.unwrap();
    let compacted = etcdctl(&keel.endpoint(), &["compaction", &revision.to_string()]);
    assert_eq!(compacted, format!("compacted revision {revision}\n"));
    let defrag = etcdctl(&keel.endpoint(), &["defrag"]);
    assert_eq!(defrag, format!("Finished defragmenting etcd member[{}]\n", keel.endpoint()));
    assert!(db_size_in_use(&keel).await < quota, "compaction and defragmentation gave the space back");
    assert!(kv.put(PutRequest { key: b"small".to_vec(), value: b"v".to_vec(), ..Default::default() }).await.is_err());
    etcdctl(&keel.endpoint(), &["alarm", "disarm"]);
    kv.put(PutRequest { key: b"small".to_vec(), value: b"v".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), "");
}

/// --auto-compaction-mode periodic: the leader compacts at the revision of
/// one retention ago, through raft.
#[tokio::test(flavor = "multi_thread")]
async fn periodic_auto_compaction_keeps_one_retention_of_history() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1s"].map(String::from);
    let keel = Keel::spawn(dir.path(), common::free_port(), &flags);
    keel.wait_ready().await;
    let mut kv = keel.kv().await;
    for i in 0..3 {
        kv.put(PutRequest { key: b"k".to_vec(), value: vec![i], ..Default::default() }).await.unwrap();
    }
    wait_for("an automatic compaction", Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move {
            let old = kv.range(RangeRequest { key: b"k".to_vec(), revision: 2, ..Default::default() }).await;
            matches!(old, Err(status) if status.message() == "etcdserver: mvcc: required revision has been compacted")
        }
    })
    .await;
    let now = kv.range(RangeRequest { key: b"k".to_vec(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(now.kvs[0].value, vec![2], "the newest value stays");
}

/// `etcdctl snapshot save` takes Keel's stream (chunks, then the sha256),
/// `snapshot status` reads the file, and Hash answers; all as against etcd.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_save_and_status_accept_keels_stream() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("d")).await;
    let mut kv = keel.kv().await;
    for i in 0..500u32 {
        let put = PutRequest { key: format!("key{i:04}").into_bytes(), value: random_value(300), ..Default::default() };
        kv.put(put).await.unwrap();
    }
    let file = dir.path().join("snap.db");
    let saved = etcdctl(&keel.endpoint(), &["snapshot", "save", &file.display().to_string()]);
    assert_eq!(saved, format!("Snapshot saved at {}\n", file.display()));
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(size % 512, 32, "a bbolt file of whole pages and the sha256");
    let status = etcdctl(&keel.endpoint(), &["snapshot", "status", &file.display().to_string(), "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["revision"], 501);
    assert_eq!(status["totalSize"].as_u64(), Some(size - 32));
    assert!(status["totalKey"].as_u64().unwrap() > 500);

    let mut maintenance = MaintenanceClient::connect(keel.endpoint()).await.unwrap();
    let first = maintenance.hash(HashRequest {}).await.unwrap().into_inner();
    let again = maintenance.hash(HashRequest {}).await.unwrap().into_inner();
    assert_eq!(first.hash, again.hash, "nothing changed");
    kv.put(PutRequest { key: b"more".to_vec(), ..Default::default() }).await.unwrap();
    assert_ne!(maintenance.hash(HashRequest {}).await.unwrap().into_inner().hash, first.hash);
}
