//! RocksDB engine: each [`Keyspace`] is a column family; a batch is one
//! RocksDB `WriteBatch`, which is atomic across column families.
//!
//! Writes go to RocksDB's WAL without fsync unless [`RocksOptions::sync_writes`]
//! is set: a process crash loses nothing (the WAL is in the page cache), and a
//! machine crash loses a suffix of applied entries that raft replays, because
//! `consistent_index` is written in the same batch as the state it describes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    properties, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions, WriteOptions, DB,
};

use super::{Backend, BackendError, BatchOp, Frozen, Keyspace, ScanVisitor, WriteBatch};

// Single-threaded column-family mode: column families are fixed at open, and
// it hands out `&ColumnFamily` without the lock `MultiThreaded` takes per lookup.
type Db = DB;

/// Tuning knobs of [`RocksBackend`].
#[derive(Clone, Debug, Default)]
pub struct RocksOptions {
    /// fsync the WAL on every batch. Off by default: the raft log is the
    /// durable record (see the module docs).
    pub sync_writes: bool,
}

/// A persistent engine on a RocksDB directory.
pub struct RocksBackend {
    db: Db,
    path: PathBuf,
    write_opts: WriteOptions,
    /// Names the next checkpoint's directory.
    checkpoints: AtomicU64,
}

/// RocksDB's block cache, shared by every keyspace.
const BLOCK_CACHE_BYTES: usize = 8 << 20;

/// Memory all memtables of the store may hold before RocksDB flushes one.
const MEMTABLES_BYTES: usize = 16 << 20;

impl RocksBackend {
    /// Opens (creating if missing) the database in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        Self::open_with(dir, RocksOptions::default())
    }

    pub fn open_with(dir: &Path, options: RocksOptions) -> Result<Self, BackendError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // The raft log is the durable record and the key index lives in
        // memory, so memtables buy little here; RocksDB's defaults (two
        // 64 MiB memtables per keyspace) held a quarter of the RSS with a
        // million keys. All keyspaces together flush past this much.
        db_opts.set_db_write_buffer_size(MEMTABLES_BYTES);
        // Blocks read are also in the OS page cache, which costs no RSS;
        // RocksDB's own cache only needs the hottest.
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut block_options = rocksdb::BlockBasedOptions::default();
        block_options.set_block_cache(&cache);
        let cfs = Keyspace::ALL.iter().map(|space| {
            let mut cf_opts = Options::default();
            cf_opts.set_write_buffer_size(MEMTABLES_BYTES / 2);
            cf_opts.set_block_based_table_factory(&block_options);
            cf_opts.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(space.name(), cf_opts)
        });
        let db = Db::open_cf_descriptors(&db_opts, dir, cfs)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(options.sync_writes);
        // Checkpoints live only as long as a transfer; any found were left
        // by a crash.
        let stale = checkpoints_dir(dir);
        if stale.exists() {
            std::fs::remove_dir_all(&stale).map_err(|e| BackendError::new(format!("{}: {e}", stale.display())))?;
        }
        Ok(RocksBackend { db, path: dir.to_path_buf(), write_opts, checkpoints: AtomicU64::new(0) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, space: Keyspace) -> Result<&ColumnFamily, BackendError> {
        self.db
            .cf_handle(space.name())
            .ok_or_else(|| BackendError::new(format!("missing column family {}", space.name())))
    }

    fn sum_property(&self, names: &[&rocksdb::properties::PropName]) -> u64 {
        let mut total = 0u64;
        for space in Keyspace::ALL {
            let Ok(cf) = self.cf(space) else { continue };
            for name in names {
                if let Ok(Some(v)) = self.db.property_int_value_cf(cf, *name) {
                    total = total.saturating_add(v);
                }
            }
        }
        total
    }
}

impl Backend for RocksBackend {
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let cf = self.cf(space)?;
        Ok(self.db.get_pinned_cf(cf, key)?.map(|v| v.to_vec()))
    }

    fn multi_get(&self, space: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let cf = self.cf(space)?;
        self.db
            .batched_multi_get_cf(cf, keys.iter().copied(), false)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError> {
        scan_db(&self.db, space, start, end, visit)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut wb = rocksdb::WriteBatch::default();
        let key_cf = self.cf(Keyspace::Revisions)?;
        let meta_cf = self.cf(Keyspace::Meta)?;
        let lease_cf = self.cf(Keyspace::Leases)?;
        let members_cf = self.cf(Keyspace::Members)?;
        let cf_of = |space: Keyspace| match space {
            Keyspace::Revisions => key_cf,
            Keyspace::Meta => meta_cf,
            Keyspace::Leases => lease_cf,
            Keyspace::Members => members_cf,
        };
        for op in batch.ops() {
            match op {
                BatchOp::Put { space, key, value } => wb.put_cf(cf_of(*space), key, value),
                BatchOp::Delete { space, key } => wb.delete_cf(cf_of(*space), key),
            }
        }
        self.db.write_opt(wb, &self.write_opts)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), BackendError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.sum_property(&[properties::TOTAL_SST_FILES_SIZE, properties::SIZE_ALL_MEM_TABLES])
    }

    fn size_in_use(&self) -> u64 {
        self.sum_property(&[properties::ESTIMATE_LIVE_DATA_SIZE, properties::CUR_SIZE_ALL_MEM_TABLES])
    }

    fn checkpoint(&self) -> Result<Box<dyn Frozen>, BackendError> {
        let parent = checkpoints_dir(&self.path);
        std::fs::create_dir_all(&parent).map_err(|e| BackendError::new(format!("{}: {e}", parent.display())))?;
        let dir = parent.join(self.checkpoints.fetch_add(1, Ordering::Relaxed).to_string());
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(&dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(false);
        let names = Keyspace::ALL.iter().map(|space| space.name());
        let db = match Db::open_cf_for_read_only(&opts, &dir, names, false) {
            Ok(db) => db,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err.into());
            }
        };
        Ok(Box::new(FrozenRocks { db: Some(db), dir }))
    }
}

/// Where checkpoints of the database in `dir` go: beside it, on the same
/// file system, so a checkpoint is hard links rather than copies.
fn checkpoints_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoints");
    dir.with_file_name(name)
}

/// A checkpoint opened read-only; its directory is removed when dropped.
struct FrozenRocks {
    db: Option<Db>,
    dir: PathBuf,
}

impl Frozen for FrozenRocks {
    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError> {
        match &self.db {
            Some(db) => scan_db(db, space, start, end, visit),
            None => Ok(()),
        }
    }
}

impl Drop for FrozenRocks {
    fn drop(&mut self) {
        drop(self.db.take());
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %err, "cannot remove a checkpoint");
        }
        // The last checkpoint takes their common directory along.
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn scan_db(
    db: &Db,
    space: Keyspace,
    start: &[u8],
    end: Option<&[u8]>,
    visit: &mut ScanVisitor<'_>,
) -> Result<(), BackendError> {
    if matches!(end, Some(e) if e <= start) {
        return Ok(());
    }
    let cf = db
        .cf_handle(space.name())
        .ok_or_else(|| BackendError::new(format!("missing column family {}", space.name())))?;
    let mut opts = ReadOptions::default();
    if let Some(end) = end {
        opts.set_iterate_upper_bound(end.to_vec());
    }
    let mut it = db.raw_iterator_cf_opt(cf, opts);
    it.seek(start);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !visit(k, v) {
            return Ok(());
        }
        it.next();
    }
    it.status()?;
    Ok(())
}
