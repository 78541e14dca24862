//! Moving a live etcd cluster to Keel and back, with real etcd 3.4: the
//! walk-through of docs/migrate-from-etcd.md. Every key keeps its create
//! and mod revisions and version, leases come along, and `endpoint hashkv`
//! agrees at the same revision on both sides.

mod common;

use std::path::{Path, PathBuf};

use common::etcd::{etcdctl, etcdctl_ok, require_etcd, start_etcd_cluster, Plan};
use common::Keel;

/// `endpoint hashkv --rev` of the first endpoint: (hash, compact revision).
fn hashkv(endpoint: &str, rev: i64) -> (u64, i64) {
    let out = etcdctl_ok(endpoint, &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hash = &json[0]["HashKV"];
    (hash["hash"].as_u64().unwrap(), hash["compact_revision"].as_i64().unwrap_or(0))
}

/// Every key with its revisions and version, and the store revision.
fn all_keys(endpoint: &str) -> (i64, Vec<serde_json::Value>) {
    let out = etcdctl_ok(endpoint, &["get", "", "--prefix", "-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let revision = json["header"]["revision"].as_i64().unwrap();
    let kvs = json["kvs"].as_array().cloned().unwrap_or_default();
    (revision, kvs)
}

fn lease_ids(endpoint: &str) -> Vec<String> {
    let out = etcdctl_ok(endpoint, &["lease", "list"]);
    let mut ids: Vec<String> = out.lines().skip(1).map(|l| l.trim().to_string()).collect();
    ids.sort();
    ids
}

fn restore(snapshot: &Path, plan: &Plan, i: usize, data_dir: &Path) {
    let mut args = vec!["snapshot".to_string(), "restore".to_string(), snapshot.display().to_string()];
    args.extend(plan.restore_flags(i, data_dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    etcdctl_ok(&plan.client_url(i), &args);
}

fn keel_member(plan: &Plan, i: usize, data_dir: &Path, extra: &[String]) -> Keel {
    let mut flags = plan.keel_flags(i);
    flags.extend(extra.iter().cloned());
    Keel::spawn(data_dir, plan.client_ports[i], &flags)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_etcd_cluster_moves_to_keel_and_back_with_its_revisions() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| -> PathBuf { dir.path().join(name) };

    // 1. A live three-member etcd cluster with history, deletes, a
    //    compaction and a lease.
    let etcd_plan = Plan::new(3, "etcd-cluster");
    let etcd_dirs: Vec<PathBuf> = (0..3).map(|i| path(&format!("etcd-{i}"))).collect();
    let etcd = start_etcd_cluster(&etcd_plan, &etcd_dirs, dir.path());
    let e = etcd_plan.endpoints();
    for (k, v) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")] {
        etcdctl_ok(&e, &["put", k, v]);
    }
    etcdctl_ok(&e, &["del", "b"]);
    etcdctl_ok(&e, &["compaction", "3"]);
    let lease = etcdctl_ok(&e, &["lease", "grant", "3600"]);
    let lease_id = lease.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(&e, &["put", "leased", "x", "--lease", &lease_id]);
    etcdctl_ok(&e, &["put", "a", "3"]);
    let (etcd_rev, etcd_keys) = all_keys(&e);
    let etcd_hash = hashkv(&etcd.first().unwrap().endpoint, etcd_rev);

    // 2. Back it up and stop it.
    let snapshot = path("etcd.db");
    let saved = etcdctl_ok(&etcd_plan.client_url(0), &["snapshot", "save", &snapshot.display().to_string()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    for member in etcd {
        member.stop();
    }

    // 3. Three Keel members, each importing the snapshot.
    let keel_plan = Plan::new(3, "keel-cluster");
    let keel_dirs: Vec<PathBuf> = (0..3).map(|i| path(&format!("keel-{i}"))).collect();
    let import = ["--import-etcd-snapshot".to_string(), snapshot.display().to_string()];
    let keels: Vec<Keel> = (0..3).map(|i| keel_member(&keel_plan, i, &keel_dirs[i], &import)).collect();
    for keel in &keels {
        keel.wait_ready().await;
    }
    let k = keel_plan.endpoints();
    let (keel_rev, keel_keys) = all_keys(&k);
    assert_eq!(keel_rev, etcd_rev, "the revision carries over");
    assert_eq!(keel_keys, etcd_keys, "keys with create and mod revisions and versions");
    for keel in &keels {
        assert_eq!(hashkv(&keel.endpoint(), etcd_rev), etcd_hash, "HashKV on {}", keel.endpoint());
    }
    assert_eq!(lease_ids(&k), vec![lease_id.clone()]);
    let compacted = etcdctl(&k, &["get", "a", "--rev=2"]);
    assert!(String::from_utf8_lossy(&compacted.stderr).contains("required revision has been compacted"));
    // Keel goes on from there: new writes after the imported revision.
    etcdctl_ok(&k, &["put", "after", "keel"]);
    let (rev_after, keel_keys_after) = all_keys(&k);
    assert_eq!(rev_after, etcd_rev + 1);

    // 4. And back: a Keel snapshot restored by etcdctl into a new etcd cluster.
    let keel_snapshot = path("keel.db");
    let saved = etcdctl_ok(&keel_plan.client_url(1), &["snapshot", "save", &keel_snapshot.display().to_string()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    let status = etcdctl_ok(&k, &["snapshot", "status", &keel_snapshot.display().to_string(), "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["revision"].as_i64(), Some(rev_after));
    let keel_hash = hashkv(&keel_plan.client_url(0), rev_after);
    drop(keels);

    let back_plan = Plan::new(3, "etcd-again");
    let back_dirs: Vec<PathBuf> = (0..3).map(|i| path(&format!("etcd-again-{i}"))).collect();
    for (i, data_dir) in back_dirs.iter().enumerate() {
        restore(&keel_snapshot, &back_plan, i, data_dir);
    }
    let etcd_again = start_etcd_cluster(&back_plan, &back_dirs, dir.path());
    let (rev_again, keys_again) = all_keys(&back_plan.endpoints());
    assert_eq!(rev_again, rev_after);
    assert_eq!(keys_again, keel_keys_after);
    for member in &etcd_again {
        assert_eq!(hashkv(&member.endpoint, rev_after), keel_hash, "HashKV on etcd {}", member.endpoint);
    }
    assert_eq!(lease_ids(&back_plan.endpoints()), vec![lease_id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn keel_starts_on_a_data_dir_etcdctl_restored() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "restored");
    let source = dir.path().join("source");
    let keel = keel_member(&plan, 0, &source, &[]);
    keel.wait_ready().await;
    for (k, v) in [("x", "1"), ("x", "2"), ("y", "1")] {
        etcdctl_ok(&keel.endpoint(), &["put", k, v]);
    }
    let (rev, keys) = all_keys(&keel.endpoint());
    let hash = hashkv(&keel.endpoint(), rev);
    let snapshot = dir.path().join("snap.db");
    etcdctl_ok(&keel.endpoint(), &["snapshot", "save", &snapshot.display().to_string()]);
    drop(keel);

    let restored = dir.path().join("restored");
    restore(&snapshot, &plan, 0, &restored);
    assert!(restored.join("member").join("snap").join("db").is_file());
    let keel = keel_member(&plan, 0, &restored, &[]);
    keel.wait_ready().await;
    assert_eq!(all_keys(&keel.endpoint()), (rev, keys));
    assert_eq!(hashkv(&keel.endpoint(), rev), hash);
    assert!(restored.join("member").join("snap").join("db").is_file(), "etcd's files stay for the way back");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_snapshots_are_refused_and_leave_nothing_behind() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "bad");
    let source = dir.path().join("source");
    let keel = keel_member(&plan, 0, &source, &[]);
    keel.wait_ready().await;
    etcdctl_ok(&keel.endpoint(), &["put", "k", "v"]);
    let snapshot = dir.path().join("snap.db");
    etcdctl_ok(&keel.endpoint(), &["snapshot", "save", &snapshot.display().to_string()]);
    drop(keel);

    let mut bytes = std::fs::read(&snapshot).unwrap();
    bytes[4096 + 100] ^= 0xff;
    let tampered = dir.path().join("tampered.db");
    std::fs::write(&tampered, &bytes).unwrap();
    let not_bbolt = dir.path().join("text.db");
    std::fs::write(&not_bbolt, "just some text\n").unwrap();

    let run = |file: &Path, data_dir: &Path| {
        let output = common::keel_command()
            .stderr(std::process::Stdio::piped())
            .args(["--data-dir", &data_dir.display().to_string(), "--listen-client-urls"])
            .arg(plan.client_url(0))
            .args(["--advertise-client-urls", &plan.client_url(0)])
            .args(["--import-etcd-snapshot", &file.display().to_string()])
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let fresh = dir.path().join("fresh");
    let err = run(&tampered, &fresh);
    assert!(err.contains("expected sha256 ["), "{err}");
    assert!(!fresh.join("member").join("kv").exists());
    let err = run(&not_bbolt, &fresh);
    assert!(err.contains("snapshot missing hash"), "{err}");
    assert!(!fresh.join("member").join("kv").exists());
    // An existing data dir is never overwritten.
    let err = run(&snapshot, &source);
    assert!(err.contains("exists"), "{err}");
}
