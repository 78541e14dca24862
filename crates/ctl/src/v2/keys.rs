//! etcd's v2 Go client (`client/client.go`, `client/keys.go`,
//! `client/members.go`) as etcdctl v2 uses it: endpoint sync through
//! `/v2/members`, the pinned endpoint and failover, the request each keys
//! action sends, and the error values etcdctl prints.
//!
//! Plain `http://` only: keelctl's v2 mode has no TLS.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::format::KeysResponse;
use super::http::{encode_values, escape_path, HttpClient, HttpError, Request};
use crate::gostr;

/// An error the v2 client returns; `Display` is the text etcdctl prints
/// after `Error: `.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A v2 error body: `errorCode`, `message`, `cause`, `index`.
    #[error("{code}: {message} ({cause}) [{index}]")]
    Etcd { code: i64, message: String, cause: String, index: u64 },
    /// Every endpoint failed; `detail` is printed on the lines after.
    #[error("client: etcd cluster is unavailable or misconfigured{}", numbered(.0, "; "))]
    Cluster(Vec<EndpointError>),
    /// A one-shot request failed on its only attempt.
    #[error("{0}")]
    OneShot(EndpointError),
    #[error("client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.")]
    InvalidJson,
    #[error("client: response body is empty")]
    EmptyBody,
    #[error("client: no endpoints available")]
    NoEndpoints,
    #[error("context deadline exceeded")]
    Deadline,
    #[error("unexpected status code {0}")]
    UnexpectedStatus(u16),
    #[error("{0}")]
    BadEndpoint(String),
}

/// `ClusterError.Error()`: each error ends in a newline, so etcdctl's
/// `Error:` line is followed by an empty one.
fn numbered(errors: &[EndpointError], sep: &str) -> String {
    errors.iter().enumerate().map(|(i, e)| format!("{sep}error #{i}: {e}\n")).collect()
}

impl KeysError {
    /// `ClusterError.Detail()`, printed after the error line.
    pub fn detail(&self) -> Option<String> {
        match self {
            KeysError::Cluster(errors) => {
                Some(errors.iter().enumerate().map(|(i, e)| format!("error #{i}: {e}\n")).collect())
            }
            _ => None,
        }
    }

    /// etcdctl's `isConnectionError`.
    pub fn is_connection_error(&self) -> bool {
        match self {
            KeysError::Cluster(errors) => errors.iter().all(EndpointError::is_connection_error),
            KeysError::OneShot(e) => e.is_connection_error(),
            _ => false,
        }
    }
}

/// One endpoint's failure inside a [`KeysError::Cluster`].
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("client: endpoint {0} exceeded header timeout")]
    HeaderTimeout(String),
    #[error("client: etcd member {0} has no leader")]
    NoLeader(String),
    #[error("client: etcd member {0} returns server error [{1}]")]
    ServerError(String, &'static str),
}

impl EndpointError {
    fn is_connection_error(&self) -> bool {
        match self {
            EndpointError::Http(e) => e.is_connection_error(),
            EndpointError::HeaderTimeout(_) => true,
            _ => false,
        }
    }
}

/// A parsed `http://host[:port][/path]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As Go's `url.URL.String()` prints it.
    pub url: String,
    /// What to connect to: `host:port`.
    pub addr: String,
    pub path: String,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, KeysError> {
        let with_scheme = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
        let (scheme, rest) = with_scheme.split_once("://").expect("a scheme was ensured");
        if scheme != "http" {
            return Err(KeysError::BadEndpoint(format!(
                "keelctl v2 supports only http:// endpoints, not {with_scheme:?}"
            )));
        }
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(KeysError::BadEndpoint(format!("no host in endpoint {with_scheme:?}")));
        }
        let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let addr = if has_port { host.to_owned() } else { format!("{host}:80") };
        Ok(Endpoint { url: with_scheme.clone(), addr, path: path.to_owned() })
    }
}

