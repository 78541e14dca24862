//! The v2 API (`--enable-v2`: `/v2/keys`, `/v2/members`, `/v2/machines`,
//! `/v2/stats/*`), diffed against real etcd 3.4's: the same requests, in the
//! same order, to a fresh etcd and a fresh Keel, and the same bytes back
//! (status line, every header in order, body, chunking) once what differs
//! between two clusters by nature is masked: `Date`, the cluster and member
//! ids, the `X-Raft-Index` / `X-Raft-Term` values, ports in member URLs,
//! `expiration` timestamps and `ttl` values (and the `Content-Length` or
//! chunk size of a body where one of those was masked). `X-Etcd-Index` is
//! not masked: Keel counts v2 indexes as etcd does, its 3 bootstrap writes
//! included. See docs/etcd-v2-reference.md for the transcripts.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::etcd::{require_etcd, start_etcd_cluster_with, Etcd, Plan};
use common::Keel;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const FORM: &str = "application/x-www-form-urlencoded";
/// How long any read may block: a watch that should fire does so well within it.
const READ_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client: one keep-alive connection, responses read exactly
// as sent.

#[derive(Debug, Clone)]
struct Response {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// What `Content-Length` announced (nothing for HEAD, 204, 304).
    Plain(String),
    /// `Transfer-Encoding: chunked`: each chunk's data, and whether the
    /// terminating chunk arrived.
    Chunked { chunks: Vec<String>, complete: bool },
}

impl Response {
    fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn etcd_index(&self) -> Option<u64> {
        self.header("X-Etcd-Index")?.parse().ok()
    }

    fn body_text(&self) -> String {
        match &self.body {
            Body::Plain(text) => text.clone(),
            Body::Chunked { chunks, .. } => chunks.concat(),
        }
    }
}

struct Conn {
    port: u16,
    reader: BufReader<TcpStream>,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connecting");
        Conn { port, reader: BufReader::new(stream) }
    }

    /// Sends a request. A body is sent as a form (`application/json` if it
    /// starts with `{`); PUT and POST always carry a `Content-Length`.
    async fn write_request(&mut self, method: &str, target: &str, body: &str) {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", self.port);
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            let content_type = if body.starts_with('{') { "application/json" } else { FORM };
            request.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.reader.get_mut().write_all(request.as_bytes()).await.expect("sending a request");
    }

    async fn read_line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(READ_LIMIT, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for the server")
            .expect("reading from the server");
        assert!(read > 0, "the server closed the connection");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    async fn read_head(&mut self) -> (String, Vec<(String, String)>) {
        let status_line = self.read_line().await;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line().await;
            if line.is_empty() {
                return (status_line, headers);
            }
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("not a header line: {line:?}"));
            headers.push((name.to_string(), value.trim_start().to_string()));
        }
    }

    async fn read_exact(&mut self, len: usize) -> String {
        let mut data = vec![0; len];
        tokio::time::timeout(READ_LIMIT, self.reader.read_exact(&mut data))
            .await
            .expect("timed out waiting for the body")
            .expect("reading the body");
        String::from_utf8(data).expect("a UTF-8 body")
    }

    async fn read_body(&mut self, method: &str, status: u16, headers: &[(String, String)]) -> Body {
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            return Body::Plain(String::new());
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut chunks = Vec::new();
            loop {
                let size_line = self.read_line().await;
                let size = usize::from_str_radix(size_line.trim(), 16)
                    .unwrap_or_else(|_| panic!("not a chunk size: {size_line:?}"));
                if size == 0 {
                    let end = self.read_line().await;
                    assert_eq!(end, "", "no trailers expected");
                    return Body::Chunked { chunks, complete: true };
                }
                let data = self.read_exact(size + 2).await;
                assert!(data.ends_with("\r\n"), "a chunk not ended by CRLF: {data:?}");
                chunks.push(data[..size].to_string());
            }
        }
        let length = header("Content-Length").map_or(0, |v| v.parse().expect("a Content-Length"));
        Body::Plain(self.read_exact(length).await)
    }

    async fn send(&mut self, method: &str, target: &str, body: &str) -> Response {
        self.write_request(method, target, body).await;
        let (status_line, headers) = self.read_head().await;
        let mut response = Response { status_line, headers, body: Body::Plain(String::new()) };
        response.body = self.read_body(method, response.status(), &response.headers).await;
        response
    }

    /// A watch's head: the server flushes it when the watch is registered.
    async fn open_watch(&mut self, target: &str) -> Response {
        self.write_request("GET", target, "").await;
        let (status_line, headers) = self.read_head().await;
        Response { status_line, headers, body: Body::Chunked { chunks: Vec::new(), complete: false } }
    }

    /// The rest of a watch opened by [`Conn::open_watch`]: its event.
    async fn finish_watch(&mut self, mut head: Response) -> Response {
        head.body = self.read_body("GET", head.status(), &head.headers).await;
        head
    }
}

// ---------------------------------------------------------------------------
// Masking and rendering.

