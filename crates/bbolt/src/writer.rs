//! Writing a bbolt file in one pass: buckets in name order, each bucket's
//! pairs in key order. Leaf pages are written as they fill; each B+tree level
//! above keeps one pending branch page, written when full, so memory is
//! bounded by the tree's depth times a page (and the largest value).
//!
//! Page ids are allocated in the order pages are written, so the output is a
//! plain sequential stream after two reserved page slots; the two metas,
//! which name the root and the high-water mark, are written into those slots
//! at the end (hence `Seek`). The freelist is not saved (pgid
//! `0xffffffffffffffff`), as etcd writes its files since 3.3: bbolt rebuilds
//! it on open by walking the trees, and since every page below the
//! high-water mark is reachable, it finds none free.
//!
//! A bucket whose leaf page would take at most a quarter page is stored inline
//! in the root's leaf, as bbolt does (`Bucket.inlineable`).

use std::io::{Seek, SeekFrom, Write};

use crate::error::{show, Error, Result};
use crate::format::{
    Meta, PageHeader, BRANCH_PAGE, BUCKET_LEAF_FLAG, DEFAULT_PAGE_SIZE, ELEMENT_SIZE, LEAF_PAGE, MAGIC, MAX_KEY_SIZE,
    MAX_VALUE_SIZE, META_PAGE, PAGE_HEADER_SIZE, PGID_NO_FREELIST, VERSION,
};

/// How pages are filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// A power of two, 1 KiB to 64 KiB; 4096 by default, as on etcd's hosts.
    pub page_size: u32,
    /// How full a page gets before the next one starts, 0.1 to 1.0. bbolt
    /// splits at its `DefaultFillPercent` 0.5 (etcd's key bucket at 0.9);
    /// packing fully (1.0, the default) makes the smallest valid file, which
    /// bbolt splits again only where a later write lands.
    pub fill_percent: f64,
}

impl Default for Options {
    fn default() -> Options {
        Options { page_size: DEFAULT_PAGE_SIZE, fill_percent: 1.0 }
    }
}

/// Writes a bbolt file; see the module docs.
///
/// ```no_run
/// # fn main() -> keel_bbolt::Result<()> {
/// let file = std::io::BufWriter::new(std::fs::File::create("db")?);
/// let mut w = keel_bbolt::Writer::new(file)?;
/// w.begin_bucket(b"key")?;
/// w.put(b"k1", b"v1")?;
/// w.begin_bucket(b"meta")?;
/// w.put(b"consistent_index", &7u64.to_be_bytes())?;
/// w.finish()?;
/// # Ok(()) }
/// ```
pub struct Writer<W: Write + Seek> {
    pager: Pager<W>,
    threshold: usize,
    root: Tree,
    bucket: Option<OpenBucket>,
    last_bucket: Option<Vec<u8>>,
}

struct OpenBucket {
    name: Vec<u8>,
    last_key: Option<Vec<u8>>,
    /// Pairs held while the bucket still fits inline.
    inline: Vec<LeafElem>,
    inline_size: usize,
    tree: Option<Tree>,
}

impl<W: Write + Seek> Writer<W> {
    pub fn new(out: W) -> Result<Writer<W>> {
        Writer::with_options(out, Options::default())
    }

    pub fn with_options(mut out: W, options: Options) -> Result<Writer<W>> {
        let Options { page_size, fill_percent } = options;
        if !(1024..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(Error::Invalid(format!("page size {page_size} is not a power of two in 1024..=65536")));
        }
        if !(0.1..=1.0).contains(&fill_percent) {
            return Err(Error::Invalid(format!("fill percent {fill_percent} outside 0.1..=1.0")));
        }
        let page_size = page_size as usize;
        out.seek(SeekFrom::Start(0))?;
        // The metas' slots, filled in by `finish`.
        out.write_all(&vec![0; 2 * page_size])?;
        let threshold = ((page_size as f64 * fill_percent) as usize).max(PAGE_HEADER_SIZE + ELEMENT_SIZE);
        Ok(Writer {
            pager: Pager { out, page_size, next: 2, buf: Vec::new() },
            threshold,
            root: Tree::default(),
            bucket: None,
            last_bucket: None,
        })
    }

    /// Ends the bucket being written, if any, and starts the top-level bucket
    /// `name`, which must sort after every bucket begun before.
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<()> {
        if name.is_empty() || name.len() > MAX_KEY_SIZE {
            return Err(Error::Invalid(format!("bucket name of {} bytes (1..={MAX_KEY_SIZE})", name.len())));
        }
        if let Some(previous) = &self.last_bucket {
            if previous.as_slice() >= name {
                return Err(Error::Order { what: "bucket names", previous: show(previous), key: show(name) });
            }
        }
        self.end_bucket()?;
        self.last_bucket = Some(name.to_vec());
        self.bucket =
            Some(OpenBucket { name: name.to_vec(), last_key: None, inline: Vec::new(), inline_size: 0, tree: None });
        Ok(())
    }

