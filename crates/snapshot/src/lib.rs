//! `keel-snapshot`: etcd's snapshot file for a Keel store.
//!
//! `etcdctl snapshot save` receives etcd's backend as it is — a bbolt
//! database with etcd's buckets and encodings — followed by the sha256 of
//! everything before it; `snapshot status` and `snapshot restore` read that
//! file, and etcd starts on the directory `restore` makes. This crate lays a
//! Keel store out in that format and reads it back:
//!
//! - [`export`]: a frozen store ([`keel_mvcc::StoreCheckpoint`]) written as
//!   etcd's bbolt database, and [`SnapshotFile`] streaming it with its
//!   trailer in chunks, in bounded memory (the Maintenance.Snapshot stream);
//! - [`import`]: an etcd snapshot file, or the `member/snap/db` of an etcd
//!   data dir, loaded into a new Keel store with every key, revision,
//!   version, lease, alarm and auth record; only the raft position and the
//!   membership are left behind, as `etcdctl snapshot restore` leaves them.
//!
//! The mapping between Keel's keyspaces and etcd's buckets is in [`layout`].

mod error;
pub mod export;
pub mod import;
pub mod layout;
mod trailer;

pub use error::SnapshotError;
pub use export::{backend_hash, lay_out, write_db, DbSummary, Sink, SnapshotChunk, SnapshotFile, SnapshotStream};
pub use import::{import_file, ImportOptions, ImportSummary};
pub use trailer::{verify_trailer, Trailer, TRAILER_LEN};

#[cfg(test)]
mod tests;
