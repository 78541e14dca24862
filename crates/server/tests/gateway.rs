//! etcd's JSON gateway, diffed against real etcd 3.4's: the same requests
//! to both, and the same status codes and bodies back once what differs
//! between any two clusters by nature (ids, terms, sizes, tokens) is masked.

mod common;

use common::etcd::{require_etcd, start_etcd_cluster, Plan};
use common::{http_exchange, http_stream, Keel};
use serde_json::Value;

/// Fields whose values belong to one cluster (masked), and fields only etcd
/// 3.5+ answers with (dropped: Keel speaks 3.6, the oracle is 3.4).
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "token",
    "hash",
    "version",
    "dbSize",
    "dbSizeInUse",
    "raftIndex",
    "raftAppliedIndex",
    "leader",
    "peerURLs",
    "clientURLs",
];
const NEWER_ONLY: &[&str] = &["storageVersion", "dbSizeQuota"];

fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for field in NEWER_ONLY {
                map.remove(*field);
            }
            // A member's id and name come from its flags.
            if map.contains_key("peerURLs") {
                for field in ["ID", "name"] {
                    map.insert(field.into(), Value::String("<masked>".into()));
                }
            }
            for (key, value) in map.iter_mut() {
                if MASKED.contains(&key.as_str()) {
                    *value = Value::String("<masked>".into());
                } else {
                    normalise(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// What a server answered: the status, and the body as normalised JSON (or
/// only its code, for requests whose error text is the JSON parser's own).
async fn ask(port: u16, path: &str, body: &str, token: Option<&str>, code_only: bool) -> (u16, String) {
    let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
    let (status, text) = http_exchange(port, "POST", path, &headers, body).await.unwrap();
    let Ok(mut json) = serde_json::from_str::<Value>(&text) else { return (status, "<not json>".into()) };
    if code_only {
        return (status, json["code"].to_string());
    }
    normalise(&mut json);
    (status, json.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_answers_as_etcds() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "gateway");
    let _etcd = start_etcd_cluster(&plan, &[dir.path().join("etcd")], dir.path());
    let keel = Keel::start(&dir.path().join("keel")).await;
    let ports = [plan.client_ports[0], keel.port];

    // (path, body, code only): run in order on both, answers compared one by one.
    let script: &[(&str, &str, bool)] = &[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, false),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, false),
        ("/v3/kv/range", r#"{"key":"Zm9v","bogus":1}"#, false),
        ("/v3/kv/range", r#"{"key":""}"#, false),
        ("/v3/kv/range", "", false),
        ("/v3/kv/range", "not json", true),
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#, false),
        ("/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#, false),
        ("/v3/kv/range", r#"{"key":"AA==","range_end":"AA==","sort_order":"DESCEND","keys_only":true}"#, false),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"99"}"#, false),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
            false,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"VERSION","key":"Zm9v","result":"GREATER","version":"10"}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
            false,
        ),
        ("/v3/kv/deleterange", r#"{"key":"YQ==","prev_kv":true}"#, false),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#, false),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#, false),
        ("/v3/lease/grant", r#"{"TTL":"600","ID":"7"}"#, false),
        ("/v3/lease/grant", r#"{"TTL":"600","ID":"7"}"#, false),
        ("/v3/kv/put", r#"{"key":"bGVhc2Vk","value":"eA==","lease":"7"}"#, false),
        ("/v3/kv/lease/leases", "{}", false),
        ("/v3/lease/timetolive", r#"{"ID":"7","keys":true}"#, true),
        ("/v3/kv/lease/timetolive", r#"{"ID":"8"}"#, false),
        ("/v3/lease/revoke", r#"{"ID":"99"}"#, false),
        ("/v3/kv/lease/revoke", r#"{"ID":"7"}"#, false),
        ("/v3/beta-is-not-a-path", "{}", true),
        ("/v3beta/kv/range", r#"{"key":"Zm9v"}"#, false),
        ("/v3/cluster/member/list", "{}", false),
        ("/v3/maintenance/alarm", r#"{"action":"GET"}"#, false),
        ("/v3/maintenance/status", "{}", false),
        ("/v3/maintenance/defragment", "{}", false),
        ("/v3/maintenance/hash", "{}", false),
        ("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#, false),
        ("/v3/auth/role/add", r#"{"name":"root"}"#, false),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#, false),
        ("/v3/auth/user/get", r#"{"name":"root"}"#, false),
        ("/v3/auth/role/list", "{}", false),
        ("/v3/auth/enable", "{}", false),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, false),
        ("/v3/auth/authenticate", r#"{"name":"root","password":"nope"}"#, false),
    ];
    for port in ports {
        let refused = common::http_request(port, "GET", "/v3/kv/range").await.unwrap();
        assert_eq!(refused, (405, "Method Not Allowed\n".to_string()));
    }
    for (path, body, code_only) in script {
        let etcd = ask(ports[0], path, body, None, *code_only).await;
        let ours = ask(ports[1], path, body, None, *code_only).await;
        assert_eq!(ours, etcd, "POST {path} {body}");
    }

    // Over --max-request-bytes (1.5 MiB): etcd's own refusal; over what gRPC
    // takes (2 MiB): gRPC's, relayed. Zero bytes are "AAAA" per three.
    for value_bytes in [1_600_200, 2_200_200] {
        let body = format!(r#"{{"key":"Yg==","value":"{}"}}"#, "AAAA".repeat(value_bytes / 3));
        let etcd = ask(ports[0], "/v3/kv/put", &body, None, false).await;
        let ours = ask(ports[1], "/v3/kv/put", &body, None, false).await;
        assert_eq!(ours, etcd, "a put of {value_bytes} bytes");
        if value_bytes > 2 << 20 {
            assert_eq!(ours.0, 429, "{ours:?}");
            assert!(ours.1.contains("grpc: received message larger than max"), "{ours:?}");
        }
    }

    // With a token in the Authorization header, as etcd's gateway takes it.
    let mut answers = Vec::new();
    for port in ports {
        let (_, text) = http_exchange(port, "POST", "/v3/auth/authenticate", &[], r#"{"name":"root","password":"pw"}"#)
            .await
            .unwrap();
        let token: Value = serde_json::from_str(&text).unwrap();
        let token = token["token"].as_str().unwrap().to_string();
        let read = ask(port, "/v3/kv/range", r#"{"key":"Zm9v"}"#, Some(&token), false).await;
        let disabled = ask(port, "/v3/auth/disable", "{}", Some(&token), false).await;
        answers.push((read, disabled));
    }
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[1].0 .0, 200);
}

/// Each line of a stream, normalised as a body.
fn stream_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut json: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(blob) = json.pointer_mut("/result/blob") {
                *blob = Value::String("<blob>".into());
            }
            if let Some(remaining) = json.pointer_mut("/result/remaining_bytes") {
                *remaining = Value::String("<remaining>".into());
            }
            if let Some(result) = json.get_mut("result").and_then(Value::as_object_mut) {
                result.remove("version"); // 3.6's snapshot field
            }
            normalise(&mut json);
            json.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateways_streams_answer_as_etcds() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "gateway-streams");
    let _etcd = start_etcd_cluster(&plan, &[dir.path().join("etcd")], dir.path());
    let keel = Keel::start(&dir.path().join("keel")).await;
    let wait = std::time::Duration::from_millis(1500);
    let mut answers = Vec::new();
    for port in [plan.client_ports[0], keel.port] {
        let put = |value: &'static str| async move {
            let body = format!(r#"{{"key":"d2F0Y2hlZA==","value":"{value}"}}"#);
            http_exchange(port, "POST", "/v3/kv/put", &[], &body).await.unwrap();
        };
        put("MQ==").await;
        put("Mg==").await;
        http_exchange(port, "POST", "/v3/lease/grant", &[], r#"{"TTL":"60","ID":"42"}"#).await.unwrap();
        // History from revision 1, then the watch stays open for more.
        let watch = r#"{"create_request":{"key":"d2F0Y2hlZA==","start_revision":"1","prev_kv":true}}"#;
        let (status, watched) = http_stream(port, "/v3/watch", watch, wait).await.unwrap();
        // Keep-alives for a live and an unknown lease; the stream ends with the body.
        let (ka_status, kept) =
            http_stream(port, "/v3/lease/keepalive", r#"{"ID":"42"}{"ID":"43"}"#, wait).await.unwrap();
        let (snap_status, snapshot) = http_stream(port, "/v3/maintenance/snapshot", "{}", wait).await.unwrap();
        let snapshot = stream_lines(&snapshot);
        let last = snapshot.last().cloned().unwrap_or_default();
        answers.push((
            status,
            stream_lines(&watched),
            ka_status,
            stream_lines(&kept),
            snap_status,
            snapshot[0].clone(),
            last,
        ));
    }
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[0].1.len(), 2, "created, then both puts in one message: {:?}", answers[0].1);
    assert_eq!(answers[0].3.len(), 2, "a keep-alive answered per request: {:?}", answers[0].3);
}

/// A watch opened through the gateway ends with its HTTP client: its
/// watcher leaves the hub (etcd_debugging_mvcc_watcher_total back to 0).
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_watch_ends_with_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let watchers = || async {
        let (_, metrics) = common::http_get(keel.port, "/metrics").await.unwrap();
        metrics.lines().find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total ")).map(str::to_owned)
    };
    let watch = r#"{"create_request":{"key":"YQ=="}}{"create_request":{"key":"Yg=="}}"#;
    let open = tokio::spawn(http_stream(keel.port, "/v3/watch", watch, std::time::Duration::from_millis(1500)));
    common::wait_for("two watchers", std::time::Duration::from_secs(10), || async {
        watchers().await.as_deref() == Some("2")
    })
    .await;
    let (status, answer) = open.await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(stream_lines(&answer).len(), 2, "{answer}");
    common::wait_for("the watchers to go with the client", std::time::Duration::from_secs(10), || async {
        watchers().await.as_deref() == Some("0")
    })
    .await;
}

/// A large answer streams: a snapshot of a store of several MiB comes
/// through the gateway as many `{"result":…}` messages of at most one
/// chunk each, never as one body the member built in memory first.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_snapshot_streams_through_the_gateway_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    // 48 values of 96 KiB (base64 of 72 KiB of varied bytes each).
    for i in 0..48u32 {
        let value: String = (0..96 * 1024u32)
            .map(|j| {
                char::from(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                        [((i * 7 + j * 13) % 64) as usize],
                )
            })
            .collect();
        let key = base64_of(format!("k{i:04}").as_bytes());
        let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
        let (status, answer) = http_exchange(keel.port, "POST", "/v3/kv/put", &[], &body).await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    let (status, streamed) =
        http_stream(keel.port, "/v3/maintenance/snapshot", "{}", std::time::Duration::from_secs(20)).await.unwrap();
    assert_eq!(status, 200);
    let mut total = 0usize;
    let messages: Vec<Value> =
        streamed.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    for message in &messages {
        let blob = message.pointer("/result/blob").and_then(Value::as_str).unwrap_or_default();
        // base64: 4 characters per 3 bytes; one chunk is at most 32 KiB.
        assert!(blob.len() <= 32 * 1024 * 4 / 3 + 4, "a message of {} base64 bytes", blob.len());
        total += blob.len() * 3 / 4;
    }
    assert!(messages.len() > 64, "{} messages", messages.len());
    assert!(total > 3 * 1024 * 1024, "{total} bytes streamed");
    let last = messages.last().unwrap();
    assert_eq!(last.pointer("/result/remaining_bytes"), None, "the last message has nothing left: {last}");
}

fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
