//! `keel grpc-proxy start` (issue 18), as real processes on loopback:
//! etcdctl through Keel's proxy in front of Keel and in front of etcd
//! answers as through etcd's own `grpc-proxy` in front of etcd; a watch
//! through the proxy survives the death of the member it was on; a lease
//! kept alive once through the proxy expires on time; an unreachable
//! cluster is Unavailable at once and reconnected by itself.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{etcdctl, require_etcd, start_etcd_cluster, Plan};
use common::proxy::{metric, ProxyProcess};
use common::{free_port, http_get, wait_for, Cluster, Keel};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    compare, request_op, Compare, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// etcdctl's answer with what differs between two clusters masked: lease
/// and member ids (hex), ports, member names.
fn masked(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')') {
        let (body, tail) =
            word.split_at(word.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')').len());
        let hex = body.len() >= 12 && body.chars().all(|c| c.is_ascii_hexdigit());
        if hex {
            out.push_str("<id>");
        } else if let Some(at) = body.find("127.0.0.1:") {
            out.push_str(&body[..at]);
            out.push_str("127.0.0.1:<port>");
            let rest = &body[at + "127.0.0.1:".len()..];
            out.push_str(rest.trim_start_matches(|c: char| c.is_ascii_digit()));
        } else {
            out.push_str(body);
        }
        out.push_str(tail);
    }
    out
}

