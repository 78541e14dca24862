//! `/version` and `/metrics`, as etcd answers them.

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use keel_metrics::Metrics;

pub(crate) fn routes(metrics: Metrics) -> axum::Router {
    axum::Router::new().route("/version", any(version)).merge(metrics_route(metrics))
}

/// Any method, as etcd's promhttp handler takes.
pub(crate) fn metrics_route(metrics: Metrics) -> axum::Router {
    axum::Router::new().route("/metrics", any(move || exposition(metrics.clone())))
}

/// etcd's `{"etcdserver":…,"etcdcluster":…}`: this member's version and
/// the version the cluster runs at (major.minor.0, as etcd reports it).
async fn version(method: Method) -> Response {
    if method != Method::GET {
        return crate::health::method_not_allowed();
    }
    let body = serde_json::json!({
        "etcdserver": keel_node::ETCD_VERSION,
        "etcdcluster": cluster_version(keel_node::ETCD_VERSION),
    });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// etcd's cluster version carries the release's major and minor only.
pub(crate) fn cluster_version(server: &str) -> String {
    let mut parts = server.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => server.to_string(),
    }
}

async fn exposition(metrics: Metrics) -> Response {
    // Gathering walks every series (and reads the process's /proc files):
    // off the runtime's threads, like every other blocking read.
    match tokio::task::spawn_blocking(move || metrics.text()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, Metrics::content_type())], text).into_response(),
        Ok(Err(err)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {err}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_version_keeps_major_and_minor() {
        assert_eq!(cluster_version("3.6.4"), "3.6.0");
        assert_eq!(cluster_version("3"), "3");
    }
}
