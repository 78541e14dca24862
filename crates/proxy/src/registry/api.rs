//! The registration API, Consul's agent paths on the proxy's HTTP
//! listeners (the listen address and `--metrics-addr`):
//!
//! - `PUT /v1/agent/service/register` (a JSON registration, `spec.rs`);
//!   a malformed one is 400 with the reason and registers nothing; a good
//!   one is saved under `--data-dir` (`saved.rs`) and survives a restart;
//! - `PUT /v1/agent/service/deregister/<id>`;
//! - `PUT /v1/agent/check/pass/<id>` (TTL checks; `service:<id>` too);
//! - `GET /v1/agent/services`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, put};
use http::{header, HeaderValue, StatusCode};

use super::{PassError, Service};
use crate::Shared;

pub(crate) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/check/pass/{id}", put(pass))
        .route("/v1/agent/services", get(services))
        .with_state(shared)
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    answer(status, "text/plain; charset=utf-8", body.into())
}

/// Saved first (`saved.rs`): a registration the proxy could not keep
/// across a restart is refused (500) and not registered.
async fn register(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let service = match Service::parse(&body) {
        Ok(service) => service,
        Err(invalid) => return plain(StatusCode::BAD_REQUEST, format!("invalid service registration: {invalid}\n")),
    };
    let (saved, copy) = (shared.registry.saved.clone(), service.clone());
    match off_runtime(move || saved.save(&copy)).await {
        Ok(()) => {
            shared.registry.register(service);
            plain(StatusCode::OK, "")
        }
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot save the registration: {err}\n")),
    }
}

async fn deregister(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if !shared.registry.deregister(&id) {
        return plain(StatusCode::NOT_FOUND, format!("unknown service id {id:?}\n"));
    }
    let (saved, removed) = (shared.registry.saved.clone(), id.clone());
    match off_runtime(move || saved.remove(&removed)).await {
        Ok(()) => plain(StatusCode::OK, ""),
        // Deregistered now, but it would come back after a restart.
        Err(err) => {
            plain(StatusCode::INTERNAL_SERVER_ERROR, format!("deregistered, but {id:?} is still saved: {err}\n"))
        }
    }
}

/// File I/O of `saved.rs`, on the blocking pool.
async fn off_runtime(io: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<()> {
    tokio::task::spawn_blocking(io).await.unwrap_or_else(|err| Err(std::io::Error::other(err)))
}

async fn pass(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.registry.pass(&id) {
        Ok(()) => plain(StatusCode::OK, ""),
        Err(PassError::Unknown) => plain(StatusCode::NOT_FOUND, format!("unknown check id {id:?}\n")),
        Err(PassError::NotTtl) => plain(StatusCode::BAD_REQUEST, format!("check {id:?} is not a ttl check\n")),
    }
}

async fn services(State(shared): State<Arc<Shared>>) -> Response {
    answer(StatusCode::OK, "application/json", shared.registry.list().to_string())
}
