//! A leader's snapshot travels beside raft, not inside it. Raft's
//! MsgSnapshot carries only the index and the membership; the store itself
//! streams from a checkpoint the leader keeps on its [`SnapshotShelf`] into
//! a [`SnapshotSpool`] on the follower, piece by piece, and the follower's
//! applier installs it from there once raft has taken the message. Either
//! side holds a few pieces in memory at a time, whatever the store's size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_mvcc::{KvStore, MvccError, StoreCheckpoint};
use keel_raft_node::failpoints::fault_point;
use parking_lot::Mutex;

use crate::NodeError;

/// Bytes of store per piece: far below gRPC's message limits, large enough
/// that the cost per message does not matter.
pub(crate) const PIECE_BYTES: usize = 1 << 20;

/// No piece a leader makes comes near this; a larger length is corruption.
const MAX_PIECE_BYTES: usize = 256 << 20;

/// The checkpoint a leader offers the followers that need a snapshot: the
/// newest only (an older one is dropped, and its files with it, once the
/// transfers reading it end).
#[derive(Default)]
pub struct SnapshotShelf {
    offered: Mutex<Option<Arc<StoreCheckpoint>>>,
}

impl SnapshotShelf {
    pub(crate) fn offer(&self, checkpoint: Arc<StoreCheckpoint>) {
        *self.offered.lock() = Some(checkpoint);
    }

    /// The offered checkpoint, if it is the one at `index`.
    pub(crate) fn at(&self, index: u64) -> Option<Arc<StoreCheckpoint>> {
        self.offered.lock().as_ref().filter(|c| c.index() == index).cloned()
    }
}

/// Replaces `kv`'s state with the spooled snapshot at `index`, then forgets
/// the spooled snapshots it covers.
pub(crate) fn install_spooled(kv: &KvStore, spool: &dyn SnapshotSpool, index: u64) -> Result<(), NodeError> {
    let pieces = spool.pieces(index)?.map(|piece| {
        let piece = piece.map_err(|e| MvccError::Corrupt(e.to_string()));
        fault_point("snapshot-install-midway", &[]);
        piece
    });
    kv.install_snapshot(pieces).map_err(NodeError::Mvcc)?;
    spool.clear_through(kv.consistent_index());
    Ok(())
}

/// The pieces of a spooled snapshot, read as they are taken.
pub type SpooledPieces = Box<dyn Iterator<Item = Result<Vec<u8>, NodeError>> + Send>;

/// Where a follower keeps a leader's snapshot from its arrival until it is
/// installed (and, should installing be cut off by a crash, until it is
/// installed again at restart).
pub trait SnapshotSpool: Send + Sync + 'static {
    /// Starts taking in the snapshot at raft index `index`.
    fn create(&self, index: u64) -> Result<Box<dyn SpoolWriter>, NodeError>;
    /// The pieces of the complete snapshot at `index`.
    fn pieces(&self, index: u64) -> Result<SpooledPieces, NodeError>;
    /// The index of the newest complete snapshot held.
    fn newest(&self) -> Option<u64>;
    /// Forgets every snapshot at or below `index`.
    fn clear_through(&self, index: u64);
}

/// One snapshot being taken in.
pub trait SpoolWriter: Send {
    fn push(&mut self, piece: &[u8]) -> Result<(), NodeError>;
    /// Makes the snapshot durable and readable under its index.
    fn finish(self: Box<Self>) -> Result<(), NodeError>;
}

/// Snapshots as files in a directory (`member/snap`, as etcd's): each a
/// sequence of pieces, a little-endian `u32` length before each.
pub struct DirSpool {
    dir: PathBuf,
    /// Tells apart two transfers of the same index under way at once.
    transfers: AtomicU64,
}

fn io_error(path: &Path, err: std::io::Error) -> NodeError {
    NodeError::Storage(format!("{}: {err}", path.display()))
}

