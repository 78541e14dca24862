//! Reading a bbolt file page by page: only the pages on the path from a
//! bucket's root to the current leaf are in memory, so a bucket of any size is
//! iterated in memory bounded by the tree's depth (and its largest page).
//!
//! Nothing in the file is trusted: every pgid is checked against the
//! high-water mark and the file's length, every element against its page, a
//! page must say it is the page it was read as, a path may not revisit a page,
//! and keys must come out strictly increasing (which a page referenced twice
//! would break). Any violation is [`Error::Corrupt`], never a panic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use crate::error::{show, Error, Result};
use crate::format::{
    u32_at, u64_at, Meta, MetaFault, PageHeader, BRANCH_PAGE, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, DEFAULT_PAGE_SIZE,
    ELEMENT_SIZE, LEAF_PAGE, META_SIZE, PAGE_HEADER_SIZE, PGID_NO_FREELIST,
};

/// A B+tree deeper than this is a cycle or garbage: with 4 KiB pages and
/// bbolt's two keys per page at least, 2^64 keys fit in 64 levels.
const MAX_DEPTH: usize = 64;

/// An open bbolt file, read through seeks.
pub struct Db<R> {
    file: R,
    len: u64,
    meta: Meta,
    page_size: u64,
}

/// A top-level bucket: its name and where its tree starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    name: Vec<u8>,
    sequence: u64,
    root: Root,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    Page(u64),
    /// An inline bucket's leaf page, header included.
    Inline(Vec<u8>),
}

impl Bucket {
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The bucket's sequence (bbolt's `NextSequence` counter; 0 in etcd's files).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the bucket's single leaf is stored inside its parent's leaf.
    pub fn is_inline(&self) -> bool {
        matches!(self.root, Root::Inline(_))
    }
}

impl Db<File> {
    /// Opens the bbolt file at `path` for reading.
    pub fn open(path: impl AsRef<Path>) -> Result<Db<File>> {
        Db::from_reader(File::open(path)?)
    }
}

