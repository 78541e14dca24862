//! TLS on real `keel` processes: client TLS used by keel-client and the real
//! `etcdctl`, http and https on one port, auto-TLS, a cluster with peer
//! mutual TLS that survives losing its leader, and a member whose
//! certificate comes from another CA kept out.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Keel};
use keel_client::{Client, ClientOptions, GetOptions, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// A CA and the certificates it signed, as files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pki = Pki { dir: tempfile::tempdir().unwrap(), cert, key };
        std::fs::write(pki.ca(), pki.cert.pem()).unwrap();
        pki
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `cn`, valid for localhost and 127.0.0.1, good for
    /// serving and as a client: (cert, key).
    fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue_serial(cn, 1)
    }

    fn issue_serial(&self, cn: &str, serial: u64) -> (PathBuf, PathBuf) {
        self.issue_signed(cn, serial, &["localhost", "127.0.0.1"])
    }

    /// A certificate for `cn` with `serial`, valid for `sans` (IPs or DNS
    /// names) from yesterday for 30 days: (cert, key).
    fn issue_signed(&self, cn: &str, serial: u64, sans: &[&str]) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::default();
        params.serial_number = Some(serial.into());
        params.distinguished_name = dn(cn);
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.to_string().try_into().unwrap()),
            })
            .collect();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{cn}.pem")), self.dir.path().join(format!("{cn}-key.pem")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