impl DirSpool {
    /// The spool in `dir` (created if missing); transfers a crash cut off
    /// are removed.
    pub fn open(dir: &Path) -> Result<DirSpool, NodeError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let spool = DirSpool { dir: dir.to_path_buf(), transfers: AtomicU64::new(0) };
        // Only its own partial files: the directory is etcd's `member/snap`
        // too, whose `db` an etcd data dir brought to Keel still holds.
        for (path, _) in spool.files() {
            if path.extension().is_some_and(|ext| ext == "part") {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(spool)
    }

    fn complete(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index:016x}.snap"))
    }

    /// Every file of the spool, with the index of the complete ones.
    fn files(&self) -> Vec<(PathBuf, Option<u64>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .map(|entry| {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let index = name.strip_suffix(".snap").and_then(|hex| u64::from_str_radix(hex, 16).ok());
                (path, index)
            })
            .collect()
    }
}

impl SnapshotSpool for DirSpool {
    fn create(&self, index: u64) -> Result<Box<dyn SpoolWriter>, NodeError> {
        let transfer = self.transfers.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{index:016x}-{transfer}.part"));
        let file = File::create(&path).map_err(|e| io_error(&path, e))?;
        Ok(Box::new(FileWriter {
            file: Some(BufWriter::new(file)),
            path,
            complete: self.complete(index),
            dir: self.dir.clone(),
        }))
    }

    fn pieces(&self, index: u64) -> Result<SpooledPieces, NodeError> {
        let path = self.complete(index);
        let file = File::open(&path).map_err(|e| io_error(&path, e))?;
        Ok(Box::new(FilePieces { file: BufReader::new(file), path, done: false }))
    }

    fn newest(&self) -> Option<u64> {
        self.files().into_iter().filter_map(|(_, index)| index).max()
    }

    fn clear_through(&self, through: u64) {
        for (path, index) in self.files() {
            if index.is_some_and(|index| index <= through) {
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %err, "cannot remove an installed snapshot");
                }
            }
        }
    }
}

struct FileWriter {
    /// Taken when finished.
    file: Option<BufWriter<File>>,
    path: PathBuf,
    complete: PathBuf,
    dir: PathBuf,
}

impl SpoolWriter for FileWriter {
    fn push(&mut self, piece: &[u8]) -> Result<(), NodeError> {
        let len = u32::try_from(piece.len())
            .map_err(|_| NodeError::Corrupt(format!("a snapshot piece of {} bytes", piece.len())))?;
        let Some(file) = self.file.as_mut() else {
            return Err(NodeError::Storage(format!("{}: already finished", self.path.display())));
        };
        file.write_all(&len.to_le_bytes()).and_then(|()| file.write_all(piece)).map_err(|e| io_error(&self.path, e))
    }

