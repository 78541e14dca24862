//! One keep-alive HTTP/1.1 connection per client, for the workloads that
//! speak HTTP rather than gRPC (the JSON gateway's, the v2 keys API's).
//! Hand-rolled rather than a client library so that the generator's cost per
//! request stays small and the same for both systems: one request in flight
//! per connection, no pooling, no redirects.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub(super) struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub(super) async fn open(endpoint: &str) -> Result<Conn> {
        let Some(host) = endpoint.strip_prefix("http://") else {
            bail!("the HTTP workloads (json-*, v2-*) speak plain HTTP only, not {endpoint}");
        };
        let stream = TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream: BufReader::new(stream), host: host.to_owned() })
    }

    /// Sends one request and reads its answer: the status and the body.
    /// `content_type` of None sends no Content-Type header. HEAD is not
    /// supported (its answer announces a body that never comes).
    pub(super) async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let head = request_head(method, path, &self.host, content_type, body.len());
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        if !body.is_empty() {
            stream.write_all(body).await?;
        }
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut answer = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..size]);
            }
        } else {
            answer.resize(length, 0);
            self.stream.read_exact(&mut answer).await?;
        }
        Ok((status, answer))
    }
}

/// The request line and headers. A bodiless GET carries no Content-Length,
/// as RFC 9110 asks of clients (a GET's body has no meaning), so the v2 GETs
/// look like any v2 client's; every other request states its length, even 0,
/// as the JSON workloads always have.
pub(super) fn request_head(
    method: &str,
    path: &str,
    host: &str,
    content_type: Option<&str>,
    body_len: usize,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(content_type) = content_type {
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    let bodiless_get = method == "GET" && body_len == 0;
    if !bodiless_get {
        let _ = write!(head, "Content-Length: {body_len}\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A sent request as the load driver counts it: success when the status is
/// one of `ok`; any other status (with its body, to say why) or a broken
/// connection is an error.
pub(super) fn judge(result: std::io::Result<(u16, Vec<u8>)>, ok: &[u16]) -> Result<(), tonic::Status> {
    match result {
        Ok((status, _)) if ok.contains(&status) => Ok(()),
        Ok((status, answer)) => {
            Err(tonic::Status::unknown(format!("HTTP {status}: {}", String::from_utf8_lossy(&answer))))
        }
        Err(err) => Err(tonic::Status::unavailable(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_post_head_is_what_the_gateway_workloads_always_sent() {
        assert_eq!(
            request_head("POST", "/v3/kv/put", "127.0.0.1:2379", Some("application/json"), 42),
            "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n"
        );
    }

    #[test]
    fn a_bodiless_get_has_no_length_and_a_put_always_has_one() {
        assert_eq!(request_head("GET", "/v2/keys/a", "h:1", None, 0), "GET /v2/keys/a HTTP/1.1\r\nHost: h:1\r\n\r\n");
        assert_eq!(
            request_head("PUT", "/v2/keys/a", "h:1", None, 0),
            "PUT /v2/keys/a HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn only_the_listed_statuses_succeed() {
        assert!(judge(Ok((200, Vec::new())), &[200]).is_ok());
        assert!(judge(Ok((201, Vec::new())), &[200, 201]).is_ok());
        let refused = judge(Ok((201, Vec::new())), &[200]).unwrap_err();
        assert_eq!((refused.code(), refused.message()), (tonic::Code::Unknown, "HTTP 201: "));
        let missing = judge(Ok((404, b"{\"errorCode\":100}".to_vec())), &[200, 201]).unwrap_err();
        assert_eq!(missing.message(), "HTTP 404: {\"errorCode\":100}");
        let broken = judge(Err(std::io::ErrorKind::UnexpectedEof.into()), &[200]).unwrap_err();
        assert_eq!(broken.code(), tonic::Code::Unavailable);
    }
}
