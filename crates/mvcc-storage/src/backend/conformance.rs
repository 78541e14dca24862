//! The behaviour every [`Backend`] must show, written once and run against
//! each engine by `backend_conformance!`.

use super::{Backend, Keyspace, WriteBatch};

fn collect(b: &dyn Backend, space: Keyspace, start: &[u8], end: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    b.scan(space, start, end, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    out
}

fn put(b: &dyn Backend, space: Keyspace, k: &[u8], v: &[u8]) {
    let mut wb = WriteBatch::new();
    wb.put(space, k, v);
    b.write(wb).unwrap();
}

pub fn empty_reads(b: &dyn Backend) {
    for space in Keyspace::ALL {
        assert_eq!(b.get(space, b"missing").unwrap(), None);
        assert!(collect(b, space, b"", None).is_empty());
    }
    assert_eq!(b.multi_get(Keyspace::Revisions, &[b"a", b"b"]).unwrap(), vec![None, None]);
}

pub fn put_get_overwrite_delete(b: &dyn Backend) {
    put(b, Keyspace::Revisions, b"k", b"v1");
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    put(b, Keyspace::Revisions, b"k", b"v2");
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    let mut wb = WriteBatch::new();
    wb.delete(Keyspace::Revisions, b"k");
    wb.delete(Keyspace::Revisions, b"never-existed");
    b.write(wb).unwrap();
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap(), None);
}

