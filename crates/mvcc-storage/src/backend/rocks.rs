//! RocksDB engine: each [`Keyspace`] is a column family; a batch is one
//! RocksDB `WriteBatch`, which is atomic across column families.
//!
//! By default writes go to RocksDB's WAL without fsync unless
//! [`RocksOptions::sync_writes`] is set: a process crash loses nothing (the
//! WAL is in the page cache), and a machine crash loses a suffix of applied
//! entries that raft replays, because `consistent_index` is written in the
//! same batch as the state it describes.
//!
//! A member opens its store [`RocksOptions::unlogged`]: no WAL at all, since
//! the raft log already holds every write durably and replays whatever the
//! store lost. Its keyspaces then flush together (RocksDB's atomic flush), so
//! what survives any crash is the store as of one flush, a consistent prefix
//! of its writes, and never one keyspace ahead of another.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    properties, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions, ReadTier, WriteOptions,
    DB,
};

use super::{Backend, BackendError, BatchOp, BulkLoad, Frozen, Keyspace, ScanVisitor, WriteBatch};

// Single-threaded column-family mode: column families are fixed at open, and
// it hands out `&ColumnFamily` without the lock `MultiThreaded` takes per lookup.
type Db = DB;

/// Tuning knobs of [`RocksBackend`].
#[derive(Clone, Debug, Default)]
pub struct RocksOptions {
    /// fsync the WAL on every batch. Off by default: the raft log is the
    /// durable record (see the module docs).
    pub sync_writes: bool,
    /// Keep no write-ahead log: a batch goes to the memtables only, and
    /// [`Backend::sync`] flushes them to table files. For a store whose
    /// writes another durable log replays after a crash (a member's raft log,
    /// which must then keep every entry after the last flush), so nothing is
    /// written to disk twice. `sync_writes` means nothing then.
    pub unlogged: bool,
}

impl RocksOptions {
    /// A member's store: the raft log is its write-ahead log.
    pub fn replayed_from_raft_log() -> Self {
        RocksOptions { sync_writes: false, unlogged: true }
    }
}

/// A persistent engine on a RocksDB directory.
pub struct RocksBackend {
    db: Db,
    path: PathBuf,
    write_opts: WriteOptions,
    /// Writes skip the WAL (see [`RocksOptions::unlogged`]).
    unlogged: bool,
    /// How table files written for a bulk load are made (as the keyspaces' own).
    table_options: Options,
    /// Names the next checkpoint's directory.
    checkpoints: AtomicU64,
    /// Reads that may not touch a file (see `multi_get_in_memory`), made
    /// once: every point read of a member tries them first.
    memory_only: ReadOptions,
}

/// RocksDB's block cache, shared by every keyspace.
const BLOCK_CACHE_BYTES: usize = 8 << 20;

/// Memory all memtables of the store may hold before RocksDB flushes one.
const MEMTABLES_BYTES: usize = 16 << 20;

/// The engine's options and its keyspaces' descriptors, for every way of
/// opening it.
fn engine_options() -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut db_opts = Options::default();
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
    let cfs = Keyspace::ALL
        .iter()
        .map(|space| {
            let mut cf_opts = Options::default();
            cf_opts.set_write_buffer_size(MEMTABLES_BYTES / 2);
            cf_opts.set_block_based_table_factory(&block_options);
            cf_opts.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(space.name(), cf_opts)
        })
        .collect();
    (db_opts, cfs)
}

