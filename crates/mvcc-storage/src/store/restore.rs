//! Opening a store: rebuild the index and counters from the backend
//! (etcd's `store.restore`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use keel_proto::mvccpb::KeyValue;
use parking_lot::RwLock;
use prost::Message;

use super::{meta, KvStore, State};
use crate::backend::{Backend, Keyspace};
use crate::error::MvccError;
use crate::index::{KeyIndex, TreeIndex};
use crate::revision::{self, Revision, REV_BYTES_LEN};

pub(super) fn open(backend: Arc<dyn Backend>) -> Result<KvStore, MvccError> {
    let consistent_index = match backend.get(Keyspace::Meta, meta::CONSISTENT_INDEX)? {
        Some(v) => u64::from_be_bytes(
            v.as_slice().try_into().map_err(|_| MvccError::Corrupt("consistent_index is not 8 bytes".into()))?,
        ),
        None => 0,
    };
    let compact_rev = read_rev_meta(&*backend, meta::FINISHED_COMPACT)?.unwrap_or(-1);
    let scheduled = read_rev_meta(&*backend, meta::SCHEDULED_COMPACT)?;

    let mut index = TreeIndex::new();
    let mut current_rev = 1;
    let mut failure = None;
    let start = Revision::new(1, 0).to_bytes();
    backend.scan(Keyspace::Revisions, &start, None, &mut |k, v| {
        match restore_one(&mut index, k, v) {
            Ok(main) => current_rev = main,
            Err(e) => {
                failure = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // Compaction may have removed every revision up to the compaction point.
    current_rev = current_rev.max(compact_rev);

    tracing::info!(
        current_revision = current_rev,
        compact_revision = compact_rev,
        consistent_index,
        keys = index.len(),
        "mvcc store restored"
    );
    let store = KvStore {
        backend,
        state: RwLock::new(State { index, current_rev, compact_rev, last_compact: None }),
        compaction: RwLock::new(()),
        consistent_index: AtomicU64::new(consistent_index),
    };
    if let Some(rev) = scheduled.filter(|&rev| rev > compact_rev && rev <= current_rev) {
        tracing::info!(scheduled_compact_revision = rev, "resuming scheduled compaction");
        let guard = store.state.upgradable_read();
        store.compact_locked(guard, rev, consistent_index)?;
    }
    Ok(store)
}

/// Replays one stored revision into the index; returns its main revision.
fn restore_one(index: &mut TreeIndex, k: &[u8], v: &[u8]) -> Result<i64, MvccError> {
    let (rev, tombstone) =
        revision::decode_key(k).ok_or_else(|| MvccError::Corrupt(format!("bad revision key {k:?}")))?;
    let kv = KeyValue::decode(v)?;
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
