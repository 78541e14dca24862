//! The crate's one error type. Client errors (the request is wrong for the
//! current state; etcd answers them with a gRPC status) are kept apart from
//! fatal ones (storage failed or is corrupt; the node must stop applying).

use crate::backend::BackendError;
use crate::index::IndexError;

#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is older than the compaction point.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store's current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A Put names a lease the lease lookup does not know.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The request kind is not something this store applies.
    #[error("mvcc: unsupported request: {0}")]
    Unsupported(String),
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] BackendError),
    /// Persisted data or the in-memory index contradict the store's invariants.
    #[error("mvcc: corrupt store: {0}")]
    Corrupt(String),
}

impl MvccError {
    /// True for errors after which the store must not be used further (the
    /// in-memory view may no longer match storage); false for client errors.
    pub fn is_fatal(&self) -> bool {
        matches!(self, MvccError::Storage(_) | MvccError::Corrupt(_))
    }
}

impl From<IndexError> for MvccError {
    fn from(e: IndexError) -> Self {
        MvccError::Corrupt(e.to_string())
    }
}

impl From<prost::DecodeError> for MvccError {
    fn from(e: prost::DecodeError) -> Self {
        MvccError::Corrupt(format!("undecodable key value: {e}"))
    }
}
