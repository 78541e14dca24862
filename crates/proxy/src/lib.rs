//! `keel grpc-proxy`: an etcd v3 gRPC proxy for every service host.
//!
//! Clients talk to the proxy as to a member; the proxy talks to the
//! cluster through the public etcd v3 API only, so it works in front of
//! Keel and of etcd alike. What it adds over a plain forwarder:
//!
//! - watches from "now" on the same range share one upstream watch
//!   (`watch/group.rs`), and every upstream watch survives the loss of its
//!   member: it resumes on another from the first revision not yet
//!   delivered, so clients see no gap, repeat or reordering
//!   (`watch/upstream.rs`);
//! - all clients' lease keep-alives share one upstream stream, each sent
//!   when its client sent it, so TTLs stay exact (`lease.rs`);
//! - `--namespace` (`namespace.rs`);
//! - with `--cache-prefix`, Range answers on those prefixes cached per
//!   caller and kept current by an upstream watch, so a write made
//!   anywhere in the cluster invalidates them (`cache.rs`);
//! - local service registration: services on the host register over HTTP
//!   or in `--service-config-dir`, and their keys live while their checks
//!   pass (`registry/`);
//! - etcd's `/health` and `etcd_grpc_proxy_*` metrics, and `/livez`,
//!   `/readyz` (`http.rs`, `metrics.rs`).
//!
//! Everything else is passed through with the caller's metadata, its auth
//! token above all, and etcd's errors come back unchanged (`services.rs`).
//! An unreachable member is left for the next (`upstream.rs`); with none
//! left, clients get Unavailable at once, and the next call dials again.

mod cache;
pub mod config;
mod error;
pub mod gateway;
mod http;
mod lease;
mod metrics;
mod namespace;
mod policy;
mod register;
mod registry;
mod services;
mod upstream;
mod watch;

use std::future::Future;
use std::sync::Arc;

use keel_proto::etcdserverpb::auth_server::AuthServer;
use keel_proto::etcdserverpb::cluster_server::ClusterServer;
use keel_proto::etcdserverpb::kv_server::KvServer;
use keel_proto::etcdserverpb::lease_server::LeaseServer;
use keel_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use keel_proto::etcdserverpb::watch_server::WatchServer;
use keel_proto::v3electionpb::election_server::ElectionServer;
use keel_proto::v3lockpb::lock_server::LockServer;
use keel_tls::{Incoming, ServerTls, ServerTlsOptions};
use tokio::net::{TcpListener, UnixListener};

pub use config::{parse, usage, Command, ConfigError, ListenAddr, ProxyConfig};
pub use error::ProxyError;
pub use policy::Policy;

use lease::KeepAlives;
use namespace::Namespace;
use services::Forward;
use upstream::Upstream;
use watch::{Groups, WatchProxy};

/// What every service of one proxy shares.
pub(crate) struct Shared {
    upstream: Upstream,
    namespace: Namespace,
    metrics: metrics::Metrics,
    watch_groups: Groups,
    keepalives: KeepAlives,
    max_send_bytes: usize,
    /// What MemberList answers: this host and the URL clients reach it by.
    host_name: String,
    advertise_client_url: String,
    policy: policy::Policy,
    resolver_prefix: Option<String>,
    /// Local service registration (`registry/`).
    registry: Arc<registry::Registry>,
    /// The range cache; `None` without `--cache-prefix`.
    cache: Option<cache::Cache>,
}

impl Shared {
    /// A refusal as the client sees it, counted.
    pub(crate) fn refuse(&self, refusal: policy::Refusal) -> tonic::Status {
        self.metrics.refused.with_label_values(&[refusal.label()]).inc();
        refusal.status()
    }

    pub(crate) fn check(&self, verdict: Result<(), policy::Refusal>) -> Result<(), tonic::Status> {
        verdict.map_err(|refusal| self.refuse(refusal))
    }
}

/// A proxy's listeners, bound: addresses are known (and ports taken)
/// before it serves.
pub struct Proxy {
    shared: Arc<Shared>,
    config: ProxyConfig,
    listener: Listener,
    local_addr: Option<std::net::SocketAddr>,
    metrics: Option<TcpListener>,
}

enum Listener {
    Tcp(Incoming),
    Unix(UnixListener),
}