pub fn keyspaces_are_separate(b: &dyn Backend) {
    put(b, Keyspace::Revisions, b"same", b"rev");
    put(b, Keyspace::Meta, b"same", b"meta");
    assert_eq!(b.get(Keyspace::Revisions, b"same").unwrap().as_deref(), Some(&b"rev"[..]));
    assert_eq!(b.get(Keyspace::Meta, b"same").unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(collect(b, Keyspace::Meta, b"", None).len(), 1);
}

pub fn scan_is_ordered_and_half_open(b: &dyn Backend) {
    let mut wb = WriteBatch::new();
    // Inserted out of order, including bytes >= 0x80 to check unsigned order.
    for k in [&b"b"[..], b"a", b"\xff", b"ab", b"c", b"\x80", b""] {
        wb.put(Keyspace::Revisions, k, k);
    }
    b.write(wb).unwrap();
    let keys = |start: &[u8], end: Option<&[u8]>| -> Vec<Vec<u8>> {
        collect(b, Keyspace::Revisions, start, end).into_iter().map(|(k, _)| k).collect()
    };
    let all: Vec<Vec<u8>> = [&b""[..], b"a", b"ab", b"b", b"c", b"\x80", b"\xff"].iter().map(|k| k.to_vec()).collect();
    assert_eq!(keys(b"", None), all);
    assert_eq!(keys(b"a", Some(b"b")), vec![b"a".to_vec(), b"ab".to_vec()]);
    assert_eq!(keys(b"ab", Some(b"c")), vec![b"ab".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(b"b", Some(b"b")), Vec::<Vec<u8>>::new());
    assert_eq!(keys(b"c", Some(b"a")), Vec::<Vec<u8>>::new());
    assert_eq!(keys(b"\x80", None), vec![b"\x80".to_vec(), b"\xff".to_vec()]);
    for (k, v) in collect(b, Keyspace::Revisions, b"", None) {
        assert_eq!(k, v);
    }
}

pub fn scan_stops_when_visitor_says_so(b: &dyn Backend) {
    let mut wb = WriteBatch::new();
    for i in 0u8..10 {
        wb.put(Keyspace::Revisions, vec![i], vec![i]);
    }
    b.write(wb).unwrap();
    let mut seen = Vec::new();
    b.scan(Keyspace::Revisions, &[2], None, &mut |k, _| {
        seen.push(k[0]);
        seen.len() < 3
    })
    .unwrap();
    assert_eq!(seen, vec![2, 3, 4]);
}

pub fn batch_ops_apply_in_order_across_keyspaces(b: &dyn Backend) {
    let mut wb = WriteBatch::new();
    wb.put(Keyspace::Revisions, b"x", b"1");
    wb.delete(Keyspace::Revisions, b"x");
    wb.put(Keyspace::Revisions, b"y", b"1");
    wb.put(Keyspace::Revisions, b"y", b"2");
    wb.put(Keyspace::Meta, b"m", b"3");
    b.write(wb).unwrap();
    assert_eq!(b.get(Keyspace::Revisions, b"x").unwrap(), None);
    assert_eq!(b.get(Keyspace::Revisions, b"y").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(b.get(Keyspace::Meta, b"m").unwrap().as_deref(), Some(&b"3"[..]));
    b.write(WriteBatch::new()).unwrap();
}

pub fn multi_get_keeps_request_order(b: &dyn Backend) {
    let mut wb = WriteBatch::new();
    wb.put(Keyspace::Revisions, b"1", b"one");
    wb.put(Keyspace::Revisions, b"3", b"three");
    b.write(wb).unwrap();
    let got = b.multi_get(Keyspace::Revisions, &[b"3", b"2", b"1", b"3"]).unwrap();
    assert_eq!(got, vec![Some(b"three".to_vec()), None, Some(b"one".to_vec()), Some(b"three".to_vec())]);
}

pub fn binary_values_round_trip(b: &dyn Backend) {
    let value: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    put(b, Keyspace::Revisions, b"\x00\x00big", &value);
    assert_eq!(b.get(Keyspace::Revisions, b"\x00\x00big").unwrap(), Some(value));
    put(b, Keyspace::Revisions, b"empty", b"");
    assert_eq!(b.get(Keyspace::Revisions, b"empty").unwrap(), Some(Vec::new()));
    b.sync().unwrap();
}

pub fn size_grows_with_data(b: &dyn Backend) {
    let before = b.size();
    let mut wb = WriteBatch::new();
    for i in 0..1000u32 {
        wb.put(Keyspace::Revisions, i.to_be_bytes(), vec![7u8; 100]);
    }
    b.write(wb).unwrap();
    // Engines may pre-allocate (RocksDB memtable arenas), so only non-shrinking
    // and non-zero are portable promises.
    assert!(b.size() >= before && b.size() > 0, "size {} after {before}", b.size());
    assert!(b.size_in_use() > 0);
}

pub fn a_checkpoint_keeps_its_moment(b: &dyn Backend) {
    put(b, Keyspace::Revisions, b"a", b"1");
    put(b, Keyspace::Meta, b"m", b"1");
    let frozen = b.checkpoint().unwrap();
    put(b, Keyspace::Revisions, b"a", b"2");
    put(b, Keyspace::Revisions, b"b", b"2");
    let mut seen = Vec::new();
    for space in [Keyspace::Revisions, Keyspace::Meta] {
        frozen
            .scan(space, b"", None, &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
    }
    assert_eq!(seen, vec![(b"a".to_vec(), b"1".to_vec()), (b"m".to_vec(), b"1".to_vec())]);
    drop(frozen);
    assert_eq!(collect(b, Keyspace::Revisions, b"", None).len(), 2, "the engine goes on");
}

pub fn bulk_loads_land_whole_across_keyspaces(b: &dyn Backend) {
    put(b, Keyspace::Revisions, b"old", b"stays");
    let mut load = b.bulk_load().unwrap();
    for i in 0..3000u32 {
        load.put(Keyspace::Revisions, format!("k{i:05}").as_bytes(), &i.to_be_bytes()).unwrap();
    }
    load.put(Keyspace::Meta, b"m", b"meta").unwrap();
    load.put(Keyspace::Members, b"a", b"1").unwrap();
    load.finish().unwrap();
    let revisions = collect(b, Keyspace::Revisions, b"", None);
    assert_eq!(revisions.len(), 3001);
    assert_eq!(revisions[0], (b"k00000".to_vec(), 0u32.to_be_bytes().to_vec()));
    assert_eq!(revisions[3000], (b"old".to_vec(), b"stays".to_vec()));
    assert_eq!(b.get(Keyspace::Meta, b"m").unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(b.get(Keyspace::Members, b"a").unwrap().as_deref(), Some(&b"1"[..]));
}

/// Generates one `#[test]` per conformance case for an engine; `$make` is an
/// expression building a fresh engine (it may bind guards such as temp dirs).
macro_rules! backend_conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            backend_conformance!(@case $make;
                empty_reads,
                put_get_overwrite_delete,
                keyspaces_are_separate,
                scan_is_ordered_and_half_open,
                scan_stops_when_visitor_says_so,
                batch_ops_apply_in_order_across_keyspaces,
                multi_get_keeps_request_order,
                binary_values_round_trip,
                size_grows_with_data,
                a_checkpoint_keeps_its_moment,
                bulk_loads_land_whole_across_keyspaces);
        }
    };
    (@case $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let (_guard, backend) = $make;
                $crate::backend::conformance::$case(&backend);
            }
        )*
    };
}