impl RocksBackend {
    /// Opens (creating if missing) the database in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        Self::open_with(dir, RocksOptions::default())
    }

    pub fn open_with(dir: &Path, options: RocksOptions) -> Result<Self, BackendError> {
        let (mut db_opts, cfs) = engine_options();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // Without a WAL a keyspace flushed alone could come back from a
        // crash ahead of `consistent_index` (in Meta), and the replay would
        // then apply entries to a state they were never applied to.
        db_opts.set_atomic_flush(options.unlogged);
        let db = Db::open_cf_descriptors(&db_opts, dir, cfs)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(options.sync_writes && !options.unlogged);
        write_opts.disable_wal(options.unlogged);
        // Checkpoints live only as long as a transfer; any found were left
        // by a crash.
        let stale = checkpoints_dir(dir);
        if stale.exists() {
            std::fs::remove_dir_all(&stale).map_err(|e| BackendError::new(format!("{}: {e}", stale.display())))?;
        }
        let mut table_options = Options::default();
        table_options.set_compression_type(DBCompressionType::Lz4);
        Ok(RocksBackend {
            db,
            path: dir.to_path_buf(),
            write_opts,
            unlogged: options.unlogged,
            table_options,
            checkpoints: AtomicU64::new(0),
            memory_only: memory_only_reads(),
        })
    }

    /// Opens an existing database for reading only: offline tools
    /// (`keelctl data-dir status`) read a data dir, even one a running
    /// member holds, and never write it. Writes fail.
    pub fn open_read_only(dir: &Path) -> Result<Self, BackendError> {
        if !dir.join("CURRENT").is_file() {
            return Err(BackendError::new(format!("{}: no store here", dir.display())));
        }
        let (db_opts, cfs) = engine_options();
        let db = Db::open_cf_descriptors_read_only(&db_opts, dir, cfs, false)?;
        let mut table_options = Options::default();
        table_options.set_compression_type(DBCompressionType::Lz4);
        Ok(RocksBackend {
            db,
            path: dir.to_path_buf(),
            write_opts: WriteOptions::default(),
            unlogged: false,
            table_options,
            checkpoints: AtomicU64::new(0),
            memory_only: memory_only_reads(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes every keyspace's memtables to table files and waits for them
    /// (all at once when atomic flush is on), which syncs those files.
    fn flush_memtables(&self) -> Result<(), BackendError> {
        let cfs = Keyspace::ALL.iter().map(|&space| self.cf(space)).collect::<Result<Vec<_>, _>>()?;
        let mut opts = rocksdb::FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &opts)?;
        Ok(())
    }

    fn cf(&self, space: Keyspace) -> Result<&ColumnFamily, BackendError> {
        cf_in(&self.db, space)
    }

    fn rocks_batch(&self, batch: WriteBatch) -> Result<rocksdb::WriteBatch, BackendError> {
        // Sized up front: grown op by op, a put's batch was reallocated four
        // times (its record doubling from RocksDB's small default).
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(batch_bytes(&batch));
        let key_cf = self.cf(Keyspace::Revisions)?;
        let meta_cf = self.cf(Keyspace::Meta)?;
        let lease_cf = self.cf(Keyspace::Leases)?;
        let members_cf = self.cf(Keyspace::Members)?;
        let v2_cf = self.cf(Keyspace::V2)?;
        let cf_of = |space: Keyspace| match space {
            Keyspace::Revisions => key_cf,
            Keyspace::Meta => meta_cf,
            Keyspace::Leases => lease_cf,
            Keyspace::Members => members_cf,
            Keyspace::V2 => v2_cf,
        };
        for op in batch.ops() {
            match op {
                BatchOp::Put { space, key, value } => wb.put_cf(cf_of(*space), key, value),
                BatchOp::Delete { space, key } => wb.delete_cf(cf_of(*space), key),
            }
        }
        Ok(wb)
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

fn memory_only_reads() -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.set_read_tier(ReadTier::BlockCache);
    opts
}

/// The size of `batch` in RocksDB's batch format: a 12-byte header, then
/// per op a tag, the column family's id and the lengths as varints (at most
/// 15 bytes in all), and the bytes themselves.
fn batch_bytes(batch: &WriteBatch) -> usize {
    const HEADER: usize = 12;
    const PER_OP: usize = 16;
    HEADER
        + batch
            .ops()
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value, .. } => PER_OP + key.len() + value.len(),
                BatchOp::Delete { key, .. } => PER_OP + key.len(),
            })
            .sum::<usize>()
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

    /// From the memtables and the block cache only (RocksDB's
    /// `kBlockCacheTier`: a lookup that would read a file, even to open a
    /// table, stops with `Incomplete` instead). One `Get` per key: the
    /// batched `MultiGet` answered from a table file regardless (seen in
    /// `rocks_reads_from_memory_only_what_memory_holds`).
    fn multi_get_in_memory(
        &self,
        space: Keyspace,
        keys: &[&[u8]],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
        let cf = self.cf(space)?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            match self.db.get_pinned_cf_opt(cf, key, &self.memory_only) {
                Ok(value) => values.push(value.map(|v| v.to_vec())),
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(values))
    }

    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError> {
        scan_db(&self.db, space, start, end, false, visit)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        self.db.write_opt(self.rocks_batch(batch)?, &self.write_opts)?;
        Ok(())
    }

    fn write_unlogged(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(self.rocks_batch(batch)?, &opts)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.flush_memtables()?;
        self.db.flush_wal(true)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), BackendError> {
        if self.unlogged {
            // Nothing is in a WAL: the memtables are what is not durable.
            return self.flush_memtables();
        }
        self.db.flush_wal(true)?;
        Ok(())
    }

    fn defragment(&self) -> Result<(), BackendError> {
        // Flushed first, so what the memtables hold is compacted too; not
        // exclusive, so automatic compactions (and with them writes, which
        // stall when level 0 fills up) go on meanwhile.
        let mut options = rocksdb::CompactOptions::default();
        options.set_exclusive_manual_compaction(false);
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        // Every keyspace flushed at once: without a WAL, one keyspace
        // flushed alone could come back from a crash ahead of the others.
        self.flush_memtables()?;
        for space in Keyspace::ALL {
            let cf = self.cf(space)?;
            self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.sum_property(&[properties::TOTAL_SST_FILES_SIZE, properties::SIZE_ALL_MEM_TABLES])
    }

    fn size_in_use(&self) -> u64 {
        self.sum_property(&[properties::ESTIMATE_LIVE_DATA_SIZE, properties::CUR_SIZE_ALL_MEM_TABLES])
    }

    fn bulk_load(&self) -> Result<Box<dyn BulkLoad + '_>, BackendError> {
        let dir = sibling_dir(&self.path, "ingest");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| BackendError::new(format!("{}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| BackendError::new(format!("{}: {e}", dir.display())))?;
        Ok(Box::new(RocksBulkLoad { backend: self, dir, current: None, files: Vec::new() }))
    }

    fn checkpoint(&self) -> Result<Box<dyn Frozen>, BackendError> {
        let parent = checkpoints_dir(&self.path);
        std::fs::create_dir_all(&parent).map_err(|e| BackendError::new(format!("{}: {e}", parent.display())))?;
        let dir = parent.join(self.checkpoints.fetch_add(1, Ordering::Relaxed).to_string());
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(&dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(false);
        // Read once, front to back: a cache would only cost memory.
        let mut block_options = rocksdb::BlockBasedOptions::default();
        block_options.disable_cache();
        opts.set_block_based_table_factory(&block_options);
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
    sibling_dir(dir, "checkpoints")
}

/// `dir` with `.suffix` added, beside it.
fn sibling_dir(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

/// Table files are cut at about this size during a bulk load.
const INGEST_FILE_BYTES: usize = 64 << 20;

/// A bulk load written as table files, one keyspace after another, and
/// ingested into the database at the end: no log, no memtables, no
/// compaction of what was just written.
struct RocksBulkLoad<'b> {
    backend: &'b RocksBackend,
    dir: PathBuf,
    /// The file being written: its keyspace, writer, path and size so far.
    current: Option<(Keyspace, rocksdb::SstFileWriter<'b>, PathBuf, usize)>,
    files: Vec<(Keyspace, PathBuf)>,
}

impl RocksBulkLoad<'_> {
    fn close_current(&mut self) -> Result<(), BackendError> {
        if let Some((space, mut writer, path, _)) = self.current.take() {
            writer.finish()?;
            self.files.push((space, path));
        }
        Ok(())
    }
}

impl BulkLoad for RocksBulkLoad<'_> {
    fn put(&mut self, space: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        if self.current.as_ref().is_some_and(|(s, _, _, bytes)| *s != space || *bytes >= INGEST_FILE_BYTES) {
            self.close_current()?;
        }
        if self.current.is_none() {
            let writer = rocksdb::SstFileWriter::create(&self.backend.table_options);
            let path = self.dir.join(format!("{}.sst", self.files.len()));
            writer.open(&path)?;
            self.current = Some((space, writer, path, 0));
        }
        let Some((_, writer, _, bytes)) = self.current.as_mut() else { unreachable!("opened above") };
        writer.put(key, value)?;
        *bytes += key.len() + value.len();
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), BackendError> {
        self.close_current()?;
        let mut opts = rocksdb::IngestExternalFileOptions::default();
        opts.set_move_files(true);
        for space in Keyspace::ALL {
            let paths: Vec<&PathBuf> = self.files.iter().filter(|(s, _)| *s == space).map(|(_, p)| p).collect();
            if !paths.is_empty() {
                self.backend.db.ingest_external_file_cf_opts(self.backend.cf(space)?, &opts, paths)?;
            }
        }
        self.backend.flush()
    }
}

impl Drop for RocksBulkLoad<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
            Some(db) => scan_db(db, space, start, end, true, visit),
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

/// The column family that holds `space` in `db`.
fn cf_in(db: &Db, space: Keyspace) -> Result<&ColumnFamily, BackendError> {
    db.cf_handle(space.name()).ok_or_else(|| BackendError::new(format!("missing column family {}", space.name())))
}

/// A scan; `once` for a read of everything front to back, which reads
/// ahead and leaves the block cache alone.
fn scan_db(
    db: &Db,
    space: Keyspace,
    start: &[u8],
    end: Option<&[u8]>,
    once: bool,
    visit: &mut ScanVisitor<'_>,
) -> Result<(), BackendError> {
    if matches!(end, Some(e) if e <= start) {
        return Ok(());
    }
    let cf = cf_in(db, space)?;
    let mut opts = ReadOptions::default();
    if once {
        opts.fill_cache(false);
        opts.set_readahead_size(2 << 20);
    }
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
