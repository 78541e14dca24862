//! One read or write transaction over the store: the read view plus the
//! changes a write has made so far (etcd's `storeTxnWrite`).
//!
//! A write transaction never mutates the shared index. Its changes sit in
//! `changes` (in sub-revision order) and `pending` (latest change per key),
//! and reads at the transaction's own revision merge them over the index, so
//! a Range after a Put in the same Txn sees the Put, as in etcd. Only after the
//! backend batch is written does the caller fold `changes` into the index; an
//! error anywhere before that leaves the store untouched.
//!
//! What a transaction did is added to the store's counters when it is
//! dropped, whether it succeeded or not: etcd's `metricsTxnWrite.End`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Bound;

use keel_proto::mvccpb::KeyValue;
use prost::Message;

use super::State;
use crate::backend::{Backend, Keyspace, WriteBatch};
use crate::error::MvccError;
use crate::index::KeyRange;
use crate::metrics::{MvccMetrics, TxOps};
use crate::revision::{RevKey, Revision};

/// etcd's `mvcc.RangeOptions`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RangeOptions {
    /// Maximum number of kvs to fetch; `<= 0` means no limit.
    pub limit: i64,
    /// Revision to read at; `<= 0` means the transaction's revision.
    pub rev: i64,
    /// Only count, fetch nothing.
    pub count: bool,
}

/// etcd's `mvcc.RangeResult`.
#[derive(Debug, Default)]
pub(crate) struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Keys in range at the read revision, ignoring the limit.
    pub count: i64,
    /// The transaction's revision (not the read revision).
    pub rev: i64,
}

/// Where a visible key's value comes from.
pub(crate) enum Item {
    /// Stored in the backend under this revision.
    Stored(Revision),
    /// Written earlier in the same transaction.
    Pending(KeyValue),
}

/// The keys a range selected, before their values are fetched.
pub(crate) struct Selection {
    pub items: Vec<Item>,
    pub count: i64,
    pub rev: i64,
}

pub(crate) struct Tx<'a> {
    state: &'a State,
    backend: &'a dyn Backend,
    begin_rev: i64,
    /// Put kvs are complete; tombstones carry only the key (mod_revision 0),
    /// exactly what etcd stores under the tombstone revision.
    changes: Vec<KeyValue>,
    pending: BTreeMap<Vec<u8>, usize>,
    /// False when the transaction is one Put or DeleteRange: nothing reads
    /// after it, so `pending` is not kept (a 100,000-key delete spent a
    /// fifth of its time there).
    keeps_pending: bool,
    batch: WriteBatch,
    metrics: &'a MvccMetrics,
    /// Reads go through `&self`.
    ranges: Cell<u64>,
    ops: TxOps,
}

impl<'a> Tx<'a> {
    pub fn new(state: &'a State, backend: &'a dyn Backend, metrics: &'a MvccMetrics) -> Self {
        Tx {
            state,
            backend,
            begin_rev: state.current_rev,
            changes: Vec::new(),
            pending: BTreeMap::new(),
            keeps_pending: true,
            batch: WriteBatch::new(),
            metrics,
            ranges: Cell::new(0),
            ops: TxOps::default(),
        }
    }

    /// A transaction of exactly one write, read by nothing after it.
    pub fn single_write(state: &'a State, backend: &'a dyn Backend, metrics: &'a MvccMetrics) -> Self {
        let mut tx = Tx::new(state, backend, metrics);
        tx.keeps_pending = false;
        tx
    }

    /// The store revision before this transaction (etcd's `Rev()` of a write txn).
    pub fn begin_rev(&self) -> i64 {
        self.begin_rev
    }

