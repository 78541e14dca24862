//! How the load generator connects, and the certificate of `--tls` runs.
//!
//! `http://` endpoints are dialled as before; `https://` ones with TLS,
//! skipping verification (as `etcdctl --insecure-skip-tls-verify`): the
//! handshake and the encryption, what TLS costs, are the same.
//!
//! Both systems serve one self-signed ECDSA P-256 certificate, made once
//! per run. Not their `--auto-tls` ones: etcd's are P-521, which rustls
//! (ring) cannot verify, so a Rust client cannot even skip-verify them.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use tonic::transport::{Channel, Endpoint};

pub(super) async fn dial(endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
    if endpoint.uri().scheme_str() != Some("https") {
        return endpoint.connect().await;
    }
    endpoint.connect_with_connector(keel_tls::Connector::new(Some(skip_verify()))).await
}

fn skip_verify() -> keel_tls::ClientTls {
    static TLS: OnceLock<keel_tls::ClientTls> = OnceLock::new();
    TLS.get_or_init(|| {
        keel_tls::ClientTls::new(keel_tls::ClientTlsOptions { insecure_skip_verify: true, ..Default::default() })
            .expect("a client TLS configuration without files")
    })
    .clone()
}

/// A certificate and key file, in the directory that holds them while the run lasts.
type Files = (tempfile::TempDir, (PathBuf, PathBuf));

/// The (cert, key) files every server of this run serves, valid for
/// 127.0.0.1 and localhost; members trust it as their peers' CA.
pub(super) fn certificate() -> Result<&'static (PathBuf, PathBuf)> {
    static FILES: OnceLock<Result<Files, String>> = OnceLock::new();
    let made = FILES.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let files = keel_tls::self_signed(dir.path(), &hosts, 1).map_err(|e| e.to_string())?;
        Ok((dir, files))
    });
    made.as_ref().map(|(_, files)| files).map_err(|e| anyhow!("bench certificate: {e}"))
}
