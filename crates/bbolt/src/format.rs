//! bbolt's on-disk layout (etcd-io/bbolt `internal/common/page.go`, `meta.go`,
//! `bucket.go`), all little-endian:
//!
//! - every page starts with a 16-byte header: `id u64, flags u16, count u16,
//!   overflow u32`; a page with `overflow = n` spans `n + 1` page-sized slots
//!   and carries one header;
//! - pages 0 and 1 are metas: the header, then `magic u32, version u32,
//!   page_size u32, flags u32, root {pgid u64, sequence u64}, freelist u64,
//!   pgid u64 (high-water mark), txid u64, checksum u64`, the checksum being
//!   FNV-1a 64 of the 56 bytes before it;
//! - a branch page holds `count` 16-byte elements `pos u32, ksize u32, pgid
//!   u64`, a leaf page `flags u32, pos u32, ksize u32, vsize u32`; `pos` counts
//!   from the element's own first byte to its key, the value follows the key;
//! - a leaf element with flag 1 is a bucket: its value is `root u64, sequence
//!   u64`, and when `root` is 0 the bucket is inline: its leaf page follows.

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
pub const DEFAULT_PAGE_SIZE: u32 = 4096;
/// The freelist pgid of a file whose freelist is not saved (etcd since 3.3).
pub const PGID_NO_FREELIST: u64 = u64::MAX;

pub const PAGE_HEADER_SIZE: usize = 16;
pub const ELEMENT_SIZE: usize = 16;
pub const BUCKET_HEADER_SIZE: usize = 16;
pub const META_SIZE: usize = 64;
const META_CHECKSUMMED: usize = 56;

pub const BRANCH_PAGE: u16 = 0x01;
pub const LEAF_PAGE: u16 = 0x02;
pub const META_PAGE: u16 = 0x04;
pub const BUCKET_LEAF_FLAG: u32 = 0x01;

/// bbolt's limits on what a put accepts.
pub const MAX_KEY_SIZE: usize = 32768;
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    /// Reads a header from the first 16 bytes of `b` (which must hold them).
    pub fn read(b: &[u8]) -> PageHeader {
        PageHeader { id: u64_at(b, 0), flags: u16_at(b, 8), count: u16_at(b, 10), overflow: u32_at(b, 12) }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.overflow.to_le_bytes());
    }
}

/// The contents of a meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    /// The root bucket's root page: the tree whose leaves name the top-level buckets.
    pub root: u64,
    pub root_sequence: u64,
    /// [`PGID_NO_FREELIST`] when the freelist is not saved.
    pub freelist: u64,
    /// The high-water mark: one past the last page in use.
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

/// Why a meta page was rejected, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaFault {
    Magic,
    Version(u32),
    Checksum,
}

impl Meta {
    /// Decodes the 64 meta bytes (those after a meta page's header).
    pub fn decode(b: &[u8; META_SIZE]) -> Meta {
        Meta {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            page_size: u32_at(b, 8),
            flags: u32_at(b, 12),
            root: u64_at(b, 16),
            root_sequence: u64_at(b, 24),
            freelist: u64_at(b, 32),
            pgid: u64_at(b, 40),
            txid: u64_at(b, 48),
            checksum: u64_at(b, 56),
        }
    }

    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut b = Vec::with_capacity(META_SIZE);
        for v in [self.magic, self.version, self.page_size, self.flags] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.root, self.root_sequence, self.freelist, self.pgid, self.txid] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let sum = fnv1a64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b.try_into().expect("64 meta bytes")
    }

    /// The checksum these fields should carry.
    pub fn sum(&self) -> u64 {
        fnv1a64(&self.encode()[..META_CHECKSUMMED])
    }

    /// bbolt's `Meta.Validate`: magic, then version, then checksum.
    pub fn validate(&self) -> Result<(), MetaFault> {
        if self.magic != MAGIC {
            Err(MetaFault::Magic)
        } else if self.version != VERSION {
            Err(MetaFault::Version(self.version))
        } else if self.checksum != self.sum() {
            Err(MetaFault::Checksum)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_go_hash_fnv_new64a() {
        // Values from the FNV reference vectors (Go's hash/fnv tests).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"hello"), 0xa430d84680aabd0b);
    }

    #[test]
    fn meta_round_trips_and_validates() {
        let mut m = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: 4096,
            flags: 0,
            root: 3,
            root_sequence: 0,
            freelist: PGID_NO_FREELIST,
            pgid: 4,
            txid: 7,
            checksum: 0,
        };
        m.checksum = m.sum();
        let d = Meta::decode(&m.encode());
        assert_eq!(d, m);
        assert_eq!(d.validate(), Ok(()));
        let mut bad = m;
        bad.txid = 8;
        assert_eq!(bad.validate(), Err(MetaFault::Checksum));
        bad.version = 1;
        assert_eq!(bad.validate(), Err(MetaFault::Version(1)));
        bad.magic = 0;
        assert_eq!(bad.validate(), Err(MetaFault::Magic));
    }
}