    /// The compaction point reads are checked against.
    pub fn first_rev(&self) -> i64 {
        self.state.compact_rev
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The revision this transaction's reads observe: its own once it wrote.
    pub fn read_rev(&self) -> i64 {
        self.begin_rev + i64::from(self.has_changes())
    }

    /// The revision reported after the transaction: bumped only by changes.
    pub fn end_rev(&self) -> i64 {
        self.read_rev()
    }

    pub fn into_parts(mut self) -> (Vec<KeyValue>, WriteBatch) {
        (std::mem::take(&mut self.changes), std::mem::take(&mut self.batch))
    }

    /// Chooses the keys of a range (etcd's `rangeKeys` up to the bolt reads).
    pub fn select(&self, range: KeyRange<'_>, ro: RangeOptions) -> Result<Selection, MvccError> {
        self.ranges.set(self.ranges.get() + 1);
        let cur_rev = self.read_rev();
        if ro.rev > cur_rev {
            return Err(MvccError::FutureRevision);
        }
        let rev = if ro.rev <= 0 { cur_rev } else { ro.rev };
        if rev < self.state.compact_rev {
            return Err(MvccError::Compacted);
        }
        let mut items = Vec::new();
        let mut count = 0i64;
        let limit = if ro.limit > 0 { ro.limit as usize } else { usize::MAX };
        if ro.count {
            self.visit(range, rev, |_, _| {
                count += 1;
                true
            });
        } else {
            self.visit(range, rev, |_, item| {
                if items.len() < limit {
                    items.push(match item {
                        VisitItem::Stored(r) => Item::Stored(r),
                        VisitItem::Pending(kv) => Item::Pending(kv.clone()),
                    });
                }
                count += 1;
                true
            });
        }
        Ok(Selection { items, count, rev: cur_rev })
    }

    /// Forgets the ranges read so far, for the metrics: a read given up
    /// to be made again elsewhere.
    pub(crate) fn uncount_ranges(&self) {
        self.ranges.set(0);
    }

    /// `select` plus the value reads.
    pub fn range(&self, range: KeyRange<'_>, ro: RangeOptions) -> Result<RangeResult, MvccError> {
        let sel = self.select(range, ro)?;
        let kvs = fetch(self.backend, sel.items)?;
        Ok(RangeResult { kvs, count: sel.count, rev: sel.rev })
    }

    /// Visits the keys visible at `rev` in key order, merging this
    /// transaction's pending changes when `rev` is its own revision.
    fn visit<'s>(&'s self, range: KeyRange<'_>, rev: i64, mut f: impl FnMut(&[u8], VisitItem<'s>) -> bool) {
        let index = &self.state.index;
        if !self.has_changes() || rev <= self.begin_rev {
            index.visit(range, rev, |k, at| f(k, VisitItem::Stored(at.modified)));
            return;
        }
        if range.is_empty() {
            return;
        }
        let mut pending = self.pending.range::<[u8], (Bound<&[u8]>, Bound<&[u8]>)>(range.bounds()).peekable();
        let mut go = true;
        index.visit(range, rev, |k, at| {
            while let Some(&(pk, &i)) = pending.peek() {
                if pk.as_slice() > k {
                    break;
                }
                let shadows = pk.as_slice() == k;
                let kv = &self.changes[i];
                pending.next();
                if kv.mod_revision != 0 && !f(pk, VisitItem::Pending(kv)) {
                    go = false;
                    return false;
                }
                if shadows {
                    return true;
                }
            }
            go = f(k, VisitItem::Stored(at.modified));
            go
        });
        if !go {
            return;
        }
        for (pk, &i) in pending {
            let kv = &self.changes[i];
            if kv.mod_revision != 0 && !f(pk, VisitItem::Pending(kv)) {
                return;
            }
        }
    }

    /// etcd's `storeTxnWrite.put`: returns the revision of the write.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> i64 {
        self.ops.puts += 1;
        self.ops.put_bytes += (key.len() + value.len()) as u64;
        let rev = self.begin_rev + 1;
        let (created, ver) = match self.pending.get(key) {
            Some(&i) => {
                let kv = &self.changes[i];
                if kv.mod_revision != 0 {
                    (kv.create_revision, kv.version)
                } else {
                    (rev, 0)
                }
            }
            None => match self.state.index.get(key, rev) {
                Some(at) => (at.created.main, at.version),
                None => (rev, 0),
            },
        };
        let kv =
            KeyValue { key: key.to_vec(), value, create_revision: created, mod_revision: rev, version: ver + 1, lease };
        let sub = self.changes.len() as i64;
        self.batch.put(Keyspace::Revisions, Revision::new(rev, sub).to_key(false).as_bytes(), kv.encode_to_vec());
        if self.keeps_pending {
            self.pending.insert(key.to_vec(), self.changes.len());
        }
        self.changes.push(kv);
        rev
    }

    /// etcd's `storeTxnWrite.DeleteRange`: (keys deleted, revision to report).
    pub fn delete_range(&mut self, range: KeyRange<'_>) -> (i64, i64) {
        self.ops.deletes += 1;
        let rrev = self.read_rev();
        let mut keys = Vec::new();
        self.visit(range, rrev, |k, _| {
            keys.push(k.to_vec());
            true
        });
        let n = keys.len() as i64;
        self.changes.reserve(keys.len());
        for key in keys {
            self.delete(key);
        }
        if n != 0 || self.has_changes() {
            (n, self.begin_rev + 1)
        } else {
            (0, self.begin_rev)
        }
    }

    fn delete(&mut self, key: Vec<u8>) {
        let rev = Revision::new(self.begin_rev + 1, self.changes.len() as i64);
        let kv = KeyValue { key, ..Default::default() };
        self.batch.put(Keyspace::Revisions, rev.to_key(true).as_bytes(), kv.encode_to_vec());
        if self.keeps_pending {
            self.pending.insert(kv.key.clone(), self.changes.len());
        }
        self.changes.push(kv);
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        self.ops.ranges = self.ranges.get();
        self.metrics.txn_ended(&self.ops);
    }
}

enum VisitItem<'s> {
    Stored(Revision),
    Pending(&'s KeyValue),
}

/// Reads and decodes the values of `items` in one batched backend lookup.
pub(crate) fn fetch(backend: &dyn Backend, items: Vec<Item>) -> Result<Vec<KeyValue>, MvccError> {
    let keys = revision_keys(&items);
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let values = backend.multi_get(Keyspace::Revisions, &key_refs)?;
    assemble(items, values)
}

/// [`fetch`] from memory alone: `None` when a value is not in memory.
pub(crate) fn fetch_in_memory(backend: &dyn Backend, items: Vec<Item>) -> Result<Option<Vec<KeyValue>>, MvccError> {
    let keys = revision_keys(&items);
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    match backend.multi_get_in_memory(Keyspace::Revisions, &key_refs)? {
        Some(values) => assemble(items, values).map(Some),
        None => Ok(None),
    }
}

fn revision_keys(items: &[Item]) -> Vec<RevKey> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Stored(rev) => Some(rev.to_key(false)),
            Item::Pending(_) => None,
        })
        .collect()
}

/// `items` with the stored ones' `values` (in order) decoded.
fn assemble(items: Vec<Item>, values: Vec<Option<Vec<u8>>>) -> Result<Vec<KeyValue>, MvccError> {
    let mut values = values.into_iter();
    let mut kvs = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Stored(rev) => {
                let raw = values
                    .next()
                    .flatten()
                    .ok_or_else(|| MvccError::Corrupt(format!("index points at missing revision {rev}")))?;
                kvs.push(KeyValue::decode(raw.as_slice())?);
            }
            Item::Pending(kv) => kvs.push(kv),
        }
    }
    Ok(kvs)
}