backend_conformance!(mem, ((), crate::backend::MemBackend::new()));
backend_conformance!(rocks, {
    let dir = tempfile::tempdir().unwrap();
    let backend = crate::backend::RocksBackend::open(dir.path()).unwrap();
    (dir, backend)
});

// Through a buffer that holds every write and writes out every third, so
// reads find data split between the buffer and the engine.
backend_conformance!(
    buffered_mem,
    ((), crate::backend::buffered::tests::Holding::new(std::sync::Arc::new(crate::backend::MemBackend::new()), 3))
);
backend_conformance!(buffered_rocks, {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::backend::RocksOptions::replayed_from_raft_log();
    let engine = crate::backend::RocksBackend::open_with(dir.path(), options).unwrap();
    (dir, crate::backend::buffered::tests::Holding::new(std::sync::Arc::new(engine), 3))
});

backend_conformance!(rocks_unlogged, {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::backend::RocksOptions::replayed_from_raft_log();
    let backend = crate::backend::RocksBackend::open_with(dir.path(), options).unwrap();
    (dir, backend)
});

/// Where the child of `unlogged_writes_after_the_last_sync_die_with_the_process`
/// writes its store.
const UNLOGGED_CHILD_DIR: &str = "KEEL_MVCC_UNLOGGED_CHILD_DIR";

/// Run by the test below in a process of its own, which it aborts.
#[test]
#[ignore = "the child half of unlogged_writes_after_the_last_sync_die_with_the_process"]
fn unlogged_child_writes_then_aborts() {
    let Some(dir) = std::env::var_os(UNLOGGED_CHILD_DIR) else { return };
    let options = crate::backend::RocksOptions::replayed_from_raft_log();
    let b = crate::backend::RocksBackend::open_with(std::path::Path::new(&dir), options).unwrap();
    let mut first = WriteBatch::new();
    first.put(Keyspace::Revisions, b"a", b"1");
    first.put(Keyspace::Meta, b"consistent_index", b"1");
    b.write(first).unwrap();
    b.sync().unwrap();
    let mut second = WriteBatch::new();
    second.put(Keyspace::Revisions, b"b", b"2");
    second.put(Keyspace::Meta, b"consistent_index", b"2");
    b.write(second).unwrap();
    std::process::abort();
}