/// Runs `script` (etcdctl argument lists; `$LEASE` replaced by the lease
/// the script granted) through `endpoint`, returning each command's exit
/// status, stdout and stderr, masked.
fn run_script(endpoint: &str, script: &[(&[&str], Option<&str>)]) -> Vec<String> {
    let mut lease = String::new();
    let mut answers = Vec::new();
    for (args, stdin) in script {
        let args: Vec<String> = args.iter().map(|a| a.replace("$LEASE", &lease)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = match stdin {
            None => etcdctl(endpoint, &args),
            Some(input) => {
                use std::io::Write;
                let mut child = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", endpoint, "--command-timeout", "20s"])
                    .args(&args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
                child.wait_with_output().unwrap()
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if args.first() == Some(&"lease") && args.get(1) == Some(&"grant") {
            lease = stdout.split_whitespace().nth(1).unwrap_or_default().to_owned();
        }
        // clientv3's retry warnings carry a time and a client id; they
        // also show the gRPC code, which etcd's proxy loses (always
        // Unknown) and Keel's passes through: see docs/compat.md.
        let stderr: String = String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|line| !line.starts_with("{\"level\""))
            .map(|line| format!("{line}\n"))
            .collect();
        answers.push(format!(
            "$ etcdctl {}\n[{}]\n{}{}",
            masked(&args.join(" ")),
            output.status.code().unwrap_or(-1),
            masked(&stdout),
            masked(&stderr)
        ));
    }
    answers
}

const TXN: &str = "value(\"/k/a\") = \"1\"\n\nput /k/t yes\nget /k/a\n\nput /k/t no\n\n";

const SCRIPT: &[(&[&str], Option<&str>)] = &[
    (&["put", "/k/a", "1"], None),
    (&["put", "/k/b", "2"], None),
    (&["put", "/k/b", "3", "--prev-kv"], None),
    (&["get", "/k/a"], None),
    (&["get", "/k/", "--prefix"], None),
    (&["get", "/k/", "--prefix", "--keys-only", "--limit", "1"], None),
    (&["get", "/k/", "--from-key", "--print-value-only"], None),
    (&["get", "/k/", "--prefix", "--count-only", "-w", "fields"], None),
    (&["txn"], Some(TXN)),
    (&["get", "/k/t"], None),
    (&["del", "/k/b", "--prev-kv"], None),
    (&["put", "", "v"], None),
    (&["lease", "grant", "600"], None),
    (&["put", "/k/leased", "x", "--lease", "$LEASE"], None),
    (&["lease", "keep-alive", "--once", "$LEASE"], None),
    (&["lease", "list"], None),
    (&["lease", "revoke", "$LEASE"], None),
    (&["get", "/k/leased"], None),
    (&["lease", "timetolive", "$LEASE"], None),
    (&["lease", "revoke", "$LEASE"], None),
    (&["watch", "/k/", "--prefix", "--rev", "1", "-i"], Some("")),
    (&["compaction", "3"], None),
    (&["get", "/k/a", "--rev", "2"], None),
    (&["member", "list"], None),
    (&["member", "list", "-w", "json"], None),
    (&["lock", "--ttl", "5", "/locks/x", "echo", "locked"], None),
    (&["elect", "-l", "/e/x", "p1"], Some("")),
];

/// Fixed revisions in the script need a fresh store; the three systems
/// must agree on every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_through_the_proxy_answers_as_through_etcds() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();

    let plan = Plan::new(1, "proxy-diff");
    let etcd = start_etcd_cluster(&plan, &[dir.path().join("etcd")], dir.path());
    let etcd_proxy = ProxyProcess::etcd(&etcd[0].endpoint, &[], dir.path()).ready().await;
    let mut want = run_script(&etcd_proxy.endpoint(), SCRIPT);
    want.push(watch_history(&etcd_proxy.endpoint()));
    assert!(want.last().unwrap().contains("PUT\n/k/zz-end\nend"), "{}", want.last().unwrap());

    let keel = Keel::spawn(&dir.path().join("keel"), free_port(), &["--name".to_owned(), "m0".to_owned()]);
    keel.wait_for_quorum().await;
    let keel_proxy = ProxyProcess::keel(&keel.endpoint(), &[]).ready().await;
    let mut got = run_script(&keel_proxy.endpoint(), SCRIPT);
    got.push(watch_history(&keel_proxy.endpoint()));
    diff("Keel's proxy in front of Keel", &want, &got);

    // The same proxy in front of real etcd: a second etcd, fresh.
    let plan = Plan::new(1, "proxy-etcd");
    let etcd2 = start_etcd_cluster(&plan, &[dir.path().join("etcd2")], dir.path());
    let keel_proxy_on_etcd = ProxyProcess::keel(&etcd2[0].endpoint, &[]).ready().await;
    let mut got = run_script(&keel_proxy_on_etcd.endpoint(), SCRIPT);
    got.push(watch_history(&keel_proxy_on_etcd.endpoint()));
    diff("Keel's proxy in front of etcd", &want, &got);
}

/// `etcdctl watch --prefix /k/ --rev 4 --prev-kv` through `endpoint`
/// after the script: its history, up to a last put made for the purpose.
fn watch_history(endpoint: &str) -> String {
    use std::io::BufRead;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "watch", "--prefix", "/k/", "--rev", "4", "--prev-kv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = etcdctl(endpoint, &["put", "/k/zz-end", "end"]);
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut history = String::from("$ etcdctl watch --prefix /k/ --rev 4 --prev-kv\n");
    for line in lines.by_ref() {
        let line = line.unwrap();
        history.push_str(&line);
        history.push('\n');
        if line == "/k/zz-end" {
            break;
        }
    }
    history.push_str(&lines.next().map(Result::unwrap).unwrap_or_default());
    let _ = child.kill();
    let _ = child.wait();
    history
}

fn diff(what: &str, want: &[String], got: &[String]) {
    let mut differences = String::new();
    for (want, got) in want.iter().zip(got) {
        if want != got {
            differences.push_str(&format!("--- etcd grpc-proxy\n{want}--- {what}\n{got}\n"));
        }
    }
    assert!(differences.is_empty(), "{what} differs from etcd's grpc-proxy in front of etcd:\n{differences}");
}

/// A put that is applied at most once however often it is retried: only
/// when the key does not exist yet.
async fn create(endpoints: &[String], key: &str) {
    let txn = TxnRequest {
        compare: vec![Compare {
            key: key.as_bytes().to_vec(),
            target: compare::CompareTarget::Create as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for endpoint in endpoints.iter().cycle() {
        assert!(Instant::now() < deadline, "could not write {key}");
        let Ok(Ok(mut kv)) = tokio::time::timeout(Duration::from_secs(2), KvClient::connect(endpoint.clone())).await
        else {
            continue;
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), kv.txn(txn.clone())).await {
            return;
        }
    }
}

async fn open_watch(
    endpoint: String,
    create: WatchCreateRequest,
) -> (mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>) {
    let (requests, outgoing) = mpsc::channel(4);
    requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.unwrap();
    let mut client = WatchClient::connect(endpoint).await.unwrap();
    let stream = client.watch(ReceiverStream::new(outgoing)).await.unwrap().into_inner();
    (requests, stream)
}

/// Reads `count` events (failing on a cancel or a stream error).
async fn events(stream: &mut tonic::Streaming<WatchResponse>, count: usize) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let response = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no event after {:?}", seen.last()))
            .expect("watch stream failed")
            .expect("watch stream ended");
        assert!(!response.canceled, "watch canceled: {response:?}");
        for event in response.events {
            let kv = event.kv.unwrap();
            seen.push((String::from_utf8(kv.key).unwrap(), kv.mod_revision));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_the_death_of_its_upstream_member() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_quorum(0).await;
    let endpoints: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
    // The proxy starts on the first endpoint: member 0 holds its watches.
    let proxy = ProxyProcess::keel(&endpoints.join(","), &[]).ready().await;

    let create_request = WatchCreateRequest { key: b"/w/".to_vec(), range_end: b"/w0".to_vec(), ..Default::default() };
    let (_keep, mut stream) = open_watch(proxy.endpoint(), create_request.clone()).await;
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created);
    // A second identical watch shares the first's upstream watch.
    let (_keep2, mut second) = open_watch(proxy.endpoint(), create_request).await;
    assert!(second.message().await.unwrap().unwrap().created);

    let survivors = endpoints[1..].to_vec();
    for i in 0..20 {
        create(&endpoints, &format!("/w/{i:02}")).await;
    }
    cluster.kill9(0);
    for i in 20..40 {
        create(&survivors, &format!("/w/{i:02}")).await;
    }
    for seen in [events(&mut stream, 40).await, events(&mut second, 40).await] {
        let keys: Vec<String> = seen.iter().map(|(key, _)| key.clone()).collect();
        let want: Vec<String> = (0..40).map(|i| format!("/w/{i:02}")).collect();
        assert_eq!(keys, want, "every event once, in order");
        assert!(seen.windows(2).all(|pair| pair[0].1 < pair[1].1), "revisions increase: {seen:?}");
    }
    // Nothing more arrives: no duplicate after the last.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(extra.is_err(), "unexpected response after the last event: {extra:?}");

    // The watches really moved: the proxy resumed its upstream watch.
    let mut proxy_metrics = proxy.metrics().await;
    assert!(metric(&proxy_metrics, "keel_grpc_proxy_watch_resumes_total") >= 1.0, "{proxy_metrics}");
    proxy_metrics = proxy.metrics().await;
    assert_eq!(metric(&proxy_metrics, "etcd_grpc_proxy_watchers_coalescing_total"), 1.0, "{proxy_metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_once_through_the_proxy_expires_on_time() {
    const TTL: i64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let proxy = ProxyProcess::keel(&keel.endpoint(), &[]).ready().await;

    let mut lease = LeaseClient::connect(proxy.endpoint()).await.unwrap();
    let id = lease.lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 }).await.unwrap().into_inner().id;
    let mut kv = KvClient::connect(keel.endpoint()).await.unwrap();
    kv.put(PutRequest { key: b"/leased".to_vec(), value: b"x".to_vec(), lease: id, ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One keep-alive on a stream the client then half-closes.
    let (requests, outgoing) = mpsc::channel(1);
    requests.send(LeaseKeepAliveRequest { id }).await.unwrap();
    drop(requests);
    let mut answers = lease.lease_keep_alive(ReceiverStream::new(outgoing)).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("a keep-alive answer");
    let kept = Instant::now();
    assert_eq!((answer.id, answer.ttl), (id, TTL));
    assert!(answers.message().await.unwrap().is_none(), "the stream ends after the half-close");

    let exists = |mut kv: KvClient<tonic::transport::Channel>| async move {
        let found = kv.range(RangeRequest { key: b"/leased".to_vec(), ..Default::default() }).await.unwrap();
        found.into_inner().count == 1
    };
    // Not before its TTL (with a second of slack for the check itself)...
    tokio::time::sleep((kept + Duration::from_secs(TTL as u64 - 1)).saturating_duration_since(Instant::now())).await;
    assert!(exists(kv.clone()).await, "the lease expired before its TTL ran out");
    // ...and not much after: nobody renews it on the client's behalf.
    let deadline = kept + Duration::from_secs(TTL as u64 + 2);
    while exists(kv.clone()).await {
        assert!(Instant::now() < deadline, "the lease outlived its last keep-alive by more than its TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_unavailable_at_once_and_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let proxy = ProxyProcess::keel(&endpoint, &[]);
    let proxy_endpoint = proxy.endpoint();
    wait_for("the proxy to listen", Duration::from_secs(10), || {
        let proxy_endpoint = proxy_endpoint.clone();
        async move { KvClient::connect(proxy_endpoint).await.is_ok() }
    })
    .await;
    let mut kv = KvClient::connect(proxy.endpoint()).await.unwrap();
    let started = Instant::now();
    let refused = kv.range(RangeRequest { key: b"a".to_vec(), ..Default::default() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let (status, body) = http_get(proxy.port, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");

    let keel = Keel::spawn(&dir.path().join("keel"), port, &[]);
    keel.wait_for_quorum().await;
    // The same client connection now reaches the cluster.
    wait_for("the proxy to reach the cluster", Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move { kv.range(RangeRequest { key: b"a".to_vec(), ..Default::default() }).await.is_ok() }
    })
    .await;
    assert_eq!(http_get(proxy.port, "/health").await.unwrap(), (200, r#"{"health":"true"}"#.to_owned()));
    assert_eq!(http_get(proxy.port, "/readyz").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_unix_sockets_watch_ids_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let socket: PathBuf = dir.path().join("proxy.sock");
    let listen = format!("unix://{}", socket.display());
    let unix = ProxyProcess::keel(&keel.endpoint(), &["--listen-addr", &listen, "--namespace", "/tenant/"]);
    let endpoint = format!("unix://{}", socket.display());
    wait_for("the unix socket", Duration::from_secs(10), || {
        let ok = etcdctl(&endpoint, &["put", "a", "1"]).status.success();
        async move { ok }
    })
    .await;
    // Through the socket the key is "a"; in the cluster it is "/tenant/a".
    let out = etcdctl(&endpoint, &["get", "", "--prefix"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n1\n");
    let direct = etcdctl(&keel.endpoint(), &["get", "/tenant/", "--prefix", "--keys-only"]);
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "/tenant/a\n\n");
    drop(unix);

    // A client-chosen watch id, prev_kv, and a progress request answered
    // after what the watch delivered.
    let proxy = ProxyProcess::keel(&keel.endpoint(), &["--namespace", "/tenant/"]).ready().await;
    let create = WatchCreateRequest { key: b"a".to_vec(), watch_id: 7, prev_kv: true, ..Default::default() };
    let (requests, mut stream) = open_watch(proxy.endpoint(), create).await;
    let created = stream.message().await.unwrap().unwrap();
    assert_eq!((created.watch_id, created.created), (7, true));
    etcdctl(&proxy.endpoint(), &["put", "a", "2"]);
    let response = stream.message().await.unwrap().unwrap();
    assert_eq!(response.watch_id, 7);
    let event = &response.events[0];
    assert_eq!(event.kv.as_ref().unwrap().key, b"a");
    assert_eq!(event.prev_kv.as_ref().unwrap().value, b"1");
    let revision = event.kv.as_ref().unwrap().mod_revision;
    let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
    requests.send(progress).await.unwrap();
    let progress = stream.message().await.unwrap().unwrap();
    assert!(progress.events.is_empty() && !progress.canceled);
    assert_eq!(progress.header.unwrap().revision, revision);

    // On a stream with no watch, etcd 3.4 answers with the current
    // revision: here one past what the watch above saw, written directly.
    etcdctl(&keel.endpoint(), &["put", "/elsewhere", "x"]);
    let (requests, outgoing) = mpsc::channel(1);
    let mut client = WatchClient::connect(proxy.endpoint()).await.unwrap();
    let mut bare = client.watch(ReceiverStream::new(outgoing)).await.unwrap().into_inner();
    let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
    requests.send(progress).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), bare.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((answer.watch_id, answer.created, answer.events.len()), (-1, false, 0));
    let header = answer.header.unwrap();
    assert_eq!(header.revision, revision + 1);
    assert_ne!(header.member_id, 0);
}

#[test]
fn flags_are_refused_as_etcd_refuses_them() {
    let run = |args: &[&str]| {
        let mut command = common::keel_command();
        command.args(args).stderr(Stdio::piped()).stdout(Stdio::piped());
        command.output().unwrap()
    };
    let unknown = run(&["grpc-proxy", "start", "--bogus"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).starts_with("Error: unknown flag: --bogus\n"));
    let pprof = run(&["grpc-proxy", "start", "--enable-pprof"]);
    assert_eq!(pprof.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&pprof.stderr).contains("--enable-pprof is not supported"));
    let help = run(&["grpc-proxy", "start", "--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--listen-addr string"));
    let ttl = run(&["grpc-proxy", "start", "--resolver-prefix", "/p"]);
    assert_eq!(ttl.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&ttl.stderr), "Error: invalid resolver-ttl 0\n");

    // `keel gateway start` refuses what etcd's gateway refuses, in its words.
    require_etcd();
    let listen = format!("127.0.0.1:{}", free_port());
    let cases: [&[&str]; 4] = [
        &["--endpoints", "foo"],
        &["--listen-addr", "nope"],
        &["--listen-addr", &listen, "--endpoints", &listen],
        &["--retry-delay", "5"],
    ];
    for case in cases {
        let keel = run(&[&["gateway", "start"][..], case].concat());
        let etcd = Command::new("etcd").args(["gateway", "start"]).args(case).output().unwrap();
        assert_eq!((keel.status.code(), etcd.status.code()), (Some(1), Some(1)), "{case:?}");
        let first_line = |out: &std::process::Output| {
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            text.lines().next().unwrap_or_default().to_owned()
        };
        assert_eq!(first_line(&keel), first_line(&etcd), "{case:?}");
    }
}

/// With auth on, each caller's token travels with its calls, keep-alives
/// included (Keel refuses anonymous keep-alives when auth is on), and a
/// caller without one is refused as by the cluster itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_forwarded_per_caller() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    for args in [&["user", "add", "root:pw"][..], &["auth", "enable"]] {
        assert!(etcdctl(&keel.endpoint(), args).status.success(), "{args:?}");
    }
    let proxy = ProxyProcess::keel(&keel.endpoint(), &[]);
    let endpoint = proxy.endpoint();
    wait_for("the proxy", Duration::from_secs(10), || {
        let ok = etcdctl(&endpoint, &["--user", "root:pw", "put", "a", "1"]).status.success();
        async move { ok }
    })
    .await;
    let anonymous = etcdctl(&endpoint, &["get", "a"]);
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("Error: etcdserver: user name is empty"));
    let read = etcdctl(&endpoint, &["--user", "root:pw", "get", "a", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout), "1\n");
    let granted = etcdctl(&endpoint, &["--user", "root:pw", "lease", "grant", "60"]);
    let granted = String::from_utf8_lossy(&granted.stdout).into_owned();
    let lease = granted.split_whitespace().nth(1).expect("a lease id").to_owned();
    let kept = etcdctl(&endpoint, &["--user", "root:pw", "lease", "keep-alive", "--once", &lease]);
    assert_eq!(String::from_utf8_lossy(&kept.stdout), format!("lease {lease} keepalived with TTL(60)\n"));
}

/// A watcher that stops reading is not cut off and does not hold back the
/// watcher sharing its upstream watch: once its queue is full it moves to
/// an upstream watch of its own, and when it reads again it gets every
/// event, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_on_its_own() {
    const WRITES: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let proxy = ProxyProcess::keel(&keel.endpoint(), &[]).ready().await;
    let create = WatchCreateRequest { key: b"/s/".to_vec(), range_end: b"/s0".to_vec(), ..Default::default() };
    // The slow watcher's connection takes little before the proxy must hold
    // on to the rest (HTTP/2's smallest windows).
    let (slow_requests, outgoing) = mpsc::channel(4);
    let create_slow = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create.clone())) };
    slow_requests.send(create_slow).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(proxy.endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = WatchClient::new(channel).watch(ReceiverStream::new(outgoing)).await.unwrap().into_inner();
    assert!(slow.message().await.unwrap().unwrap().created);
    let (_fast_requests, mut fast) = open_watch(proxy.endpoint(), create).await;
    assert!(fast.message().await.unwrap().unwrap().created);

    // Values large enough that HTTP/2's window and the proxy's queues fill
    // long before the last write, while only the fast watcher reads.
    let mut kv = keel.kv().await;
    let reader = tokio::spawn(async move { (events(&mut fast, WRITES).await, fast) });
    for i in 0..WRITES {
        let put = PutRequest { key: format!("/s/{i:04}").into_bytes(), value: vec![b'x'; 4096], ..Default::default() };
        kv.put(put).await.unwrap();
    }
    let want: Vec<String> = (0..WRITES).map(|i| format!("/s/{i:04}")).collect();
    let (fast_seen, mut fast) = reader.await.unwrap();
    assert_eq!(fast_seen.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(), want);
    let slow_seen = events(&mut slow, WRITES).await;
    assert_eq!(slow_seen.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(), want, "every event once, in order");
    assert!(metric(&proxy.metrics().await, "keel_grpc_proxy_watch_detached_total") >= 1.0);

    // Caught up, it returns to the shared upstream watch, and still gets
    // every event once.
    let keys = |seen: Vec<(String, i64)>| seen.into_iter().map(|(key, _)| key).collect::<Vec<_>>();
    let reader = tokio::spawn(async move { (events(&mut slow, 1).await, slow) });
    kv.put(PutRequest { key: b"/s/after".to_vec(), ..Default::default() }).await.unwrap();
    let (after, mut slow) = reader.await.unwrap();
    assert_eq!(keys(after), ["/s/after"]);
    kv.put(PutRequest { key: b"/s/end".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(keys(events(&mut slow, 1).await), ["/s/end"]);
    assert_eq!(keys(events(&mut fast, 2).await), ["/s/after", "/s/end"]);
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "keel_grpc_proxy_watch_rejoined_total"), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "etcd_grpc_proxy_watchers_coalescing_total"), 1.0, "{metrics}");
}

/// A watch from a past revision on a range the proxy already watches is
/// served from that shared watch's history: the events since its start
/// revision, then everything new, and the member still holds one watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_past_revision_joins_from_the_shared_history() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let proxy = ProxyProcess::keel(&keel.endpoint(), &[]).ready().await;
    let create = WatchCreateRequest { key: b"/h/".to_vec(), range_end: b"/h0".to_vec(), ..Default::default() };
    let (_live_requests, mut live) = open_watch(proxy.endpoint(), create.clone()).await;
    assert!(live.message().await.unwrap().unwrap().created);
    let mut kv = keel.kv().await;
    let mut revisions = Vec::new();
    for key in ["/h/1", "/h/2", "/h/3"] {
        let put = kv.put(PutRequest { key: key.as_bytes().to_vec(), ..Default::default() }).await.unwrap();
        revisions.push(put.into_inner().header.unwrap().revision);
    }
    let keys = |seen: Vec<(String, i64)>| seen.into_iter().map(|(key, _)| key).collect::<Vec<_>>();
    assert_eq!(keys(events(&mut live, 3).await), ["/h/1", "/h/2", "/h/3"]);

    let from_second = WatchCreateRequest { start_revision: revisions[1], ..create };
    let (_late_requests, mut late) = open_watch(proxy.endpoint(), from_second).await;
    let created = late.message().await.unwrap().unwrap();
    assert!(created.created && !created.canceled, "{created:?}");
    assert_eq!(events(&mut late, 2).await, [("/h/2".to_owned(), revisions[1]), ("/h/3".to_owned(), revisions[2])]);
    kv.put(PutRequest { key: b"/h/4".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(keys(events(&mut late, 1).await), ["/h/4"]);
    assert_eq!(keys(events(&mut live, 1).await), ["/h/4"]);

    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "keel_grpc_proxy_watch_history_joins_total"), 1.0, "{metrics}");
    let (_, member) = http_get(keel.port, "/metrics").await.unwrap();
    assert_eq!(metric(&member, "etcd_debugging_mvcc_watcher_total"), 1.0, "the member holds one watcher");
}

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// A txn whose write hides in a nested txn's failure branch.
fn nested_put(key: &str) -> TxnRequest {
    TxnRequest {
        success: vec![get_op(key)],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                failure: vec![put_op(key)],
                ..Default::default()
            })),
        }],
        ..Default::default()
    }
}

