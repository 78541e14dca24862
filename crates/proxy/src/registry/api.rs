//! The registration API, Consul's agent paths on the proxy's HTTP
//! listeners (the listen address and `--metrics-addr`):
//!
//! - `PUT /v1/agent/service/register` (a JSON registration, `spec.rs`);
//!   a malformed one is 400 with the reason and registers nothing;
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

async fn register(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match Service::parse(&body) {
        Ok(service) => {
            shared.registry.register(service);
            plain(StatusCode::OK, "")
        }
        Err(invalid) => plain(StatusCode::BAD_REQUEST, format!("invalid service registration: {invalid}\n")),
    }
}

async fn deregister(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.registry.deregister(&id) {
        plain(StatusCode::OK, "")
    } else {
        plain(StatusCode::NOT_FOUND, format!("unknown service id {id:?}\n"))
    }
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
