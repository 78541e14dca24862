//! The storage engine under the MVCC store: a few ordered byte keyspaces with
//! point reads, forward range scans and atomic write batches.
//!
//! The trait is deliberately small so the in-memory engine (always compiled,
//! used by tests and `--experimental-in-memory` style setups) and RocksDB
//! behave the same; `conformance` holds the one test suite both must pass.
//! Nothing above this module may depend on RocksDB types.
//!
//! Invariants every engine keeps:
//! - keys within a keyspace iterate in unsigned byte order;
//! - a [`WriteBatch`] is applied atomically across keyspaces, and its
//!   operations apply in order (a later op on the same key wins);
//! - reads observe every batch whose `write` returned.
//!
//! Writes are not fsynced by default: Keel's raft log is the durable record,
//! and on restart entries after the persisted `consistent_index` are applied
//! again. [`Backend::sync`] forces everything written so far to stable storage
//! (used before snapshots and at shutdown).

mod buffered;
mod mem;
mod rocks;

#[cfg(test)]
mod conformance;

pub use buffered::Buffered;
pub use mem::MemBackend;
pub use rocks::{RocksBackend, RocksOptions};

/// The separate keyspaces (RocksDB column families; etcd's bolt buckets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keyspace {
    /// Revision key -> prost-encoded `mvccpb::KeyValue` (etcd's `key` bucket).
    Revisions,
    /// Small bookkeeping values such as `consistent_index` (etcd's `meta` bucket).
    Meta,
    /// Lease id (8 bytes big-endian) -> granted TTL (etcd's `lease` bucket).
    Leases,
    /// Member id (8 bytes big-endian) -> prost-encoded `etcdserverpb::Member`
    /// (etcd's `members` bucket): the cluster's membership as applied.
    Members,
    /// The v2 keys API's store (`keel-v2store`'s records: nodes, the event
    /// history, the index). etcd keeps it outside its backend, so no etcd
    /// bucket corresponds and snapshots in etcd's format leave it out.
    V2,
}

impl Keyspace {
    pub const ALL: [Keyspace; 5] =
        [Keyspace::Revisions, Keyspace::Meta, Keyspace::Leases, Keyspace::Members, Keyspace::V2];

    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Revisions => "key",
            Keyspace::Meta => "meta",
            Keyspace::Leases => "lease",
            Keyspace::Members => "members",
            Keyspace::V2 => "v2",
        }
    }

    fn slot(self) -> usize {
        match self {
            Keyspace::Revisions => 0,
            Keyspace::Meta => 1,
            Keyspace::Leases => 2,
            Keyspace::Members => 3,
            Keyspace::V2 => 4,
        }
    }
}

/// A failure of the storage engine itself (I/O, corruption detected by the
/// engine). Always fatal for the store: the caller cannot fix it by retrying
/// the same request.
#[derive(Debug, thiserror::Error)]
#[error("storage backend: {message}")]
pub struct BackendError {
    message: String,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        BackendError { message: message.into() }
    }
}

impl From<rocksdb::Error> for BackendError {
    fn from(e: rocksdb::Error) -> Self {
        BackendError::new(e.into_string())
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put { space: Keyspace, key: Vec<u8>, value: Vec<u8> },
    Delete { space: Keyspace, key: Vec<u8> },
}

/// An ordered list of puts and deletes applied atomically by [`Backend::write`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        WriteBatch { ops: Vec::with_capacity(n) }
    }

    pub fn put(&mut self, space: Keyspace, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put { space, key: key.into(), value: value.into() });
    }

    pub fn delete(&mut self, space: Keyspace, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete { space, key: key.into() });
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}

