//! Health checks, one task per registered service, each reporting pass or
//! fail to the registry when the state changes.

use std::sync::Arc;
use std::time::Duration;

use keel_tls::{ClientTls, ClientTlsOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::HttpUrl;

/// The TLS a check dials with: the system's roots, or (`skip_verify`) any
/// certificate. `None` when it cannot be built (logged); the check then
/// fails.
pub(crate) async fn client_tls(skip_verify: bool) -> Option<ClientTls> {
    let options = ClientTlsOptions { insecure_skip_verify: skip_verify, ..Default::default() };
    // Reading the system's roots is file I/O.
    match tokio::task::spawn_blocking(move || ClientTls::new(options)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::warn!(%err, "a TLS health check cannot dial");
            None
        }
        Err(_) => None,
    }
}

/// `tls` for HTTP/1.1, once per check rather than per GET.
pub(crate) fn https(tls: &ClientTls) -> tokio_rustls::TlsConnector {
    let mut config = (*tls.config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A GET of `url`: passes on a 2xx status within `timeout`. `tls` is
/// needed for an `https://` URL.
pub(crate) async fn http(url: &HttpUrl, tls: Option<&tokio_rustls::TlsConnector>, timeout: Duration) -> bool {
    let get = async {
        let tcp = TcpStream::connect(url.authority.as_str()).await?;
        if !url.tls {
            return status(tcp, url).await;
        }
        let Some(tls) = tls else { return Ok(None) };
        let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(std::io::Error::other)?;
        let stream = tls.connect(name, tcp).await?;
        status(stream, url).await
    };
    matches!(tokio::time::timeout(timeout, get).await, Ok(Ok(Some(200..=299))))
}

/// Sends the GET and reads the status line's code.
async fn status(mut stream: impl AsyncRead + AsyncWrite + Unpin, url: &HttpUrl) -> std::io::Result<Option<u16>> {
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
    Ok(status_code(&head))
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

/// `grpc.health.v1.Health/Check` of `service` at `address` (plain text,
/// or with `tls`): passes on SERVING within `timeout`.
pub(crate) async fn grpc(address: &str, service: &str, tls: Option<&ClientTls>, timeout: Duration) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let scheme = if tls.is_some() { "https" } else { "http" };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}")) else { return false };
    let check = async {
        let connector = keel_tls::Connector::new(tls.cloned());
        let channel = endpoint.connect_timeout(timeout).connect_with_connector(connector).await.ok()?;
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
