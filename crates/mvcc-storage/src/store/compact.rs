//! Compaction: forget history at or below a revision, keeping for every key
//! the revision a read at the compaction point still needs.
//!
//! As etcd does: the compaction point (`scheduledCompactRev`) is recorded
//! first, with `consistent_index`, and the in-memory index forgets the older
//! revisions at once, so reads below it are refused from then on. The
//! compacted revisions are then deleted in batches of at most
//! [`COMPACTION_BATCH`] (memory and write size stay bounded, and reads go on
//! meanwhile: none can reach a compacted revision any more, and the reads
//! that selected one before are waited for first), and `finishedCompactRev`
//! is written last. A compaction interrupted by a crash is found on open
//! (scheduled past finished) and resumed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use keel_proto::etcdserverpb::{CompactionRequest, CompactionResponse};
use parking_lot::{RwLockUpgradableReadGuard, RwLockWriteGuard};

use super::{meta, ops, put_consistent_index, KvStore, State, WriteOutcome, WriteResponse};
use crate::backend::{Backend as _, Keyspace, WriteBatch};
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
        let rev_bytes = Revision::new(rev, 0).to_bytes();
        let mut batch = WriteBatch::with_capacity(2);
        batch.put(Keyspace::Meta, meta::SCHEDULED_COMPACT, rev_bytes);
        put_consistent_index(&mut batch, index);

        let mut state = RwLockUpgradableReadGuard::upgrade(guard);
        self.write_batch(batch)?;
        // Readers wait for this part only (`keep` was found above, under
        // the upgradable lock): etcd's index compaction pause.
        let paused = Instant::now();
        state.index.compact(rev);
        self.metrics.index_compacted(paused.elapsed());
        state.compact_rev = rev;
        let last = state.last_compact.replace(LastCompaction { rev, keep: keep.iter().copied().collect() });
        self.consistent_index.store(index, Ordering::Release);
        // Other writers still wait (this is the applier's turn); readers go on.
        let _state = RwLockWriteGuard::downgrade_to_upgradable(state);
        // Reads that selected revisions before the index forgot them finish
        // reading their values first.
        drop(self.compaction.write());
        let started = Instant::now();
        let deleted = delete_compacted(self, last.as_ref(), rev, &keep)?;
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(Keyspace::Meta, meta::FINISHED_COMPACT, rev_bytes);
        self.write_batch(batch)?;
        self.metrics.db_compacted(deleted, started.elapsed());
        tracing::info!(compact_revision = rev, deleted_revisions = deleted, "compacted");
        Ok(())
    }
}

impl KvStore {
    /// Moves the store's revision `by` revisions ahead and marks all
    /// history before the new revision compacted: etcdutl's `snapshot
    /// restore --bump-revision --mark-compacted`, so clients that watched
    /// the old cluster past the snapshot never see a revision again with
    /// other contents, and relist instead. The history is compacted at the
    /// latest revision (nothing lies between it and the new one); the new
    /// revision is recorded as both compaction points, which is where the
    /// store's revision is read from on open until the next write. Offline
    /// only: nothing else may use the store meanwhile. Returns the new
    /// revision.
    pub fn bump_revision_compacted(&self, by: i64) -> Result<i64, MvccError> {
        if by <= 0 {
            return Ok(self.current_revision());
        }
        let index = self.consistent_index();
        let guard = self.state.upgradable_read();
        let latest = guard.current_rev;
        let guard = if latest > guard.compact_rev {
            self.compact_locked(guard, latest, index)?;
            self.state.upgradable_read()
        } else {
            guard
        };
        let bumped =
            latest.checked_add(by).ok_or_else(|| MvccError::Corrupt(format!("revision {latest} + {by} overflows")))?;
        let rev_bytes = Revision::new(bumped, 0).to_bytes();
        let mut batch = WriteBatch::with_capacity(2);
        batch.put(Keyspace::Meta, meta::SCHEDULED_COMPACT, rev_bytes);
        batch.put(Keyspace::Meta, meta::FINISHED_COMPACT, rev_bytes);
        let mut state = RwLockUpgradableReadGuard::upgrade(guard);
        self.write_batch(batch)?;
        state.current_rev = bumped;
        state.compact_rev = bumped;
        Ok(bumped)
    }
}

/// Deletions written per batch while compacting (etcd's
/// `--experimental-compaction-batch-limit` is 1,000; a RocksDB batch of
/// this size takes about a millisecond).
pub(crate) const COMPACTION_BATCH: usize = 10_000;

/// Deletes every stored revision at or below `rev` that is not in `keep`, in
/// batches of [`COMPACTION_BATCH`]; returns how many.
fn delete_compacted(
    store: &KvStore,
    last: Option<&LastCompaction>,
    rev: i64,
    keep: &HashSet<Revision>,
) -> Result<usize, MvccError> {
    let backend = &*store.backend;
    let mut deleted = 0;
    // Each batch, from gathering it to its write, is one of etcd's
    // compaction pauses (its batches hold the backend's write lock).
    let mut batch_started = Instant::now();
    let mut batches = 0;
    let mut flush = |batch: &mut WriteBatch| -> Result<(), MvccError> {
        deleted += batch.len();
        store.write_batch(std::mem::take(batch))?;
        store.metrics.compaction_batch_written(batch_started.elapsed());
        batches += 1;
        if let Some(hook) = store.compaction_batch_hook.get() {
            hook(batches);
        }
        batch_started = Instant::now();
        Ok(())
    };
    let mut batch = WriteBatch::new();
    let from = match last {
        Some(last) => {
            // Kept revisions are always puts: compaction never keeps a
            // tombstone (see `KeyIndex::compact`).
            for r in &last.keep {
                if !keep.contains(r) {
                    batch.delete(Keyspace::Revisions, r.to_bytes().to_vec());
                    if batch.len() >= COMPACTION_BATCH {
                        flush(&mut batch)?;
                    }
                }
            }
            last.rev + 1
        }
        None => 0,
    };
    // Scan in pieces, so no batch outgrows the limit and no scan runs
    // while its own deletions are written.
    let end = Revision::new(rev + 1, 0).to_bytes();
    let mut start = Revision::new(from, 0).to_bytes().to_vec();
    loop {
        let mut bad_key = None;
        let mut next = None;
        let mut seen = 0;
        backend.scan(Keyspace::Revisions, &start, Some(&end), &mut |k, _| {
            if seen == COMPACTION_BATCH {
                next = Some(k.to_vec());
                return false;
            }
            seen += 1;
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
        if !batch.is_empty() {
            flush(&mut batch)?;
        }
        match next {
            Some(k) => start = k,
            None => return Ok(deleted),
        }
    }
}
