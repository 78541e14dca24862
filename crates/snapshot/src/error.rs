use std::path::PathBuf;

/// Everything that can go wrong exporting or importing a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a readable bbolt database (or the writer refused).
    #[error(transparent)]
    Bbolt(#[from] keel_bbolt::Error),
    /// The sha256 trailer does not match the bytes before it: the file was
    /// truncated or altered after it was saved. Worded as `etcdctl snapshot
    /// restore` words it, the digests printed as Go prints byte slices.
    #[error("expected sha256 {}, got {}", go_bytes(.expected), go_bytes(.actual))]
    HashMismatch { expected: Vec<u8>, actual: Vec<u8> },
    /// The file carries no sha256 trailer (its size is a whole number of
    /// pages), and the caller asked for the check.
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    /// A restore or import would overwrite existing data.
    #[error("data-dir {0:?} exists")]
    TargetExists(PathBuf),
    /// A bucket entry that cannot be what etcd writes there.
    #[error("snapshot bucket {bucket:?}: {message}")]
    Malformed { bucket: String, message: String },
    #[error(transparent)]
    Store(#[from] keel_mvcc::MvccError),
    #[error(transparent)]
    Backend(#[from] keel_mvcc::BackendError),
}

impl SnapshotError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SnapshotError {
        let path = path.into();
        move |source| SnapshotError::Io { path, source }
    }

    pub(crate) fn malformed(bucket: &[u8], message: impl Into<String>) -> SnapshotError {
        SnapshotError::Malformed { bucket: String::from_utf8_lossy(bucket).into_owned(), message: message.into() }
    }
}

/// A byte slice as Go's `%v` prints it: `[95 137 193]`.
fn go_bytes(bytes: &[u8]) -> String {
    let inner: Vec<String> = bytes.iter().map(u8::to_string).collect();
    format!("[{}]", inner.join(" "))
}
