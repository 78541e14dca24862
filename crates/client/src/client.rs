//! `Client`, its options, and the one retry loop every unary call goes through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::auth::{self, Credentials, Token, Transport};

use crate::endpoints::{normalize, KeepAlive, Pool};
use crate::error::{certainly_not_sent, endpoint_failed, ClientError};
use crate::TlsOptions;

/// Connection settings. `Default` gives what etcd's Go client does, except
/// that connecting gives up after 5 s instead of waiting forever.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed for one TCP + HTTP/2 connection attempt to one endpoint.
    pub connect_timeout: Duration,
    /// Deadline for each bounded unary call (not for watches, keep-alive
    /// streams, or calls that wait by design such as `lock` and `campaign`).
    /// `None`: no deadline.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 pings while calls are open; `None` disables them.
    pub keep_alive: Option<KeepAlive>,
    /// Largest response accepted. etcd imposes no limit on responses (a
    /// large range may exceed tonic's 4 MiB default), so neither do we.
    pub max_decoding_message_size: usize,
    /// TLS for `https://` endpoints (and for `host:port` ones when set);
    /// `None`: `https://` endpoints are verified against the system's CAs.
    pub tls: Option<TlsOptions>,
    /// Log in with these and send the token with every call, logging in
    /// again when a server says it expired (etcdctl's `--user`).
    pub credentials: Option<Credentials>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            keep_alive: None,
            max_decoding_message_size: i32::MAX as usize,
            tls: None,
            credentials: None,
        }
    }
}

/// Whether a call may be repeated on another endpoint after `Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and other calls with no effect: retry whenever the endpoint
    /// failed.
    Always,
    /// Writes: retry only when the request provably never left the process,
    /// otherwise it may be applied twice.
    IfNotSent,
}

impl Retry {
    pub(crate) fn should_retry(self, status: &Status) -> bool {
        endpoint_failed(status)
            && match self {
                Retry::Always => true,
                Retry::IfNotSent => certainly_not_sent(status),
            }
    }
}

/// Whether a call is bounded by `ClientOptions::request_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    Request,
    /// Calls that wait for other clients (lock, campaign) or open streams.
    None,
}

/// A handle on an etcd v3 cluster. Cheap to clone; clones share one
/// connection and one endpoint list.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) options: ClientOptions,
    pub(crate) token: Token,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.inner.pool.urls()).finish()
    }
}

impl Client {
    /// Connects to the first reachable endpoint of `endpoints`
    /// (`"http://host:port"`, `"https://host:port"` or `"host:port"`, which
    /// is https when `options.tls` is set). Later calls move on to the next
    /// endpoint when the current one becomes unavailable.
    pub async fn connect(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let tls = options.tls.is_some();
        let urls = endpoints.into_iter().map(|e| normalize(&e.into(), tls)).collect::<Result<Vec<_>, _>>()?;
        let pool = Pool::new(urls, &options)?;
        let picked = pool.pick().await?;
        let token = Token::default();
        if let Some(credentials) = &options.credentials {
            auth::log_in(picked.channel, credentials, &token).await?;
        }
        Ok(Client { inner: Arc::new(Inner { pool, options, token }) })
    }

    /// The endpoints given to `connect`, normalized.
    pub fn endpoints(&self) -> &[String] {
        self.inner.pool.urls()
    }

    /// The endpoint calls currently go to.
    pub async fn current_endpoint(&self) -> String {
        self.inner.pool.current().await
    }

    /// Runs `call` on the current channel, moving to the next endpoint and
    /// trying again while `retry` allows, at most once per endpoint plus one
    /// (the first attempt may use a channel whose server just went away).
    pub(crate) async fn call<T, F, Fut>(&self, retry: Retry, deadline: Deadline, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Transport) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempts = self.inner.pool.len() + 1;
        let mut last = None;
        let mut logged_in_again = false;
        let mut attempt = 0;
        while attempt < attempts {
            attempt += 1;
            let picked = self.inner.pool.pick().await?;
            let transport = auth::transport(picked.channel.clone(), &self.inner.token);
            let result = match (deadline, self.inner.options.request_timeout) {
                (Deadline::Request, Some(timeout)) => {
                    tokio::time::timeout(timeout, call(transport)).await.map_err(|_| ClientError::Timeout(timeout))?
                }
                _ => call(transport).await,
            };
            match result {
                Ok(value) => return Ok(value),
                Err(status) if auth::token_stale(&status) && !logged_in_again => {
                    // The server refused the call before doing anything, so
                    // repeating it (writes included) is safe.
                    let Some(credentials) = &self.inner.options.credentials else { return Err(status.into()) };
                    tracing::debug!(endpoint = %picked.endpoint, error = %status, "logging in again");
                    auth::log_in(picked.channel.clone(), credentials, &self.inner.token).await?;
                    logged_in_again = true;
                    attempt -= 1;
                }
                Err(status) => {
                    if endpoint_failed(&status) {
                        self.inner.pool.failed(&picked).await;
                    }
                    if !retry.should_retry(&status) {
                        return Err(status.into());
                    }
                    tracing::debug!(endpoint = %picked.endpoint, error = %status, "retrying on the next endpoint");
                    last = Some(status);
                }
            }
        }
        Err(last.map_or(ClientError::NoEndpoints, ClientError::from))
    }

    pub(crate) fn max_decoding(&self) -> usize {
        self.inner.options.max_decoding_message_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_retry_only_when_not_sent() {
        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))));
        let maybe_sent = Status::unavailable("etcdserver: leader changed");
        let other = Status::invalid_argument("etcdserver: key is not provided");

        assert!(Retry::Always.should_retry(&refused));
        assert!(Retry::Always.should_retry(&maybe_sent));
        assert!(!Retry::Always.should_retry(&other));

        assert!(Retry::IfNotSent.should_retry(&refused));
        assert!(!Retry::IfNotSent.should_retry(&maybe_sent));
        assert!(!Retry::IfNotSent.should_retry(&other));
    }
}
