//! The raft log and hard state: a durable [`LogEngine`] underneath, a
//! recent-entries cache on top, together implementing [`raft::Storage`].
//!
//! raft-rs asks for entries and terms on its hot path (every Ready hands out
//! committed entries read back from storage), so the tail of the log is kept
//! in memory; older entries are read from the engine on demand.

use std::collections::VecDeque;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::engine::{LogEngine, LogWrite};
use crate::RaftNodeError;

/// How many recent entries stay in memory; enough for followers that are a
/// little behind and for every committed-but-unapplied entry under load.
const CACHE_ENTRIES: usize = 8192;
/// Entries read from the engine at a time when older ones are asked for.
const ENGINE_READ_CHUNK: u64 = 256;

pub struct RaftLogStore {
    engine: Box<dyn LogEngine>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry before the first one kept (0/0 for a log
    /// that was never compacted).
    compacted: (u64, u64),
    last_index: u64,
    /// Contiguous tail of the log, ending at `last_index`.
    cache: VecDeque<Entry>,
    /// The latest state snapshot the state machine prepared, for followers
    /// behind the compacted log.
    snapshot: Option<Snapshot>,
    /// Set when raft asked for a snapshot newer than the prepared one; the
    /// driver passes the wish on to the state machine.
    snapshot_wanted: std::cell::Cell<bool>,
}

impl RaftLogStore {
    /// Opens the log kept by `engine`. A log that has never been written is
    /// bootstrapped with `voters` as its configuration and term 1, so the
    /// first election is for term 2, as with etcd.
    pub fn open(engine: Box<dyn LogEngine>, voters: &[u64]) -> Result<Self, RaftNodeError> {
        let persisted = engine.load()?;
        let mut store = RaftLogStore {
            engine,
            hard_state: persisted.hard_state,
            conf_state: persisted.conf_state,
            compacted: persisted.compacted,
            last_index: persisted.last_index,
            cache: VecDeque::new(),
            snapshot: None,
            snapshot_wanted: std::cell::Cell::new(false),
        };
        if store.conf_state == ConfState::default() {
            if store.last_index != 0 {
                return Err(RaftNodeError::Corrupt("raft log has entries but no configuration".into()));
            }
            let mut conf_state = ConfState::default();
            conf_state.set_voters(voters.to_vec());
            let mut hard_state = HardState::default();
            hard_state.set_term(1);
            store.engine.write(LogWrite {
                hard_state: Some(&hard_state),
                conf_state: Some(&conf_state),
                sync: true,
                ..LogWrite::default()
            })?;
            store.conf_state = conf_state;
            store.hard_state = hard_state;
        }
        let first_cached = store.last_index.saturating_sub(CACHE_ENTRIES as u64).max(store.compacted.0) + 1;
        if first_cached <= store.last_index {
            store.cache = store.engine.entries(first_cached, store.last_index + 1)?.into();
        }
        Ok(store)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Durably appends `entries` (replacing any conflicting suffix) together
    /// with `hard_state`, in one write, synced unless it only moves the
    /// commit index (raft's MustSync: a lost commit index is relearnt, as
    /// in [`RaftLogStore::set_commit`]), which spares a follower or a leader
    /// of several members a second fsync per write.
    /// Returns whether the write was synced.
    pub fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<bool, RaftNodeError> {
        let truncate_after = entries.first().map(|e| e.index - 1).filter(|&before| before < self.last_index);
        if let Some(first) = entries.first() {
            if first.index <= self.compacted.0 {
                return Err(RaftNodeError::Corrupt(format!(
                    "append at {} overlaps the compacted log (up to {})",
                    first.index, self.compacted.0
                )));
            }
            if first.index > self.last_index + 1 {
                return Err(RaftNodeError::Corrupt(format!(
                    "append at {} leaves a gap after {}",
                    first.index, self.last_index
                )));
            }
        }
        let data: Vec<&[u8]> =
            if cfg!(feature = "failpoints") { entries.iter().map(|e| &e.data[..]).collect() } else { Vec::new() };
        let vote_or_term_moved =
            hard_state.is_some_and(|hs| hs.term != self.hard_state.term || hs.vote != self.hard_state.vote);
        let sync = !entries.is_empty() || vote_or_term_moved;
        crate::failpoints::fault_point("raft-log-before-sync", &data);
        self.engine.write(LogWrite {
            truncate_after,
            old_last_index: self.last_index,
            entries,
            hard_state,
            sync,
            ..LogWrite::default()
        })?;
        crate::failpoints::fault_point("raft-log-after-sync", &data);
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(first) = entries.first() {
            while self.cache.back().is_some_and(|e| e.index >= first.index) {
                self.cache.pop_back();
            }
            if self.cache.back().is_some_and(|e| e.index + 1 != first.index) {
                self.cache.clear();
            }
            self.cache.extend(entries.iter().cloned());
            while self.cache.len() > CACHE_ENTRIES {
                self.cache.pop_front();
            }
            self.last_index = entries.last().map_or(self.last_index, |e| e.index);
        }
        Ok(sync)
    }

    /// Records a commit index learnt after the entries were persisted. Not
    /// synced: a lost commit index is relearnt from the leader or the quorum.
    /// Written at once all the same, before anything up to it is applied:
    /// after a process crash the log's commit index covers everything the
    /// member applied and served, so the member replays all of it into its
    /// store (which keeps no WAL) before it serves again.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftNodeError> {
        self.hard_state.set_commit(commit);
        let hs = self.hard_state.clone();
        self.engine.write(LogWrite { hard_state: Some(&hs), ..LogWrite::default() })
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), RaftNodeError> {
        self.engine.write(LogWrite { conf_state: Some(&conf_state), sync: true, ..LogWrite::default() })?;
        self.conf_state = conf_state;
        // A snapshot prepared before the change carries the old membership:
        // a member added since would refuse it (it is not in it) forever.
        self.snapshot = None;
        Ok(())
    }