/// Replaces every value that follows `needle` with `placeholder`;
/// `value_len` says how long the value there is (0: nothing to mask).
fn mask_values(text: &str, needle: &str, placeholder: &str, value_len: impl Fn(&str) -> usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(needle) {
        let value_at = pos + needle.len();
        out.push_str(&rest[..value_at]);
        rest = &rest[value_at..];
        let len = value_len(rest);
        if len > 0 {
            out.push_str(placeholder);
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the string value of every `"field":"..."` (values without
/// escapes) with `placeholder`.
fn mask_string_field(text: &str, field: &str, placeholder: &str) -> String {
    let quoted = |rest: &str| -> usize {
        if !rest.starts_with('"') {
            return 0;
        }
        rest[1..].find('"').map_or(rest.len(), |end| end + 2)
    };
    mask_values(text, &format!("\"{field}\":"), &format!("\"{placeholder}\""), quoted)
}

/// Replaces the integer value of every `"field":N` with `placeholder`.
fn mask_number_field(text: &str, field: &str, placeholder: &str) -> String {
    let digits = |rest: &str| rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'-').count();
    mask_values(text, &format!("\"{field}\":"), placeholder, digits)
}

/// Ports of loopback URLs (member peer and client URLs, `/v2/machines`).
fn mask_ports(text: &str) -> String {
    mask_values(text, "127.0.0.1:", "<port>", |rest| rest.bytes().take_while(u8::is_ascii_digit).count())
}

fn mask_body(text: &str) -> String {
    let text = mask_string_field(text, "expiration", "<expiration>");
    let text = mask_number_field(&text, "ttl", "<ttl>");
    // Member JSON and `/v2/stats/*`.
    let text = mask_string_field(&text, "id", "<member-id>");
    let text = mask_string_field(&text, "leader", "<member-id>");
    mask_ports(&mask_store_stats(&text))
}

/// `/v2/stats/store`'s counters, as far as they mean the same on both: etcd
/// also counts a failed get for each request's probe of its v2 auth store,
/// and counts some refusals (of the root, of a directory) as successes,
/// because its store's deferred counter sees only errors assigned to its
/// named result (docs/compat.md). So `getsFail` is masked, and of deletes,
/// updates and compare-and-swaps/deletes only the totals are compared.
fn mask_store_stats(text: &str) -> String {
    if !text.starts_with("{\"getsSuccess\"") {
        return text.to_string();
    }
    let stats: serde_json::Map<String, Value> = serde_json::from_str(text).expect("stats/store is a JSON object");
    let count = |name: &str| stats.get(name).and_then(Value::as_u64).unwrap_or_else(|| panic!("no {name} in {text}"));
    let mut out = Vec::new();
    for (name, value) in &stats {
        let masked = match name.as_str() {
            "getsFail" => "<n>".to_string(),
            other => match ["delete", "update", "compareAndSwap", "compareAndDelete"]
                .iter()
                .find(|op| other == format!("{op}Success") || other == format!("{op}Fail"))
            {
                Some(op) if other.ends_with("Success") => {
                    format!("<total {}>", count(&format!("{op}Success")) + count(&format!("{op}Fail")))
                }
                Some(_) => "<in total>".to_string(),
                None => value.to_string(),
            },
        };
        out.push(format!("\"{name}\":{masked}"));
    }
    format!("{{{}}}", out.join(","))
}

/// The response as sent, masked.
fn render(response: &Response) -> String {
    let (body, body_masked) = match &response.body {
        Body::Plain(text) => {
            let masked = mask_body(text);
            let changed = masked != *text;
            (masked, changed)
        }
        Body::Chunked { chunks, complete } => {
            let mut out = String::new();
            let mut changed = false;
            for chunk in chunks {
                let masked = mask_body(chunk);
                let size = if masked == *chunk {
                    format!("{:x}", chunk.len())
                } else {
                    changed = true;
                    "<size>".to_string()
                };
                out.push_str(&format!("{size}\r\n{masked}\r\n"));
            }
            if *complete {
                out.push_str("0\r\n\r\n");
            }
            (out, changed)
        }
    };
    let mut text = format!("{}\r\n", response.status_line);
    // Header names are case-insensitive (Go writes them canonical, hyper
    // lower-case) and their order means nothing to HTTP (Go sorts the ones
    // a handler sets, then adds Date, Content-Length and sniffed types):
    // compared canonical and sorted, `Date` checked present and left out.
    assert!(response.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("Date")), "no Date header");
    let mut headers: Vec<(String, &String)> =
        response.headers.iter().map(|(name, value)| (canonical_header(name), value)).collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in headers {
        let value = match name.as_str() {
            "Date" => continue,
            "X-Etcd-Cluster-Id" => "<cluster-id>",
            "X-Raft-Index" => "<raft-index>",
            "X-Raft-Term" => "<raft-term>",
            "Content-Length" if body_masked => "<length>",
            _ => value.as_str(),
        };
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(&body);
    text
}

/// Go's canonical MIME header form: `x-etcd-index` → `X-Etcd-Index`.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

// ---------------------------------------------------------------------------
// A fresh etcd and a fresh Keel, both with `--enable-v2`.

struct Pair {
    // Processes first: they are killed before the directory goes.
    _etcd: Vec<Etcd>,
    _keel: Keel,
    /// etcd's client port, then Keel's.
    ports: [u16; 2],
    _dir: tempfile::TempDir,
}

/// Keel's flags for the single member of `plan` (client URLs and data dir are
/// `Keel::spawn`'s), with `--enable-v2` when `v2`.
fn keel_flags(plan: &Plan, v2: bool) -> Vec<String> {
    let mut flags = plan.keel_flags(0);
    if v2 {
        flags.push("--enable-v2".to_string());
    }
    flags
}

async fn start_keel(plan: &Plan, data_dir: &Path, v2: bool) -> Keel {
    let keel = Keel::spawn(data_dir, plan.client_ports[0], &keel_flags(plan, v2));
    keel.wait_ready().await;
    keel
}

async fn start_pair(token: &str) -> Pair {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    // The same member name on both: `/v2/members` and `/v2/stats/self` show it.
    let etcd_plan = Plan::new(1, token);
    let etcd = start_etcd_cluster_with(&etcd_plan, &[dir.path().join("etcd")], dir.path(), &["--enable-v2"]);
    let keel_plan = Plan::new(1, token);
    let keel = start_keel(&keel_plan, &dir.path().join("keel"), true).await;
    Pair { ports: [etcd_plan.client_ports[0], keel.port], _etcd: etcd, _keel: keel, _dir: dir }
}

/// One connection to each server; every request goes to etcd, then to Keel.
struct Both {
    conns: [Conn; 2],
}

impl Both {
    async fn open(pair: &Pair) -> Both {
        Both { conns: [Conn::open(pair.ports[0]).await, Conn::open(pair.ports[1]).await] }
    }

    /// Sends the request to both; asserts etcd answered `status` (the script
    /// is right) and Keel the same bytes after masking. Returns etcd's answer.
    async fn check(&mut self, method: &str, target: &str, body: &str, status: u16) -> Response {
        let etcd = self.conns[0].send(method, target, body).await;
        let keel = self.conns[1].send(method, target, body).await;
        let what = format!("{method} {target} {body:?}");
        assert_eq!(etcd.status(), status, "etcd's answer to {what}:\n{}", render(&etcd));
        assert_eq!(render(&keel), render(&etcd), "{what}");
        etcd
    }
}

// ---------------------------------------------------------------------------
// The keys API.

/// (method, request target, form body, etcd's status). Run in order on both.
/// The comments give the v2 index each successful write takes: a fresh
/// member is at 3.
#[rustfmt::skip]
const KEYS_SCRIPT: &[(&str, &str, &str, u16)] = &[
    ("GET", "/v2/keys", "", 200),
    ("GET", "/v2/keys/", "", 200),
    // ---- set (4.3)
    ("PUT", "/v2/keys/message", "value=hello", 201), // 4
    ("PUT", "/v2/keys/message", "value=world", 200), // 5
    ("GET", "/v2/keys/message", "", 200),
    ("GET", "/v2/keys/message/", "", 200),
    ("GET", "/v2/keys/missing", "", 404),
    ("HEAD", "/v2/keys/message", "", 200),
    ("HEAD", "/v2/keys/nokey", "", 404),
    ("PUT", "/v2/keys/empty", "value=", 201), // 6
    ("PUT", "/v2/keys/novalue", "", 201), // 7
    ("PUT", "/v2/keys/qs?value=fromquery", "", 201), // 8
    ("PUT", "/v2/keys/qs?value=fromquery", "value=frombody", 200), // 9
    ("PUT", "/v2/keys/f3?value=a&value=b", "value=c&value=d", 201), // 10
    ("PUT", "/v2/keys/html", "value=%3Ca%3E%26", 201), // 11
    ("PUT", "/v2/keys/utf", "value=h%C3%A9llo+w", 201), // 12
    // A JSON body is not a form: no value.
    ("PUT", "/v2/keys/jsonbody", "{\"value\":\"x\"}", 201), // 13
    ("PUT", "/v2/keys/dir1", "dir=true", 201), // 14
    ("PUT", "/v2/keys/zd", "dir=true&value=ignored", 201), // 15
    ("PUT", "/v2/keys/dir1", "dir=true", 403),
    ("PUT", "/v2/keys/dir1", "value=x", 403),
    ("PUT", "/v2/keys/message/child", "value=x", 400),
    ("GET", "/v2/keys/message/child", "", 400),
    ("PUT", "/v2/keys/dir1/a/b", "value=deep", 201), // 16
    ("PUT", "/v2/keys/dir1/z", "value=zz", 201), // 17
    ("PUT", "/v2/keys/dir1/c", "value=cc", 201), // 18
    ("GET", "/v2/keys/dir1?sorted=true", "", 200),
    ("GET", "/v2/keys/dir1?recursive=true&sorted=true", "", 200),
    ("GET", "/v2/keys/dir1/a", "", 200),
    ("GET", "/v2/keys/dir1/a?recursive=true", "", 200),
    ("GET", "/v2/keys/zd?recursive=true", "", 200),
    ("GET", "/v2/keys/?recursive=true&sorted=true", "", 200),
    ("GET", "/v2/keys/message?dir=true&sorted=true", "", 200),
    // %2F separates path components; %20 is a literal space.
    ("GET", "/v2/keys/a%2Fb", "", 404),
    ("PUT", "/v2/keys/sp%20ace", "value=v", 201), // 19
    ("GET", "/v2/keys/sp%20ace", "", 200),
    ("PUT", "/v2/keys/tr/", "value=t", 201), // 20
    ("GET", "/v2/keys/tr", "", 200),
    // ---- prevExist, prevValue, prevIndex (4.4)
    ("PUT", "/v2/keys/cas?prevExist=true", "value=one", 404),
    ("PUT", "/v2/keys/cas?prevExist=false", "value=one", 201), // 21
    ("PUT", "/v2/keys/cas?prevExist=false", "value=two", 412),
    ("PUT", "/v2/keys/cas?prevExist=true", "value=two", 200), // 22
    ("PUT", "/v2/keys/cas?prevValue=two", "value=three", 200), // 23
    ("PUT", "/v2/keys/cas?prevValue=nope", "value=four", 412),
    ("PUT", "/v2/keys/cas?prevIndex=1", "value=four", 412),
    ("PUT", "/v2/keys/cas?prevIndex=1&prevValue=nope", "value=four", 412),
    ("PUT", "/v2/keys/cas?prevIndex=23&prevValue=three", "value=four", 200), // 24
    ("PUT", "/v2/keys/cas?prevIndex=0", "value=five", 200), // 25
    ("PUT", "/v2/keys/cas?prevValue=x&prevExist=false", "value=six", 412),
    ("PUT", "/v2/keys/cas?prevValue=nope&prevExist=true", "value=six", 412),
    ("PUT", "/v2/keys/nokey2?prevValue=x", "value=six", 404),
    ("PUT", "/v2/keys/dir1?prevValue=x", "value=six", 403),
    ("PUT", "/v2/keys/zd?prevIndex=3", "dir=true", 403),
    ("PUT", "/v2/keys/newdir?prevExist=false", "dir=true", 201), // 26
    ("PUT", "/v2/keys/newdir?prevExist=false", "dir=true", 412),
    // ---- TTL, refresh (4.5); long TTLs, removed again before anything expires
    ("PUT", "/v2/keys/ttlkey", "value=v&ttl=1000", 201), // 27
    ("GET", "/v2/keys/ttlkey", "", 200),
    ("PUT", "/v2/keys/ttlkey?refresh=true&prevExist=true", "ttl=2000", 200), // 28
    ("PUT", "/v2/keys/ttlkey?refresh=true", "ttl=3000", 200), // 29
    ("PUT", "/v2/keys/nokey?refresh=true&prevExist=true", "ttl=5", 404),
    ("PUT", "/v2/keys/nokey?refresh=true", "ttl=5", 404),
    ("PUT", "/v2/keys/ttlkey?prevExist=true", "value=v2&ttl=", 200), // 30
    ("GET", "/v2/keys/ttlkey", "", 200),
    ("PUT", "/v2/keys/ttldir", "dir=true&ttl=1000", 201), // 31
    ("PUT", "/v2/keys/ttldir?prevExist=true", "dir=true&ttl=2000", 200), // 32
    ("PUT", "/v2/keys/ttldir?prevExist=true", "dir=true&ttl=", 200), // 33
    ("PUT", "/v2/keys/ttldir?prevExist=true", "value=x", 403),
    // The stored directory kept its modifiedIndex (31).
    ("GET", "/v2/keys/ttldir", "", 200),
    ("PUT", "/v2/keys/cas?prevValue=five", "value=seven&ttl=1000", 200), // 34
    ("PUT", "/v2/keys/cas?prevValue=seven", "value=eight&ttl=", 200), // 35
    // ---- POST: in-order keys (4.6)
    ("POST", "/v2/keys/queue", "value=job1", 201), // 36
    ("POST", "/v2/keys/queue", "dir=true", 201), // 37
    ("POST", "/v2/keys/queue", "", 201), // 38
    ("POST", "/v2/keys/queue?prevExist=false", "value=y", 201), // 39
    ("GET", "/v2/keys/queue?recursive=true&sorted=true", "", 200),
    ("POST", "/v2/keys/message", "value=x", 400),
    ("POST", "/v2/keys", "value=x", 201), // 40
    // ---- hidden keys (4.8)
    ("PUT", "/v2/keys/_hidden", "value=secret", 201), // 41
    ("PUT", "/v2/keys/hdir/_h", "value=secret", 201), // 42
    ("PUT", "/v2/keys/hdir/v", "value=visible", 201), // 43
    ("PUT", "/v2/keys/_hdir/x", "value=inside", 201), // 44
    ("GET", "/v2/keys/hdir?recursive=true", "", 200),
    ("GET", "/v2/keys/_hidden", "", 200),
    ("GET", "/v2/keys/_hdir", "", 200),
    ("GET", "/v2/keys/?recursive=true&sorted=true", "", 200),
    // ---- DELETE (4.7)
    ("DELETE", "/v2/keys/dir1/z", "", 200), // 45
    ("DELETE", "/v2/keys/dir1/z", "", 404),
    ("DELETE", "/v2/keys/dir1", "", 403),
    ("DELETE", "/v2/keys/dir1?dir=true", "", 403),
    // A DELETE's body is not read.
    ("DELETE", "/v2/keys/newdir", "dir=true", 403),
    ("DELETE", "/v2/keys/dir1/a/b?dir=true", "", 200), // 46
    ("PUT", "/v2/keys/emptydir", "dir=true", 201), // 47
    ("DELETE", "/v2/keys/emptydir?dir=true", "", 200), // 48
    ("DELETE", "/v2/keys/dir1?recursive=true", "", 200), // 49
    ("GET", "/v2/keys/dir1/c", "", 404),
    ("DELETE", "/v2/keys/cas?prevValue=nope", "", 412),
    ("DELETE", "/v2/keys/cas?prevIndex=3", "", 412),
    ("DELETE", "/v2/keys/cas?prevValue=eight&prevIndex=3", "", 412),
    ("DELETE", "/v2/keys/newdir?prevIndex=35", "", 403),
    ("DELETE", "/v2/keys/gone?prevIndex=35", "", 404),
    ("DELETE", "/v2/keys/cas?prevValue=eight", "", 200), // 50
    ("DELETE", "/v2/keys/newdir?dir=true", "", 200), // 51
    // ---- the root (4.8)
    ("DELETE", "/v2/keys/", "", 400),
    ("DELETE", "/v2/keys?recursive=true", "", 400),
    ("PUT", "/v2/keys/", "value=x", 400),
    ("PUT", "/v2/keys", "value=x", 400),
    ("PUT", "/v2/keys/?prevExist=true", "value=x", 400),
    ("PUT", "/v2/keys/?prevExist=false", "value=x", 400),
    ("PUT", "/v2/keys/?prevValue=a", "value=x", 400),
    ("DELETE", "/v2/keys/?prevValue=a", "", 403),
    // ---- noValueOnSuccess and quorum (4.9)
    ("PUT", "/v2/keys/nv?noValueOnSuccess=true", "value=x", 201), // 52
    ("PUT", "/v2/keys/nv?noValueOnSuccess=true&prevExist=true", "value=y", 200), // 53
    ("POST", "/v2/keys/zq?noValueOnSuccess=true", "value=t", 201), // 54
    ("GET", "/v2/keys/nv?noValueOnSuccess=true", "", 200),
    ("PUT", "/v2/keys/nokey3?prevExist=true&noValueOnSuccess=true", "value=x", 404),
    ("DELETE", "/v2/keys/nv?noValueOnSuccess=true", "", 200), // 55
    ("GET", "/v2/keys/message?quorum=true", "", 200),
    ("GET", "/v2/keys/missing?quorum=true", "", 404),
    // quorum=true wins over wait=true: a plain get at once.
    ("GET", "/v2/keys/message?quorum=true&wait=true&waitIndex=4", "", 200),
    ("HEAD", "/v2/keys/message?quorum=true", "", 200),
    // ---- validation (2.4): index 0, before raft
    ("GET", "/v2/keys/message?recursive=maybe", "", 400),
    ("GET", "/v2/keys/message?recursive=", "", 400),
    ("GET", "/v2/keys/message?sorted=maybe", "", 400),
    ("GET", "/v2/keys/message?wait=maybe", "", 400),
    ("GET", "/v2/keys/message?quorum=maybe", "", 400),
    ("GET", "/v2/keys/message?stream=maybe", "", 400),
    ("PUT", "/v2/keys/message?dir=maybe", "value=x", 400),
    ("PUT", "/v2/keys/message?wait=true", "value=x", 400),
    ("HEAD", "/v2/keys/message?wait=true", "", 400),
    ("DELETE", "/v2/keys/message?wait=true", "", 400),
    ("PUT", "/v2/keys/message?prevExist=maybe", "value=two", 400),
    ("PUT", "/v2/keys/message?refresh=maybe", "ttl=5", 400),
    ("PUT", "/v2/keys/message?noValueOnSuccess=maybe", "value=x", 400),
    ("PUT", "/v2/keys/message?prevIndex=abc", "value=four", 400),
    ("PUT", "/v2/keys/message?prevIndex=", "value=four", 400),
    ("PUT", "/v2/keys/message?prevIndex=-1", "value=four", 400),
    ("GET", "/v2/keys/message?wait=true&waitIndex=abc", "", 400),
    ("GET", "/v2/keys/message?wait=true&waitIndex=", "", 400),
    ("PUT", "/v2/keys/message", "ttl=abc&value=v", 400),
    ("PUT", "/v2/keys/message", "ttl=-1&value=v", 400),
    ("PUT", "/v2/keys/message", "ttl=%2B5&value=v", 400),
    ("PUT", "/v2/keys/message?prevValue=", "value=four", 400),
    ("DELETE", "/v2/keys/message?prevValue=", "", 400),
    ("PUT", "/v2/keys/message?refresh=true", "ttl=300&value=new", 400),
    ("PUT", "/v2/keys/message?refresh=true&prevExist=true", "", 400),
    ("PUT", "/v2/keys/message?refresh=true", "ttl=", 400),
    ("PUT", "/v2/keys/f2", "value=%zz", 400),
    ("GET", "/v2/keys/f2?a=%zz", "", 400),
    // The order of the checks: form, prevIndex, waitIndex, booleans, wait on
    // non-GET, prevValue, noValueOnSuccess, ttl, prevExist, refresh.
    ("PUT", "/v2/keys/x?prevIndex=abc&recursive=maybe&ttl=abc", "value=%zz", 400),
    ("PUT", "/v2/keys/x?prevIndex=abc&waitIndex=abc&recursive=maybe", "", 400),
    ("GET", "/v2/keys/x?waitIndex=abc&recursive=maybe", "", 400),
    ("PUT", "/v2/keys/x?recursive=maybe&wait=true&prevValue=", "", 400),
    ("PUT", "/v2/keys/x?wait=true&prevValue=", "", 400),
    ("PUT", "/v2/keys/x?prevValue=&noValueOnSuccess=maybe&ttl=abc", "", 400),
    ("PUT", "/v2/keys/x?noValueOnSuccess=maybe&ttl=abc", "", 400),
    ("PUT", "/v2/keys/x?ttl=abc&prevExist=maybe", "", 400),
    ("PUT", "/v2/keys/x?prevExist=maybe&refresh=maybe", "", 400),
    // Nothing above took an index.
    ("GET", "/v2/keys/x", "", 404),
    // ---- Go's own answers (1)
    ("PATCH", "/v2/keys/foo", "", 405),
    ("GET", "/v2/foo", "", 404),
    ("GET", "/v2/keys/a/../foo", "", 301),
    ("GET", "/v2/keys//foo", "", 301),
    ("GET", "/v2/keys/..", "", 301),
    ("GET", "/v2/keys/./foo?recursive=true", "", 301),
    ("PUT", "/v2/keys/x/../foo?value=1", "", 301),
    ("DELETE", "/v2/keys//message", "", 301),
    ("OPTIONS", "/v2/keys/foo", "", 200),
    // etcd answers OPTIONS on every path of the client port (its CORS
    // wrapper); Keel only under /v2 (docs/compat.md).
    ("PATCH", "/v2/members", "", 405),
    ("GET", "/v2/members/foo", "", 404),
    ("DELETE", "/v2/members", "", 405),
    ("POST", "/v2/members", "{\"peerURLs\":[\"not a url\"]}", 400),
    ("POST", "/v2/members", "{}", 400),
    ("POST", "/v2/members", "peerURLs=x", 415),
    ("POST", "/v2/machines", "", 405),
    ("GET", "/v2/machines/", "", 404),
    ("HEAD", "/v2/machines", "", 200),
    ("GET", "/v2/stats", "", 404),
    ("POST", "/v2/stats/store", "", 405),
    ("PUT", "/v2/stats/self", "", 405),
    // ---- watches answered from the history (5.3)
    ("GET", "/v2/keys/queue?wait=true&waitIndex=36&recursive=true", "", 200),
    ("GET", "/v2/keys/message?wait=true&waitIndex=1", "", 200),
    ("GET", "/v2/keys/message?wait=true&waitIndex=5", "", 200),
    // The history scan does not filter hidden keys.
    ("GET", "/v2/keys/?wait=true&recursive=true&waitIndex=41", "", 200),
    // A delete of a directory reaches watchers of keys inside it.
    ("GET", "/v2/keys/dir1/a/b?wait=true&waitIndex=47", "", 200),
    // Refresh writes are skipped: the first event for ttlkey after 28 is 30.
    ("GET", "/v2/keys/ttlkey?wait=true&waitIndex=28", "", 200),
    ("GET", "/v2/keys/cas?wait=true&waitIndex=26&recursive=true", "", 200),
    // ---- cluster endpoints (8)
    ("GET", "/v2/members", "", 200),
    ("GET", "/v2/members/", "", 200),
    ("GET", "/v2/members/leader", "", 200),
    ("GET", "/v2/machines", "", 200),
    ("GET", "/v2/stats/leader", "", 200),
    // The same operations on both: the same counters.
    ("GET", "/v2/stats/store", "", 200),
    ("GET", "/v2/keys/x", "", 404),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_keys_api_answers_as_etcds() {
    let pair = start_pair("v2-keys").await;
    let mut both = Both::open(&pair).await;
    let mut last_write = 3;
    for (i, (method, target, body, status)) in KEYS_SCRIPT.iter().enumerate() {
        let etcd = both.check(method, target, body, *status).await;
        if i == 0 {
            // A fresh single member: its 3 bootstrap writes.
            assert_eq!(etcd.etcd_index(), Some(3), "{}", render(&etcd));
            assert_eq!(etcd.body_text(), "{\"action\":\"get\",\"node\":{\"dir\":true}}\n");
        }
        if matches!(*status, 200 | 201)
            && matches!(*method, "PUT" | "POST" | "DELETE")
            && target.starts_with("/v2/keys")
        {
            let index = etcd.etcd_index().expect("a write's X-Etcd-Index");
            assert_eq!(index, last_write + 1, "{method} {target}: every write takes the next index");
            last_write = index;
        }
    }
    assert_eq!(last_write, 55, "the script's writes");
}

/// `/v2/stats/self`: values are the member's own (times, uptime), the keys
/// are etcd's.
#[tokio::test(flavor = "multi_thread")]
async fn stats_self_has_etcds_fields() {
    let pair = start_pair("v2-stats").await;
    let mut answers = Vec::new();
    for port in pair.ports {
        let response = Conn::open(port).await.send("GET", "/v2/stats/self", "").await;
        assert_eq!(response.status(), 200, "{}", render(&response));
        let mut names: Vec<String> = response
            .headers
            .iter()
            .map(|(name, _)| canonical_header(name))
            .filter(|name| name != "Date" && name != "Content-Length")
            .collect();
        names.sort();
        let json: Value = serde_json::from_str(&response.body_text()).expect("stats/self is JSON");
        let keys = |value: &Value| value.as_object().map(|o| o.keys().cloned().collect::<BTreeSet<_>>());
        answers.push((
            names,
            response.header("Content-Type").map(str::to_owned),
            keys(&json),
            keys(&json["leaderInfo"]),
            json["name"].clone(),
            json["state"].clone(),
            json["id"] == json["leaderInfo"]["leader"],
            response.body_text().ends_with('}'),
        ));
    }
    assert_eq!(answers[1], answers[0]);
    assert_eq!(answers[0].4, Value::String("m0".into()));
    assert_eq!(answers[0].5, Value::String("StateLeader".into()));
    assert!(answers[0].6, "a single member leads itself");
}

/// A watch with no waitIndex waits for the next matching write; hidden keys
/// and refreshes do not wake it (5.1, 5.3).
#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_is_woken_by_a_later_write() {
    let pair = start_pair("v2-long-poll").await;
    let mut answers = Vec::new();
    for port in pair.ports {
        let mut writer = Conn::open(port).await;
        let set = writer.send("PUT", "/v2/keys/rk", "value=v&ttl=1000").await; // 4
        assert_eq!(set.status(), 201, "{}", render(&set));
        let mut watchers = Vec::new();
        for target in [
            "/v2/keys/lp?wait=true",
            "/v2/keys/?wait=true&recursive=true",
            "/v2/keys/rk?wait=true",
            "/v2/keys/fut?wait=true&waitIndex=10",
            "/v2/keys/_hidden?wait=true",
        ] {
            let mut conn = Conn::open(port).await;
            let head = conn.open_watch(target).await;
            assert_eq!(head.etcd_index(), Some(4), "{target}: registered at 4: {}", render(&head));
            watchers.push((conn, head));
        }
        let mut writes = Vec::new();
        for (target, body) in [
            ("/v2/keys/_hidden", "value=s"), // 5: only the watcher on the key itself
            ("/v2/keys/rk?refresh=true&prevExist=true", "ttl=2000"), // 6: wakes nobody
            ("/v2/keys/lp", "value=woken"),  // 7
            ("/v2/keys/rk?prevExist=true", "value=w&ttl="), // 8
            ("/v2/keys/fut", "value=early"), // 9: below the watch's waitIndex
            ("/v2/keys/fut", "value=second"), // 10
        ] {
            writes.push(render(&writer.send("PUT", target, body).await));
        }
        let mut events = Vec::new();
        for (mut conn, head) in watchers {
            events.push(render(&conn.finish_watch(head).await));
        }
        answers.push((writes, events));
    }
    assert_eq!(answers[1], answers[0]);
    let events = &answers[0].1;
    assert!(events[0].contains("\"key\":\"/lp\",\"value\":\"woken\",\"modifiedIndex\":7"), "{}", events[0]);
    assert!(events[1].contains("\"key\":\"/lp\""), "the root watcher skips /_hidden: {}", events[1]);
    assert!(events[2].contains("{\"action\":\"update\",\"node\":{\"key\":\"/rk\",\"value\":\"w\""), "{}", events[2]);
    assert!(events[3].contains("\"value\":\"second\",\"modifiedIndex\":10"), "{}", events[3]);
    assert!(events[4].contains("\"key\":\"/_hidden\",\"value\":\"s\""), "{}", events[4]);
}

/// The store keeps the last 1000 events: an older waitIndex is error 401.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_before_the_history_is_refused() {
    let pair = start_pair("v2-history").await;
    let mut answers = Vec::new();
    for port in pair.ports {
        // 1005 writes over one keep-alive connection: indexes 4..=1008.
        let mut conn = Conn::open(port).await;
        for i in 0..1005 {
            let response = conn.send("PUT", &format!("/v2/keys/bulk/k{}", i % 10), &format!("value={i}")).await;
            assert!(matches!(response.status(), 200 | 201), "write {i}: {}", render(&response));
        }
        let mut rendered = Vec::new();
        for target in [
            "/v2/keys/message?wait=true&waitIndex=5",
            "/v2/keys/bulk?wait=true&waitIndex=8&recursive=true",
            "/v2/keys/bulk?wait=true&waitIndex=9&recursive=true",
            "/v2/keys/bulk/k3?wait=true&waitIndex=1000",
            "/v2/keys/bulk?sorted=true",
        ] {
            let response = conn.send("GET", target, "").await;
            rendered.push(render(&response));
        }
        answers.push(rendered);
    }
    assert_eq!(answers[1], answers[0]);
    let etcd = &answers[0];
    // With 1000 events held and the index at 1008, the oldest is 9.
    assert!(
        etcd[0].ends_with(
            "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\
             \"cause\":\"the requested history has been cleared [9/5]\",\"index\":1008}\n"
        ),
        "{}",
        etcd[0]
    );
    assert!(etcd[0].contains("X-Etcd-Index: 1008\r\n"), "{}", etcd[0]);
    assert!(etcd[1].contains("[9/8]"), "{}", etcd[1]);
    assert!(
        etcd[2].contains("{\"action\":\"set\",\"node\":{\"key\":\"/bulk/k5\",\"value\":\"5\",\"modifiedIndex\":9,"),
        "{}",
        etcd[2]
    );
    // The first write of k3 at or after index 1000: write 1003, index 1007.
    assert!(etcd[3].contains("\"key\":\"/bulk/k3\",\"value\":\"1003\",\"modifiedIndex\":1007"), "{}", etcd[3]);
}

/// A key with ttl=1 expires within about 1.5 s: one `expire` event (index),
/// seen by a watcher on it and by one on a key inside an expiring directory.
#[tokio::test(flavor = "multi_thread")]
async fn a_ttl_key_expires_and_watchers_see_it() {
    let pair = start_pair("v2-expiry").await;
    let mut answers = Vec::new();
    for port in pair.ports {
        let mut writer = Conn::open(port).await;
        let mut rendered = Vec::new();
        for (target, body) in [
            ("/v2/keys/exp", "value=v&ttl=1"),   // 4
            ("/v2/keys/edir", "dir=true&ttl=1"), // 5
            ("/v2/keys/edir/k", "value=x"),      // 6
        ] {
            rendered.push(render(&writer.send("PUT", target, body).await));
        }
        let mut watchers = Vec::new();
        for target in ["/v2/keys/exp?wait=true", "/v2/keys/edir/k?wait=true", "/v2/keys/?wait=true&recursive=true"] {
            let mut conn = Conn::open(port).await;
            let head = conn.open_watch(target).await;
            watchers.push((conn, head));
        }
        // READ_LIMIT bounds the wait; expiry comes within about 1.5 s.
        let started = std::time::Instant::now();
        for (mut conn, head) in watchers {
            rendered.push(render(&conn.finish_watch(head).await));
        }
        assert!(started.elapsed() < Duration::from_secs(3), "expired after {:?}", started.elapsed());
        for target in [
            "/v2/keys/exp",
            "/v2/keys/edir/k",
            "/v2/keys/edir/k?wait=true&waitIndex=7",
            "/v2/keys/?wait=true&recursive=true&waitIndex=7",
            "/v2/stats/store",
        ] {
            rendered.push(render(&writer.send("GET", target, "").await));
        }
        answers.push(rendered);
    }
    assert_eq!(answers[1], answers[0]);
    let etcd = &answers[0];
    assert!(
        etcd[3].contains(
            "{\"action\":\"expire\",\"node\":{\"key\":\"/exp\",\"modifiedIndex\":7,\"createdIndex\":4},\
             \"prevNode\":{\"key\":\"/exp\",\"value\":\"v\",\"expiration\":\"<expiration>\",\"modifiedIndex\":4,\
             \"createdIndex\":4}}\n"
        ),
        "{}",
        etcd[3]
    );
    assert!(
        etcd[4].contains(
            "{\"action\":\"expire\",\"node\":{\"key\":\"/edir\",\"dir\":true,\"modifiedIndex\":8,\"createdIndex\":5}"
        ),
        "{}",
        etcd[4]
    );
    assert!(etcd[5].contains("\"key\":\"/exp\",\"modifiedIndex\":7"), "the root watcher: {}", etcd[5]);
    assert!(etcd[6].contains("\"index\":8}"), "{}", etcd[6]);
    assert!(etcd[10].contains("\"expireCount\":2,"), "{}", etcd[10]);
}

// ---------------------------------------------------------------------------
// Keel only.

/// The v2 store, its index and its event history come back after a crash:
/// the same GET, the index one higher (the member republishes its
/// attributes), and a watch from index 1 still finds the first write.
#[tokio::test(flavor = "multi_thread")]
async fn v2_data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "v2-restart");
    let data_dir = dir.path().join("keel");
    let mut keel = start_keel(&plan, &data_dir, true).await;
    let port = keel.port;
    let mut conn = Conn::open(port).await;
    for (target, body, index) in
        [("/v2/keys/r1", "value=a", 4), ("/v2/keys/r1", "value=b", 5), ("/v2/keys/d/x", "value=1", 6)]
    {
        let response = conn.send("PUT", target, body).await;
        assert_eq!(response.etcd_index(), Some(index), "{}", render(&response));
    }
    let before = conn.send("GET", "/v2/keys/?recursive=true&sorted=true", "").await;
    assert_eq!(before.etcd_index(), Some(6));
    drop(conn);
    keel.kill9();

    let keel = start_keel(&plan, &data_dir, true).await;
    assert_eq!(keel.port, port);
    let mut conn = Conn::open(port).await;
    // Reads may be served before the member has republished its attributes
    // (etcd's client port opens after that): wait for the index to move.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = conn.send("GET", "/v2/keys/?recursive=true&sorted=true", "").await;
        if after.etcd_index() != Some(6) || std::time::Instant::now() >= deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.status(), 200, "{}", render(&after));
    assert_eq!(after.body_text(), before.body_text());
    assert_eq!(after.etcd_index(), Some(7), "the restart republishes the member's attributes: {}", render(&after));
    assert_eq!(
        after.body_text(),
        "{\"action\":\"get\",\"node\":{\"dir\":true,\"nodes\":[{\"key\":\"/d\",\"dir\":true,\"nodes\":[{\"key\":\"/d/x\",\
         \"value\":\"1\",\"modifiedIndex\":6,\"createdIndex\":6}],\"modifiedIndex\":6,\"createdIndex\":6},\
         {\"key\":\"/r1\",\"value\":\"b\",\"modifiedIndex\":5,\"createdIndex\":5}]}}\n"
    );
    let watched = conn.send("GET", "/v2/keys/r1?wait=true&waitIndex=1", "").await;
    assert_eq!(watched.status(), 200, "{}", render(&watched));
    assert_eq!(watched.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(
        watched.body_text(),
        "{\"action\":\"set\",\"node\":{\"key\":\"/r1\",\"value\":\"a\",\"modifiedIndex\":4,\"createdIndex\":4}}\n"
    );
    let next = conn.send("PUT", "/v2/keys/r1", "value=c").await;
    assert_eq!(next.etcd_index(), Some(8), "{}", render(&next));
}

