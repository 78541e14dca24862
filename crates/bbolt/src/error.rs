use std::io;

/// Everything that can go wrong reading or writing a bbolt file.
///
/// `NotBbolt`, `Version` and `Corrupt` describe the file; `Order`, `Invalid`
/// describe the caller's input to [`crate::Writer`]; `Io` is the medium.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bbolt i/o: {0}")]
    Io(#[from] io::Error),
    /// Neither meta page carries bbolt's magic number.
    #[error("not a bbolt file: {0}")]
    NotBbolt(String),
    /// The metas are bbolt's but of a format version other than 2.
    #[error("unsupported bbolt version {0} (only version 2 is known)")]
    Version(u32),
    /// The file is bbolt's but damaged: a bad checksum, a truncated page, an
    /// offset out of range, a cycle, keys out of order.
    #[error("corrupt bbolt file: {0}")]
    Corrupt(String),
    /// A bucket holds a nested bucket, which etcd never writes.
    #[error("bucket {bucket:?} holds nested bucket {key:?}, which is not supported")]
    NestedBucket { bucket: String, key: String },
    /// Bucket names or keys given to the writer out of strictly increasing order.
    #[error("{what} out of order: {key:?} does not sort after {previous:?}")]
    Order { what: &'static str, previous: String, key: String },
    /// Input bbolt itself refuses: an empty key or bucket name, a key or value
    /// over bbolt's limits, a put before any bucket was begun.
    #[error("invalid input: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bytes shown in messages: text when printable, else hex.
pub(crate) fn show(bytes: &[u8]) -> String {
    const LIMIT: usize = 64;
    let cut = &bytes[..bytes.len().min(LIMIT)];
    let mut s = if cut.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(cut).into_owned()
    } else {
        cut.iter().map(|b| format!("{b:02x}")).collect()
    };
    if bytes.len() > LIMIT {
        s.push_str("...");
    }
    s
}
