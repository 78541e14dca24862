//! Health checks, one task per registered service, each reporting pass or
//! fail to the registry when the state changes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::HttpUrl;

/// A GET of `url`: passes on a 2xx status within `timeout`.
pub(crate) async fn http(url: &HttpUrl, timeout: Duration) -> bool {
    let get = async {
        let mut stream = TcpStream::connect(url.authority.as_str()).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: keel-proxy\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            url.path, url.authority
        );
        stream.write_all(request.as_bytes()).await?;
        // Only the status line matters.
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(status_code(&head))
    };
    matches!(tokio::time::timeout(timeout, get).await, Ok(Ok(Some(200..=299))))
}

fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|version| version.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// A TCP connect to `address` within `timeout`.
pub(crate) async fn tcp(address: &str, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, TcpStream::connect(address)).await, Ok(Ok(_)))
}

/// `grpc.health.v1.Health/Check` of `service` at `address` (plain
/// text): passes on SERVING within `timeout`.
pub(crate) async fn grpc(address: &str, service: &str, timeout: Duration) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{address}")) else { return false };
    let check = async {
        let channel = endpoint.connect_timeout(timeout).connect().await.ok()?;
        let request = HealthCheckRequest { service: service.to_owned() };
        HealthClient::new(channel).check(request).await.ok().map(|answer| answer.into_inner().status)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(status)) if status == ServingStatus::Serving as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(status_code(b"garbage"), None);
        assert_eq!(status_code(b""), None);
    }
}