    /// Drops the log up to `index` (which the state machine has durably
    /// applied); followers behind it will need a snapshot.
    pub fn compact(&mut self, index: u64) -> Result<(), RaftNodeError> {
        if index <= self.compacted.0 || index > self.last_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index).map_err(|e| RaftNodeError::Storage(e.to_string()))?;
        self.engine.write(LogWrite { compact_to: Some((index, term)), ..LogWrite::default() })?;
        self.compacted = (index, term);
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.cache.pop_front();
        }
        Ok(())
    }

    /// The state machine's snapshot at `index` (which must still be in the
    /// log, so its term is known), offered to followers from now on.
    pub fn set_snapshot(&mut self, index: u64, conf_state: ConfState, data: Vec<u8>) -> Result<(), RaftNodeError> {
        let term = raft::Storage::term(self, index).map_err(|e| RaftNodeError::Storage(e.to_string()))?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// The index of the last entry (or of the compaction boundary).
    pub fn last_log_index(&self) -> u64 {
        self.last_index
    }

    /// Whether raft asked for a snapshot since the last call.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Where the log starts: everything up to this index is in a snapshot
    /// (the state machine's, or one from the leader).
    pub fn snapshot_index(&self) -> u64 {
        self.compacted.0
    }

    /// A snapshot from the leader, recorded before the state machine installs
    /// it: the log now starts after it. (A crash between the two leaves the
    /// state machine behind the log's start, and the member installs the
    /// snapshot again when it restarts.)
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftNodeError> {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let mut hard_state = self.hard_state.clone();
        hard_state.set_commit(hard_state.commit.max(index));
        hard_state.set_term(hard_state.term.max(term));
        self.engine.write(LogWrite {
            truncate_after: Some(index.min(self.last_index)),
            old_last_index: self.last_index,
            hard_state: Some(&hard_state),
            conf_state: Some(meta.get_conf_state()),
            compact_to: Some((index, term)),
            sync: true,
            ..LogWrite::default()
        })?;
        self.hard_state = hard_state;
        self.conf_state = meta.get_conf_state().clone();
        self.compacted = (index, term);
        self.last_index = index;
        self.cache.clear();
        Ok(())
    }

    fn first_index(&self) -> u64 {
        self.compacted.0 + 1
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let first = self.cache.front()?.index;
        if index < first {
            return None;
        }
        self.cache.get((index - first) as usize)
    }
}

fn storage_error(err: RaftNodeError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(err)))
}