impl Proxy {
    /// Reads the TLS files, binds the listen and metrics addresses and
    /// prepares the upstream channels (dialled on first use). Must run on
    /// a tokio runtime.
    pub async fn bind(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let serve_tls = match config.serve_tls.clone() {
            Some(tls) => {
                let options = ServerTlsOptions {
                    cert_file: tls.cert_file,
                    key_file: tls.key_file,
                    client_cert_auth: tls.trusted_ca_file.is_some(),
                    trusted_ca_file: tls.trusted_ca_file,
                    crl_file: tls.crl_file,
                    allowed_cns: Vec::new(),
                    allowed_hostnames: Vec::new(),
                    skip_client_san_verification: true,
                    protocol: keel_tls::ProtocolOptions::default(),
                };
                // Certificate files are read from disk: off the runtime.
                let built = tokio::task::spawn_blocking(move || ServerTls::new(options)).await;
                Some(
                    built
                        .map_err(|e| ProxyError::Listen { addr: "tls".into(), source: std::io::Error::other(e) })??,
                )
            }
            None => None,
        };
        let mut local_addr = None;
        let listener = match &config.listen_addr {
            ListenAddr::Tcp(addr) => {
                let tcp = TcpListener::bind(addr.as_str())
                    .await
                    .map_err(|source| ProxyError::Listen { addr: addr.clone(), source })?;
                local_addr = tcp.local_addr().ok();
                Listener::Tcp(match serve_tls {
                    Some(tls) => Incoming::tls(tcp, tls),
                    None => Incoming::plain(tcp),
                })
            }
            ListenAddr::Unix(path) => {
                if serve_tls.is_some() {
                    tracing::warn!("--cert-file/--key-file are not used on a unix:// listen address");
                }
                Listener::Unix(
                    UnixListener::bind(path)
                        .map_err(|source| ProxyError::Listen { addr: format!("unix://{}", path.display()), source })?,
                )
            }
        };
        let metrics = match &config.metrics_addr {
            Some(url) => {
                let addr = metrics_addr(url)?;
                Some(TcpListener::bind(addr).await.map_err(|source| ProxyError::Listen { addr: url.clone(), source })?)
            }
            None => None,
        };
        let mut endpoints = config.endpoints.clone();
        if let Some(domain) = &config.discovery_srv {
            let found = gateway::discover_urls(domain, &config.discovery_srv_name, config.insecure_discovery)
                .await
                .map_err(|e| ProxyError::Discovery(e.to_string()))?;
            // As etcd's: nothing found, the --endpoints are used.
            if !found.is_empty() {
                tracing::info!(domain, endpoints = ?found, "discovered the cluster");
                endpoints = found;
            }
        }
        let upstream = Upstream::new(&endpoints, &config.upstream_tls)?;
        let host_name = tokio::task::spawn_blocking(host_name).await.unwrap_or_default();
        let mut services = match config.service_config_dir.clone() {
            Some(dir) => tokio::task::spawn_blocking(move || registry::load_dir(&dir))
                .await
                .map_err(|e| ProxyError::ServiceConfig(e.to_string()))?
                .map_err(ProxyError::ServiceConfig)?,
            None => Vec::new(),
        };
        // Registered through the API before a restart; after the folder's,
        // so one with the same id replaces it as it did when made.
        let saved = Arc::new(registry::Saved::new(&config.data_dir));
        let loading = saved.clone();
        services.extend(tokio::task::spawn_blocking(move || loading.load()).await.unwrap_or_default());
        let series = metrics::Metrics::new()?;
        let registry = Arc::new(registry::Registry::new(
            &config.service_prefix,
            &host_name,
            Namespace::new(config.namespace.clone()),
            saved,
            series.service_checks.clone(),
        ));
        for service in services {
            registry.register(service);
        }
        let namespace = Namespace::new(config.namespace.clone());
        let cache = (!config.cache_prefixes.is_empty())
            .then(|| cache::Cache::new(&config.cache_prefixes, &namespace, config.cache_max_bytes, &series));
        let shared = Arc::new_cyclic(|weak| Shared {
            upstream,
            namespace,
            metrics: series,
            watch_groups: Groups::default(),
            keepalives: KeepAlives::start(weak.clone()),
            max_send_bytes: config.max_send_bytes,
            host_name,
            advertise_client_url: config.advertise_client_url.clone(),
            policy: config.policy.clone(),
            resolver_prefix: config.resolver_prefix.clone(),
            registry,
            cache,
        });
        Ok(Proxy { shared, config, listener, local_addr, metrics })
    }

