//! Local service registration through `keel grpc-proxy` (issue 18, point
//! 9), as real processes on loopback: a Keel member, a proxy, and a tiny
//! HTTP health endpoint served by the test. A service's key lives under
//! `--service-prefix` while its check passes, is removed when the check
//! fails and put again when it passes, survives a manual `etcdctl del`,
//! and the revocation of the proxy's lease, expires with an unpassed TTL
//! check; a malformed registration is 400
//! and writes nothing; a bad `--service-config-dir` file stops the start.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::{etcdctl_ok, require_etcd};
use common::proxy::{metric, ProxyProcess};
use common::{free_port, http_exchange, http_get, wait_for, Keel};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::{LeaseRevokeRequest, RangeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `keel grpc-proxy` once its service registration API answers; it
/// saves registrations under `data_dir`.
async fn start_proxy(data_dir: &std::path::Path, endpoints: &str, extra: &[&str]) -> ProxyProcess {
    let mut args = vec!["--data-dir", data_dir.to_str().unwrap()];
    args.extend(extra);
    let proxy = ProxyProcess::keel(endpoints, &args);
    let port = proxy.port;
    wait_for("the proxy's HTTP API", Duration::from_secs(30), || async move {
        matches!(http_get(port, "/v1/agent/services").await, Ok((200, _)))
    })
    .await;
    proxy
}

/// A PUT of JSON to the proxy's service registration API.
async fn put(proxy: &ProxyProcess, path: &str, body: &str) -> (u16, String) {
    http_exchange(proxy.port, "PUT", path, &[("Content-Type", "application/json")], body).await.unwrap()
}

/// Registers one service per `(id, check fields)`, named after the id
/// without its last character ("db1" is a "db"), checked every 200 ms.
async fn register_checks(proxy: &ProxyProcess, checks: &[(&str, String)]) {
    for (id, check) in checks {
        let name = &id[..id.len() - 1];
        let body = format!(
            r#"{{"name":"{name}","id":"{id}","address":"127.0.0.1:1","check":{{{check},"interval":"200ms"}}}}"#
        );
        let (status, answer) = put(proxy, "/v1/agent/service/register", &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
    }
}

/// An HTTP health endpoint: 200 while `healthy`, 503 otherwise.
async fn health_server(healthy: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let status = if healthy.load(Ordering::SeqCst) { "200 OK" } else { "503 Service Unavailable" };
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// The host name the proxy registers under (Go's `os.Hostname`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()
}

/// The keys under `prefix` and their values, read from the member.
async fn keys(keel: &Keel, prefix: &str) -> Vec<(String, String)> {
    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let request = RangeRequest { key: prefix.as_bytes().to_vec(), range_end: end, ..Default::default() };
    let kvs = kv.range(request).await.unwrap().into_inner().kvs;
    kvs.into_iter().map(|kv| (String::from_utf8(kv.key).unwrap(), String::from_utf8(kv.value).unwrap())).collect()
}

async fn value(keel: &Keel, key: &str) -> Option<String> {
    keys(keel, key).await.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

async fn lease_of_maybe(keel: &Keel, key: &str) -> Option<i64> {
    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();
    let request = RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
    kv.range(request).await.unwrap().into_inner().kvs.first().map(|kv| kv.lease)
}

async fn lease_of(keel: &Keel, key: &str) -> i64 {
    let lease = lease_of_maybe(keel, key).await.expect("the key");
    assert_ne!(lease, 0, "{key} has no lease");
    lease
}

async fn wait_present(keel: &Keel, key: &str, limit: Duration, what: &str) -> String {
    wait_for(what, limit, || async { value(keel, key).await.is_some() }).await;
    value(keel, key).await.unwrap()
}

async fn wait_absent(keel: &Keel, key: &str, limit: Duration, what: &str) {
    wait_for(what, limit, || async { value(keel, key).await.is_none() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_live_under_the_prefix_while_their_checks_pass() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let health_port = health_server(healthy.clone()).await;
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    std::fs::write(
        services.join("web.json"),
        format!(
            r#"{{"name":"web","id":"web1","address":"10.0.0.5:8080","metadata":{{"version":"1.2"}},
                "check":{{"http":"http://127.0.0.1:{health_port}/health","interval":"200ms","timeout":"1s"}}}}"#
        ),
    )
    .unwrap();
    let data = dir.path().join("proxy");
    let proxy = start_proxy(&data, &keel.endpoint(), &["--service-config-dir", services.to_str().unwrap()]).await;
    // A proxy nobody registers with: it must stay idle (checked at the end).
    let idle = start_proxy(&dir.path().join("idle"), &keel.endpoint(), &[]).await;
    let idle_since = Instant::now();
    let host = host_name();
    let web = format!("/keel/services/web/{host}/web1");

    // From the config folder, passing: the key appears with its value.
    let stored = wait_present(&keel, &web, Duration::from_secs(10), "the web service's key").await;
    assert_eq!(stored, r#"{"address":"10.0.0.5:8080","metadata":{"version":"1.2"}}"#);

    // The check fails: the key goes; it passes again: the key is back.
    healthy.store(false, Ordering::SeqCst);
    wait_absent(&keel, &web, Duration::from_secs(5), "the failing service's key to go").await;
    healthy.store(true, Ordering::SeqCst);
    wait_present(&keel, &web, Duration::from_secs(5), "the recovered service's key").await;

    // Deleted by hand: put back.
    assert_eq!(etcdctl_ok(&keel.endpoint(), &["del", &web]).trim(), "1");
    let deleted = Instant::now();
    wait_present(&keel, &web, Duration::from_secs(5), "the deleted key to be put back").await;
    eprintln!("put back {:?} after etcdctl del", deleted.elapsed());

    // The proxy's lease revoked: a new lease, the key put again under it.
    let old_lease = lease_of(&keel, &web).await;
    let mut leases = LeaseClient::connect(keel.endpoint()).await.unwrap();
    leases.lease_revoke(LeaseRevokeRequest { id: old_lease }).await.unwrap();
    wait_for("the key under a new lease", Duration::from_secs(5), || async {
        !matches!(lease_of_maybe(&keel, &web).await, None | Some(0))
            && lease_of_maybe(&keel, &web).await != Some(old_lease)
    })
    .await;

    // A TTL check: nothing until passed, then the key until the TTL runs
    // out without another pass.
    let job = format!("/keel/services/job/{host}/job1");
    let (status, body) = put(
        &proxy,
        "/v1/agent/service/register",
        r#"{"name":"job","id":"job1","address":"127.0.0.1:9000","check":{"ttl":"2s"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(value(&keel, &job).await, None, "a ttl check never passed");
    let (status, body) = put(&proxy, "/v1/agent/check/pass/service:job1", "").await;
    assert_eq!(status, 200, "{body}");
    let passed = Instant::now();
    wait_present(&keel, &job, Duration::from_secs(3), "the passed ttl service's key").await;
    wait_absent(&keel, &job, Duration::from_secs(6), "the ttl service's key to expire").await;
    assert!(passed.elapsed() >= Duration::from_millis(1900), "expired after {:?}, ttl 2s", passed.elapsed());

    // TCP checks: a listening port passes, a closed one does not; gRPC
    // health checks: the proxy's own grpc.health.v1 (SERVING) passes, a
    // closed port does not.
    let closed = free_port();
    let checks = [
        ("db1", format!(r#""tcp":"127.0.0.1:{health_port}""#)),
        ("db2", format!(r#""tcp":"127.0.0.1:{closed}""#)),
        ("rpc1", format!(r#""grpc":"127.0.0.1:{}""#, proxy.port)),
        ("rpc2", format!(r#""grpc":"127.0.0.1:{closed}/some.Service""#)),
    ];
    register_checks(&proxy, &checks).await;
    let db1 = format!("/keel/services/db/{host}/db1");
    let rpc1 = format!("/keel/services/rpc/{host}/rpc1");
    wait_present(&keel, &db1, Duration::from_secs(5), "the tcp service's key").await;
    wait_present(&keel, &rpc1, Duration::from_secs(5), "the grpc service's key").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(value(&keel, &format!("/keel/services/db/{host}/db2")).await, None, "a closed port passed");
    assert_eq!(value(&keel, &format!("/keel/services/rpc/{host}/rpc2")).await, None, "a closed port passed");
    for (id, _) in &checks {
        assert_eq!(put(&proxy, &format!("/v1/agent/service/deregister/{id}"), "").await.0, 200);
    }
    wait_absent(&keel, &db1, Duration::from_secs(5), "the deregistered tcp service's key to go").await;
    wait_absent(&keel, &rpc1, Duration::from_secs(5), "the deregistered grpc service's key to go").await;

    // Malformed registrations: 400 with the reason, nothing registered.
    let bad = [
        (r#"{"id":"bad1","address":"x","check":{"ttl":"1s"}}"#, "missing service name"),
        (r#"{"name":"bad","id":"bad2","check":{"ttl":"1s"}}"#, "missing service address"),
        (r#"{"name":"bad","id":"bad3","address":"x","check":{"script":"true"}}"#, "unknown field `script`"),
        (r#"{"name":"bad","id":"bad4","address":"x","check":{"http":"ftp://h/"}}"#, "only http://"),
        (r#"{"name":"bad","id":"bad5","address":"x","check":{"ttl":"0s"}}"#, "ttl must be more than zero"),
        ("{", "invalid JSON"),
    ];
    for (body, reason) in bad {
        let (status, answer) = put(&proxy, "/v1/agent/service/register", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(reason), "{body}: {answer:?} lacks {reason:?}");
    }
    let (status, listed) = http_get(proxy.port, "/v1/agent/services").await.unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&String> = listed.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["job1", "web1"], "{listed}");
    assert_eq!(listed["web1"]["passing"], true);
    assert_eq!(listed["job1"]["passing"], false);
    let written: Vec<String> = keys(&keel, "/keel/services/").await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(written, std::slice::from_ref(&web));

    // Counted: two services (web passing), and web's key put at least
    // five times (registered, recovered, deleted, lease revoked).
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "keel_grpc_proxy_services"), 2.0);
    assert_eq!(metric(&metrics, "keel_grpc_proxy_services_passing"), 1.0);
    assert!(metric(&metrics, "keel_grpc_proxy_service_puts_total") >= 5.0, "{metrics}");
    // Per check: web's HTTP check passes; job's TTL passed once, then expired.
    let web_passing = r#"keel_grpc_proxy_service_check_passing{id="web1",service="web"}"#;
    assert_eq!(metric(&metrics, web_passing), 1.0);
    assert!(metric(&metrics, r#"keel_grpc_proxy_service_checks_total{id="web1",result="pass",service="web"}"#) >= 1.0);
    assert_eq!(metric(&metrics, r#"keel_grpc_proxy_service_check_passing{id="job1",service="job"}"#), 0.0);
    for result in ["pass", "fail"] {
        let series = format!(r#"keel_grpc_proxy_service_checks_total{{id="job1",result="{result}",service="job"}}"#);
        assert!(metric(&metrics, &series) >= 1.0, "{series}: {metrics}");
    }

    // Deregistered: the key goes; unknown ids are 404.
    let (status, body) = put(&proxy, "/v1/agent/service/deregister/web1", "").await;
    assert_eq!(status, 200, "{body}");
    wait_absent(&keel, &web, Duration::from_secs(5), "the deregistered service's key to go").await;
    assert_eq!(put(&proxy, "/v1/agent/service/deregister/web1", "").await.0, 404);
    assert!(!proxy.metrics().await.contains(r#"id="web1""#), "a deregistered service's check series stay");
    assert_eq!(put(&proxy, "/v1/agent/check/pass/nope", "").await.0, 404);

    // The idle proxy's registry loop sleeps: it used no measurable CPU
    // here in six seconds, where a loop woken every millisecond from its
    // third second used 16 ticks (USER_HZ is 100 on Linux).
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(idle_since.elapsed())).await;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", idle.child.id())).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    assert!(ticks < 8, "an idle proxy used {ticks} ticks of CPU in 6 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_service_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.json"), r#"{"name":"a","address":"x","check":{"ttl":"1s"}}"#).unwrap();
    std::fs::write(dir.path().join("broken.json"), r#"{"name":"b","check":{"ttl":"1s"}}"#).unwrap();
    let mut proxy = common::keel_command();
    proxy
        .args(["grpc-proxy", "start", "--endpoints", "127.0.0.1:1", "--listen-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--service-config-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = proxy.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the proxy started with a bad service file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("broken.json") && stderr.contains("missing service address"), "{stderr}");
}

/// Checks over TLS, against a member serving HTTPS with a self-signed
/// certificate (`--auto-tls`) and a proxy serving gRPC with it: an
/// `https://` check and a `grpc_use_tls` check pass with `tls_skip_verify`
/// and fail without it (the system's roots do not trust the certificate).
/// A Consul agent service definition (capitalised names, `Port` apart,
/// `Tags`) registers as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_checks_verify_unless_told_not_to_and_consul_definitions_register() {
    let dir = tempfile::tempdir().unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let data = dir.path().join("keel");
    let listen = format!("--listen-client-urls=http://127.0.0.1:{port},https://127.0.0.1:{tls_port}");
    let keel = Keel::spawn(&data, port, &[listen, "--auto-tls".to_owned()]);
    keel.wait_for_quorum().await;
    let fixtures = data.join("fixtures/client");
    let tls_proxy = ProxyProcess::keel(
        &keel.endpoint(),
        &[
            "--cert-file",
            fixtures.join("cert.pem").to_str().unwrap(),
            "--key-file",
            fixtures.join("key.pem").to_str().unwrap(),
        ],
    );
    let tls_proxy_port = tls_proxy.port;
    wait_for("the TLS proxy to listen", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", tls_proxy_port)).await.is_ok()
    })
    .await;
    let proxy = start_proxy(&dir.path().join("proxy"), &keel.endpoint(), &["--service-prefix", "/tls"]).await;

    let https = format!(r#""http":"https://127.0.0.1:{tls_port}/health""#);
    let grpcs = format!(r#""grpc":"127.0.0.1:{tls_proxy_port}","grpc_use_tls":true"#);
    let registrations = [
        ("web1", format!(r#"{https},"tls_skip_verify":true"#)),
        ("web2", https.clone()),
        ("rpc1", format!(r#"{grpcs},"tls_skip_verify":true"#)),
        ("rpc2", grpcs.clone()),
    ];
    register_checks(&proxy, &registrations).await;
    let consul = format!(
        r#"{{"ID":"cache1","Name":"cache","Address":"127.0.0.1","Port":6379,"Tags":["primary"],
            "Meta":{{"version":"7"}},
            "Check":{{"Name":"alive","HTTP":"https://127.0.0.1:{tls_port}/health","TLSSkipVerify":true,"Interval":"200ms"}}}}"#
    );
    let (status, answer) = put(&proxy, "/v1/agent/service/register", &consul).await;
    assert_eq!(status, 200, "{answer}");

    let host = host_name();
    let key = |service: &str, id: &str| format!("/tls/{service}/{host}/{id}");
    wait_present(&keel, &key("web", "web1"), Duration::from_secs(10), "the skip-verify https service").await;
    wait_present(&keel, &key("rpc", "rpc1"), Duration::from_secs(10), "the skip-verify grpc service").await;
    let cache = wait_present(&keel, &key("cache", "cache1"), Duration::from_secs(10), "Consul's service").await;
    assert_eq!(cache, r#"{"address":"127.0.0.1:6379","metadata":{"version":"7"},"tags":["primary"]}"#);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(value(&keel, &key("web", "web2")).await, None, "an untrusted https certificate passed");
    assert_eq!(value(&keel, &key("rpc", "rpc2")).await, None, "an untrusted grpc certificate passed");
}

/// Registrations made through the API survive a restart of the proxy (they
/// are saved under its `--data-dir`); deregistered ones do not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_registrations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let health_port = health_server(healthy).await;
    let data = dir.path().join("proxy");
    let proxy = start_proxy(&data, &keel.endpoint(), &[]).await;
    for id in ["kept", "dropped"] {
        let body = format!(
            r#"{{"name":"svc","id":"{id}","address":"127.0.0.1:1","tags":["t"],
                "check":{{"tcp":"127.0.0.1:{health_port}","interval":"200ms"}}}}"#
        );
        let (status, answer) = put(&proxy, "/v1/agent/service/register", &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(put(&proxy, "/v1/agent/service/deregister/dropped", "").await.0, 200);
    drop(proxy);

    let restarted = start_proxy(&data, &keel.endpoint(), &[]).await;
    let (status, listed) = http_get(restarted.port, "/v1/agent/services").await.unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&String> = listed.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["kept"], "{listed}");
    assert_eq!(listed["kept"]["tags"], serde_json::json!(["t"]));
    // Its check runs again in the new proxy.
    let port = restarted.port;
    wait_for("the restored service's check to pass", Duration::from_secs(10), || async move {
        let (_, listed) = http_get(port, "/v1/agent/services").await.unwrap();
        serde_json::from_str::<serde_json::Value>(&listed).unwrap()["kept"]["passing"] == true
    })
    .await;
}
