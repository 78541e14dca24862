//! Revisions and their on-disk encoding.
//!
//! A revision is `(main, sub)`: `main` is the store revision of one write
//! (one Put, one DeleteRange, one Txn), `sub` numbers the changes inside that
//! write. Keys of the revisions keyspace are etcd's bucket keys byte for byte:
//! `main` as 8 bytes big-endian, `_`, `sub` as 8 bytes big-endian, and a
//! trailing `t` when the revision is a tombstone. Big-endian makes the byte
//! order of the keyspace the revision order, so a forward scan replays history
//! and `[(a, 0), (b, 0))` is every change of revisions `a..b`.

use std::fmt;

/// Length of an encoded revision without the tombstone mark.
pub const REV_BYTES_LEN: usize = 8 + 1 + 8;
/// Length of an encoded tombstone revision.
pub const MARKED_REV_BYTES_LEN: usize = REV_BYTES_LEN + 1;
const MARK_TOMBSTONE: u8 = b't';

/// A point in the store's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The 17-byte key of this revision.
    pub fn to_bytes(self) -> [u8; REV_BYTES_LEN] {
        let mut b = [0u8; REV_BYTES_LEN];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    /// The key of this revision, with the tombstone mark when `tombstone`.
    pub fn to_key(self, tombstone: bool) -> RevKey {
        let mut bytes = [0u8; MARKED_REV_BYTES_LEN];
        bytes[..REV_BYTES_LEN].copy_from_slice(&self.to_bytes());
        let len = if tombstone {
            bytes[REV_BYTES_LEN] = MARK_TOMBSTONE;
            MARKED_REV_BYTES_LEN
        } else {
            REV_BYTES_LEN
        };
        RevKey { bytes, len }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

/// An encoded revision key kept on the stack (no allocation per lookup).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RevKey {
    bytes: [u8; MARKED_REV_BYTES_LEN],
    len: usize,
}

impl RevKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for RevKey {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for RevKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match decode_key(self.as_bytes()) {
            Some((rev, tomb)) => write!(f, "RevKey({rev}{})", if tomb { "t" } else { "" }),
            None => write!(f, "RevKey({:?})", self.as_bytes()),
        }
    }
}

/// Decodes a revisions-keyspace key into its revision and tombstone flag.
/// Returns `None` for anything that is not a well-formed revision key.
pub fn decode_key(b: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match b.len() {
        REV_BYTES_LEN => false,
        MARKED_REV_BYTES_LEN if b[REV_BYTES_LEN] == MARK_TOMBSTONE => true,
        _ => return None,
    };
    if b[8] != b'_' {
        return None;
    }
    let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
    let sub = u64::from_be_bytes(b[9..REV_BYTES_LEN].try_into().ok()?) as i64;
    Some((Revision { main, sub }, tombstone))
}

/// True when the key carries the tombstone mark (etcd's `isTombstone`).
pub fn is_tombstone(b: &[u8]) -> bool {
    b.len() == MARKED_REV_BYTES_LEN && b[REV_BYTES_LEN] == MARK_TOMBSTONE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_etcd_bucket_keys() {
        let rev = Revision::new(0x0102, 3);
        assert_eq!(rev.to_bytes(), [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]);
        let key = rev.to_key(true);
        assert_eq!(key.as_bytes().len(), MARKED_REV_BYTES_LEN);
        assert_eq!(key.as_bytes()[17], b't');
        assert!(is_tombstone(key.as_bytes()));
        assert!(!is_tombstone(rev.to_key(false).as_bytes()));
    }

    #[test]
    fn round_trips() {
        for (main, sub) in [(1, 0), (2, 7), (i64::MAX, i64::MAX), (1 << 40, 1 << 20)] {
            for tomb in [false, true] {
                let rev = Revision::new(main, sub);
                assert_eq!(decode_key(rev.to_key(tomb).as_bytes()), Some((rev, tomb)));
            }
        }
    }

    #[test]
    fn byte_order_is_revision_order() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(255, 0),
            Revision::new(256, 0),
            Revision::new(1 << 33, 5),
        ];
        for w in revs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_bytes() < w[1].to_bytes());
            // A tombstone sorts right after the plain key of the same revision.
            assert!(w[0].to_key(true).as_bytes() < w[1].to_key(false).as_bytes());
        }
    }

    #[test]
    fn rejects_malformed_keys() {
        assert_eq!(decode_key(b"short"), None);
        let mut bad = Revision::new(1, 1).to_bytes();
        bad[8] = b'-';
        assert_eq!(decode_key(&bad), None);
        let mut marked = [0u8; MARKED_REV_BYTES_LEN];
        marked[..REV_BYTES_LEN].copy_from_slice(&Revision::new(1, 1).to_bytes());
        marked[REV_BYTES_LEN] = b'x';
        assert_eq!(decode_key(&marked), None);
    }
}
