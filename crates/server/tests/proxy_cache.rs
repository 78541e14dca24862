//! `keel grpc-proxy start --cache-prefix` (issue 18, point 6), as real
//! processes on loopback: reads through the cache see writes made directly
//! to the cluster (not through the proxy) within the watch's latency when
//! serializable and at once when linearizable; hits are counted in
//! /metrics; the cache stays within `--cache-max-bytes`; from-key ranges
//! under a namespace and nested txns through the proxy are kept current;
//! a caller's cached answers are not served to another caller, nor to
//! the same one once the cluster no longer lets it read them.

mod common;

use std::time::{Duration, Instant};

use common::proxy::ProxyProcess;
use common::{etcd::etcdctl, http_get, wait_for, Keel};
use keel_proto::etcdserverpb::auth_client::AuthClient;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::{
    request_op, AuthenticateRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};
use tonic::transport::Channel;

/// A Keel proxy once it serves /livez (not waiting for a read through it:
/// a read would be cached before the test begins).
async fn start_proxy(endpoints: &str, extra: &[&str]) -> ProxyProcess {
    let proxy = ProxyProcess::keel(endpoints, extra);
    let port = proxy.port;
    wait_for("the proxy to serve /livez", Duration::from_secs(30), || async move {
        http_get(port, "/livez").await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    proxy
}

async fn client(proxy: &ProxyProcess) -> KvClient<Channel> {
    KvClient::connect(proxy.endpoint()).await.unwrap()
}

async fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    common::proxy::metric(&proxy.metrics().await, name)
}

fn range(key: &str, serializable: bool) -> RangeRequest {
    RangeRequest { key: key.as_bytes().to_vec(), serializable, ..Default::default() }
}

async fn value(kv: &mut KvClient<Channel>, key: &str, serializable: bool) -> Option<String> {
    let answer = kv.range(range(key, serializable)).await.unwrap().into_inner();
    answer.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let request = PutRequest { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), ..Default::default() };
    kv.put(request).await.unwrap().into_inner().header.unwrap().revision
}

/// Reads `request` through the proxy until one read is a counted hit, so
/// the cache holds it; returns that answer.
async fn cached(proxy: &ProxyProcess, request: RangeRequest) -> RangeResponse {
    let mut kv = client(proxy).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = metric(proxy, "etcd_grpc_proxy_cache_hits_total").await;
        let answer = kv.range(request.clone()).await.unwrap().into_inner();
        if metric(proxy, "etcd_grpc_proxy_cache_hits_total").await > before {
            return answer;
        }
        assert!(Instant::now() < deadline, "{request:?} never came from the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The freshness issue 18 asks for, with writes made on the member itself,
/// where the proxy cannot see them go by (etcd's proxy serves the old
/// value until its cache entry is pushed out: etcd#14665).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_directly_to_the_cluster_reach_reads_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    writes_made_directly_reach_reads_through_the_cache(&keel.endpoint()).await;
}

/// The same proxy, the same cache, in front of real etcd 3.4: the cache
/// needs only the public API (watches with progress requests, count-only
/// ranges), so it is as fresh there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_in_front_of_real_etcd_is_as_fresh() {
    common::etcd::require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let plan = common::etcd::Plan::new(1, "proxy-cache-etcd");
    let _etcd = common::etcd::start_etcd_cluster(&plan, &[dir.path().join("etcd")], dir.path());
    writes_made_directly_reach_reads_through_the_cache(&plan.endpoints()).await;
}

