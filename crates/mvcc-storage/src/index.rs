//! The in-memory key index: for every user key, the revisions at which it
//! changed, grouped into generations (etcd's `treeIndex` / `keyIndex`).
//!
//! A generation runs from the put that created a key to the tombstone that
//! deleted it; the last generation of a key is the open one (empty after a
//! delete). `version` counts puts within a generation, so it restarts at 1
//! after a delete. Values live in the backend under revision keys; the index
//! answers "which revision of key K was visible at revision R" without
//! touching the backend, so reads cost one backend lookup per returned key.
//!
//! The index is rebuilt on open by replaying the revisions keyspace (see
//! `KvStore::open`), so it is never persisted itself.

use std::collections::{BTreeMap, HashSet};

use smallvec::{smallvec, SmallVec};
use std::ops::Bound;

use crate::revision::Revision;

/// Which user keys an operation covers, decoded from etcd's `key`/`range_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `range_end == "\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// etcd's `mkGteRange` plus the nil/empty distinction of its index.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::From(key) => k >= key,
            KeyRange::Between(key, end) => k >= key && k < end,
        }
    }

    pub(crate) fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(key) => (Bound::Included(key), Bound::Included(key)),
            KeyRange::From(key) => (Bound::Included(key), Bound::Unbounded),
            KeyRange::Between(key, end) => (Bound::Included(key), Bound::Excluded(end)),
        }
    }

    /// True when no key can be in range (`BTreeMap::range` panics on such bounds).
    pub(crate) fn is_empty(&self) -> bool {
        matches!(*self, KeyRange::Between(key, end) if end <= key)
    }
}

/// The visible state of a key at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision holding the value visible at the queried revision.
    pub modified: Revision,
    /// The revision that created the key's current generation.
    pub created: Revision,
    pub version: i64,
}

/// Why the index refused a change: only possible with corrupt input, since
/// the store never issues out-of-order revisions itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("revision {given} is not after the last modification {modified}")]
    NotIncreasing { given: Revision, modified: Revision },
    #[error("tombstone of a key that does not exist")]
    TombstoneMissingKey,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    ver: i64,
    created: Revision,
    /// Most keys are written once between compactions: their one revision
    /// lives inline, saving an allocation per key (~32 bytes of a million
    /// keys' index each).
    revs: SmallVec<[Revision; 1]>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Index of the last revision with `main <= at_rev`.
    fn find_revision_index(&self, at_rev: i64) -> Option<usize> {
        let n = self.revs.partition_point(|r| r.main <= at_rev);
        n.checked_sub(1)
    }
}

