//! The oracle: files real etcd 3.4 writes, read by [`Db`], and copies written
//! by [`Writer`] that real `etcdctl` checks, restores and real etcd serves.
//!
//! Needs `etcd` and `etcdctl` (3.4) in `PATH`, as CI installs them.

use std::fs::File;
use std::io::BufWriter;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_bbolt::{Db, Writer};

/// A real etcd process, killed when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

fn require(binary: &str, version_arg: &str) {
    let found =
        Command::new(binary).env("ETCDCTL_API", "3").arg(version_arg).output().is_ok_and(|o| o.status.success());
    assert!(found, "`{binary}` (etcd 3.4) must be in PATH for this test: install etcd (CI does)");
}

/// Starts etcd named `name` on `data_dir`, which `etcdctl snapshot restore`
/// may have prepared for the same name and peer port.
fn start_etcd(dir: &Path, name: &str, data_dir: &Path, ports: (u16, u16)) -> Etcd {
    let (client, peer) = ports;
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = dir.join(format!("{name}.log"));
    let child = Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")])
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("starting etcd");
    let etcd = Etcd { child, endpoint, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctl(&etcd.endpoint, &["endpoint", "health"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy; its log:\n{}",
            std::fs::read_to_string(&etcd.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    etcd
}

fn ctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "10s"])
        .args(args)
        .output()
        .expect("running etcdctl")
}

fn ctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = ctl(endpoint, args);
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `etcdctl snapshot status -w json`: (revision, totalKey).
fn status(file: &Path) -> (u64, u64) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot status {file:?}: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (json["revision"].as_u64().unwrap(), json["totalKey"].as_u64().unwrap())
}

