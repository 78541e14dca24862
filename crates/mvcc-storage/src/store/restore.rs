//! Opening a store: rebuild the index and counters from the backend
//! (etcd's `store.restore`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use keel_proto::mvccpb::KeyValue;
use parking_lot::RwLock;
use prost::Message;

use super::{meta, KvStore, State};
use crate::backend::{Backend, Buffered, Keyspace};
use crate::error::MvccError;
use crate::index::{KeyIndex, TreeIndex};
use crate::metrics::MvccMetrics;
use crate::revision::{self, Revision, REV_BYTES_LEN};

pub(super) fn open(backend: Arc<Buffered>) -> Result<KvStore, MvccError> {
    let mut index = IndexBuilder::default();
    let mut failure = None;
    let start = Revision::new(1, 0).to_bytes();
    backend.scan(Keyspace::Revisions, &start, None, &mut |k, v| match index.add(k, v) {
        Ok(()) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    assemble(backend, index, None)
}

/// The key index rebuilt from stored revisions, fed in revision order.
pub(super) struct IndexBuilder {
    index: TreeIndex,
    current_rev: i64,
    leased: BTreeMap<Vec<u8>, i64>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder { index: TreeIndex::new(), current_rev: 1, leased: BTreeMap::new() }
    }
}

impl IndexBuilder {
    /// Takes in the next stored revision (key and value as stored).
    /// Keys below revision 1 hold no key value and are skipped.
    pub(super) fn add(&mut self, k: &[u8], v: &[u8]) -> Result<(), MvccError> {
        if k < &Revision::new(1, 0).to_bytes()[..] {
            return Ok(());
        }
        self.current_rev = restore_one(&mut self.index, &mut self.leased, k, v)?;
        Ok(())
    }
}

/// The store on `backend` with the index `built` from its revisions: the
/// counters come from the meta keyspace, and a compaction a crash cut off
/// is finished. A store rebuilt in place of another (a snapshot installed)
/// goes on with the other's `metrics`.
pub(super) fn assemble(
    backend: Arc<Buffered>,
    built: IndexBuilder,
    metrics: Option<MvccMetrics>,
) -> Result<KvStore, MvccError> {
    let consistent_index = match backend.get(Keyspace::Meta, meta::CONSISTENT_INDEX)? {
        Some(v) => u64::from_be_bytes(
            v.as_slice().try_into().map_err(|_| MvccError::Corrupt("consistent_index is not 8 bytes".into()))?,
        ),
        None => 0,
    };
    let compact_rev = read_rev_meta(&*backend, meta::FINISHED_COMPACT)?.unwrap_or(-1);
    let scheduled = read_rev_meta(&*backend, meta::SCHEDULED_COMPACT)?;
    let IndexBuilder { index, current_rev, leased } = built;
    // Compaction may have removed every revision up to the compaction point.
    let current_rev = current_rev.max(compact_rev);
    let live_keys = index.iter().filter(|(_, ki)| ki.is_live()).count() as i64;

    tracing::info!(
        current_revision = current_rev,
        compact_revision = compact_rev,
        consistent_index,
        keys = index.len(),
        "mvcc store restored"
    );
    let state = Arc::new(RwLock::new(State { index, current_rev, compact_rev, last_compact: None, leased, live_keys }));
    let metrics = metrics.unwrap_or_else(|| {
        let engine: Arc<dyn Backend> = backend.clone();
        MvccMetrics::new(Arc::downgrade(&state), Arc::downgrade(&engine))
    });
    let store = KvStore {
        backend,
        holding: Default::default(),
        state,
        compaction: RwLock::new(()),
        consistent_index: AtomicU64::new(consistent_index),
        metrics,
        compaction_batch_hook: std::sync::OnceLock::new(),
    };
    if let Some(rev) = scheduled.filter(|&rev| rev > compact_rev && rev <= current_rev) {
        tracing::info!(scheduled_compact_revision = rev, "resuming scheduled compaction");
        let guard = store.state.upgradable_read();
        store.compact_locked(guard, rev, consistent_index)?;
    }
    Ok(store)
}

/// Replays one stored revision into the index; returns its main revision.
fn restore_one(
    index: &mut TreeIndex,
    leased: &mut BTreeMap<Vec<u8>, i64>,
    k: &[u8],
    v: &[u8],
) -> Result<i64, MvccError> {
    let (rev, tombstone) =
        revision::decode_key(k).ok_or_else(|| MvccError::Corrupt(format!("bad revision key {k:?}")))?;
    let kv = KeyValue::decode(v)?;
    super::track_lease(leased, &kv);
    match index.key_index_mut(&kv.key) {
        Some(ki) if tombstone => {
            if let Err(e) = ki.tombstone(rev) {
                // etcd logs and goes on: a tombstone kept by compaction for a
                // key whose earlier history is gone.
                tracing::warn!(revision = %rev, error = %e, "skipping tombstone during restore");
            }
        }
        Some(ki) => ki.put(rev)?,
        // A tombstone with no surviving history: nothing is visible.
        None if tombstone => {}
        None => index.insert(kv.key, KeyIndex::restore(Revision::new(kv.create_revision, 0), rev, kv.version)),
    }
    Ok(rev.main)
}

fn read_rev_meta(backend: &dyn Backend, key: &[u8]) -> Result<Option<i64>, MvccError> {
    match backend.get(Keyspace::Meta, key)? {
        None => Ok(None),
        Some(v) if v.len() == REV_BYTES_LEN => Ok(revision::decode_key(&v).map(|(rev, _)| rev.main)),
        Some(v) => Err(MvccError::Corrupt(format!(
            "meta {} is {} bytes, not a revision",
            String::from_utf8_lossy(key),
            v.len()
        ))),
    }
}