    /// Adds a pair to the current bucket; keys strictly increasing.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let Some(b) = self.bucket.as_mut() else {
            return Err(Error::Invalid("put before any bucket was begun".into()));
        };
        if key.is_empty() || key.len() > MAX_KEY_SIZE {
            return Err(Error::Invalid(format!("key of {} bytes (1..={MAX_KEY_SIZE})", key.len())));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::Invalid(format!("value of {} bytes (at most {MAX_VALUE_SIZE})", value.len())));
        }
        match &mut b.last_key {
            Some(previous) if previous.as_slice() >= key => {
                return Err(Error::Order { what: "keys", previous: show(previous), key: show(key) });
            }
            Some(previous) => {
                previous.clear();
                previous.extend_from_slice(key);
            }
            None => b.last_key = Some(key.to_vec()),
        }
        let elem = LeafElem { flags: 0, key: key.to_vec(), value: value.to_vec() };
        if let Some(tree) = &mut b.tree {
            return tree.put(&mut self.pager, self.threshold, elem);
        }
        b.inline_size += elem.size();
        b.inline.push(elem);
        if PAGE_HEADER_SIZE + b.inline_size > self.pager.page_size / 4 {
            let mut tree = Tree::default();
            for elem in b.inline.drain(..) {
                tree.put(&mut self.pager, self.threshold, elem)?;
            }
            b.tree = Some(tree);
        }
        Ok(())
    }

    fn end_bucket(&mut self) -> Result<()> {
        let Some(b) = self.bucket.take() else { return Ok(()) };
        let mut value = Vec::new();
        match b.tree {
            Some(tree) => {
                let root = tree.finish(&mut self.pager, self.threshold)?;
                value.extend_from_slice(&root.to_le_bytes());
                value.extend_from_slice(&0u64.to_le_bytes());
            }
            None => {
                // Root 0 marks the bucket inline: its leaf page follows the header.
                value.extend_from_slice(&[0; 16]);
                encode_leaf(&mut value, 0, &b.inline);
            }
        }
        let elem = LeafElem { flags: BUCKET_LEAF_FLAG, key: b.name, value };
        self.root.put(&mut self.pager, self.threshold, elem)
    }

    /// Ends the last bucket, writes both metas and flushes; returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.end_bucket()?;
        let root = std::mem::take(&mut self.root).finish(&mut self.pager, self.threshold)?;
        let Pager { mut out, page_size, next, .. } = self.pager;
        // Two metas as bbolt's `init` writes them: txid 0 on page 0, 1 on page 1.
        for txid in 0..2u64 {
            let mut meta = Meta {
                magic: MAGIC,
                version: VERSION,
                page_size: page_size as u32,
                flags: 0,
                root,
                root_sequence: 0,
                freelist: PGID_NO_FREELIST,
                pgid: next,
                txid,
                checksum: 0,
            };
            meta.checksum = meta.sum();
            let mut page = Vec::with_capacity(page_size);
            PageHeader { id: txid, flags: META_PAGE, count: 0, overflow: 0 }.write(&mut page);
            page.extend_from_slice(&meta.encode());
            page.resize(page_size, 0);
            out.seek(SeekFrom::Start(txid * page_size as u64))?;
            out.write_all(&page)?;
        }
        out.seek(SeekFrom::Start(next * page_size as u64))?;
        out.flush()?;
        Ok(out)
    }
}

/// Allocates page ids in write order and writes pages.
struct Pager<W> {
    out: W,
    page_size: usize,
    next: u64,
    buf: Vec<u8>,
}

impl<W: Write> Pager<W> {
    /// Writes one page (with overflow if it needs it) and returns its id.
    fn write(&mut self, encode: impl FnOnce(&mut Vec<u8>, u64)) -> Result<u64> {
        let id = self.next;
        self.buf.clear();
        encode(&mut self.buf, id);
        let slots = self.buf.len().div_ceil(self.page_size).max(1);
        let overflow = u32::try_from(slots - 1).map_err(|_| Error::Invalid("page overflow beyond u32".into()))?;
        self.buf[12..16].copy_from_slice(&overflow.to_le_bytes());
        self.buf.resize(slots * self.page_size, 0);
        self.out.write_all(&self.buf)?;
        self.next += slots as u64;
        Ok(id)
    }
}

