//! The endpoint list and the one channel in use.
//!
//! etcd clients talk to one member at a time and move to the next when that
//! member is unreachable; a load-balancing channel would spread a watch and
//! the keep-alives of one lease over members with different progress. So the
//! pool keeps a current index and at most one connected channel, and a failed
//! call moves it on.
//!
//! Invariant: `State::generation` changes whenever the current channel is
//! replaced, so a late failure report about a channel that was already
//! replaced does not skip a healthy endpoint.

use std::time::Duration;

use keel_tls::Connector;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::error::ClientError;
use crate::ClientOptions;

/// Turns "host:port" into "http://host:port" ("https://host:port" with
/// TLS options, as Go's clientv3) and refuses what this client cannot dial.
pub(crate) fn normalize(endpoint: &str, tls: bool) -> Result<String, ClientError> {
    let invalid =
        |reason: &str| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
    let (scheme, authority) = match endpoint.trim().split_once("://") {
        None if tls => ("https", endpoint.trim()),
        None => ("http", endpoint.trim()),
        Some((scheme, rest)) => (scheme, rest),
    };
    if !matches!(scheme, "http" | "https") {
        return Err(invalid("only http:// and https:// endpoints are supported"));
    }
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected host:port"));
    }
    let url = format!("{scheme}://{authority}");
    url.parse::<tonic::transport::Uri>().map_err(|e| invalid(&e.to_string()))?;
    Ok(url)
}

/// A channel together with what the pool needs to hear back about it.
#[derive(Clone)]
pub(crate) struct Picked {
    pub(crate) channel: Channel,
    pub(crate) generation: u64,
    pub(crate) endpoint: String,
}

struct State {
    index: usize,
    generation: u64,
    channel: Option<Channel>,
}

pub(crate) struct Pool {
    urls: Vec<String>,
    endpoints: Vec<Endpoint>,
    /// TCP with Nagle off, and TLS for `https://` endpoints.
    connector: Connector,
    // A tokio mutex: connecting happens under it, so concurrent callers wait
    // for one connection instead of racing to open several.
    state: Mutex<State>,
}

impl Pool {
    pub(crate) fn new(urls: Vec<String>, options: &ClientOptions) -> Result<Pool, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let endpoints = urls.iter().map(|url| configure(url, options)).collect::<Result<Vec<_>, _>>()?;
        let tls = match &options.tls {
            Some(tls) => Some(tls.build()?),
            None if urls.iter().any(|url| url.starts_with("https://")) => Some(crate::TlsOptions::new().build()?),
            None => None,
        };
        Ok(Pool {
            urls,
            endpoints,
            connector: Connector::new(tls),
            state: Mutex::new(State { index: 0, generation: 0, channel: None }),
        })
    }

    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The endpoint calls currently go to.
    pub(crate) async fn current(&self) -> String {
        self.urls[self.state.lock().await.index].clone()
    }

    /// The current channel, connecting first if there is none: the current
    /// endpoint, then each following one once. Failing here means nothing
    /// was sent anywhere.
    pub(crate) async fn pick(&self) -> Result<Picked, ClientError> {
        let mut state = self.state.lock().await;
        if let Some(channel) = &state.channel {
            return Ok(Picked {
                channel: channel.clone(),
                generation: state.generation,
                endpoint: self.urls[state.index].clone(),
            });
        }
        let mut last_error = None;
        for _ in 0..self.endpoints.len() {
            let index = state.index;
            match self.endpoints[index].connect_with_connector(self.connector.clone()).await {
                Ok(channel) => {
                    tracing::debug!(endpoint = %self.urls[index], "connected");
                    state.channel = Some(channel.clone());
                    return Ok(Picked { channel, generation: state.generation, endpoint: self.urls[index].clone() });
                }
                Err(source) => {
                    tracing::debug!(endpoint = %self.urls[index], error = %source, "connect failed");
                    state.index = (index + 1) % self.endpoints.len();
                    state.generation += 1;
                    last_error = Some(ClientError::Transport { endpoint: self.urls[index].clone(), source });
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::NoEndpoints))
    }

    /// Reports that calls on `picked` failed as if its endpoint were down:
    /// the next `pick` starts with the following endpoint.
    pub(crate) async fn failed(&self, picked: &Picked) {
        let mut state = self.state.lock().await;
        if state.generation == picked.generation {
            tracing::debug!(endpoint = %picked.endpoint, "endpoint unavailable, moving to the next");
            state.channel = None;
            state.index = (state.index + 1) % self.endpoints.len();
            state.generation += 1;
        }
    }
}

fn configure(url: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::InvalidEndpoint { endpoint: url.to_owned(), reason: e.to_string() })?;
    let endpoint = endpoint.connect_timeout(options.connect_timeout).tcp_nodelay(true);
    Ok(match options.keep_alive {
        // Pings only while calls are open: etcd (grpc-go) counts pings on an
        // idle connection as abuse and closes it with ENHANCE_YOUR_CALM.
        Some(KeepAlive { interval, timeout }) => {
            endpoint.http2_keep_alive_interval(interval).keep_alive_timeout(timeout).keep_alive_while_idle(false)
        }
        None => endpoint,
    })
}

/// HTTP/2 pings that detect a dead server under an open watch or keep-alive
/// stream faster than TCP would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Time between pings. etcd refuses pings more often than its
    /// `--grpc-keepalive-min-time` (5 s by default).
    pub interval: Duration,
    /// How long to wait for a ping's answer before the connection is dropped.
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        let cases = [
            ("127.0.0.1:2379", Some("http://127.0.0.1:2379")),
            ("http://127.0.0.1:2379", Some("http://127.0.0.1:2379")),
            ("http://127.0.0.1:2379/", Some("http://127.0.0.1:2379")),
            (" localhost:2379 ", Some("http://localhost:2379")),
            ("https://127.0.0.1:2379", Some("https://127.0.0.1:2379")),
            ("unix:///tmp/etcd.sock", None),
            ("http://", None),
            ("", None),
            ("127.0.0.1:2379/v3", None),
        ];
        for (input, want) in cases {
            let got = normalize(input, false).ok();
            assert_eq!(got.as_deref(), want, "normalize({input:?})");
        }
    }

    #[test]
    fn with_tls_bare_endpoints_are_https() {
        assert_eq!(normalize("127.0.0.1:2379", true).unwrap(), "https://127.0.0.1:2379");
        assert_eq!(normalize("http://127.0.0.1:2379", true).unwrap(), "http://127.0.0.1:2379");
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(matches!(Pool::new(Vec::new(), &ClientOptions::default()), Err(ClientError::NoEndpoints)));
    }
}