fn denied<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, what: &str) -> String {
    match answer {
        Err(status) if status.code() == tonic::Code::PermissionDenied => status.message().to_owned(),
        other => panic!("{what}: expected PermissionDenied, got {other:?}"),
    }
}

/// `--read-only` refuses every write, nested in a txn or not, leases,
/// locks and cluster changes, and serves reads; `--allow-prefix` serves
/// only ranges and watches inside its prefixes. Each refusal is gRPC
/// PermissionDenied and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_allow_prefix_proxies_refuse_what_they_do_not_serve() {
    use keel_proto::etcdserverpb::cluster_client::ClusterClient;
    use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use keel_proto::etcdserverpb::{CompactionRequest, MemberListRequest, StatusRequest};
    use keel_proto::v3lockpb::lock_client::LockClient;
    use keel_proto::v3lockpb::LockRequest;

    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let mut direct = keel.kv().await;
    for key in ["/app/x", "/other"] {
        direct.put(PutRequest { key: key.into(), value: b"1".to_vec(), ..Default::default() }).await.unwrap();
    }
    let read_only = ProxyProcess::keel(&keel.endpoint(), &["--read-only"]).ready().await;
    let allow = ProxyProcess::keel(&keel.endpoint(), &["--allow-prefix", "/app/,/shared/", "--allow-prefix", "ready"])
        .ready()
        .await;

    // Read-only: reads pass, every kind of write is refused.
    let got = common::etcd::etcdctl_ok(&read_only.endpoint(), &["get", "/app/x", "--print-value-only"]);
    assert_eq!(got, "1\n");
    let put = etcdctl(&read_only.endpoint(), &["put", "/app/y", "2"]);
    assert!(!put.status.success());
    let stderr = String::from_utf8_lossy(&put.stderr);
    assert!(stderr.contains("keel-proxy: read-only proxy: writes are refused"), "{stderr}");
    let mut kv = KvClient::connect(read_only.endpoint()).await.unwrap();
    denied(kv.put(PutRequest { key: b"/app/y".to_vec(), ..Default::default() }).await, "put");
    denied(kv.txn(nested_put("/app/y")).await, "nested put");
    let reads = TxnRequest { success: vec![get_op("/app/x")], failure: vec![get_op("/other")], ..Default::default() };
    assert!(kv.txn(reads).await.is_ok(), "a txn of reads is served");
    denied(kv.compact(CompactionRequest { revision: 1, ..Default::default() }).await, "compact");
    let mut lease = LeaseClient::connect(read_only.endpoint()).await.unwrap();
    denied(lease.lease_grant(LeaseGrantRequest { ttl: 10, id: 0 }).await, "lease grant");
    let mut lock = LockClient::connect(read_only.endpoint()).await.unwrap();
    denied(lock.lock(LockRequest { name: b"/app/lock".to_vec(), lease: 1 }).await, "lock");
    let mut maintenance = MaintenanceClient::connect(read_only.endpoint()).await.unwrap();
    assert!(maintenance.status(StatusRequest {}).await.is_ok(), "status is a read");
    let refused = metric(&read_only.metrics().await, "keel_grpc_proxy_refused_total{reason=\"read-only\"}");
    assert_eq!(refused, 6.0, "put (etcdctl), put, nested put, compact, grant, lock");
    // Nothing was written: /app/y does not exist.
    let range = direct.range(RangeRequest { key: b"/app/y".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(range.into_inner().count, 0);

    // Allow-prefix: inside is served, outside refused, txns inspected.
    let mut kv = KvClient::connect(allow.endpoint()).await.unwrap();
    kv.put(PutRequest { key: b"/app/y".to_vec(), value: b"2".to_vec(), ..Default::default() }).await.unwrap();
    let inside = RangeRequest { key: b"/app/".to_vec(), range_end: b"/app0".to_vec(), ..Default::default() };
    assert_eq!(kv.range(inside).await.unwrap().into_inner().count, 2);
    let message = denied(kv.range(RangeRequest { key: b"/other".to_vec(), ..Default::default() }).await, "get");
    assert_eq!(message, "keel-proxy: key range outside the proxy's allowed prefixes");
    denied(
        kv.range(RangeRequest { key: b"/app/".to_vec(), range_end: vec![0], ..Default::default() }).await,
        "from-key",
    );
    denied(kv.put(PutRequest { key: b"/other".to_vec(), ..Default::default() }).await, "put");
    denied(kv.txn(nested_put("/other")).await, "nested put");
    assert!(kv.txn(nested_put("/app/z")).await.is_ok());
    denied(kv.compact(CompactionRequest { revision: 1, ..Default::default() }).await, "compact");
    let mut cluster = ClusterClient::connect(allow.endpoint()).await.unwrap();
    assert!(cluster.member_list(MemberListRequest::default()).await.is_ok());
    let get_all = etcdctl(&allow.endpoint(), &["get", "", "--prefix"]);
    assert!(!get_all.status.success());
    // A watch outside: created and canceled at once, the reason given; one
    // inside on the same stream still works.
    let (requests, mut stream) =
        open_watch(allow.endpoint(), WatchCreateRequest { key: b"/other".to_vec(), ..Default::default() }).await;
    let refused = stream.message().await.unwrap().unwrap();
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.cancel_reason, "keel-proxy: key range outside the proxy's allowed prefixes");
    let create =
        WatchCreateRequest { key: b"/shared/".to_vec(), range_end: b"/shared0".to_vec(), ..Default::default() };
    requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created);
    kv.put(PutRequest { key: b"/shared/k".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(events(&mut stream, 1).await[0].0, "/shared/k");
    let refused = metric(&allow.metrics().await, "keel_grpc_proxy_refused_total{reason=\"prefix\"}");
    assert_eq!(refused, 7.0, "get, from-key, put, nested put, compact, etcdctl get, watch");
    // A lease's key list shows only the keys inside the prefixes.
    let mut direct_lease = LeaseClient::connect(keel.endpoint()).await.unwrap();
    let id = direct_lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().into_inner().id;
    for key in ["/app/leased", "/hidden/leased"] {
        direct.put(PutRequest { key: key.into(), lease: id, ..Default::default() }).await.unwrap();
    }
    let mut lease = LeaseClient::connect(allow.endpoint()).await.unwrap();
    let ttl = lease
        .lease_time_to_live(keel_proto::etcdserverpb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.keys, [b"/app/leased".to_vec()]);
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A member list as etcdctl prints it through a proxy, lines sorted
/// (etcd's proxy lists registrations in map order).
fn member_lines(endpoint: &str) -> Vec<String> {
    let out = common::etcd::etcdctl_ok(endpoint, &["member", "list"]);
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// `--resolver-prefix`: Keel's proxies register as etcd's grpc-proxy does
/// (same key, value and lease), so either lists the other; MemberList
/// through a proxy lists the live registered proxies; one killed leaves
/// the list when its lease expires, one stopped leaves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_register_under_a_resolver_prefix_as_etcds_do() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("keel")).await;
    keel.wait_for_quorum().await;
    let ports = [free_port(), free_port(), free_port()];
    let register = |port: u16, ttl: &str| {
        [
            "--resolver-prefix",
            "/proxies",
            "--resolver-ttl",
            ttl,
            "--advertise-client-url",
            format!("127.0.0.1:{port}").as_str(),
        ]
        .map(str::to_owned)
    };
    let [a_flags, b_flags, e_flags] = [register(ports[0], "2"), register(ports[1], "10"), register(ports[2], "2")];
    let a = ProxyProcess::keel_on(ports[0], &keel.endpoint(), &strs(&a_flags)).ready().await;
    let mut b = ProxyProcess::keel_on(ports[1], &keel.endpoint(), &strs(&b_flags)).ready().await;
    let mut etcd_proxy = ProxyProcess::etcd_on(ports[2], &keel.endpoint(), &strs(&e_flags), dir.path()).ready().await;

    let all: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let listed = |endpoint: String, want: usize| async move {
        let out = etcdctl(&endpoint, &["member", "list"]);
        String::from_utf8_lossy(&out.stdout).lines().count() == want
    };
    wait_for("three registrations", Duration::from_secs(20), || listed(a.endpoint(), 3)).await;
    wait_for("etcd's proxy to see them", Duration::from_secs(20), || listed(etcd_proxy.endpoint(), 3)).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let mut want: Vec<String> = all.iter().map(|addr| format!("0, started, {host}, , {addr}, false")).collect();
    want.sort();
    assert_eq!(member_lines(&a.endpoint()), want, "through Keel's proxy");
    assert_eq!(member_lines(&etcd_proxy.endpoint()), want, "through etcd's proxy");
    // The stored registration is byte for byte what etcd's proxy writes.
    let value =
        common::etcd::etcdctl_ok(&keel.endpoint(), &["get", &format!("/proxies/{}", all[0]), "--print-value-only"]);
    assert_eq!(value.trim_end(), format!(r#"{{"Op":0,"Addr":"{}","Metadata":"{{\"name\":\"{host}\"}}"}}"#, all[0]));

    // Killed: its registration lasts until its lease (2 s) expires.
    let killed = Instant::now();
    etcd_proxy.child.kill().unwrap();
    etcd_proxy.child.wait().unwrap();
    wait_for("the killed proxy's registration to expire", Duration::from_secs(15), || listed(a.endpoint(), 2)).await;
    assert!(killed.elapsed() >= Duration::from_millis(1500), "gone before its lease expired: {:?}", killed.elapsed());
    // Stopped: it revokes its lease (10 s) and leaves at once.
    let stopped = Instant::now();
    let term = Command::new("kill").args(["-TERM", &b.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    b.child.wait().unwrap();
    wait_for("the stopped proxy to leave", Duration::from_secs(5), || listed(a.endpoint(), 1)).await;
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(member_lines(&a.endpoint()), [format!("0, started, {host}, , {}, false", all[0])]);
    let registrations = metric(&a.metrics().await, "keel_grpc_proxy_registrations_total");
    assert_eq!(registrations, 1.0, "one lease, kept alive all along");
}