async fn writes_made_directly_reach_reads_through_the_cache(cluster: &str) {
    let proxy = start_proxy(cluster, &["--cache-prefix", "/c/,/other/"]).await;
    let mut direct = KvClient::connect(cluster.to_owned()).await.unwrap();
    let mut through = client(&proxy).await;

    put(&mut direct, "/c/k", "v0").await;
    let answer = cached(&proxy, range("/c/k", true)).await;
    assert_eq!(answer.kvs[0].value, b"v0");
    // Linearizable reads come from the cache too, once it has the
    // revision the cluster names.
    cached(&proxy, range("/c/k", false)).await;

    // Serializable: a direct write shows within the watch's latency.
    for round in 1..=20 {
        let want = format!("v{round}");
        let written = Instant::now();
        put(&mut direct, "/c/k", &want).await;
        loop {
            if value(&mut through, "/c/k", true).await.as_deref() == Some(want.as_str()) {
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(2), "round {round}: still not {want} after 2 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // And stays once seen: the old answer never comes back.
        assert_eq!(value(&mut through, "/c/k", true).await.as_deref(), Some(want.as_str()), "round {round}");
    }

    // Linearizable: a direct write shows on the very next read.
    let hits = metric(&proxy, "etcd_grpc_proxy_cache_hits_total").await;
    for round in 21..=120 {
        let want = format!("v{round}");
        put(&mut direct, "/c/k", &want).await;
        assert_eq!(value(&mut through, "/c/k", false).await.as_deref(), Some(want.as_str()), "round {round}");
        // Read again at once: from the cache when it has caught up.
        assert_eq!(value(&mut through, "/c/k", false).await.as_deref(), Some(want.as_str()), "round {round}");
    }
    assert!(metric(&proxy, "etcd_grpc_proxy_cache_hits_total").await > hits, "linearizable reads were served");

    // A write through the proxy is read back through it at once, even
    // before the cache's watch has it.
    for round in 0..50 {
        let want = format!("p{round}");
        put(&mut through, "/c/k", &want).await;
        assert_eq!(value(&mut through, "/c/k", true).await.as_deref(), Some(want.as_str()), "round {round}");
    }

    // A direct delete removes the key from prefix reads.
    let prefix =
        RangeRequest { key: b"/c/".to_vec(), range_end: b"/c0".to_vec(), serializable: true, ..Default::default() };
    put(&mut direct, "/c/j", "x").await;
    assert_eq!(cached(&proxy, prefix.clone()).await.count, 2);
    let mut direct_kv = direct.clone();
    direct_kv
        .delete_range(keel_proto::etcdserverpb::DeleteRangeRequest { key: b"/c/j".to_vec(), ..Default::default() })
        .await
        .unwrap();
    wait_for("the delete to reach the cached prefix read", Duration::from_secs(2), || {
        let mut through = through.clone();
        let prefix = prefix.clone();
        async move { through.range(prefix).await.unwrap().into_inner().count == 1 }
    })
    .await;

    // Outside the cached prefixes nothing is cached or counted.
    let misses = metric(&proxy, "etcd_grpc_proxy_cache_misses_total").await;
    put(&mut direct, "/u/k", "1").await;
    for _ in 0..3 {
        assert_eq!(value(&mut through, "/u/k", true).await.as_deref(), Some("1"));
    }
    assert_eq!(metric(&proxy, "etcd_grpc_proxy_cache_misses_total").await, misses);
    assert!(metric(&proxy, "etcd_grpc_proxy_cache_keys_total").await >= 1.0);
}

/// `--namespace` with the whole namespace cached (`--cache-prefix ""`):
/// a from-key range through the proxy is cached and sees a key created
/// past it directly on the cluster; a put nested two txns deep through the
/// proxy is read back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_key_ranges_under_a_namespace_and_nested_txns_stay_current() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let proxy = start_proxy(&keel.endpoint(), &["--namespace", "/ns/", "--cache-prefix="]).await;
    let mut direct = keel.kv().await;
    let mut through = client(&proxy).await;

    put(&mut direct, "/ns/a", "1").await;
    put(&mut direct, "/outside", "1").await;
    let from_key = RangeRequest { key: b"a".to_vec(), range_end: vec![0], serializable: true, ..Default::default() };
    let answer = cached(&proxy, from_key.clone()).await;
    assert_eq!(answer.kvs.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(), [b"a"]);

    put(&mut direct, "/ns/zzz", "2").await;
    wait_for("a key past the from-key range's start to show", Duration::from_secs(2), || {
        let mut through = through.clone();
        let from_key = from_key.clone();
        async move { through.range(from_key).await.unwrap().into_inner().count == 2 }
    })
    .await;
    // Keys outside the namespace never show.
    put(&mut direct, "/zzz", "3").await;
    assert_eq!(cached(&proxy, from_key.clone()).await.count, 2);

    let nested = |key: &str, value: &str| {
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
        };
        let inner = TxnRequest { success: vec![put], ..Default::default() };
        let middle = TxnRequest {
            success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(inner)) }],
            ..Default::default()
        };
        TxnRequest {
            success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(middle)) }],
            ..Default::default()
        }
    };
    cached(&proxy, range("b", true)).await;
    for round in 0..30 {
        let want = format!("t{round}");
        through.txn(nested("b", &want)).await.unwrap();
        assert_eq!(value(&mut through, "b", true).await.as_deref(), Some(want.as_str()), "round {round}");
    }
    assert_eq!(value(&mut direct, "/ns/b", true).await.as_deref(), Some("t29"));
}

