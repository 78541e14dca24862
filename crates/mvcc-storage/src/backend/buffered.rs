//! [`Buffered`]: an engine whose writes can be held in memory, readable at
//! once, and handed to it later in one batch (etcd's batch transaction with
//! its read buffer).
//!
//! The applier applies a batch of committed entries one by one, and each
//! entry's change is one engine batch. Written one by one, each costs a
//! RocksDB write group and a sequence number of its own; held, the batch's
//! changes reach the engine in one write, each key once. Nothing about
//! durability changes: the store's writes are not synced either way, the
//! raft log is the durable record, and `consistent_index` travels with the
//! changes it covers, so a crash that loses held writes leaves the engine
//! at an earlier applied index, from which the log is replayed.
//!
//! Readers see held writes: a point read looks in the buffer before the
//! engine, a scan merges the two. The buffer is emptied only after the
//! engine has its contents, so a key a reader does not find in the buffer
//! is in the engine (or was never written).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};

use super::{Backend, BackendError, BatchOp, BulkLoad, Frozen, Keyspace, ScanVisitor, WriteBatch};

/// Held writes above which [`Buffered::hold`] writes them out at once:
/// a big delete or compaction should not sit in memory twice.
const MAX_HELD_BYTES: usize = 4 << 20;

/// See the module documentation.
pub struct Buffered {
    engine: Arc<dyn Backend>,
    /// Serialises writes, so the buffer cannot change while it is written out.
    writing: Mutex<()>,
    buffer: RwLock<Buffer>,
    /// Whether `buffer` holds anything; reads skip its lock when not.
    any_held: AtomicBool,
}

#[derive(Default)]
struct Buffer {
    /// The latest held operation on each key (`None`: deleted), by
    /// keyspace: all the engine needs, since the held batches reach it in
    /// one atomic write, where only each key's last operation counts.
    latest: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Keyspace::ALL.len()],
    bytes: usize,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.latest.iter().all(BTreeMap::is_empty)
    }

    /// The held operations as one batch, keyspace by keyspace in key order.
    fn into_batch(self) -> WriteBatch {
        let mut ops = Vec::with_capacity(self.latest.iter().map(BTreeMap::len).sum());
        for (space, latest) in Keyspace::ALL.into_iter().zip(self.latest) {
            ops.extend(latest.into_iter().map(|(key, value)| match value {
                Some(value) => BatchOp::Put { space, key, value },
                None => BatchOp::Delete { space, key },
            }));
        }
        WriteBatch { ops }
    }
}

impl Buffered {
    pub fn new(engine: Arc<dyn Backend>) -> Buffered {
        Buffered { engine, writing: Mutex::new(()), buffer: RwLock::default(), any_held: AtomicBool::new(false) }
    }

    /// Holds `batch` instead of writing it: readable now, written to the
    /// engine with the next write of any kind (or [`Buffered::write_held`]).
    /// Batches stay atomic: the engine gets all of the held ones in one
    /// write.
    pub fn hold(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let writing = self.writing.lock();
        let full = {
            let mut buffer = self.buffer.write();
            let Buffer { latest, bytes } = &mut *buffer;
            for op in batch.into_ops() {
                match op {
                    BatchOp::Put { space, key, value } => {
                        *bytes += key.len() + value.len();
                        latest[space.slot()].insert(key, Some(value));
                    }
                    BatchOp::Delete { space, key } => {
                        *bytes += key.len();
                        latest[space.slot()].insert(key, None);
                    }
                }
            }
            self.any_held.store(!buffer.is_empty(), Ordering::SeqCst);
            buffer.bytes >= MAX_HELD_BYTES
        };
        if full {
            self.write_out(&writing, None)?;
        }
        Ok(())
    }

    /// Writes whatever is held to the engine, in one batch.
    pub fn write_held(&self) -> Result<(), BackendError> {
        let writing = self.writing.lock();
        self.write_out(&writing, None)
    }

