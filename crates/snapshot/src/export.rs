//! A frozen Keel store written as etcd's bbolt database, and that file
//! streamed the way etcd's Maintenance.Snapshot streams its backend.
//!
//! The database goes to an unnamed temporary file first: bbolt's meta pages
//! (at the front) name the root, which is known only at the end. Memory
//! stays bounded by the writer's branch levels and one chunk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use keel_bbolt::Writer;
use keel_mvcc::{meta, Crc32c, Keyspace, LeaseRecord, StoreCheckpoint};
use keel_proto::etcdserverpb::{AlarmResponse, Member};
use keel_proto::keelpb::AuthStore;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::layout::{self, auth_to_etcd, lease_to_etcd, member_to_etcd};
use crate::SnapshotError;

/// What a written database holds, as `etcdctl snapshot status` counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbSummary {
    /// The store revision: the newest main revision in the `key` bucket.
    pub revision: i64,
    /// Entries across every bucket.
    pub keys: u64,
    /// Bytes of the database file.
    pub size: u64,
}

/// Where [`lay_out`] puts etcd's buckets: a bbolt writer, a hash.
pub trait Sink {
    /// Starts the next bucket; names come in byte order.
    fn bucket(&mut self, name: &[u8]) -> Result<(), SnapshotError>;
    /// Adds a pair to the current bucket; keys come in byte order.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError>;
}

/// Writes the store frozen in `checkpoint` to `out` as etcd's bbolt
/// database; gives `out` back, positioned at the end.
pub fn write_db<W: Write + Seek>(checkpoint: &StoreCheckpoint, out: W) -> Result<(W, DbSummary), SnapshotError> {
    let mut sink = Counting { inner: Writer::new(out)?, keys: 0, revision: 0, in_key_bucket: false };
    lay_out(checkpoint, &mut sink)?;
    let Counting { inner, keys, revision, .. } = sink;
    let mut out = inner.finish()?;
    let size = out.stream_position().map_err(SnapshotError::io("snapshot"))?;
    Ok((out, DbSummary { revision, keys, size }))
}

/// etcd's Maintenance.Hash of the store frozen in `checkpoint`: a CRC-32C
/// over every bucket name and pair of etcd's layout of it, skipping the
/// raft position (`meta` `consistent_index`), as etcd's `DefaultIgnores`.
pub fn backend_hash(checkpoint: &StoreCheckpoint) -> Result<u32, SnapshotError> {
    struct Hashing {
        crc: Crc32c,
        in_meta: bool,
    }
    impl Sink for Hashing {
        fn bucket(&mut self, name: &[u8]) -> Result<(), SnapshotError> {
            self.crc.update(name);
            self.in_meta = name == layout::META;
            Ok(())
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
            if !(self.in_meta && key == meta::CONSISTENT_INDEX) {
                self.crc.update(key);
                self.crc.update(value);
            }
            Ok(())
        }
    }
    let mut sink = Hashing { crc: Crc32c::new(), in_meta: false };
    lay_out(checkpoint, &mut sink)?;
    Ok(sink.crc.finish())
}

/// Feeds etcd's buckets for the store frozen in `checkpoint` to `sink`.
pub fn lay_out(checkpoint: &StoreCheckpoint, sink: &mut dyn Sink) -> Result<(), SnapshotError> {
    let mut keel_meta = BTreeMap::new();
    checkpoint.scan(Keyspace::Meta, &[], None, &mut |k, v| {
        keel_meta.insert(k.to_vec(), v.to_vec());
        true
    })?;
    let mut members = Vec::new();
    let mut removed = Vec::new();
    let mut bad_member = None;
    checkpoint.scan(Keyspace::Members, &[], None, &mut |k, v| {
        let Ok(id) = <[u8; 8]>::try_from(&k[..k.len().min(8)]).map(u64::from_be_bytes) else {
            bad_member = Some(format!("member key of {} bytes", k.len()));
            return false;
        };
        if k.len() > 8 {
            removed.push((format!("{id:x}"), b"removed".to_vec()));
        } else {
            match Member::decode(v) {
                Ok(member) => members.push(member_to_etcd(&member)),
                Err(e) => {
                    bad_member = Some(format!("member {id:x}: {e}"));
                    return false;
                }
            }
        }
        true
    })?;
    if let Some(message) = bad_member {
        return Err(SnapshotError::malformed(layout::MEMBERS, message));
    }
    members.sort();
    removed.sort();

    let decode_err = |what: &'static str| {
        move |e: prost::DecodeError| SnapshotError::malformed(layout::META, format!("{what}: {e}"))
    };
    let alarms = match keel_meta.get(meta::ALARMS) {
        Some(record) => AlarmResponse::decode(record.as_slice()).map_err(decode_err("alarm record"))?.alarms,
        None => Vec::new(),
    };
    let auth = match keel_meta.get(meta::AUTH) {
        Some(record) => Some(AuthStore::decode(record.as_slice()).map_err(decode_err("auth record"))?),
        None => None,
    };

    let mut alarm_keys: Vec<Vec<u8>> = alarms.iter().map(|a| a.encode_to_vec()).collect();
    alarm_keys.sort();
    alarm_keys.dedup();
    sink.bucket(layout::ALARM)?;
    for key in &alarm_keys {
        sink.put(key, &[])?;
    }
    let auth = auth_to_etcd(auth.as_ref());
    for (bucket, entries) in
        [(layout::AUTH, &auth.auth), (layout::AUTH_ROLES, &auth.roles), (layout::AUTH_USERS, &auth.users)]
    {
        sink.bucket(bucket)?;
        for (k, v) in entries {
            sink.put(k, v)?;
        }
    }
    sink.bucket(layout::CLUSTER)?;
    sink.bucket(layout::KEY)?;
    copy_space(checkpoint, Keyspace::Revisions, sink, |_, v| Ok(v.to_vec()))?;
    sink.bucket(layout::LEASE)?;
    copy_space(checkpoint, Keyspace::Leases, sink, |k, v| {
        let record =
            LeaseRecord::decode(k, v).ok_or_else(|| SnapshotError::malformed(layout::LEASE, "bad lease record"))?;
        Ok(lease_to_etcd(&record))
    })?;
    sink.bucket(layout::MEMBERS)?;
    for (k, v) in &members {
        sink.put(k.as_bytes(), v)?;
    }
    sink.bucket(layout::MEMBERS_REMOVED)?;
    for (k, v) in &removed {
        sink.put(k.as_bytes(), v)?;
    }
    sink.bucket(layout::META)?;
    // Byte order: consistent_index < finishedCompactRev < scheduledCompactRev.
    for key in [meta::CONSISTENT_INDEX, meta::FINISHED_COMPACT, meta::SCHEDULED_COMPACT] {
        if let Some(value) = keel_meta.get(key) {
            sink.put(key, value)?;
        }
    }
    Ok(())
}

