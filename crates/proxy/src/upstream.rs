//! The cluster as the proxy sees it: its endpoints, one lazily connected
//! channel each, and the one in use.
//!
//! Like etcd's clients the proxy talks to one member at a time (a watch and
//! the keep-alives of a lease must not be spread over members with different
//! progress); a call that finds the member unreachable moves everyone on to
//! the next. Channels are lazy, so a member that comes back is dialled again
//! by the next call that picks it, with no reconnect loop of our own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{LeaseRevokeRequest, Member, MemberListRequest, StatusRequest};
use keel_tls::{ClientTls, ClientTlsOptions, Connector, ProtocolOptions};
use parking_lot::RwLock;
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
/// How long one member-list or status call made by the proxy itself may
/// take.
const OWN_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The gRPC metadata key naming the member a Maintenance call is for: a
/// member name or its hex id. Without it the call goes to the leader.
pub(crate) const MEMBER_KEY: &str = "keel-member";

pub(crate) struct Upstream {
    /// Lock order: `endpoints` alone; never held across an await.
    endpoints: RwLock<Arc<Endpoints>>,
    current: AtomicUsize,
    connector: Connector,
    /// Whether `https://` members can be dialled (TLS was configured).
    tls: bool,
    /// Woken when an endpoint fails: the member-list sync runs at once.
    pub(crate) failures: tokio::sync::Notify,
}

/// The endpoints in use, each with its lazily connected channel.
struct Endpoints {
    urls: Vec<String>,
    channels: HashMap<String, Channel>,
}

