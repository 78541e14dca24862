//! etcd's JSON gateway (grpc-gateway): every unary RPC as `POST
//! /v3/<service>/<method>` with a JSON body, answered in JSON, under
//! `/v3beta/` too, as etcd 3.4 serves them (3.4 dropped `/v3alpha/`).
//!
//! No RPC is implemented twice: each route decodes the body into the
//! request message, calls the same tonic service the gRPC API runs (its
//! validation, auth and error mapping), and encodes the answer. The JSON is
//! the protobuf JSON mapping with the .proto field names (grpc-gateway's
//! `OrigName`): 64-bit integers as strings, bytes as base64, enums by name,
//! default values left out. The auth token comes in the `Authorization`
//! header, which the services read as gRPC's `token` metadata.
//!
//! Errors are grpc-gateway's: the gRPC code's HTTP status and
//! `{"error":…,"code":…,"message":…}`.
//!
//! Streams (`/v3/watch`, `/v3/lease/keepalive`, `/v3/election/observe`,
//! `/v3/maintenance/snapshot`) answer one `{"result":…}` per line as the
//! messages come, never buffered; a bidirectional stream's requests are the
//! JSON messages of the request body, one after another.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::{Stream, StreamExt};
use keel_grpc_api::{ApiOptions, AuthService, ClusterService, KvService, LeaseService, MaintenanceService};
use keel_grpc_api::{ElectionService, LockService, WatchService};
use keel_node::Member;
use keel_proto::etcdserverpb::auth_server::Auth;
use keel_proto::etcdserverpb::cluster_server::Cluster;
use keel_proto::etcdserverpb::kv_server::Kv;
use keel_proto::etcdserverpb::lease_server::Lease;
use keel_proto::etcdserverpb::maintenance_server::Maintenance;
use keel_proto::v3electionpb::election_server::Election;
use keel_proto::v3lockpb::lock_server::Lock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

/// The prefixes etcd 3.4's gateway answers under.
const VERSIONS: [&str; 2] = ["/v3", "/v3beta"];

/// The services the routes call, shared by every route.
struct Services {
    kv: KvService,
    lease: LeaseService,
    cluster: ClusterService,
    maintenance: MaintenanceService,
    auth: AuthService,
    lock: LockService,
    election: ElectionService,
    watch: WatchService,
    /// The largest request message gRPC would take (etcd: --max-request-bytes
    /// plus 512 KiB of gRPC overhead).
    max_message: usize,
}

