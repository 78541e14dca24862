//! The accepting side: etcd's server TLS options as a rustls `ServerConfig`,
//! rebuilt when its files change.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::files;
use crate::reload::Reloading;
use crate::{ProtocolOptions, TlsError};

/// etcd's TLS options of one listener kind (`--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`, or their
/// `--peer-*` twins with `--peer-cert-allowed-cn` and
/// `--peer-cert-allowed-hostname`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTlsOptions {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by the trusted CA. Without it the
    /// server asks for none (Go's `NoClientCert`), as etcd.
    pub client_cert_auth: bool,
    /// Client certificates whose serial is listed here are refused.
    pub crl_file: Option<PathBuf>,
    /// A client certificate's subject CN must be one of these (when any).
    pub allowed_cns: Vec<String>,
    /// A client certificate must be valid for one of these names (when any).
    pub allowed_hostnames: Vec<String>,
    /// Do not check a client certificate against the address it connects
    /// from. By default (etcd's `TLSInfo.SkipClientSANVerify` false) a
    /// client that presents a certificate with IP or DNS SANs must connect
    /// from one of those IPs or from an address one of those names resolves
    /// to, or its connection is closed after the handshake (see
    /// [`crate::Incoming`]). etcd checks so on its peer listeners only
    /// (`--peer-skip-client-san-verification` turns it off); its client
    /// listeners never check, so they set this.
    pub skip_client_san_verification: bool,
    pub protocol: ProtocolOptions,
}

impl ServerTlsOptions {
    fn files(&self) -> Vec<PathBuf> {
        [Some(&self.cert_file), Some(&self.key_file), self.trusted_ca_file.as_ref(), self.crl_file.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn build(&self) -> Result<ServerConfig, TlsError> {
        let provider = self.protocol.provider()?;
        let key = files::certified_key(&self.cert_file, &self.key_file, &provider)?;
        let verifier = self.client_verifier(&provider)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.protocol.versions())
            .map_err(|source| TlsError::Rustls { context: "TLS versions and cipher suites".into(), source })?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Fixed(key)));
        // gRPC is HTTP/2 only; the client listener also serves HTTP/1.1
        // (health, metrics, the JSON gateway, v2), as Go's server does to
        // clients that offer only `http/1.1` (curl --http1.1, urllib3).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn client_verifier(&self, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let restricted = !self.allowed_cns.is_empty() || !self.allowed_hostnames.is_empty();
        if !self.allowed_cns.is_empty() && !self.allowed_hostnames.is_empty() {
            return Err(TlsError::AllowedCnAndHostname {
                cns: self.allowed_cns.clone(),
                hostnames: self.allowed_hostnames.clone(),
            });
        }
        // An allowed CN or hostname can only be checked on a certificate the
        // client had to present, so it implies client certificate auth.
        if !self.client_cert_auth && !restricted {
            return Ok(WebPkiClientVerifier::no_client_auth());
        }
        let roots = match &self.trusted_ca_file {
            Some(path) => files::roots(path)?,
            None => files::system_roots(),
        };
        if roots.is_empty() {
            return Err(TlsError::NoTrustedCa);
        }
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if let Some(path) = &self.crl_file {
            // As etcd's checkCRL: the leaf's serial against the lists given,
            // whoever issued them; a list that does not cover the leaf's
            // issuer neither admits nor refuses it.
            builder = builder
                .with_crls(files::crls(path)?)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let verifier = builder.build().map_err(|e| match &self.crl_file {
            Some(path) => TlsError::bad_file(path, format!("unusable certificate revocation list: {e}")),
            None => TlsError::Rustls {
                context: "client certificate verifier".into(),
                source: rustls::Error::General(e.to_string()),
            },
        })?;
        if !restricted {
            return Ok(verifier);
        }
        Ok(Arc::new(AllowedPeers {
            inner: verifier,
            cns: self.allowed_cns.clone(),
            hostnames: self.allowed_hostnames.clone(),
        }))
    }
}

/// A server TLS configuration that follows its files (see the crate docs).
/// Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
    verify_client_san: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks every file now. Blocking (small reads).
    pub fn new(options: ServerTlsOptions) -> Result<ServerTls, TlsError> {
        let files = options.files();
        let verify_client_san = !options.skip_client_san_verification;
        let reloading = Reloading::new(files, move || options.build())?;
        Ok(ServerTls { config: Arc::new(reloading), verify_client_san })
    }

    #[cfg(test)]
    pub(crate) fn new_checking_every(
        options: ServerTlsOptions,
        every: std::time::Duration,
    ) -> Result<ServerTls, TlsError> {
        let files = options.files();
        let verify_client_san = !options.skip_client_san_verification;
        let reloading = Reloading::new(files, move || options.build())?.check_every(every);
        Ok(ServerTls { config: Arc::new(reloading), verify_client_san })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.current()
    }

    /// Whether a client certificate must be valid for the address it
    /// connects from (not [`ServerTlsOptions::skip_client_san_verification`]).
    pub fn verifies_client_san(&self) -> bool {
        self.verify_client_san
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// etcd's `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`: after
/// the usual verification, the leaf's CN must be allowed, or the leaf valid
/// for an allowed hostname.
#[derive(Debug)]
struct AllowedPeers {
    inner: Arc<dyn ClientCertVerifier>,
    cns: Vec<String>,
    hostnames: Vec<String>,
}

impl ClientCertVerifier for AllowedPeers {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let cn_allowed = crate::x509::common_name(end_entity).is_some_and(|cn| self.cns.contains(&cn));
        let hostname_allowed = || {
            let Ok(parsed) = rustls::server::ParsedCertificate::try_from(end_entity) else { return false };
            self.hostnames.iter().any(|host| {
                ServerName::try_from(host.as_str())
                    .is_ok_and(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
            })
        };
        if cn_allowed || hostname_allowed() {
            Ok(verified)
        } else {
            // etcd's words.
            Err(rustls::Error::General("client certificate authentication failed".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
