//! The dialling side: a rustls `ClientConfig` from etcd's client options,
//! and the connector tonic's `Endpoint::connect_with_connector` dials with.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::Uri;

use crate::coalesce::Coalesced;
use crate::files;
use crate::reload::Reloading;
use crate::stream::PlainOrTls;
use crate::{ProtocolOptions, TlsError};

/// How a client dials TLS endpoints (etcdctl's `--cacert`, `--cert`,
/// `--key`, `--insecure-skip-tls-verify`; a member dialling its peers with
/// `--peer-trusted-ca-file` and `--peer-cert-file`/`--peer-client-cert-file`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// Trust anchors for the server's certificate; `None`: the system's.
    pub trusted_ca_file: Option<PathBuf>,
    /// A certificate to present when the server asks for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (still checking the handshake's
    /// signatures): etcd's choice with auto-TLS, whose certificates nobody
    /// can verify.
    pub insecure_skip_verify: bool,
    pub protocol: ProtocolOptions,
}

impl ClientTlsOptions {
    fn files(&self) -> Vec<PathBuf> {
        [self.trusted_ca_file.as_ref(), self.cert_file.as_ref(), self.key_file.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn build(&self) -> Result<ClientConfig, TlsError> {
        let provider = self.protocol.provider()?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.protocol.versions())
            .map_err(|source| TlsError::Rustls { context: "TLS versions and cipher suites".into(), source })?;
        let builder = if self.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(SkipVerify(provider.clone())))
        } else {
            let roots = match &self.trusted_ca_file {
                Some(path) => files::roots(path)?,
                None => files::system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                builder.with_client_cert_resolver(Arc::new(Fixed(files::certified_key(cert, key, &provider)?)))
            }
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsError::bad_file(path, "a client certificate needs both a cert file and a key file"));
            }
            (None, None) => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// A client TLS configuration that follows its files. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads and checks every file now. Blocking (small reads).
    pub fn new(options: ClientTlsOptions) -> Result<ClientTls, TlsError> {
        let files = options.files();
        let reloading = Reloading::new(files, move || options.build())?;
        Ok(ClientTls { config: Arc::new(reloading) })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Go's `InsecureSkipVerify`: any certificate, but the handshake's
/// signatures are still checked against it.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tonic's connector: TCP with Nagle off (small gRPC messages must leave at
/// once), then TLS for `https://` URIs, with the URI's host as the name
/// the server's certificate must be valid for (SNI for DNS names).
/// `http://` URIs stay plain, so one connector serves mixed endpoint lists.
#[derive(Clone, Debug, Default)]
pub struct Connector {
    tls: Option<ClientTls>,
}

impl Connector {
    pub fn new(tls: Option<ClientTls>) -> Connector {
        Connector { tls }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move { Ok(TokioIo::new(dial(&uri, tls).await?)) })
    }
}

async fn dial(uri: &Uri, tls: Option<ClientTls>) -> Result<ClientConn, BoxError> {
    let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let secure = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    if !secure {
        return Ok(ClientConn::new(PlainOrTls::Plain(tcp)));
    }
    let tls = tls.ok_or_else(|| format!("{uri}: an https:// endpoint needs TLS options"))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{uri}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls.config()).connect(name, tcp).await?;
    Ok(ClientConn::new(PlainOrTls::Tls(Box::new(stream))))
}

/// A connection [`Connector`] made. Its writes are gathered per turn of the
/// runtime, as an accepted connection's are (see the `coalesce` module):
/// the requests of the tasks woken by one batch of responses leave in one
/// write, as grpc-go's clients send them, instead of one write each.
#[derive(Debug)]
pub struct ClientConn {
    io: Coalesced<Io>,
}

type Io = PlainOrTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl ClientConn {
    fn new(io: Io) -> ClientConn {
        ClientConn { io: Coalesced::new(io) }
    }
}

crate::coalesce::delegate_to_io!(ClientConn);
