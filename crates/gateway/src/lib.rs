//! `keel-gateway`: what the client port serves over plain HTTP beside gRPC.
//!
//! etcd's operational endpoints ([`health`]: `/health`, `/livez`,
//! `/readyz`; [`observability`]: `/version`, `/metrics`) and its JSON
//! gateway ([`json`]: `/v3/...`), and with `--enable-v2` etcd's v2 API
//! ([`v2`]: `/v2/keys`, `/v2/members`, `/v2/machines`, `/v2/stats/*`).
//! Every endpoint calls the member as the gRPC services do — none keeps
//! state of its own, but for the times `/v2/stats/self` reports.

pub mod health;
pub mod json;
pub mod observability;
pub mod v2;

use std::sync::Arc;

use keel_metrics::Metrics;
use keel_node::Member;

/// The HTTP routes of a client URL: health, readiness, version and
/// metrics, as etcd serves them next to its gRPC API.
pub fn client_routes(member: Arc<Member>, metrics: Metrics) -> axum::Router {
    health::routes(member).merge(observability::routes(metrics))
}

/// The routes of a `--listen-metrics-urls` listener: etcd serves the
/// metrics and the health endpoints there, and nothing else.
pub fn metrics_routes(member: Arc<Member>, metrics: Metrics) -> axum::Router {
    health::routes(member.clone()).merge(observability::metrics_route(metrics))
}
