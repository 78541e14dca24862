//! `/v2/keys`: etcd's `keysHandler`. A request is parsed, validated in
//! etcd's order and turned into one store operation by the pure
//! [`parse_keys_request`]; the handler then runs it on the member and
//! writes the event, the error or the watch stream.
//!
//! Validation errors (2xx codes) are decided here, before the member is
//! asked, with index 0. Store errors carry the store's index; a raft
//! failure (timeout, no leader, stopped) is error 300 with etcd's message
//! as its cause and index 0.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use keel_node::NodeError;
use keel_v2store::{Action, ErrorCode, Event, Nanos, V2Error, Watcher, Write};

use super::form::{self, Form};
use super::{cluster_id_header, header_string, path, read_body, respond, unix_nanos, BodyError, JSON, V2};

const KEYS_PREFIX: &str = "/v2/keys";

const ALLOW: &str = "HEAD,GET,PUT,POST,DELETE";

/// The methods `/v2/keys` serves; any other is a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysMethod {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl KeysMethod {
    pub fn from_http(method: &Method) -> Option<KeysMethod> {
        match *method {
            Method::GET => Some(KeysMethod::Get),
            Method::HEAD => Some(KeysMethod::Head),
            Method::PUT => Some(KeysMethod::Put),
            Method::POST => Some(KeysMethod::Post),
            Method::DELETE => Some(KeysMethod::Delete),
            _ => None,
        }
    }

    /// Go's `ParseForm` reads the body of these only.
    fn reads_form_body(self) -> bool {
        matches!(self, KeysMethod::Put | KeysMethod::Post)
    }
}

/// A parsed and validated keys request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysRequest {
    /// The store's user key: `/` for the root, no trailing slash.
    pub key: String,
    pub op: KeysOp,
    /// Leave `node` and `prevNode` out of a successful set, create, update
    /// or compareAndSwap answer.
    pub no_value_on_success: bool,
}

/// What the member is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysOp {
    /// A GET or HEAD; `quorum` goes through raft (GET only: etcd serves a
    /// HEAD locally whatever it asks).
    Get {
        recursive: bool,
        sorted: bool,
        quorum: bool,
    },
    /// `wait=true` on a GET without `quorum`.
    Watch {
        recursive: bool,
        stream: bool,
        wait_index: u64,
    },
    Write(Write),
}

/// etcd's `parseKeyRequest` and the dispatch that follows it: `url_path`
/// is the decoded, clean URL path (starting with `/v2/keys`), `body` the
/// request body if it is a form body Go would read (else anything: it is
/// ignored unless `method` is PUT or POST with an urlencoded
/// Content-Type), `now` this member's clock, which fixes expirations.
pub fn parse_keys_request(
    method: KeysMethod,
    url_path: &str,
    raw_query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    now: Nanos,
) -> Result<KeysRequest, V2Error> {
    let form = form::parse_form(method.reads_form_body(), raw_query, content_type, body)
        .map_err(|cause| invalid(ErrorCode::InvalidForm, cause))?;
    let Some(rest) = url_path.strip_prefix(KEYS_PREFIX) else {
        return Err(invalid(ErrorCode::InvalidForm, "incorrect key prefix"));
    };
    // etcd's `path.Join("/1", rest)` with its `/1` taken off again.
    let key = path::clean_rooted(&format!("/{rest}"));
    let params = Params::parse(method, &form)?;
    let expire = params.ttl.map(|ttl| expire_at(now, ttl));
    let refresh = params.refresh.unwrap_or(false);
    let Params { recursive, sorted, quorum, stream, dir, prev_index, prev_value, value, .. } = params;
    let has_compare = prev_index > 0 || !prev_value.is_empty();
    let op = match method {
        KeysMethod::Head => KeysOp::Get { recursive, sorted, quorum: false },
        KeysMethod::Get if params.wait && !quorum => KeysOp::Watch { recursive, stream, wait_index: params.wait_index },
        KeysMethod::Get => KeysOp::Get { recursive, sorted, quorum },
        KeysMethod::Put => KeysOp::Write(match params.prev_exist {
            Some(true) if !has_compare => Write::Update { key: key.clone(), value, expire, refresh },
            Some(false) => Write::Create { key: key.clone(), value, dir, unique: false, expire },
            Some(true) | None if has_compare => {
                Write::CompareAndSwap { key: key.clone(), prev_value, prev_index, value, expire, refresh }
            }
            _ => Write::Set { key: key.clone(), value, dir, expire, refresh },
        }),
        KeysMethod::Post => KeysOp::Write(Write::Create { key: key.clone(), value, dir, unique: true, expire }),
        KeysMethod::Delete if has_compare => {
            KeysOp::Write(Write::CompareAndDelete { key: key.clone(), prev_value, prev_index })
        }
        KeysMethod::Delete => KeysOp::Write(Write::Delete { key: key.clone(), dir, recursive }),
    };
    Ok(KeysRequest { key, op, no_value_on_success: params.no_value_on_success })
}