/// One pick: which endpoint, so a failure is reported against it.
#[derive(Clone)]
pub(crate) struct Picked {
    pub(crate) index: usize,
    pub(crate) url: String,
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
        let upstream = Upstream {
            tls: client_tls.is_some(),
            connector: Connector::new(client_tls),
            endpoints: RwLock::new(Arc::new(Endpoints { urls: Vec::new(), channels: HashMap::new() })),
            current: AtomicUsize::new(0),
            failures: tokio::sync::Notify::new(),
        };
        let mut channels = HashMap::new();
        for url in &urls {
            channels.insert(url.clone(), upstream.dial(url)?);
        }
        *upstream.endpoints.write() = Arc::new(Endpoints { urls, channels });
        Ok(upstream)
    }

    fn dial(&self, url: &str) -> Result<Channel, ProxyError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| ProxyError::InvalidEndpoint { endpoint: url.to_owned(), reason: e.to_string() })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(false);
        Ok(endpoint.connect_with_connector_lazy(self.connector.clone()))
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.read().urls.len()
    }

    pub(crate) fn pick(&self) -> Picked {
        let endpoints = self.endpoints.read().clone();
        let index = self.current.load(Ordering::Acquire) % endpoints.urls.len();
        let url = endpoints.urls[index].clone();
        Picked { index, channel: endpoints.channels[&url].clone(), url }
    }

    /// Moves on from `picked`'s endpoint, unless someone already did: many
    /// calls failing on one dead member move the pointer once.
    pub(crate) fn failed(&self, picked: &Picked) {
        let urls = self.endpoints.read().urls.clone();
        let next = (picked.index + 1) % urls.len();
        let still_there = urls.get(picked.index) == Some(&picked.url);
        if still_there && self.current.compare_exchange(picked.index, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            tracing::info!(failed = %picked.url, next = %urls[next], "upstream endpoint unavailable");
        }
        self.failures.notify_one();
    }

    /// Replaces the endpoints with `urls` (client URLs from the member
    /// list), keeping the channels of those already known and the one in
    /// use if it is still listed. Unusable URLs (`https://` without TLS
    /// configured, malformed ones) are left out; an empty result changes
    /// nothing. Returns whether the list changed.
    pub(crate) fn set_endpoints(&self, urls: &[String]) -> bool {
        let mut wanted: Vec<String> = Vec::new();
        for url in urls {
            match normalize(url, false) {
                Ok(url) if url.starts_with("https://") && !self.tls => {
                    tracing::debug!(%url, "member URL needs TLS, which is not configured; skipped");
                }
                Ok(url) if !wanted.contains(&url) => wanted.push(url),
                Ok(_) => {}
                Err(err) => tracing::debug!(%err, "member URL skipped"),
            }
        }
        let old = self.endpoints.read().clone();
        let same_set = wanted.len() == old.urls.len() && wanted.iter().all(|url| old.urls.contains(url));
        if wanted.is_empty() || same_set {
            return false;
        }
        let mut channels = HashMap::new();
        for url in &wanted {
            let channel = match old.channels.get(url) {
                Some(channel) => channel.clone(),
                None => match self.dial(url) {
                    Ok(channel) => channel,
                    Err(err) => {
                        tracing::warn!(%err, "member URL skipped");
                        continue;
                    }
                },
            };
            channels.insert(url.clone(), channel);
        }
        wanted.retain(|url| channels.contains_key(url));
        if wanted.is_empty() {
            return false;
        }
        let current = old.urls.get(self.current.load(Ordering::Acquire) % old.urls.len().max(1));
        let index = current.and_then(|url| wanted.iter().position(|w| w == url)).unwrap_or(0);
        tracing::info!(endpoints = ?wanted, "upstream endpoints synced from the member list");
        *self.endpoints.write() = Arc::new(Endpoints { urls: wanted, channels });
        self.current.store(index, Ordering::Release);
        true
    }

    /// The cluster's members, asked of the endpoints in turn.
    pub(crate) async fn members(&self) -> Result<Vec<Member>, Status> {
        let response = self
            .unary(Request::new(MemberListRequest { linearizable: false }), true, |channel, request| async move {
                tokio::time::timeout(OWN_CALL_TIMEOUT, ClusterClient::new(channel).member_list(request))
                    .await
                    .unwrap_or_else(|_| Err(Status::unavailable("member list timed out")))
            })
            .await?;
        Ok(response.into_inner().members)
    }

    /// Asks the member list and makes its voting members' client URLs the
    /// endpoints. Learners are left out: they refuse most calls. While a
    /// voting member has published no client URL yet (just started, or
    /// added and not started), the current endpoints are kept beside the
    /// listed ones: one of them may be that member's.
    pub(crate) async fn sync(&self) -> Result<bool, Status> {
        let members = self.members().await?;
        let voters = || members.iter().filter(|m| !m.is_learner);
        let mut urls: Vec<String> = voters().flat_map(|m| m.client_ur_ls.iter().cloned()).collect();
        if voters().any(|m| m.client_ur_ls.is_empty()) {
            urls.extend(self.endpoints.read().urls.iter().cloned());
        }
        Ok(self.set_endpoints(&urls))
    }

    /// The member a Maintenance call is for: the one `metadata` names
    /// under [`MEMBER_KEY`] (name or hex id), else the leader (found by a
    /// Status call and the member list). Returns its channel.
    pub(crate) async fn member_channel(&self, metadata: &MetadataMap) -> Result<Channel, Status> {
        let wanted = match metadata.get(MEMBER_KEY) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| Status::invalid_argument(format!("keel-proxy: {MEMBER_KEY} is not text")))?
                    .to_owned(),
            ),
            None => None,
        };
        let members = self.members().await?;
        let member = match &wanted {
            Some(wanted) => members.iter().find(|m| names_member(m, wanted)).ok_or_else(|| {
                Status::not_found(format!("keel-proxy: no member named {wanted:?} (a name or a hex id)"))
            })?,
            None => {
                let status = self
                    .unary(Request::new(StatusRequest {}), true, |channel, request| async move {
                        tokio::time::timeout(OWN_CALL_TIMEOUT, MaintenanceClient::new(channel).status(request))
                            .await
                            .unwrap_or_else(|_| Err(Status::unavailable("status timed out")))
                    })
                    .await?
                    .into_inner();
                if status.leader == 0 {
                    return Err(Status::unavailable("etcdserver: no leader"));
                }
                members
                    .iter()
                    .find(|m| m.id == status.leader)
                    .ok_or_else(|| Status::unavailable("etcdserver: leader changed"))?
            }
        };
        let url = member.client_ur_ls.first().ok_or_else(|| {
            Status::unavailable(format!("keel-proxy: member {:x} has not started (no client URL)", member.id))
        })?;
        let url = normalize(url, false).map_err(|err| Status::unavailable(err.to_string()))?;
        let known = self.endpoints.read().channels.get(&url).cloned();
        match known {
            Some(channel) => Ok(channel),
            // A member not among the endpoints (not synced yet): a
            // channel of its own, dropped after the call.
            None => self.dial(&url).map_err(|err| Status::unavailable(err.to_string())),
        }
    }

    /// Revokes the proxy's own lease held in `lease` (best effort, bounded
    /// to a second) and clears it: what it kept alive leaves with the proxy.
    pub(crate) async fn revoke_lease(&self, lease: &AtomicI64) {
        let lease = lease.swap(0, Ordering::AcqRel);
        if lease == 0 {
            return;
        }
        let revoke = self.unary(Request::new(LeaseRevokeRequest { id: lease }), true, |channel, request| async move {
            LeaseClient::new(channel).lease_revoke(request).await
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), revoke).await;
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

/// Whether `wanted` is `member`'s name or its id in hex (as etcdctl prints
/// ids), with or without `0x`.
pub(crate) fn names_member(member: &Member, wanted: &str) -> bool {
    if wanted.is_empty() {
        return false;
    }
    let hex = wanted.strip_prefix("0x").unwrap_or(wanted);
    member.name == wanted || u64::from_str_radix(hex, 16).is_ok_and(|id| id == member.id)
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
            KeyAndValueRef::Ascii(key, value) if !HOP_HEADERS.contains(&key.as_str()) && key != MEMBER_KEY => {
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
        assert_eq!(upstream.pick().url, "http://b:2");
    }

    #[tokio::test]
    async fn member_lists_replace_the_endpoints_and_keep_the_current_one() {
        let upstream = Upstream::new(&["a:1".to_owned(), "b:2".to_owned()], &UpstreamTls::default()).unwrap();
        upstream.failed(&upstream.pick());
        assert_eq!(upstream.pick().url, "http://b:2");
        let synced = ["http://c:3".to_owned(), "http://b:2".to_owned(), "https://d:4".to_owned()];
        assert!(upstream.set_endpoints(&synced));
        // https:// needs TLS, which this proxy has not: left out.
        assert_eq!(upstream.endpoints.read().urls, ["http://c:3", "http://b:2"]);
        assert_eq!(upstream.pick().url, "http://b:2", "the endpoint in use stays in use");
        assert!(!upstream.set_endpoints(&synced), "unchanged");
        let reordered = ["http://b:2".to_owned(), "http://c:3".to_owned()];
        assert!(!upstream.set_endpoints(&reordered), "the same endpoints in another order change nothing");
        assert!(!upstream.set_endpoints(&[]), "an empty list changes nothing");
        assert_eq!(upstream.len(), 2);
    }

    #[test]
    fn members_are_named_by_name_or_hex_id() {
        let member = Member { id: 0x8e9e05c52164694d, name: "m0".to_owned(), ..Default::default() };
        assert!(names_member(&member, "m0"));
        assert!(names_member(&member, "8e9e05c52164694d"));
        assert!(names_member(&member, "8E9E05C52164694D"));
        assert!(names_member(&member, "0x8e9e05c52164694d"));
        assert!(!names_member(&member, "m1"));
        assert!(!names_member(&Member { id: 1, name: String::new(), ..Default::default() }, ""));
    }
}
