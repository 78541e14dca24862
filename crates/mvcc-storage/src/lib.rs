//! `keel-mvcc`: the revisioned key/value store behind Keel's KV API, with
//! etcd v3 semantics down to response header revisions, so `etcdctl` output
//! against Keel matches etcd's byte for byte.
//!
//! Layers, bottom up:
//! - [`backend`]: the storage engine trait, an in-memory engine and RocksDB.
//! - [`revision`]: revision keys, encoded exactly as etcd's bolt `key` bucket.
//! - [`index`]: the in-memory key -> revisions index (generations per key).
//! - [`KvStore`]: Range, and `apply` of committed Put/DeleteRange/Txn/Compact
//!   writes, each persisted atomically with the raft `consistent_index`.
//!
//! This crate knows nothing of raft, gRPC, leases or watchers beyond the
//! small [`LeaseLookup`] trait and the [`Event`](keel_proto::mvccpb::Event)s
//! each write returns. Request validation that etcd does in its gRPC layer
//! (empty keys, too many txn ops, duplicate keys in a txn) is the caller's.
//!
//! All methods block on storage I/O; call them off the async runtime.

pub mod backend;
mod error;
mod gosort;
pub mod ids;
pub mod index;
mod metrics;
pub mod revision;
mod store;

pub use backend::{Backend, BackendError, Frozen, Keyspace, MemBackend, RocksBackend, RocksOptions, WriteBatch};
pub use error::MvccError;
pub use metrics::{DefragGuard, MvccMetrics};
pub use store::{
    is_txn_read_only, meta, Crc32c, Identity, KvHash, KvStore, LeaseLookup, LeaseRecord, NoLeases, RevokeOutcome,
    SnapshotPieces, StoreCheckpoint, V2Record, WriteOutcome, WriteRequest, WriteResponse,
};