impl<R: Read + Seek> Db<R> {
    /// Reads and validates the meta pages, keeping the valid one with the
    /// higher transaction id, as bbolt does.
    pub fn from_reader(mut file: R) -> Result<Db<R>> {
        let len = file.seek(SeekFrom::End(0))?;
        if len < (PAGE_HEADER_SIZE + META_SIZE) as u64 {
            return Err(Error::NotBbolt(format!("{len} bytes is too short for a meta page")));
        }
        let first = read_meta(&mut file, 0)?;
        // bbolt too takes the page size from meta 0, or its default when meta 0 is bad.
        let page_size = match first.validate() {
            Ok(()) => u64::from(first.page_size),
            Err(_) => u64::from(DEFAULT_PAGE_SIZE),
        };
        if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(Error::Corrupt(format!("page size {page_size} is not a power of two in 512..=1MiB")));
        }
        let second = if len >= page_size + (PAGE_HEADER_SIZE + META_SIZE) as u64 {
            Some(read_meta(&mut file, page_size)?)
        } else {
            None
        };
        let valid = [Some(first), second]
            .into_iter()
            .flatten()
            .filter(|m| m.validate().is_ok() && u64::from(m.page_size) == page_size)
            .max_by_key(|m| m.txid);
        let Some(meta) = valid else {
            let faults: Vec<MetaFault> =
                [Some(first), second].into_iter().flatten().filter_map(|m| m.validate().err()).collect();
            return Err(
                if let Some(v) = faults.iter().find_map(|f| match f {
                    MetaFault::Version(v) => Some(*v),
                    _ => None,
                }) {
                    Error::Version(v)
                } else if faults.contains(&MetaFault::Checksum) {
                    Error::Corrupt("no meta page with a valid checksum".into())
                } else if faults.is_empty() {
                    Error::Corrupt("meta page size disagrees with the page it is on".into())
                } else {
                    Error::NotBbolt("bad magic number in the meta pages".into())
                },
            );
        };
        if meta.pgid < 3 || meta.root < 2 || meta.root >= meta.pgid {
            return Err(Error::Corrupt(format!("root page {} outside 2..{} (high-water mark)", meta.root, meta.pgid)));
        }
        if meta.freelist != PGID_NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(Error::Corrupt(format!("freelist page {} outside 2..{}", meta.freelist, meta.pgid)));
        }
        Ok(Db { file, len, meta, page_size })
    }

    /// The meta in force.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.file
    }

    /// The top-level buckets, in name order.
    pub fn buckets(&mut self) -> Result<Vec<Bucket>> {
        let mut cursor = Cursor::new(Root::Page(self.meta.root));
        let mut out = Vec::new();
        while let Some(item) = cursor.next(self) {
            let (flags, key, value) = item?;
            if flags & BUCKET_LEAF_FLAG == 0 {
                return Err(Error::Corrupt(format!("root holds key {:?} that is not a bucket", show(&key))));
            }
            out.push(parse_bucket(key, &value)?);
        }
        Ok(out)
    }

    /// The top-level bucket named `name`, if there is one.
    pub fn bucket(&mut self, name: &[u8]) -> Result<Option<Bucket>> {
        Ok(self.buckets()?.into_iter().find(|b| b.name == name))
    }

    /// The key/value pairs of `bucket`, in key order, read lazily.
    pub fn entries<'a>(&'a mut self, bucket: &Bucket) -> Entries<'a, R> {
        Entries { db: self, cursor: Cursor::new(bucket.root.clone()), bucket: bucket.name.clone() }
    }

    /// Reads page `pgid` with its overflow, after checking it lies inside the
    /// file and below the high-water mark and says it is page `pgid`.
    fn read_page(&mut self, pgid: u64) -> Result<Vec<u8>> {
        if pgid < 2 || pgid >= self.meta.pgid {
            return Err(Error::Corrupt(format!("page {pgid} outside 2..{} (high-water mark)", self.meta.pgid)));
        }
        let offset = pgid
            .checked_mul(self.page_size)
            .filter(|o| o.checked_add(self.page_size).is_some_and(|end| end <= self.len))
            .ok_or_else(|| Error::Corrupt(format!("page {pgid} beyond the end of the file ({} bytes)", self.len)))?;
        let mut page = vec![0; self.page_size as usize];
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(&mut page)?;
        let header = PageHeader::read(&page);
        if header.id != pgid {
            return Err(Error::Corrupt(format!("page {pgid} says it is page {}", header.id)));
        }
        if header.overflow > 0 {
            let overflow = u64::from(header.overflow);
            let total = (overflow + 1) * self.page_size;
            if pgid + overflow >= self.meta.pgid || offset + total > self.len {
                return Err(Error::Corrupt(format!("page {pgid} overflows by {overflow} pages past the end")));
            }
            page.resize(total as usize, 0);
            self.file.read_exact(&mut page[self.page_size as usize..])?;
        }
        Ok(page)
    }
}

fn read_meta<R: Read + Seek>(file: &mut R, at: u64) -> Result<Meta> {
    let mut b = [0; META_SIZE];
    file.seek(SeekFrom::Start(at + PAGE_HEADER_SIZE as u64))?;
    file.read_exact(&mut b)?;
    Ok(Meta::decode(&b))
}

fn parse_bucket(name: Vec<u8>, value: &[u8]) -> Result<Bucket> {
    if value.len() < BUCKET_HEADER_SIZE {
        return Err(Error::Corrupt(format!("bucket {:?} has a {}-byte header", show(&name), value.len())));
    }
    let root = u64_at(value, 0);
    let sequence = u64_at(value, 8);
    let root = if root == 0 {
        let page = value[BUCKET_HEADER_SIZE..].to_vec();
        if page.len() < PAGE_HEADER_SIZE || PageHeader::read(&page).flags != LEAF_PAGE {
            return Err(Error::Corrupt(format!("inline bucket {:?} holds no leaf page", show(&name))));
        }
        Root::Inline(page)
    } else {
        Root::Page(root)
    };
    Ok(Bucket { name, sequence, root })
}

/// A page in memory, its elements checked against its length when read.
struct Node {
    data: Vec<u8>,
    header: PageHeader,
}

impl Node {
    fn new(data: Vec<u8>, what: u64) -> Result<Node> {
        let header = PageHeader::read(&data);
        if header.flags != BRANCH_PAGE && header.flags != LEAF_PAGE {
            return Err(Error::Corrupt(format!("page {what} has flags {:#x}, not a branch or leaf", header.flags)));
        }
        if PAGE_HEADER_SIZE + usize::from(header.count) * ELEMENT_SIZE > data.len() {
            return Err(Error::Corrupt(format!("page {what} has {} elements, more than fit", header.count)));
        }
        Ok(Node { data, header })
    }

    fn is_leaf(&self) -> bool {
        self.header.flags == LEAF_PAGE
    }