/// Without `--enable-v2` there is no v2 API: Go's plain 404 for every path.
#[tokio::test(flavor = "multi_thread")]
async fn without_enable_v2_the_v2_paths_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "v2-off");
    let keel = start_keel(&plan, &dir.path().join("keel"), false).await;
    let mut conn = Conn::open(keel.port).await;
    for (method, target, body) in [
        ("GET", "/v2/keys", ""),
        ("GET", "/v2/keys/foo", ""),
        ("PUT", "/v2/keys/foo", "value=bar"),
        ("GET", "/v2/members", ""),
        ("GET", "/v2/machines", ""),
        ("GET", "/v2/stats/self", ""),
        ("GET", "/v2/stats/store", ""),
    ] {
        let response = conn.send(method, target, body).await;
        assert_eq!(response.status(), 404, "{method} {target}: {}", render(&response));
        assert_eq!(response.body_text(), "404 page not found\n", "{method} {target}");
        assert_eq!(response.header("Content-Type"), Some("text/plain; charset=utf-8"), "{method} {target}");
    }
    let version = conn.send("GET", "/version", "").await;
    assert_eq!(version.status(), 200, "{}", render(&version));
}

/// The same v2 key read from each member of `cluster`: (status, body).
async fn get_from_each(cluster: &common::Cluster, target: &str) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    for i in 0..cluster.members.len() {
        let response = Conn::open(cluster.member(i).port).await.send("GET", target, "").await;
        answers.push((response.status(), response.body_text()));
    }
    answers
}