/// Called for each entry of a scan, in key order; return `false` to stop.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// An ordered key/value engine. Blocking: call it off the async runtime.
pub trait Backend: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Values for many keys at once, in the order of `keys`. Engines that can
    /// batch point lookups (RocksDB's MultiGet) override this.
    fn multi_get(&self, space: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        keys.iter().map(|k| self.get(space, k)).collect()
    }

    /// [`Backend::multi_get`] from memory alone, never waiting on the disk:
    /// `None` when some value is not in memory (the caller reads it again
    /// where blocking is allowed). The default knows nothing is in memory.
    fn multi_get_in_memory(
        &self,
        _space: Keyspace,
        _keys: &[&[u8]],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
        Ok(None)
    }

    /// Visits the entries with `start <= key < end` (no upper bound when `end`
    /// is `None`) in ascending key order until `visit` returns `false`.
    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError>;

    /// Applies `batch` atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), BackendError>;

    /// Makes every write that has returned durable on stable storage.
    fn sync(&self) -> Result<(), BackendError>;

    /// Applies `batch` atomically, bypassing the engine's write-ahead log
    /// where it has one: for bulk loads. Durable only after
    /// [`Backend::flush`]; a crash before that may lose any part of it,
    /// even with logged writes after it surviving.
    fn write_unlogged(&self, batch: WriteBatch) -> Result<(), BackendError> {
        self.write(batch)
    }

    /// Makes every write that has returned durable, unlogged ones included.
    fn flush(&self) -> Result<(), BackendError> {
        self.sync()
    }

    /// A bulk load of many entries, faster than batches where the engine
    /// can (RocksDB writes its table files directly and ingests them).
    fn bulk_load(&self) -> Result<Box<dyn BulkLoad + '_>, BackendError> {
        Ok(Box::new(BatchedLoad { backend: self, batch: WriteBatch::new(), bytes: 0 }))
    }

    /// Rewrites the engine's files without the space deleted data still
    /// holds (etcd's defragmentation), while reads and writes go on: the
    /// engine never stops serving for it. Blocking; engines that reclaim
    /// space as they go do nothing.
    fn defragment(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Bytes the engine occupies (etcd's `db_size`); may be approximate.
    fn size(&self) -> u64;

    /// Bytes holding live data (etcd's `db_size_in_use`); may be approximate.
    fn size_in_use(&self) -> u64;

    /// The engine's contents as of now, readable while the engine goes on
    /// taking writes: what a leader streams to a follower that needs a
    /// snapshot. RocksDB makes a checkpoint (hard links to its files), so
    /// it costs neither a copy nor memory.
    fn checkpoint(&self) -> Result<Box<dyn Frozen>, BackendError>;
}

/// Entries going into an engine in bulk (see [`Backend::bulk_load`]).
pub trait BulkLoad {
    /// Adds one entry; within a keyspace, keys come in ascending order.
    fn put(&mut self, space: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError>;
    /// Makes every entry put part of the engine, durably, along with every
    /// write (unlogged ones included) made before it.
    fn finish(self: Box<Self>) -> Result<(), BackendError>;
}

/// A bulk load as unlogged batches of about [`BATCHED_LOAD_BYTES`], flushed
/// at the end: for engines with nothing faster.
struct BatchedLoad<'a, B: Backend + ?Sized> {
    backend: &'a B,
    batch: WriteBatch,
    bytes: usize,
}

const BATCHED_LOAD_BYTES: usize = 4 << 20;

impl<B: Backend + ?Sized> BulkLoad for BatchedLoad<'_, B> {
    fn put(&mut self, space: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.batch.put(space, key, value);
        self.bytes += key.len() + value.len();
        if self.bytes >= BATCHED_LOAD_BYTES {
            self.backend.write_unlogged(std::mem::take(&mut self.batch))?;
            self.bytes = 0;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), BackendError> {
        self.backend.write_unlogged(std::mem::take(&mut self.batch))?;
        self.backend.flush()
    }
}

/// A read-only copy of an engine at one moment (see [`Backend::checkpoint`]);
/// whatever it holds on disk goes when it is dropped.
pub trait Frozen: Send + Sync + 'static {
    /// As [`Backend::scan`].
    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError>;
}
