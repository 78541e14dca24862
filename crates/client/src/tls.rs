//! TLS for `https://` endpoints, with etcdctl's options.

use std::path::PathBuf;

use crate::error::ClientError;

/// How to talk to `https://` endpoints (etcdctl's `--cacert`, `--cert`,
/// `--key`, `--insecure-skip-tls-verify`). With TLS options, endpoints
/// given as `host:port` are dialled with TLS, as Go's clientv3 does.
///
/// ```no_run
/// # async fn example() -> Result<(), keel_client::ClientError> {
/// use keel_client::{Client, ClientOptions, TlsOptions};
///
/// let tls = TlsOptions::new().with_ca("/etc/etcd/ca.pem").with_client_cert("/etc/etcd/me.pem", "/etc/etcd/me-key.pem");
/// let options = ClientOptions { tls: Some(tls), ..ClientOptions::default() };
/// let client = Client::connect(["https://127.0.0.1:2379"], options).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust anchors for the server's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for servers with client
    /// certificate authentication (`--client-cert-auth`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate: for servers with `--auto-tls`.
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }

    pub fn with_ca(mut self, ca_file: impl Into<PathBuf>) -> TlsOptions {
        self.ca_file = Some(ca_file.into());
        self
    }

    pub fn with_client_cert(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> TlsOptions {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    pub fn with_insecure_skip_verify(mut self) -> TlsOptions {
        self.insecure_skip_verify = true;
        self
    }

    /// Reads the files (blocking, small). The configuration follows them
    /// afterwards: a rotated client certificate is used by the next
    /// connection.
    pub(crate) fn build(&self) -> Result<keel_tls::ClientTls, ClientError> {
        keel_tls::ClientTls::new(keel_tls::ClientTlsOptions {
            trusted_ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            protocol: keel_tls::ProtocolOptions::default(),
        })
        .map_err(ClientError::Tls)
    }
}