/// Waits until every member of a fresh 3-member cluster applied the
/// bootstrap's v2 writes (three members added, the cluster version, three
/// publishes: index 7, as etcd counts them), so a test's own writes get
/// indexes no later publish can slip between.
async fn wait_for_bootstrap(cluster: &common::Cluster) {
    common::wait_for("the bootstrap applied everywhere", Duration::from_secs(10), || async {
        let mut indexes = Vec::new();
        for i in 0..3 {
            indexes.push(Conn::open(cluster.member(i).port).await.send("GET", "/v2/keys/", "").await.etcd_index());
        }
        indexes.iter().all(|index| *index == Some(7))
    })
    .await;
}

/// A TTL is the cluster's: a key written with ttl=1 through one member is
/// readable on every member, then gone from every member about a second
/// later (the leader's clock expires it through raft), with the same
/// `expire` at the same index everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_ttl_key_expires_on_every_member() {
    let cluster = common::Cluster::start_with(3, &["--enable-v2"]).await;
    wait_for_bootstrap(&cluster).await;
    let mut writer = Conn::open(cluster.member(1).port).await;
    let set = writer.send("PUT", "/v2/keys/lease", "value=held&ttl=1").await;
    assert_eq!(set.status(), 201, "{}", render(&set));
    let index = set.etcd_index().expect("a write's index");
    // A watcher on another member sees the expiry as an event.
    let mut watcher = Conn::open(cluster.member(2).port).await;
    let head = watcher.open_watch(&format!("/v2/keys/lease?wait=true&waitIndex={}", index + 1)).await;
    common::wait_for("the key on every member", Duration::from_secs(5), || async {
        get_from_each(&cluster, "/v2/keys/lease").await.iter().all(|(status, _)| *status == 200)
    })
    .await;
    let written = std::time::Instant::now();
    common::wait_for("the key gone from every member", Duration::from_secs(5), || async {
        get_from_each(&cluster, "/v2/keys/lease").await.iter().all(|(status, _)| *status == 404)
    })
    .await;
    // Expired by the leader within half a second of being due.
    assert!(written.elapsed() < Duration::from_secs(3), "expired after {:?}", written.elapsed());
    let expired = watcher.finish_watch(head).await.body_text();
    assert!(
        expired.starts_with(&format!(
            "{{\"action\":\"expire\",\"node\":{{\"key\":\"/lease\",\"modifiedIndex\":{},\"createdIndex\":{index}}}",
            index + 1
        )),
        "{expired}"
    );
    let gone = get_from_each(&cluster, "/v2/keys/lease").await;
    let expected =
        format!("{{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/lease\",\"index\":{}}}\n", index + 1);
    for (status, body) in gone {
        assert_eq!((status, body.as_str()), (404, expected.as_str()));
    }
}

