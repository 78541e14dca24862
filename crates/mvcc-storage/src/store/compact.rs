//! Compaction: forget history at or below a revision, keeping for every key
//! the revision a read at the compaction point still needs.
//!
//! Unlike etcd, which deletes compacted revisions from bolt in background
//! batches, the deletions are written in the same batch as the new compaction
//! point and `consistent_index`, under the exclusive `compaction` lock, so the
//! backend never holds a half-done compaction. `scheduledCompactRev` is still
//! written (equal to `finishedCompactRev`) so a data directory reads like
//! etcd's, and a scheduled-but-unfinished compaction found on open is resumed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use keel_proto::etcdserverpb::{CompactionRequest, CompactionResponse};
use parking_lot::RwLockUpgradableReadGuard;

use super::{meta, ops, put_consistent_index, KvStore, State, WriteOutcome, WriteResponse};
use crate::backend::{Backend, Keyspace, WriteBatch};
use crate::error::MvccError;
use crate::revision::{self, Revision, REV_BYTES_LEN};

/// What the previous compaction kept, so the next one only rescans the
/// revisions written since (etcd's `lastCompactMainRev` / `lastKeep`).
pub(crate) struct LastCompaction {
    rev: i64,
    keep: Vec<Revision>,
}

impl KvStore {
    /// Applies a CompactionRequest (called by `apply` with the apply lock held).
    pub(super) fn compact(
        &self,
        guard: RwLockUpgradableReadGuard<'_, State>,
        index: u64,
        req: &CompactionRequest,
    ) -> Result<WriteOutcome, MvccError> {
        let rev = req.revision;
        if rev <= guard.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > guard.current_rev {
            return Err(MvccError::FutureRevision);
        }
        let current_rev = guard.current_rev;
        self.compact_locked(guard, rev, index)?;
        // etcd answers with the current revision; compaction does not bump it.
        Ok(WriteOutcome {
            response: WriteResponse::Compact(CompactionResponse { header: ops::header(current_rev) }),
            events: Vec::new(),
            revision: current_rev,
        })
    }

    /// Compacts at `rev` (already validated) and records `index` as applied.
    pub(super) fn compact_locked(
        &self,
        guard: RwLockUpgradableReadGuard<'_, State>,
        rev: i64,
        index: u64,
    ) -> Result<(), MvccError> {
        let keep = guard.index.keep_for_compact(rev);
        let mut batch = deletions(&*self.backend, guard.last_compact.as_ref(), rev, &keep)?;
        let deleted = batch.len();
        let rev_bytes = Revision::new(rev, 0).to_bytes();
        batch.put(Keyspace::Meta, meta::SCHEDULED_COMPACT, rev_bytes);
        batch.put(Keyspace::Meta, meta::FINISHED_COMPACT, rev_bytes);
        put_consistent_index(&mut batch, index);

        let mut state = RwLockUpgradableReadGuard::upgrade(guard);
        let _no_readers = self.compaction.write();
        self.backend.write(batch)?;
        state.index.compact(rev);
        state.compact_rev = rev;
        state.last_compact = Some(LastCompaction { rev, keep: keep.into_iter().collect() });
        self.consistent_index.store(index, Ordering::Release);
        tracing::info!(compact_revision = rev, deleted_revisions = deleted, "compacted");
        Ok(())
    }
}

/// Deletes for every stored revision at or below `rev` that is not in `keep`.
fn deletions(
    backend: &dyn Backend,
    last: Option<&LastCompaction>,
    rev: i64,
    keep: &HashSet<Revision>,
) -> Result<WriteBatch, MvccError> {
    let mut batch = WriteBatch::new();
    let from = match last {
        Some(last) => {
            // Kept revisions are always puts: compaction never keeps a
            // tombstone (see `KeyIndex::compact`).
            for r in &last.keep {
                if !keep.contains(r) {
                    batch.delete(Keyspace::Revisions, r.to_bytes().to_vec());
                }
            }
            last.rev + 1
        }
        None => 0,
    };
    let start = Revision::new(from, 0).to_bytes();
    let end = Revision::new(rev + 1, 0).to_bytes();
    let mut bad_key = None;
    backend.scan(Keyspace::Revisions, &start, Some(&end), &mut |k, _| {
        match revision::decode_key(k) {
            Some((r, _)) if keep.contains(&r) => {}
            Some(_) => batch.delete(Keyspace::Revisions, k.to_vec()),
            None => {
                bad_key = Some(k.to_vec());
                return false;
            }
        }
        true
    })?;
    if let Some(k) = bad_key {
        return Err(MvccError::Corrupt(format!(
            "revisions keyspace holds a non-revision key of {} bytes (expected {REV_BYTES_LEN} or {})",
            k.len(),
            REV_BYTES_LEN + 1
        )));
    }
    Ok(batch)
}
