//! The whole store, for a follower that fell behind the compacted raft log.
//! The leader freezes it at an applied index (a backend checkpoint: no
//! copy) and reads it out in pieces of bounded size as the transfer goes;
//! the follower installs the pieces in place of its own state, a piece at a
//! time. Neither side ever holds the whole store in memory.
//!
//! Installing is not one atomic write (it could be larger than memory), so
//! it is bracketed by a marker: a store opened with the marker set was cut
//! off mid-install and must be given the same snapshot again
//! ([`KvStore::snapshot_install_interrupted`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use keel_proto::keelpb::{SnapshotData, SnapshotEntry};
use prost::Message;

use super::{meta, restore, KvStore};
use crate::backend::{Backend as _, Frozen, Keyspace, WriteBatch};
use crate::error::MvccError;
use crate::metrics::SnapshotGuard;

/// Set while a snapshot is being installed (see the module docs).
const INSTALLING: &[u8] = b"keel_snapshot_installing";

/// Keys cleared per write batch when a snapshot replaces the store.
const CLEAR_BATCH: usize = 10_000;

/// Meta keys that belong to the member, not to the replicated state.
fn is_local(space: Keyspace, key: &[u8]) -> bool {
    space == Keyspace::Meta && (key == meta::MEMBER_ID || key == meta::CLUSTER_ID || key == INSTALLING)
}

/// The store frozen at one raft index, ready to be read out in pieces.
pub struct StoreCheckpoint {
    index: u64,
    /// The store revision the frozen state holds.
    revision: i64,
    frozen: Box<dyn Frozen>,
    /// Times the checkpoint's life, which is the transfer it serves.
    _open: SnapshotGuard,
}

impl std::fmt::Debug for StoreCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCheckpoint").field("index", &self.index).finish_non_exhaustive()
    }
}

impl StoreCheckpoint {
    /// The raft index the frozen state reflects.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The store revision the frozen state holds.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Visits the frozen entries of `space` with `start <= key < end` (no
    /// upper bound when `end` is `None`) in key order until `visit` returns
    /// `false`: for readers that lay the state out in another format.
    pub fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), MvccError> {
        Ok(self.frozen.scan(space, start, end, visit)?)
    }

    /// The replicated state as encoded `SnapshotData` pieces of about
    /// `piece_bytes` each (one entry may make a piece larger), read from
    /// the checkpoint as the pieces are taken.
    pub fn pieces(self: &Arc<Self>, piece_bytes: usize) -> SnapshotPieces {
        SnapshotPieces { checkpoint: self.clone(), piece_bytes: piece_bytes.max(1), space: 0, from: Vec::new() }
    }
}

/// Iterator over a checkpoint's pieces (see [`StoreCheckpoint::pieces`]).
pub struct SnapshotPieces {
    checkpoint: Arc<StoreCheckpoint>,
    piece_bytes: usize,
    /// Which of [`Keyspace::ALL`] is being read; past the end when done.
    space: usize,
    /// Where the next piece starts in that keyspace.
    from: Vec<u8>,
}

impl Iterator for SnapshotPieces {
    type Item = Result<Vec<u8>, MvccError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        while bytes < self.piece_bytes {
            let &space = Keyspace::ALL.get(self.space)?;
            let mut last = None;
            let scanned = self.checkpoint.frozen.scan(space, &self.from, None, &mut |k, v| {
                if !is_local(space, k) {
                    entries.push(SnapshotEntry {
                        keyspace: space.name().to_owned(),
                        key: k.to_vec(),
                        value: v.to_vec(),
                    });
                    bytes += k.len() + v.len();
                }
                last = Some(k.to_vec());
                bytes < self.piece_bytes
            });
            if let Err(err) = scanned {
                self.space = Keyspace::ALL.len();
                return Some(Err(err.into()));
            }
            match last {
                // Stopped inside the keyspace: resume right after the last key.
                Some(mut key) if bytes >= self.piece_bytes => {
                    key.push(0);
                    self.from = key;
                }
                _ => {
                    self.space += 1;
                    self.from.clear();
                    if self.space == Keyspace::ALL.len() {
                        break;
                    }
                }
            }
        }
        if entries.is_empty() && self.space >= Keyspace::ALL.len() {
            return None;
        }
        Some(Ok(SnapshotData { entries }.encode_to_vec()))
    }
}

