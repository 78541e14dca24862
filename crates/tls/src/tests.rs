//! Handshakes end to end: a server on `Incoming`, a client through
//! `Connector`, certificates from the test PKI.

use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tonic::transport::Uri;
use tower_service::Service;

use crate::testing::{Ca, Dir};
use crate::*;

/// Serves one listener: every accepted connection is told the CN the
/// server saw ("-" for none).
async fn serve(incoming: Incoming) {
    let mut incoming = incoming;
    while let Some(Ok(mut conn)) = incoming.next().await {
        let cn = conn.info().common_name.clone().unwrap_or_else(|| "-".into());
        let _ = conn.write_all(format!("{cn}\n").as_bytes()).await;
        let _ = conn.flush().await;
        // Keep the connection until the client read its line.
        tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest).await;
        });
    }
}

/// A loopback port served by `serve` over the listener `incoming` makes of
/// it; abort the task to stop.
async fn serving(incoming: impl FnOnce(TcpListener) -> Incoming) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, tokio::spawn(serve(incoming(listener))))
}

/// What a TLS client with `client` options hears from a server with
/// `server`: the CN the server saw, or why it failed.
async fn exchange(server: &ServerTls, client: ClientTlsOptions) -> Result<String, String> {
    let (port, served) = serving(|listener| Incoming::tls(listener, server.clone())).await;
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        let tls = ClientTls::new(client).map_err(|e| e.to_string())?;
        let uri = Uri::from_str(&format!("https://localhost:{port}")).unwrap();
        let conn = Connector::new(Some(tls)).call(uri).await.map_err(|e| e.to_string())?.into_inner();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).await.map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("closed by the server".to_string());
        }
        Ok(line.trim_end().to_string())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    served.abort();
    heard
}

struct Pki {
    dir: Dir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: Dir::new(), ca: Ca::new("keel test ca") }
    }

    /// The server's files: a cert for localhost from the CA, and the CA.
    fn server_options(&self) -> ServerTlsOptions {
        let issued = self.ca.issue("server", &["localhost", "127.0.0.1"], 1);
        ServerTlsOptions {
            cert_file: self.dir.write("server.pem", &issued.cert),
            key_file: self.dir.write("server-key.pem", &issued.key),
            trusted_ca_file: Some(self.dir.write("ca.pem", &self.ca.pem())),
            ..ServerTlsOptions::default()
        }
    }

    fn mutual(&self) -> ServerTlsOptions {
        ServerTlsOptions { client_cert_auth: true, ..self.server_options() }
    }

    /// A client trusting the CA, presenting a certificate for `cn` from `ca`
    /// (valid for client.example and 127.0.0.1, where the tests connect
    /// from).
    fn client(&self, ca: &Ca, cn: &str, serial: u64) -> ClientTlsOptions {
        self.client_with_sans(ca, cn, serial, &["client.example", "127.0.0.1"])
    }

    /// A client presenting a certificate with exactly these SANs (IPs or
    /// DNS names).
    fn client_with_sans(&self, ca: &Ca, cn: &str, serial: u64, sans: &[&str]) -> ClientTlsOptions {
        let issued = ca.issue(cn, sans, serial);
        ClientTlsOptions {
            cert_file: Some(self.dir.write(&format!("{cn}-{serial}.pem"), &issued.cert)),
            key_file: Some(self.dir.write(&format!("{cn}-{serial}-key.pem"), &issued.key)),
            ..self.anonymous()
        }
    }

    fn anonymous(&self) -> ClientTlsOptions {
        ClientTlsOptions {
            trusted_ca_file: Some(self.dir.write("ca.pem", &self.ca.pem())),
            ..ClientTlsOptions::default()
        }
    }
}

#[tokio::test]
async fn a_good_client_certificate_is_accepted_and_its_cn_seen() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    assert_eq!(exchange(&server, pki.client(&pki.ca, "alice", 10)).await, Ok("alice".to_string()));
}

