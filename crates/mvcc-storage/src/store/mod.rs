//! [`KvStore`]: etcd's MVCC key/value store over a [`Backend`].
//!
//! Every committed write becomes one main revision; changes inside a Txn get
//! sub revisions. Each change is stored under its revision key (see
//! `revision`), and the in-memory [`TreeIndex`] maps user keys to those
//! revisions. `consistent_index` (the raft index of the last applied entry)
//! is written in the same backend batch as the change it covers, so after a
//! crash the store is exactly the state after entry `consistent_index` and
//! raft replays the rest.
//!
//! Concurrency: `apply` calls are serialised by an upgradable read lock on
//! [`State`]; while a write computes its changes and writes its batch, ranges
//! keep running. Only folding the changes into the index takes the write lock,
//! briefly. A range holds the read lock while it picks revisions from the
//! index, then reads values with only the `compaction` lock held, so a slow
//! range never stalls apply; compaction takes that lock exclusively before it
//! deletes revisions from the backend.
//!
//! Lock order: `state` before `compaction`.
//!
//! `state` sits in an `Arc` only so the scrape-time series of
//! [`MvccMetrics`] can read it through a `Weak`; the store is its one owner.

mod auth;
mod compact;
mod hash;
mod lease;
mod members;
mod snapshot;
mod v2;

pub use lease::{LeaseRecord, RevokeOutcome};
pub use members::Identity;
pub use snapshot::{SnapshotPieces, StoreCheckpoint};
pub use v2::V2Record;
mod ops;
mod restore;
mod tx;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
use parking_lot::{RwLock, RwLockUpgradableReadGuard};

use crate::backend::{Backend, BackendError, Buffered, Keyspace, MemBackend, RocksBackend, WriteBatch};
use crate::error::MvccError;
use crate::index::{KeyRange, TreeIndex};
use crate::metrics::MvccMetrics;
use crate::revision::{self, Revision};
use tx::Tx;

pub use hash::{Crc32c, KvHash};
pub use ops::is_txn_read_only;

/// Keys of the meta keyspace (etcd's `meta` bucket names where etcd has
/// the same record; the member's identity, the auth store and the alarms
/// are Keel's own records, which an etcd snapshot keeps in buckets of
/// their own).
pub mod meta {
    pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
    pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
    pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
    pub const MEMBER_ID: &[u8] = b"member_id";
    pub const CLUSTER_ID: &[u8] = b"cluster_id";
    pub const AUTH: &[u8] = b"auth";
    pub const ALARMS: &[u8] = b"alarm";
}

/// Tells whether a lease exists, for Puts that attach one.
pub trait LeaseLookup {
    fn exists(&self, lease_id: i64) -> bool;
}

/// A [`LeaseLookup`] that knows no leases.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLeases;

impl LeaseLookup for NoLeases {
    fn exists(&self, _lease_id: i64) -> bool {
        false
    }
}

/// A committed write request, as carried by a raft entry.
#[derive(Clone, Copy, Debug)]
pub enum WriteRequest<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Compact(&'a CompactionRequest),
}

#[derive(Clone, Debug, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

/// What applying one write did.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome {
    pub response: WriteResponse,
    /// One event per change, in sub-revision order. Delete events carry the
    /// key and the delete's revision only; `prev_kv` is never filled (a
    /// watcher that wants it reads revision `mod_revision - 1`, as etcd does).
    pub events: Vec<Event>,
    /// The store revision after the write.
    pub revision: i64,
}

/// Mutable store state; guarded by `KvStore::state`. The default is only a
/// placeholder left behind when a rebuilt state is moved out of its store.
#[derive(Default)]
pub(crate) struct State {
    pub index: TreeIndex,
    /// Revision of the last completed write; 1 for an empty store.
    pub current_rev: i64,
    /// Revision of the last compaction; -1 if never compacted.
    pub compact_rev: i64,
    /// Compaction bookkeeping, so the next compaction only rescans what is new.
    pub last_compact: Option<compact::LastCompaction>,
    /// The live keys attached to a lease, and their lease: what the lease
    /// manager is rebuilt from, without reading every value back.
    pub leased: BTreeMap<Vec<u8>, i64>,
    /// Keys that exist at `current_rev` (etcd's `keys_total`); the index
    /// also holds deleted keys whose history is not compacted yet.
    pub live_keys: i64,
}

/// The revisioned key/value store. `Send + Sync`; all methods take `&self`.
pub struct KvStore {
    backend: Arc<Buffered>,
    /// Whether changes are held in the backend's buffer until
    /// [`KvStore::write_held`] (see [`KvStore::hold_writes`]).
    holding: std::sync::atomic::AtomicBool,
    state: Arc<RwLock<State>>,
    /// Held shared while reading values picked from the index, exclusively
    /// while deleting compacted revisions.
    compaction: RwLock<()>,
    consistent_index: AtomicU64,
    metrics: MvccMetrics,
    /// Called after each batch of a compaction's deletions is written, with
    /// its number from 1 (crash tests stop the process between batches).
    compaction_batch_hook: std::sync::OnceLock<CompactionBatchHook>,
}

