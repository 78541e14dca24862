//! etcd's authentication end to end, over gRPC as clientv3 speaks it:
//! enabling needs root, every request is checked with etcd's codes and
//! messages, tokens from one member work on every member, and the auth
//! state survives a restart.

mod common;

use common::{Cluster, Keel};
use keel_proto::authpb::{permission::Type as PermType, Permission};
use keel_proto::etcdserverpb::auth_client::AuthClient;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::request_op::Request as Op;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::*;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("token", token.parse().unwrap());
    request
}

fn put(key: &str) -> PutRequest {
    PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest { key: key.into(), ..Default::default() }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, message: &str) {
    let status = result.expect_err("the request must be refused");
    assert_eq!((status.code(), status.message()), (code, message), "{status:?}");
}

async fn login(auth: &mut AuthClient<Channel>, name: &str, password: &str) -> String {
    let request = AuthenticateRequest { name: name.into(), password: password.into() };
    auth.authenticate(request).await.expect("log in").into_inner().token
}

/// Root with password `rootpw`, and auth on.
async fn enable_with_root(auth: &mut AuthClient<Channel>) -> String {
    auth.user_add(AuthUserAddRequest { name: "root".into(), password: "rootpw".into(), ..Default::default() })
        .await
        .unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() }).await.unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
    login(auth, "root", "rootpw").await
}

/// `alice` (password `alicepw`) with role `app`: read-write on prefix `app/`.
async fn add_alice(auth: &mut AuthClient<Channel>, root: &str) {
    auth.role_add(with_token(AuthRoleAddRequest { name: "app".into() }, root)).await.unwrap();
    let perm = Permission { perm_type: PermType::Readwrite as i32, key: b"app/".to_vec(), range_end: b"app0".to_vec() };
    auth.role_grant_permission(with_token(
        AuthRoleGrantPermissionRequest { name: "app".into(), perm: Some(perm) },
        root,
    ))
    .await
    .unwrap();
    let add = AuthUserAddRequest { name: "alice".into(), password: "alicepw".into(), ..Default::default() };
    auth.user_add(with_token(add, root)).await.unwrap();
    auth.user_grant_role(with_token(AuthUserGrantRoleRequest { user: "alice".into(), role: "app".into() }, root))
        .await
        .unwrap();
}