impl KvStore {
    /// Freezes every replicated key of every keyspace at the current
    /// applied index. Holds off writes only while the checkpoint is made.
    pub fn checkpoint(&self) -> Result<Arc<StoreCheckpoint>, MvccError> {
        let no_writes = self.state.upgradable_read();
        let _values_stay = self.compaction.read();
        let frozen = self.backend.checkpoint()?;
        let _open = self.metrics.snapshot_opened();
        let revision = no_writes.current_rev;
        Ok(Arc::new(StoreCheckpoint { index: self.consistent_index(), revision, frozen, _open }))
    }

    /// True when the store was cut off while installing a snapshot: its
    /// state is part old, part new, until the snapshot is installed again.
    pub fn snapshot_install_interrupted(&self) -> Result<bool, MvccError> {
        Ok(self.backend.get(Keyspace::Meta, INSTALLING)?.is_some())
    }

    /// Replaces the whole replicated state with a leader's snapshot, read
    /// piece by piece from `pieces` (as [`StoreCheckpoint::pieces`] made
    /// them); this member's identity stays. Durable when it returns, then
    /// the index is rebuilt. Readers wait meanwhile.
    pub fn install_snapshot(
        &self,
        pieces: impl IntoIterator<Item = Result<Vec<u8>, MvccError>>,
    ) -> Result<(), MvccError> {
        let mut state = self.state.write();
        let _values = self.compaction.write();
        let mut marker = WriteBatch::new();
        marker.put(Keyspace::Meta, INSTALLING, b"1".to_vec());
        self.write_batch(marker)?;
        self.backend.sync()?;
        // From here to the flush, writes skip the engine's log: the marker
        // covers a crash meanwhile, and the flush makes them durable.
        for space in Keyspace::ALL {
            self.clear(space)?;
        }
        // The index is built as the revisions go by, in revision order,
        // rather than read back from the engine afterwards.
        let mut index = restore::IndexBuilder::default();
        let mut load = self.backend.bulk_load()?;
        for piece in pieces {
            let piece = SnapshotData::decode(piece?.as_slice())?;
            for entry in piece.entries {
                let space = Keyspace::ALL
                    .into_iter()
                    .find(|s| s.name() == entry.keyspace)
                    .ok_or_else(|| MvccError::Corrupt(format!("snapshot names keyspace {:?}", entry.keyspace)))?;
                if is_local(space, &entry.key) {
                    continue;
                }
                if space == Keyspace::Revisions {
                    index.add(&entry.key, &entry.value)?;
                }
                load.put(space, &entry.key, &entry.value)?;
            }
        }
        // Everything above (the clearing too) reaches the disk before the
        // marker goes.
        load.finish()?;
        let mut done = WriteBatch::new();
        done.delete(Keyspace::Meta, INSTALLING);
        self.write_batch(done)?;
        self.backend.sync()?;
        let fresh = restore::assemble(self.backend.clone(), index, Some(self.metrics.clone()))?;
        self.consistent_index.store(fresh.consistent_index(), Ordering::Release);
        // The fresh store is dropped here; only its state is kept.
        *state = std::mem::take(&mut *fresh.state.write());
        Ok(())
    }