/// A client offering only HTTP/1.1 in ALPN (curl --http1.1, Python's
/// urllib3) completes the handshake, as with Go's server; one offering
/// only a protocol nobody serves does not.
#[tokio::test]
async fn http1_only_clients_complete_the_handshake() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.server_options()).unwrap();
    let (port, served) = serving(|listener| Incoming::tls(listener, server)).await;
    let offering = |alpn: &[u8]| {
        let mut config = (*ClientTls::new(pki.anonymous()).unwrap().config()).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut conn = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(&mut conn).read_line(&mut line).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((line, conn.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)))
        }
    };
    assert_eq!(offering(b"http/1.1").await, Ok(("-\n".to_owned(), Some(b"http/1.1".to_vec()))));
    assert_eq!(offering(b"h2").await, Ok(("-\n".to_owned(), Some(b"h2".to_vec()))));
    assert!(offering(b"spdy/3").await.is_err());
    served.abort();
}

#[tokio::test]
async fn without_client_cert_auth_no_certificate_is_asked_for() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.server_options()).unwrap();
    assert_eq!(exchange(&server, pki.anonymous()).await, Ok("-".to_string()));
    assert_eq!(exchange(&server, pki.client(&pki.ca, "alice", 10)).await, Ok("-".to_string()));
}

#[tokio::test]
async fn client_cert_auth_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    assert!(exchange(&server, pki.anonymous()).await.is_err());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    let other = Ca::new("another ca");
    assert!(exchange(&server, pki.client(&other, "mallory", 10)).await.is_err());
}

#[tokio::test]
async fn a_client_refuses_a_server_its_ca_did_not_sign() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.server_options()).unwrap();
    let other = Ca::new("another ca");
    let client = ClientTlsOptions {
        trusted_ca_file: Some(pki.dir.write("other-ca.pem", &other.pem())),
        ..ClientTlsOptions::default()
    };
    let err = exchange(&server, client).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("unknown issuer"), "{err}");
}

#[tokio::test]
async fn a_revoked_certificate_is_refused() {
    let pki = Pki::new();
    let crl = pki.dir.write("crl.pem", &pki.ca.crl(&[66]));
    let server = ServerTls::new(ServerTlsOptions { crl_file: Some(crl), ..pki.mutual() }).unwrap();
    assert!(exchange(&server, pki.client(&pki.ca, "revoked", 66)).await.is_err());
    assert_eq!(exchange(&server, pki.client(&pki.ca, "fine", 67)).await, Ok("fine".to_string()));
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    let expired = pki.ca.issue_expired("old", 12);
    let client = ClientTlsOptions {
        cert_file: Some(pki.dir.write("old.pem", &expired.cert)),
        key_file: Some(pki.dir.write("old-key.pem", &expired.key)),
        ..pki.anonymous()
    };
    assert!(exchange(&server, client).await.is_err());
}

#[tokio::test]
async fn allowed_cns_and_hostnames_restrict_peers() {
    let pki = Pki::new();
    let by_cn = ServerTls::new(ServerTlsOptions { allowed_cns: vec!["member".into(), "other".into()], ..pki.mutual() })
        .unwrap();
    assert_eq!(exchange(&by_cn, pki.client(&pki.ca, "member", 20)).await, Ok("member".to_string()));
    assert!(exchange(&by_cn, pki.client(&pki.ca, "intruder", 21)).await.is_err());

    let by_host =
        ServerTls::new(ServerTlsOptions { allowed_hostnames: vec!["client.example".into()], ..pki.mutual() }).unwrap();
    assert_eq!(exchange(&by_host, pki.client(&pki.ca, "anyone", 22)).await, Ok("anyone".to_string()));
    let elsewhere =
        ServerTls::new(ServerTlsOptions { allowed_hostnames: vec!["member.example".into()], ..pki.mutual() }).unwrap();
    assert!(exchange(&elsewhere, pki.client(&pki.ca, "anyone", 23)).await.is_err());

    let both = ServerTlsOptions { allowed_cns: vec!["a".into()], allowed_hostnames: vec!["b".into()], ..pki.mutual() };
    assert!(matches!(ServerTls::new(both), Err(TlsError::AllowedCnAndHostname { .. })));
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let options = pki.server_options();
    let server = ServerTls::new_checking_every(options.clone(), Duration::ZERO).unwrap();
    assert!(exchange(&server, pki.anonymous()).await.is_ok());

    let next_ca = Ca::new("next ca");
    let trusting_next = ClientTlsOptions {
        trusted_ca_file: Some(pki.dir.write("next-ca.pem", &next_ca.pem())),
        ..ClientTlsOptions::default()
    };
    assert!(exchange(&server, trusting_next.clone()).await.is_err());

    // A half-written rotation (a key that is not PEM) keeps the old pair.
    std::fs::write(&options.key_file, "not a key").unwrap();
    assert!(exchange(&server, pki.anonymous()).await.is_ok());

    let issued = next_ca.issue("server", &["localhost"], 2);
    std::fs::write(&options.cert_file, &issued.cert).unwrap();
    std::fs::write(&options.key_file, &issued.key).unwrap();
    assert!(exchange(&server, trusting_next).await.is_ok());
    assert!(exchange(&server, pki.anonymous()).await.is_err());
}

