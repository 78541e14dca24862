use std::io::{Cursor, Write};
use std::path::Path;

use keel_bbolt::Db;
use keel_mvcc::{KvStore, LeaseRecord, NoLeases, WriteRequest};
use keel_proto::authpb::{Role, User};
use keel_proto::etcdserverpb::{
    AlarmMember, AlarmResponse, AlarmType, CompactionRequest, DeleteRangeRequest, Member, PutRequest, RangeRequest,
};
use keel_proto::keelpb::AuthStore;
use prost::Message;

use crate::layout::{self, EtcdLease, EtcdMember};
use crate::{import_file, ImportOptions, SnapshotError, SnapshotFile, TRAILER_LEN};

fn put(store: &KvStore, index: u64, key: &str, value: &str, lease: i64) {
    let req = PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
    store.apply(index, WriteRequest::Put(&req), &AnyLease).unwrap();
}

struct AnyLease;
impl keel_mvcc::LeaseLookup for AnyLease {
    fn exists(&self, _: i64) -> bool {
        true
    }
}

/// A store with history, a compaction, a deletion, leases, an alarm, auth
/// and a removed member: everything the format carries.
fn populated() -> KvStore {
    let store = KvStore::in_memory();
    store
        .bootstrap(
            keel_mvcc::Identity { member_id: 0xabc, cluster_id: 7 },
            &[Member { id: 0xabc, name: "one".into(), peer_ur_ls: vec!["http://p:2380".into()], ..Default::default() }],
        )
        .unwrap();
    store.apply_lease_grant(1, LeaseRecord { id: 0x1234, ttl: 60, remaining_ttl: 0 }).unwrap();
    store.apply_lease_grant(2, LeaseRecord { id: 0x99, ttl: 30, remaining_ttl: 12 }).unwrap();
    put(&store, 3, "a", "1", 0);
    put(&store, 4, "a", "2", 0);
    put(&store, 5, "b", "x", 0x1234);
    put(&store, 6, "c", "y", 0);
    store.apply(7, WriteRequest::Compact(&CompactionRequest { revision: 3, physical: true }), &NoLeases).unwrap();
    store
        .apply(8, WriteRequest::DeleteRange(&DeleteRangeRequest { key: "c".into(), ..Default::default() }), &NoLeases)
        .unwrap();
    let alarm = AlarmMember { member_id: 0xabc, alarm: AlarmType::Nospace as i32 };
    store.apply_alarms(9, &AlarmResponse { header: None, alarms: vec![alarm] }.encode_to_vec()).unwrap();
    let auth = AuthStore {
        enabled: true,
        revision: 5,
        users: vec![User {
            name: b"root".to_vec(),
            password: b"$2a$10$hash".to_vec(),
            roles: vec!["root".into()],
            ..Default::default()
        }],
        roles: vec![Role { name: b"root".to_vec(), key_permission: vec![] }],
    };
    store.apply_auth(10, &auth.encode_to_vec()).unwrap();
    store.apply_membership(11, &[], &[0xdef], Vec::new()).unwrap();
    store
}

fn saved(store: &KvStore, dir: &Path) -> std::path::PathBuf {
    let checkpoint = store.checkpoint().unwrap();
    let file = SnapshotFile::create(&checkpoint, dir).unwrap();
    let path = dir.join("snap.db");
    let mut out = std::fs::File::create(&path).unwrap();
    let chunks: Vec<_> = file.stream(1000).collect::<Result<_, _>>().unwrap();
    assert!(chunks.iter().all(|c| c.blob.len() <= 1000));
    assert_eq!(chunks.last().unwrap().remaining_bytes, 0);
    assert_eq!(chunks.last().unwrap().blob.len(), TRAILER_LEN);
    for c in &chunks {
        out.write_all(&c.blob).unwrap();
    }
    path
}

