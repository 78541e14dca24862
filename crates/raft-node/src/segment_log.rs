//! The raft log as append-only segment files: one buffered write per
//! [`LogWrite`], one `fdatasync` when it must be durable.
//!
//! A raft log is written at its end, read back rarely (the log store keeps
//! the recent tail in memory) and dropped from its start. A key-value
//! engine spends work on all it does not need here: a write group, a WAL
//! record and then a memtable insert for every write, later flushes and
//! compactions of entries that were dropped long ago. This engine writes
//! each [`LogWrite`] as one record at the end of the active segment and
//! keeps only an index of where each entry is.
//!
//! # Format
//!
//! A directory of segments named `<seq as 16 hex digits>.log`. A segment
//! starts with [`MAGIC`] and its seq, then a checkpoint record (the hard
//! state, configuration and compaction boundary when it was started, so no
//! older segment is needed for them), then one record per write:
//!
//! ```text
//! len: u32 LE | crc32c(seq LE ++ body): u32 LE | body (len bytes)
//! body: kind u8 | flags u8 | [truncate_after u64] | [compact index u64, term u64]
//!       | [hard state: u32 len, bytes] | [conf state: u32 len, bytes]
//!       | entry count u32 | per entry: u32 len, Entry protobuf
//! ```
//!
//! A segment that is not the last ends with an end record: it is synced
//! before the next one is started, so a short or bad record before its end
//! is corruption. In the last segment the first record that does not check
//! out (zeros, a torn write, a stale record) is where the log ends: those
//! bytes were never acknowledged, since every acknowledged write was
//! synced with all that came before it. Opening the log closes its last
//! segment with an end record at that point and starts a new one, so a stale
//! record beyond a torn one can never be read as part of the log.
//!
//! Segments whose entries are all compacted are retired once the compaction
//! is durable; up to [`SPARE_SEGMENTS`] of them are kept as spares and
//! reused for new segments. A reused file has its blocks allocated already,
//! so an fsync writes data and nothing else (as etcd preallocates its WAL);
//! the seq in every record's checksum tells new records from old ones.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};

use crate::engine::{LogEngine, LogWrite, PersistedLog};
use crate::RaftNodeError;

const MAGIC: &[u8; 8] = b"KEELRLG1";
const HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: usize = 8;

const KIND_WRITE: u8 = 1;
const KIND_END: u8 = 2;

const HAS_TRUNCATE: u8 = 1;
const HAS_COMPACT: u8 = 2;
const HAS_HARD_STATE: u8 = 4;
const HAS_CONF_STATE: u8 = 8;

/// Size a new segment is given, as etcd's WAL segments (64 MiB). A write
/// larger than what is left starts a new segment; one larger than a whole
/// segment gets a segment of its own that grows to hold it.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Retired segments kept for reuse, at most.
const SPARE_SEGMENTS: usize = 2;
/// A record longer than this is not a record (a raft message is at most a
/// few MiB; a Ready's entries together stay well below this).
const MAX_RECORD_BYTES: u32 = 1 << 30;

/// Where an entry's protobuf lies.
#[derive(Clone, Copy, Debug)]
struct Loc {
    seq: u64,
    offset: u64,
    len: u32,
}

struct Segment {
    file: File,
    /// The highest entry index ever written into it (0 for none): it can be
    /// retired once the log is compacted up to here.
    max_entry: u64,
}

struct State {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every live segment by seq; the last one is the active segment.
    segments: BTreeMap<u64, Segment>,
    /// Where the next record of the active segment goes.
    offset: u64,
    /// Where the active segment's checkpoint ends: a segment with nothing
    /// after it is not worth closing for a large write.
    checkpoint_end: u64,
    /// While opening: where the last segment's valid records end, if it was
    /// not closed.
    open_end: Option<u64>,
    /// Written since the last fdatasync of the active segment.
    dirty: bool,
    /// Retired segment files waiting to be reused.
    spares: Vec<PathBuf>,
    hard_state: HardState,
    conf_state: ConfState,
    compacted: (u64, u64),
    /// Index of the first entry in `locs`.
    first: u64,
    locs: VecDeque<Loc>,
    /// Reused to encode each record.
    buf: Vec<u8>,
}