#[tokio::test]
async fn one_port_serves_plain_and_tls() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.server_options()).unwrap();
    let (port, served) = serving(|listener| Incoming::tls_and_plain(listener, server)).await;

    // A plain client speaks first (HTTP/2's preface does).
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain.write_all(b"PRI").await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut plain).read_line(&mut line).await.unwrap();
    assert_eq!(line, "-\n");

    let tls = ClientTls::new(pki.anonymous()).unwrap();
    let uri = Uri::from_str(&format!("https://localhost:{port}")).unwrap();
    let conn = Connector::new(Some(tls)).call(uri).await.unwrap().into_inner();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).await.unwrap();
    assert_eq!(line, "-\n");
    served.abort();
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_the_next() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.server_options()).unwrap();
    let (port, served) = serving(|listener| Incoming::tls(listener, server)).await;
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = ClientTls::new(pki.anonymous()).unwrap();
    let uri = Uri::from_str(&format!("https://localhost:{port}")).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(2), Connector::new(Some(tls)).call(uri)).await;
    assert!(conn.expect("not held up").is_ok());
    served.abort();
}

#[tokio::test]
async fn versions_must_overlap() {
    let pki = Pki::new();
    let tls13 = ProtocolOptions { min_version: Some(TlsVersion::Tls13), ..ProtocolOptions::default() };
    let server = ServerTls::new(ServerTlsOptions { protocol: tls13, ..pki.server_options() }).unwrap();
    let tls12 = ProtocolOptions { max_version: Some(TlsVersion::Tls12), ..ProtocolOptions::default() };
    assert!(exchange(&server, ClientTlsOptions { protocol: tls12.clone(), ..pki.anonymous() }).await.is_err());
    assert!(exchange(&server, pki.anonymous()).await.is_ok());

    let suites = ProtocolOptions { cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into()], ..tls12 };
    let server = ServerTls::new(ServerTlsOptions { protocol: suites.clone(), ..pki.server_options() }).unwrap();
    assert!(exchange(&server, ClientTlsOptions { protocol: suites, ..pki.anonymous() }).await.is_ok());
}

#[tokio::test]
async fn auto_tls_certificates_are_made_once_and_skip_verification() {
    let dir = Dir::new();
    let fixtures = dir.path("fixtures/client");
    let (cert, key) = self_signed(&fixtures, &["localhost".into(), "127.0.0.1".into()], 1).unwrap();
    let first = std::fs::read(&cert).unwrap();
    assert_eq!(self_signed(&fixtures, &["localhost".into()], 1).unwrap(), (cert.clone(), key.clone()));
    assert_eq!(std::fs::read(&cert).unwrap(), first, "an existing pair is kept");

    let server =
        ServerTls::new(ServerTlsOptions { cert_file: cert, key_file: key, ..ServerTlsOptions::default() }).unwrap();
    let skip = ClientTlsOptions { insecure_skip_verify: true, ..ClientTlsOptions::default() };
    assert_eq!(exchange(&server, skip).await, Ok("-".to_string()));
    let verifying =
        ClientTlsOptions { trusted_ca_file: Some(dir.write("none.pem", "")), ..ClientTlsOptions::default() };
    assert!(exchange(&server, verifying).await.is_err());
}

