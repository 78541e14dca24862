//! Accepted connections for tonic: plain, TLS, or both on one port.
//!
//! With TLS, one task (owned by the [`Incoming`]: dropping it stops the
//! task and every handshake in flight) accepts connections and runs each
//! handshake in a task of its own, bounded by [`HANDSHAKE_TIMEOUT`] and
//! [`MAX_HANDSHAKES`], so a slow or silent client never holds up the next
//! one. Finished connections wait in a bounded channel for tonic. A failed
//! handshake is logged and dropped; it never ends the server.
//!
//! Unless the [`ServerTls`] skips it, a client certificate is then checked
//! against the address the connection comes from, as etcd's TLS listener
//! does (see the `san` module); a connection that fails the check is logged
//! ("rejected connection") and closed, within the same time bound.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::server::Connected;

use crate::coalesce::Coalesced;
use crate::stream::PlainOrTls;
use crate::ServerTls;

/// How long a client has to finish its TLS handshake (or, on a port serving
/// both, to send its first byte).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at most; connections beyond are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;
/// Connections ready for tonic, at most, before handshakes wait.
const READY_CONNECTIONS: usize = 64;
/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// What tonic puts in each request's extensions (`request.extensions()`):
/// who is on the other end of the connection.
#[derive(Clone, Debug, Default)]
pub struct ConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub secure: bool,
    /// The client's certificate chain, leaf first, as verified against the
    /// trusted CA in the handshake. Only present when the server asked for
    /// one (`--client-cert-auth`).
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// The verified leaf certificate's subject CN: etcd's user name from
    /// a client certificate.
    pub common_name: Option<String>,
}

/// The connection's [`ConnectInfo`], in a handler or an interceptor
/// (`tonic::Request<()>` there). `None` on connections this crate did not
/// accept (in-process tests with tonic's own incoming).
pub fn connect_info<T>(request: &tonic::Request<T>) -> Option<&ConnectInfo> {
    request.extensions().get::<ConnectInfo>()
}

/// The subject CN of the client certificate verified when the request's
/// connection was accepted, as etcd takes a user name from it with
/// `--client-cert-auth`. `None` without TLS, without a client certificate,
/// or when the certificate has no CN.
///
/// In an interceptor (tonic copies the connection's extensions into
/// every request, `Request<()>` included):
///
/// ```
/// fn user_from_certificate(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
///     if let Some(user) = keel_tls::peer_common_name(&request) {
///         tracing::debug!(%user, "client certificate");
///     }
///     Ok(request)
/// }
/// # let _ = user_from_certificate(tonic::Request::new(()));
/// ```
pub fn peer_common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    connect_info(request)?.common_name.clone()
}

/// One accepted connection. Its writes are gathered per turn of the
/// runtime (see the `coalesce` module): a batch of responses leaves in one
/// write.
#[derive(Debug)]
pub struct Conn {
    io: Coalesced<Io>,
    info: ConnectInfo,
}

type Io = PlainOrTls<tokio_rustls::server::TlsStream<TcpStream>>;

impl Conn {
    fn plain(stream: TcpStream, remote: Option<SocketAddr>) -> Conn {
        let info = ConnectInfo { remote_addr: remote, local_addr: stream.local_addr().ok(), ..ConnectInfo::default() };
        Conn { io: Coalesced::new(PlainOrTls::Plain(stream)), info }
    }

    fn tls(stream: tokio_rustls::server::TlsStream<TcpStream>, remote: Option<SocketAddr>) -> Conn {
        let (tcp, session) = stream.get_ref();
        let chain: Option<Arc<[CertificateDer<'static>]>> =
            session.peer_certificates().map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect());
        let common_name = chain.as_ref().and_then(|chain| chain.first()).and_then(|leaf| crate::common_name(leaf));
        let info = ConnectInfo {
            remote_addr: remote,
            local_addr: tcp.local_addr().ok(),
            secure: true,
            peer_certificates: chain,
            common_name,
        };
        Conn { io: Coalesced::new(PlainOrTls::Tls(Box::new(stream))), info }
    }

