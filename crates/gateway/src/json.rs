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

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use keel_grpc_api::{ApiOptions, AuthService, ClusterService, KvService, LeaseService, MaintenanceService};
use keel_grpc_api::{ElectionService, LockService};
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
}

/// The JSON gateway's routes for `member`, with the gRPC API's options.
pub fn routes(member: Arc<Member>, options: &ApiOptions) -> Router {
    let services = Arc::new(Services {
        kv: KvService::new(member.clone(), options.max_txn_ops),
        lease: LeaseService::new(member.clone()),
        cluster: ClusterService::new(member.clone()),
        maintenance: MaintenanceService::new(member.clone(), options.status_errors.clone()),
        auth: AuthService::new(member.clone()),
        lock: LockService::new(member.clone(), options.max_txn_ops),
        election: ElectionService::new(member, options.max_txn_ops),
    });
    let mut router = Router::new();
    for version in VERSIONS {
        // One route: `$path` under every version, calling `$service.$method`.
        macro_rules! unary {
            ($path:literal, $service:ident, $method:ident) => {{
                let services = services.clone();
                router = router.route(
                    &format!("{version}{}", $path),
                    post(move |headers: HeaderMap, body: Bytes| {
                        let services = services.clone();
                        async move {
                            call(&headers, &body, |request| async move { services.$service.$method(request).await })
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
    }
    router
}

/// Decodes `body` (empty: the default request, as grpc-gateway takes an
/// empty body), calls `rpc` with the caller's token, encodes its answer.
async fn call<Req, Resp, F, Fut>(headers: &HeaderMap, body: &[u8], rpc: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let message = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(message) => message,
            Err(err) => return error(&Status::invalid_argument(err.to_string())),
        }
    };
    let mut request = tonic::Request::new(message);
    if let Some(token) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Ok(value) = token.parse() {
            request.metadata_mut().insert("token", value);
        }
    }
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