#[test]
fn bad_files_are_named() {
    let pki = Pki::new();
    let good = pki.mutual();
    let garbage = pki.dir.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
    let empty = pki.dir.write("empty.pem", "nothing here\n");
    let missing = pki.dir.path("missing.pem");
    let cases = [
        ServerTlsOptions { cert_file: missing.clone(), ..good.clone() },
        ServerTlsOptions { cert_file: garbage.clone(), ..good.clone() },
        ServerTlsOptions { key_file: empty.clone(), ..good.clone() },
        ServerTlsOptions { key_file: missing.clone(), ..good.clone() },
        ServerTlsOptions { trusted_ca_file: Some(empty.clone()), ..good.clone() },
        ServerTlsOptions { crl_file: Some(empty.clone()), ..good.clone() },
        ServerTlsOptions { crl_file: Some(garbage.clone()), ..good.clone() },
    ];
    for options in cases {
        let named = [&options.cert_file, &options.key_file]
            .into_iter()
            .chain(options.trusted_ca_file.as_ref())
            .chain(options.crl_file.as_ref())
            .find(|path| **path == missing || **path == garbage || **path == empty)
            .unwrap()
            .clone();
        let err = ServerTls::new(options).unwrap_err().to_string();
        assert!(err.contains(&named.display().to_string()), "{err:?} should name {}", named.display());
    }

    // A key that is not the certificate's.
    let other = pki.ca.issue("other", &[], 99);
    let mismatched = ServerTlsOptions { key_file: pki.dir.write("other-key.pem", &other.key), ..good };
    let err = ServerTls::new(mismatched).unwrap_err().to_string();
    assert!(err.contains("other-key.pem") && err.contains("does not match"), "{err}");

    let client = ClientTlsOptions { trusted_ca_file: Some(missing), ..ClientTlsOptions::default() };
    assert!(ClientTls::new(client).unwrap_err().to_string().contains("missing.pem"));
}

#[test]
fn common_names_are_read_from_certificates() {
    use rustls::pki_types::pem::PemObject;
    let ca = Ca::new("a ca");
    let issued = ca.issue("root", &["localhost"], 5);
    let der = CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap();
    assert_eq!(common_name(&der), Some("root".to_string()));
    let auto = Dir::new();
    let (cert, _) = self_signed(&auto.path("peer"), &[], 1).unwrap();
    let der = CertificateDer::from_pem_file(cert).unwrap();
    assert_eq!(common_name(&der), None, "etcd's auto-TLS certificates have no CN");
    assert_eq!(common_name(b"\x30\x03\x02\x01"), None);
}

// etcd's checkSAN (listener_tls.go): a client certificate against the
// address it connects from (127.0.0.1 here).

#[tokio::test]
async fn a_client_certificate_for_its_ip_is_accepted() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    assert!(server.verifies_client_san(), "etcd's default is to check");
    let client = pki.client_with_sans(&pki.ca, "ip", 20, &["127.0.0.1"]);
    assert_eq!(exchange(&server, client).await, Ok("ip".to_string()));
}

#[tokio::test]
async fn a_client_certificate_for_another_ip_only_is_refused() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    let client = pki.client_with_sans(&pki.ca, "elsewhere", 21, &["10.9.9.9"]);
    assert_eq!(exchange(&server, client).await, Err("closed by the server".to_string()));
}

