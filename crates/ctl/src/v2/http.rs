//! A small HTTP/1.1 client, enough for etcd's v2 keys API: one kept-alive
//! connection per host, requests with an optional form body, responses with
//! a `Content-Length`, a chunked body, or a body ended by the server closing
//! the connection.
//!
//! A v2 watch is a long-poll GET whose response the server writes (chunked)
//! only when an event arrives, so responses are read whole, without a
//! timeout of their own: callers bound the wait where etcdctl does.

use std::collections::HashMap;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Header lines and chunk-size lines longer than this are refused: a v2
/// server never sends them, and a stray non-HTTP peer must not grow memory.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connect failed; the text is Go's `net.OpError` text, as
    /// etcdctl prints it.
    #[error("dial tcp {addr}: {}", connect_cause(.source))]
    Dial { addr: String, source: std::io::Error },
    /// The connection broke while the request was written or the response
    /// read.
    #[error("read tcp {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

impl HttpError {
    /// etcdctl's `isConnectionError`: dial and read failures.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, HttpError::Dial { .. } | HttpError::Io { .. })
    }
}

fn connect_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        _ => format!("connect: {}", go_io_text(e)),
    }
}

/// Rust's io error texts carry " (os error N)"; Go's do not, and are
/// lowercase.
fn go_io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// One request. `target` is the request-target (path and query, already
/// escaped).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    /// `host:port`, also sent as the `Host` header.
    pub host: String,
    pub target: String,
    /// A form-encoded body; `Some` even when empty (etcdctl's directory
    /// writes send `Content-Length: 0`).
    pub form: Option<String>,
}