#[test]
fn a_store_is_laid_out_in_etcds_buckets() {
    let store = populated();
    let checkpoint = store.checkpoint().unwrap();
    let (out, summary) = crate::write_db(&checkpoint, Cursor::new(Vec::new())).unwrap();
    let bytes = out.into_inner();
    assert_eq!(summary.size, bytes.len() as u64);
    assert_eq!(bytes.len() % 512, 0);
    assert_eq!(summary.revision, 6, "the delete is the newest revision");
    let mut db = Db::from_reader(Cursor::new(bytes)).unwrap();
    let names: Vec<Vec<u8>> = db.buckets().unwrap().iter().map(|b| b.name().to_vec()).collect();
    assert_eq!(names, layout::BUCKETS.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
    let mut entries = |name: &[u8]| {
        let bucket = db.bucket(name).unwrap().unwrap();
        db.entries(&bucket).collect::<Result<Vec<_>, _>>().unwrap()
    };
    let leases: Vec<EtcdLease> =
        entries(layout::LEASE).iter().map(|(_, v)| EtcdLease::decode(v.as_slice()).unwrap()).collect();
    assert_eq!(
        leases,
        vec![EtcdLease { id: 0x99, ttl: 30, remaining_ttl: 12 }, EtcdLease { id: 0x1234, ttl: 60, remaining_ttl: 0 }]
    );
    let members = entries(layout::MEMBERS);
    assert_eq!(members[0].0, b"abc");
    let member: EtcdMember = serde_json::from_slice(&members[0].1).unwrap();
    assert_eq!(member.peer_urls, vec!["http://p:2380"]);
    assert_eq!(entries(layout::MEMBERS_REMOVED), vec![(b"def".to_vec(), b"removed".to_vec())]);
    let meta: Vec<Vec<u8>> = entries(layout::META).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        meta,
        vec![b"consistent_index".to_vec(), b"finishedCompactRev".to_vec(), b"scheduledCompactRev".to_vec()]
    );
    let auth = entries(layout::AUTH);
    assert_eq!(auth[0], (b"authEnabled".to_vec(), vec![1]));
    assert_eq!(entries(layout::ALARM).len(), 1);
    // Revisions 1 and 2 were compacted away; 3 (a=1) stays as the compaction point.
    let keys = entries(layout::KEY);
    assert_eq!(keys.len(), 4, "a@3 a@4 b@5 c-tombstone@6");
    assert_eq!(keys[3].0.len(), 18, "the delete is a tombstone key");
}

#[test]
fn an_exported_store_imports_with_history_leases_auth_and_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated();
    let path = saved(&store, dir.path());
    let target = dir.path().join("member").join("kv");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let summary = import_file(&path, &target, ImportOptions::default()).unwrap();
    assert!(summary.hash_checked);
    assert_eq!((summary.revision, summary.compact_revision, summary.leases), (6, 3, 2));
    assert!(!dir.path().join("member").join("kv.importing").exists());

    let imported = KvStore::open_rocksdb(&target).unwrap();
    assert_eq!(imported.hash_by_rev(0).unwrap(), store.hash_by_rev(0).unwrap());
    let all = |s: &KvStore, revision| {
        s.range(&RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() }).unwrap().kvs
    };
    assert_eq!(all(&imported, 0), all(&store, 0));
    assert_eq!(all(&imported, 4), all(&store, 4));
    assert_eq!(imported.lease_records().unwrap(), store.lease_records().unwrap());
    assert_eq!(imported.leased_keys().unwrap(), store.leased_keys().unwrap());
    assert_eq!(imported.auth_record().unwrap(), store.auth_record().unwrap());
    assert_eq!(imported.alarms_record().unwrap(), store.alarms_record().unwrap());
    assert_eq!(imported.consistent_index(), 0, "a new raft log starts");
    assert_eq!(imported.identity().unwrap(), None, "membership comes from the new cluster's flags");
}

#[test]
fn a_restore_bootstraps_the_new_member_and_can_bump_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated();
    let path = saved(&store, dir.path());
    let target = dir.path().join("kv");
    let urls = vec!["http://10.0.0.1:2380".to_string()];
    let bootstrap = keel_mvcc::ids::new_cluster("n1", &urls, &[("n1".into(), urls.clone())], "tok");
    let options = ImportOptions { bump_revision: 1000, bootstrap: Some(bootstrap.clone()), ..ImportOptions::default() };
    let summary = import_file(&path, &target, options).unwrap();
    assert_eq!((summary.revision, summary.compact_revision), (1006, 1006));

    let imported = KvStore::open_rocksdb(&target).unwrap();
    assert_eq!(imported.identity().unwrap(), Some(bootstrap.0));
    assert_eq!(imported.members().unwrap(), bootstrap.1);
    assert_eq!((imported.current_revision(), imported.compact_revision()), (1006, 1006));
    let all =
        |s: &KvStore| s.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap().kvs;
    assert_eq!(all(&imported), all(&store), "the bump keeps every live key as it was");
}

