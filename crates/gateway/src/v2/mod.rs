//! etcd 3.4's v2 HTTP API (`--enable-v2`): `/v2/keys` over the member's v2
//! store ([`keys`]), `/v2/members` and `/v2/machines` ([`cluster`]) and
//! `/v2/stats/*` ([`stats`]), byte for byte as etcd 3.4.23 answers them
//! (`docs/etcd-v2-reference.md`, sections 1–8).
//!
//! etcd serves these from a Go `http.ServeMux` behind its CORS wrapper, and
//! clients see that mux's habits, so every path under `/v2` comes to one
//! handler here that behaves as the mux does: the path is percent-decoded
//! before routing (`%2F` separates segments), an unclean path (`//`, `.`,
//! `..`) is answered with a 301 to the cleaned one whatever the method, and
//! unknown paths get Go's plain-text 404. Every response carries the CORS
//! headers of etcd's default `--cors=*`, and `OPTIONS` is answered before
//! routing.
//!
//! Headers are added in Go's order (explicitly set headers sorted by name)
//! so that responses read like etcd's transcripts; clients do not depend on
//! it. HEAD is served as GET: axum sends GET's headers, its
//! `Content-Length` included, without the body.

mod cluster;
mod form;
mod keys;
mod path;
mod stats;
mod urls;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use futures::StreamExt;
use keel_node::Member;
use keel_v2store::Nanos;

pub use form::{parse_bool, parse_uint, Form};
pub use keys::{parse_keys_request, KeysMethod, KeysOp, KeysRequest};

/// The v2 API's routes for `member`, to be merged into the client port's
/// router when `--enable-v2` is set.
pub fn routes(member: Arc<Member>) -> axum::Router {
    let v2 = Arc::new(V2 { member, started: unix_nanos(), leader: Mutex::new(LeaderSeen { id: 0, since: 0 }) });
    axum::Router::new()
        .route("/v2", any(serve))
        .route("/v2/", any(serve))
        .route("/v2/{*rest}", any(serve))
        .with_state(v2)
}

/// What every v2 request shares.
struct V2 {
    member: Arc<Member>,
    /// `/v2/stats/self`'s `startTime`: when the API started serving.
    started: Nanos,
    /// The leader this gateway saw last, and since when: `/v2/stats/self`'s
    /// `leaderInfo`. etcd records when its raft node saw a new leader; the
    /// member exposes only the current one, so each request looks.
    leader: Mutex<LeaderSeen>,
}

#[derive(Debug, Clone, Copy)]
struct LeaderSeen {
    /// 0: none seen yet.
    id: u64,
    since: Nanos,
}

impl V2 {
    fn observe_leader(&self) -> LeaderSeen {
        let leader = self.member.leader();
        let mut seen = self.leader.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.id != leader {
            *seen = LeaderSeen { id: leader, since: unix_nanos() };
        }
        *seen
    }
}

