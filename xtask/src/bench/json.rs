//! The KV workloads over etcd's JSON gateway instead of gRPC: each client
//! keeps one HTTP/1.1 connection and POSTs the same requests the gRPC runs
//! send (`/v3/kv/put`, `/v3/kv/range`), encoded as the gateway expects.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::load::{drive, Outcome};
use super::workload::{Plan, Request};

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    async fn open(endpoint: &str) -> Result<Conn> {
        let Some(host) = endpoint.strip_prefix("http://") else {
            bail!("the JSON workloads speak plain HTTP only, not {endpoint}");
        };
        let stream = TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream: BufReader::new(stream), host: host.to_owned() })
    }

    /// POSTs `body`; the status and the body of the answer.
    async fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
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

/// Runs the put or range `plan` through the JSON gateway of `endpoints`
/// (one connection per client, spread over the endpoints in turn).
pub async fn run(endpoints: &[String], plan: &Plan) -> Result<Outcome> {
    let mut conns = Vec::with_capacity(plan.clients);
    for client in 0..plan.clients {
        conns.push(Conn::open(&endpoints[client % endpoints.len()]).await?);
    }
    drive(plan, conns, |conn: &mut Conn, request| {
        Box::pin(async move {
            let (path, body) = match &request {
                Request::Put(r) => ("/v3/kv/put", serde_json::to_vec(r)),
                Request::Range(r) => ("/v3/kv/range", serde_json::to_vec(r)),
                Request::Txn(r) => ("/v3/kv/txn", serde_json::to_vec(r)),
            };
            let body = body.map_err(|e| tonic::Status::internal(e.to_string()))?;
            match conn.post(path, &body).await {
                Ok((200, _)) => Ok(()),
                Ok((status, answer)) => {
                    Err(tonic::Status::unknown(format!("HTTP {status}: {}", String::from_utf8_lossy(&answer))))
                }
                Err(err) => Err(tonic::Status::unavailable(err.to_string())),
            }
        })
    })
    .await
}