/// Writes everything `Db` reads from `from` into a new file `to`.
fn copy(from: &Path, to: &Path) {
    let mut db = Db::open(from).unwrap();
    let mut w = Writer::new(BufWriter::new(File::create(to).unwrap())).unwrap();
    for bucket in db.buckets().unwrap() {
        w.begin_bucket(bucket.name()).unwrap();
        for pair in db.entries(&bucket) {
            let (k, v) = pair.unwrap();
            w.put(&k, &v).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn real_etcd_snapshots_read_and_copies_restore() {
    require("etcd", "--version");
    require("etcdctl", "version");
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let etcd = start_etcd(dir.path(), "origin", &dir.path().join("origin"), ports);
    let ep = etcd.endpoint.clone();

    // Revisions 2..=8: two versions of foo, a value spanning overflow pages,
    // a deleted key, many small keys in one txn-free burst, a leased key.
    let big = "x".repeat(20_000);
    ctl_ok(&ep, &["put", "foo", "bar"]);
    ctl_ok(&ep, &["put", "foo", "baz"]);
    ctl_ok(&ep, &["put", "big", &big]);
    ctl_ok(&ep, &["put", "gone", "soon"]);
    ctl_ok(&ep, &["del", "gone"]);
    let granted = ctl_ok(&ep, &["lease", "grant", "600"]);
    // "lease 694d7b3f2d0c1a05 granted with TTL(600s)"
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    ctl_ok(&ep, &["put", "leased", "yes", "--lease", &lease]);
    ctl_ok(&ep, &["put", "last-key", "last-value"]);
    let saved = dir.path().join("saved.db");
    ctl_ok(&ep, &["snapshot", "save", saved.to_str().unwrap()]);
    drop(etcd);

    // etcd's snapshot is the bbolt file with a sha256 appended.
    assert_eq!(std::fs::metadata(&saved).unwrap().len() % 512, 32);
    let mut db = Db::open(&saved).unwrap();
    assert_eq!(db.meta().freelist, u64::MAX, "etcd 3.4 saves no freelist");
    let names: Vec<String> =
        db.buckets().unwrap().iter().map(|b| String::from_utf8_lossy(b.name()).into_owned()).collect();
    for want in
        ["alarm", "auth", "authRoles", "authUsers", "cluster", "key", "lease", "members", "members_removed", "meta"]
    {
        assert!(names.iter().any(|n| n == want), "bucket {want} missing from {names:?}");
    }
    let key = db.bucket(b"key").unwrap().unwrap();
    let revisions: Vec<(Vec<u8>, Vec<u8>)> = db.entries(&key).collect::<Result<_, _>>().unwrap();
    assert_eq!(revisions.len(), 7, "one revision per put and delete");
    let mains: Vec<u64> = revisions
        .iter()
        .map(|(k, _)| {
            // main_sub, and a trailing 't' marks a delete's tombstone.
            let tombstone = k.len() == 18 && k[17] == b't';
            assert!(k.len() == 17 || tombstone, "revision key {k:?}");
            assert_eq!(k[8], b'_');
            u64::from_be_bytes(k[..8].try_into().unwrap())
        })
        .collect();
    assert_eq!(mains, (2..=8).collect::<Vec<u64>>());
    assert_eq!(revisions.iter().filter(|(k, _)| k.len() == 18).count(), 1, "one tombstone");
    let (_, last) = revisions.last().unwrap();
    assert!(last.windows(8).any(|w| w == b"last-key"), "the last revision is last-key's");
    assert!(revisions.iter().any(|(_, v)| v.len() > 20_000), "the big value is read whole from overflow pages");
    let meta = db.bucket(b"meta").unwrap().unwrap();
    let meta: Vec<(Vec<u8>, Vec<u8>)> = db.entries(&meta).collect::<Result<_, _>>().unwrap();
    assert!(meta.iter().any(|(k, v)| k == b"consistent_index" && v.len() == 8), "{meta:?}");
    let leases = db.bucket(b"lease").unwrap().unwrap();
    assert_eq!(db.entries(&leases).count(), 1);

    // A copy written by Writer: etcdctl walks it (bbolt's Tx.Check included) and counts the same.
    let copied = dir.path().join("copied.db");
    copy(&saved, &copied);
    let original = status(&saved);
    assert_eq!(original.0, 8);
    assert_eq!(status(&copied), original);

    // Restored and served by real etcd: same keys, revision and lease.
    let restored = dir.path().join("restored");
    let ports = free_ports();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&copied)
        .arg("--data-dir")
        .arg(&restored)
        // Writer writes the bbolt file only; etcd's sha256 trailer is the snapshot stream's.
        .args(["--skip-hash-check", "--name", "copy"])
        .args(["--initial-cluster", &format!("copy=http://127.0.0.1:{}", ports.1)])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", ports.1)])
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot restore: {}", String::from_utf8_lossy(&out.stderr));
    let etcd = start_etcd(dir.path(), "copy", &restored, ports);
    let ep = etcd.endpoint.clone();
    assert_eq!(ctl_ok(&ep, &["get", "foo", "--print-value-only"]), "baz\n");
    assert_eq!(ctl_ok(&ep, &["get", "big", "--print-value-only"]).trim_end(), big);
    assert_eq!(ctl_ok(&ep, &["get", "gone"]), "");
    let json: serde_json::Value = serde_json::from_str(&ctl_ok(&ep, &["get", "foo", "-w", "json"])).unwrap();
    assert_eq!(json["header"]["revision"].as_u64(), Some(8));
    assert_eq!(json["kvs"][0]["create_revision"].as_u64(), Some(2));
    assert_eq!(json["kvs"][0]["version"].as_u64(), Some(2));
    assert!(ctl_ok(&ep, &["lease", "list"]).contains(&lease), "the lease survives");
    let history = ctl_ok(&ep, &["get", "foo", "--rev", "2", "--print-value-only"]);
    assert_eq!(history, "bar\n", "old revisions survive too");
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An `mvccpb.KeyValue` put at revision `rev` (fields 1 to 5).
fn key_value(key: &[u8], rev: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(0x0a);
    varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    for tag in [0x10, 0x18] {
        out.push(tag);
        varint(&mut out, rev);
    }
    out.extend_from_slice(&[0x20, 1, 0x2a]);
    varint(&mut out, value.len() as u64);
    out.extend_from_slice(value);
    out
}

/// A file Writer builds from scratch, too large for one branch page, with
/// values spanning overflow pages: bbolt's check passes at both fill rates,
/// and etcd restores and serves every key.
#[test]
fn a_written_file_of_a_hundred_thousand_keys_is_served_by_real_etcd() {
    require("etcd", "--version");
    require("etcdctl", "version");
    const KEYS: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let value = |i: u64| if i % 1000 == 7 { vec![b'v'; 9000] } else { format!("value-{i}").into_bytes() };
    let build = |path: &Path, fill_percent: f64| {
        let file = BufWriter::new(File::create(path).unwrap());
        let mut w = Writer::with_options(file, keel_bbolt::Options { page_size: 4096, fill_percent }).unwrap();
        for empty in ["alarm", "auth", "authRoles", "authUsers", "cluster"] {
            w.begin_bucket(empty.as_bytes()).unwrap();
        }
        w.begin_bucket(b"key").unwrap();
        for i in 0..KEYS {
            let rev = i + 2;
            let mut k = rev.to_be_bytes().to_vec();
            k.push(b'_');
            k.extend_from_slice(&0u64.to_be_bytes());
            w.put(&k, &key_value(format!("k{i:06}").as_bytes(), rev, &value(i))).unwrap();
        }
        for empty in ["lease", "members", "members_removed"] {
            w.begin_bucket(empty.as_bytes()).unwrap();
        }
        w.begin_bucket(b"meta").unwrap();
        w.put(b"consistent_index", &(KEYS + 1).to_be_bytes()).unwrap();
        w.finish().unwrap();
    };
    let half = dir.path().join("half.db");
    build(&half, 0.5);
    assert_eq!(status(&half), (KEYS + 1, KEYS + 1));
    let packed = dir.path().join("packed.db");
    build(&packed, 1.0);
    assert_eq!(status(&packed), (KEYS + 1, KEYS + 1));

    let restored = dir.path().join("restored");
    let ports = free_ports();
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&packed)
        .arg("--data-dir")
        .arg(&restored)
        .args(["--skip-hash-check", "--name", "written"])
        .args(["--initial-cluster", &format!("written={peer}"), "--initial-advertise-peer-urls", &peer])
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot restore: {}", String::from_utf8_lossy(&out.stderr));
    let etcd = start_etcd(dir.path(), "written", &restored, ports);
    let ep = etcd.endpoint.clone();
    let json: serde_json::Value =
        serde_json::from_str(&ctl_ok(&ep, &["get", "k", "--prefix", "--limit", "1", "-w", "json"])).unwrap();
    assert_eq!(json["count"].as_u64(), Some(KEYS));
    assert_eq!(json["header"]["revision"].as_u64(), Some(KEYS + 1));
    for i in [0, 7, 4242, 99_007, KEYS - 1] {
        let got = ctl_ok(&ep, &["get", &format!("k{i:06}"), "--print-value-only"]);
        assert_eq!(got.trim_end().as_bytes(), value(i), "k{i:06}");
    }
}
