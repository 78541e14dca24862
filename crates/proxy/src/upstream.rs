//! The cluster as the proxy sees it: its endpoints, one lazily connected
//! channel each, and the one in use.
//!
//! Like etcd's clients the proxy talks to one member at a time (a watch and
//! the keep-alives of a lease must not be spread over members with different
//! progress); a call that finds the member unreachable moves everyone on to
//! the next. Channels are lazy, so a member that comes back is dialled again
//! by the next call that picks it, with no reconnect loop of our own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_tls::{ClientTls, ClientTlsOptions, Connector, ProtocolOptions};
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::config::UpstreamTls;
use crate::error::ProxyError;

/// How long one dial may take: past it the call fails over (or, with no
/// member left, the client gets Unavailable) instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on open streams, so a member that vanished (power loss, a
/// partition) is noticed under a watch without waiting for TCP. Above
/// etcd's 5 s `--grpc-keepalive-min-time`, which would refuse faster ones.
const PING_INTERVAL: Duration = Duration::from_secs(6);
const PING_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Upstream {
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

/// One pick: which endpoint, so a failure is reported against it.
#[derive(Clone)]
pub(crate) struct Picked {
    pub(crate) index: usize,
    pub(crate) channel: Channel,
}

impl Upstream {
    /// Must be called on a tokio runtime (lazy channels spawn their worker).
    pub(crate) fn new(endpoints: &[String], tls: &UpstreamTls) -> Result<Upstream, ProxyError> {
        let secure = tls.is_set();
        let urls = endpoints.iter().map(|e| normalize(e, secure)).collect::<Result<Vec<_>, _>>()?;
        let client_tls = if secure || urls.iter().any(|url| url.starts_with("https://")) {
            Some(ClientTls::new(ClientTlsOptions {
                trusted_ca_file: tls.ca_file.clone(),
                cert_file: tls.cert_file.clone(),
                key_file: tls.key_file.clone(),
                insecure_skip_verify: tls.insecure_skip_verify,
                protocol: ProtocolOptions::default(),
            })?)
        } else {
            None
        };
        let connector = Connector::new(client_tls);
        let channels = urls
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| ProxyError::InvalidEndpoint { endpoint: url.clone(), reason: e.to_string() })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(PING_INTERVAL)
                    .keep_alive_timeout(PING_TIMEOUT)
                    .keep_alive_while_idle(false);
                Ok(endpoint.connect_with_connector_lazy(connector.clone()))
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        Ok(Upstream { urls, channels, current: AtomicUsize::new(0) })
    }

    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn url(&self, index: usize) -> &str {
        &self.urls[index]
    }

    pub(crate) fn pick(&self) -> Picked {
        let index = self.current.load(Ordering::Acquire) % self.channels.len();
        Picked { index, channel: self.channels[index].clone() }
    }

    /// Moves on from `picked`'s endpoint, unless someone already did: many
    /// calls failing on one dead member move the pointer once.
    pub(crate) fn failed(&self, picked: &Picked) {
        let next = (picked.index + 1) % self.channels.len();
        if self.current.compare_exchange(picked.index, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::info!(failed = %self.urls[picked.index], next = %self.urls[next], "upstream endpoint unavailable");
        }
    }

    /// Runs one unary call with the client's metadata (its auth token
    /// above all), trying each endpoint at most once while the failure is
    /// the endpoint's. `idempotent`: a call with no effect, repeated after
    /// any endpoint failure; others only when they certainly never left.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        idempotent: bool,
        mut call: F,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Req: Clone,
        F: FnMut(Channel, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let metadata = forwarded(request.metadata());
        let message = request.into_inner();
        let mut last = None;
        for _ in 0..self.len() {
            let picked = self.pick();
            let mut outgoing = Request::new(message.clone());
            *outgoing.metadata_mut() = metadata.clone();
            match call(picked.channel.clone(), outgoing).await {
                Ok(response) => return Ok(tonic::Response::new(response.into_inner())),
                Err(status) if endpoint_failed(&status) => {
                    self.failed(&picked);
                    let retry = idempotent || certainly_not_sent(&status);
                    let status = as_unavailable(status);
                    if !retry {
                        return Err(status);
                    }
                    last = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no upstream endpoint")))
    }
}

/// `host:port` becomes `http://host:port` (`https://` with TLS flags, as
/// etcd's clientv3 dials).
pub(crate) fn normalize(endpoint: &str, tls: bool) -> Result<String, ProxyError> {
    let invalid = |reason: &str| ProxyError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.into() };
    let trimmed = endpoint.trim().trim_end_matches('/');
    let (scheme, authority) = match trimmed.split_once("://") {
        None => (if tls { "https" } else { "http" }, trimmed),
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
        Some(_) => return Err(invalid("only http:// and https:// upstream endpoints are supported")),
    };
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected host:port"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// Headers that belong to one hop of HTTP/2 or gRPC, not to the caller.
const HOP_HEADERS: &[&str] =
    &["te", "content-type", "user-agent", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "content-length"];

/// The caller's metadata to send upstream: its token (`token`,
/// `authorization`), etcd's `hasleader`, and whatever else it set.
pub(crate) fn forwarded(incoming: &MetadataMap) -> MetadataMap {
    let mut out = MetadataMap::new();
    for entry in incoming.iter() {
        match entry {
            KeyAndValueRef::Ascii(key, value) if !HOP_HEADERS.contains(&key.as_str()) => {
                out.append(key.clone(), value.clone());
            }
            KeyAndValueRef::Binary(key, value) => {
                out.append_bin(key.clone(), value.clone());
            }
            KeyAndValueRef::Ascii(..) => {}
        }
    }
    out
}

/// The endpoint failed rather than the request: the server said
/// Unavailable, or tonic made the status out of a transport failure
/// (statuses a server sends carry no source error).
pub(crate) fn endpoint_failed(status: &Status) -> bool {
    status.code() == Code::Unavailable || std::error::Error::source(status).is_some()
}

/// The request never left this process: the channel could not connect.
pub(crate) fn certainly_not_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A local transport failure reaches the client as etcd's clients see an
/// unreachable cluster: Unavailable.
pub(crate) fn as_unavailable(status: Status) -> Status {
    if status.code() == Code::Unavailable {
        status
    } else {
        Status::unavailable(status.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(normalize("127.0.0.1:2379", false).unwrap(), "http://127.0.0.1:2379");
        assert_eq!(normalize("127.0.0.1:2379", true).unwrap(), "https://127.0.0.1:2379");
        assert_eq!(normalize("http://h:1/", true).unwrap(), "http://h:1");
        assert!(normalize("unix:///tmp/s", false).is_err());
        assert!(normalize("h:1/v3", false).is_err());
    }

    #[test]
    fn tokens_travel_and_hop_headers_do_not() {
        let mut incoming = MetadataMap::new();
        incoming.insert("token", "abc.1".parse().unwrap());
        incoming.insert("hasleader", "true".parse().unwrap());
        incoming.insert("te", "trailers".parse().unwrap());
        incoming.insert("grpc-timeout", "5S".parse().unwrap());
        let out = forwarded(&incoming);
        assert_eq!(out.get("token").unwrap(), "abc.1");
        assert_eq!(out.get("hasleader").unwrap(), "true");
        assert!(out.get("te").is_none() && out.get("grpc-timeout").is_none());
    }

    #[test]
    fn transport_failures_fail_the_endpoint_and_server_errors_do_not() {
        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))));
        assert!(endpoint_failed(&refused) && certainly_not_sent(&refused));
        let leader_changed = Status::unavailable("etcdserver: leader changed");
        assert!(endpoint_failed(&leader_changed) && !certainly_not_sent(&leader_changed));
        assert!(!endpoint_failed(&Status::invalid_argument("etcdserver: key is not provided")));
        assert_eq!(as_unavailable(Status::unknown("h2 protocol error")).code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn failure_moves_every_caller_once() {
        let upstream =
            Upstream::new(&["a:1".to_owned(), "b:2".to_owned(), "c:3".to_owned()], &UpstreamTls::default()).unwrap();
        let first = upstream.pick();
        upstream.failed(&first);
        upstream.failed(&first);
        assert_eq!(upstream.pick().index, 1);
        assert_eq!(upstream.url(1), "http://b:2");
    }
}