impl Request {
    /// The bytes on the wire, headers in the order Go's client writes them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\n",
            self.method, self.target, self.host
        );
        if let Some(form) = &self.form {
            out.push_str(&format!(
                "Content-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n",
                form.len()
            ));
        } else if self.method == "DELETE" {
            // etcd's client sets the form content type on DELETEs too.
            out.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        out.push_str("\r\n");
        if let Some(form) = &self.form {
            out.push_str(form);
        }
        out.into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The connections, one per `host:port`, kept open between requests.
#[derive(Default)]
pub struct HttpClient {
    connections: HashMap<String, BufReader<TcpStream>>,
}

impl HttpClient {
    pub async fn send(&mut self, req: &Request) -> Result<Response, HttpError> {
        let bytes = req.encode();
        // A kept-alive connection the server has since closed fails on first
        // use: retry once on a fresh one. A fresh connection is not retried.
        if let Some(mut conn) = self.connections.remove(&req.host) {
            if let Ok(resp) = exchange(&mut conn, &bytes, req.method == "HEAD").await {
                if !resp.close {
                    self.connections.insert(req.host.clone(), conn);
                }
                return Ok(resp);
            }
        }
        let stream =
            TcpStream::connect(&req.host).await.map_err(|source| HttpError::Dial { addr: req.host.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let mut conn = BufReader::new(stream);
        let resp = exchange(&mut conn, &bytes, req.method == "HEAD").await.map_err(|e| match e {
            Exchange::Io(source) => HttpError::Io { addr: req.host.clone(), source },
            Exchange::Malformed(m) => HttpError::Malformed(m),
        })?;
        if !resp.close {
            self.connections.insert(req.host.clone(), conn);
        }
        Ok(resp)
    }
}

#[derive(Debug)]
enum Exchange {
    Io(std::io::Error),
    Malformed(String),
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Self {
        Exchange::Io(e)
    }
}

async fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8], head: bool) -> Result<Response, Exchange> {
    conn.get_mut().write_all(request).await?;
    conn.get_mut().flush().await?;
    read_response(conn, head).await
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<String, Exchange> {
    let mut line = Vec::new();
    let n = (&mut *r).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(Exchange::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with(b"\n") {
        return Err(Exchange::Malformed("line too long or truncated".to_owned()));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Exchange::Malformed("header is not UTF-8".to_owned()))
}

/// Reads one response: status line, headers, then the body as its headers
/// frame it.
async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R, head: bool) -> Result<Response, Exchange> {
    let status_line = read_line(r).await?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| Exchange::Malformed(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r).await?;
        if line.is_empty() {
            break;
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| Exchange::Malformed(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut close = version == "HTTP/1.0" || get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut body = Vec::new();
    let bodiless = head || status / 100 == 1 || status == 204 || status == 304;
    if bodiless {
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let line = read_line(r).await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| Exchange::Malformed(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(r).await?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await?;
            if !read_line(r).await?.is_empty() {
                return Err(Exchange::Malformed("chunk not followed by CRLF".to_owned()));
            }
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| Exchange::Malformed(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    } else {
        r.read_to_end(&mut body).await?;
        close = true;
    }
    Ok(Response { status, headers, body, close })
}

/// Go's `url.PathEscape`-style escaping of a URL path (`url.URL.EscapedPath`):
/// unreserved characters and `$&+,/:;=@` stay, the rest is `%XX`.
pub fn escape_path(path: &str) -> String {
    escape(path, |b| b"$&+,/:;=@".contains(&b), false)
}

/// Go's `url.QueryEscape`: only unreserved characters stay; space is `+`.
pub fn escape_query(s: &str) -> String {
    escape(s, |_| false, true)
}

fn escape(s: &str, keep: impl Fn(u8) -> bool, space_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep(b) {
            out.push(b as char);
        } else if b == b' ' && space_plus {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url.Values.Encode`: pairs sorted by key, `k=v` joined by `&`.
pub fn encode_values(values: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = values.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted.iter().map(|(k, v)| format!("{}={}", escape_query(k), escape_query(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Response, Exchange> {
        let mut r = BufReader::new(bytes);
        read_response(&mut r, false).await
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn reads_a_content_length_body_and_keeps_alive() {
        let resp = rt()
            .block_on(parse(b"HTTP/1.1 201 Created\r\nX-Etcd-Index: 4\r\nContent-Length: 5\r\n\r\nhelloEXTRA"))
            .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(resp.header("x-etcd-index"), Some("4"));
        assert_eq!(resp.body, b"hello");
        assert!(!resp.close);
    }

    #[test]
    fn reads_a_chunked_body() {
        let resp = rt()
            .block_on(parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
            ))
            .unwrap();
        assert_eq!(resp.body, b"abcde");
    }

    #[test]
    fn a_body_without_length_runs_to_eof() {
        let resp = rt().block_on(parse(b"HTTP/1.0 200 OK\r\n\r\nall of it")).unwrap();
        assert_eq!(resp.body, b"all of it");
        assert!(resp.close);
    }

    #[test]
    fn bad_responses_are_errors() {
        assert!(matches!(rt().block_on(parse(b"SSH-2.0\r\n\r\n")), Err(Exchange::Malformed(_))));
        assert!(matches!(
            rt().block_on(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")),
            Err(Exchange::Io(_))
        ));
    }

    #[test]
    fn requests_are_written_as_go_writes_them() {
        let req = Request {
            method: "PUT",
            host: "127.0.0.1:1".into(),
            target: "/v2/keys/foo".into(),
            form: Some("value=bar".into()),
        };
        assert_eq!(
            String::from_utf8(req.encode()).unwrap(),
            "PUT /v2/keys/foo HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 9\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nvalue=bar"
        );
    }

    #[test]
    fn escaping_matches_go() {
        assert_eq!(escape_path("/v2/keys/sp ace\"|^$:;%"), "/v2/keys/sp%20ace%22%7C%5E$:;%25");
        assert_eq!(escape_query("a b&c<d>"), "a+b%26c%3Cd%3E");
        assert_eq!(encode_values(&[("value", "a b&c".into()), ("ttl", "5".into())]), "ttl=5&value=a+b%26c");
    }

    #[test]
    fn dial_errors_read_like_go() {
        let e =
            HttpError::Dial { addr: "127.0.0.1:41999".into(), source: std::io::ErrorKind::ConnectionRefused.into() };
        assert_eq!(e.to_string(), "dial tcp 127.0.0.1:41999: connect: connection refused");
    }
}