/// One keys API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Get {
        key: String,
        recursive: bool,
        sorted: bool,
        quorum: bool,
    },
    Set {
        key: String,
        value: String,
        prev_value: String,
        prev_index: u64,
        prev_exist: Option<bool>,
        ttl: i64,
        dir: bool,
    },
    CreateInOrder {
        dir: String,
        value: String,
        ttl: i64,
    },
    Delete {
        key: String,
        prev_value: String,
        prev_index: u64,
        dir: bool,
        recursive: bool,
    },
    Wait {
        key: String,
        wait_index: u64,
        recursive: bool,
    },
}

impl Action {
    /// etcd's client does not retry these on another endpoint.
    fn one_shot(&self) -> bool {
        matches!(self, Action::Set { prev_exist: Some(false), .. } | Action::Delete { .. })
    }

    fn is_wait(&self) -> bool {
        matches!(self, Action::Wait { .. })
    }

    /// Method, escaped path and query, and form body, for `ep`.
    fn http(&self, ep: &Endpoint) -> (&'static str, String, Option<String>) {
        let mut params: Vec<(&str, String)> = Vec::new();
        let mut form: Vec<(&str, String)> = Vec::new();
        let (method, key, has_body) = match self {
            Action::Get { key, recursive, sorted, quorum } => {
                params.push(("recursive", recursive.to_string()));
                params.push(("sorted", sorted.to_string()));
                params.push(("quorum", quorum.to_string()));
                ("GET", key, false)
            }
            Action::Set { key, value, prev_value, prev_index, prev_exist, ttl, dir } => {
                if *dir {
                    params.push(("dir", "true".to_owned()));
                } else {
                    if !prev_value.is_empty() {
                        params.push(("prevValue", prev_value.clone()));
                    }
                    form.push(("value", value.clone()));
                }
                if *prev_index != 0 {
                    params.push(("prevIndex", prev_index.to_string()));
                }
                if let Some(exist) = prev_exist {
                    params.push(("prevExist", exist.to_string()));
                }
                if *ttl > 0 {
                    form.push(("ttl", ttl.to_string()));
                }
                ("PUT", key, true)
            }
            Action::CreateInOrder { dir, value, ttl } => {
                form.push(("value", value.clone()));
                if *ttl > 0 {
                    form.push(("ttl", ttl.to_string()));
                }
                ("POST", dir, true)
            }
            Action::Delete { key, prev_value, prev_index, dir, recursive } => {
                if !prev_value.is_empty() {
                    params.push(("prevValue", prev_value.clone()));
                }
                if *prev_index != 0 {
                    params.push(("prevIndex", prev_index.to_string()));
                }
                if *dir {
                    params.push(("dir", "true".to_owned()));
                }
                if *recursive {
                    params.push(("recursive", "true".to_owned()));
                }
                ("DELETE", key, false)
            }
            Action::Wait { key, wait_index, recursive } => {
                params.push(("wait", "true".to_owned()));
                params.push(("waitIndex", wait_index.to_string()));
                params.push(("recursive", recursive.to_string()));
                ("GET", key, false)
            }
        };
        let mut target = escape_path(&keys_path(&ep.path, key));
        if !params.is_empty() {
            target.push('?');
            target.push_str(&encode_values(&params));
        }
        (method, target, has_body.then(|| encode_values(&form)))
    }
}

/// `v2KeysURL`: the endpoint's path, `/v2/keys`, and the key (given a
/// leading `/`), cleaned as `pathutil.CanonicalURLPath` does, which keeps a
/// trailing slash.
pub fn keys_path(base: &str, key: &str) -> String {
    let key = if !key.is_empty() && !key.starts_with('/') { format!("/{key}") } else { key.to_owned() };
    canonical_url_path(&format!("{base}/v2/keys{key}"))
}

fn canonical_url_path(p: &str) -> String {
    let p = if p.starts_with('/') { p.to_owned() } else { format!("/{p}") };
    let mut clean = go_path_clean(&p);
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// Go's `path.Clean` for a rooted path.
fn go_path_clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

#[derive(Deserialize)]
struct Members {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(default, rename = "clientURLs")]
    client_urls: Vec<String>,
}

#[derive(Deserialize)]
struct EtcdError {
    #[serde(rename = "errorCode", default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    index: u64,
}

