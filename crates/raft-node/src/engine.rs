//! Durable homes for the raft log: append-only segment files for real
//! members ([`crate::segment_log`]), RocksDB for data dirs written before
//! those existed, memory for tests and simulated clusters. All speak
//! [`LogEngine`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use raft::prelude::{ConfState, Entry, HardState};

use crate::RaftNodeError;

/// What a log engine holds when it is opened.
#[derive(Default, Debug)]
pub struct PersistedLog {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Index and term of the last entry dropped by compaction.
    pub compacted: (u64, u64),
    pub last_index: u64,
}

/// One atomic change to the log.
#[derive(Default)]
pub struct LogWrite<'a> {
    /// Drop every entry after this index before appending.
    pub truncate_after: Option<u64>,
    /// The last index before this write (bounds the truncation).
    pub old_last_index: u64,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
    pub conf_state: Option<&'a ConfState>,
    /// Drop every entry up to this index, and remember (index, term) as the
    /// boundary of the compacted log.
    pub compact_to: Option<(u64, u64)>,
    /// Wait for the write to reach stable storage before returning.
    pub sync: bool,
}

pub trait LogEngine: Send + 'static {
    fn load(&self) -> Result<PersistedLog, RaftNodeError>;
    /// Entries in `[low, high)`; all of them must exist.
    fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>, RaftNodeError>;
    fn write(&self, write: LogWrite<'_>) -> Result<(), RaftNodeError>;
}

/// The durable log engines a member can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEngineKind {
    /// [`crate::SegmentLogEngine`]: what new members use.
    Segments,
    /// [`RocksLogEngine`]: data dirs written before the segment engine.
    RocksDb,
}

impl LogEngineKind {
    /// The engine that wrote the log in `dir`, or `fresh` when `dir` holds
    /// no log yet. A log stays in the engine that wrote it.
    pub fn of_dir(dir: &Path, fresh: LogEngineKind) -> LogEngineKind {
        if dir.join("CURRENT").exists() {
            LogEngineKind::RocksDb
        } else if std::fs::read_dir(dir).is_ok_and(|mut items| {
            items.any(|item| item.is_ok_and(|item| item.file_name().to_string_lossy().ends_with(".log")))
        }) {
            LogEngineKind::Segments
        } else {
            fresh
        }
    }

    /// Opens the log in `dir` with this engine.
    pub fn open(self, dir: &Path) -> Result<Box<dyn LogEngine>, RaftNodeError> {
        Ok(match self {
            LogEngineKind::Segments => Box::new(crate::SegmentLogEngine::open(dir)?),
            LogEngineKind::RocksDb => Box::new(RocksLogEngine::open(dir)?),
        })
    }
}

const HARD_STATE_KEY: &[u8] = b"m:hard_state";
const CONF_STATE_KEY: &[u8] = b"m:conf_state";
const COMPACTED_KEY: &[u8] = b"m:compacted";
const ENTRY_PREFIX: u8 = b'e';

fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [ENTRY_PREFIX; 9];
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M, RaftNodeError> {
    M::parse_from_bytes(bytes).map_err(|e| RaftNodeError::Corrupt(format!("{what}: {e}")))
}

fn encode<M: protobuf::Message>(message: &M) -> Vec<u8> {
    message.write_to_bytes().expect("raft messages always encode")
}

/// The raft log in its own RocksDB instance, every acknowledged append synced.
pub struct RocksLogEngine {
    db: rocksdb::DB,
}

/// Memtable size of the raft log's RocksDB.
const LOG_MEMTABLE_BYTES: usize = 8 << 20;

impl RocksLogEngine {
    pub fn open(dir: &Path) -> Result<Self, RaftNodeError> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        // The log is written once and read back rarely: keep the memtable
        // small and skip compression work on the hot path.
        options.set_compression_type(rocksdb::DBCompressionType::None);
        // Entries live until the next log compaction (10,000 entries by
        // default), so a large memtable only holds memory: RocksDB's default
        // of two 64 MiB memtables was a fifth of the RSS with a million keys.
        options.set_write_buffer_size(LOG_MEMTABLE_BYTES);
        options.set_max_total_wal_size(64 << 20);
        options.set_keep_log_file_num(2);
        // Every append is fsynced. In a WAL file that grows, each fsync also
        // writes the file's inode (its size changed): a third device request
        // beside the data and the cache flush. A recycled WAL file is
        // overwritten within its old size, as etcd preallocates its WAL
        // segments, so once the first file has been retired the fsync
        // writes data only. (RocksDB tells recycled records from the old
        // ones they overwrite by the log number each carries.)
        options.set_recycle_log_file_num(2);
        let db = rocksdb::DB::open(&options, dir)?;
        Ok(RocksLogEngine { db })
    }
}

