//! Reading PEM files, with errors that name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::TlsError;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// Every certificate in a PEM file; at least one, each a parsable X.509
/// certificate.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::bad_file(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::bad_file(path, "no PEM certificate found"));
    }
    for cert in &certs {
        rustls::server::ParsedCertificate::try_from(cert)
            .map_err(|e| TlsError::bad_file(path, format!("not a valid X.509 certificate: {e}")))?;
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub(crate) fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert_file)?;
    let bytes = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| TlsError::bad_file(key_file, format!("no PEM private key found: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::bad_file(key_file, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        TlsError::bad_file(key_file, format!("the key does not match the certificate in {}: {e}", cert_file.display()))
    })?;
    Ok(Arc::new(certified))
}

/// The certificates of a CA file as trust anchors.
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| TlsError::bad_file(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// Where Debian, Red Hat and Alpine keep the system's CA bundle.
const SYSTEM_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The system's trust anchors, as Go uses when no CA file is given
/// (`SSL_CERT_FILE` first, as Go reads it). Empty when there are none.
pub(crate) fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            let certs = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok);
            let (added, _) = store.add_parsable_certificates(certs);
            if added > 0 {
                break;
            }
        }
    }
    store
}

/// The revocation lists of a CRL file: PEM, or one DER list (Go's
/// `x509.ParseCRL` takes both).
pub(crate) fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let lists = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::bad_file(path, format!("not a PEM CRL file: {e}")))?;
    if !lists.is_empty() {
        return Ok(lists);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(TlsError::bad_file(path, "no certificate revocation list found"))
}