#[tokio::test]
async fn a_client_certificate_for_a_name_resolving_to_its_ip_is_accepted() {
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    let named = pki.client_with_sans(&pki.ca, "named", 22, &["localhost"]);
    assert_eq!(exchange(&server, named).await, Ok("named".to_string()));
    // As etcd: an IP SAN that does not match falls through to the names.
    let both = pki.client_with_sans(&pki.ca, "both", 23, &["10.9.9.9", "localhost"]);
    assert_eq!(exchange(&server, both).await, Ok("both".to_string()));
    // A name that does not resolve to the address is refused.
    let unresolvable = pki.client_with_sans(&pki.ca, "nowhere", 24, &["keel-test.invalid"]);
    assert_eq!(exchange(&server, unresolvable).await, Err("closed by the server".to_string()));
}

#[tokio::test]
async fn a_client_certificate_without_sans_is_accepted() {
    // etcd's checkCertSAN: nothing to check against.
    let pki = Pki::new();
    let server = ServerTls::new(pki.mutual()).unwrap();
    let client = pki.client_with_sans(&pki.ca, "bare", 25, &[]);
    assert_eq!(exchange(&server, client).await, Ok("bare".to_string()));
}

#[tokio::test]
async fn skipping_client_san_verification_lets_a_mismatched_certificate_in() {
    let pki = Pki::new();
    let server = ServerTls::new(ServerTlsOptions { skip_client_san_verification: true, ..pki.mutual() }).unwrap();
    assert!(!server.verifies_client_san());
    let client = pki.client_with_sans(&pki.ca, "elsewhere", 26, &["10.9.9.9"]);
    assert_eq!(exchange(&server, client).await, Ok("elsewhere".to_string()));
}

#[test]
fn subject_alternative_names_are_read_from_the_certificate() {
    use rustls::pki_types::pem::PemObject;
    let ca = Ca::new("sans ca");
    let issued = ca.issue("x", &["10.9.9.9", "::1", "localhost", "*.example.com"], 30);
    let der = CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap();
    let names = crate::x509::alt_names(&der).unwrap();
    assert_eq!(names.ips, ["10.9.9.9".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]);
    assert_eq!(names.dns, ["localhost", "*.example.com"]);
    let bare = ca.issue("y", &[], 31);
    let der = CertificateDer::from_pem_slice(bare.cert.as_bytes()).unwrap();
    assert_eq!(crate::x509::alt_names(&der), Some(crate::x509::AltNames::default()));
    assert_eq!(crate::x509::alt_names(b"not a certificate"), None);
}

#[tokio::test]
async fn san_check_compares_ips_as_go_does_and_words_refusals_as_etcd() {
    use crate::san::check_names;
    use crate::x509::AltNames;
    let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
    let quick = Duration::from_secs(5);
    let loopback = AltNames { ips: vec![ip("127.0.0.1")], dns: Vec::new() };
    // A dual-stack listener sees an IPv4 client as IPv4-mapped IPv6.
    assert_eq!(check_names(&loopback, ip("::ffff:127.0.0.1"), quick).await, Ok(()));
    assert_eq!(
        check_names(&loopback, ip("10.1.1.1"), quick).await,
        Err("x509: certificate is valid for 127.0.0.1, not 10.1.1.1".to_string())
    );
    // A wildcard is only matched by etcd's reverse lookup, which Keel does not do.
    let wildcard = AltNames { ips: Vec::new(), dns: vec!["*.localhost".into()] };
    assert_eq!(
        check_names(&wildcard, ip("127.0.0.1"), quick).await,
        Err("tls: \"127.0.0.1\" does not match any of DNSNames [\"*.localhost\"]".to_string())
    );
}

#[tokio::test]
async fn a_dialled_connection_sends_its_writes_together_on_flush() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let uri = Uri::from_str(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut conn = Connector::new(None).call(uri).await.unwrap().into_inner();
    let (mut accepted, _) = listener.accept().await.unwrap();

    // Two requests written, as two calling tasks would: nothing leaves yet.
    conn.write_all(b"first ").await.unwrap();
    conn.write_all(b"second").await.unwrap();
    let mut heard = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(200), accepted.read(&mut heard)).await;
    assert!(early.is_err(), "a write left before the flush: {early:?}");

    conn.flush().await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), accepted.read(&mut heard)).await.unwrap().unwrap();
    assert_eq!(&heard[..n], b"first second", "both writes in one segment");
}