/// `now + ttl` seconds with Go's arithmetic: a `time.Duration` of the
/// seconds wraps past 2^63 ns, it does not fail.
fn expire_at(now: Nanos, ttl: u64) -> Nanos {
    now.wrapping_add((ttl as i64).wrapping_mul(1_000_000_000))
}

/// The parameters etcd reads, checked in its order.
struct Params {
    prev_index: u64,
    wait_index: u64,
    recursive: bool,
    sorted: bool,
    wait: bool,
    dir: bool,
    quorum: bool,
    stream: bool,
    prev_value: String,
    no_value_on_success: bool,
    ttl: Option<u64>,
    prev_exist: Option<bool>,
    refresh: Option<bool>,
    value: String,
}

impl Params {
    fn parse(method: KeysMethod, form: &Form) -> Result<Params, V2Error> {
        let index = |name: &str| {
            get_uint(form, name).ok_or_else(|| invalid(ErrorCode::IndexNan, format!("invalid value for \"{name}\"")))
        };
        let prev_index = index("prevIndex")?;
        let wait_index = index("waitIndex")?;
        let flag = |name: &str| {
            get_bool(form, name)
                .ok_or_else(|| invalid(ErrorCode::InvalidField, format!("invalid value for \"{name}\"")))
        };
        let recursive = flag("recursive")?;
        let sorted = flag("sorted")?;
        let wait = flag("wait")?;
        let dir = flag("dir")?;
        let quorum = flag("quorum")?;
        let stream = flag("stream")?;
        if wait && method != KeysMethod::Get {
            return Err(invalid(ErrorCode::InvalidField, "\"wait\" can only be used with GET requests"));
        }
        let prev_value = form.value("prevValue").to_owned();
        if form.has("prevValue") && prev_value.is_empty() {
            return Err(invalid(ErrorCode::PrevValueRequired, "\"prevValue\" cannot be empty"));
        }
        let no_value_on_success = flag("noValueOnSuccess")?;
        // An empty `ttl=` is no TTL at all (and removes one on update).
        let ttl = match form.value("ttl") {
            "" => None,
            _ => Some(get_uint(form, "ttl").ok_or_else(|| invalid(ErrorCode::TtlNan, "invalid value for \"ttl\""))?),
        };
        let prev_exist = optional_bool(form, "prevExist")?;
        let refresh = optional_bool(form, "refresh")?;
        if refresh == Some(true) {
            if !form.value("value").is_empty() {
                return Err(invalid(ErrorCode::RefreshValue, "A value was provided on a refresh"));
            }
            if ttl.is_none() {
                return Err(invalid(ErrorCode::RefreshTtlRequired, "No TTL value set"));
            }
        }
        Ok(Params {
            prev_index,
            wait_index,
            recursive,
            sorted,
            wait,
            dir,
            quorum,
            stream,
            prev_value,
            no_value_on_success,
            ttl,
            prev_exist,
            refresh,
            value: form.value("value").to_owned(),
        })
    }
}

/// etcd's `getUint64`: 0 when absent, `None` when the first value is bad.
fn get_uint(form: &Form, name: &str) -> Option<u64> {
    form.first(name).map_or(Some(0), |value| form::parse_uint(value, 10))
}

/// etcd's `getBool`: false when absent, `None` when the first value is bad.
fn get_bool(form: &Form, name: &str) -> Option<bool> {
    form.first(name).map_or(Some(false), form::parse_bool)
}