#[test]
fn bad_files_fail_clearly_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(&populated(), dir.path());
    let target = dir.path().join("kv");
    let mut bytes = std::fs::read(&path).unwrap();

    // Tampered: one byte of the database changed.
    bytes[5000] ^= 1;
    let tampered = dir.path().join("tampered.db");
    std::fs::write(&tampered, &bytes).unwrap();
    let err = import_file(&tampered, &target, ImportOptions::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().starts_with("expected sha256 ["), "{err}");

    // Truncated mid-file: no trailer where one must be.
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let err = import_file(&truncated, &target, ImportOptions::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::MissingHash), "{err}");

    // Not bbolt at all.
    let text = dir.path().join("text.db");
    std::fs::write(&text, vec![b'x'; 8192]).unwrap();
    let err =
        import_file(&text, &target, ImportOptions { skip_hash_check: true, ..ImportOptions::default() }).unwrap_err();
    assert!(matches!(err, SnapshotError::Bbolt(keel_bbolt::Error::NotBbolt(_))), "{err}");

    assert!(!target.exists());
    assert!(!dir.path().join("kv.importing").exists());

    // An existing store is never overwritten.
    std::fs::create_dir_all(target.join("x")).unwrap();
    let err = import_file(&path, &target, ImportOptions::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::TargetExists(_)), "{err}");
    assert!(target.join("x").exists());
}

#[test]
fn a_file_without_trailer_imports_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated();
    let checkpoint = store.checkpoint().unwrap();
    let (out, _) = crate::write_db(&checkpoint, Cursor::new(Vec::new())).unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, out.into_inner()).unwrap();
    let target = dir.path().join("kv");
    assert!(matches!(import_file(&path, &target, ImportOptions::default()), Err(SnapshotError::MissingHash)));
    let summary =
        import_file(&path, &target, ImportOptions { skip_hash_check: true, ..ImportOptions::default() }).unwrap();
    assert!(!summary.hash_checked);
    assert_eq!(summary.revision, 6);
}

#[test]
fn a_bad_entry_found_while_loading_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A bbolt file that opens, whose key bucket is fine and whose lease
    // bucket is not: the import fails midway, after the staging store exists.
    let path = dir.path().join("bad-lease.db");
    let mut writer = keel_bbolt::Writer::new(std::fs::File::create(&path).unwrap()).unwrap();
    writer.begin_bucket(layout::KEY).unwrap();
    let kv = keel_proto::mvccpb::KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        ..Default::default()
    };
    writer.put(&keel_mvcc::revision::Revision::new(2, 0).to_bytes(), &kv.encode_to_vec()).unwrap();
    writer.begin_bucket(layout::LEASE).unwrap();
    writer.put(&7i64.to_be_bytes(), b"not a lease").unwrap();
    writer.finish().unwrap();
    let target = dir.path().join("kv");
    let err =
        import_file(&path, &target, ImportOptions { skip_hash_check: true, ..ImportOptions::default() }).unwrap_err();
    assert!(matches!(err, SnapshotError::Malformed { .. }), "{err}");
    assert!(!target.exists());
    assert!(!dir.path().join("kv.importing").exists(), "the staging store is removed");

    // A key that is no revision is refused the same way.
    let path = dir.path().join("bad-key.db");
    let mut writer = keel_bbolt::Writer::new(std::fs::File::create(&path).unwrap()).unwrap();
    writer.begin_bucket(layout::KEY).unwrap();
    writer.put(b"hello", b"world").unwrap();
    writer.finish().unwrap();
    let err =
        import_file(&path, &target, ImportOptions { skip_hash_check: true, ..ImportOptions::default() }).unwrap_err();
    assert!(err.to_string().contains("is not a revision key"), "{err}");
    assert!(!dir.path().join("kv.importing").exists());
}
