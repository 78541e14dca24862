//! Issue 14 on real processes: etcd's series scraped from a 3-member
//! cluster and read by Prometheus's own parser, every query of etcd's
//! dashboard and alert rules answered by a real Prometheus, and the health
//! endpoints through quorum loss and a partition.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get as get, http_request as request, wait_for, Cluster, Keel};
use keel_proto::etcdserverpb::{PutRequest, RangeRequest};

/// Series an etcd operator's dashboard and alerts read, and the rest of the
/// families the issue names.
const REQUIRED: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_quota_backend_bytes",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_mvcc_put_total",
    "etcd_mvcc_range_total",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_debugging_lease_granted_total",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_sent_failures_total",
    "etcd_network_peer_round_trip_time_seconds_bucket",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
    "etcd_server_client_requests_total",
    "etcd_server_apply_duration_seconds_bucket",
    "etcd_network_known_peers",
    "etcd_network_active_peers",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

/// Names of the samples in an exposition.
fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// Prometheus's own text-format parser (`promtool check metrics`): lint
/// remarks about etcd's names are fine, a parse error is not.
fn promtool_parses(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!report.contains("error while linting") && !report.contains("parsing error"), "promtool: {report}");
}

async fn traffic(cluster: &Cluster) {
    let mut kv = cluster.member(0).kv().await;
    for i in 0..20 {
        kv.put(PutRequest { key: format!("k{i}").into_bytes(), value: b"v".to_vec(), ..Default::default() })
            .await
            .unwrap();
    }
    kv.range(RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_series_is_served_and_parsed_by_prometheus() {
    let cluster = Cluster::start_with(3, &["--metrics", "extensive"]).await;
    traffic(&cluster).await;
    for keel in cluster.members.iter().flatten() {
        // The peer round-trip time is probed every few seconds.
        wait_for("a round-trip time sample", Duration::from_secs(20), || async {
            let (_, text) = get(keel.port, "/metrics").await.unwrap();
            text.contains("etcd_network_peer_round_trip_time_seconds_count")
        })
        .await;
        let (status, text) = get(keel.port, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        promtool_parses(&text);
        let names = sample_names(&text);
        let missing: Vec<&&str> = REQUIRED.iter().filter(|name| !names.contains(**name)).collect();
        assert!(missing.is_empty(), "member on {} lacks {missing:?}", keel.port);
        assert!(text.contains("etcd_server_has_leader 1"), "{text}");
        assert!(text.contains(
            r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_also_served_on_listen_metrics_urls() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let keel = Keel::spawn(
        dir.path(),
        free_port(),
        &["--listen-metrics-urls".to_string(), format!("http://127.0.0.1:{metrics_port}")],
    );
    keel.wait_ready().await;
    let (status, text) = get(metrics_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("etcd_server_has_leader 1"), "{text}");
    // Without --metrics extensive, no handling-time histogram.
    assert!(!text.contains("grpc_server_handling_seconds"), "{text}");
    assert_eq!(get(metrics_port, "/health").await.unwrap(), (200, r#"{"health":"true","reason":""}"#.to_string()));
    let (status, _) = get(metrics_port, "/livez").await.unwrap();
    assert_eq!(status, 200);
}

/// `expr` with every filtering comparison turned into a `bool` one, so an
/// alert's expression returns its series whether or not it would fire.
fn with_bool_comparisons(expr: &str) -> String {
    let bytes = expr.as_bytes();
    let mut out = String::new();
    let (mut braces, mut quoted, mut i) = (0, false, 0);
    while i < bytes.len() {
        let c = bytes[i] as char;
        if quoted {
            out.push(c);
            quoted = c != '"';
            i += 1;
            continue;
        }
        match c {
            '"' => quoted = true,
            '{' => braces += 1,
            '}' => braces -= 1,
            _ => {}
        }
        let two = expr.get(i..i + 2).unwrap_or("");
        let op = if braces > 0 {
            None
        } else if ["==", "!=", ">=", "<="].contains(&two) {
            Some(two)
        } else if c == '>' || c == '<' {
            Some(&expr[i..i + 1])
        } else {
            None
        };
        match op {
            Some(op) => {
                out.push_str(op);
                i += op.len();
                if !expr[i..].trim_start().starts_with("bool") {
                    out.push_str(" bool");
                }
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[test]
fn comparisons_become_bool_outside_selectors_only() {
    assert_eq!(
        with_bool_comparisons(r#"rate(x{a!="b",c=~"d"}[5m]) > 0.5 and y == bool 0 < z >= 1"#),
        r#"rate(x{a!="b",c=~"d"}[5m]) > bool 0.5 and y == bool 0 < bool z >= bool 1"#
    );
}

async fn prometheus_query(port: u16, query: &str, at: f64) -> serde_json::Value {
    let mut encoded = String::new();
    for byte in query.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(byte as char),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    let (status, body) = get(port, &format!("/api/v1/query?query={encoded}&time={at}")).await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_and_alert_query_of_etcds_mixin_returns_series() {
    let cluster = Cluster::start_with(3, &["--metrics", "extensive"]).await;
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> =
        cluster.members.iter().flatten().map(|keel| format!("'127.0.0.1:{}'", keel.port)).collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: etcd\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Prometheus::start(&config, &dir.path().join("data"), port);
    traffic(&cluster).await;
    wait_for("Prometheus to answer", Duration::from_secs(30), || async {
        get(port, "/-/ready").await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    // Rates need two scrapes, and the round-trip time a probe (every 4 s).
    let started = Instant::now();
    let queries =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/etcd-mixin-queries.txt"))
            .unwrap();
    let mut failures = Vec::new();
    for line in queries.lines().filter(|line| !line.trim().is_empty() && !line.starts_with('#')) {
        let (label, expr) = line.rsplit_once(": ").map_or(("", line), |(label, _)| (label, &line[label.len() + 2..]));
        let expr = with_bool_comparisons(expr);
        let mut answered = false;
        while !answered && started.elapsed() < Duration::from_secs(60) {
            let now = unix_now();
            // A subquery at a 1m resolution has two points only a minute
            // after the first scrape; evaluated two minutes ahead (samples
            // stay visible for Prometheus's 5m lookback), it has them now.
            for at in [now, now + 120.0] {
                let answer = prometheus_query(port, &expr, at).await;
                assert_eq!(answer["status"], "success", "{label}: {expr}: {answer}");
                if answer["data"]["result"].as_array().is_some_and(|result| !result.is_empty()) {
                    answered = true;
                    break;
                }
            }
            if !answered {
                traffic(&cluster).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if !answered {
            failures.push(format!("{label}: {expr}"));
        }
    }
    let targets = get(port, "/api/v1/targets").await.unwrap().1;
    prometheus.stop();
    assert!(failures.is_empty(), "queries without series: {failures:#?}\ntargets: {targets}");
}

struct Prometheus(std::process::Child);

impl Prometheus {
    fn start(config: &Path, data: &Path, port: u16) -> Prometheus {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package) is installed");
        Prometheus(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_turns_false_without_quorum_and_true_again() {
    let mut cluster = Cluster::start(3).await;
    let port = cluster.member(0).port;
    // Members answer before they have elected a leader.
    wait_for("a leader", Duration::from_secs(20), || async {
        get(port, "/health").await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    assert_eq!(get(port, "/health").await.unwrap(), (200, r#"{"health":"true","reason":""}"#.to_string()));
    assert_eq!(
        get(port, "/health?serializable=true").await.unwrap(),
        (200, r#"{"health":"true","reason":""}"#.to_string())
    );
    cluster.kill9(1);
    cluster.kill9(2);
    wait_for("/health to turn false", Duration::from_secs(20), || async {
        get(port, "/health").await.is_ok_and(|(status, _)| status == 503)
    })
    .await;
    let (_, body) = get(port, "/health").await.unwrap();
    assert!(body == "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n" || body.contains("RANGE ERROR"), "{body}");
    // The member itself still serves its own data.
    assert_eq!(get(port, "/health?serializable=true").await.unwrap().0, 200);
    cluster.restart(1).await;
    wait_for("/health to turn true", Duration::from_secs(20), || async {
        get(port, "/health").await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    let metrics = get(port, "/metrics").await.unwrap().1;
    let count = |name: &str| {
        metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert!(count("etcd_server_health_failures ") >= 1.0, "{metrics}");
    assert!(count("etcd_server_health_success ") >= 2.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_in_a_partition_while_livez_does_not() {
    let cluster = Cluster::start(3).await;
    let port = cluster.member(0).port;
    wait_for("a leader", Duration::from_secs(20), || async {
        get(port, "/readyz").await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    assert_eq!(get(port, "/readyz").await.unwrap(), (200, "ok\n".to_string()));
    // etcd prints the lines in Go's map order; Keel sorts them.
    assert_eq!(
        get(port, "/readyz?verbose").await.unwrap(),
        (
            200,
            "[+]data_corruption ok\n[+]linearizable_read ok\n[+]non_learner ok\n[+]serializable_read ok\nok\n"
                .to_string()
        )
    );
    assert_eq!(get(port, "/livez").await.unwrap(), (200, "ok\n".to_string()));
    assert_eq!(get(port, "/livez/").await.unwrap().0, 404);
    assert_eq!(get(port, "/readyz/unknown").await.unwrap(), (404, "404 page not found\n".to_string()));
    // The other two freeze: member 0 is cut off from both.
    cluster.member(1).pause();
    cluster.member(2).pause();
    let (status, body) = get(port, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("[-]linearizable_read failed: etcdserver: ") && body.ends_with("ok\n\n"), "{body}");
    assert!(body.contains("[+]serializable_read ok\n"), "{body}");
    assert_eq!(get(port, "/livez").await.unwrap(), (200, "ok\n".to_string()));
    assert_eq!(get(port, "/readyz?exclude=linearizable_read").await.unwrap().0, 200);
    assert_eq!(get(port, "/readyz/serializable_read").await.unwrap().0, 200);
    assert_eq!(get(port, "/readyz/linearizable_read").await.unwrap().0, 503);
    cluster.member(1).resume();
    cluster.member(2).resume();
    wait_for("/readyz to pass again", Duration::from_secs(30), || async {
        get(port, "/readyz").await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
}

/// A member that cannot publish its attributes (no quorum) is live but not
/// ready, whatever check is excluded: etcd would not answer at all.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_waits_for_the_member_to_be_published() {
    let dir = tempfile::tempdir().unwrap();
    let (port, peer, absent) = (free_port(), free_port(), free_port());
    let flags: Vec<String> = [
        "--name=m0".to_string(),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=m0=http://127.0.0.1:{peer},m1=http://127.0.0.1:{absent}"),
    ]
    .into();
    let keel = Keel::spawn(dir.path(), port, &flags);
    keel.wait_ready().await;
    assert_eq!(get(port, "/livez").await.unwrap(), (200, "ok\n".to_string()));
    for path in ["/readyz", "/readyz?exclude=linearizable_read", "/readyz/serializable_read"] {
        let (status, body) = get(port, path).await.unwrap();
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.starts_with("[-]published failed: "), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn version_is_etcds_shape() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let (status, body) = get(keel.port, "/version").await.unwrap();
    assert_eq!(status, 200);
    let version: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(version["etcdserver"].as_str().is_some_and(|v| v.starts_with("3.")), "{body}");
    assert!(version["etcdcluster"].as_str().is_some_and(|v| v.ends_with(".0")), "{body}");
    assert_eq!(get(keel.port, "/health").await.unwrap().0, 200);
    // etcd's answers to other methods and unknown paths (Go's mux and http.Error).
    let not_allowed = (405, "Method Not Allowed\n".to_string());
    assert_eq!(request(keel.port, "POST", "/version").await.unwrap(), not_allowed);
    assert_eq!(request(keel.port, "POST", "/health").await.unwrap(), not_allowed);
    assert_eq!(request(keel.port, "POST", "/readyz").await.unwrap(), not_allowed);
    assert_eq!(request(keel.port, "POST", "/readyz/unknown").await.unwrap().0, 404);
    assert_eq!(request(keel.port, "POST", "/metrics").await.unwrap().0, 200);
    assert_eq!(get(keel.port, "/no/such/path").await.unwrap(), (404, "404 page not found\n".to_string()));
}
