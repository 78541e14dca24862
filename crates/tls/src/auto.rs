//! `--auto-tls` and `--peer-auto-tls`: a self-signed certificate made at
//! start, as etcd's `transport.SelfCert`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};

use crate::TlsError;

/// Writes `cert.pem` and `key.pem` into `dir` (etcd uses
/// `<data-dir>/fixtures/client` and `<data-dir>/fixtures/peer`): an ECDSA
/// P-256 key and a certificate of organization "etcd", valid from now for
/// `validity_years` years, for `hosts` (IP addresses or DNS names, as in
/// the listen URLs), good for serving and for client authentication. As
/// etcd, a pair already there is kept. Returns (cert, key). Blocking.
pub fn self_signed(dir: &Path, hosts: &[String], validity_years: u32) -> Result<(PathBuf, PathBuf), TlsError> {
    let failed = |reason: String| TlsError::SelfSigned { dir: dir.to_owned(), reason };
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    create_private_dir(dir).map_err(|e| failed(e.to_string()))?;

    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "etcd");
    params.distinguished_name = name;
    for host in hosts.iter().filter(|host| !host.is_empty()) {
        let san = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into().map_err(|e| failed(format!("host {host:?}: {e}")))?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365 * i64::from(validity_years.max(1)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];

    let key = KeyPair::generate().map_err(|e| failed(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| failed(e.to_string()))?;
    write_private(&key_path, key.serialize_pem().as_bytes())
        .map_err(|e| failed(format!("{}: {e}", key_path.display())))?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| failed(format!("{}: {e}", cert_path.display())))?;
    tracing::info!(cert = %cert_path.display(), ?hosts, "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}