/// The history of one user key (etcd's `keyIndex`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    modified: Revision,
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// Appends a put at `rev`; starts a generation if the open one is empty.
    pub fn put(&mut self, rev: Revision) -> Result<(), IndexError> {
        if !self.generations.is_empty() && rev <= self.modified {
            return Err(IndexError::NotIncreasing { given: rev, modified: self.modified });
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let g = self.generations.last_mut().expect("pushed above");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
        Ok(())
    }

    /// Seeds an index whose older history was compacted away: `modified` is
    /// the oldest surviving revision, `created`/`ver` come from its value.
    pub fn restore(created: Revision, modified: Revision, ver: i64) -> Self {
        KeyIndex { modified, generations: vec![Generation { ver, created, revs: smallvec![modified] }] }
    }

    /// Appends a tombstone at `rev`, closing the open generation.
    pub fn tombstone(&mut self, rev: Revision) -> Result<(), IndexError> {
        match self.generations.last() {
            Some(g) if !g.is_empty() => {}
            _ => return Err(IndexError::TombstoneMissingKey),
        }
        self.put(rev)?;
        self.generations.push(Generation::default());
        Ok(())
    }

    /// True when nothing is left (only an empty open generation).
    pub fn is_empty(&self) -> bool {
        self.generations.iter().all(Generation::is_empty)
    }

    /// True when the key exists at the latest revision: its last
    /// generation was not closed by a tombstone.
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.is_empty())
    }

    /// The key's state as of `at_rev`, or `None` if it did not exist then.
    pub fn get(&self, at_rev: i64) -> Option<KeyAt> {
        let g = self.find_generation(at_rev)?;
        let n = g.find_revision_index(at_rev)?;
        Some(KeyAt { modified: g.revs[n], created: g.created, version: g.ver - (g.revs.len() - n - 1) as i64 })
    }

    /// The generation live at `rev`, `None` if `rev` falls between
    /// generations (the key was deleted then) or before the first one.
    fn find_generation(&self, rev: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            if g.is_empty() {
                continue;
            }
            if i != last && g.revs[g.revs.len() - 1].main <= rev {
                // The tombstone that closed this generation is visible at `rev`.
                return None;
            }
            if g.revs[0].main <= rev {
                return Some(g);
            }
        }
        None
    }

    /// The last revision of the latest generation (tombstone or put).
    pub fn modified(&self) -> Revision {
        self.modified
    }

    /// Drops history at or below `at_rev` that no read at `>= at_rev` needs,
    /// adding the revisions that must stay in the backend to `keep`.
    ///
    /// etcd 3.4/3.5 semantics (the reference etcd is 3.4): in the first
    /// generation whose tombstone is after `at_rev`, the last revision
    /// `<= at_rev` survives; generations deleted at or before `at_rev`
    /// disappear, tombstone included. (etcd 3.6 keeps a tombstone that sits
    /// exactly at `at_rev`; 3.4 does not.)
    pub fn compact(&mut self, at_rev: i64, keep: &mut HashSet<Revision>) {
        let (drop_gens, trim) = self.plan_compact(at_rev, keep);
        if let Some((gen_idx, rev_idx)) = trim {
            self.generations[gen_idx].revs.drain(..rev_idx);
        }
        self.generations.drain(..drop_gens);
    }

    /// What [`KeyIndex::compact`] would do: how many leading generations to
    /// drop and which generation to trim before which revision. Adds the
    /// revision to keep to `keep`.
    fn plan_compact(&self, at_rev: i64, keep: &mut HashSet<Revision>) -> (usize, Option<(usize, usize)>) {
        let last = self.generations.len() - 1;
        let mut gen_idx = 0;
        while gen_idx < last {
            let tomb = self.generations[gen_idx].revs.last().map_or(i64::MIN, |r| r.main);
            if tomb > at_rev {
                break;
            }
            gen_idx += 1;
        }
        let g = &self.generations[gen_idx];
        let rev_idx = g.find_revision_index(at_rev);
        if let Some(n) = rev_idx {
            keep.insert(g.revs[n]);
        }
        if g.is_empty() {
            return (gen_idx, None);
        }
        let first_left = rev_idx.unwrap_or(0);
        if g.revs.len() - first_left == 1 && gen_idx != last {
            // Only the tombstone would be left: drop the generation too.
            keep.remove(&g.revs[first_left]);
            return (gen_idx + 1, None);
        }
        (gen_idx, rev_idx.map(|n| (gen_idx, n)))
    }

    #[cfg(test)]
    fn generations(&self) -> Vec<Vec<Revision>> {
        self.generations.iter().map(|g| g.revs.to_vec()).collect()
    }
}

