//! The configuration's TLS settings turned into `keel-tls` configurations,
//! as etcd's `embed` package does: auto-TLS certificates under
//! `<data-dir>/fixtures/{client,peer}` when asked for and no files are
//! given, a server configuration for each side that has `https://` listen
//! URLs, and the client configuration the member dials its peers with.

use anyhow::Context;
use keel_config::{Config, TlsSettings};
use keel_tls::{ClientTls, ClientTlsOptions, ProtocolOptions, ServerTls, ServerTlsOptions, TlsVersion};

pub(crate) struct Tls {
    /// For `https://` client URLs.
    pub(crate) client: Option<ServerTls>,
    /// For `https://` peer URLs.
    pub(crate) peer: Option<ServerTls>,
    /// Dials peers at `https://` URLs.
    pub(crate) peer_client: ClientTls,
}

impl Tls {
    /// Reads every file (and writes auto-TLS ones). Blocking.
    pub(crate) fn build(config: &Config) -> anyhow::Result<Tls> {
        let protocol = ProtocolOptions {
            min_version: TlsVersion::parse(&config.tls_min_version)?,
            max_version: TlsVersion::parse(&config.tls_max_version)?,
            cipher_suites: config.cipher_suites.clone(),
        };
        protocol.check()?;
        let secure = |urls: &[keel_config::goflag::FlagUrl]| urls.iter().any(|url| url.scheme == "https");
        let hosts = |urls: &[keel_config::goflag::FlagUrl]| urls.iter().map(|url| url.host().to_owned()).collect();

        let client_side = Side::resolve(&config.client_tls, config, "client", hosts(&config.listen_client_urls))?;
        let peer_side = Side::resolve(&config.peer_tls, config, "peer", hosts(&config.listen_peer_urls))?;

        let client = match &client_side {
            Some(side) if secure(&config.listen_client_urls) => {
                Some(side.server(&config.client_tls, &protocol, false).context("client TLS")?)
            }
            _ => None,
        };
        let peer = match &peer_side {
            Some(side) if secure(&config.listen_peer_urls) => {
                Some(side.server(&config.peer_tls, &protocol, true).context("peer TLS")?)
            }
            _ => None,
        };
        // As etcd's peer transport: the peer CA, and the peer certificate
        // (or --peer-client-cert-file) to present; auto-TLS certificates
        // cannot be verified, so with them verification is skipped.
        let (cert_file, key_file) = match &peer_side {
            Some(side) if side.auto => (Some(side.cert_file.clone()), Some(side.key_file.clone())),
            _ => (
                config.peer_tls.client_cert_file.clone().or_else(|| config.peer_tls.cert_file.clone()),
                config.peer_tls.client_key_file.clone().or_else(|| config.peer_tls.key_file.clone()),
            ),
        };
        let peer_client = ClientTls::new(ClientTlsOptions {
            trusted_ca_file: config.peer_tls.trusted_ca_file.clone(),
            cert_file,
            key_file,
            insecure_skip_verify: peer_side.as_ref().is_some_and(|side| side.auto),
            protocol,
        })
        .context("peer client TLS")?;
        Ok(Tls { client, peer, peer_client })
    }
}

/// One side's certificate and key: given, or generated for auto-TLS.
struct Side {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    auto: bool,
}

impl Side {
    fn resolve(
        settings: &TlsSettings,
        config: &Config,
        side: &str,
        hosts: Vec<String>,
    ) -> anyhow::Result<Option<Side>> {
        if let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) {
            return Ok(Some(Side { cert_file: cert_file.clone(), key_file: key_file.clone(), auto: false }));
        }
        if !settings.auto_tls {
            return Ok(None);
        }
        let dir = config.data_dir.join("fixtures").join(side);
        let (cert_file, key_file) = keel_tls::self_signed(&dir, &hosts, config.self_signed_cert_validity)?;
        Ok(Some(Side { cert_file, key_file, auto: true }))
    }

    fn server(
        &self,
        settings: &TlsSettings,
        protocol: &ProtocolOptions,
        peer: bool,
    ) -> Result<ServerTls, keel_tls::TlsError> {
        // etcd's self-signed TLS info replaces the side's: no client
        // certificate checks with auto-TLS.
        let given = !self.auto;
        ServerTls::new(ServerTlsOptions {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: settings.trusted_ca_file.clone().filter(|_| given),
            client_cert_auth: settings.client_cert_auth && given,
            crl_file: settings.crl_file.clone().filter(|_| given),
            allowed_cns: if given { settings.allowed_cns.clone() } else { Vec::new() },
            allowed_hostnames: if given { settings.allowed_hostnames.clone() } else { Vec::new() },
            // etcd checks a certificate against the address it comes from on
            // peer listeners only (transport.NewListener's wrapTLS), unless
            // --peer-skip-client-san-verification; its client listeners
            // (transport.NewTLSListener) never do.
            skip_client_san_verification: !peer || settings.skip_client_san_verification,
            protocol: protocol.clone(),
        })
    }
}