#[tokio::test]
async fn enabling_needs_root_and_then_every_request_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let mut auth = AuthClient::connect(keel.endpoint()).await.unwrap();
    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();

    assert_refused(
        auth.auth_enable(AuthEnableRequest {}).await,
        Code::FailedPrecondition,
        "etcdserver: root user does not exist",
    );
    auth.user_add(AuthUserAddRequest { name: "root".into(), password: "rootpw".into(), ..Default::default() })
        .await
        .unwrap();
    assert_refused(
        auth.auth_enable(AuthEnableRequest {}).await,
        Code::FailedPrecondition,
        "etcdserver: root user does not have root role",
    );
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() }).await.unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
    let status = auth.auth_status(AuthStatusRequest {}).await.unwrap().into_inner();
    assert!(status.enabled);

    assert_refused(kv.range(get("k")).await, Code::InvalidArgument, "etcdserver: user name is empty");
    assert_refused(kv.put(put("k")).await, Code::InvalidArgument, "etcdserver: user name is empty");
    assert_refused(
        auth.authenticate(AuthenticateRequest { name: "root".into(), password: "wrong".into() }).await,
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    assert_refused(
        auth.authenticate(AuthenticateRequest { name: "nobody".into(), password: "x".into() }).await,
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    assert_refused(
        kv.range(with_token(get("k"), "forged.1")).await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );

    let root = login(&mut auth, "root", "rootpw").await;
    kv.put(with_token(put("secret"), &root)).await.unwrap();
    add_alice(&mut auth, &root).await;
    let alice = login(&mut auth, "alice", "alicepw").await;

    kv.put(with_token(put("app/x"), &alice)).await.unwrap();
    let read = kv.range(with_token(get("app/x"), &alice)).await.unwrap().into_inner();
    assert_eq!(read.kvs.len(), 1);
    let denied = Code::PermissionDenied;
    let message = "etcdserver: permission denied";
    assert_refused(kv.put(with_token(put("secret"), &alice)).await, denied, message);
    assert_refused(kv.range(with_token(get("secret"), &alice)).await, denied, message);
    let prefix = RangeRequest { key: b"app/".to_vec(), range_end: vec![0], ..Default::default() };
    assert_refused(kv.range(with_token(prefix, &alice)).await, denied, message);
    assert_refused(
        kv.delete_range(with_token(DeleteRangeRequest { key: b"secret".to_vec(), ..Default::default() }, &alice)).await,
        denied,
        message,
    );

    // A txn is refused when any branch touches a key the caller may not,
    // even the branch that would not run.
    let txn = TxnRequest {
        compare: vec![],
        success: vec![RequestOp { request: Some(Op::RequestPut(put("app/y"))) }],
        failure: vec![RequestOp { request: Some(Op::RequestPut(put("secret"))) }],
    };
    assert_refused(kv.txn(with_token(txn, &alice)).await, denied, message);
    let read_only = TxnRequest {
        success: vec![RequestOp { request: Some(Op::RequestRange(get("secret"))) }],
        ..Default::default()
    };
    assert_refused(kv.txn(with_token(read_only, &alice)).await, denied, message);
    let unchanged = kv.range(with_token(get("app/y"), &root)).await.unwrap().into_inner();
    assert!(unchanged.kvs.is_empty(), "nothing of a refused txn is written");

    // Revoking a lease deletes its keys: write permission on each is needed.
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let lease = leases.lease_grant(with_token(LeaseGrantRequest { ttl: 60, id: 0 }, &root)).await.unwrap().into_inner();
    kv.put(with_token(PutRequest { lease: lease.id, ..put("secret/leased") }, &root)).await.unwrap();
    assert_refused(leases.lease_revoke(with_token(LeaseRevokeRequest { id: lease.id }, &alice)).await, denied, message);
    assert_refused(
        leases.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );

    // A watch on a key alice may not read is created and canceled at once.
    let mut watch = WatchClient::connect(keel.endpoint()).await.unwrap();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"secret".to_vec(),
            ..Default::default()
        })),
    };
    let mut responses = watch.watch(with_token(tokio_stream::iter(vec![create]), &alice)).await.unwrap().into_inner();
    let refused = responses.message().await.unwrap().expect("a response");
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.cancel_reason, "rpc error: code = PermissionDenied desc = etcdserver: permission denied");

    // Lock runs etcd's recipe as the caller: on its keys only.
    let mut locks = keel_proto::v3lockpb::lock_client::LockClient::connect(keel.endpoint()).await.unwrap();
    let lock = |name: &str| keel_proto::v3lockpb::LockRequest { name: name.into(), lease: 0 };
    let held = locks.lock(with_token(lock("app/lock"), &alice)).await.unwrap().into_inner();
    assert!(held.key.starts_with(b"app/lock/"));
    assert_refused(locks.lock(with_token(lock("secret-lock"), &alice)).await, Code::Unknown, message);

    // Managing auth is root's.
    assert_refused(auth.user_list(with_token(AuthUserListRequest {}, &alice)).await, denied, message);
    assert_refused(auth.auth_disable(with_token(AuthDisableRequest {}, &alice)).await, denied, message);
    let own = auth.user_get(with_token(AuthUserGetRequest { name: "alice".into() }, &alice)).await.unwrap();
    assert_eq!(own.into_inner().roles, vec!["app".to_string()]);
    assert_refused(
        auth.user_delete(with_token(AuthUserDeleteRequest { name: "root".into() }, &root)).await,
        Code::InvalidArgument,
        "etcdserver: invalid auth management",
    );

    // Taking a role away takes effect at once; a new password voids old tokens.
    auth.user_revoke_role(with_token(AuthUserRevokeRoleRequest { name: "alice".into(), role: "app".into() }, &root))
        .await
        .unwrap();
    assert_refused(kv.put(with_token(put("app/x"), &alice)).await, denied, message);
    let change = AuthUserChangePasswordRequest { name: "alice".into(), password: "new".into(), ..Default::default() };
    auth.user_change_password(with_token(change, &root)).await.unwrap();
    assert_refused(
        kv.range(with_token(get("app/x"), &alice)).await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    login(&mut auth, "alice", "new").await;

    auth.auth_disable(with_token(AuthDisableRequest {}, &root)).await.unwrap();
    kv.put(put("open")).await.unwrap();
}

