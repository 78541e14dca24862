//! An etcd snapshot file (or etcd's own `member/snap/db`) loaded into a new
//! Keel store.
//!
//! The store is built beside its destination and renamed into place once
//! complete and synced, so a failure (a bad file, a full disk, a crash)
//! leaves no half-made store behind: the destination either does not exist
//! or holds everything.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_bbolt::{Bucket, Db};
use keel_mvcc::{meta, Backend, Identity, Keyspace, KvStore, RocksBackend};
use keel_proto::etcdserverpb::{AlarmMember, AlarmResponse, Member};
use prost::Message;

use crate::layout::{self, lease_from_etcd, AuthFromEtcd};
use crate::trailer::{verify_trailer, Trailer};
use crate::SnapshotError;

/// How [`import_file`] treats its input, and what it adds.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Accept a file without a sha256 trailer (etcd's own backend file, a
    /// copy of `member/snap/db`), as `--skip-hash-check`. A trailer that
    /// is present is checked regardless.
    pub skip_hash_check: bool,
    /// Move the revision this far ahead, the history before it compacted
    /// (`--bump-revision` with `--mark-compacted`); 0 leaves it.
    pub bump_revision: i64,
    /// Record who the store belongs to, as a member's first start does:
    /// a store restored for a new cluster (`snapshot restore --name
    /// --initial-cluster`) then starts as that member whatever its flags.
    pub bootstrap: Option<(Identity, Vec<Member>)>,
    /// Counts the bytes of the file read so far, for a progress bar.
    pub read_bytes: Option<Arc<AtomicU64>>,
}

/// What an import brought over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// The store revision after the import (etcd's at the snapshot).
    pub revision: i64,
    /// Revisions (historic ones included) in the `key` bucket.
    pub revisions: u64,
    pub leases: u64,
    /// The compaction revision carried over; -1 if etcd never compacted.
    pub compact_revision: i64,
    /// Whether the trailer was present and checked.
    pub hash_checked: bool,
}

/// Loads the etcd snapshot at `snapshot` into a new Keel store at
/// `store_dir`, which must not exist (or be empty). Blocking.
pub fn import_file(snapshot: &Path, store_dir: &Path, options: ImportOptions) -> Result<ImportSummary, SnapshotError> {
    if store_dir.exists() && !is_empty_dir(store_dir)? {
        return Err(SnapshotError::TargetExists(store_dir.to_path_buf()));
    }
    let trailer = verify_trailer(snapshot, !options.skip_hash_check)?;
    let file = File::open(snapshot).map_err(SnapshotError::io(snapshot))?;
    // The trailer is not part of the database: the reader never sees it.
    let mut db = Db::from_reader(
        Window::new(file, trailer.db_len(), options.read_bytes.clone()).map_err(SnapshotError::io(snapshot))?,
    )?;

    let staging = staging_dir(store_dir);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(SnapshotError::io(&staging))?;
    }
    let loaded = load(&mut db, &staging, &options);
    let summary = match loaded {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let placed = (|| {
        if store_dir.exists() {
            std::fs::remove_dir(store_dir)?;
        }
        std::fs::rename(&staging, store_dir)
    })();
    if let Err(err) = placed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(SnapshotError::Io { path: store_dir.to_path_buf(), source: err });
    }
    // In place now: a failed directory sync does not undo it.
    if let Some(parent) = store_dir.parent() {
        if let Err(err) = File::open(parent).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %parent.display(), %err, "cannot sync the directory of the imported store");
        }
    }
    Ok(ImportSummary { hash_checked: matches!(trailer, Trailer::Verified { .. }), ..summary })
}

