//! The one TLS configuration of Keel, shared by the client listeners, the
//! peer listeners and the clients that dial peers (and `keel-client`): etcd's
//! TLS flags on rustls with the `ring` provider.
//!
//! - [`ServerTls`]: a server configuration from etcd's options
//!   ([`ServerTlsOptions`]: cert, key, trusted CA, client-cert-auth, CRL,
//!   allowed CNs and hostnames, whether a client certificate must be valid
//!   for the address it connects from, versions and cipher suites).
//! - [`ClientTls`]: the dialling side ([`ClientTlsOptions`]: CA, optional
//!   client cert and key, insecure-skip-verify, versions and suites), and
//!   [`Connector`], the TCP + TLS connector tonic's `Endpoint` dials with.
//! - [`Incoming`]: accepted connections for tonic's
//!   `serve_with_incoming_shutdown`, plain, TLS, or both on one port (etcd
//!   allows `http://` and `https://` URLs on one address); every [`Conn`]
//!   carries a [`ConnectInfo`] with the client's verified certificate, which
//!   handlers and interceptors read with [`connect_info`] or
//!   [`peer_common_name`].
//! - [`self_signed`]: `--auto-tls` and `--peer-auto-tls` certificates.
//!
//! Invariants: a file that cannot be read or parsed fails the build of a
//! configuration with an error naming the file; once built, the files are
//! watched (their size and modification time, at most once a second, when a
//! connection is accepted or dialled) and a changed set is loaded into a new
//! configuration, so certificates rotate without a restart; a reload that
//! fails keeps the configuration in force and logs a warning.

mod auto;
mod client;
mod coalesce;
mod error;
mod files;
mod incoming;
mod protocol;
mod reload;
mod san;
mod server;
mod stream;
mod x509;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use auto::self_signed;
pub use client::{ClientConn, ClientTls, ClientTlsOptions, Connector};
pub use error::TlsError;
pub use incoming::{connect_info, peer_common_name, Conn, ConnectInfo, Incoming};
pub use protocol::{ProtocolOptions, TlsVersion};
pub use server::{ServerTls, ServerTlsOptions};
pub use x509::common_name;

/// The certificate types of the API, re-exported so callers need no
/// `rustls` dependency of their own.
pub use rustls::pki_types::CertificateDer;