/// The raft log in append-only segment files (see the module docs).
pub struct SegmentLogEngine {
    state: Mutex<State>,
}

fn io_error(what: impl std::fmt::Display, err: std::io::Error) -> RaftNodeError {
    RaftNodeError::Storage(format!("{what}: {err}"))
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

fn sync_dir(dir: &Path) -> Result<(), RaftNodeError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir.display(), e))
}

fn checksum(seq: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), body)
}

/// A record being decoded, with the offsets of its entries in the file.
#[derive(Default)]
struct Record {
    kind: u8,
    truncate_after: Option<u64>,
    compact_to: Option<(u64, u64)>,
    hard_state: Option<HardState>,
    conf_state: Option<ConfState>,
    /// (index, offset in the file, len)
    entries: Vec<(u64, u64, u32)>,
}

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.body.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// Decodes a record body found at `body_offset` in its file.
fn decode_record(body: &[u8], body_offset: u64) -> Result<Record, String> {
    let mut cur = Cursor { body, at: 0 };
    let short = || "record cut short".to_string();
    let mut record = Record { kind: cur.u8().ok_or_else(short)?, ..Record::default() };
    if record.kind == KIND_END {
        return Ok(record);
    }
    if record.kind != KIND_WRITE {
        return Err(format!("unknown record kind {}", record.kind));
    }
    let flags = cur.u8().ok_or_else(short)?;
    if flags & HAS_TRUNCATE != 0 {
        record.truncate_after = Some(cur.u64().ok_or_else(short)?);
    }
    if flags & HAS_COMPACT != 0 {
        record.compact_to = Some((cur.u64().ok_or_else(short)?, cur.u64().ok_or_else(short)?));
    }
    if flags & HAS_HARD_STATE != 0 {
        let len = cur.u32().ok_or_else(short)? as usize;
        let bytes = cur.take(len).ok_or_else(short)?;
        record.hard_state = Some(HardState::parse_from_bytes(bytes).map_err(|e| format!("hard state: {e}"))?);
    }
    if flags & HAS_CONF_STATE != 0 {
        let len = cur.u32().ok_or_else(short)? as usize;
        let bytes = cur.take(len).ok_or_else(short)?;
        record.conf_state = Some(ConfState::parse_from_bytes(bytes).map_err(|e| format!("conf state: {e}"))?);
    }
    let count = cur.u32().ok_or_else(short)?;
    for _ in 0..count {
        let index = cur.u64().ok_or_else(short)?;
        let len = cur.u32().ok_or_else(short)?;
        let at = cur.at;
        cur.take(len as usize).ok_or_else(short)?;
        record.entries.push((index, body_offset + at as u64, len));
    }
    if cur.at != body.len() {
        return Err("record has trailing bytes".into());
    }
    Ok(record)
}

/// Encodes `write` as one record (header included) into `buf`.
fn encode_record(buf: &mut Vec<u8>, seq: u64, write: &LogWrite<'_>, mut on_entry: impl FnMut(u64, usize, u32)) {
    buf.clear();
    buf.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    buf.push(KIND_WRITE);
    let flags = (if write.truncate_after.is_some() { HAS_TRUNCATE } else { 0 })
        | (if write.compact_to.is_some() { HAS_COMPACT } else { 0 })
        | (if write.hard_state.is_some() { HAS_HARD_STATE } else { 0 })
        | (if write.conf_state.is_some() { HAS_CONF_STATE } else { 0 });
    buf.push(flags);
    if let Some(after) = write.truncate_after {
        buf.extend_from_slice(&after.to_le_bytes());
    }
    if let Some((index, term)) = write.compact_to {
        buf.extend_from_slice(&index.to_le_bytes());
        buf.extend_from_slice(&term.to_le_bytes());
    }
    let put_message = |buf: &mut Vec<u8>, message: &dyn protobuf::Message| {
        let len_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        message.write_to_vec(buf).expect("raft messages always encode");
        let len = (buf.len() - len_at - 4) as u32;
        buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        len
    };
    if let Some(hs) = write.hard_state {
        put_message(buf, hs);
    }
    if let Some(cs) = write.conf_state {
        put_message(buf, cs);
    }
    buf.extend_from_slice(&(write.entries.len() as u32).to_le_bytes());
    for entry in write.entries {
        buf.extend_from_slice(&entry.index.to_le_bytes());
        let at = buf.len() + 4;
        let len = put_message(buf, entry);
        on_entry(entry.index, at, len);
    }
    finish_record(buf, seq);
}