    /// The held operations, then `extra`'s, in one engine write; then the
    /// buffer forgets them (the engine answers for them from now on).
    fn write_out(&self, _writing: &MutexGuard<'_, ()>, extra: Option<WriteBatch>) -> Result<(), BackendError> {
        if !self.holds_any() {
            return match extra {
                Some(batch) => self.engine.write(batch),
                None => Ok(()),
            };
        }
        // Copied out under the read lock: readers go on finding the held
        // values in the buffer until the engine has them.
        let mut batch = {
            let buffer = self.buffer.read();
            Buffer { latest: buffer.latest.clone(), bytes: 0 }.into_batch()
        };
        if let Some(extra) = extra {
            batch.ops.extend(extra.into_ops());
        }
        self.engine.write(batch)?;
        *self.buffer.write() = Buffer::default();
        self.any_held.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Writes out what is held before an operation that must find the
    /// engine complete (sync, checkpoint, bulk load, defragmentation).
    fn settle(&self) -> Result<MutexGuard<'_, ()>, BackendError> {
        let writing = self.writing.lock();
        self.write_out(&writing, None)?;
        Ok(writing)
    }

    fn holds_any(&self) -> bool {
        self.any_held.load(Ordering::SeqCst)
    }

    /// What the held writes add, roughly (overwrites counted in full).
    fn held_bytes(&self) -> u64 {
        if !self.holds_any() {
            return 0;
        }
        self.buffer.read().bytes as u64
    }

    /// The held value of `key`: `Some(None)` if a held write deleted it,
    /// `None` if nothing held touches it.
    fn held(&self, space: Keyspace, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if !self.holds_any() {
            return None;
        }
        self.buffer.read().latest[space.slot()].get(key).cloned()
    }

    /// Looks `keys` up in the buffer; the engine is asked, with `read`, only
    /// for those the buffer does not know. `None` if `read` says so.
    fn merged_get(
        &self,
        space: Keyspace,
        keys: &[&[u8]],
        read: impl FnOnce(&[&[u8]]) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError>,
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
        let mut values: Vec<Option<Option<Vec<u8>>>> = {
            let buffer = self.buffer.read();
            keys.iter().map(|k| buffer.latest[space.slot()].get(*k).cloned()).collect()
        };
        let missing: Vec<&[u8]> = keys.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
        if !missing.is_empty() {
            let Some(read) = read(&missing)? else { return Ok(None) };
            let mut read = read.into_iter();
            for value in values.iter_mut().filter(|v| v.is_none()) {
                *value = Some(read.next().flatten());
            }
        }
        Ok(Some(values.into_iter().map(Option::flatten).collect()))
    }
}

