//! The TLS matrix: etcdctl over TLS against an etcd and a Keel started with etcd's TLS flags.
//!
//! Each [`Group`] is its own server pair, started with the group's flags once the plaintext
//! script has run and stopped after the group's cases, so the plaintext servers stay as they
//! are. The cases are ordinary [`Case`]s, run, normalised and diffed as the rest of the suite;
//! each also says how etcdctl dials (`https://`, or `http://` to the TLS port) and which
//! certificates it presents. A fresh PKI ([`Pki`]) is generated per run: a CA, a server
//! certificate for 127.0.0.1 and localhost, client certificates named by their CN, one from
//! another CA, an expired one and a revoked one with the CRL that revokes it. Both servers use
//! the same files, so the paths etcdctl is given are the same for both. `{pki}` in a flag
//! stands for the PKI's directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
};
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

use super::cases::{Case, Kind};

/// Server flags and the cases run against the servers started with them.
pub struct Group {
    pub name: &'static str,
    /// Flags for both servers besides the https client URL (`{pki}` as in [`TlsCase::flags`]).
    pub server_flags: &'static [&'static str],
    /// etcdctl's TLS flags for the start-up health check.
    pub ready: &'static [&'static str],
    pub cases: &'static [TlsCase],
}

pub struct TlsCase {
    pub case: Case,
    /// `https`, or `http` for a plaintext client on the TLS port.
    pub scheme: &'static str,
    /// etcdctl's global TLS flags; `{pki}` is the PKI directory.
    pub flags: &'static [&'static str],
    /// With etcdctl's `--debug` (see [`refused_by_client`]).
    pub debug: bool,
}

