//! `HashKV`: a checksum of the stored history, comparable across members
//! and with etcd itself, because revision keys and KeyValue encodings are
//! etcd's byte for byte (etcd 3.4 `store.HashByRev`).

use std::time::Instant;

use super::KvStore;
use crate::backend::{Backend as _, Keyspace};
use crate::error::MvccError;
use crate::revision::{self, Revision};

/// The answer to a HashKV request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// Store revision when the hash was taken (the response header revision).
    pub current_revision: i64,
    /// The compaction point the hash starts from.
    pub compact_revision: i64,
    /// The revision the hash covers history up to.
    pub hash_revision: i64,
}

impl KvStore {
    /// CRC-32C over the revisions keyspace up to `rev` (0: current), as etcd
    /// computes it: the bucket name `key`, then every revision key and value
    /// in order, skipping revisions at or below the compaction point that a
    /// compaction at `rev` would delete.
    pub fn hash_by_rev(&self, rev: i64) -> Result<KvHash, MvccError> {
        let started = Instant::now();
        let state = self.state.read();
        let (compact_rev, current_rev) = (state.compact_rev, state.current_rev);
        if rev > 0 && rev <= compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > 0 && rev > current_rev {
            return Err(MvccError::FutureRevision);
        }
        let rev = if rev == 0 { current_rev } else { rev };
        let keep = state.index.keep_for_compact(rev);
        let _values_stay = self.compaction.read();
        drop(state);

        let mut crc = Crc32c::new();
        crc.update(Keyspace::Revisions.name().as_bytes());
        let end = Revision::new(rev + 1, 0).to_bytes();
        let mut bad_key = false;
        self.backend.scan(Keyspace::Revisions, &[], Some(&end), &mut |k, v| {
            let Some((r, _)) = revision::decode_key(k) else {
                bad_key = true;
                return false;
            };
            if r.main <= compact_rev && !keep.is_empty() && !keep.contains(&r) {
                return true;
            }
            crc.update(k);
            crc.update(v);
            true
        })?;
        if bad_key {
            return Err(MvccError::Corrupt("revisions keyspace holds a non-revision key".into()));
        }
        self.metrics.hashed_by_rev(started.elapsed());
        Ok(KvHash {
            hash: crc.finish(),
            current_revision: current_rev,
            compact_revision: compact_rev,
            hash_revision: rev,
        })
    }
}

/// CRC-32 with the Castagnoli polynomial (Go's `crc32.MakeTable(crc32.Castagnoli)`),
/// the checksum of every etcd hash: HashKV, Hash and `snapshot status`.
#[derive(Clone, Debug)]
pub struct Crc32c {
    crc: u32,
}

const CASTAGNOLI_REFLECTED: u32 = 0x82f6_3b78;

static TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ CASTAGNOLI_REFLECTED } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    pub fn new() -> Self {
        Crc32c { crc: !0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.crc = TABLE[((self.crc ^ u32::from(b)) & 0xff) as usize] ^ (self.crc >> 8);
        }
    }

    pub fn finish(&self) -> u32 {
        !self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answers() {
        let crc = |data: &[u8]| {
            let mut c = Crc32c::new();
            c.update(data);
            c.finish()
        };
        assert_eq!(crc(b""), 0);
        assert_eq!(crc(b"123456789"), 0xe306_9283);
        let mut split = Crc32c::new();
        split.update(b"1234");
        split.update(b"56789");
        assert_eq!(split.finish(), 0xe306_9283);
    }
}