impl raft::Storage for RaftLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        // raft-rs asks for everything up to the last index and cuts at
        // `max_size` (1 MiB per append): reading or cloning past that point
        // would make catching up a follower 10,000 entries behind quadratic
        // in its lag, on the raft thread, which then misses its heartbeats.
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        // raft-rs wants at least one entry even when it alone exceeds max_size.
        let mut take = |entry: Entry, out: &mut Vec<Entry>| {
            let entry_size = protobuf::Message::compute_size(&entry) as u64;
            if !out.is_empty() && size + entry_size > max_size {
                return false;
            }
            size += entry_size;
            out.push(entry);
            true
        };
        let from_cache = self.cache.front().map_or(u64::MAX, |e| e.index);
        let mut index = low;
        while index < high.min(from_cache) {
            let upto = (index + ENGINE_READ_CHUNK).min(high).min(from_cache);
            for entry in self.engine.entries(index, upto).map_err(storage_error)? {
                if !take(entry, &mut out) {
                    return Ok(out);
                }
            }
            index = upto;
        }
        for index in index..high {
            match self.cached(index) {
                Some(entry) => {
                    if !take(entry.clone(), &mut out) {
                        break;
                    }
                }
                None => return Err(raft::Error::Store(StorageError::Unavailable)),
            }
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if idx < self.compacted.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(entry) = self.cached(idx) {
            return Ok(entry.term);
        }
        let entries = self.engine.entries(idx, idx + 1).map_err(storage_error)?;
        entries.first().map(|e| e.term).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(RaftLogStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A follower needs entries the log no longer has. A prepared snapshot
        // at or after what it asks for, whose membership has the follower,
        // will do; otherwise the state machine is asked for one and raft asks
        // again later.
        if let Some(snapshot) = &self.snapshot {
            let meta = snapshot.get_metadata();
            let index = meta.index;
            let conf = meta.get_conf_state();
            let knows_follower = conf.voters.contains(&to) || conf.learners.contains(&to);
            if index >= request_index && index >= self.compacted.0 && knows_follower {
                return Ok(snapshot.clone());
            }
        }
        self.snapshot_wanted.set(true);
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage;

    use super::*;
    use crate::engine::MemLogEngine;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Default::default() }
    }

    #[test]
    fn fresh_log_is_bootstrapped_at_term_one() {
        let store = RaftLogStore::open(Box::new(MemLogEngine::default()), &[7]).unwrap();
        let state = store.initial_state().unwrap();
        assert_eq!(state.hard_state.term, 1);
        assert_eq!(state.conf_state.voters, vec![7]);
        assert_eq!(Storage::first_index(&store).unwrap(), 1);
        assert_eq!(Storage::last_index(&store).unwrap(), 0);
        assert_eq!(store.term(0).unwrap(), 0);
    }

    #[test]
    fn append_replaces_conflicting_suffix_and_survives_reopen() {
        let engine = MemLogEngine::default();
        let mut store = RaftLogStore::open(Box::new(engine.clone()), &[1]).unwrap();
        store.append(&[entry(1, 2), entry(2, 2), entry(3, 2)], None).unwrap();
        store.append(&[entry(2, 3)], None).unwrap();
        assert_eq!(Storage::last_index(&store).unwrap(), 2);
        assert_eq!(store.term(2).unwrap(), 3);
        assert!(store.term(3).is_err());

        let reopened = RaftLogStore::open(Box::new(engine), &[1]).unwrap();
        assert_eq!(Storage::last_index(&reopened).unwrap(), 2);
        let ents = reopened.entries(1, 3, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(ents.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 2), (2, 3)]);
    }

    /// Entries and votes are synced before raft may act on them; a Ready
    /// that only moves the commit index is not (etcd's MustSync), so a power
    /// loss may take it back, never an entry or a vote.
    #[test]
    fn only_a_commit_index_goes_unsynced() {
        let engine = MemLogEngine::default();
        let mut store = RaftLogStore::open(Box::new(engine.clone()), &[1]).unwrap();
        let mut hs = HardState { term: 2, vote: 1, commit: 0, ..Default::default() };
        store.append(&[entry(1, 2), entry(2, 2)], Some(&hs)).unwrap();
        hs.commit = 2;
        store.append(&[], Some(&hs)).unwrap();
        let lost = RaftLogStore::open(Box::new(engine.after_power_loss()), &[1]).unwrap();
        assert_eq!(Storage::last_index(&lost).unwrap(), 2);
        assert_eq!((lost.hard_state().term, lost.hard_state().vote, lost.hard_state().commit), (2, 1, 0));

        hs.vote = 0;
        hs.term = 3;
        store.append(&[], Some(&hs)).unwrap();
        let kept = RaftLogStore::open(Box::new(engine.after_power_loss()), &[1]).unwrap();
        assert_eq!((kept.hard_state().term, kept.hard_state().commit), (3, 2));
    }

    #[test]
    fn entries_read_no_further_than_max_size() {
        /// Counts the entries the engine hands out.
        struct Counting(MemLogEngine, std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl LogEngine for Counting {
            fn load(&self) -> Result<crate::engine::PersistedLog, RaftNodeError> {
                self.0.load()
            }
            fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>, RaftNodeError> {
                let entries = self.0.entries(low, high)?;
                self.1.fetch_add(entries.len(), std::sync::atomic::Ordering::Relaxed);
                Ok(entries)
            }
            fn write(&self, write: crate::engine::LogWrite<'_>) -> Result<(), RaftNodeError> {
                self.0.write(write)
            }
        }
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let engine = MemLogEngine::default();
        let mut store = RaftLogStore::open(Box::new(Counting(engine.clone(), read.clone())), &[1]).unwrap();
        let total = 3 * CACHE_ENTRIES as u64;
        let entries: Vec<Entry> = (1..=total).map(|i| entry(i, 2)).collect();
        store.append(&entries, None).unwrap();
        // A follower at the start of the log: one append's worth is read,
        // not the whole log behind it.
        let one = protobuf::Message::compute_size(&entry(1, 2)) as u64;
        let got = store.entries(1, total + 1, one * 10, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(got.len(), 10);
        let engine_reads = read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(engine_reads <= ENGINE_READ_CHUNK as usize, "{engine_reads} entries read for 10");
        // Across the engine and the cache, in order.
        let got = store
            .entries(
                total - CACHE_ENTRIES as u64 - 5,
                total - CACHE_ENTRIES as u64 + 5,
                None,
                GetEntriesContext::empty(false),
            )
            .unwrap();
        let indexes: Vec<u64> = got.iter().map(|e| e.index).collect();
        let first = total - CACHE_ENTRIES as u64 - 5;
        assert_eq!(indexes, (first..first + 10).collect::<Vec<_>>());
    }

    #[test]
    fn entries_respect_max_size_but_return_at_least_one() {
        let mut store = RaftLogStore::open(Box::new(MemLogEngine::default()), &[1]).unwrap();
        store.append(&[entry(1, 2), entry(2, 2), entry(3, 2)], None).unwrap();
        let one = store.entries(1, 4, 1, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(one.len(), 1);
        let all = store.entries(1, 4, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn gap_in_append_is_refused() {
        let mut store = RaftLogStore::open(Box::new(MemLogEngine::default()), &[1]).unwrap();
        assert!(store.append(&[entry(2, 2)], None).is_err());
    }

    #[test]
    fn compaction_and_snapshots_survive_reopen() {
        let engine = MemLogEngine::default();
        let mut store = RaftLogStore::open(Box::new(engine.clone()), &[1]).unwrap();
        store.append(&(1..=10).map(|i| entry(i, 2)).collect::<Vec<_>>(), None).unwrap();
        store.compact(6).unwrap();
        assert_eq!(Storage::first_index(&store).unwrap(), 7);
        assert_eq!(store.term(6).unwrap(), 2);
        assert!(matches!(
            store.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(store.snapshot(6, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
        assert!(store.take_snapshot_wanted(), "raft's wish reaches the state machine");
        let mut members = ConfState::default();
        members.set_voters(vec![1, 2]);
        store.set_snapshot(8, members, b"state".to_vec()).unwrap();
        assert_eq!(store.snapshot(6, 2).unwrap().get_metadata().index, 8);
        // A member added after the snapshot was made is not in it, and would
        // refuse it: the state machine is asked for a newer one.
        assert!(store.snapshot(6, 3).is_err());
        assert!(store.take_snapshot_wanted());

        let reopened = RaftLogStore::open(Box::new(engine.clone()), &[1]).unwrap();
        assert_eq!(Storage::first_index(&reopened).unwrap(), 7);
        assert_eq!(Storage::last_index(&reopened).unwrap(), 10);
        assert_eq!(reopened.term(6).unwrap(), 2);

        // A follower installs a leader's snapshot past its whole log.
        let mut follower = RaftLogStore::open(Box::new(MemLogEngine::default()), &[1]).unwrap();
        follower.append(&[entry(1, 2), entry(2, 2)], None).unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 50;
        snapshot.mut_metadata().term = 3;
        snapshot.mut_metadata().mut_conf_state().set_voters(vec![1, 2, 3]);
        follower.apply_snapshot(&snapshot).unwrap();
        assert_eq!((Storage::first_index(&follower).unwrap(), Storage::last_index(&follower).unwrap()), (51, 50));
        assert_eq!(follower.term(50).unwrap(), 3);
        assert_eq!(follower.hard_state().commit, 50);
        assert_eq!(follower.conf_state().voters, vec![1, 2, 3]);
        follower.append(&[entry(51, 3)], None).unwrap();
    }
}