/// See [`KvStore::set_compaction_batch_hook`].
pub type CompactionBatchHook = Box<dyn Fn(usize) + Send + Sync>;

impl KvStore {
    /// Calls `hook` after each batch of a compaction's deletions is written
    /// (with its number, from 1). Set once; for crash tests.
    pub fn set_compaction_batch_hook(&self, hook: CompactionBatchHook) {
        let _ = self.compaction_batch_hook.set(hook);
    }

    /// Opens a store on `backend`, rebuilding the index and the revision
    /// counters from what it holds.
    pub fn open(backend: Arc<dyn Backend>) -> Result<KvStore, MvccError> {
        restore::open(Arc::new(Buffered::new(backend)))
    }

    /// A store on a fresh [`MemBackend`].
    pub fn in_memory() -> KvStore {
        Self::open(Arc::new(MemBackend::new())).expect("an empty in-memory store always opens")
    }

    /// A store on a RocksDB directory (created if missing).
    pub fn open_rocksdb(dir: &Path) -> Result<KvStore, MvccError> {
        Self::open(Arc::new(RocksBackend::open(dir)?))
    }

    /// The engine, as this store reads it (with the changes it holds).
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// This store's series (etcd's backend and MVCC metrics), to register
    /// in the member's registry.
    pub fn metrics(&self) -> &MvccMetrics {
        &self.metrics
    }

    /// Revision of the last write; 1 for an empty store (the first write is 2).
    pub fn current_revision(&self) -> i64 {
        self.state.read().current_rev
    }