impl From<rocksdb::Error> for RaftNodeError {
    fn from(err: rocksdb::Error) -> Self {
        RaftNodeError::Storage(err.into_string())
    }
}

impl LogEngine for RocksLogEngine {
    fn load(&self) -> Result<PersistedLog, RaftNodeError> {
        let mut log = PersistedLog::default();
        if let Some(bytes) = self.db.get(HARD_STATE_KEY)? {
            log.hard_state = decode(&bytes, "hard state")?;
        }
        if let Some(bytes) = self.db.get(CONF_STATE_KEY)? {
            log.conf_state = decode(&bytes, "conf state")?;
        }
        let mut last = self.db.raw_iterator();
        last.seek_for_prev(entry_key(u64::MAX));
        if let Some(key) = last.key() {
            if key.first() == Some(&ENTRY_PREFIX) && key.len() == 9 {
                log.last_index = u64::from_be_bytes(key[1..].try_into().expect("9-byte key"));
            }
        }
        if let Some(bytes) = self.db.get(COMPACTED_KEY)? {
            let bytes: [u8; 16] =
                bytes.as_slice().try_into().map_err(|_| RaftNodeError::Corrupt("compaction boundary".into()))?;
            log.compacted = (
                u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
            );
        }
        log.last_index = log.last_index.max(log.compacted.0);
        Ok(log)
    }

    fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>, RaftNodeError> {
        let mut out = Vec::with_capacity(high.saturating_sub(low) as usize);
        let mut iter = self.db.raw_iterator();
        iter.seek(entry_key(low));
        let mut expect = low;
        while expect < high {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else { break };
            if key != entry_key(expect) {
                break;
            }
            out.push(decode(value, "entry")?);
            expect += 1;
            iter.next();
        }
        iter.status()?;
        if expect != high {
            return Err(RaftNodeError::Corrupt(format!("raft log misses entry {expect}")));
        }
        Ok(out)
    }