impl Backend for Buffered {
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        match self.held(space, key) {
            Some(value) => Ok(value),
            None => self.engine.get(space, key),
        }
    }

    fn multi_get(&self, space: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if !self.holds_any() {
            return self.engine.multi_get(space, keys);
        }
        let values = self.merged_get(space, keys, |missing| self.engine.multi_get(space, missing).map(Some))?;
        Ok(values.expect("the engine answered every key"))
    }

    fn multi_get_in_memory(
        &self,
        space: Keyspace,
        keys: &[&[u8]],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
        if !self.holds_any() {
            return self.engine.multi_get_in_memory(space, keys);
        }
        self.merged_get(space, keys, |missing| self.engine.multi_get_in_memory(space, missing))
    }

    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError> {
        if !self.holds_any() || matches!(end, Some(e) if e <= start) {
            return self.engine.scan(space, start, end, visit);
        }
        // A copy, so the engine is read without the buffer's lock held: if
        // the buffer is written out meanwhile, the engine has the same.
        let held: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let buffer = self.buffer.read();
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            buffer.latest[space.slot()]
                .range::<[u8], _>((Bound::Included(start), upper))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut held = held.into_iter().peekable();
        let mut go = true;
        self.engine.scan(space, start, end, &mut |k, v| {
            while let Some((hk, _)) = held.peek() {
                if hk.as_slice() > k {
                    break;
                }
                let (hk, hv) = held.next().expect("peeked");
                let shadows = hk.as_slice() == k;
                if let Some(hv) = hv {
                    if !visit(&hk, &hv) {
                        go = false;
                        return false;
                    }
                }
                if shadows {
                    return true;
                }
            }
            go = visit(k, v);
            go
        })?;
        if go {
            for (hk, hv) in held {
                if let Some(hv) = hv {
                    if !visit(&hk, &hv) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let writing = self.writing.lock();
        self.write_out(&writing, Some(batch))
    }

    fn sync(&self) -> Result<(), BackendError> {
        let _writing = self.settle()?;
        self.engine.sync()
    }

    fn write_unlogged(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let _writing = self.settle()?;
        self.engine.write_unlogged(batch)
    }

    fn flush(&self) -> Result<(), BackendError> {
        let _writing = self.settle()?;
        self.engine.flush()
    }

    fn bulk_load(&self) -> Result<Box<dyn BulkLoad + '_>, BackendError> {
        drop(self.settle()?);
        self.engine.bulk_load()
    }

    fn defragment(&self) -> Result<(), BackendError> {
        drop(self.settle()?);
        self.engine.defragment()
    }

    fn size(&self) -> u64 {
        self.engine.size() + self.held_bytes()
    }

    fn size_in_use(&self) -> u64 {
        self.engine.size_in_use() + self.held_bytes()
    }

    fn checkpoint(&self) -> Result<Box<dyn Frozen>, BackendError> {
        let _writing = self.settle()?;
        self.engine.checkpoint()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::backend::MemBackend;

    /// A [`Buffered`] that holds every write and writes out after every
    /// `every`-th, so the conformance cases read data split between the
    /// buffer and the engine.
    pub(crate) struct Holding {
        buffered: Buffered,
        every: usize,
        writes: AtomicUsize,
    }

    impl Holding {
        pub(crate) fn new(engine: Arc<dyn Backend>, every: usize) -> Holding {
            Holding { buffered: Buffered::new(engine), every, writes: AtomicUsize::new(0) }
        }
    }

    impl Backend for Holding {
        fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
            self.buffered.get(space, key)
        }
        fn multi_get(&self, space: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
            self.buffered.multi_get(space, keys)
        }
        fn multi_get_in_memory(
            &self,
            space: Keyspace,
            keys: &[&[u8]],
        ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
            self.buffered.multi_get_in_memory(space, keys)
        }
        fn scan(
            &self,
            space: Keyspace,
            start: &[u8],
            end: Option<&[u8]>,
            visit: &mut ScanVisitor<'_>,
        ) -> Result<(), BackendError> {
            self.buffered.scan(space, start, end, visit)
        }
        fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
            self.buffered.hold(batch)?;
            if (self.writes.fetch_add(1, Ordering::SeqCst) + 1) % self.every == 0 {
                self.buffered.write_held()?;
            }
            Ok(())
        }
        fn sync(&self) -> Result<(), BackendError> {
            self.buffered.sync()
        }
        fn bulk_load(&self) -> Result<Box<dyn BulkLoad + '_>, BackendError> {
            self.buffered.bulk_load()
        }
        fn size(&self) -> u64 {
            self.buffered.size()
        }
        fn size_in_use(&self) -> u64 {
            self.buffered.size_in_use()
        }
        fn checkpoint(&self) -> Result<Box<dyn Frozen>, BackendError> {
            self.buffered.checkpoint()
        }
    }

    fn collect(b: &dyn Backend, start: &[u8], end: Option<&[u8]>, stop_after: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        b.scan(Keyspace::Revisions, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            out.len() < stop_after
        })
        .unwrap();
        out
    }

    fn batch(ops: &[(&[u8], Option<&[u8]>)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (key, value) in ops {
            match value {
                Some(value) => batch.put(Keyspace::Revisions, *key, *value),
                None => batch.delete(Keyspace::Revisions, *key),
            }
        }
        batch
    }

    fn pairs(items: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        items.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn held_writes_are_read_over_the_engine_and_reach_it_in_one_write() {
        let engine = Arc::new(MemBackend::new());
        let b = Buffered::new(engine.clone());
        b.write(batch(&[(b"a", Some(b"1")), (b"c", Some(b"3")), (b"e", Some(b"5"))])).unwrap();
        // Held: b put, c deleted, e overwritten, f put, then e again.
        b.hold(batch(&[(b"b", Some(b"2")), (b"c", None), (b"e", Some(b"50"))])).unwrap();
        b.hold(batch(&[(b"f", Some(b"6")), (b"e", Some(b"500"))])).unwrap();

        assert_eq!(engine.get(Keyspace::Revisions, b"b").unwrap(), None, "held, not written");
        assert_eq!(b.get(Keyspace::Revisions, b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(b.get(Keyspace::Revisions, b"c").unwrap(), None, "a held delete hides the engine's value");
        assert_eq!(
            b.multi_get(Keyspace::Revisions, &[b"f", b"a", b"c", b"e", b"z"]).unwrap(),
            vec![Some(b"6".to_vec()), Some(b"1".to_vec()), None, Some(b"500".to_vec()), None]
        );
        let everything = pairs(&[(b"a", b"1"), (b"b", b"2"), (b"e", b"500"), (b"f", b"6")]);
        assert_eq!(collect(&b, b"", None, usize::MAX), everything);
        assert_eq!(collect(&b, b"b", Some(b"f"), usize::MAX), everything[1..3].to_vec());
        assert_eq!(collect(&b, b"", None, 2), everything[..2].to_vec(), "a scan stops where the visitor says");
        assert_eq!(collect(&b, b"f", Some(b"b"), usize::MAX), Vec::new());

        b.write_held().unwrap();
        assert_eq!(collect(&*engine, b"", None, usize::MAX), everything, "the engine has what was held");
        assert_eq!(collect(&b, b"", None, usize::MAX), everything);
    }

    #[test]
    fn any_other_write_takes_the_held_ones_first() {
        let engine = Arc::new(MemBackend::with_power_loss());
        let b = Buffered::new(engine.clone());
        b.hold(batch(&[(b"k", Some(b"held"))])).unwrap();
        b.write(batch(&[(b"k", Some(b"written")), (b"l", Some(b"1"))])).unwrap();
        assert_eq!(engine.get(Keyspace::Revisions, b"k").unwrap().as_deref(), Some(&b"written"[..]));

        b.hold(batch(&[(b"m", Some(b"held"))])).unwrap();
        b.sync().unwrap();
        let after_power_loss = engine.after_power_loss();
        assert_eq!(after_power_loss.get(Keyspace::Revisions, b"m").unwrap().as_deref(), Some(&b"held"[..]));

        b.hold(batch(&[(b"n", Some(b"held"))])).unwrap();
        let frozen = b.checkpoint().unwrap();
        let mut keys = Vec::new();
        frozen
            .scan(Keyspace::Revisions, b"", None, &mut |k, _| {
                keys.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(keys, [&b"k"[..], b"l", b"m", b"n"].map(|k| k.to_vec()), "a checkpoint holds the held writes");
    }

    #[test]
    fn a_big_held_batch_is_written_out_at_once() {
        let engine = Arc::new(MemBackend::new());
        let b = Buffered::new(engine.clone());
        b.hold(batch(&[(b"small", Some(b"1"))])).unwrap();
        assert_eq!(engine.get(Keyspace::Revisions, b"small").unwrap(), None);
        let big = vec![0u8; MAX_HELD_BYTES];
        b.hold(batch(&[(b"big", Some(&big))])).unwrap();
        assert_eq!(engine.get(Keyspace::Revisions, b"small").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(engine.get(Keyspace::Revisions, b"big").unwrap().map(|v| v.len()), Some(big.len()));
    }
}