/// etcd's allowance for gRPC framing above --max-request-bytes.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The JSON gateway's routes for `member`, with the gRPC API's options.
pub fn routes(member: Arc<Member>, options: &ApiOptions) -> Router {
    let services = Arc::new(Services {
        kv: KvService::new(member.clone(), options.max_txn_ops),
        lease: LeaseService::new(member.clone()),
        cluster: ClusterService::new(member.clone()),
        maintenance: MaintenanceService::new(member.clone(), options.status_errors.clone()),
        auth: AuthService::new(member.clone()),
        lock: LockService::new(member.clone(), options.max_txn_ops),
        election: ElectionService::new(member.clone(), options.max_txn_ops),
        watch: WatchService::new(member, options.max_request_bytes, options.watch_progress_notify_interval),
        max_message: options.max_request_bytes + GRPC_OVERHEAD_BYTES,
    });
    // JSON carries bytes as base64 (4/3) plus field names: room for the
    // largest message gRPC takes, which `decode` then measures exactly.
    let body_limit = services.max_message * 2;
    let mut router = Router::new();
    for version in VERSIONS {
        // One route: `$path` under every version, calling `$service.$method`.
        macro_rules! unary {
            ($path:literal, $service:ident, $method:ident) => {{
                let services = services.clone();
                router =
                    router.route(
                        &format!("{version}{}", $path),
                        post(move |headers: HeaderMap, body: Bytes| {
                            let services = services.clone();
                            async move {
                                let limit = services.max_message;
                                call(&headers, &body, limit, |request| async move {
                                    services.$service.$method(request).await
                                })
                                .await
                            }
                        }),
                    );
            }};
        }
        unary!("/kv/range", kv, range);
        unary!("/kv/put", kv, put);
        unary!("/kv/deleterange", kv, delete_range);
        unary!("/kv/txn", kv, txn);
        unary!("/kv/compaction", kv, compact);
        unary!("/lease/grant", lease, lease_grant);
        unary!("/lease/revoke", lease, lease_revoke);
        unary!("/kv/lease/revoke", lease, lease_revoke);
        unary!("/lease/timetolive", lease, lease_time_to_live);
        unary!("/kv/lease/timetolive", lease, lease_time_to_live);
        unary!("/lease/leases", lease, lease_leases);
        unary!("/kv/lease/leases", lease, lease_leases);
        unary!("/cluster/member/add", cluster, member_add);
        unary!("/cluster/member/remove", cluster, member_remove);
        unary!("/cluster/member/update", cluster, member_update);
        unary!("/cluster/member/list", cluster, member_list);
        unary!("/cluster/member/promote", cluster, member_promote);
        unary!("/maintenance/alarm", maintenance, alarm);
        unary!("/maintenance/status", maintenance, status);
        unary!("/maintenance/defragment", maintenance, defragment);
        // etcd 3.4 maps both Hash and HashKV here, and answers Hash; 3.5
        // gave HashKV a path of its own.
        unary!("/maintenance/hash", maintenance, hash);
        unary!("/maintenance/hashkv", maintenance, hash_kv);
        unary!("/maintenance/transfer-leadership", maintenance, move_leader);
        unary!("/maintenance/downgrade", maintenance, downgrade);
        unary!("/auth/enable", auth, auth_enable);
        unary!("/auth/disable", auth, auth_disable);
        unary!("/auth/status", auth, auth_status);
        unary!("/auth/authenticate", auth, authenticate);
        unary!("/auth/user/add", auth, user_add);
        unary!("/auth/user/get", auth, user_get);
        unary!("/auth/user/list", auth, user_list);
        unary!("/auth/user/delete", auth, user_delete);
        unary!("/auth/user/changepw", auth, user_change_password);
        unary!("/auth/user/grant", auth, user_grant_role);
        unary!("/auth/user/revoke", auth, user_revoke_role);
        unary!("/auth/role/add", auth, role_add);
        unary!("/auth/role/get", auth, role_get);
        unary!("/auth/role/list", auth, role_list);
        unary!("/auth/role/delete", auth, role_delete);
        unary!("/auth/role/grant", auth, role_grant_permission);
        unary!("/auth/role/revoke", auth, role_revoke_permission);
        unary!("/lock/lock", lock, lock);
        unary!("/lock/unlock", lock, unlock);
        unary!("/election/campaign", election, campaign);
        unary!("/election/proclaim", election, proclaim);
        unary!("/election/leader", election, leader);
        unary!("/election/resign", election, resign);
        // Server streams: one request in, a stream out.
        macro_rules! server_stream {
            ($path:literal, $service:ident, $method:ident) => {{
                let services = services.clone();
                router = router.route(
                    &format!("{version}{}", $path),
                    post(move |headers: HeaderMap, body: Bytes| {
                        let services = services.clone();
                        async move {
                            let request = match decode(&headers, &body, services.max_message) {
                                Ok(request) => request,
                                Err(response) => return response,
                            };
                            match services.$service.$method(request).await {
                                Ok(responses) => stream_response(responses.into_inner()),
                                Err(status) => error(&status),
                            }
                        }
                    }),
                );
            }};
        }
        server_stream!("/maintenance/snapshot", maintenance, snapshot);
        server_stream!("/election/observe", election, observe);
        let watch = services.clone();
        router = router.route(
            &format!("{version}/watch"),
            post(move |headers: HeaderMap, body: Bytes| {
                let services = watch.clone();
                async move { bidi(&headers, &body, true, |caller, requests| services.watch.open(&caller, requests)) }
            }),
        );
        let keep_alive = services.clone();
        router = router.route(
            &format!("{version}/lease/keepalive"),
            post(move |headers: HeaderMap, body: Bytes| {
                let services = keep_alive.clone();
                async move {
                    bidi(&headers, &body, false, |caller, requests| services.lease.keep_alive_stream(&caller, requests))
                }
            }),
        );
    }
    // As etcd's gateway (Go's http.Error), a GET on a POST route says why.
    router
        .method_not_allowed_fallback(|| async { (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n") })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
}

/// Requests of a bidirectional stream, from the body's JSON messages.
type Requests<Req> = Pin<Box<dyn Stream<Item = Result<Req, Status>> + Send>>;

/// A bidirectional stream: the body's messages are the requests; with
/// `stay_open` the client's side is not closed after them (a watch goes on
/// after a half-close, as in etcd), else the answers end with them (a
/// keep-alive stream ends at the client's EOF, as in etcd).
fn bidi<Req, Resp, S>(
    headers: &HeaderMap,
    body: &[u8],
    stay_open: bool,
    open: impl FnOnce(tonic::Request<()>, Requests<Req>) -> S,
) -> Response
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let mut requests = Vec::new();
    for message in serde_json::Deserializer::from_slice(body).into_iter::<Req>() {
        if requests.len() == MAX_STREAM_REQUESTS {
            let refusal = format!("at most {MAX_STREAM_REQUESTS} messages per stream request");
            return error(&Status::invalid_argument(refusal));
        }
        match message {
            Ok(message) => requests.push(Ok(message)),
            Err(err) => return error(&Status::invalid_argument(err.to_string())),
        }
    }
    let requests = futures::stream::iter(requests);
    if !stay_open {
        return stream_response(open(with_token(headers, tonic::Request::new(())), Box::pin(requests)));
    }
    // The client's side ends when the answer does (the HTTP client left):
    // the service then drops the stream and everything it holds.
    let (answer_alive, answer_gone) = tokio::sync::oneshot::channel::<()>();
    let until_gone = futures::stream::once(async move {
        let _ = answer_gone.await;
    })
    .filter_map(|()| futures::future::ready(None));
    let requests: Requests<Req> = Box::pin(requests.chain(until_gone));
    let responses = open(with_token(headers, tonic::Request::new(())), requests).map(move |response| {
        let _alive = &answer_alive;
        response
    });
    stream_response(responses)
}

/// Messages one stream request's body may hold: each watch create is a
/// watcher, so a body cannot make an unbounded number of them.
const MAX_STREAM_REQUESTS: usize = 1000;

/// grpc-gateway's stream framing: `{"result":…}` per message and line; an
/// error ends the stream as its last line.
fn stream_response<Resp, S>(responses: S) -> Response
where
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    #[derive(Serialize)]
    struct Framed<T> {
        result: T,
    }
    #[derive(Serialize)]
    struct StreamError<'a> {
        grpc_code: i32,
        http_code: u16,
        message: &'a str,
        http_status: &'a str,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        error: StreamError<'a>,
    }
    let lines = responses.scan(false, |failed, item| {
        if *failed {
            return futures::future::ready(None);
        }
        let mut line = match item {
            Ok(message) => serde_json::to_vec(&Framed { result: message }).unwrap_or_default(),
            Err(status) => {
                *failed = true;
                let http = http_status(status.code());
                let error = StreamError {
                    grpc_code: status.code() as i32,
                    http_code: http.as_u16(),
                    message: status.message(),
                    http_status: http.canonical_reason().unwrap_or(""),
                };
                serde_json::to_vec(&Failed { error }).unwrap_or_default()
            }
        };
        line.push(b'\n');
        futures::future::ready(Some(Ok::<_, Infallible>(Bytes::from(line))))
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(lines)).into_response()
}

/// `request` with the caller's token from the `Authorization` header.
fn with_token<T>(headers: &HeaderMap, mut request: tonic::Request<T>) -> tonic::Request<T> {
    if let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Ok(value) = token.parse() {
            request.metadata_mut().insert("token", value);
        }
    }
    request
}