struct LeafElem {
    flags: u32,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl LeafElem {
    fn size(&self) -> usize {
        ELEMENT_SIZE + self.key.len() + self.value.len()
    }
}

struct BranchElem {
    key: Vec<u8>,
    pgid: u64,
}

/// A leaf page: header, elements, then each element's key and value. The
/// overflow field is left 0 for [`Pager::write`] to set.
fn encode_leaf(out: &mut Vec<u8>, id: u64, elems: &[LeafElem]) {
    PageHeader { id, flags: LEAF_PAGE, count: elems.len() as u16, overflow: 0 }.write(out);
    let mut data = PAGE_HEADER_SIZE + elems.len() * ELEMENT_SIZE;
    let base = out.len() - PAGE_HEADER_SIZE;
    for (i, e) in elems.iter().enumerate() {
        let pos = data - (PAGE_HEADER_SIZE + i * ELEMENT_SIZE);
        for v in [e.flags, pos as u32, e.key.len() as u32, e.value.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        data += e.key.len() + e.value.len();
    }
    for e in elems {
        out.extend_from_slice(&e.key);
        out.extend_from_slice(&e.value);
    }
    debug_assert_eq!(out.len() - base, data);
}

fn encode_branch(out: &mut Vec<u8>, id: u64, elems: &[BranchElem]) {
    PageHeader { id, flags: BRANCH_PAGE, count: elems.len() as u16, overflow: 0 }.write(out);
    let mut data = PAGE_HEADER_SIZE + elems.len() * ELEMENT_SIZE;
    for (i, e) in elems.iter().enumerate() {
        let pos = data - (PAGE_HEADER_SIZE + i * ELEMENT_SIZE);
        out.extend_from_slice(&(pos as u32).to_le_bytes());
        out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.pgid.to_le_bytes());
        data += e.key.len();
    }
    for e in elems {
        out.extend_from_slice(&e.key);
    }
}

/// One B+tree being built bottom-up: the pending leaf page and one pending
/// branch page per level above it.
#[derive(Default)]
struct Tree {
    leaf: Vec<LeafElem>,
    leaf_size: usize,
    leaves_written: bool,
    branches: Vec<Level>,
}

#[derive(Default)]
struct Level {
    elems: Vec<BranchElem>,
    size: usize,
    written: bool,
}

/// bbolt's `MinKeysPerPage`: with one big key per branch page, every level
/// would be as wide as the one below and the tree would never close.
const MIN_KEYS_PER_PAGE: usize = 2;

/// A page takes one more element unless it would pass the threshold; it
/// always takes its first two (big ones go to overflow pages).
fn full(count: usize, size: usize, adding: usize, threshold: usize) -> bool {
    count >= MIN_KEYS_PER_PAGE && (PAGE_HEADER_SIZE + size + adding > threshold || count == usize::from(u16::MAX))
}

impl Tree {
    fn put<W: Write>(&mut self, pager: &mut Pager<W>, threshold: usize, elem: LeafElem) -> Result<()> {
        if full(self.leaf.len(), self.leaf_size, elem.size(), threshold) {
            self.flush_leaf(pager, threshold)?;
        }
        self.leaf_size += elem.size();
        self.leaf.push(elem);
        Ok(())
    }

    fn flush_leaf<W: Write>(&mut self, pager: &mut Pager<W>, threshold: usize) -> Result<()> {
        let pgid = pager.write(|out, id| encode_leaf(out, id, &self.leaf))?;
        let first = self.leaf.first_mut().map(|e| std::mem::take(&mut e.key)).unwrap_or_default();
        self.leaf.clear();
        self.leaf_size = 0;
        self.leaves_written = true;
        self.add_branch(pager, threshold, 0, BranchElem { key: first, pgid })
    }

    /// Adds a child to level `level`, writing that level's page first when full
    /// (which adds a child to the level above, and so on).
    fn add_branch<W: Write>(
        &mut self,
        pager: &mut Pager<W>,
        threshold: usize,
        level: usize,
        elem: BranchElem,
    ) -> Result<()> {
        if self.branches.len() == level {
            self.branches.push(Level::default());
        }
        let l = &self.branches[level];
        if full(l.elems.len(), l.size, ELEMENT_SIZE + elem.key.len(), threshold) {
            self.flush_branch(pager, threshold, level)?;
        }
        let l = &mut self.branches[level];
        l.size += ELEMENT_SIZE + elem.key.len();
        l.elems.push(elem);
        Ok(())
    }

    fn flush_branch<W: Write>(&mut self, pager: &mut Pager<W>, threshold: usize, level: usize) -> Result<()> {
        let l = &mut self.branches[level];
        let pgid = pager.write(|out, id| encode_branch(out, id, &l.elems))?;
        let first = l.elems.first_mut().map(|e| std::mem::take(&mut e.key)).unwrap_or_default();
        l.elems.clear();
        l.size = 0;
        l.written = true;
        self.add_branch(pager, threshold, level + 1, BranchElem { key: first, pgid })
    }

    /// Writes the pending pages bottom-up and returns the root's pgid: the
    /// single page of the first level that has only one.
    fn finish<W: Write>(mut self, pager: &mut Pager<W>, threshold: usize) -> Result<u64> {
        if !self.leaf.is_empty() || !self.leaves_written {
            // An empty tree is one empty leaf.
            self.flush_leaf(pager, threshold)?;
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.branches.len();
            let l = &self.branches[level];
            if top && !l.written && l.elems.len() == 1 {
                return Ok(l.elems[0].pgid);
            }
            if !l.elems.is_empty() {
                self.flush_branch(pager, threshold, level)?;
            }
            level += 1;
        }
    }
}