    /// Revision of the last compaction; -1 if the store was never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.state.read().compact_rev
    }

    /// Raft index of the last entry applied to this store.
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index.load(Ordering::Acquire)
    }

    pub fn db_size(&self) -> i64 {
        self.backend.size() as i64
    }

    pub fn db_size_in_use(&self) -> i64 {
        self.backend.size_in_use() as i64
    }

    /// Gives the space of compacted and deleted revisions back (etcd's
    /// defragment) without stopping reads or writes. Blocking, for as long
    /// as the engine rewrites its files.
    pub fn defragment(&self) -> Result<(), MvccError> {
        let _timed = self.metrics.defrag_started();
        self.backend.defragment()?;
        Ok(())
    }

    /// Keys that exist at the current revision.
    pub fn live_keys(&self) -> i64 {
        self.state.read().live_keys
    }

    /// Number of keys the index tracks (live keys plus keys whose history
    /// is not compacted yet).
    pub fn index_len(&self) -> usize {
        self.state.read().index.len()
    }

    /// A Range at the current revision (or `req.revision`).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let state = self.state.read();
        let sel = Tx::new(&state, &*self.backend, &self.metrics)
            .select(KeyRange::new(&req.key, &req.range_end), ops::range_options(req))?;
        let _values_stay = self.compaction.read();
        drop(state);
        let kvs = tx::fetch(&*self.backend, sel.items)?;
        Ok(ops::finish_range(req, tx::RangeResult { kvs, count: sel.count, rev: sel.rev }))
    }

    /// [`KvStore::range`] of one key, answered at once from memory, for a
    /// caller that must not block (an async runtime's thread): `None` when
    /// answering could wait, on the disk (the value is not cached) or on a
    /// lock (an apply or a compaction holds it), and the caller should call
    /// `range` where blocking is allowed. A range of many keys is not tried:
    /// its selection alone may take long.
    pub fn range_in_memory(&self, req: &RangeRequest) -> Option<Result<RangeResponse, MvccError>> {
        if !req.range_end.is_empty() {
            return None;
        }
        // Neither lock is waited for, so taking them in this order is safe.
        let _values_stay = self.compaction.try_read()?;
        let state = self.state.try_read()?;
        let tx = Tx::new(&state, &*self.backend, &self.metrics);
        let sel = match tx.select(KeyRange::new(&req.key, &req.range_end), ops::range_options(req)) {
            Ok(sel) => sel,
            Err(err) => return Some(Err(err)),
        };
        match tx::fetch_in_memory(&*self.backend, sel.items) {
            Ok(Some(kvs)) => Some(Ok(ops::finish_range(req, tx::RangeResult { kvs, count: sel.count, rev: sel.rev }))),
            Ok(None) => {
                // Counted when it is read again.
                tx.uncount_ranges();
                None
            }
            Err(err) => Some(Err(err)),
        }
    }

    /// Runs a Txn that only reads (see [`is_txn_read_only`]) without going
    /// through raft; etcd serves such txns from the read path too.
    /// Returns `None` when the txn contains writes.
    pub fn read_txn(&self, req: &TxnRequest) -> Option<Result<TxnResponse, MvccError>> {
        if !is_txn_read_only(req) {
            return None;
        }
        let state = self.state.read();
        let tx = Tx::new(&state, &*self.backend, &self.metrics);
        let plan = match ops::plan_read_txn(&tx, req) {
            Ok(plan) => plan,
            Err(err) => return Some(Err(err)),
        };
        let rev = tx.end_rev();
        drop(tx);
        // As a Range: the values stay until compaction, which waits for
        // this lock; the store's state may move on meanwhile.
        let _values_stay = self.compaction.read();
        drop(state);
        Some(plan.fetch(&*self.backend).map(|mut response| {
            response.header = ops::header(rev);
            response
        }))
    }

    /// Applies one committed write at raft index `index`. On success the
    /// state change and `consistent_index = index` are written in one atomic
    /// batch; on error nothing is written and `consistent_index` stays (see
    /// [`KvStore::advance_consistent_index`]). The caller must skip entries
    /// with `index <= consistent_index()` when replaying after a restart.
    ///
    /// A [`MvccError::is_fatal`] error means storage failed; the store must
    /// not be used further.
    pub fn apply(
        &self,
        index: u64,
        req: WriteRequest<'_>,
        leases: &dyn LeaseLookup,
    ) -> Result<WriteOutcome, MvccError> {
        let guard = self.state.upgradable_read();
        if let WriteRequest::Compact(c) = req {
            return self.compact(guard, index, c);
        }
        let (response, changes, batch) = {
            let mut tx = match req {
                WriteRequest::Txn(_) => Tx::new(&guard, &*self.backend, &self.metrics),
                _ => Tx::single_write(&guard, &*self.backend, &self.metrics),
            };
            let response = match req {
                WriteRequest::Put(p) => {
                    if p.lease != 0 && !leases.exists(p.lease) {
                        return Err(MvccError::LeaseNotFound);
                    }
                    WriteResponse::Put(ops::put(&mut tx, p)?)
                }
                WriteRequest::DeleteRange(d) => WriteResponse::DeleteRange(ops::delete_range(&mut tx, d)?),
                WriteRequest::Txn(t) => WriteResponse::Txn(ops::txn(&mut tx, t, leases)?),
                WriteRequest::Compact(_) => unreachable!("handled above"),
            };
            let (changes, batch) = tx.into_parts();
            (response, changes, batch)
        };
        let (revision, events) = self.commit(guard, index, changes, batch)?;
        Ok(WriteOutcome { response, events, revision })
    }

    /// Writes `batch` with `consistent_index = index` atomically, then folds
    /// the transaction's changes into the index under the write lock.
    /// Returns the store revision after the write and its events.
    fn commit(
        &self,
        guard: RwLockUpgradableReadGuard<'_, State>,
        index: u64,
        changes: Vec<KeyValue>,
        mut batch: WriteBatch,
    ) -> Result<(i64, Vec<Event>), MvccError> {
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        let mut state = RwLockUpgradableReadGuard::upgrade(guard);
        let revision = fold_changes(&mut state, &changes)?;
        self.consistent_index.store(index, Ordering::Release);
        drop(state);
        Ok((revision, to_events(changes, revision)))
    }

    /// Records that raft entry `index` was applied without touching the
    /// key space (lease, membership or auth entries), so a restart does not
    /// replay it against this store.
    pub fn advance_consistent_index(&self, index: u64) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(1);
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }

    /// From now until [`KvStore::write_held`], changes are held in memory
    /// rather than written to the engine one batch each: the applier holds
    /// the changes of one batch of committed entries and writes them in one
    /// engine write. Reads see held changes at once; everything that needs
    /// the engine complete (sync, checkpoints, defragmentation) writes them
    /// out first. Nothing is synced either way, so this changes only the
    /// cost: a crash loses held changes as it loses unsynced ones, with
    /// `consistent_index` among them.
    pub fn hold_writes(&self) {
        self.holding.store(true, Ordering::Release);
    }

    /// Writes the held changes to the engine, in one batch, and stops
    /// holding them.
    pub fn write_held(&self) -> Result<(), MvccError> {
        self.holding.store(false, Ordering::Release);
        let timer = self.metrics.commit_timer();
        self.backend.write_held()?;
        timer.observe_duration();
        Ok(())
    }

    /// Writes one batch to the engine (or holds it, see
    /// [`KvStore::hold_writes`]), timed as etcd times its backend commits.
    /// Every replicated change goes through here.
    pub(crate) fn write_batch(&self, batch: WriteBatch) -> Result<(), BackendError> {
        if self.holding.load(Ordering::Acquire) {
            return self.backend.hold(batch);
        }
        let timer = self.metrics.commit_timer();
        let written = self.backend.write(batch);
        timer.observe_duration();
        written
    }

    /// Forces everything written so far to stable storage.
    pub fn sync(&self) -> Result<(), MvccError> {
        Ok(self.backend.sync()?)
    }

    /// The changes of revisions `[start_rev, end_rev)` as watch events, in
    /// revision order, at most `limit` of them (`end_rev <= 0`: up to the
    /// current revision). For watchers catching up from history; fails with
    /// `Compacted` when `start_rev` is below the compaction point.
    pub fn events_between(&self, start_rev: i64, end_rev: i64, limit: usize) -> Result<Vec<Event>, MvccError> {
        let state = self.state.read();
        if start_rev < state.compact_rev {
            return Err(MvccError::Compacted);
        }
        let end_rev = if end_rev <= 0 { state.current_rev + 1 } else { end_rev };
        let _values_stay = self.compaction.read();
        drop(state);
        let start = Revision::new(start_rev.max(0), 0).to_bytes();
        let end = Revision::new(end_rev.max(0), 0).to_bytes();
        let mut events = Vec::new();
        let mut failure = None;
        self.backend.scan(Keyspace::Revisions, &start, Some(&end), &mut |k, v| {
            if events.len() >= limit {
                return false;
            }
            match decode_event(k, v) {
                Ok(ev) => events.push(ev),
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            true
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(events),
        }
    }

    /// Every live key with a lease attached, as `(key, lease)`: what a lease
    /// manager re-attaches after a restart (etcd's restore `keyToLease`).
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>, MvccError> {
        Ok(self.state.read().leased.iter().map(|(key, &lease)| (key.clone(), lease)).collect())
    }
}

fn put_consistent_index(batch: &mut WriteBatch, index: u64) {
    batch.put(Keyspace::Meta, meta::CONSISTENT_INDEX, index.to_be_bytes());
}

/// Folds a write's changes into the index; returns the new current revision.
fn fold_changes(state: &mut State, changes: &[KeyValue]) -> Result<i64, MvccError> {
    if changes.is_empty() {
        return Ok(state.current_rev);
    }
    let rev = state.current_rev + 1;
    let ascending_tombstones = changes.len() > 1
        && changes.iter().all(|kv| kv.mod_revision == 0)
        && changes.windows(2).all(|pair| pair[0].key < pair[1].key);
    if ascending_tombstones {
        // A DeleteRange's: one walk along the index instead of a search per key.
        let tombstones =
            changes.iter().enumerate().map(|(sub, kv)| (kv.key.as_slice(), Revision::new(rev, sub as i64)));
        state.index.tombstone_ascending(tombstones)?;
    } else {
        for (sub, kv) in changes.iter().enumerate() {
            let idx_rev = Revision::new(rev, sub as i64);
            if kv.mod_revision != 0 {
                state.index.put(&kv.key, idx_rev)?;
            } else {
                state.index.tombstone(&kv.key, idx_rev)?;
            }
        }
    }
    for kv in changes {
        track_lease(&mut state.leased, kv);
        if kv.mod_revision == 0 {
            state.live_keys -= 1;
        } else if kv.version == 1 {
            state.live_keys += 1;
        }
    }
    state.current_rev = rev;
    Ok(rev)
}

/// Keeps `leased` up to date with one change (a tombstone has no lease).
pub(crate) fn track_lease(leased: &mut BTreeMap<Vec<u8>, i64>, kv: &KeyValue) {
    if kv.lease != 0 {
        leased.insert(kv.key.clone(), kv.lease);
    } else if !leased.is_empty() {
        leased.remove(&kv.key);
    }
}

fn to_events(changes: Vec<KeyValue>, rev: i64) -> Vec<Event> {
    changes
        .into_iter()
        .map(|mut kv| {
            let kind = if kv.mod_revision == 0 {
                kv.mod_revision = rev;
                EventType::Delete
            } else {
                EventType::Put
            };
            Event { r#type: kind as i32, kv: Some(kv), prev_kv: None }
        })
        .collect()
}

fn decode_event(k: &[u8], v: &[u8]) -> Result<Event, MvccError> {
    use prost::Message;
    let (rev, tombstone) =
        revision::decode_key(k).ok_or_else(|| MvccError::Corrupt(format!("bad revision key {k:?}")))?;
    let mut kv = KeyValue::decode(v)?;
    let kind = if tombstone {
        kv.mod_revision = rev.main;
        EventType::Delete
    } else {
        EventType::Put
    };
    Ok(Event { r#type: kind as i32, kv: Some(kv), prev_kv: None })
}

#[cfg(test)]
mod tests;