/// Copies one keyspace into the open bucket, converting each value.
fn copy_space(
    checkpoint: &StoreCheckpoint,
    space: Keyspace,
    sink: &mut dyn Sink,
    mut convert: impl FnMut(&[u8], &[u8]) -> Result<Vec<u8>, SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut failure = None;
    checkpoint.scan(space, &[], None, &mut |k, v| match convert(k, v).and_then(|value| sink.put(k, &value)) {
        Ok(()) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// The bbolt writer, counting pairs and noting the newest revision as
/// `etcdctl snapshot status` does.
struct Counting<W: Write + Seek> {
    inner: Writer<W>,
    keys: u64,
    revision: i64,
    in_key_bucket: bool,
}

impl<W: Write + Seek> Sink for Counting<W> {
    fn bucket(&mut self, name: &[u8]) -> Result<(), SnapshotError> {
        self.in_key_bucket = name == layout::KEY;
        Ok(self.inner.begin_bucket(name)?)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.inner.put(key, value)?;
        self.keys += 1;
        if self.in_key_bucket {
            if let Some(main) = key.get(..8) {
                self.revision = i64::from_be_bytes(main.try_into().expect("8 bytes"));
            }
        }
        Ok(())
    }
}

/// A database written from a checkpoint to an unnamed file, ready to be
/// streamed; the file goes when this (or its stream) is dropped.
pub struct SnapshotFile {
    file: File,
    summary: DbSummary,
}

impl SnapshotFile {
    /// Writes `checkpoint` to a new unnamed file in `dir`. Blocking.
    pub fn create(checkpoint: &StoreCheckpoint, dir: &Path) -> Result<SnapshotFile, SnapshotError> {
        let file = tempfile::tempfile_in(dir).map_err(SnapshotError::io(dir))?;
        let (out, summary) = write_db(checkpoint, BufWriter::with_capacity(1 << 16, file))?;
        let file = out.into_inner().map_err(|e| SnapshotError::io(dir)(e.into_error()))?;
        Ok(SnapshotFile { file, summary })
    }

    pub fn summary(&self) -> DbSummary {
        self.summary
    }

    /// The database in chunks of `chunk_bytes`, then the sha256 trailer.
    pub fn stream(self, chunk_bytes: usize) -> SnapshotStream {
        SnapshotStream {
            file: self.file,
            size: self.summary.size,
            sent: 0,
            chunk_bytes: chunk_bytes.max(1),
            hasher: Some(Sha256::new()),
            started: false,
        }
    }
}

/// One message of a snapshot stream: `remaining_bytes` is what is left of
/// the database after this blob; the last message (0 remaining) holds the
/// sha256 of every byte before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub blob: Vec<u8>,
    pub remaining_bytes: u64,
}

/// See [`SnapshotFile::stream`]. Blocking reads: drive it off the runtime.
pub struct SnapshotStream {
    file: File,
    size: u64,
    sent: u64,
    chunk_bytes: usize,
    hasher: Option<Sha256>,
    started: bool,
}

impl SnapshotStream {
    /// Bytes of the database (without the trailer).
    pub fn db_size(&self) -> u64 {
        self.size
    }

    fn read_chunk(&mut self) -> std::io::Result<Vec<u8>> {
        if !self.started {
            self.file.seek(SeekFrom::Start(0))?;
            self.started = true;
        }
        let want = self.chunk_bytes.min(usize::try_from(self.size - self.sent).unwrap_or(usize::MAX));
        let mut blob = vec![0u8; want];
        self.file.read_exact(&mut blob)?;
        Ok(blob)
    }
}

impl Iterator for SnapshotStream {
    type Item = Result<SnapshotChunk, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.sent < self.size {
            return Some(match self.read_chunk() {
                Ok(blob) => {
                    self.sent += blob.len() as u64;
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(&blob);
                    }
                    Ok(SnapshotChunk { blob, remaining_bytes: self.size - self.sent })
                }
                Err(e) => {
                    self.hasher = None;
                    self.sent = self.size;
                    Err(SnapshotError::io(PathBuf::from("snapshot"))(e))
                }
            });
        }
        let digest = self.hasher.take()?.finalize();
        Some(Ok(SnapshotChunk { blob: digest.to_vec(), remaining_bytes: 0 }))
    }
}