/// `prevExist` and `refresh`: absent is neither true nor false, and
/// their errors name them without quotes.
fn optional_bool(form: &Form, name: &str) -> Result<Option<bool>, V2Error> {
    match form.first(name) {
        None => Ok(None),
        Some(value) => form::parse_bool(value)
            .map(Some)
            .ok_or_else(|| invalid(ErrorCode::InvalidField, format!("invalid value for {name}"))),
    }
}

fn invalid(code: ErrorCode, cause: impl Into<String>) -> V2Error {
    V2Error::new(code, cause, 0)
}

/// The keys handler.
pub(super) async fn serve(v2: &V2, request: Request, path: &str) -> Response {
    let Some(method) = KeysMethod::from_http(request.method()) else {
        return super::method_not_allowed(ALLOW);
    };
    let cluster_id = cluster_id_header(v2.member.cluster_id());
    let raw_query = request.uri().query().map(str::to_owned);
    let content_type = header_string(request.headers(), header::CONTENT_TYPE);
    let mut body = Vec::new();
    if method.reads_form_body() && form::is_urlencoded(content_type.as_deref()) {
        match read_body(request.into_body(), form::MAX_FORM_BYTES).await {
            Ok(read) => body = read,
            Err(BodyError::TooLarge) => {
                return error_reply(&cluster_id, &invalid(ErrorCode::InvalidForm, "http: POST too large"))
            }
            Err(BodyError::Read(cause)) => return error_reply(&cluster_id, &invalid(ErrorCode::InvalidForm, cause)),
        }
    }
    let now = unix_nanos();
    match parse_keys_request(method, path, raw_query.as_deref(), content_type.as_deref(), &body, now) {
        Ok(request) => answer(v2, &cluster_id, request).await,
        Err(err) => error_reply(&cluster_id, &err),
    }
}

async fn answer(v2: &V2, cluster_id: &str, request: KeysRequest) -> Response {
    let KeysRequest { key, op, no_value_on_success } = request;
    let member = &v2.member;
    let outcome = match op {
        KeysOp::Get { recursive, sorted, quorum: false } => Ok(member.v2_get(&key, recursive, sorted)),
        KeysOp::Get { recursive, sorted, quorum: true } => member.v2_quorum_get(&key, recursive, sorted).await,
        KeysOp::Watch { recursive, stream, wait_index } => {
            return match member.v2_watch(&key, recursive, stream, wait_index) {
                Ok(watcher) => watch_reply(v2, cluster_id, watcher, stream),
                Err(err) => error_reply(cluster_id, &err),
            };
        }
        KeysOp::Write(write) => member.v2_write(write).await,
    };
    match outcome {
        Ok(Ok(event)) => event_reply(v2, cluster_id, &event, no_value_on_success),
        Ok(Err(err)) => error_reply(cluster_id, &err),
        Err(err) => error_reply(cluster_id, &raft_error(err)),
    }
}

/// etcd's answer to any error that is not the store's: 300 with the
/// error's text as its cause.
fn raft_error(err: NodeError) -> V2Error {
    let status = keel_grpc_api::node_error(err);
    V2Error::new(ErrorCode::RaftInternal, status.message(), 0)
}

/// 201 for a create (and a set that created), 200 otherwise.
fn created(event: &Event) -> bool {
    event.action == Action::Create || (event.action == Action::Set && event.prev_node.is_none())
}

/// Whether `noValueOnSuccess` applies to this event's action.
fn drops_nodes(action: Action) -> bool {
    matches!(action, Action::Set | Action::CompareAndSwap | Action::Create | Action::Update)
}

fn event_reply(v2: &V2, cluster_id: &str, event: &Event, no_value_on_success: bool) -> Response {
    let status = if created(event) { StatusCode::CREATED } else { StatusCode::OK };
    let body = event.to_json(unix_nanos(), no_value_on_success && drops_nodes(event.action));
    let position = v2.member.raft_position();
    let (index, raft_index, raft_term) =
        (event.index.to_string(), position.index.to_string(), position.term.to_string());
    let headers = [
        ("content-type", JSON),
        ("x-etcd-cluster-id", cluster_id),
        ("x-etcd-index", index.as_str()),
        ("x-raft-index", raft_index.as_str()),
        ("x-raft-term", raft_term.as_str()),
    ];
    respond(status, &headers, super::go_body(body))
}

