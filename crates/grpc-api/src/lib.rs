//! etcd v3 gRPC services over a [`keel_node::Member`], served with tonic.
//!
//! Handlers are thin: check the request as etcd does ([`validate`]), call the
//! member, and turn its errors into etcd's statuses ([`errors`], the only
//! place that knows etcd's codes and messages).

mod auth;
mod cluster;
mod dispatch;
mod election;
mod errors;
pub use errors::node_error;
#[cfg(test)]
mod fuzz;
mod kv;
mod lease;
mod lock;
mod maintenance;
pub mod metrics;

mod identity;
mod recipes;
mod validate;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_node::Member;
use keel_proto::etcdserverpb::auth_server::AuthServer;
use keel_proto::etcdserverpb::cluster_server::ClusterServer;
use keel_proto::etcdserverpb::kv_server::KvServer;
use keel_proto::etcdserverpb::lease_server::LeaseServer;
use keel_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use keel_proto::etcdserverpb::watch_server::WatchServer;
use keel_proto::v3electionpb::election_server::ElectionServer;
use keel_proto::v3lockpb::lock_server::LockServer;
use tonic::service::interceptor::InterceptedService;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use keel_node::PeerService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use metrics::GrpcMetrics;
pub use watch::WatchService;

/// etcd lets gRPC messages exceed --max-request-bytes by this much, so an
/// oversized request reaches the server's own check and its etcd error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// etcd's default --max-txn-ops.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

#[derive(Clone, Debug)]
pub struct ApiOptions {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How often quiet watches that asked for progress notifications get one.
    pub watch_progress_notify_interval: Duration,
    /// HTTP/2 streams one client connection may have open at once
    /// (etcd's --max-concurrent-streams).
    pub max_concurrent_streams: u32,
    /// How often the server pings an idle client connection; zero never
    /// (etcd's --grpc-keepalive-interval).
    pub keepalive_interval: Duration,
    /// How long an unanswered ping waits before the connection is closed
    /// (etcd's --grpc-keepalive-timeout).
    pub keepalive_timeout: Duration,
    /// Configuration problems an operator should see in `endpoint status`
    /// (flags Keel accepted but does not act on).
    pub status_errors: Vec<String>,
    /// etcd's gRPC server series (`grpc_server_*`, client byte counts).
    /// Clones count into the same series: give every listener of a member
    /// the same, and register it once in the member's registry
    /// ([`keel_metrics::Measures::register`]).
    pub metrics: GrpcMetrics,
}

/// etcd's default --watch-progress-notify-interval.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_request_bytes: keel_node::DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            max_concurrent_streams: u32::MAX,
            keepalive_interval: Duration::from_secs(2 * 60 * 60),
            keepalive_timeout: Duration::from_secs(20),
            status_errors: Vec::new(),
            metrics: GrpcMetrics::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gRPC server: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves every client service on `listener` until `shutdown` resolves, then
/// lets in-flight requests finish. `http`: the plain HTTP routes served on
/// the same port (HTTP/1.1 or HTTP/2 without gRPC's content type), as etcd
/// serves `/health` and `/metrics` beside its gRPC API.
pub async fn serve(
    listener: impl Into<keel_tls::Incoming>,
    member: Arc<Member>,
    options: ApiOptions,
    http: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let max_message = options.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let kv = leader_required(
        KvServer::new(KvService::new(member.clone(), options.max_txn_ops)).max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let lease = leader_required(
        LeaseServer::new(LeaseService::new(member.clone())).max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let watch = leader_required(
        WatchServer::new(WatchService::new(
            member.clone(),
            options.max_request_bytes,
            options.watch_progress_notify_interval,
        ))
        .max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let lock = leader_required(
        LockServer::new(LockService::new(member.clone(), options.max_txn_ops)).max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let election = leader_required(
        ElectionServer::new(ElectionService::new(member.clone(), options.max_txn_ops))
            .max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let cluster = leader_required(
        ClusterServer::new(ClusterService::new(member.clone())).max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let auth = leader_required(
        AuthServer::new(AuthService::new(member.clone())).max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let maintenance = leader_required(
        MaintenanceServer::new(MaintenanceService::new(member.clone(), options.status_errors.clone()))
            .max_decoding_message_size(max_message),
        &member,
        &options.metrics,
    );
    let keepalive = Some(options.keepalive_interval).filter(|interval| !interval.is_zero());
    let api = dispatch::ClientApi {
        kv,
        lease,
        watch,
        cluster,
        lock,
        election,
        maintenance,
        auth,
        http: http.fallback(unknown_path),
    };
    tonic::transport::Server::builder()
        // Probes and Prometheus speak HTTP/1.1.
        .accept_http1(true)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(options.keepalive_timeout).filter(|timeout| !timeout.is_zero()))
        .serve_with_incoming_shutdown(api, incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// A path nobody serves: gRPC's "unimplemented" to a gRPC client, Go's
/// `404 page not found` to anyone else (as etcd's HTTP mux answers).
async fn unknown_path(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http::<axum::body::Body>();
    }
    let mut response = axum::response::Response::new(axum::body::Body::from("404 page not found\n"));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    response
}

/// Serves only `http` on `listener` (etcd's --listen-metrics-urls) until
/// `shutdown`.
pub async fn serve_http(
    listener: impl Into<keel_tls::Incoming>,
    http: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(http.fallback(unknown_path)))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// `service` behind etcd's interceptor: a request carrying `hasleader: true`
/// is refused with "no leader" while this member knows of none. The gRPC
/// metrics sit inside it, as go-grpc-prometheus's interceptor runs after
/// etcd's: such refusals are not counted.
fn leader_required<S>(service: S, member: &Arc<Member>, metrics: &GrpcMetrics) -> dispatch::Api<S> {
    use tower_layer::Layer;
    InterceptedService::new(metrics.layer(service), errors::LeaderRequired(member.clone()))
}

const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves raft traffic from the other members on `listener` until `shutdown`.
pub async fn serve_peers(
    listener: impl Into<keel_tls::Incoming>,
    member: Arc<Member>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let max_message = keel_node::peer::max_peer_message_bytes(member.max_request_bytes());
    let peers = keel_proto::keelpb::raft_peer_server::RaftPeerServer::new(PeerService::new(member))
        .max_decoding_message_size(max_message);
    tonic::transport::Server::builder()
        // A peer that vanishes mid-snapshot (host down, no reset sent) is
        // noticed, and the chunks received so far are dropped.
        .http2_keepalive_interval(Some(PEER_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(PEER_KEEPALIVE_TIMEOUT))
        .add_service(peers)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Accepted connections, plain or TLS (a `TcpListener` is taken as plain).
/// `keel_tls::Incoming` turns Nagle's algorithm off on each: small gRPC
/// responses must leave at once (tonic's builder-level `tcp_nodelay` does
/// not apply to an incoming stream we supply; without it, reads waited
/// ~40 ms on delayed ACKs). Its connections carry a `keel_tls::ConnectInfo`
/// (the client certificate's CN: `keel_tls::peer_common_name`).
fn incoming(listener: impl Into<keel_tls::Incoming>) -> keel_tls::Incoming {
    listener.into()
}