/// A long poll on one member is woken by a write made through another, and
/// every member answers with the same indexes.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_sees_a_write_through_another_member() {
    let cluster = common::Cluster::start_with(3, &["--enable-v2"]).await;
    wait_for_bootstrap(&cluster).await;
    let mut watcher = Conn::open(cluster.member(0).port).await;
    let head = watcher.open_watch("/v2/keys/jobs?wait=true&recursive=true").await;
    let registered = head.etcd_index().expect("a watch's index");
    let mut writer = Conn::open(cluster.member(2).port).await;
    let posted = writer.send("POST", "/v2/keys/jobs", "value=first").await;
    assert_eq!(posted.status(), 201, "{}", render(&posted));
    let index = posted.etcd_index().expect("a write's index");
    assert_eq!(index, registered + 1, "{}", render(&posted));
    let event = watcher.finish_watch(head).await.body_text();
    assert_eq!(
        event,
        format!(
            "{{\"action\":\"create\",\"node\":{{\"key\":\"/jobs/{index:020}\",\"value\":\"first\",\
             \"modifiedIndex\":{index},\"createdIndex\":{index}}}}}\n"
        )
    );
    common::wait_for("the same listing on every member", Duration::from_secs(5), || async {
        let answers = get_from_each(&cluster, "/v2/keys/jobs?recursive=true&sorted=true").await;
        answers.iter().all(|answer| *answer == answers[0]) && answers[0].0 == 200
    })
    .await;
}