/// A v2 error: its status, `X-Etcd-Index` = its index, no raft headers.
fn error_reply(cluster_id: &str, err: &V2Error) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let index = err.index.to_string();
    let headers = [("content-type", JSON), ("x-etcd-cluster-id", cluster_id), ("x-etcd-index", index.as_str())];
    respond(status, &headers, Body::from(err.to_json()))
}

/// A watch: the headers at once (`X-Etcd-Index` = the index the watch was
/// registered at), then one chunk per event; without `stream` the answer
/// ends after the first. When the client goes away hyper drops the body,
/// and with it the watcher, which unregisters it.
fn watch_reply(v2: &V2, cluster_id: &str, watcher: Watcher, stream: bool) -> Response {
    let position = v2.member.raft_position();
    let (index, raft_index, raft_term) =
        (watcher.start_index.to_string(), position.index.to_string(), position.term.to_string());
    let events = futures::stream::unfold(Some(watcher), move |watcher| async move {
        let mut watcher = watcher?;
        // None: the store dropped the watcher (its buffer overflowed) and the
        // answer ends without an error, as etcd's does.
        let event = watcher.next().await?;
        let chunk = Bytes::from(event.to_json(unix_nanos(), false));
        Some((Ok::<_, Infallible>(chunk), stream.then_some(watcher)))
    });
    let headers = [
        ("content-type", JSON),
        ("x-etcd-cluster-id", cluster_id),
        ("x-etcd-index", index.as_str()),
        ("x-raft-index", raft_index.as_str()),
        ("x-raft-term", raft_term.as_str()),
    ];
    respond(StatusCode::OK, &headers, Body::from_stream(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Nanos = 1_780_000_000_000_000_000;
    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn parse(method: KeysMethod, path: &str, query: &str, body: &str) -> Result<KeysRequest, V2Error> {
        let query = (!query.is_empty()).then_some(query);
        parse_keys_request(method, path, query, FORM, body.as_bytes(), NOW)
    }

    fn write(method: KeysMethod, query: &str) -> Write {
        match parse(method, "/v2/keys/k", query, "").unwrap().op {
            KeysOp::Write(write) => write,
            other => panic!("{query}: not a write: {other:?}"),
        }
    }

    fn error(method: KeysMethod, query: &str) -> (ErrorCode, String) {
        let err = parse(method, "/v2/keys/k", query, "").unwrap_err();
        assert_eq!(err.index, 0, "{query}");
        (err.code, err.cause)
    }

    fn key(k: &str) -> String {
        k.to_owned()
    }

    #[test]
    fn keys_are_user_keys() {
        let cases = [
            ("/v2/keys", "/"),
            ("/v2/keys/", "/"),
            ("/v2/keys/foo", "/foo"),
            ("/v2/keys/foo/", "/foo"),
            ("/v2/keys/a/b", "/a/b"),
            ("/v2/keys/sp ace", "/sp ace"),
            ("/v2/keys/_hidden", "/_hidden"),
        ];
        for (path, want) in cases {
            assert_eq!(parse(KeysMethod::Get, path, "", "").unwrap().key, want, "{path}");
        }
        let err = parse(KeysMethod::Get, "/v2/other", "", "").unwrap_err();
        assert_eq!((err.code, err.cause.as_str()), (ErrorCode::InvalidForm, "incorrect key prefix"));
    }

    #[test]
    fn form_values_body_first_and_first_wins() {
        let request = parse(KeysMethod::Put, "/v2/keys/f3", "value=a&value=b", "value=c&value=d").unwrap();
        let want = Write::Set { key: key("/f3"), value: "c".into(), dir: false, expire: None, refresh: false };
        assert_eq!(request.op, KeysOp::Write(want));
        // A JSON body is not a form: the value is the query's, or "".
        let request =
            parse_keys_request(KeysMethod::Put, "/v2/keys/f", None, Some("application/json"), b"value=x", NOW).unwrap();
        let want = Write::Set { key: key("/f"), value: "".into(), dir: false, expire: None, refresh: false };
        assert_eq!(request.op, KeysOp::Write(want));
        // A DELETE body is never read.
        let request = parse(KeysMethod::Delete, "/v2/keys/d", "", "dir=true").unwrap();
        assert_eq!(request.op, KeysOp::Write(Write::Delete { key: key("/d"), dir: false, recursive: false }));
    }

    #[test]
    fn malformed_forms_are_210() {
        let err = parse(KeysMethod::Put, "/v2/keys/f2", "", "value=%zz").unwrap_err();
        assert_eq!((err.code, err.index), (ErrorCode::InvalidForm, 0));
        assert_eq!(err.cause, r#"invalid URL escape "%zz""#);
        let err = parse(KeysMethod::Get, "/v2/keys/f2", "recursive=%zz", "").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidForm);
        // The form error comes before every other check.
        let err = parse(KeysMethod::Get, "/v2/keys/f2", "prevIndex=x&a=%zz", "").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidForm);
    }

    #[test]
    fn validation_order_and_bodies() {
        use ErrorCode::*;
        let get = KeysMethod::Get;
        let put = KeysMethod::Put;
        let cases: &[(KeysMethod, &str, ErrorCode, &str)] = &[
            (get, "prevIndex=abc&waitIndex=x", IndexNan, r#"invalid value for "prevIndex""#),
            (get, "prevIndex=", IndexNan, r#"invalid value for "prevIndex""#),
            (get, "prevIndex=-1", IndexNan, r#"invalid value for "prevIndex""#),
            (get, "waitIndex=abc&recursive=x", IndexNan, r#"invalid value for "waitIndex""#),
            (get, "waitIndex=", IndexNan, r#"invalid value for "waitIndex""#),
            (get, "recursive=maybe&sorted=x", InvalidField, r#"invalid value for "recursive""#),
            (get, "recursive=", InvalidField, r#"invalid value for "recursive""#),
            (get, "sorted=x&wait=x", InvalidField, r#"invalid value for "sorted""#),
            (get, "wait=maybe&dir=x", InvalidField, r#"invalid value for "wait""#),
            (get, "dir=x&quorum=x", InvalidField, r#"invalid value for "dir""#),
            (get, "quorum=maybe&stream=x", InvalidField, r#"invalid value for "quorum""#),
            (get, "stream=x&prevValue=", InvalidField, r#"invalid value for "stream""#),
            (put, "wait=true&prevValue=", InvalidField, r#""wait" can only be used with GET requests"#),
            (KeysMethod::Head, "wait=true", InvalidField, r#""wait" can only be used with GET requests"#),
            (put, "prevValue=&noValueOnSuccess=x", PrevValueRequired, r#""prevValue" cannot be empty"#),
            (put, "noValueOnSuccess=x&ttl=abc", InvalidField, r#"invalid value for "noValueOnSuccess""#),
            (put, "ttl=abc&prevExist=x", TtlNan, r#"invalid value for "ttl""#),
            (put, "ttl=-1", TtlNan, r#"invalid value for "ttl""#),
            (put, "ttl=+5", TtlNan, r#"invalid value for "ttl""#),
            (put, "prevExist=maybe&refresh=x", InvalidField, "invalid value for prevExist"),
            (put, "refresh=maybe", InvalidField, "invalid value for refresh"),
            (put, "refresh=true&value=v&ttl=5", RefreshValue, "A value was provided on a refresh"),
            (put, "refresh=true&value=v", RefreshValue, "A value was provided on a refresh"),
            (put, "refresh=true", RefreshTtlRequired, "No TTL value set"),
            (put, "refresh=true&ttl=", RefreshTtlRequired, "No TTL value set"),
        ];
        for &(method, query, code, cause) in cases {
            assert_eq!(error(method, query), (code, cause.to_owned()), "{method:?} {query}");
        }
    }

    #[test]
    fn accepted_edge_values() {
        // A present but empty value is fine on refresh; the first value wins.
        let write = write(KeysMethod::Put, "refresh=true&value=&ttl=5&ttl=abc");
        let want = Write::Set {
            key: key("/k"),
            value: "".into(),
            dir: false,
            expire: Some(NOW + 5_000_000_000),
            refresh: true,
        };
        assert_eq!(write, want);
        // Parameters that do not apply are ignored, but still checked.
        let request = parse(KeysMethod::Put, "/v2/keys/k", "recursive=TRUE&dir=F&sorted=1", "").unwrap();
        assert!(matches!(request.op, KeysOp::Write(Write::Set { dir: false, .. })));
        // refresh=false needs nothing.
        assert!(matches!(write_of("refresh=false&value=v"), Write::Set { refresh: false, .. }));
    }

    fn write_of(query: &str) -> Write {
        write(KeysMethod::Put, query)
    }

    #[test]
    fn ttls() {
        assert!(matches!(write_of("value=v&ttl="), Write::Set { expire: None, .. }));
        assert!(matches!(write_of("value=v&ttl=0"), Write::Set { expire: Some(NOW), .. }));
        assert!(
            matches!(write_of("value=v&ttl=100"), Write::Set { expire: Some(e), .. } if e == NOW + 100_000_000_000)
        );
        // The first ttl is empty: no TTL, whatever follows.
        assert!(matches!(write_of("ttl=&ttl=5"), Write::Set { expire: None, .. }));
        // Go's Duration wraps instead of failing.
        assert!(matches!(write_of("ttl=18446744073709551615"), Write::Set { expire: Some(_), .. }));
        assert_eq!(expire_at(NOW, 10), NOW + 10_000_000_000);
    }

    #[test]
    fn put_dispatch() {
        let k = || key("/k");
        assert_eq!(
            write_of("value=v"),
            Write::Set { key: k(), value: "v".into(), dir: false, expire: None, refresh: false }
        );
        assert_eq!(
            write_of("dir=true"),
            Write::Set { key: k(), value: "".into(), dir: true, expire: None, refresh: false }
        );
        assert_eq!(
            write_of("value=v&prevExist=true"),
            Write::Update { key: k(), value: "v".into(), expire: None, refresh: false }
        );
        assert_eq!(
            write_of("value=v&prevExist=true&prevValue=a"),
            Write::CompareAndSwap {
                key: k(),
                prev_value: "a".into(),
                prev_index: 0,
                value: "v".into(),
                expire: None,
                refresh: false
            }
        );
        assert_eq!(
            write_of("value=v&prevExist=true&prevIndex=7"),
            Write::CompareAndSwap {
                key: k(),
                prev_value: "".into(),
                prev_index: 7,
                value: "v".into(),
                expire: None,
                refresh: false
            }
        );
        assert_eq!(
            write_of("value=v&prevExist=false&prevValue=a&prevIndex=3&dir=true"),
            Write::Create { key: k(), value: "v".into(), dir: true, unique: false, expire: None }
        );
        assert_eq!(
            write_of("value=v&prevValue=a"),
            Write::CompareAndSwap {
                key: k(),
                prev_value: "a".into(),
                prev_index: 0,
                value: "v".into(),
                expire: None,
                refresh: false
            }
        );
        assert_eq!(
            write_of("value=v&prevIndex=0"),
            Write::Set { key: k(), value: "v".into(), dir: false, expire: None, refresh: false }
        );
        assert_eq!(
            write_of("prevExist=true&refresh=true&ttl=5"),
            Write::Update { key: k(), value: "".into(), expire: Some(NOW + 5_000_000_000), refresh: true }
        );
    }

    #[test]
    fn post_and_delete_dispatch() {
        assert_eq!(
            write(KeysMethod::Post, "value=job&prevExist=true&prevValue=x&ttl=1"),
            Write::Create {
                key: key("/k"),
                value: "job".into(),
                dir: false,
                unique: true,
                expire: Some(NOW + 1_000_000_000)
            }
        );
        assert_eq!(
            write(KeysMethod::Delete, "dir=true&recursive=true"),
            Write::Delete { key: key("/k"), dir: true, recursive: true }
        );
        assert_eq!(
            write(KeysMethod::Delete, "recursive=true"),
            Write::Delete { key: key("/k"), dir: false, recursive: true }
        );
        assert_eq!(
            write(KeysMethod::Delete, "prevValue=a&dir=true&recursive=true"),
            Write::CompareAndDelete { key: key("/k"), prev_value: "a".into(), prev_index: 0 }
        );
        assert_eq!(
            write(KeysMethod::Delete, "prevIndex=4"),
            Write::CompareAndDelete { key: key("/k"), prev_value: "".into(), prev_index: 4 }
        );
    }

    #[test]
    fn read_dispatch() {
        let op = |method, query| parse(method, "/v2/keys/k", query, "").unwrap().op;
        assert_eq!(op(KeysMethod::Get, ""), KeysOp::Get { recursive: false, sorted: false, quorum: false });
        assert_eq!(
            op(KeysMethod::Get, "recursive=true&sorted=1"),
            KeysOp::Get { recursive: true, sorted: true, quorum: false }
        );
        assert_eq!(op(KeysMethod::Get, "quorum=true"), KeysOp::Get { recursive: false, sorted: false, quorum: true });
        assert_eq!(op(KeysMethod::Head, "quorum=true"), KeysOp::Get { recursive: false, sorted: false, quorum: false });
        assert_eq!(
            op(KeysMethod::Get, "wait=true&waitIndex=51&recursive=true&stream=true"),
            KeysOp::Watch { recursive: true, stream: true, wait_index: 51 }
        );
        assert_eq!(op(KeysMethod::Get, "wait=true"), KeysOp::Watch { recursive: false, stream: false, wait_index: 0 });
        // With quorum, wait is ignored.
        assert_eq!(
            op(KeysMethod::Get, "quorum=true&wait=true&waitIndex=51"),
            KeysOp::Get { recursive: false, sorted: false, quorum: true }
        );
        let request = parse(KeysMethod::Put, "/v2/keys/nv", "noValueOnSuccess=true", "value=x").unwrap();
        assert!(request.no_value_on_success);
    }

    #[test]
    fn methods() {
        assert_eq!(KeysMethod::from_http(&Method::GET), Some(KeysMethod::Get));
        assert_eq!(KeysMethod::from_http(&Method::HEAD), Some(KeysMethod::Head));
        assert_eq!(KeysMethod::from_http(&Method::PATCH), None);
        assert_eq!(KeysMethod::from_http(&Method::OPTIONS), None);
    }

    fn event(action: Action, with_prev: bool) -> Event {
        let node = keel_v2store::NodeView {
            key: "/k".into(),
            value: Some("v".into()),
            dir: false,
            expiration: None,
            nodes: None,
            modified_index: 1,
            created_index: 1,
        };
        Event { action, prev_node: with_prev.then(|| node.clone()), node, index: 1, refresh: false }
    }

    #[test]
    fn created_is_201() {
        assert!(created(&event(Action::Create, false)));
        assert!(created(&event(Action::Set, false)));
        assert!(!created(&event(Action::Set, true)));
        assert!(!created(&event(Action::Update, true)));
        assert!(!created(&event(Action::Get, false)));
    }

    #[test]
    fn error_headers() {
        let response = error_reply("5a6aeda0657d4036", &V2Error::new(ErrorCode::KeyNotFound, "/missing", 5));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let names: Vec<&str> = response.headers().keys().map(|name| name.as_str()).collect();
        assert_eq!(names[3..], ["content-type", "x-etcd-cluster-id", "x-etcd-index"]);
        assert_eq!(response.headers()["x-etcd-cluster-id"], "5a6aeda0657d4036");
        assert_eq!(response.headers()["x-etcd-index"], "5");
        let response = error_reply("1", &invalid(ErrorCode::InvalidField, "invalid value for \"wait\""));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-etcd-index"], "0");
        let response = error_reply("1", &raft_error(NodeError::Timeout));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-etcd-index"], "0");
    }

    #[test]
    fn no_value_on_success_applies_to_writes_that_set() {
        for action in [Action::Set, Action::CompareAndSwap, Action::Create, Action::Update] {
            assert!(drops_nodes(action), "{action:?}");
        }
        for action in [Action::Get, Action::Delete, Action::CompareAndDelete, Action::Expire] {
            assert!(!drops_nodes(action), "{action:?}");
        }
    }
}