    /// The bound TCP address, if listening on TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.local_addr
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ProxyError> {
        let Proxy { shared, config, listener, metrics, .. } = self;
        let forward = Forward(shared.clone());
        let (recv, send) = (config.max_recv_bytes, config.max_send_bytes);
        let (health_reporter, health) = tonic_health::server::health_reporter();
        // etcd's proxy reports its serving status under the empty name.
        health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let grpc = tonic::service::Routes::new(
            KvServer::new(forward.clone()).max_decoding_message_size(recv).max_encoding_message_size(send),
        )
        .add_service(WatchServer::new(WatchProxy(shared.clone())).max_decoding_message_size(recv))
        .add_service(LeaseServer::new(forward.clone()).max_decoding_message_size(recv))
        .add_service(ClusterServer::new(forward.clone()).max_decoding_message_size(recv))
        .add_service(MaintenanceServer::new(forward.clone()).max_decoding_message_size(recv))
        .add_service(AuthServer::new(forward.clone()).max_decoding_message_size(recv))
        .add_service(LockServer::new(forward.clone()).max_decoding_message_size(recv))
        .add_service(ElectionServer::new(forward).max_decoding_message_size(recv))
        .add_service(health);
        let router = grpc.into_axum_router().merge(http::routes(shared.clone())).fallback(unknown_path);
        let routes = tonic::service::Routes::from(router);

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let mut servers = tokio::task::JoinSet::new();
        if let Some(listener) = metrics {
            let http = http::routes(shared.clone()).fallback(unknown_path);
            let stop = stopped(stop_rx.clone());
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            servers.spawn(async move {
                tonic::transport::Server::builder()
                    .accept_http1(true)
                    .add_routes(tonic::service::Routes::from(http))
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(ProxyError::from)
            });
        }
        let builder = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(Some(config.max_concurrent_streams));
        let stop = stopped(stop_rx.clone());
        match listener {
            Listener::Tcp(incoming) => {
                let mut builder = builder;
                servers.spawn(async move {
                    builder
                        .add_routes(routes)
                        .serve_with_incoming_shutdown(incoming, stop)
                        .await
                        .map_err(ProxyError::from)
                });
            }
            Listener::Unix(unix) => {
                let mut builder = builder;
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(unix);
                servers.spawn(async move {
                    builder
                        .add_routes(routes)
                        .serve_with_incoming_shutdown(incoming, stop)
                        .await
                        .map_err(ProxyError::from)
                });
            }
        }
        tracing::info!(address = ?config.listen_addr, endpoints = ?config.endpoints, "listening for gRPC proxy client requests");
        // Background work, stopped (aborted) once the servers have stopped.
        let mut background = tokio::task::JoinSet::new();
        if !config.auto_sync_interval.is_zero() {
            background.spawn(sync_endpoints(shared.clone(), config.auto_sync_interval));
        }
        let registration = Arc::new(register::Registration::default());
        if let Some(prefix) = config.resolver_prefix.clone() {
            background.spawn(registration.clone().run(shared.clone(), prefix, config.resolver_ttl));
        }
        background.spawn(shared.registry.clone().run(shared.clone()));
        background.spawn(shared.registry.clone().watch_deletes(shared.clone()));
        if shared.cache.is_some() {
            background.spawn(sweep_cache(shared.clone()));
        }
        let result = tokio::select! {
            () = shutdown => Ok(()),
            Some(ended) = servers.join_next() => ended.unwrap_or(Ok(())),
        };
        background.abort_all();
        if let Some(cache) = &shared.cache {
            // Its views' watches hold `shared`: stopped explicitly.
            cache.clear();
        }
        shared.registry.stop();
        tokio::join!(registration.revoke(&shared), shared.registry.revoke(&shared));
        let _ = stop_tx.send(true);
        // Open watch and keep-alive streams would hold a graceful stop
        // forever; they get a moment, then are closed.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while servers.join_next().await.is_some() {}
        })
        .await;
        servers.abort_all();
        result
    }
}

/// Keeps the upstream endpoints equal to the cluster's client URLs: at
/// start, every `every`, and soon after an endpoint failed (at most once a
/// second).
async fn sync_endpoints(shared: Arc<Shared>, every: std::time::Duration) {
    const AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    loop {
        match shared.upstream.sync().await {
            Ok(true) => shared.metrics.endpoint_syncs.inc(),
            Ok(false) => {}
            Err(status) => tracing::debug!(%status, "member list for endpoint sync failed"),
        }
        tokio::time::sleep(AT_MOST_EVERY).await;
        tokio::select! {
            () = tokio::time::sleep(every.saturating_sub(AT_MOST_EVERY)) => {}
            () = shared.upstream.failures.notified() => {}
        }
    }
}

/// Closes the cache's idle views (and their watches) now and then.
async fn sweep_cache(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        if let Some(cache) = &shared.cache {
            cache.sweep();
        }
    }
}

/// The kernel's host name, as Go's `os.Hostname` reads it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_owned()).unwrap_or_default()
}

/// `--metrics-addr` is a URL (`http://host:port`) in etcd; a bare
/// `host:port` is taken too.
fn metrics_addr(url: &str) -> Result<String, ProxyError> {
    match url.split_once("://") {
        None => Ok(url.to_owned()),
        Some(("http", rest)) => Ok(rest.trim_end_matches('/').to_owned()),
        Some(_) => Err(ProxyError::InvalidEndpoint {
            endpoint: url.to_owned(),
            reason: "--metrics-addr: only http:// is supported".to_owned(),
        }),
    }
}

/// A path nobody serves: gRPC's "unimplemented" to a gRPC client, Go's
/// `404 page not found` to anyone else.
async fn unknown_path(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http::<axum::body::Body>();
    }
    let mut response = axum::response::Response::new(axum::body::Body::from("404 page not found\n"));
    *response.status_mut() = ::http::StatusCode::NOT_FOUND;
    response
}