    /// Deletes every replicated key of `space`, a bounded batch at a time.
    fn clear(&self, space: Keyspace) -> Result<(), MvccError> {
        let mut from = Vec::new();
        loop {
            let mut batch = WriteBatch::new();
            let mut last = None;
            self.backend.scan(space, &from, None, &mut |k, _| {
                if !is_local(space, k) {
                    batch.delete(space, k.to_vec());
                }
                last = Some(k.to_vec());
                batch.len() < CLEAR_BATCH
            })?;
            let full = batch.len() >= CLEAR_BATCH;
            self.backend.write_unlogged(batch)?;
            match last {
                Some(mut key) if full => {
                    key.push(0);
                    from = key;
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::{PutRequest, RangeRequest};

    use super::*;
    use crate::backend::MemBackend;
    use crate::store::members::Identity;
    use crate::{LeaseRecord, NoLeases, WriteRequest};

    fn put(store: &KvStore, index: u64, key: &str, value: &str) {
        let put = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        store.apply(index, WriteRequest::Put(&put), &NoLeases).unwrap();
    }

    #[test]
    fn a_snapshot_installs_the_leaders_state_and_keeps_the_followers_identity() {
        let leader = KvStore::in_memory();
        leader.bootstrap(Identity { member_id: 1, cluster_id: 9 }, &[]).unwrap();
        put(&leader, 1, "a", "1");
        put(&leader, 2, "b", "2");
        put(&leader, 3, "a", "3");
        leader.apply_lease_grant(4, LeaseRecord { id: 7, ttl: 60, remaining_ttl: 0 }).unwrap();
        let checkpoint = leader.checkpoint().unwrap();
        assert_eq!(checkpoint.index(), 4);
        put(&leader, 5, "after", "the checkpoint");
        // Small pieces, so the transfer takes several.
        let pieces: Vec<_> = checkpoint.pieces(16).collect();
        assert!(pieces.len() > 3, "{} pieces", pieces.len());

        let dir = tempfile::tempdir().unwrap();
        {
            let follower = KvStore::open_rocksdb(dir.path()).unwrap();
            follower.bootstrap(Identity { member_id: 2, cluster_id: 9 }, &[]).unwrap();
            put(&follower, 1, "stale", "x");
            follower.install_snapshot(pieces).unwrap();
            assert!(!follower.snapshot_install_interrupted().unwrap());
            assert_eq!(follower.consistent_index(), 4);
            assert_eq!(follower.current_revision(), 4);
            let all = follower.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap();
            let kvs: Vec<_> = all.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision)).collect();
            assert_eq!(kvs, vec![(b"a".to_vec(), b"3".to_vec(), 4), (b"b".to_vec(), b"2".to_vec(), 3)]);
            let old = follower.range(&RangeRequest { key: b"a".to_vec(), revision: 2, ..Default::default() }).unwrap();
            assert_eq!(old.kvs[0].value, b"1", "history comes along");
        }
        let reopened = KvStore::open_rocksdb(dir.path()).unwrap();
        assert_eq!(reopened.identity().unwrap(), Some(Identity { member_id: 2, cluster_id: 9 }));
        assert_eq!(reopened.lease_records().unwrap().len(), 1);
        assert_eq!(reopened.consistent_index(), 4);
    }

    #[test]
    fn an_install_cut_off_midway_is_known_and_can_be_done_again() {
        let leader = KvStore::in_memory();
        leader.bootstrap(Identity { member_id: 1, cluster_id: 9 }, &[]).unwrap();
        for index in 1..=50 {
            put(&leader, index, &format!("key-{index:03}"), "value");
        }
        let checkpoint = leader.checkpoint().unwrap();
        let pieces: Vec<_> = checkpoint.pieces(100).map(Result::unwrap).collect();

        let follower = KvStore::open(std::sync::Arc::new(MemBackend::new())).unwrap();
        follower.bootstrap(Identity { member_id: 2, cluster_id: 9 }, &[]).unwrap();
        let cut = pieces.iter().take(3).cloned().map(Ok).chain([Err(MvccError::Corrupt("stream cut".into()))]);
        assert!(follower.install_snapshot(cut).is_err());
        assert!(follower.snapshot_install_interrupted().unwrap());

        follower.install_snapshot(pieces.into_iter().map(Ok)).unwrap();
        assert!(!follower.snapshot_install_interrupted().unwrap());
        assert_eq!(follower.consistent_index(), 50);
        let all = follower.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap();
        assert_eq!(all.kvs.len(), 50);
        assert_eq!(follower.identity().unwrap(), Some(Identity { member_id: 2, cluster_id: 9 }));
    }

    #[test]
    fn pieces_cover_every_keyspace_once_whatever_their_size() {
        let store = KvStore::in_memory();
        store.bootstrap(Identity { member_id: 1, cluster_id: 9 }, &[]).unwrap();
        for index in 1..=20 {
            put(&store, index, &format!("k{index}"), "v");
        }
        let checkpoint = store.checkpoint().unwrap();
        let entries = |piece_bytes| -> Vec<(String, Vec<u8>)> {
            checkpoint
                .pieces(piece_bytes)
                .flat_map(|piece| SnapshotData::decode(piece.unwrap().as_slice()).unwrap().entries)
                .map(|e| (e.keyspace, e.key))
                .collect()
        };
        let whole = entries(usize::MAX);
        assert!(whole.len() > 20);
        for piece_bytes in [1, 7, 50, 1000] {
            assert_eq!(entries(piece_bytes), whole, "pieces of {piece_bytes} bytes");
        }
    }
}
