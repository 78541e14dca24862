//! etcd's check of a client certificate against the address it connects
//! from (`client/pkg/transport/listener_tls.go`: `checkSAN`,
//! `checkCertSAN`, `isHostInDNS`), made after the handshake on listeners
//! that ask for it (etcd's peer listeners, unless
//! `--peer-skip-client-san-verification`).
//!
//! - No IP and no DNS SANs: accepted.
//! - IP SANs: the remote IP must be one of them; if it is not and the
//!   certificate has no DNS SANs, refused.
//! - DNS SANs (none of the IP SANs matched, or there are none): one of the
//!   names must resolve to the remote IP. Resolution runs on tokio's
//!   resolver (`lookup_host`, a blocking-pool thread, never a runtime one)
//!   within [`LOOKUP_TIMEOUT`]; names are only looked up when the IP SANs
//!   did not already decide.
//!
//! etcd also tries a reverse (PTR) lookup of the remote IP first, which is
//! the only way its wildcard DNS SANs (`*.example.com`) can match; Keel does
//! forward lookups only, so a wildcard name never matches here.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use crate::x509;

/// How long the DNS SANs' lookups may take, together; past it the
/// connection is refused.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// `Ok` when a certificate whose leaf is `leaf` may connect from `remote`;
/// otherwise why not, in etcd's words.
pub(crate) async fn check(leaf: &[u8], remote: IpAddr) -> Result<(), String> {
    let Some(names) = x509::alt_names(leaf) else {
        return Err("tls: cannot read the client certificate's subject alternative names".into());
    };
    check_names(&names, remote, LOOKUP_TIMEOUT).await
}

pub(crate) async fn check_names(names: &x509::AltNames, remote: IpAddr, timeout: Duration) -> Result<(), String> {
    if names.ips.is_empty() && names.dns.is_empty() {
        return Ok(());
    }
    // Go's net.IP.Equal: an IPv4 address equals its IPv4-mapped IPv6 form
    // (a dual-stack listener sees IPv4 clients so).
    let host = remote.to_canonical();
    if !names.ips.is_empty() {
        if names.ips.iter().any(|ip| ip.to_canonical() == host) {
            return Ok(());
        }
        if names.dns.is_empty() {
            let valid = names.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(format!("x509: certificate is valid for {valid}, not {host}"));
        }
    }
    let lookups = async {
        let mut last_error = None;
        // etcd looks wildcards up only in the reverse lookup's answers.
        for name in names.dns.iter().filter(|name| !name.starts_with("*.")) {
            match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(mut addrs) => {
                    if addrs.any(|addr| addr.ip().to_canonical() == host) {
                        return Ok(());
                    }
                }
                Err(err) => last_error = Some(format!("lookup {name}: {err}")),
            }
        }
        Err(last_error)
    };
    let last_error = match tokio::time::timeout(timeout, lookups).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(last_error)) => last_error,
        Err(_) => Some(format!("lookups timed out after {timeout:?}")),
    };
    // Go's %q of the host and of the names.
    let mut message = format!("tls: {:?} does not match any of DNSNames [", host.to_string());
    for (i, name) in names.dns.iter().enumerate() {
        let _ = write!(message, "{}{name:?}", if i == 0 { "" } else { " " });
    }
    message.push(']');
    if let Some(err) = last_error {
        let _ = write!(message, " ({err})");
    }
    Err(message)
}