/// The mux: decode, redirect unclean paths, route.
async fn serve(State(v2): State<Arc<V2>>, request: Request) -> Response {
    v2.observe_leader();
    let Some(decoded) = path::unescape(request.uri().path()) else {
        return bad_request_line();
    };
    if request.method() == Method::OPTIONS {
        return respond(StatusCode::OK, &[], Body::empty());
    }
    let cleaned = path::clean(&decoded);
    if cleaned != decoded {
        return redirect(request.method(), &path::redirect_location(&cleaned, request.uri().query()));
    }
    match route(&decoded) {
        Route::Keys => keys::serve(&v2, request, &decoded).await,
        Route::Members => cluster::members(&v2, request, &decoded).await,
        Route::Machines => cluster::machines(&v2, request.method()).await,
        Route::Stats(which) => stats::serve(&v2, request.method(), which).await,
        Route::NotFound => not_found(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Keys,
    Members,
    Machines,
    Stats(stats::Stat),
    NotFound,
}

/// etcd's patterns: `/v2/keys` and `/v2/members` with everything below
/// them; `/v2/machines` and the three stats paths exactly.
fn route(path: &str) -> Route {
    match path {
        "/v2/keys" => Route::Keys,
        "/v2/members" => Route::Members,
        "/v2/machines" => Route::Machines,
        "/v2/stats/self" => Route::Stats(stats::Stat::Server),
        "/v2/stats/leader" => Route::Stats(stats::Stat::Leader),
        "/v2/stats/store" => Route::Stats(stats::Stat::Store),
        _ if path.starts_with("/v2/keys/") => Route::Keys,
        _ if path.starts_with("/v2/members/") => Route::Members,
        _ => Route::NotFound,
    }
}

const CORS: [(&str, &str); 3] = [
    ("access-control-allow-headers", "accept, content-type, authorization"),
    ("access-control-allow-methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("access-control-allow-origin", "*"),
];

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// A response with the CORS headers, then `headers` in the order given
/// (lower-case names).
fn respond(status: StatusCode, headers: &[(&'static str, &str)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in CORS {
        append(map, name, value);
    }
    for &(name, value) in headers {
        append(map, name, value);
    }
    response
}

/// A whole body sent as Go's `net/http` sends what a handler writes without
/// a `Content-Length`: up to 2048 bytes buffered and counted, more in
/// chunks (here one).
fn go_body(text: String) -> Body {
    const BUFFERED_BEFORE_CHUNKING: usize = 2048;
    if text.len() <= BUFFERED_BEFORE_CHUNKING {
        Body::from(text)
    } else {
        Body::from_stream(futures::stream::once(async move { Ok::<_, std::convert::Infallible>(text) }))
    }
}

fn append(map: &mut HeaderMap, name: &'static str, value: &str) {
    // Every value is ours (numbers, ids, escaped paths); one that still
    // is no valid header value is left out rather than failing the answer.
    if let Ok(value) = HeaderValue::from_str(value) {
        map.append(HeaderName::from_static(name), value);
    }
}

/// Go's `http.Error`: the text and a newline, as plain text. `allow` is
/// the `Allow` header of a 405; `cluster_id` is set by the handlers that
/// set it before failing.
fn go_http_error(status: StatusCode, text: &str, allow: Option<&str>, cluster_id: Option<&str>) -> Response {
    let mut headers: Vec<(&'static str, &str)> = Vec::with_capacity(4);
    if let Some(allow) = allow {
        headers.push(("allow", allow));
    }
    headers.push(("content-type", TEXT));
    headers.push(("x-content-type-options", "nosniff"));
    if let Some(cluster_id) = cluster_id {
        headers.push(("x-etcd-cluster-id", cluster_id));
    }
    respond(status, &headers, Body::from(format!("{text}\n")))
}

fn method_not_allowed(allow: &str) -> Response {
    go_http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", Some(allow), None)
}

fn not_found() -> Response {
    go_http_error(StatusCode::NOT_FOUND, "404 page not found", None, None)
}

/// Go's `http.Redirect` with 301: an HTML link for GET (Content-Type for
/// HEAD too), nothing for other methods.
fn redirect(method: &Method, location: &str) -> Response {
    let mut headers: Vec<(&'static str, &str)> = Vec::with_capacity(2);
    if method == Method::GET || method == Method::HEAD {
        headers.push(("content-type", "text/html; charset=utf-8"));
    }
    headers.push(("location", location));
    let body = if method == Method::GET {
        // Go's Fprintln adds a newline to the one the text ends with.
        format!("<a href=\"{}\">Moved Permanently</a>.\n\n", path::html_escape(location))
    } else {
        String::new()
    };
    respond(StatusCode::MOVED_PERMANENTLY, &headers, Body::from(body))
}

/// What Go's server answers to a request line it cannot parse (a bad
/// percent-escape in the path), before any handler or CORS header.
fn bad_request_line() -> Response {
    let mut response = Response::new(Body::from("400 Bad Request"));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    append(headers, "content-type", TEXT);
    append(headers, "connection", "close");
    response
}

/// `X-Etcd-Cluster-Id`: etcd's `types.ID` string, lower-case hex without
/// leading zeros.
fn cluster_id_header(cluster_id: u64) -> String {
    format!("{cluster_id:x}")
}

/// The first value of a request header (Go's `Header.Get`).
fn header_string(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers.get(name).map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

#[derive(Debug)]
enum BodyError {
    TooLarge,
    /// The client's body failed (it went away): the error's text.
    Read(String),
}

/// The whole request body, refused past `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut data = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|err| BodyError::Read(err.to_string()))?;
        if out.len().saturating_add(chunk.len()) > limit {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Now, as Unix nanoseconds (v2 expirations are wall-clock times).
fn unix_nanos() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| Nanos::try_from(since.as_nanos()).unwrap_or(Nanos::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_names(response: &Response) -> Vec<String> {
        response.headers().keys().map(|name| name.as_str().to_owned()).collect()
    }

    fn header(response: &Response, name: &str) -> String {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    #[test]
    fn routes_follow_etcds_mux() {
        assert_eq!(route("/v2/keys"), Route::Keys);
        assert_eq!(route("/v2/keys/"), Route::Keys);
        assert_eq!(route("/v2/keys/a/b"), Route::Keys);
        assert_eq!(route("/v2/keysx"), Route::NotFound);
        assert_eq!(route("/v2/members"), Route::Members);
        assert_eq!(route("/v2/members/leader"), Route::Members);
        assert_eq!(route("/v2/machines"), Route::Machines);
        assert_eq!(route("/v2/machines/"), Route::NotFound);
        assert_eq!(route("/v2/stats"), Route::NotFound);
        assert_eq!(route("/v2/stats/"), Route::NotFound);
        assert_eq!(route("/v2/stats/self"), Route::Stats(stats::Stat::Server));
        assert_eq!(route("/v2/stats/leader"), Route::Stats(stats::Stat::Leader));
        assert_eq!(route("/v2/stats/store"), Route::Stats(stats::Stat::Store));
        assert_eq!(route("/v2/stats/store/"), Route::NotFound);
        assert_eq!(route("/v2"), Route::NotFound);
        assert_eq!(route("/v2/foo"), Route::NotFound);
    }

    #[test]
    fn go_errors_carry_cors_and_gos_headers() {
        let response = method_not_allowed("HEAD,GET,PUT,POST,DELETE");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            header_names(&response),
            [
                "access-control-allow-headers",
                "access-control-allow-methods",
                "access-control-allow-origin",
                "allow",
                "content-type",
                "x-content-type-options"
            ]
        );
        assert_eq!(header(&response, "allow"), "HEAD,GET,PUT,POST,DELETE");
        assert_eq!(header(&response, "access-control-allow-origin"), "*");
        let response = not_found();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(&response, "content-type"), TEXT);
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let response = go_http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", None, Some("5a6a"));
        assert_eq!(header_names(&response)[3..], ["content-type", "x-content-type-options", "x-etcd-cluster-id"]);
    }

    #[test]
    fn redirects_are_gos() {
        let response = redirect(&Method::GET, "/v2/keys/foo");
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(header(&response, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&response, "location"), "/v2/keys/foo");
        let response = redirect(&Method::PUT, "/v2/keys/foo?value=1");
        assert_eq!(header_names(&response)[3..], ["location"]);
        assert_eq!(header(&response, "location"), "/v2/keys/foo?value=1");
        let response = redirect(&Method::HEAD, "/v2");
        assert_eq!(header_names(&response)[3..], ["content-type", "location"]);
    }

    #[test]
    fn cluster_id_is_types_id() {
        assert_eq!(cluster_id_header(0x5a6aeda0657d4036), "5a6aeda0657d4036");
        assert_eq!(cluster_id_header(0x8cced54924db0ef), "8cced54924db0ef");
    }
}