/// `--cache-max-bytes`: answers beyond the bound push out the least
/// recently used ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_bytes() {
    const BOUND: usize = 8192;
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let bound = BOUND.to_string();
    let proxy = start_proxy(&keel.endpoint(), &["--cache-prefix", "/big/", "--cache-max-bytes", &bound]).await;
    let mut direct = keel.kv().await;
    let big = "x".repeat(1500);
    for i in 0..10 {
        put(&mut direct, &format!("/big/{i}"), &big).await;
    }
    for i in 0..10 {
        let answer = cached(&proxy, range(&format!("/big/{i}"), true)).await;
        assert_eq!(answer.kvs[0].value.len(), 1500);
        let bytes = metric(&proxy, "keel_grpc_proxy_cache_bytes").await;
        assert!(bytes <= BOUND as f64, "{bytes} bytes cached, bound {BOUND}");
    }
    let keys = metric(&proxy, "etcd_grpc_proxy_cache_keys_total").await;
    assert!((1.0..10.0).contains(&keys), "{keys} answers cached");
    // The first answer was pushed out: reading it again is a miss.
    let misses = metric(&proxy, "etcd_grpc_proxy_cache_misses_total").await;
    let mut through = client(&proxy).await;
    assert_eq!(value(&mut through, "/big/0", true).await.map(|v| v.len()), Some(1500));
    assert_eq!(metric(&proxy, "etcd_grpc_proxy_cache_misses_total").await, misses + 1.0);
}

async fn token(endpoint: &str, user: &str) -> String {
    let mut auth = AuthClient::connect(endpoint.to_owned()).await.unwrap();
    let request = AuthenticateRequest { name: user.to_owned(), password: "pw".to_owned() };
    auth.authenticate(request).await.unwrap().into_inner().token
}

fn as_user<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("token", token.parse().unwrap());
    request
}

/// With auth on, answers cached for one user are not served to another
/// who may not read them, and stop being served to their own user within
/// a second and a half of the cluster taking the permission away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_served_only_to_callers_the_cluster_lets_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let cluster = keel.endpoint();
    for args in [
        &["user", "add", "root:pw"][..],
        &["user", "add", "alice:pw"],
        &["user", "add", "bob:pw"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "/s/", "--prefix"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
        &["--user", "root:pw", "put", "/s/k", "secret"],
    ] {
        let out = etcdctl(&cluster, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let proxy = start_proxy(&cluster, &["--cache-prefix", "/s/"]).await;
    let alice = token(&proxy.endpoint(), "alice").await;
    let bob = token(&proxy.endpoint(), "bob").await;
    let mut kv = client(&proxy).await;

    // Alice's answer is cached for her.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = metric(&proxy, "etcd_grpc_proxy_cache_hits_total").await;
        let answer = kv.range(as_user(range("/s/k", true), &alice)).await.unwrap().into_inner();
        assert_eq!(answer.kvs[0].value, b"secret");
        if metric(&proxy, "etcd_grpc_proxy_cache_hits_total").await > before {
            break;
        }
        assert!(Instant::now() < deadline, "alice's read never came from the cache");
    }
    // Bob and anonymous callers get the cluster's refusal.
    let refused = kv.range(as_user(range("/s/k", true), &bob)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let anonymous = kv.range(range("/s/k", true)).await.unwrap_err();
    assert!(anonymous.message().contains("user name is empty"), "{anonymous:?}");

    // The permission goes, on the cluster directly: within the recheck
    // interval the proxy refuses alice too.
    let out = etcdctl(&cluster, &["--user", "root:pw", "role", "revoke-permission", "reader", "/s/", "--prefix"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked = Instant::now();
    loop {
        match kv.range(as_user(range("/s/k", true), &alice)).await {
            Ok(_) => assert!(revoked.elapsed() < Duration::from_millis(1500), "alice still served from the cache"),
            Err(status) => {
                assert_ne!(status.code(), tonic::Code::Unavailable, "{status:?}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