/// The cluster client: endpoints, the pinned one, the per-request header
/// timeout, and the `--debug` lines it owes stderr.
pub struct KeysClient {
    http: HttpClient,
    endpoints: Vec<Endpoint>,
    pinned: usize,
    header_timeout: Duration,
    debug: bool,
    /// cURL lines, drained by the caller onto stderr.
    pub debug_lines: Vec<String>,
}

impl KeysClient {
    pub fn new(endpoints: Vec<Endpoint>, header_timeout: Duration, debug: bool) -> KeysClient {
        KeysClient { http: HttpClient::default(), endpoints, pinned: 0, header_timeout, debug, debug_lines: Vec::new() }
    }

    pub fn endpoint_urls(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// `httpClusterClient.Sync`: the members' client URLs become the
    /// endpoints.
    pub async fn sync(&mut self, deadline: Option<Instant>) -> Result<(), KeysError> {
        let resp = self
            .send(deadline, false, false, |ep| ("GET", escape_path(&format!("{}/v2/members", ep.path)), None))
            .await?;
        if resp.status != 200 {
            return Err(KeysError::UnexpectedStatus(resp.status));
        }
        let members: Members = serde_json::from_slice(&resp.body).map_err(|_| KeysError::InvalidJson)?;
        let urls: Vec<String> = members.members.into_iter().flat_map(|m| m.client_urls).collect();
        if urls.is_empty() {
            return Err(KeysError::NoEndpoints);
        }
        let endpoints = urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>, _>>()?;
        // Go compares the sets and keeps its pin when they are equal.
        let mut old = self.endpoint_urls();
        let mut new: Vec<String> = endpoints.iter().map(|e| e.url.clone()).collect();
        old.sort();
        new.sort();
        if old != new {
            self.endpoints = endpoints;
            self.pinned = 0;
        }
        Ok(())
    }

    /// One keys action, its response decoded (`unmarshalHTTPResponse`).
    pub async fn keys(&mut self, action: &Action, deadline: Option<Instant>) -> Result<KeysResponse, KeysError> {
        let resp = self.send(deadline, action.one_shot(), action.is_wait(), |ep| action.http(ep)).await?;
        match resp.status {
            200 | 201 => {
                if resp.body.is_empty() {
                    return Err(KeysError::EmptyBody);
                }
                let mut decoded: KeysResponse =
                    serde_json::from_slice(&resp.body).map_err(|_| KeysError::InvalidJson)?;
                if let Some(index) = resp.header("x-etcd-index") {
                    decoded.index = index.parse().map_err(|_| KeysError::InvalidJson)?;
                }
                Ok(decoded)
            }
            _ => {
                let e: EtcdError = serde_json::from_slice(&resp.body).map_err(|_| KeysError::InvalidJson)?;
                Err(KeysError::Etcd { code: e.code, message: e.message, cause: e.cause, index: e.index })
            }
        }
    }

    /// `httpClusterClient.Do`: from the pinned endpoint on, until one
    /// answers without a 5xx; one-shot actions get one attempt.
    async fn send(
        &mut self,
        deadline: Option<Instant>,
        one_shot: bool,
        wait: bool,
        build: impl Fn(&Endpoint) -> (&'static str, String, Option<String>),
    ) -> Result<super::http::Response, KeysError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(KeysError::NoEndpoints);
        }
        let mut errors = Vec::new();
        for i in self.pinned..self.pinned + n {
            let k = i % n;
            let ep = self.endpoints[k].clone();
            let (method, target, form) = build(&ep);
            if self.debug {
                let mut line = format!("cURL Command: curl -X {method} {}{target}", ep.url.trim_end_matches(&ep.path));
                if let Some(form) = &form {
                    line.push_str(&format!(" -d {}", gostr::quote(form.as_bytes())));
                }
                self.debug_lines.push(line);
            }
            let req = Request { method, host: ep.addr.clone(), target, form };
            // The header timeout does not apply to waits; the command's
            // total timeout (when given) applies to everything.
            let header_deadline =
                (!wait && !self.header_timeout.is_zero()).then(|| Instant::now() + self.header_timeout);
            let limit = match (deadline, header_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let result = match limit {
                Some(limit) => match tokio::time::timeout_at(limit, self.http.send(&req)).await {
                    Ok(r) => r.map_err(EndpointError::from),
                    Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => return Err(KeysError::Deadline),
                    Err(_) => Err(EndpointError::HeaderTimeout(ep.url.clone())),
                },
                None => self.http.send(&req).await.map_err(EndpointError::from),
            };
            let failure = match result {
                Ok(resp) if resp.status == 500 || resp.status == 503 => EndpointError::NoLeader(ep.url.clone()),
                Ok(resp) if resp.status / 100 == 5 => {
                    EndpointError::ServerError(ep.url.clone(), status_text(resp.status))
                }
                Ok(resp) => {
                    self.pinned = k;
                    return Ok(resp);
                }
                Err(e) => e,
            };
            if one_shot {
                self.pinned = (k + 1) % n;
                return Err(KeysError::OneShot(failure));
            }
            errors.push(failure);
        }
        Err(KeysError::Cluster(errors))
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint::parse("http://127.0.0.1:2379").unwrap()
    }

    #[test]
    fn endpoints_get_http_and_a_port() {
        assert_eq!(Endpoint::parse("127.0.0.1:1").unwrap().url, "http://127.0.0.1:1");
        assert_eq!(Endpoint::parse("http://h").unwrap().addr, "h:80");
        assert!(Endpoint::parse("https://h:1").is_err());
    }

    #[test]
    fn key_paths_are_cleaned_but_keep_a_trailing_slash() {
        assert_eq!(keys_path("", "foo/"), "/v2/keys/foo/");
        assert_eq!(keys_path("", "/"), "/v2/keys/");
        assert_eq!(keys_path("", "/a/../b//c"), "/v2/keys/b/c");
        assert_eq!(keys_path("", ""), "/v2/keys");
    }

    // Request lines from etcd-v2-reference.md 9.4.
    #[test]
    fn actions_encode_as_etcds_client() {
        let set = Action::Set {
            key: "/foo".into(),
            value: "new3".into(),
            prev_value: "new".into(),
            prev_index: 9,
            prev_exist: None,
            ttl: 0,
            dir: false,
        };
        assert_eq!(
            set.http(&ep()),
            ("PUT", "/v2/keys/foo?prevIndex=9&prevValue=new".into(), Some("value=new3".into()))
        );
        let mkdir = Action::Set {
            key: "/d".into(),
            value: String::new(),
            prev_value: String::new(),
            prev_index: 0,
            prev_exist: Some(false),
            ttl: 0,
            dir: true,
        };
        assert_eq!(mkdir.http(&ep()), ("PUT", "/v2/keys/d?dir=true&prevExist=false".into(), Some(String::new())));
        assert!(mkdir.one_shot());
        let get = Action::Get { key: "/sp ace".into(), recursive: false, sorted: true, quorum: true };
        assert_eq!(get.http(&ep()).1, "/v2/keys/sp%20ace?quorum=true&recursive=false&sorted=true");
        let del =
            Action::Delete { key: "/r".into(), prev_value: String::new(), prev_index: 0, dir: false, recursive: true };
        assert_eq!(del.http(&ep()), ("DELETE", "/v2/keys/r?recursive=true".into(), None));
        let wait = Action::Wait { key: "/w".into(), wait_index: 0, recursive: false };
        assert_eq!(wait.http(&ep()).1, "/v2/keys/w?recursive=false&wait=true&waitIndex=0");
    }

    #[test]
    fn error_texts_match_etcdctl() {
        let e = KeysError::Etcd { code: 100, message: "Key not found".into(), cause: "/nokey".into(), index: 11 };
        assert_eq!(e.to_string(), "100: Key not found (/nokey) [11]");
        let refused = || {
            EndpointError::Http(HttpError::Dial {
                addr: "127.0.0.1:41999".into(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            })
        };
        let c = KeysError::Cluster(vec![refused()]);
        assert_eq!(
            c.to_string(),
            "client: etcd cluster is unavailable or misconfigured; error #0: dial tcp 127.0.0.1:41999: connect: connection refused\n"
        );
        assert_eq!(c.detail().unwrap(), "error #0: dial tcp 127.0.0.1:41999: connect: connection refused\n");
        assert!(c.is_connection_error());
    }
}