    pub fn info(&self) -> &ConnectInfo {
        &self.info
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnectInfo;

    fn connect_info(&self) -> ConnectInfo {
        self.info.clone()
    }
}

/// A listener's accepted connections, as tonic's
/// `serve_with_incoming_shutdown` takes them. TCP_NODELAY is set on every
/// one: small gRPC responses must leave at once.
pub struct Incoming {
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Secured { ready: mpsc::Receiver<Conn>, accept: tokio::task::JoinHandle<()> },
}

impl From<TcpListener> for Incoming {
    fn from(listener: TcpListener) -> Incoming {
        Incoming::plain(listener)
    }
}

impl Incoming {
    /// Plain connections only (an `http://` URL).
    pub fn plain(listener: TcpListener) -> Incoming {
        Incoming { inner: Inner::Plain(listener) }
    }

    /// TLS connections only (an `https://` URL); others fail their
    /// handshake. Must be called on a tokio runtime.
    pub fn tls(listener: TcpListener, tls: ServerTls) -> Incoming {
        Incoming::secured(listener, tls, false)
    }

    /// Both on one port (`http://` and `https://` URLs for one address): a
    /// connection whose first byte starts a TLS handshake gets TLS, any
    /// other is served plain. Must be called on a tokio runtime.
    pub fn tls_and_plain(listener: TcpListener, tls: ServerTls) -> Incoming {
        Incoming::secured(listener, tls, true)
    }

    fn secured(listener: TcpListener, tls: ServerTls, plain_too: bool) -> Incoming {
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        let accept = tokio::spawn(accept_loop(listener, tls, plain_too, tx));
        Incoming { inner: Inner::Secured { ready, accept } }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Inner::Secured { accept, .. } = &self.inner {
            accept.abort();
        }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().inner {
            Inner::Plain(listener) => match listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, remote))) => {
                    // Best effort, as tonic's own TcpIncoming.
                    let _ = stream.set_nodelay(true);
                    Poll::Ready(Some(Ok(Conn::plain(stream, Some(remote)))))
                }
                Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
                Poll::Pending => Poll::Pending,
            },
            Inner::Secured { ready, .. } => ready.poll_recv(cx).map(|conn| conn.map(Ok)),
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: ServerTls, plain_too: bool, ready: mpsc::Sender<Conn>) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: pause
                        // rather than spin, and keep serving.
                        tracing::warn!(%err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if handshakes.len() >= MAX_HANDSHAKES {
                    tracing::warn!(%remote, "too many TLS handshakes in flight; connection closed");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let (tls, ready) = (tls.clone(), ready.clone());
                handshakes.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, establish(stream, remote, &tls, plain_too)).await {
                        Ok(Ok(conn)) => {
                            let _ = ready.send(conn).await;
                        }
                        Ok(Err(Refused::Handshake(err))) => tracing::info!(%remote, %err, "TLS handshake failed"),
                        Ok(Err(Refused::Address(err))) => {
                            tracing::warn!(%remote, %err, "rejected connection: client certificate not valid for its address");
                        }
                        Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                    }
                });
            }
            () = ready.closed() => return,
        }
    }
}

/// Why an accepted connection is not served.
enum Refused {
    Handshake(io::Error),
    /// The client certificate is not valid for the address it came from.
    Address(String),
}

impl From<io::Error> for Refused {
    fn from(err: io::Error) -> Refused {
        Refused::Handshake(err)
    }
}

async fn establish(stream: TcpStream, remote: SocketAddr, tls: &ServerTls, plain_too: bool) -> Result<Conn, Refused> {
    if plain_too {
        let mut first = [0u8; 1];
        let read = stream.peek(&mut first).await?;
        if read == 0 || first[0] != TLS_HANDSHAKE {
            return Ok(Conn::plain(stream, Some(remote)));
        }
    }
    let mut stream = tokio_rustls::TlsAcceptor::from(tls.config()).accept(stream).await?;
    // etcd's checkSAN: the leaf the client presented (if it was asked for
    // one) against the address of the accepted socket.
    if tls.verifies_client_san() {
        if let Some(leaf) = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
            if let Err(reason) = crate::san::check(leaf, remote.ip()).await {
                // As Go's tls.Conn.Close after a handshake: close_notify, then close.
                let _ = stream.shutdown().await;
                return Err(Refused::Address(reason));
            }
        }
    }
    Ok(Conn::tls(stream, Some(remote)))
}

crate::coalesce::delegate_to_io!(Conn);