impl Pki {
    /// A CRL file revoking `serials`.
    fn crl(&self, serials: &[u64]) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::days(1),
            next_update: now + time::Duration::days(30),
            crl_number: 1.into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| rcgen::RevokedCertParams {
                    serial_number: serial.into(),
                    revocation_time: now - time::Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let path = self.dir.path().join("crl.pem");
        std::fs::write(&path, params.signed_by(&self.cert, &self.key).unwrap().pem().unwrap()).unwrap();
        path
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A keel started with exactly `args`, killed when dropped.
struct Process(Child);

impl Process {
    fn start(args: &[String]) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn keel");
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(endpoint: &str, tls: &[String], args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(tls)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl (apt-get install etcd-client)")
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "etcdctl failed: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Waits until a client with `options` can write `key` on `endpoint`.
async fn wait_writable(endpoint: &str, options: ClientOptions, key: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = Client::connect([endpoint], options.clone()).await?;
            client.put(key, "v").await?;
            Ok::<_, keel_client::ClientError>(client)
        };
        match attempt.await {
            Ok(client) => return client,
            Err(err) => assert!(Instant::now() < deadline, "{endpoint} never took a write: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_serves_keel_client_and_etcdctl_with_client_certificates() {
    let pki = Pki::new("client ca");
    let (server_cert, server_key) = pki.issue("server");
    let (client_cert, client_key) = pki.issue("root");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("https://127.0.0.1:{port}");
    let _keel = Process::start(&[
        format!("--data-dir={}", data.path().display()),
        format!("--listen-client-urls={endpoint}"),
        format!("--advertise-client-urls={endpoint}"),
        format!("--cert-file={}", path(&server_cert)),
        format!("--key-file={}", path(&server_key)),
        format!("--trusted-ca-file={}", path(&pki.ca())),
        "--client-cert-auth".to_string(),
    ]);

    let tls = TlsOptions::new().with_ca(pki.ca()).with_client_cert(&client_cert, &client_key);
    let client = wait_writable(&endpoint, ClientOptions { tls: Some(tls), ..quick() }, "from-rust").await;
    assert_eq!(client.get("from-rust").await.unwrap().kvs[0].value, b"v");

    let with_cert =
        ["--cacert", &path(&pki.ca()), "--cert", &path(&client_cert), "--key", &path(&client_key)].map(String::from);
    ok(&etcdctl(&endpoint, &with_cert, &["put", "from-etcdctl", "hello"]));
    assert_eq!(ok(&etcdctl(&endpoint, &with_cert, &["get", "from-rust", "--print-value-only"])), "v\n");
    assert_eq!(client.get("from-etcdctl").await.unwrap().kvs[0].value, b"hello");

    // No client certificate: refused at the handshake.
    let without_cert = ["--cacert", &path(&pki.ca())].map(String::from);
    assert!(!etcdctl(&endpoint, &without_cert, &["get", "from-rust"]).status.success());
    let anonymous = ClientOptions { tls: Some(TlsOptions::new().with_ca(pki.ca())), ..quick() };
    assert!(Client::connect([endpoint.as_str()], anonymous).await.and_then_get().await.is_err());
    // Plaintext on the TLS port: refused.
    assert!(!etcdctl(&format!("http://127.0.0.1:{port}"), &[], &["get", "from-rust"]).status.success());
    // A client certificate from another CA: refused.
    let other = Pki::new("other ca");
    let (other_cert, other_key) = other.issue("root");
    let foreign =
        ["--cacert", &path(&pki.ca()), "--cert", &path(&other_cert), "--key", &path(&other_key)].map(String::from);
    assert!(!etcdctl(&endpoint, &foreign, &["get", "from-rust"]).status.success());
}

/// A connect result, then one read: TLS refusals under TLS 1.3 surface at
/// the first call rather than at connect.
trait AndThenGet {
    async fn and_then_get(self) -> Result<(), keel_client::ClientError>;
}

impl AndThenGet for Result<Client, keel_client::ClientError> {
    async fn and_then_get(self) -> Result<(), keel_client::ClientError> {
        self?.get("any").await.map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_http_and_https() {
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _keel = Process::start(&[
        format!("--data-dir={}", data.path().display()),
        format!("--listen-client-urls=http://127.0.0.1:{port},https://127.0.0.1:{port}"),
        format!("--advertise-client-urls=https://127.0.0.1:{port}"),
        format!("--cert-file={}", path(&cert)),
        format!("--key-file={}", path(&key)),
    ]);
    let plain = format!("http://127.0.0.1:{port}");
    wait_writable(&plain, quick(), "plain").await;
    let secure = format!("https://127.0.0.1:{port}");
    ok(&etcdctl(&secure, &["--cacert".into(), path(&pki.ca())], &["put", "secure", "yes"]));
    assert_eq!(ok(&etcdctl(&plain, &[], &["get", "secure", "--print-value-only"])), "yes\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_tls_works_with_etcdctl_skipping_verification() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("https://127.0.0.1:{port}");
    let _keel = Process::start(&[
        format!("--data-dir={}", data.path().display()),
        format!("--listen-client-urls={endpoint}"),
        format!("--advertise-client-urls={endpoint}"),
        "--auto-tls".to_string(),
    ]);
    let skip = ClientOptions { tls: Some(TlsOptions::new().with_insecure_skip_verify()), ..quick() };
    wait_writable(&endpoint, skip, "auto").await;
    assert!(data.path().join("fixtures/client/cert.pem").exists());
    let insecure = ["--insecure-transport=false", "--insecure-skip-tls-verify"].map(String::from);
    ok(&etcdctl(&endpoint, &insecure, &["put", "k", "auto-tls"]));
    assert_eq!(ok(&etcdctl(&endpoint, &insecure, &["get", "k", "--print-value-only"])), "auto-tls\n");
    // Verifying clients cannot trust a self-signed certificate.
    assert!(!etcdctl(&endpoint, &["--insecure-transport=false".into()], &["get", "k"]).status.success());
}

#[test]
fn an_unreadable_certificate_fails_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let missing = dir.path().join("nope.pem");
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls=https://127.0.0.1:{port}"),
            format!("--advertise-client-urls=https://127.0.0.1:{port}"),
            format!("--cert-file={}", missing.display()),
            format!("--key-file={}", missing.display()),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot read {}", missing.display())), "{stderr}");
    assert!(!data.exists(), "nothing may be created when a certificate cannot be read");
}

/// Members `0..n` of a cluster with https peer URLs (plain client URLs);
/// member `i` presents `certs[i]`, and every member trusts `ca`.
struct SecureCluster {
    dir: tempfile::TempDir,
    names: Vec<String>,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
    members: Vec<Option<Keel>>,
}

impl SecureCluster {
    fn new(size: usize) -> SecureCluster {
        SecureCluster {
            dir: tempfile::tempdir().unwrap(),
            names: (0..size).map(|i| format!("m{i}")).collect(),
            peer_ports: (0..size).map(|_| free_port()).collect(),
            client_ports: (0..size).map(|_| free_port()).collect(),
            members: (0..size).map(|_| None).collect(),
        }
    }

    fn spawn(&mut self, i: usize, ca: &Path, cert: &Path, key: &Path) {
        let initial_cluster = self
            .names
            .iter()
            .zip(&self.peer_ports)
            .map(|(name, port)| format!("{name}=https://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let peer_url = format!("https://127.0.0.1:{}", self.peer_ports[i]);
        let flags = [
            format!("--name={}", self.names[i]),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--peer-cert-file={}", path(cert)),
            format!("--peer-key-file={}", path(key)),
            format!("--peer-trusted-ca-file={}", path(ca)),
            "--peer-client-cert-auth".to_string(),
        ];
        self.members[i] = Some(Keel::spawn(&self.dir.path().join(&self.names[i]), self.client_ports[i], &flags));
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    /// The member that leads, as the given members see it.
    async fn leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for &i in among {
                if let Ok(client) = Client::connect([self.endpoint(i)], quick()).await {
                    if let Ok(status) = client.status().await {
                        let me = status.header.as_ref().map(|h| h.member_id);
                        if status.leader != 0 && Some(status.leader) == me {
                            return i;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until member `i` has `key` = `value` (a serializable read: its own data).
    async fn has(&self, i: usize, key: &str, value: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = Client::connect([self.endpoint(i)], quick()).await {
                if let Ok(found) = client.get_with(key, GetOptions::new().with_serializable()).await {
                    if found.kvs.first().is_some_and(|kv| kv.value == value) {
                        return true;
                    }
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_peer_mutual_tls_survives_losing_its_leader() {
    let pki = Pki::new("peer ca");
    let mut cluster = SecureCluster::new(3);
    for i in 0..3 {
        let (cert, key) = pki.issue(&format!("m{i}"));
        cluster.spawn(i, &pki.ca(), &cert, &key);
    }
    let leader = cluster.leader(&[0, 1, 2]).await;
    let client = wait_writable(&cluster.endpoint(leader), quick(), "before").await;
    for i in 0..3 {
        assert!(cluster.has(i, "before", b"v").await, "member {i} did not replicate over TLS");
    }
    drop(client);

    cluster.members[leader] = None;
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let next = cluster.leader(&rest).await;
    let client = wait_writable(&cluster.endpoint(next), quick(), "after").await;
    client.put("after", "yes").await.unwrap();
    for &i in &rest {
        assert!(cluster.has(i, "after", b"yes").await, "member {i} missed a write after the leader died");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let pki = Pki::new("peer ca");
    let intruder_ca = Pki::new("intruder ca");
    let mut cluster = SecureCluster::new(3);
    for i in 0..2 {
        let (cert, key) = pki.issue(&format!("m{i}"));
        cluster.spawn(i, &pki.ca(), &cert, &key);
    }
    // Its certificate is signed by another CA; it trusts the real one, so
    // only the others' refusal keeps it out.
    let (cert, key) = intruder_ca.issue("m2");
    cluster.spawn(2, &pki.ca(), &cert, &key);

    let leader = cluster.leader(&[0, 1]).await;
    wait_writable(&cluster.endpoint(leader), quick(), "secret").await;
    assert!(cluster.has(0, "secret", b"v").await && cluster.has(1, "secret", b"v").await);
    assert!(!cluster.has(2, "secret", b"v").await, "the member with a foreign certificate got the data");

    // The handshake itself is refused: a client presenting the foreign
    // certificate cannot complete a call on a member's peer port.
    let tls = keel_tls::ClientTls::new(keel_tls::ClientTlsOptions {
        trusted_ca_file: Some(pki.ca()),
        cert_file: Some(cert),
        key_file: Some(key),
        ..Default::default()
    })
    .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", cluster.peer_ports[0]))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let refused = match endpoint.connect_with_connector(keel_tls::Connector::new(Some(tls))).await {
        Err(_) => true,
        Ok(channel) => keel_proto::keelpb::raft_peer_client::RaftPeerClient::new(channel)
            .cluster_info(keel_proto::keelpb::ClusterInfoRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a peer certificate from another CA was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused() {
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let (good_cert, good_key) = pki.issue_serial("good", 10);
    let (revoked_cert, revoked_key) = pki.issue_serial("revoked", 11);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("https://127.0.0.1:{port}");
    let _keel = Process::start(&[
        format!("--data-dir={}", data.path().display()),
        format!("--listen-client-urls={endpoint}"),
        format!("--advertise-client-urls={endpoint}"),
        format!("--cert-file={}", path(&cert)),
        format!("--key-file={}", path(&key)),
        format!("--trusted-ca-file={}", path(&pki.ca())),
        "--client-cert-auth".to_string(),
        format!("--client-crl-file={}", path(&pki.crl(&[11]))),
    ]);
    let good = TlsOptions::new().with_ca(pki.ca()).with_client_cert(&good_cert, &good_key);
    wait_writable(&endpoint, ClientOptions { tls: Some(good), ..quick() }, "k").await;
    let revoked =
        ["--cacert", &path(&pki.ca()), "--cert", &path(&revoked_cert), "--key", &path(&revoked_key)].map(String::from);
    assert!(!etcdctl(&endpoint, &revoked, &["get", "k"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_served_without_a_restart() {
    let old_ca = Pki::new("old ca");
    let (cert, key) = old_ca.issue("server");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("https://127.0.0.1:{port}");
    let _keel = Process::start(&[
        format!("--data-dir={}", data.path().display()),
        format!("--listen-client-urls={endpoint}"),
        format!("--advertise-client-urls={endpoint}"),
        format!("--cert-file={}", path(&cert)),
        format!("--key-file={}", path(&key)),
    ]);
    wait_writable(&endpoint, ClientOptions { tls: Some(TlsOptions::new().with_ca(old_ca.ca())), ..quick() }, "k").await;

    let new_ca = Pki::new("new ca");
    let (new_cert, new_key) = new_ca.issue("server");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let trusting_new = ["--cacert".to_string(), path(&new_ca.ca())];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !etcdctl(&endpoint, &trusting_new, &["get", "k"]).status.success() {
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!etcdctl(&endpoint, &["--cacert".to_string(), path(&old_ca.ca())], &["get", "k"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_peer_auto_tls_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let initial = (0..3).map(|i| format!("m{i}=https://127.0.0.1:{}", peer_ports[i])).collect::<Vec<_>>().join(",");
    let members: Vec<Keel> = (0..3)
        .map(|i| {
            let peer_url = format!("https://127.0.0.1:{}", peer_ports[i]);
            let flags = [
                format!("--name=m{i}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial}"),
                "--peer-auto-tls".to_string(),
            ];
            Keel::spawn(&dir.path().join(format!("m{i}")), client_ports[i], &flags)
        })
        .collect();
    for keel in &members {
        keel.wait_ready().await;
    }
    let endpoints: Vec<String> = members.iter().map(Keel::endpoint).collect();
    let client = Client::connect(endpoints.clone(), quick()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.put("auto", "peers").await.is_err() {
        assert!(Instant::now() < deadline, "the cluster never took a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        assert!(dir.path().join(format!("m{i}/fixtures/peer/cert.pem")).exists());
        let member = Client::connect([endpoint.as_str()], quick()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = member.get_with("auto", GetOptions::new().with_serializable()).await.unwrap();
            if found.kvs.first().is_some_and(|kv| kv.value == b"peers") {
                break;
            }
            assert!(Instant::now() < deadline, "member {i} did not replicate over auto-TLS");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// With --client-cert-auth and auth on, a request without a token runs as
/// the user its verified certificate's CN names (etcd's CN users; a user
/// added with --no-password can log in no other way); a token wins over
/// the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_user_when_auth_is_on() {
    let pki = Pki::new("client ca");
    let (server_cert, server_key) = pki.issue("server");
    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("https://127.0.0.1:{}", free_port());
    let _keel = Process::start(&[
        format!("--data-dir={}", data.path().display()),
        format!("--listen-client-urls={endpoint}"),
        format!("--advertise-client-urls={endpoint}"),
        format!("--cert-file={}", path(&server_cert)),
        format!("--key-file={}", path(&server_key)),
        format!("--trusted-ca-file={}", path(&pki.ca())),
        "--client-cert-auth".to_string(),
        "--bcrypt-cost=4".to_string(),
    ]);
    let as_cn = |cn: &str| {
        let (cert, key) = pki.issue(cn);
        ["--cacert", &path(&pki.ca()), "--cert", &path(&cert), "--key", &path(&key)].map(String::from)
    };
    let (root, alice, stranger) = (as_cn("root"), as_cn("alice"), as_cn("stranger"));
    let (root_cert, root_key) = pki.issue("root");
    let tls = TlsOptions::new().with_ca(pki.ca()).with_client_cert(&root_cert, &root_key);
    wait_writable(&endpoint, ClientOptions { tls: Some(tls), ..quick() }, "ready").await;

    ok(&etcdctl(&endpoint, &root, &["user", "add", "root:rootpw"]));
    ok(&etcdctl(&endpoint, &root, &["user", "grant-role", "root", "root"]));
    ok(&etcdctl(&endpoint, &root, &["user", "add", "alice", "--no-password"]));
    ok(&etcdctl(&endpoint, &root, &["role", "add", "app"]));
    ok(&etcdctl(&endpoint, &root, &["role", "grant-permission", "app", "readwrite", "app/", "--prefix"]));
    ok(&etcdctl(&endpoint, &root, &["user", "grant-role", "alice", "app"]));
    ok(&etcdctl(&endpoint, &root, &["auth", "enable"]));

    // No token: the certificate's CN is the user.
    ok(&etcdctl(&endpoint, &root, &["put", "secret", "s"]));
    ok(&etcdctl(&endpoint, &alice, &["put", "app/x", "1"]));
    let denied = etcdctl(&endpoint, &alice, &["put", "secret", "2"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("etcdserver: permission denied"), "{denied:?}");
    let unknown = etcdctl(&endpoint, &stranger, &["get", "app/x"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("etcdserver: permission denied"), "{unknown:?}");
    // A password login still works, and its token names the user, not the CN.
    let alice_with_root_login = [&alice[..], &["--user".to_string(), "root:rootpw".to_string()]].concat();
    ok(&etcdctl(&endpoint, &alice_with_root_login, &["put", "secret", "3"]));
    // A no-password user cannot log in with a password.
    let login = [&root[..], &["--user".to_string(), "alice:anything".to_string()]].concat();
    let refused = etcdctl(&endpoint, &login, &["get", "app/x"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("password was given for no password user"),
        "{refused:?}"
    );
}

impl Pki {
    /// A certificate for `cn` valid for exactly `sans` (IPs or DNS names):
    /// (cert, key).
    fn issue_with_sans(&self, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        self.issue_signed(cn, 2, sans)
    }
}

impl SecureCluster {
    /// As [`SecureCluster::spawn`], with `extra` flags.
    fn spawn_with(&mut self, i: usize, ca: &Path, cert: &Path, key: &Path, extra: &[String]) {
        let initial_cluster = self
            .names
            .iter()
            .zip(&self.peer_ports)
            .map(|(name, port)| format!("{name}=https://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let peer_url = format!("https://127.0.0.1:{}", self.peer_ports[i]);
        let mut flags = vec![
            format!("--name={}", self.names[i]),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--peer-cert-file={}", path(cert)),
            format!("--peer-key-file={}", path(key)),
            format!("--peer-trusted-ca-file={}", path(ca)),
            "--peer-client-cert-auth".to_string(),
        ];
        flags.extend_from_slice(extra);
        self.members[i] = Some(Keel::spawn(&self.dir.path().join(&self.names[i]), self.client_ports[i], &flags));
    }
}

/// Whether a call on member `i`'s peer port, presenting `cert`, goes through.
async fn peer_call_succeeds(cluster: &SecureCluster, i: usize, ca: &Path, cert: &Path, key: &Path) -> bool {
    let tls = keel_tls::ClientTls::new(keel_tls::ClientTlsOptions {
        trusted_ca_file: Some(ca.to_path_buf()),
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", cluster.peer_ports[i]))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    match endpoint.connect_with_connector(keel_tls::Connector::new(Some(tls))).await {
        Err(_) => false,
        Ok(channel) => keel_proto::keelpb::raft_peer_client::RaftPeerClient::new(channel)
            .cluster_info(keel_proto::keelpb::ClusterInfoRequest {})
            .await
            .is_ok(),
    }
}

/// etcd's checkSAN on peer listeners: with --peer-client-cert-auth, a
/// member whose (CA-signed) peer client certificate names only another IP
/// than the one it connects from is closed after the handshake, unless the
/// members run with --peer-skip-client-san-verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_peer_certificate_names_another_ip_is_refused_unless_skipped() {
    let pki = Pki::new("peer ca");
    // Member 2 serves with a good certificate but dials with one for 10.9.9.9.
    let (misnamed_cert, misnamed_key) = pki.issue_with_sans("m2-client", &["10.9.9.9"]);
    let misnamed = [
        format!("--peer-client-cert-file={}", path(&misnamed_cert)),
        format!("--peer-client-key-file={}", path(&misnamed_key)),
    ];

    let mut checked = SecureCluster::new(3);
    for i in 0..3 {
        let (cert, key) = pki.issue(&format!("m{i}"));
        let extra: &[String] = if i == 2 { &misnamed } else { &[] };
        checked.spawn_with(i, &pki.ca(), &cert, &key, extra);
    }
    let leader = checked.leader(&[0, 1]).await;
    wait_writable(&checked.endpoint(leader), quick(), "k").await;
    let (good_cert, good_key) = pki.issue("m0");
    assert!(peer_call_succeeds(&checked, 0, &pki.ca(), &good_cert, &good_key).await);
    for i in 0..2 {
        assert!(
            !peer_call_succeeds(&checked, i, &pki.ca(), &misnamed_cert, &misnamed_key).await,
            "member {i} accepted a peer certificate for another IP"
        );
    }
    drop(checked);

    let mut skipping = SecureCluster::new(3);
    for i in 0..3 {
        let (cert, key) = pki.issue(&format!("m{i}"));
        let mut extra = vec!["--peer-skip-client-san-verification".to_string()];
        if i == 2 {
            extra.extend_from_slice(&misnamed);
        }
        skipping.spawn_with(i, &pki.ca(), &cert, &key, &extra);
    }
    let leader = skipping.leader(&[0, 1, 2]).await;
    wait_writable(&skipping.endpoint(leader), quick(), "k").await;
    for i in 0..3 {
        assert!(skipping.has(i, "k", b"v").await, "member {i} did not replicate");
    }
    for i in 0..2 {
        assert!(
            peer_call_succeeds(&skipping, i, &pki.ca(), &misnamed_cert, &misnamed_key).await,
            "member {i} refused a peer certificate with --peer-skip-client-san-verification"
        );
    }
}