fn finish_record(buf: &mut [u8], seq: u64) {
    let body_len = (buf.len() - RECORD_HEADER_BYTES) as u32;
    let crc = checksum(seq, &buf[RECORD_HEADER_BYTES..]);
    buf[..4].copy_from_slice(&body_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn end_record(seq: u64) -> Vec<u8> {
    let mut buf = vec![0; RECORD_HEADER_BYTES];
    buf.push(KIND_END);
    finish_record(&mut buf, seq);
    buf
}

/// How reading a segment's records ended.
enum SegmentEnd {
    /// An end record at this offset.
    Closed,
    /// The first record that does not check out starts here.
    Open(u64),
}

impl State {
    /// Applies one write to the in-memory state, entries at `locs`.
    fn apply(
        &mut self,
        truncate_after: Option<u64>,
        entries: impl Iterator<Item = (u64, Loc)>,
        hard_state: Option<HardState>,
        conf_state: Option<ConfState>,
        compact_to: Option<(u64, u64)>,
    ) {
        if let Some(after) = truncate_after {
            self.truncate_after(after);
        }
        for (index, loc) in entries {
            let next = self.first + self.locs.len() as u64;
            if index < next {
                self.truncate_after(index - 1);
            } else if index > next {
                // Older entries were in segments retired by a compaction
                // recorded further on (see `retire`): drop them now.
                self.locs.clear();
                self.first = index;
            }
            if self.locs.is_empty() {
                self.first = index;
            }
            self.locs.push_back(loc);
            if let Some(segment) = self.segments.get_mut(&loc.seq) {
                segment.max_entry = segment.max_entry.max(index);
            }
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        if let Some(cs) = conf_state {
            self.conf_state = cs;
        }
        if let Some((index, term)) = compact_to {
            while !self.locs.is_empty() && self.first <= index {
                self.locs.pop_front();
                self.first += 1;
            }
            if self.locs.is_empty() {
                self.first = index + 1;
            }
            self.compacted = (index, term);
        }
    }

    fn truncate_after(&mut self, after: u64) {
        while !self.locs.is_empty() && self.first + self.locs.len() as u64 - 1 > after {
            self.locs.pop_back();
        }
    }

    fn last_index(&self) -> u64 {
        if self.locs.is_empty() {
            self.compacted.0
        } else {
            self.first + self.locs.len() as u64 - 1
        }
    }

    fn active_seq(&self) -> u64 {
        *self.segments.keys().next_back().expect("there is always an active segment")
    }

    /// Reads the records of segment `seq` into the state. Returns how it
    /// ended; a segment that does not start with its header yields None.
    fn replay_segment(&mut self, seq: u64, file: &File) -> Result<Option<SegmentEnd>, RaftNodeError> {
        let path = self.dir.join(segment_name(seq));
        let file_len = file.metadata().map_err(|e| io_error(path.display(), e))?.len();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        reader.seek(SeekFrom::Start(0)).map_err(|e| io_error(path.display(), e))?;
        let mut header = [0u8; HEADER_BYTES as usize];
        if reader.read_exact(&mut header).is_err()
            || &header[..8] != MAGIC
            || u64::from_le_bytes(header[8..].try_into().expect("8 bytes")) != seq
        {
            return Ok(None);
        }
        let mut offset = HEADER_BYTES;
        let mut body = Vec::new();
        loop {
            let mut record_header = [0u8; RECORD_HEADER_BYTES];
            if reader.read_exact(&mut record_header).is_err() {
                return Ok(Some(SegmentEnd::Open(offset)));
            }
            let len = u32::from_le_bytes(record_header[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(record_header[4..].try_into().expect("4 bytes"));
            let body_offset = offset + RECORD_HEADER_BYTES as u64;
            if len == 0 || len > MAX_RECORD_BYTES || body_offset + len as u64 > file_len {
                return Ok(Some(SegmentEnd::Open(offset)));
            }
            body.resize(len as usize, 0);
            if reader.read_exact(&mut body).is_err() || checksum(seq, &body) != crc {
                return Ok(Some(SegmentEnd::Open(offset)));
            }
            let record = decode_record(&body, body_offset)
                .map_err(|e| RaftNodeError::Corrupt(format!("{} at {offset}: {e}", path.display())))?;
            offset = body_offset + len as u64;
            if record.kind == KIND_END {
                return Ok(Some(SegmentEnd::Closed));
            }
            let entries = record
                .entries
                .iter()
                .map(|&(index, at, len)| (index, Loc { seq, offset: at, len }))
                .collect::<Vec<_>>();
            self.apply(
                record.truncate_after,
                entries.into_iter(),
                record.hard_state,
                record.conf_state,
                record.compact_to,
            );
        }
    }

    fn write_at(&self, seq: u64, offset: u64, bytes: &[u8]) -> Result<(), RaftNodeError> {
        let segment = &self.segments[&seq];
        segment.file.write_all_at(bytes, offset).map_err(|e| io_error(self.dir.join(segment_name(seq)).display(), e))
    }

    fn sync_active(&mut self) -> Result<(), RaftNodeError> {
        if self.dirty {
            let seq = self.active_seq();
            self.segments[&seq]
                .file
                .sync_data()
                .map_err(|e| io_error(self.dir.join(segment_name(seq)).display(), e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Closes the last segment with an end record at `close_at` (when it is
    /// not closed already) and starts the next one with a checkpoint of the
    /// current state; both synced.
    fn start_segment(&mut self, close_at: Option<u64>) -> Result<(), RaftNodeError> {
        let seq = self.segments.keys().next_back().map_or(1, |&last| last + 1);
        if let Some(at) = close_at {
            let last = seq - 1;
            self.write_at(last, at, &end_record(last))?;
            self.dirty = true;
            self.sync_active()?;
        }
        let path = self.dir.join(segment_name(seq));
        let file = match self.spares.pop() {
            Some(spare) => {
                std::fs::rename(&spare, &path).map_err(|e| io_error(spare.display(), e))?;
                OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_error(path.display(), e))?
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_error(path.display(), e))?;
                file.set_len(self.segment_bytes).map_err(|e| io_error(path.display(), e))?;
                file
            }
        };
        let mut start = Vec::with_capacity(256);
        start.extend_from_slice(MAGIC);
        start.extend_from_slice(&seq.to_le_bytes());
        let mut checkpoint = Vec::new();
        let (hard_state, conf_state) = (self.hard_state.clone(), self.conf_state.clone());
        encode_record(
            &mut checkpoint,
            seq,
            &LogWrite {
                hard_state: Some(&hard_state),
                conf_state: Some(&conf_state),
                compact_to: Some(self.compacted),
                ..LogWrite::default()
            },
            |_, _, _| {},
        );
        start.extend_from_slice(&checkpoint);
        file.write_all_at(&start, 0).map_err(|e| io_error(path.display(), e))?;
        file.sync_data().map_err(|e| io_error(path.display(), e))?;
        sync_dir(&self.dir)?;
        self.segments.insert(seq, Segment { file, max_entry: 0 });
        self.offset = start.len() as u64;
        self.checkpoint_end = self.offset;
        self.dirty = false;
        Ok(())
    }

    /// Retires the oldest segments whose entries are all compacted. The
    /// compaction must be durable first: a retired segment's entries are
    /// gone, and the log must not come back with them missing but not
    /// marked compacted.
    fn retire(&mut self) -> Result<(), RaftNodeError> {
        let active = self.active_seq();
        let retirable = |state: &State| {
            state
                .segments
                .iter()
                .next()
                .filter(|(&seq, segment)| seq != active && segment.max_entry <= state.compacted.0)
                .map(|(&seq, _)| seq)
        };
        if retirable(self).is_none() {
            return Ok(());
        }
        self.sync_active()?;
        while let Some(seq) = retirable(self) {
            self.segments.remove(&seq);
            let path = self.dir.join(segment_name(seq));
            if self.spares.len() < SPARE_SEGMENTS {
                let spare = self.dir.join(format!("{seq:016x}.spare"));
                std::fs::rename(&path, &spare).map_err(|e| io_error(path.display(), e))?;
                self.spares.push(spare);
            } else {
                std::fs::remove_file(&path).map_err(|e| io_error(path.display(), e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

impl SegmentLogEngine {
    pub fn open(dir: &Path) -> Result<Self, RaftNodeError> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// Opens with segments of `segment_bytes` (small ones let tests cross
    /// many segment boundaries).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Self, RaftNodeError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir.display(), e))?;
        let mut seqs = Vec::new();
        let mut spares = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io_error(dir.display(), e))? {
            let item = item.map_err(|e| io_error(dir.display(), e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(seq) = parse_segment_name(&name) {
                seqs.push(seq);
            } else if name.ends_with(".spare") {
                spares.push(item.path());
            }
        }
        seqs.sort_unstable();
        spares.sort();
        let mut state = State {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: BTreeMap::new(),
            offset: 0,
            checkpoint_end: 0,
            open_end: None,
            dirty: false,
            spares,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            compacted: (0, 0),
            first: 1,
            locs: VecDeque::new(),
            buf: Vec::new(),
        };
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let file =
                OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_error(path.display(), e))?;
            let last = i + 1 == seqs.len();
            if let Some(&previous) = state.segments.keys().next_back() {
                if previous + 1 != seq {
                    return Err(RaftNodeError::Corrupt(format!(
                        "{}: segment {} is missing",
                        dir.display(),
                        previous + 1
                    )));
                }
            }
            state.segments.insert(seq, Segment { file, max_entry: 0 });
            let file = &state.segments[&seq].file.try_clone().map_err(|e| io_error(path.display(), e))?;
            match state.replay_segment(seq, file)? {
                Some(SegmentEnd::Closed) if !last => {}
                Some(SegmentEnd::Open(end)) if last => state.open_end = Some(end),
                // Closed, and the crash came before the next one was named.
                Some(SegmentEnd::Closed) => {}
                // A crash while it was being started (its predecessor is
                // closed, or it is the log's first): never written to.
                None if last && (i > 0 || seq == 1) => {
                    state.segments.remove(&seq);
                    std::fs::remove_file(&path).map_err(|e| io_error(path.display(), e))?;
                }
                None => {
                    return Err(RaftNodeError::Corrupt(format!("{}: no segment header", path.display())));
                }
                Some(SegmentEnd::Open(end)) => {
                    return Err(RaftNodeError::Corrupt(format!(
                        "{}: bad record at {end} before the segment's end",
                        path.display()
                    )));
                }
            }
        }
        if state.locs.front().is_some() && state.first != state.compacted.0 + 1 {
            return Err(RaftNodeError::Corrupt(format!(
                "{}: the log starts at {} but is compacted up to {}",
                dir.display(),
                state.first,
                state.compacted.0
            )));
        }
        // Never append after where the last open ended: what lies beyond may
        // be a torn record with a whole stale one after it. Close it there
        // and go on in a new segment.
        let close = state.open_end.take();
        state.start_segment(close)?;
        state.retire()?;
        Ok(SegmentLogEngine { state: Mutex::new(state) })
    }
}

impl LogEngine for SegmentLogEngine {
    fn load(&self) -> Result<PersistedLog, RaftNodeError> {
        let state = self.state.lock();
        Ok(PersistedLog {
            hard_state: state.hard_state.clone(),
            conf_state: state.conf_state.clone(),
            compacted: state.compacted,
            last_index: state.last_index(),
        })
    }

    fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>, RaftNodeError> {
        let state = self.state.lock();
        if low < state.first || high > state.first + state.locs.len() as u64 {
            return Err(RaftNodeError::Corrupt(format!("raft log misses entries in [{low}, {high})")));
        }
        let mut out = Vec::with_capacity(high.saturating_sub(low) as usize);
        let mut bytes = Vec::new();
        for index in low..high {
            let loc = state.locs[(index - state.first) as usize];
            bytes.resize(loc.len as usize, 0);
            let segment = &state.segments[&loc.seq];
            segment
                .file
                .read_exact_at(&mut bytes, loc.offset)
                .map_err(|e| io_error(state.dir.join(segment_name(loc.seq)).display(), e))?;
            let entry =
                Entry::parse_from_bytes(&bytes).map_err(|e| RaftNodeError::Corrupt(format!("entry {index}: {e}")))?;
            if entry.index != index {
                return Err(RaftNodeError::Corrupt(format!("entry {index} reads as entry {}", entry.index)));
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn write(&self, write: LogWrite<'_>) -> Result<(), RaftNodeError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut buf = std::mem::take(&mut state.buf);
        let mut seq = state.active_seq();
        let mut positions = Vec::with_capacity(write.entries.len());
        encode_record(&mut buf, seq, &write, |index, at, len| positions.push((index, at, len)));
        // Room is kept for the end record that closes the segment.
        let room = state.segment_bytes.saturating_sub(state.offset + RECORD_HEADER_BYTES as u64 + 1);
        if buf.len() as u64 > room && state.offset > state.checkpoint_end {
            state.start_segment(Some(state.offset))?;
            seq = state.active_seq();
            positions.clear();
            encode_record(&mut buf, seq, &write, |index, at, len| positions.push((index, at, len)));
        }
        let offset = state.offset;
        state.write_at(seq, offset, &buf)?;
        state.offset += buf.len() as u64;
        state.dirty = true;
        state.buf = buf;
        if write.sync {
            state.sync_active()?;
        }
        state.apply(
            write.truncate_after,
            positions.into_iter().map(|(index, at, len)| (index, Loc { seq, offset: offset + at as u64, len })),
            write.hard_state.cloned(),
            write.conf_state.cloned(),
            write.compact_to,
        );
        if write.compact_to.is_some() {
            state.retire()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemLogEngine;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry { index, term, ..Default::default() };
        entry.data = vec![index as u8; (index % 7 * 40) as usize].into();
        entry
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        let mut hs = HardState::default();
        hs.set_term(term);
        hs.set_vote(vote);
        hs.set_commit(commit);
        hs
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn all_entries(engine: &dyn LogEngine) -> (PersistedLog, Vec<(u64, u64)>) {
        let log = engine.load().unwrap();
        let entries = engine
            .entries(log.compacted.0 + 1, log.last_index + 1)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        (log, entries)
    }

    #[test]
    fn a_fresh_log_is_empty_and_comes_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SegmentLogEngine::open(dir.path()).unwrap();
            let (log, entries) = all_entries(&engine);
            assert_eq!((log.last_index, log.compacted), (0, (0, 0)));
            assert!(entries.is_empty());
            let hs = hard_state(2, 1, 0);
            let cs = ConfState { voters: vec![1, 2, 3], ..Default::default() };
            let batch = [entry(1, 2), entry(2, 2)];
            engine
                .write(LogWrite {
                    entries: &batch,
                    hard_state: Some(&hs),
                    conf_state: Some(&cs),
                    sync: true,
                    ..LogWrite::default()
                })
                .unwrap();
            engine.write(LogWrite { hard_state: Some(&hard_state(2, 1, 2)), ..LogWrite::default() }).unwrap();
        }
        let engine = SegmentLogEngine::open(dir.path()).unwrap();
        let (log, entries) = all_entries(&engine);
        assert_eq!(entries, vec![(1, 2), (2, 2)]);
        assert_eq!(log.hard_state, hard_state(2, 1, 2));
        assert_eq!(log.conf_state.voters, vec![1, 2, 3]);
        let read = engine.entries(2, 3).unwrap();
        assert_eq!(read[0].data, entry(2, 2).data);
    }

    /// Random writes against the in-memory engine as the model, with small
    /// segments, compactions that retire and recycle segments, truncations,
    /// and reopens at random points.
    #[test]
    fn random_writes_and_reopens_match_the_model() {
        use rand::{Rng, SeedableRng};
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap();
            let model = MemLogEngine::default();
            let mut engine = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).unwrap();
            let mut term = 1;
            for step in 0..400 {
                let log = model.load().unwrap();
                let roll: u32 = rng.gen_range(0..100);
                let write_entries;
                let mut write = LogWrite { old_last_index: log.last_index, ..LogWrite::default() };
                let hs;
                if roll < 60 {
                    let from = if roll < 8 && log.last_index > log.compacted.0 + 1 {
                        term += 1;
                        let from = rng.gen_range(log.compacted.0 + 1..=log.last_index);
                        write.truncate_after = Some(from - 1);
                        from
                    } else {
                        log.last_index + 1
                    };
                    let count = rng.gen_range(1..6);
                    write_entries = (from..from + count).map(|i| entry(i, term)).collect::<Vec<_>>();
                    write.entries = &write_entries;
                    write.sync = true;
                } else if roll < 80 {
                    hs = hard_state(term, seed, log.last_index);
                    write.hard_state = Some(&hs);
                } else if roll < 90 && log.last_index > log.compacted.0 {
                    let to = rng.gen_range(log.compacted.0 + 1..=log.last_index);
                    let term_at = model.entries(to, to + 1).unwrap()[0].term;
                    write.compact_to = Some((to, term_at));
                } else {
                    drop(engine);
                    engine = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).unwrap();
                    let (got, got_entries) = all_entries(&engine);
                    let (want, want_entries) = all_entries(&model);
                    assert_eq!(got_entries, want_entries, "seed {seed} step {step}");
                    assert_eq!((got.hard_state, got.compacted), (want.hard_state, want.compacted));
                    continue;
                }
                model.write(LogWrite { ..write_clone(&write) }).unwrap();
                engine.write(write).unwrap();
                let (got, got_entries) = all_entries(&engine);
                let (want, want_entries) = all_entries(&model);
                assert_eq!(got_entries, want_entries, "seed {seed} step {step}");
                assert_eq!((got.last_index, got.compacted), (want.last_index, want.compacted));
            }
            // Compactions retired segments: the directory holds the live
            // ones and at most two spares.
            let spares = segments(dir.path()).iter().filter(|n| n.ends_with(".spare")).count();
            assert!(spares <= SPARE_SEGMENTS, "seed {seed}: {:?}", segments(dir.path()));
        }
    }

    fn write_clone<'a>(write: &LogWrite<'a>) -> LogWrite<'a> {
        LogWrite {
            truncate_after: write.truncate_after,
            old_last_index: write.old_last_index,
            entries: write.entries,
            hard_state: write.hard_state,
            conf_state: write.conf_state,
            compact_to: write.compact_to,
            sync: write.sync,
        }
    }

    #[test]
    fn compacted_segments_are_retired_and_their_files_reused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).unwrap();
        for i in 1..=200 {
            engine.write(LogWrite { entries: &[entry(i, 2)], sync: true, ..LogWrite::default() }).unwrap();
        }
        let before = segments(dir.path()).len();
        assert!(before > 5, "{before} segments");
        engine.write(LogWrite { compact_to: Some((190, 2)), ..LogWrite::default() }).unwrap();
        let after = segments(dir.path());
        assert!(after.len() <= 2 + SPARE_SEGMENTS, "{after:?}");
        assert_eq!(after.iter().filter(|n| n.ends_with(".spare")).count(), SPARE_SEGMENTS);
        // New segments take the spares' files.
        for i in 201..=260 {
            engine.write(LogWrite { entries: &[entry(i, 2)], sync: true, ..LogWrite::default() }).unwrap();
        }
        drop(engine);
        let engine = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).unwrap();
        let (log, entries) = all_entries(&engine);
        assert_eq!(log.compacted, (190, 2));
        assert_eq!(entries, (191..=260).map(|i| (i, 2)).collect::<Vec<_>>());
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let name = segments(dir).into_iter().rfind(|n| n.ends_with(".log")).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_a_stale_one_after_it_never_returns() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SegmentLogEngine::open(dir.path()).unwrap();
            for i in 1..=3 {
                engine.write(LogWrite { entries: &[entry(i, 2)], sync: true, ..LogWrite::default() }).unwrap();
            }
        }
        // The record of entry 2 is torn (a byte of it flipped); entry 3's
        // record after it is whole.
        let path = last_segment(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let data2 = entry(2, 2).data;
        let at = bytes.windows(data2.len().max(1)).position(|w| w == &data2[..]).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[bytes[at] ^ 0xff], at as u64).unwrap();
        drop(file);
        {
            let engine = SegmentLogEngine::open(dir.path()).unwrap();
            let (log, entries) = all_entries(&engine);
            assert_eq!(entries, vec![(1, 2)]);
            assert_eq!(log.last_index, 1);
            // A new entry 2 of another term: the stale entry 3 must not follow it.
            engine
                .write(LogWrite {
                    entries: &[Entry { index: 2, term: 5, ..Default::default() }],
                    sync: true,
                    ..Default::default()
                })
                .unwrap();
        }
        let engine = SegmentLogEngine::open(dir.path()).unwrap();
        let (_, entries) = all_entries(&engine);
        assert_eq!(entries, vec![(1, 2), (2, 5)]);
    }

    #[test]
    fn a_bad_record_inside_an_older_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).unwrap();
            for i in 1..=100 {
                engine.write(LogWrite { entries: &[entry(i, 2)], sync: true, ..LogWrite::default() }).unwrap();
            }
        }
        let first = dir.path().join(segments(dir.path()).into_iter().next().unwrap());
        let file = OpenOptions::new().write(true).open(&first).unwrap();
        file.write_all_at(&[0xff; 4], 600).unwrap();
        drop(file);
        let err = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).err().expect("corrupt");
        assert!(matches!(err, RaftNodeError::Corrupt(_)), "{err}");
    }

    #[test]
    fn a_missing_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).unwrap();
            for i in 1..=100 {
                engine.write(LogWrite { entries: &[entry(i, 2)], sync: true, ..LogWrite::default() }).unwrap();
            }
        }
        let second = dir.path().join(&segments(dir.path())[1]);
        std::fs::remove_file(second).unwrap();
        let err = SegmentLogEngine::open_with_segment_bytes(dir.path(), 4096).err().expect("corrupt");
        assert!(matches!(err, RaftNodeError::Corrupt(_)), "{err}");
    }

    #[test]
    fn an_unsynced_write_survives_a_process_crash() {
        // A process crash keeps what reached the page cache: the unsynced
        // commit index comes back (the member replays up to it).
        let dir = tempfile::tempdir().unwrap();
        let engine = SegmentLogEngine::open(dir.path()).unwrap();
        engine.write(LogWrite { entries: &[entry(1, 2)], sync: true, ..LogWrite::default() }).unwrap();
        engine.write(LogWrite { hard_state: Some(&hard_state(2, 0, 1)), ..LogWrite::default() }).unwrap();
        std::mem::forget(engine);
        let engine = SegmentLogEngine::open(dir.path()).unwrap();
        assert_eq!(engine.load().unwrap().hard_state.commit, 1);
    }
}