    fn slice(&self, element: usize, pos: u32, len: u64) -> Result<Range<usize>> {
        let start = element as u64 + u64::from(pos);
        let end = start + len;
        if end > self.data.len() as u64 {
            return Err(Error::Corrupt(format!(
                "element {element} points past its page ({end} > {})",
                self.data.len()
            )));
        }
        Ok(start as usize..end as usize)
    }

    /// Leaf element `i`: flags, key range, value range.
    fn leaf(&self, i: usize) -> Result<(u32, Range<usize>, Range<usize>)> {
        let at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let (flags, pos, ksize, vsize) = (
            u32_at(&self.data, at),
            u32_at(&self.data, at + 4),
            u32_at(&self.data, at + 8),
            u32_at(&self.data, at + 12),
        );
        let kv = self.slice(at, pos, u64::from(ksize) + u64::from(vsize))?;
        let split = kv.start + ksize as usize;
        Ok((flags, kv.start..split, split..kv.end))
    }

    /// Branch element `i`: its child's pgid.
    fn branch(&self, i: usize) -> Result<u64> {
        let at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        self.slice(at, u32_at(&self.data, at), u64::from(u32_at(&self.data, at + 4)))?;
        Ok(u64_at(&self.data, at + 8))
    }
}

struct Frame {
    pgid: u64,
    node: Node,
    index: usize,
}

/// A depth-first walk of one tree, yielding leaf elements in order.
struct Cursor {
    start: Option<Root>,
    stack: Vec<Frame>,
    previous: Option<Vec<u8>>,
}

type Element = (u32, Vec<u8>, Vec<u8>);

impl Cursor {
    fn new(root: Root) -> Cursor {
        Cursor { start: Some(root), stack: Vec::new(), previous: None }
    }

    fn next<R: Read + Seek>(&mut self, db: &mut Db<R>) -> Option<Result<Element>> {
        match self.step(db) {
            Ok(item) => item.map(Ok),
            Err(e) => {
                // Fused: an error ends the walk.
                self.stack.clear();
                self.start = None;
                Some(Err(e))
            }
        }
    }

    fn push<R: Read + Seek>(&mut self, db: &mut Db<R>, pgid: u64) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH || self.stack.iter().any(|f| f.pgid == pgid) {
            return Err(Error::Corrupt(format!("page {pgid} makes a cycle or a tree over {MAX_DEPTH} levels deep")));
        }
        let node = Node::new(db.read_page(pgid)?, pgid)?;
        self.stack.push(Frame { pgid, node, index: 0 });
        Ok(())
    }

    fn step<R: Read + Seek>(&mut self, db: &mut Db<R>) -> Result<Option<Element>> {
        match self.start.take() {
            Some(Root::Page(pgid)) => self.push(db, pgid)?,
            Some(Root::Inline(page)) => {
                let node = Node::new(page, 0)?;
                self.stack.push(Frame { pgid: 0, node, index: 0 });
            }
            None => {}
        }
        loop {
            let Some(top) = self.stack.last_mut() else { return Ok(None) };
            let i = top.index;
            if i >= usize::from(top.node.header.count) {
                self.stack.pop();
                continue;
            }
            top.index += 1;
            if !top.node.is_leaf() {
                let child = top.node.branch(i)?;
                self.push(db, child)?;
                continue;
            }
            let (flags, k, v) = top.node.leaf(i)?;
            let key = top.node.data[k].to_vec();
            let value = top.node.data[v].to_vec();
            if self.previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(Error::Corrupt(format!(
                    "key {:?} after {:?}: keys out of order or a page referenced twice",
                    show(&key),
                    show(self.previous.as_deref().unwrap_or_default())
                )));
            }
            self.previous = Some(key.clone());
            return Ok(Some((flags, key, value)));
        }
    }
}

/// The key/value pairs of one bucket in key order; see [`Db::entries`].
pub struct Entries<'a, R> {
    db: &'a mut Db<R>,
    cursor: Cursor,
    bucket: Vec<u8>,
}

impl<R: Read + Seek> Iterator for Entries<'_, R> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.cursor.next(self.db)?.and_then(|(flags, key, value)| {
            if flags & BUCKET_LEAF_FLAG != 0 {
                self.cursor.stack.clear();
                return Err(Error::NestedBucket { bucket: show(&self.bucket), key: show(&key) });
            }
            Ok((key, value))
        }))
    }
}
