use std::path::PathBuf;

/// Why a TLS configuration cannot be built. Texts are etcd's where etcd has
/// one; a file's problem always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file was read but does not hold what it should.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("unexpected TLS version {0:?} (must be one of: TLS1.2, TLS1.3)")]
    UnknownVersion(String),
    #[error("min version ({min}) is greater than max version ({max})")]
    VersionRange { min: String, max: String },
    #[error("cipher suites cannot be configured when only TLS1.3 is enabled")]
    SuitesWithOnlyTls13,
    #[error("unexpected TLS cipher suite {0:?}")]
    UnknownCipherSuite(String),
    /// One of Go's suites that rustls does not implement (CBC, RC4, 3DES,
    /// RSA key exchange): refused rather than silently left out.
    #[error(
        "TLS cipher suite {0:?} is not supported by Keel (rustls offers ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only)"
    )]
    UnsupportedCipherSuite(String),
    #[error("AllowedCN and AllowedHostname are mutually exclusive (cn={cns:?}, hostname={hostnames:?})")]
    AllowedCnAndHostname { cns: Vec<String>, hostnames: Vec<String> },
    /// Client certificates cannot be checked without something to check
    /// them against.
    #[error("client certificate authentication needs a trusted CA file")]
    NoTrustedCa,
    #[error("{context}: {source}")]
    Rustls { context: String, source: rustls::Error },
    #[error("cannot generate a self-signed certificate in {}: {reason}", dir.display())]
    SelfSigned { dir: PathBuf, reason: String },
}

impl TlsError {
    pub(crate) fn bad_file(path: &std::path::Path, reason: impl Into<String>) -> TlsError {
        TlsError::BadFile { path: path.to_owned(), reason: reason.into() }
    }
}