#[tokio::test]
async fn auth_stays_enabled_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = Keel::start(dir.path()).await;
    let mut auth = AuthClient::connect(keel.endpoint()).await.unwrap();
    let root = enable_with_root(&mut auth).await;
    add_alice(&mut auth, &root).await;
    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();
    kv.put(with_token(put("app/kept"), &root)).await.unwrap();
    keel.terminate();

    let keel = Keel::spawn(dir.path(), keel.port, &[]);
    keel.wait_ready().await;
    let mut auth = AuthClient::connect(keel.endpoint()).await.unwrap();
    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();
    assert_refused(kv.range(get("app/kept")).await, Code::InvalidArgument, "etcdserver: user name is empty");
    assert_refused(
        kv.range(with_token(get("app/kept"), &root)).await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    let alice = login(&mut auth, "alice", "alicepw").await;
    let read = kv.range(with_token(get("app/kept"), &alice)).await.unwrap().into_inner();
    assert_eq!(read.kvs.len(), 1);
    assert_refused(
        kv.put(with_token(put("elsewhere"), &alice)).await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
}

#[tokio::test]
async fn a_token_from_one_member_works_on_every_member() {
    let cluster = Cluster::start(3).await;
    let mut auth = AuthClient::connect(cluster.member(0).endpoint()).await.unwrap();
    let root = enable_with_root(&mut auth).await;
    add_alice(&mut auth, &root).await;
    let alice = login(&mut auth, "alice", "alicepw").await;
    for i in 0..3 {
        let mut kv = KvClient::connect(cluster.member(i).endpoint()).await.unwrap();
        kv.put(with_token(put(&format!("app/{i}")), &alice)).await.unwrap();
        assert_refused(
            kv.put(with_token(put("secret"), &alice)).await,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        let mut auth = AuthClient::connect(cluster.member(i).endpoint()).await.unwrap();
        let status = auth.auth_status(AuthStatusRequest {}).await.unwrap().into_inner();
        assert!(status.enabled, "member {i} applied auth enable");
    }
}

/// An ES256 key pair in `dir`: (private key file, public key file).
fn es256_keys(dir: &std::path::Path) -> (String, String) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    std::fs::write(&private, pair.serialize_pem()).unwrap();
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    (private.display().to_string(), public.display().to_string())
}

#[tokio::test]
async fn jwt_tokens_are_verified_by_every_member_and_go_stale_with_the_auth_state() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = es256_keys(keys.path());
    let spec = format!("jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=10m");
    let cluster = Cluster::start_with(3, &["--auth-token", &spec, "--bcrypt-cost", "4"]).await;
    let mut auth = AuthClient::connect(cluster.member(0).endpoint()).await.unwrap();
    let root = enable_with_root(&mut auth).await;
    assert_eq!(root.split('.').count(), 3, "a JWT: header, claims, signature");
    add_alice(&mut auth, &root).await;
    let alice = login(&mut auth, "alice", "alicepw").await;
    for i in 0..3 {
        let mut kv = KvClient::connect(cluster.member(i).endpoint()).await.unwrap();
        kv.put(with_token(put(&format!("app/{i}")), &alice)).await.unwrap();
    }
    // Any change of the auth state voids tokens issued before it.
    auth.role_add(with_token(AuthRoleAddRequest { name: "other".into() }, &root)).await.unwrap();
    let mut kv = KvClient::connect(cluster.member(2).endpoint()).await.unwrap();
    assert_refused(
        kv.put(with_token(put("app/late"), &alice)).await,
        Code::InvalidArgument,
        "etcdserver: revision of auth store is old",
    );
    let alice = login(&mut auth, "alice", "alicepw").await;
    kv.put(with_token(put("app/late"), &alice)).await.unwrap();
    // Signed by another key: refused.
    let forged = format!("{}{}", &alice[..alice.len() - 2], if alice.ends_with("AA") { "BB" } else { "AA" });
    assert_refused(
        kv.range(with_token(get("app/0"), &forged)).await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
}

#[tokio::test]
async fn a_bad_jwt_key_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("broken.pem");
    std::fs::write(&key, "not a key").unwrap();
    let spec = format!("jwt,pub-key={},sign-method=RS256", key.display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--data-dir", &dir.path().join("data").display().to_string(), "--auth-token", &spec])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn keel_client_logs_in_again_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::spawn(dir.path(), common::free_port(), &["--auth-token-ttl".into(), "1".into()]);
    keel.wait_ready().await;
    let mut auth = AuthClient::connect(keel.endpoint()).await.unwrap();
    let root = enable_with_root(&mut auth).await;
    add_alice(&mut auth, &root).await;

    let options = keel_client::ClientOptions {
        credentials: Some(keel_client::Credentials::new("alice", "alicepw")),
        ..Default::default()
    };
    let client = keel_client::Client::connect([keel.endpoint()], options).await.unwrap();
    client.put("app/a", "1").await.unwrap();
    let raw = login(&mut auth, "alice", "alicepw").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();
    assert_refused(
        kv.range(with_token(get("app/a"), &raw)).await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    client.put("app/a", "2").await.expect("the client logs in again unseen");
    let found = client.get("app/a").await.unwrap();
    assert_eq!(found.kvs[0].value, b"2");

    let wrong = keel_client::ClientOptions {
        credentials: Some(keel_client::Credentials::new("alice", "wrong")),
        ..Default::default()
    };
    let refused = keel_client::Client::connect([keel.endpoint()], wrong).await.unwrap_err();
    assert!(refused.to_string().contains("authentication failed"), "{refused}");
}

/// A member that was down while auth was turned on and users were added
/// catches up by the leader's snapshot (the log is compacted meanwhile),
/// and comes back with the same auth state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_caught_up_by_snapshot_has_the_auth_state() {
    let mut cluster =
        Cluster::start_with(3, &["--snapshot-count", "50", "--snapshot-catchup-entries", "5", "--bcrypt-cost", "4"])
            .await;
    cluster.kill9(2);
    cluster.wait_for_quorum(0).await;
    let mut auth = AuthClient::connect(cluster.member(0).endpoint()).await.unwrap();
    let root = enable_with_root(&mut auth).await;
    add_alice(&mut auth, &root).await;
    let mut kv = KvClient::connect(cluster.member(0).endpoint()).await.unwrap();
    for n in 0..120 {
        kv.put(with_token(put(&format!("app/{}", n % 10)), &root)).await.unwrap();
    }

    cluster.restart(2).await;
    let mut auth = AuthClient::connect(cluster.member(2).endpoint()).await.unwrap();
    let mut kv = KvClient::connect(cluster.member(2).endpoint()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = auth.auth_status(AuthStatusRequest {}).await.map(|s| s.into_inner());
        if status.as_ref().is_ok_and(|s| s.enabled) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "member 2 never learnt auth is on: {status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_refused(kv.range(get("app/1")).await, Code::InvalidArgument, "etcdserver: user name is empty");
    let alice = login(&mut auth, "alice", "alicepw").await;
    let serializable = RangeRequest { serializable: true, ..get("app/1") };
    let read = kv.range(with_token(serializable, &alice)).await.unwrap().into_inner();
    assert_eq!(read.kvs.len(), 1);
    assert_refused(
        kv.put(with_token(put("secret"), &alice)).await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
}
