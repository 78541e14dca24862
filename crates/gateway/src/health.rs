//! etcd's health endpoints, with etcd 3.6's bodies and status codes.
//!
//! - `/health`: `{"health":"true","reason":""}`, or `"false"` with a reason
//!   and 503: an active alarm (unless `?exclude=<ALARM>`), no leader (unless
//!   `?serializable=true`), or a failed read (linearizable unless
//!   `?serializable=true`).
//! - `/livez` (a serializable read) and `/readyz` (no CORRUPT alarm, a
//!   serializable and a linearizable read, not a learner), each check also
//!   on its own sub path: `ok`, with `?verbose` each check's line first;
//!   `?exclude=<check>` skips one; a failure answers 503 with every check's
//!   line and no summary line (etcd's format, not Kubernetes'). etcd lists
//!   the checks in Go's random map order; Keel in its sorted order.
//!   `/readyz` also fails, with a `published` line, until the member's
//!   attributes are published (etcd does not answer at all until then).
//!
//! A probe that gives up (Kubernetes' timeout) drops the request, and the
//! read it started with it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use keel_node::{Member, NodeError};
use keel_proto::etcdserverpb::AlarmType;

pub(crate) fn routes(member: Arc<Member>) -> axum::Router {
    axum::Router::new()
        .route("/health", any(health))
        .route("/livez", any(|m, s, q| checks(m, s, q, Kind::Livez, None)))
        .route("/readyz", any(|m, s, q| checks(m, s, q, Kind::Readyz, None)))
        .route("/livez/{check}", any(|m, s, q, Path(check): Path<String>| checks(m, s, q, Kind::Livez, Some(check))))
        .route("/readyz/{check}", any(|m, s, q, Path(check): Path<String>| checks(m, s, q, Kind::Readyz, Some(check))))
        .with_state(member)
}

type State = axum::extract::State<Arc<Member>>;

/// The query's values of `key`, one per occurrence (`?exclude=a&exclude=b`).
fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    let Some(query) = query else { return Vec::new() };
    query
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name) == key).then(|| decode(value))
        })
        .collect()
}

fn query_has(query: Option<&str>, key: &str) -> bool {
    query.is_some_and(|query| query.split('&').any(|pair| decode(pair.split_once('=').map_or(pair, |(n, _)| n)) == key))
}

/// Percent-decoding of one query component (`+` is a space, as Go's);
/// a malformed escape is kept as it is.
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `http.Error`: the text and a newline, as plain text.
fn http_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
        format!("{text}\n"),
    )
        .into_response()
}

pub(crate) fn method_not_allowed() -> Response {
    let mut response = http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    response
}