fn load<R: Read + Seek>(
    db: &mut Db<R>,
    staging: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, SnapshotError> {
    let backend = Arc::new(RocksBackend::open(staging)?);
    let buckets = db.buckets()?;
    let find = |name: &[u8]| buckets.iter().find(|b| b.name() == name);
    let mut summary = ImportSummary { compact_revision: -1, ..ImportSummary::default() };
    {
        let mut load = backend.bulk_load()?;
        if let Some(bucket) = find(layout::KEY) {
            for entry in db.entries(bucket) {
                let (k, v) = entry?;
                // The store's index starts at revision 1: a key below it, or
                // not a revision at all, would never be read, only hashed.
                match keel_mvcc::revision::decode_key(&k) {
                    Some((revision, _)) if revision.main >= 1 => {}
                    _ => return Err(SnapshotError::malformed(layout::KEY, format!("{k:02x?} is not a revision key"))),
                }
                load.put(Keyspace::Revisions, &k, &v)?;
                summary.revisions += 1;
            }
        }
        if let Some(bucket) = find(layout::LEASE) {
            for entry in db.entries(bucket) {
                let (k, v) = entry?;
                let record = lease_from_etcd(&k, &v)?;
                load.put(Keyspace::Leases, &k, &record.encode())?;
                summary.leases += 1;
            }
        }
        // The meta keyspace last, its keys in order: `alarm`, `auth`, then
        // the compaction revisions (`finishedCompactRev`, `scheduledCompactRev`).
        let mut keel_meta = Vec::new();
        if let Some(bucket) = find(layout::ALARM) {
            let alarms = read_all(db, bucket)?
                .into_iter()
                .map(|(k, _)| {
                    AlarmMember::decode(k.as_slice())
                        .map_err(|e| SnapshotError::malformed(layout::ALARM, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !alarms.is_empty() {
                keel_meta.push((meta::ALARMS.to_vec(), AlarmResponse { header: None, alarms }.encode_to_vec()));
            }
        }
        let mut auth = AuthFromEtcd::default();
        for name in [layout::AUTH, layout::AUTH_USERS, layout::AUTH_ROLES] {
            if let Some(bucket) = find(name) {
                for (k, v) in read_all(db, bucket)? {
                    auth.add(name, &k, &v)?;
                }
            }
        }
        if let Some(record) = auth.finish() {
            keel_meta.push((meta::AUTH.to_vec(), record.encode_to_vec()));
        }
        if let Some(bucket) = find(layout::META) {
            for (k, v) in read_all(db, bucket)? {
                if layout::KEPT_META.contains(&k.as_slice()) {
                    keel_meta.push((k, v));
                }
            }
        }
        keel_meta.sort();
        for (k, v) in &keel_meta {
            load.put(Keyspace::Meta, k, v)?;
        }
        load.finish()?;
    }
    for bucket in &buckets {
        if !layout::BUCKETS.contains(&bucket.name()) {
            tracing::warn!(bucket = %String::from_utf8_lossy(bucket.name()), "snapshot bucket unknown to etcd; skipped");
        }
    }
    // Opening the store rebuilds its index: every revision is checked here,
    // before the store is put in place.
    let backend: Arc<dyn Backend> = backend;
    let store = KvStore::open(backend.clone())?;
    store.bump_revision_compacted(options.bump_revision)?;
    if let Some((identity, members)) = &options.bootstrap {
        store.bootstrap(*identity, members)?;
    }
    summary.revision = store.current_revision();
    summary.compact_revision = store.compact_revision();
    drop(store);
    backend.sync()?;
    Ok(summary)
}

/// A small bucket's pairs, all read.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn read_all<R: Read + Seek>(db: &mut Db<R>, bucket: &Bucket) -> Result<Pairs, SnapshotError> {
    Ok(db.entries(bucket).collect::<Result<Vec<_>, _>>()?)
}

fn is_empty_dir(dir: &Path) -> Result<bool, SnapshotError> {
    Ok(std::fs::read_dir(dir).map_err(SnapshotError::io(dir))?.next().is_none())
}

/// `dir` with `.importing` added: where the store is built.
fn staging_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".importing");
    dir.with_file_name(name)
}

/// The first `len` bytes of a file, seekable within them.
struct Window {
    inner: Take<BufReader<File>>,
    len: u64,
    read: Option<Arc<AtomicU64>>,
}

impl Window {
    fn new(file: File, len: u64, read: Option<Arc<AtomicU64>>) -> std::io::Result<Window> {
        Ok(Window { inner: BufReader::with_capacity(1 << 16, file).take(len), len, read })
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(read) = &self.read {
            read.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let at = match pos {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => (self.len - self.inner.limit()).checked_add_signed(delta),
        };
        let at = at
            .filter(|&at| at <= self.len)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek outside the database"))?;
        self.inner.get_mut().seek(SeekFrom::Start(at))?;
        self.inner.set_limit(self.len - at);
        Ok(at)
    }
}