    fn finish(mut self: Box<Self>) -> Result<(), NodeError> {
        let Some(file) = self.file.take() else { return Ok(()) };
        let file = file.into_inner().map_err(|e| io_error(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| io_error(&self.path, e))?;
        std::fs::rename(&self.path, &self.complete).map_err(|e| io_error(&self.complete, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io_error(&self.dir, e))
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Unfinished (a cut stream): nothing to keep. Finished: already renamed.
        let _ = std::fs::remove_file(&self.path);
    }
}

struct FilePieces {
    file: BufReader<File>,
    path: PathBuf,
    done: bool,
}

impl FilePieces {
    fn read_piece(&mut self) -> Result<Option<Vec<u8>>, NodeError> {
        let mut len = [0u8; 4];
        match self.file.read_exact(&mut len) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(io_error(&self.path, err)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_PIECE_BYTES {
            return Err(NodeError::Corrupt(format!("{}: a piece of {len} bytes", self.path.display())));
        }
        let mut piece = vec![0; len];
        self.file.read_exact(&mut piece).map_err(|e| io_error(&self.path, e))?;
        Ok(Some(piece))
    }
}

impl Iterator for FilePieces {
    type Item = Result<Vec<u8>, NodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let piece = self.read_piece().transpose();
        self.done = !matches!(piece, Some(Ok(_)));
        piece
    }
}

/// Complete snapshots in memory, by index: each its pieces.
type MemSnapshots = Arc<Mutex<HashMap<u64, Arc<Vec<Vec<u8>>>>>>;

/// Snapshots in memory: for members whose store is in memory too.
#[derive(Default)]
pub struct MemSpool {
    complete: MemSnapshots,
}

impl SnapshotSpool for MemSpool {
    fn create(&self, index: u64) -> Result<Box<dyn SpoolWriter>, NodeError> {
        Ok(Box::new(MemWriter { index, pieces: Vec::new(), complete: self.complete.clone() }))
    }

    fn pieces(&self, index: u64) -> Result<SpooledPieces, NodeError> {
        let pieces = self
            .complete
            .lock()
            .get(&index)
            .cloned()
            .ok_or_else(|| NodeError::Storage(format!("no snapshot at index {index} in the spool")))?;
        Ok(Box::new((0..pieces.len()).map(move |i| Ok(pieces[i].clone()))))
    }

    fn newest(&self) -> Option<u64> {
        self.complete.lock().keys().max().copied()
    }

    fn clear_through(&self, through: u64) {
        self.complete.lock().retain(|&index, _| index > through);
    }
}

struct MemWriter {
    index: u64,
    pieces: Vec<Vec<u8>>,
    complete: MemSnapshots,
}

impl SpoolWriter for MemWriter {
    fn push(&mut self, piece: &[u8]) -> Result<(), NodeError> {
        self.pieces.push(piece.to_vec());
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), NodeError> {
        self.complete.lock().insert(self.index, Arc::new(self.pieces));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(spool: &dyn SnapshotSpool, index: u64, pieces: &[&[u8]]) {
        let mut writer = spool.create(index).unwrap();
        for piece in pieces {
            writer.push(piece).unwrap();
        }
        writer.finish().unwrap();
    }

    fn read(spool: &dyn SnapshotSpool, index: u64) -> Vec<Vec<u8>> {
        spool.pieces(index).unwrap().map(Result::unwrap).collect()
    }

    fn behaves(spool: &dyn SnapshotSpool) {
        assert_eq!(spool.newest(), None);
        spooled(spool, 7, &[b"one", b"", b"three"]);
        spooled(spool, 9, &[b"nine"]);
        // Started, never finished: not there.
        spool.create(12).unwrap().push(b"cut").unwrap();
        assert_eq!(spool.newest(), Some(9));
        assert_eq!(read(spool, 7), vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        assert!(spool.pieces(12).is_err());
        spool.clear_through(7);
        assert!(spool.pieces(7).is_err());
        assert_eq!(read(spool, 9), vec![b"nine".to_vec()]);
        spool.clear_through(u64::MAX);
        assert_eq!(spool.newest(), None);
    }

    #[test]
    fn the_spools_keep_complete_snapshots_until_cleared() {
        behaves(&MemSpool::default());
        let dir = tempfile::tempdir().unwrap();
        behaves(&DirSpool::open(dir.path()).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
    }

    #[test]
    fn a_spooled_snapshot_survives_a_restart_and_a_torn_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        spooled(&DirSpool::open(dir.path()).unwrap(), 5, &[b"piece"]);
        let part = dir.path().join("0000000000000006-0.part");
        std::fs::write(&part, b"leftover").unwrap();
        let spool = DirSpool::open(dir.path()).unwrap();
        assert!(!part.exists(), "a crash's partial transfer is removed");
        assert_eq!(read(&spool, 5), vec![b"piece".to_vec()]);

        let torn = spool.complete(5);
        let bytes = std::fs::read(&torn).unwrap();
        std::fs::write(&torn, &bytes[..bytes.len() - 1]).unwrap();
        let pieces: Vec<_> = spool.pieces(5).unwrap().collect();
        assert!(matches!(pieces.as_slice(), [Err(NodeError::Storage(_))]), "{pieces:?}");
    }
}
