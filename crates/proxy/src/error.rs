//! The proxy's one error type: what stops it from starting or serving.
//! Request failures are `tonic::Status`es passed through from upstream.

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("tls: {0}")]
    Tls(#[from] keel_tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{0}")]
    ServiceConfig(String),
    /// etcd's proxy exits on a failed `--discovery-srv` lookup too.
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