/// Every key's [`KeyIndex`], ordered by key for range scans.
#[derive(Clone, Debug, Default)]
pub struct TreeIndex {
    tree: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &[u8], at_rev: i64) -> Option<KeyAt> {
        self.tree.get(key)?.get(at_rev)
    }

    pub fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.tree.get(key)
    }

    pub fn key_index_mut(&mut self, key: &[u8]) -> Option<&mut KeyIndex> {
        self.tree.get_mut(key)
    }

    pub fn put(&mut self, key: &[u8], rev: Revision) -> Result<(), IndexError> {
        match self.tree.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::default();
                ki.put(rev)?;
                self.tree.insert(key.to_vec(), ki);
                Ok(())
            }
        }
    }

    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), IndexError> {
        self.tree.get_mut(key).ok_or(IndexError::TombstoneMissingKey)?.tombstone(rev)
    }

    /// [`TreeIndex::tombstone`] for many keys given in ascending order (a
    /// DeleteRange's): one walk along the tree instead of a search per key.
    pub fn tombstone_ascending<'k>(
        &mut self,
        mut tombstones: impl Iterator<Item = (&'k [u8], Revision)>,
    ) -> Result<(), IndexError> {
        let Some((first, rev)) = tombstones.next() else { return Ok(()) };
        let mut walk = self.tree.range_mut::<[u8], _>((std::ops::Bound::Included(first), std::ops::Bound::Unbounded));
        let mut next = Some((first, rev));
        while let Some((key, rev)) = next {
            loop {
                match walk.next() {
                    Some((k, ki)) if k.as_slice() == key => {
                        ki.tombstone(rev)?;
                        break;
                    }
                    Some((k, _)) if k.as_slice() < key => continue,
                    _ => return Err(IndexError::TombstoneMissingKey),
                }
            }
            next = tombstones.next();
        }
        Ok(())
    }

    pub fn insert(&mut self, key: Vec<u8>, ki: KeyIndex) {
        self.tree.insert(key, ki);
    }

    /// Calls `f` with every key in `range` that exists at `at_rev`, in key
    /// order, until `f` returns false.
    pub fn visit<'s>(&'s self, range: KeyRange<'_>, at_rev: i64, mut f: impl FnMut(&'s [u8], KeyAt) -> bool) {
        if range.is_empty() {
            return;
        }
        if let KeyRange::Single(key) = range {
            if let Some((k, ki)) = self.tree.get_key_value(key) {
                if let Some(at) = ki.get(at_rev) {
                    f(k, at);
                }
            }
            return;
        }
        for (k, ki) in self.tree.range::<[u8], _>(range.bounds()) {
            if let Some(at) = ki.get(at_rev) {
                if !f(k, at) {
                    return;
                }
            }
        }
    }

    /// Number of keys in `range` that exist at `at_rev`.
    pub fn count(&self, range: KeyRange<'_>, at_rev: i64) -> usize {
        let mut n = 0;
        self.visit(range, at_rev, |_, _| {
            n += 1;
            true
        });
        n
    }

    /// The revisions [`TreeIndex::compact`] at `at_rev` would keep, without
    /// changing anything.
    pub fn keep_for_compact(&self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        for ki in self.tree.values() {
            if !ki.is_empty() {
                ki.plan_compact(at_rev, &mut keep);
            }
        }
        keep
    }

    /// Compacts every key at `at_rev` (see [`KeyIndex::compact`]), removes
    /// keys with nothing left, and returns the revisions to keep.
    pub fn compact(&mut self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.tree.retain(|_, ki| {
            ki.compact(at_rev, &mut keep);
            !ki.is_empty()
        });
        keep
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Iterates over all keys with their index, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &KeyIndex)> {
        self.tree.iter().map(|(k, v)| (k.as_slice(), v))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ascending_tombstones_match_one_by_one_and_refuse_a_missing_key() {
        let keys: Vec<Vec<u8>> = (0..50u8).map(|n| vec![b'k', n]).collect();
        let mut walked = TreeIndex::new();
        let mut searched = TreeIndex::new();
        for (i, key) in keys.iter().enumerate() {
            walked.put(key, Revision::new(2 + i as i64, 0)).unwrap();
            searched.put(key, Revision::new(2 + i as i64, 0)).unwrap();
        }
        // Every third key (some already gone would be skipped by a delete).
        let deleted: Vec<(&[u8], Revision)> =
            keys.iter().step_by(3).enumerate().map(|(sub, k)| (k.as_slice(), Revision::new(100, sub as i64))).collect();
        walked.tombstone_ascending(deleted.iter().copied()).unwrap();
        for (key, rev) in &deleted {
            searched.tombstone(key, *rev).unwrap();
        }
        for key in &keys {
            assert_eq!(walked.get(key, 100), searched.get(key, 100), "{key:?}");
            assert_eq!(walked.get(key, 99), searched.get(key, 99), "{key:?}");
        }
        let missing = [(&b"k\x05"[..], Revision::new(101, 0)), (&b"nope"[..], Revision::new(101, 1))];
        assert_eq!(walked.tombstone_ascending(missing.into_iter()), Err(IndexError::TombstoneMissingKey));
    }

    use super::*;

    fn r(main: i64, sub: i64) -> Revision {
        Revision::new(main, sub)
    }

    /// put(2);put(4);tombstone(6);put(8);put(10);tombstone(12);put(14);put(16)
    /// — the fixture of etcd's key_index_test.go, revisions doubled there too.
    fn fixture() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(2, 0)).unwrap();
        ki.put(r(4, 0)).unwrap();
        ki.tombstone(r(6, 0)).unwrap();
        ki.put(r(8, 0)).unwrap();
        ki.put(r(10, 0)).unwrap();
        ki.tombstone(r(12, 0)).unwrap();
        ki.put(r(14, 0)).unwrap();
        ki.put(r(14, 1)).unwrap();
        ki.tombstone(r(16, 0)).unwrap();
        ki
    }

    #[test]
    fn get_walks_generations() {
        let ki = fixture();
        type Want = Option<(Revision, Revision, i64)>;
        let cases: &[(i64, Want)] = &[
            (0, None),
            (1, None),
            (2, Some((r(2, 0), r(2, 0), 1))),
            (3, Some((r(2, 0), r(2, 0), 1))),
            (4, Some((r(4, 0), r(2, 0), 2))),
            (5, Some((r(4, 0), r(2, 0), 2))),
            (6, None),
            (7, None),
            (8, Some((r(8, 0), r(8, 0), 1))),
            (9, Some((r(8, 0), r(8, 0), 1))),
            (10, Some((r(10, 0), r(8, 0), 2))),
            (11, Some((r(10, 0), r(8, 0), 2))),
            (12, None),
            (13, None),
            (14, Some((r(14, 1), r(14, 0), 2))),
            (15, Some((r(14, 1), r(14, 0), 2))),
            (16, None),
            (17, None),
        ];
        for &(at, want) in cases {
            let got = ki.get(at).map(|k| (k.modified, k.created, k.version));
            assert_eq!(got, want, "at rev {at}");
        }
    }

    #[test]
    fn version_restarts_after_delete() {
        let mut ki = KeyIndex::default();
        ki.put(r(2, 0)).unwrap();
        ki.put(r(3, 0)).unwrap();
        ki.tombstone(r(4, 0)).unwrap();
        assert_eq!(ki.get(4), None);
        ki.put(r(5, 0)).unwrap();
        let at = ki.get(5).unwrap();
        assert_eq!((at.created, at.version), (r(5, 0), 1));
    }

    #[test]
    fn rejects_out_of_order_and_double_tombstones() {
        let mut ki = KeyIndex::default();
        ki.put(r(5, 0)).unwrap();
        assert!(matches!(ki.put(r(5, 0)), Err(IndexError::NotIncreasing { .. })));
        assert!(ki.put(r(4, 9)).is_err());
        ki.tombstone(r(6, 0)).unwrap();
        assert_eq!(ki.tombstone(r(7, 0)), Err(IndexError::TombstoneMissingKey));
    }

    #[test]
    fn compact_keeps_what_later_reads_need() {
        // (compact rev, generations left, revisions kept)
        type Generations = Vec<Vec<Revision>>;
        let cases: &[(i64, Generations, Vec<Revision>)] = &[
            (1, fixture().generations(), vec![]),
            (2, fixture().generations(), vec![r(2, 0)]),
            (3, fixture().generations(), vec![r(2, 0)]),
            (
                4,
                vec![
                    vec![r(4, 0), r(6, 0)],
                    vec![r(8, 0), r(10, 0), r(12, 0)],
                    vec![r(14, 0), r(14, 1), r(16, 0)],
                    vec![],
                ],
                vec![r(4, 0)],
            ),
            (
                5,
                vec![
                    vec![r(4, 0), r(6, 0)],
                    vec![r(8, 0), r(10, 0), r(12, 0)],
                    vec![r(14, 0), r(14, 1), r(16, 0)],
                    vec![],
                ],
                vec![r(4, 0)],
            ),
            // Compacting at the tombstone drops the generation (etcd 3.4/3.5).
            (6, vec![vec![r(8, 0), r(10, 0), r(12, 0)], vec![r(14, 0), r(14, 1), r(16, 0)], vec![]], vec![]),
            (7, vec![vec![r(8, 0), r(10, 0), r(12, 0)], vec![r(14, 0), r(14, 1), r(16, 0)], vec![]], vec![]),
            (10, vec![vec![r(10, 0), r(12, 0)], vec![r(14, 0), r(14, 1), r(16, 0)], vec![]], vec![r(10, 0)]),
            (14, vec![vec![r(14, 1), r(16, 0)], vec![]], vec![r(14, 1)]),
            (15, vec![vec![r(14, 1), r(16, 0)], vec![]], vec![r(14, 1)]),
            (16, vec![vec![]], vec![]),
            (17, vec![vec![]], vec![]),
        ];
        for (at, gens, kept) in cases {
            let mut ki = fixture();
            let mut keep = HashSet::new();
            ki.compact(*at, &mut keep);
            assert_eq!(&ki.generations(), gens, "generations after compact({at})");
            let mut keep: Vec<_> = keep.into_iter().collect();
            keep.sort();
            assert_eq!(&keep, kept, "kept after compact({at})");
            assert_eq!(ki.is_empty(), *at >= 16);
        }
    }

    #[test]
    fn compact_is_incremental() {
        // Compacting step by step ends where one big compaction ends.
        for target in 1..=17 {
            let mut stepwise = fixture();
            for at in 1..=target {
                stepwise.compact(at, &mut HashSet::new());
            }
            let mut once = fixture();
            once.compact(target, &mut HashSet::new());
            assert_eq!(stepwise.generations(), once.generations(), "target {target}");
        }
    }

    #[test]
    fn compact_keeps_a_generation_reborn_in_the_same_revision() {
        // put(2); then one txn at 3 deletes (3.0) and re-creates (3.1) the key.
        let mut ki = KeyIndex::default();
        ki.put(r(2, 0)).unwrap();
        ki.tombstone(r(3, 0)).unwrap();
        ki.put(r(3, 1)).unwrap();
        let mut keep = HashSet::new();
        ki.compact(3, &mut keep);
        assert_eq!(keep, HashSet::from([r(3, 1)]));
        assert_eq!(ki.generations(), vec![vec![r(3, 1)]]);
        assert_eq!(ki.get(3).unwrap().modified, r(3, 1));
    }

    #[test]
    fn restore_seeds_a_compacted_generation() {
        let ki = KeyIndex::restore(r(3, 0), r(7, 1), 4);
        let at = ki.get(7).unwrap();
        assert_eq!((at.modified, at.created, at.version), (r(7, 1), r(3, 0), 4));
        assert_eq!(ki.get(6), None);
    }

    #[test]
    fn tree_ranges_and_counts() {
        let mut t = TreeIndex::new();
        t.put(b"a", r(2, 0)).unwrap();
        t.put(b"b", r(3, 0)).unwrap();
        t.put(b"c", r(4, 0)).unwrap();
        t.tombstone(b"b", r(5, 0)).unwrap();
        t.put(b"d", r(5, 1)).unwrap();
        let keys = |range: KeyRange<'_>, at: i64| {
            let mut out = Vec::new();
            t.visit(range, at, |k, _| {
                out.push(String::from_utf8(k.to_vec()).unwrap());
                true
            });
            out
        };
        assert_eq!(keys(KeyRange::From(b""), 5), ["a", "c", "d"]);
        assert_eq!(keys(KeyRange::From(b""), 4), ["a", "b", "c"]);
        assert_eq!(keys(KeyRange::Between(b"b", b"d"), 5), ["c"]);
        assert_eq!(keys(KeyRange::Between(b"d", b"b"), 5), Vec::<String>::new());
        assert_eq!(keys(KeyRange::Single(b"b"), 3), ["b"]);
        assert_eq!(keys(KeyRange::Single(b"b"), 5), Vec::<String>::new());
        assert_eq!(t.count(KeyRange::new(b"a", b"\0"), 4), 3);
        assert_eq!(t.count(KeyRange::new(b"a", b""), 1), 0);

        assert_eq!(t.keep_for_compact(5), HashSet::from([r(2, 0), r(4, 0), r(5, 1)]));
        let keep = t.compact(5);
        assert_eq!(t.len(), 3, "b, deleted at the compaction revision, is gone");
        assert_eq!(keep, HashSet::from([r(2, 0), r(4, 0), r(5, 1)]));
    }

    #[test]
    fn key_range_decoding() {
        assert_eq!(KeyRange::new(b"k", b""), KeyRange::Single(b"k"));
        assert_eq!(KeyRange::new(b"k", b"\0"), KeyRange::From(b"k"));
        assert_eq!(KeyRange::new(b"k", b"\0\0"), KeyRange::Between(b"k", b"\0\0"));
        assert!(KeyRange::new(b"k", b"a").is_empty());
        assert!(KeyRange::From(b"k").contains(b"kz"));
        assert!(!KeyRange::Between(b"a", b"c").contains(b"c"));
    }
}