async fn health(method: Method, axum::extract::State(member): State, RawQuery(query): RawQuery) -> Response {
    if method != Method::GET {
        tracing::warn!(status_code = 405, "/health error");
        return method_not_allowed();
    }
    let excluded = query_values(query.as_deref(), "exclude");
    let serializable = query_values(query.as_deref(), "serializable").first().is_some_and(|v| v == "true");
    let outcome = check_health(&member, &excluded, serializable).await;
    member.metrics().health_checked(outcome.is_ok());
    match outcome {
        Ok(()) => {
            let body = serde_json::json!({"health": "true", "reason": ""}).to_string();
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        Err(reason) => {
            let body = serde_json::json!({"health": "false", "reason": reason}).to_string();
            http_error(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}

/// etcd's order: alarms, then the leader, then a read.
async fn check_health(member: &Member, excluded: &[String], serializable: bool) -> Result<(), String> {
    for alarm in member.alarms() {
        let kind = AlarmType::try_from(alarm.alarm).unwrap_or(AlarmType::None);
        if excluded.iter().any(|name| name == kind.as_str_name()) {
            continue;
        }
        tracing::warn!(alarm = kind.as_str_name(), "serving /health false due to an alarm");
        return Err(match kind {
            AlarmType::Nospace => "ALARM NOSPACE".to_string(),
            AlarmType::Corrupt => "ALARM CORRUPT".to_string(),
            AlarmType::None => "ALARM UNKNOWN".to_string(),
        });
    }
    if !serializable && member.leader() == 0 {
        tracing::warn!("serving /health false; no leader");
        return Err("RAFT NO LEADER".to_string());
    }
    member.health_read(serializable).await.map_err(|err| {
        let error = etcd_error(&err);
        tracing::warn!(%error, "serving /health false; Range fails");
        format!("RANGE ERROR:{error}")
    })
}

/// The text etcd's server errors carry ("etcdserver: …").
fn etcd_error(err: &NodeError) -> String {
    format!("etcdserver: {err}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Livez,
    Readyz,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Livez => "livez",
            Kind::Readyz => "readyz",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Livez => "/livez",
            Kind::Readyz => "/readyz",
        }
    }

    /// The checks each endpoint runs, in the order etcd reports them
    /// (sorted by name).
    fn checks(self) -> &'static [Check] {
        match self {
            Kind::Livez => &[Check::SerializableRead],
            Kind::Readyz => {
                &[Check::DataCorruption, Check::LinearizableRead, Check::NonLearner, Check::SerializableRead]
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    async fn run(self, member: &Member) -> Result<(), String> {
        match self {
            Check::DataCorruption => match member.alarms().iter().any(|a| a.alarm == AlarmType::Corrupt as i32) {
                true => Err("alarm activated: CORRUPT".to_string()),
                false => Ok(()),
            },
            Check::SerializableRead => member.health_read(true).await.map_err(|e| etcd_error(&e)),
            Check::LinearizableRead => member.health_read(false).await.map_err(|e| etcd_error(&e)),
            Check::NonLearner => match member.is_learner() {
                true => Err("not supported for learner".to_string()),
                false => Ok(()),
            },
        }
    }
}

async fn checks(
    method: Method,
    axum::extract::State(member): State,
    RawQuery(query): RawQuery,
    kind: Kind,
    only: Option<String>,
) -> Response {
    // An unknown check is a path nobody serves (Go's mux: 404 for any method).
    if only.as_ref().is_some_and(|name| !kind.checks().iter().any(|check| check.name() == name)) {
        return http_error(StatusCode::NOT_FOUND, "404 page not found");
    }
    if method != Method::GET {
        tracing::warn!(path = kind.path(), status_code = 405, "Health request error");
        return method_not_allowed();
    }
    let path = match &only {
        Some(check) => format!("{}/{check}", kind.path()),
        None => kind.path().to_string(),
    };
    let selected: Vec<Check> = match &only {
        Some(name) => match kind.checks().iter().find(|check| check.name() == name) {
            Some(check) => vec![*check],
            None => return http_error(StatusCode::NOT_FOUND, "404 page not found"),
        },
        None => {
            let mut excluded: BTreeSet<String> =
                query_values(query.as_deref(), "exclude").into_iter().filter(|name| !name.is_empty()).collect();
            let selected = kind.checks().iter().copied().filter(|check| !excluded.remove(check.name())).collect();
            if !excluded.is_empty() {
                let missing: Vec<String> = excluded.iter().map(|name| format!("{name:?}")).collect();
                tracing::warn!(missing_health_checks = %missing.join(","), "some health checks cannot be excluded");
            }
            selected
        }
    };
    let mut report = String::new();
    let mut failed = false;
    // etcd serves no client before its attributes are published; Keel
    // serves at once, but is not ready until then, so that a member a
    // readiness probe passed is `started` in the member list.
    if kind == Kind::Readyz && !member.is_published() {
        failed = true;
        report.push_str("[-]published failed: the member's name and client URLs are not published yet\n");
    }
    for check in selected {
        let outcome = check.run(&member).await;
        member.metrics().health_check_ran(kind.name(), check.name(), outcome.is_ok());
        match outcome {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(err) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {err}\n", check.name()));
            }
        }
    }
    if failed {
        tracing::error!(path, reason = %report, status_code = 503, "Health check error");
        // Go's http.Error: the lines and one more newline.
        return http_error(StatusCode::SERVICE_UNAVAILABLE, &report);
    }
    tracing::debug!(path, "Health check OK");
    let mut body = String::new();
    if query_has(query.as_deref(), "verbose") {
        body.push_str(&report);
    }
    body.push_str("ok\n");
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded_and_repeatable() {
        let query = Some("exclude=NOSPACE&exclude=serializable%5Fread&verbose&x=a+b");
        assert_eq!(query_values(query, "exclude"), ["NOSPACE", "serializable_read"]);
        assert_eq!(query_values(query, "x"), ["a b"]);
        assert!(query_has(query, "verbose"));
        assert!(!query_has(query, "serializable"));
        assert!(query_values(None, "exclude").is_empty());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn readyz_reports_its_checks_sorted_by_name() {
        let names: Vec<&str> = Kind::Readyz.checks().iter().map(|check| check.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }
}