    fn write(&self, write: LogWrite<'_>) -> Result<(), RaftNodeError> {
        let mut batch = rocksdb::WriteBatch::default();
        if let Some(after) = write.truncate_after {
            batch.delete_range(entry_key(after + 1), entry_key(write.old_last_index + 1));
        }
        for entry in write.entries {
            batch.put(entry_key(entry.index), encode(entry));
        }
        if let Some(hs) = write.hard_state {
            batch.put(HARD_STATE_KEY, encode(hs));
        }
        if let Some(cs) = write.conf_state {
            batch.put(CONF_STATE_KEY, encode(cs));
        }
        if let Some((index, term)) = write.compact_to {
            batch.delete_range(entry_key(0), entry_key(index + 1));
            batch.put(COMPACTED_KEY, [index.to_be_bytes(), term.to_be_bytes()].concat());
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(write.sync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }
}

/// A log that lives as long as its clones: for unit tests and simulated
/// clusters, where "restarting" a member means reopening the same engine.
/// It also keeps what a synced write made durable, so a simulation can
/// model a power loss ([`MemLogEngine::after_power_loss`]).
#[derive(Clone, Default)]
pub struct MemLogEngine {
    inner: Arc<Mutex<MemLog>>,
    durable: Arc<Mutex<MemLog>>,
}

impl MemLogEngine {
    /// The log as a power loss leaves it: what the last synced write made
    /// durable (writes reach the disk in order, so a synced write also
    /// carries every unsynced one before it).
    pub fn after_power_loss(&self) -> MemLogEngine {
        let durable = self.durable.lock().clone();
        MemLogEngine { inner: Arc::new(Mutex::new(durable.clone())), durable: Arc::new(Mutex::new(durable)) }
    }
}

#[derive(Clone, Default)]
struct MemLog {
    hard_state: HardState,
    conf_state: ConfState,
    entries: BTreeMap<u64, Entry>,
    compacted: (u64, u64),
}

impl LogEngine for MemLogEngine {
    fn load(&self) -> Result<PersistedLog, RaftNodeError> {
        let log = self.inner.lock();
        Ok(PersistedLog {
            hard_state: log.hard_state.clone(),
            conf_state: log.conf_state.clone(),
            compacted: log.compacted,
            last_index: log.entries.keys().next_back().copied().unwrap_or(0).max(log.compacted.0),
        })
    }

    fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>, RaftNodeError> {
        let log = self.inner.lock();
        let out: Vec<Entry> = log.entries.range(low..high).map(|(_, e)| e.clone()).collect();
        if out.len() as u64 != high.saturating_sub(low) {
            return Err(RaftNodeError::Corrupt(format!("raft log misses entries in [{low}, {high})")));
        }
        Ok(out)
    }

    fn write(&self, write: LogWrite<'_>) -> Result<(), RaftNodeError> {
        let mut log = self.inner.lock();
        if let Some(after) = write.truncate_after {
            log.entries.split_off(&(after + 1));
        }
        for entry in write.entries {
            log.entries.insert(entry.index, entry.clone());
        }
        if let Some(hs) = write.hard_state {
            log.hard_state = hs.clone();
        }
        if let Some(cs) = write.conf_state {
            log.conf_state = cs.clone();
        }
        if let Some((index, term)) = write.compact_to {
            log.entries = log.entries.split_off(&(index + 1));
            log.compacted = (index, term);
        }
        if write.sync {
            *self.durable.lock() = log.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    /// One behaviour, both engines.
    fn conformance(engine: &dyn LogEngine, reopen: &dyn Fn() -> Box<dyn LogEngine>) {
        let mut hs = HardState::default();
        hs.set_term(3);
        hs.set_vote(1);
        let entries = [entry(1, 2), entry(2, 2), entry(3, 3)];
        engine.write(LogWrite { entries: &entries, hard_state: Some(&hs), sync: true, ..LogWrite::default() }).unwrap();
        engine
            .write(LogWrite {
                truncate_after: Some(1),
                old_last_index: 3,
                entries: &[entry(2, 4)],
                sync: true,
                ..LogWrite::default()
            })
            .unwrap();
        let reopened = reopen();
        let log = reopened.load().unwrap();
        assert_eq!(log.last_index, 2);
        assert_eq!(log.hard_state.term, 3);
        assert_eq!(log.compacted, (0, 0));
        let got = reopened.entries(1, 3).unwrap();
        assert_eq!(got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 2), (2, 4)]);
        assert!(reopened.entries(1, 4).is_err());
    }

    #[test]
    fn mem_engine_conformance() {
        let engine = MemLogEngine::default();
        let clone = engine.clone();
        conformance(&engine, &move || Box::new(clone.clone()));
    }

    #[test]
    fn segment_engine_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let engine = crate::SegmentLogEngine::open(&path).unwrap();
        conformance(&engine, &move || Box::new(crate::SegmentLogEngine::open(&path).unwrap()));
    }

    #[test]
    fn the_engine_of_an_existing_log_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rocks = dir.path().join("rocks");
        drop(RocksLogEngine::open(&rocks).unwrap());
        assert_eq!(LogEngineKind::of_dir(&rocks, LogEngineKind::Segments), LogEngineKind::RocksDb);
        let fresh = dir.path().join("fresh");
        assert_eq!(LogEngineKind::of_dir(&fresh, LogEngineKind::Segments), LogEngineKind::Segments);
        assert_eq!(LogEngineKind::of_dir(&fresh, LogEngineKind::RocksDb), LogEngineKind::RocksDb);
        drop(crate::SegmentLogEngine::open(&fresh).unwrap());
        assert_eq!(LogEngineKind::of_dir(&fresh, LogEngineKind::RocksDb), LogEngineKind::Segments);
    }

    #[test]
    fn rocks_engine_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        {
            let engine = RocksLogEngine::open(&path).unwrap();
            let mut hs = HardState::default();
            hs.set_term(3);
            engine.write(LogWrite { hard_state: Some(&hs), ..LogWrite::default() }).unwrap();
        }
        let engine = RocksLogEngine::open(&path).unwrap();
        // RocksDB allows one open handle per directory: the reopen check runs
        // against a second, read-only view of the same files.
        let reopen_path = path.clone();
        conformance(&engine, &move || {
            let db = rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), &reopen_path, false).unwrap();
            Box::new(RocksLogEngine { db })
        });
    }
}