/// Without a WAL, what a crash keeps is the store as of the last sync, in
/// every keyspace alike: the write after it is gone from both, so the raft
/// log must replay it (and proves the WAL really is off).
#[test]
fn unlogged_writes_after_the_last_sync_die_with_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "backend::conformance::unlogged_child_writes_then_aborts", "--ignored", "--nocapture"])
        .env(UNLOGGED_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die by abort");
    let options = crate::backend::RocksOptions::replayed_from_raft_log();
    let b = crate::backend::RocksBackend::open_with(dir.path(), options).unwrap();
    assert_eq!(b.get(Keyspace::Revisions, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(b.get(Keyspace::Meta, b"consistent_index").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(b.get(Keyspace::Revisions, b"b").unwrap(), None);
}

/// A member closing cleanly keeps its unlogged writes (RocksDB flushes its
/// memtables at close when writes skipped the WAL).
#[test]
fn rocks_unlogged_writes_survive_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::backend::RocksOptions::replayed_from_raft_log();
    {
        let b = crate::backend::RocksBackend::open_with(dir.path(), options.clone()).unwrap();
        put(&b, Keyspace::Revisions, b"k", b"v");
    }
    let b = crate::backend::RocksBackend::open_with(dir.path(), options).unwrap();
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// A checkpoint's files go with it, and a crash's leftovers with the next open.
#[test]
fn rocks_checkpoints_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("kv");
    let b = crate::backend::RocksBackend::open(&db_dir).unwrap();
    put(&b, Keyspace::Revisions, b"k", b"v");
    let checkpoints = dir.path().join("kv.checkpoints");
    let frozen = b.checkpoint().unwrap();
    assert_eq!(std::fs::read_dir(&checkpoints).unwrap().count(), 1);
    drop(frozen);
    assert!(!checkpoints.exists());
    let _leftover = b.checkpoint().unwrap();
    std::mem::forget(_leftover);
    drop(b);
    let _b = crate::backend::RocksBackend::open(&db_dir).unwrap();
    assert!(!checkpoints.exists(), "a crash's checkpoint is removed at open");
}

/// A bulk load survives a reopen, and leaves no table files behind.
#[test]
fn rocks_bulk_loads_persist() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("kv");
    {
        let b = crate::backend::RocksBackend::open(&db_dir).unwrap();
        let mut load = b.bulk_load().unwrap();
        load.put(Keyspace::Revisions, b"k", b"v").unwrap();
        load.finish().unwrap();
    }
    assert!(!dir.path().join("kv.ingest").exists());
    let b = crate::backend::RocksBackend::open(&db_dir).unwrap();
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// RocksDB keeps its data across a close and reopen of the directory.
#[test]
fn rocks_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = crate::backend::RocksBackend::open(dir.path()).unwrap();
        let mut wb = WriteBatch::new();
        wb.put(Keyspace::Revisions, b"k", b"v");
        wb.put(Keyspace::Meta, b"m", b"w");
        b.write(wb).unwrap();
    }
    let b = crate::backend::RocksBackend::open(dir.path()).unwrap();
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(b.get(Keyspace::Meta, b"m").unwrap().as_deref(), Some(&b"w"[..]));
}

/// A value is read from memory alone while it is in a memtable or the block
/// cache, and not while only a table file holds it.
#[test]
fn rocks_reads_from_memory_only_what_memory_holds() {
    let dir = tempfile::tempdir().unwrap();
    let keys: [&[u8]; 2] = [b"k", b"missing"];
    {
        let b = crate::backend::RocksBackend::open(dir.path()).unwrap();
        let mut wb = WriteBatch::new();
        wb.put(Keyspace::Revisions, b"k", b"v");
        // Two MiB of incompressible values after it, so its block is not
        // in the file's tail, which RocksDB reads when it opens a table.
        let mut seed = 1u64;
        for i in 0..4096 {
            let value: Vec<u8> = (0..512)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            wb.put(Keyspace::Revisions, format!("z{i:05}"), value);
        }
        b.write(wb).unwrap();
        let in_memtable = b.multi_get_in_memory(Keyspace::Revisions, &keys).unwrap();
        assert_eq!(in_memtable, Some(vec![Some(b"v".to_vec()), None]));
        b.flush().unwrap();
    }
    // Reopened: a table file holds the value, and its block was never read.
    let b = crate::backend::RocksBackend::open(dir.path()).unwrap();
    assert_eq!(b.multi_get_in_memory(Keyspace::Revisions, &keys).unwrap(), None);
    assert_eq!(b.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    let cached = b.multi_get_in_memory(Keyspace::Revisions, &keys).unwrap();
    assert_eq!(cached, Some(vec![Some(b"v".to_vec()), None]));
}

#[test]
fn mem_reads_everything_from_memory() {
    let b = crate::backend::MemBackend::new();
    let mut wb = WriteBatch::new();
    wb.put(Keyspace::Revisions, b"k", b"v");
    b.write(wb).unwrap();
    let keys: [&[u8]; 2] = [b"k", b"missing"];
    assert_eq!(b.multi_get_in_memory(Keyspace::Revisions, &keys).unwrap(), Some(vec![Some(b"v".to_vec()), None]));
}