/// The request message of `body` (empty: the default message, as
/// grpc-gateway takes an empty body), with the caller's token. A message
/// larger than gRPC would take is refused as etcd's gateway relays gRPC's
/// refusal.
#[allow(clippy::result_large_err)]
fn decode<Req>(headers: &HeaderMap, body: &[u8], max_message: usize) -> Result<tonic::Request<Req>, Response>
where
    Req: DeserializeOwned + Default + prost::Message,
{
    let message: Req = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        serde_json::from_slice(body).map_err(|err| error(&Status::invalid_argument(err.to_string())))?
    };
    let size = message.encoded_len();
    if size > max_message {
        let refusal = format!("grpc: received message larger than max ({size} vs. {max_message})");
        return Err(error(&Status::resource_exhausted(refusal)));
    }
    Ok(with_token(headers, tonic::Request::new(message)))
}

/// Decodes `body`, calls `rpc` with the caller's token, encodes its answer.
async fn call<Req, Resp, F, Fut>(headers: &HeaderMap, body: &[u8], max_message: usize, rpc: F) -> Response
where
    Req: DeserializeOwned + Default + prost::Message,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match decode(headers, body, max_message) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match rpc(request).await {
        Ok(response) => match serde_json::to_vec(response.get_ref()) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(err) => error(&Status::internal(err.to_string())),
        },
        Err(status) => error(&status),
    }
}

/// grpc-gateway's error body, its fields in its order.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

/// grpc-gateway's error answer for `status`.
fn error(status: &Status) -> Response {
    let body = ErrorBody { error: status.message(), message: status.message(), code: status.code() as i32 };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    (http_status(status.code()), [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// grpc-gateway's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}
