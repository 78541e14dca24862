//! The sha256 trailer `etcdctl snapshot save` keeps after the database.
//!
//! A bbolt file is a whole number of pages, so its size modulo 512 is 0;
//! a saved snapshot has 32 more bytes (etcd's own test for "has a hash").

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::SnapshotError;

/// Length of the sha256 trailer.
pub const TRAILER_LEN: usize = 32;

/// What [`verify_trailer`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trailer {
    /// The trailer matches the `db_len` bytes before it.
    Verified { db_len: u64 },
    /// No trailer: the whole file is the database.
    Absent { db_len: u64 },
}

impl Trailer {
    /// Bytes of the file that are the bbolt database.
    pub fn db_len(self) -> u64 {
        match self {
            Trailer::Verified { db_len } | Trailer::Absent { db_len } => db_len,
        }
    }
}

/// Checks the file at `path` against its trailer, reading it once in
/// bounded memory. Without a trailer, fails with
/// [`SnapshotError::MissingHash`] when `required`, as `etcdctl snapshot
/// restore` does without `--skip-hash-check`.
pub fn verify_trailer(path: &Path, required: bool) -> Result<Trailer, SnapshotError> {
    let file = File::open(path).map_err(SnapshotError::io(path))?;
    let size = file.metadata().map_err(SnapshotError::io(path))?.len();
    if size % 512 != TRAILER_LEN as u64 {
        if required {
            return Err(SnapshotError::MissingHash);
        }
        return Ok(Trailer::Absent { db_len: size });
    }
    let db_len = size - TRAILER_LEN as u64;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut hasher = Sha256::new();
    let mut left = db_len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = reader.read(&mut buf[..want]).map_err(SnapshotError::io(path))?;
        if n == 0 {
            return Err(SnapshotError::Io {
                path: path.into(),
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while read"),
            });
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut expected = [0u8; TRAILER_LEN];
    reader.read_exact(&mut expected).map_err(SnapshotError::io(path))?;
    let actual = hasher.finalize();
    if actual.as_slice() != expected {
        return Err(SnapshotError::HashMismatch { expected: expected.to_vec(), actual: actual.to_vec() });
    }
    Ok(Trailer::Verified { db_len })
}