const fn tls(id: &'static str, flags: &'static [&'static str], args: &'static [&'static str]) -> TlsCase {
    TlsCase {
        case: Case { id, args, stdin: None, kind: Kind::Plain, capture: None, watching: None },
        scheme: "https",
        flags,
        debug: false,
    }
}

/// `tls(..)` with etcdctl's `--debug`, whose gRPC log says why the handshake failed
/// ([`Kind::HandshakeReasons`]): for refusals etcdctl itself decides (it does not trust the
/// server's certificate), so the reason is the same at every attempt.
const fn refused_by_client(id: &'static str, flags: &'static [&'static str], args: &'static [&'static str]) -> TlsCase {
    let mut case = tls(id, flags, args);
    case.case.kind = Kind::HandshakeReasons;
    case.debug = true;
    case
}

const fn plaintext(id: &'static str, args: &'static [&'static str]) -> TlsCase {
    TlsCase { scheme: "http", ..tls(id, &[], args) }
}

/// Every case of every group.
pub fn cases() -> impl Iterator<Item = &'static Case> {
    GROUPS.iter().flat_map(|group| group.cases.iter().map(|c| &c.case))
}

/// Replaces `{pki}` in each flag with `dir`.
pub fn expand(flags: &[&str], dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    flags.iter().map(|flag| flag.replace("{pki}", &dir)).collect()
}

impl TlsCase {
    /// etcdctl's global flags for this case, `{pki}` expanded.
    pub fn etcdctl_flags(&self, pki: &Path) -> Vec<String> {
        let mut flags = expand(self.flags, pki);
        if self.debug {
            flags.push("--debug".to_owned());
        }
        flags
    }
}

// ---- etcdctl's TLS flags.
const NO_FLAGS: &[&str] = &[];
const TRUST_CA: &[&str] = &["--cacert={pki}/ca.pem"];
/// A TLS client that verifies nothing (etcdctl applies `--insecure-skip-tls-verify` only to
/// a TLS configuration it has built, hence `--insecure-transport=false`).
const SKIP_VERIFY: &[&str] = &["--insecure-transport=false", "--insecure-skip-tls-verify"];
const AS_CLIENT: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/client.pem", "--key={pki}/client-key.pem"];
const AS_ROOT: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/root.pem", "--key={pki}/root-key.pem"];
const AS_ALICE: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/alice.pem", "--key={pki}/alice-key.pem"];
/// CN `stranger`: signed by the CA, but no such user.
const AS_STRANGER: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/stranger.pem", "--key={pki}/stranger-key.pem"];
/// CN `client`, signed by another CA.
const AS_FOREIGN: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/foreign.pem", "--key={pki}/foreign-key.pem"];
/// CN `client`, signed by the CA, expired yesterday.
const AS_EXPIRED: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/expired.pem", "--key={pki}/expired-key.pem"];
/// CN `client`, signed by the CA, revoked by `crl.pem`.
const AS_REVOKED: &[&str] = &["--cacert={pki}/ca.pem", "--cert={pki}/revoked.pem", "--key={pki}/revoked-key.pem"];

// ---- Server flags.
const SERVER_TLS: &[&str] = &["--cert-file={pki}/server.pem", "--key-file={pki}/server-key.pem"];
const MUTUAL_TLS: &[&str] = &[
    "--cert-file={pki}/server.pem",
    "--key-file={pki}/server-key.pem",
    "--trusted-ca-file={pki}/ca.pem",
    "--client-cert-auth",
];
const MUTUAL_TLS_CRL: &[&str] = &[
    "--cert-file={pki}/server.pem",
    "--key-file={pki}/server-key.pem",
    "--trusted-ca-file={pki}/ca.pem",
    "--client-cert-auth",
    "--client-crl-file={pki}/crl.pem",
];

#[rustfmt::skip]
pub static GROUPS: &[Group] = &[
    Group {
        name: "server TLS (--cert-file --key-file)",
        server_flags: SERVER_TLS,
        ready: TRUST_CA,
        cases: &[
            tls("tls-server-put", TRUST_CA, &["put", "tls/k", "v1"]),
            tls("tls-server-get", TRUST_CA, &["get", "tls/k"]),
            tls("tls-server-get-json", TRUST_CA, &["get", "tls/k", "-w", "json"]),
            tls("tls-server-endpoint-health", TRUST_CA, &["endpoint", "health"]),
            // A client certificate the server does not ask for is not sent.
            tls("tls-server-client-cert-unrequested", AS_CLIENT, &["get", "tls/k"]),
            tls("tls-server-skip-verify", SKIP_VERIFY, &["get", "tls/k"]),
            // The system roots do not know the suite's CA.
            refused_by_client("tls-server-unknown-authority", NO_FLAGS, &["get", "tls/k"]),
            plaintext("tls-server-plaintext", &["put", "tls/k", "v2"]),
            tls("tls-server-get-unchanged", TRUST_CA, &["get", "tls/k"]),
        ],
    },
    Group {
        name: "mutual TLS (--client-cert-auth --trusted-ca-file)",
        server_flags: MUTUAL_TLS,
        ready: AS_CLIENT,
        cases: &[
            tls("tls-mutual-put", AS_CLIENT, &["put", "tls/k", "v1"]),
            tls("tls-mutual-get", AS_CLIENT, &["get", "tls/k"]),
            tls("tls-mutual-endpoint-health", AS_CLIENT, &["endpoint", "health"]),
            // The server refuses these at the end of the TLS 1.3 handshake; etcdctl only sees the
            // connection closed (or a broken pipe: it races), so the outcome is compared, and
            // the last read shows nothing was written.
            tls("tls-mutual-no-cert-put", TRUST_CA, &["put", "tls/k", "v2"]),
            tls("tls-mutual-foreign-cert-put", AS_FOREIGN, &["put", "tls/k", "v2"]),
            plaintext("tls-mutual-plaintext", &["put", "tls/k", "v2"]),
            // Auth is off: a CN that names no user does not matter.
            tls("tls-mutual-any-cn", AS_STRANGER, &["get", "tls/k"]),
            tls("tls-mutual-get-unchanged", AS_CLIENT, &["get", "tls/k"]),
        ],
    },
    Group {
        name: "mutual TLS with CN users and auth on",
        server_flags: MUTUAL_TLS,
        ready: AS_ROOT,
        cases: &[
            tls("tls-cn-user-add-root", AS_ROOT, &["user", "add", "root", "--no-password"]),
            tls("tls-cn-role-add-root", AS_ROOT, &["role", "add", "root"]),
            tls("tls-cn-user-grant-root", AS_ROOT, &["user", "grant-role", "root", "root"]),
            tls("tls-cn-role-add-app", AS_ROOT, &["role", "add", "app"]),
            tls("tls-cn-role-grant-app", AS_ROOT, &["role", "grant-permission", "app", "readwrite", "app/", "--prefix"]),
            tls("tls-cn-user-add-alice", AS_ROOT, &["user", "add", "alice", "--no-password"]),
            tls("tls-cn-user-grant-alice", AS_ROOT, &["user", "grant-role", "alice", "app"]),
            tls("tls-cn-auth-enable", AS_ROOT, &["auth", "enable"]),
            // The verified certificate's CN is the user.
            tls("tls-cn-root-put", AS_ROOT, &["put", "secret", "s1"]),
            tls("tls-cn-root-get", AS_ROOT, &["get", "secret"]),
            tls("tls-cn-root-user-list", AS_ROOT, &["user", "list"]),
            tls("tls-cn-alice-put", AS_ALICE, &["put", "app/x", "1"]),
            tls("tls-cn-alice-get", AS_ALICE, &["get", "app/", "--prefix"]),
            tls("tls-cn-alice-put-denied", AS_ALICE, &["put", "secret", "s2"]),
            tls("tls-cn-alice-get-denied", AS_ALICE, &["get", "secret"]),
            tls("tls-cn-alice-get-all-denied", AS_ALICE, &["get", "", "--prefix"]),
            tls("tls-cn-alice-del-denied", AS_ALICE, &["del", "secret"]),
            tls("tls-cn-alice-user-list-denied", AS_ALICE, &["user", "list"]),
            tls("tls-cn-alice-auth-disable-denied", AS_ALICE, &["auth", "disable"]),
            tls("tls-cn-stranger-get", AS_STRANGER, &["get", "app/x"]),
            tls("tls-cn-stranger-put", AS_STRANGER, &["put", "app/x", "2"]),
            // A password login overrides the certificate.
            tls("tls-cn-alice-with-root-password", &[
                "--cacert={pki}/ca.pem", "--cert={pki}/alice.pem", "--key={pki}/alice-key.pem",
                "--user=root:nope",
            ], &["get", "secret"]),
            tls("tls-cn-auth-disable", AS_ROOT, &["auth", "disable"]),
            tls("tls-cn-alice-get-after-disable", AS_ALICE, &["get", "secret"]),
        ],
    },
    Group {
        name: "auto-TLS (--auto-tls)",
        server_flags: &["--auto-tls"],
        ready: SKIP_VERIFY,
        cases: &[
            tls("tls-auto-put", SKIP_VERIFY, &["put", "tls/k", "v1"]),
            tls("tls-auto-get", SKIP_VERIFY, &["get", "tls/k"]),
            tls("tls-auto-endpoint-health", SKIP_VERIFY, &["endpoint", "health"]),
            // A self-signed certificate no CA vouches for.
            refused_by_client("tls-auto-verify", NO_FLAGS, &["get", "tls/k"]),
            refused_by_client("tls-auto-verify-with-ca", TRUST_CA, &["get", "tls/k"]),
            plaintext("tls-auto-plaintext", &["get", "tls/k"]),
        ],
    },
    Group {
        name: "mutual TLS with a CRL (--client-crl-file)",
        server_flags: MUTUAL_TLS_CRL,
        ready: AS_CLIENT,
        cases: &[
            tls("tls-crl-put", AS_CLIENT, &["put", "tls/k", "v1"]),
            tls("tls-crl-get", AS_CLIENT, &["get", "tls/k"]),
            // Refused by the server, as in the mutual TLS group.
            tls("tls-crl-revoked-put", AS_REVOKED, &["put", "tls/k", "v2"]),
            tls("tls-crl-expired-put", AS_EXPIRED, &["put", "tls/k", "v2"]),
            tls("tls-crl-get-unchanged", AS_CLIENT, &["get", "tls/k"]),
        ],
    },
];

/// The run's certificates, as files in a temp dir removed on drop.
pub struct Pki {
    dir: TempDir,
}

/// Serial of the certificate `crl.pem` revokes.
const REVOKED_SERIAL: u64 = 99;

impl Pki {
    /// Generates every file the groups name.
    pub fn generate() -> Result<Pki> {
        let dir = tempfile::Builder::new().prefix("keel-compat-pki-").tempdir().context("creating the PKI dir")?;
        let pki = Pki { dir };
        let ca = Authority::new("keel compat ca")?;
        pki.write("ca.pem", &ca.cert.pem())?;
        let now = OffsetDateTime::now_utc();
        let valid = (now - Duration::days(1), now + Duration::days(30));
        let mut serial = 10;
        for cn in ["server", "client", "root", "alice", "stranger"] {
            serial += 1;
            pki.issue(&ca, cn, cn, serial, valid)?;
        }
        pki.issue(&ca, "expired", "client", 50, (now - Duration::days(30), now - Duration::days(1)))?;
        pki.issue(&ca, "revoked", "client", REVOKED_SERIAL, valid)?;
        let other = Authority::new("another ca")?;
        pki.issue(&other, "foreign", "client", 12, valid)?;
        pki.write("crl.pem", &ca.crl(&[REVOKED_SERIAL], now)?)?;
        Ok(pki)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, pem: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `<file>.pem` and `<file>-key.pem`: a certificate for `cn`, valid for localhost and
    /// 127.0.0.1 (to serve, and as a client), between `not_before` and `not_after`.
    fn issue(
        &self,
        ca: &Authority,
        file: &str,
        cn: &str,
        serial: u64,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Result<()> {
        let mut params = CertificateParams::default();
        params.serial_number = Some(serial.into());
        params.distinguished_name = common_name(cn);
        params.subject_alt_names =
            vec![SanType::DnsName("localhost".try_into()?), SanType::IpAddress([127, 0, 0, 1].into())];
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
        self.write(&format!("{file}.pem"), &cert.pem())?;
        self.write(&format!("{file}-key.pem"), &key.serialize_pem())?;
        Ok(())
    }
}

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(cn: &str) -> Result<Authority> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert, key })
    }

    /// A CRL revoking `serials`, PEM.
    fn crl(&self, serials: &[u64], now: OffsetDateTime) -> Result<String> {
        let params = CertificateRevocationListParams {
            this_update: now - Duration::days(1),
            next_update: now + Duration::days(30),
            crl_number: 1.into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: serial.into(),
                    revocation_time: now - Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.cert, &self.key)?.pem()?)
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}
