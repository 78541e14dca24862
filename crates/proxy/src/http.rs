//! Plain HTTP beside gRPC, on the listen address and on `--metrics-addr`:
//! `/metrics`, and `/health` as etcd 3.4's proxy answers it (a read of key
//! `a` through the proxy's upstream: healthy when the cluster answers,
//! a permission refusal included). `/livez` and `/readyz` follow etcd
//! 3.5's probes: live while the process serves, ready while an upstream
//! member answers. The service registration API (`registry/api.rs`) is
//! served beside them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::{header, HeaderValue, StatusCode};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::RangeRequest;
use tonic::Code;

use crate::Shared;

/// etcd's health check waits this long for the cluster.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(shared.clone())
        .merge(crate::registry::routes(shared))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    text(StatusCode::OK, "text/plain; version=0.0.4", shared.metrics.render())
}

/// Whether an upstream member answers a read.
async fn upstream_answers(shared: &Shared) -> Result<(), String> {
    let request = tonic::Request::new(RangeRequest { key: b"a".to_vec(), serializable: false, ..Default::default() });
    let read = shared
        .upstream
        .unary(request, true, |channel, request| async move { KvClient::new(channel).range(request).await });
    match tokio::time::timeout(CHECK_TIMEOUT, read).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if status.code() == Code::PermissionDenied => Ok(()),
        Ok(Err(status)) => Err(status.message().to_owned()),
        Err(_) => Err("context deadline exceeded".to_owned()),
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match upstream_answers(&shared).await {
        Ok(()) => text(StatusCode::OK, "text/plain; charset=utf-8", r#"{"health":"true"}"#.to_owned()),
        Err(reason) => {
            tracing::warn!(%reason, "/health error");
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", r#"{"health":"false"}"#.to_owned())
        }
    }
}

async fn livez() -> Response {
    text(StatusCode::OK, "text/plain; charset=utf-8", "ok".to_owned())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match upstream_answers(&shared).await {
        Ok(()) => text(StatusCode::OK, "text/plain; charset=utf-8", "ok".to_owned()),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("[-]upstream failed: {reason}\nreadyz check failed\n"),
        ),
    }
}
