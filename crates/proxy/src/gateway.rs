//! `keel gateway start`: etcd's gateway, a plain TCP forwarder.
//!
//! Each client connection is forwarded, bytes unchanged (TLS included), to
//! one live endpoint, picked round-robin among the live endpoints of the
//! best SRV priority (static endpoints all have the same). An endpoint that
//! refuses a dial is dead for `--retry-delay` and the connection tries the
//! next; with none left the client's connection is closed, as etcd's
//! `proxy/tcpproxy` does. Keel's addition: the endpoint list follows the
//! cluster's member list (voting members' client URLs; while one has not
//! published its URL yet, the known endpoints are kept too), asked at
//! start, every `--auto-sync-interval` and soon after a dial fails, so
//! members added later are used and removed ones dropped.
//!
//! Lock order: `Remotes::state` alone, never held across an await.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

use crate::config::{parse_duration, ConfigError, UpstreamTls, DEFAULT_AUTO_SYNC};
use crate::error::ProxyError;
use crate::upstream::Upstream;

/// A dial that takes longer fails the endpoint (etcd's has no limit but
/// the kernel's, minutes for a silent host).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Syncs after failures come at most this often.
const SYNC_AT_MOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub listen_addr: String,
    /// `host:port`, schemes stripped.
    pub endpoints: Vec<String>,
    pub discovery_srv: Option<String>,
    pub discovery_srv_name: String,
    pub insecure_discovery: bool,
    /// The CA for `https://` members: the member-list sync verifies them
    /// with it (etcd uses it to check discovered endpoints).
    pub trusted_ca_file: Option<PathBuf>,
    pub retry_delay: Duration,
    pub auto_sync_interval: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen_addr: "127.0.0.1:23790".to_owned(),
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            discovery_srv: None,
            discovery_srv_name: String::new(),
            insecure_discovery: false,
            trusted_ca_file: None,
            retry_delay: Duration::from_secs(60),
            auto_sync_interval: DEFAULT_AUTO_SYNC,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum GatewayCommand {
    Start(Box<GatewayConfig>),
    Help,
}

/// Parses the arguments after `gateway start` as cobra and pflag do.
pub fn parse_gateway(args: &[String]) -> Result<GatewayCommand, ConfigError> {
    const VALUE: &[&str] = &[
        "listen-addr",
        "endpoints",
        "discovery-srv",
        "discovery-srv-name",
        "trusted-ca-file",
        "retry-delay",
        "auto-sync-interval",
    ];
    const BOOL: &[&str] = &["insecure-discovery", "help"];
    let mut config = GatewayConfig::default();
    let mut endpoints_given = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--") else {
            if arg == "-h" {
                return Ok(GatewayCommand::Help);
            }
            if let Some(short) = arg.strip_prefix('-').and_then(|rest| rest.chars().next()) {
                return Err(ConfigError::Syntax(format!("unknown shorthand flag: '{short}' in {arg}")));
            }
            continue;
        };
        if body.is_empty() {
            break;
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        let value = if BOOL.contains(&name) {
            let value = inline.unwrap_or_else(|| "true".to_owned());
            match value.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => "true".to_owned(),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => continue,
                _ => {
                    return Err(ConfigError::Syntax(format!(
                        "invalid argument {value:?} for \"--{name}\" flag: parse error"
                    )))
                }
            }
        } else if VALUE.contains(&name) {
            match inline.or_else(|| args.next().cloned()) {
                Some(value) => value,
                None => return Err(ConfigError::Syntax(format!("flag needs an argument: --{name}"))),
            }
        } else {
            return Err(ConfigError::Syntax(format!("unknown flag: --{name}")));
        };
        let duration = |value: &str| {
            parse_duration(value).map_err(|why| {
                ConfigError::Syntax(format!("invalid argument {value:?} for \"--{name}\" flag: time: {why} {value:?}"))
            })
        };
        match name {
            "help" => return Ok(GatewayCommand::Help),
            "listen-addr" => config.listen_addr = value,
            "endpoints" => {
                if !endpoints_given {
                    config.endpoints.clear();
                    endpoints_given = true;
                }
                config.endpoints.extend(value.split(',').filter(|e| !e.is_empty()).map(str::to_owned));
            }
            "discovery-srv" => config.discovery_srv = Some(value).filter(|d| !d.is_empty()),
            "discovery-srv-name" => config.discovery_srv_name = value,
            "insecure-discovery" => config.insecure_discovery = true,
            "trusted-ca-file" => config.trusted_ca_file = Some(value.into()),
            "retry-delay" => config.retry_delay = duration(&value)?,
            "auto-sync-interval" => config.auto_sync_interval = duration(&value)?,
            _ => unreachable!("every flag is handled"),
        }
    }
    Ok(GatewayCommand::Start(Box::new(config)))
}

/// What cobra prints for `--help` and after a syntax error.
pub fn gateway_usage() -> &'static str {
    "Usage:
  keel gateway start [flags]

Flags:
      --discovery-srv string        DNS domain used to bootstrap initial cluster
      --discovery-srv-name string   service name to query when using DNS discovery
      --endpoints strings           comma separated etcd cluster endpoints (default [127.0.0.1:2379])
  -h, --help                        help for start
      --insecure-discovery          accept insecure SRV records
      --listen-addr string          listen address (default \"127.0.0.1:23790\")
      --retry-delay duration        duration of delay before retrying failed endpoints (default 1m0s)
      --trusted-ca-file string      path to the client server TLS CA file for verifying the discovered endpoints when discovery-srv is provided.

Keel's own:
      --auto-sync-interval duration refresh the endpoints from the cluster's member list this often, 0: never (default 30s)
"
}

/// etcd's `stripSchema`: `http://h:p` forwards to `h:p`.
fn strip_schema(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((_, rest)) if !rest.is_empty() => rest.trim_end_matches('/').to_owned(),
        _ => endpoint.to_owned(),
    }
}

/// `host:port` as Go's `net.SplitHostPort` accepts it.
fn valid_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else { return false };
    let host_ok = if host.contains(':') { host.starts_with('[') && host.ends_with(']') } else { !host.contains('[') };
    host_ok && !port.is_empty() && port.parse::<u16>().is_ok()
}

#[derive(Debug, Clone)]
struct Remote {
    addr: String,
    /// SRV priority: lower is preferred; 0 for static endpoints.
    priority: u16,
    /// Dead until then (after a failed dial).
    dead_until: Option<Instant>,
}

impl Remote {
    fn alive(&self, now: Instant) -> bool {
        self.dead_until.is_none_or(|until| now >= until)
    }
}

struct State {
    remotes: Vec<Remote>,
    /// Round-robin position.
    next: usize,
}

/// The endpoints and which of them are alive.
pub(crate) struct Remotes {
    state: Mutex<State>,
    retry_delay: Duration,
}

impl Remotes {
    fn new(remotes: Vec<Remote>, retry_delay: Duration) -> Remotes {
        Remotes { state: Mutex::new(State { remotes, next: 0 }), retry_delay }
    }

    /// The next live endpoint of the best priority, round-robin; `None`
    /// when every endpoint is dead.
    fn pick(&self, now: Instant) -> Option<String> {
        let mut state = self.state.lock();
        let best = state.remotes.iter().filter(|r| r.alive(now)).map(|r| r.priority).min()?;
        let count = state.remotes.len();
        for _ in 0..count {
            let index = state.next % count;
            state.next = state.next.wrapping_add(1);
            let remote = &state.remotes[index];
            if remote.priority == best && remote.alive(now) {
                return Some(remote.addr.clone());
            }
        }
        None
    }

    fn fail(&self, addr: &str, now: Instant) {
        let mut state = self.state.lock();
        if let Some(remote) = state.remotes.iter_mut().find(|r| r.addr == addr) {
            remote.dead_until = Some(now + self.retry_delay);
        }
    }

    fn addrs(&self) -> Vec<String> {
        self.state.lock().remotes.iter().map(|r| r.addr.clone()).collect()
    }

    fn alive_addrs(&self, now: Instant) -> Vec<String> {
        self.state.lock().remotes.iter().filter(|r| r.alive(now)).map(|r| r.addr.clone()).collect()
    }

    /// Replaces the endpoints with `addrs`, keeping what is known of those
    /// already listed. An empty list changes nothing. Returns whether the
    /// list changed.
    fn replace(&self, addrs: &[String]) -> bool {
        let mut state = self.state.lock();
        let mut wanted: Vec<String> = Vec::new();
        for addr in addrs {
            if !wanted.contains(addr) {
                wanted.push(addr.clone());
            }
        }
        let same_set = wanted.len() == state.remotes.len()
            && wanted.iter().all(|addr| state.remotes.iter().any(|r| &r.addr == addr));
        if wanted.is_empty() || same_set {
            return false;
        }
        let remotes = wanted
            .into_iter()
            .map(|addr| {
                state.remotes.iter().find(|r| r.addr == addr).cloned().unwrap_or(Remote {
                    addr,
                    priority: 0,
                    dead_until: None,
                })
            })
            .collect();
        state.remotes = remotes;
        true
    }
}

/// A bound gateway.
pub struct Gateway {
    listener: TcpListener,
    remotes: Arc<Remotes>,
    sync: Option<(Arc<Upstream>, Duration, &'static str)>,
}

impl Gateway {
    /// Finds the endpoints (DNS SRV records with `--discovery-srv`, else
    /// `--endpoints`), checks them and binds the listen address.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let mut remotes: Vec<Remote> = Vec::new();
        if let Some(domain) = &config.discovery_srv {
            remotes = discover(domain, &config.discovery_srv_name, config.insecure_discovery).await?;
        }
        if remotes.is_empty() {
            // As etcd: nothing discovered, the given endpoints are used.
            for endpoint in &config.endpoints {
                let addr = strip_schema(endpoint);
                if !valid_host_port(&addr) {
                    return Err(GatewayError::Endpoint(addr));
                }
                remotes.push(Remote { addr, priority: 0, dead_until: None });
            }
        }
        if !valid_host_port(&config.listen_addr) {
            return Err(GatewayError::ListenAddr(config.listen_addr.clone()));
        }
        if let Some(remote) = remotes.iter().find(|r| r.addr == config.listen_addr) {
            return Err(GatewayError::Loop { endpoint: remote.addr.clone(), listen: config.listen_addr.clone() });
        }
        let listener = TcpListener::bind(&config.listen_addr)
            .await
            .map_err(|source| ProxyError::Listen { addr: config.listen_addr.clone(), source })?;
        let sync = if config.auto_sync_interval.is_zero() {
            None
        } else {
            let tls = UpstreamTls { ca_file: config.trusted_ca_file.clone(), ..Default::default() };
            let scheme = if config.trusted_ca_file.is_some() { "https" } else { "http" };
            let urls: Vec<String> = remotes.iter().map(|r| format!("{scheme}://{}", r.addr)).collect();
            Some((Arc::new(Upstream::new(&urls, &tls)?), config.auto_sync_interval, scheme))
        };
        Ok(Gateway { listener, remotes: Arc::new(Remotes::new(remotes, config.retry_delay)), sync })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Forwards connections until `shutdown` resolves; then every open
    /// connection is closed.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), GatewayError> {
        let Gateway { listener, remotes, sync } = self;
        tracing::info!(endpoints = ?remotes.addrs(), "ready to proxy client requests");
        let failed = Arc::new(tokio::sync::Notify::new());
        let mut background = tokio::task::JoinSet::new();
        if let Some((upstream, every, scheme)) = sync {
            background.spawn(sync_members(remotes.clone(), upstream, every, scheme, failed.clone()));
        }
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((inbound, _)) => {
                        connections.spawn(forward(remotes.clone(), inbound, failed.clone()));
                    }
                    Err(err) if transient(&err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(err) => break Err(GatewayError::Accept(err)),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        background.abort_all();
        connections.abort_all();
        result
    }
}

/// Accept errors a server lives through (descriptor limits, aborted
/// handshakes).
fn transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::Interrupted
    ) || err.raw_os_error().is_some_and(|code| code == 23 || code == 24)
}

/// One client connection: dial a live endpoint (failing over), then copy
/// both ways until either side closes.
async fn forward(remotes: Arc<Remotes>, mut inbound: TcpStream, failed: Arc<tokio::sync::Notify>) {
    let mut outbound = None;
    while let Some(addr) = remotes.pick(Instant::now()) {
        let error = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => {
                outbound = Some(stream);
                break;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("dial tcp {addr}: i/o timeout"),
        };
        remotes.fail(&addr, Instant::now());
        failed.notify_one();
        tracing::warn!(address = %addr, interval = ?remotes.retry_delay, %error, "deactivated endpoint");
    }
    let Some(mut outbound) = outbound else {
        tracing::warn!("no live endpoint; closing the client connection");
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// Keeps the endpoints equal to the members' client addresses: at start,
/// every `every`, and soon after a dial failed (at most once a second).
async fn sync_members(
    remotes: Arc<Remotes>,
    upstream: Arc<Upstream>,
    every: Duration,
    scheme: &'static str,
    failed: Arc<tokio::sync::Notify>,
) {
    loop {
        // Ask live endpoints first.
        let mut urls: Vec<String> =
            remotes.alive_addrs(Instant::now()).iter().map(|addr| format!("{scheme}://{addr}")).collect();
        urls.extend(remotes.addrs().iter().map(|addr| format!("{scheme}://{addr}")));
        upstream.set_endpoints(&urls);
        match upstream.members().await {
            Ok(members) => {
                let voters = || members.iter().filter(|m| !m.is_learner);
                let mut addrs: Vec<String> = voters()
                    .flat_map(|m| m.client_ur_ls.iter())
                    .map(|url| strip_schema(url))
                    .filter(|addr| valid_host_port(addr))
                    .collect();
                // A voting member without a client URL has not published
                // it yet: keep the endpoints known, one may be its.
                if voters().any(|m| m.client_ur_ls.is_empty()) {
                    addrs.extend(remotes.addrs());
                }
                if remotes.replace(&addrs) {
                    tracing::info!(endpoints = ?remotes.addrs(), "endpoints synced from the member list");
                }
            }
            Err(status) => tracing::debug!(%status, "member list for endpoint sync failed"),
        }
        tokio::time::sleep(SYNC_AT_MOST_EVERY).await;
        tokio::select! {
            () = tokio::time::sleep(every.saturating_sub(SYNC_AT_MOST_EVERY)) => {}
            () = failed.notified() => {}
        }
    }
}

/// The endpoints DNS SRV records name, as etcd's `srv.GetClient`: the
/// `_etcd-client-ssl` records first, then `_etcd-client` ones (those only
/// with `--insecure-discovery`); each with its SRV priority.
async fn discover(domain: &str, service_name: &str, insecure: bool) -> Result<Vec<Remote>, GatewayError> {
    let found = lookup_srv(domain, service_name, insecure).await?;
    Ok(found.into_iter().map(|(addr, priority, _)| Remote { addr, priority, dead_until: None }).collect())
}

/// The client URLs DNS SRV records name, for `grpc-proxy start
/// --discovery-srv`: `https://` for the `_etcd-client-ssl` records.
pub(crate) async fn discover_urls(
    domain: &str,
    service_name: &str,
    insecure: bool,
) -> Result<Vec<String>, GatewayError> {
    let found = lookup_srv(domain, service_name, insecure).await?;
    Ok(found.into_iter().map(|(addr, _, https)| format!("{}://{addr}", if https { "https" } else { "http" })).collect())
}

/// `host:port`, SRV priority and whether the record is an `-ssl` one.
async fn lookup_srv(
    domain: &str,
    service_name: &str,
    insecure: bool,
) -> Result<Vec<(String, u16, bool)>, GatewayError> {
    let resolver = TokioResolver::builder_tokio().map_err(|e| GatewayError::Discovery(e.to_string()))?.build();
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for https in [true, false] {
        let mut service = String::from("etcd-client");
        if https {
            service.push_str("-ssl");
        }
        if !service_name.is_empty() {
            service.push('-');
            service.push_str(service_name);
        }
        let name = format!("_{service}._tcp.{}.", domain.trim_end_matches('.'));
        match resolver.srv_lookup(name.clone()).await {
            Ok(answers) => {
                if !https && !insecure {
                    for srv in answers.iter() {
                        tracing::warn!(endpoint = %format!("{}:{}", srv.target(), srv.port()), "ignoring discovered insecure endpoint");
                    }
                    continue;
                }
                let mut records: Vec<_> = answers.iter().cloned().collect();
                records.sort_by_key(|srv| (srv.priority(), std::cmp::Reverse(srv.weight())));
                found.extend(
                    records.iter().map(|srv| (format!("{}:{}", srv.target(), srv.port()), srv.priority(), https)),
                );
            }
            Err(err) => errors.push(format!("lookup {name}: {err}")),
        }
    }
    if errors.len() == 2 {
        return Err(GatewayError::Discovery(format!("dns lookup errors: {} and {}", errors[0], errors[1])));
    }
    Ok(found)
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// etcd's words.
    #[error("error parsing endpoint {0:?}")]
    Endpoint(String),
    #[error("failed to validate listen address: {0}")]
    ListenAddr(String),
    #[error("SRV or endpoint ({endpoint}->{endpoint}) should not resolve to the gateway listen addr ({listen})")]
    Loop { endpoint: String, listen: String },
    #[error("{0}")]
    Discovery(String),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("accept: {0}")]
    Accept(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn start(line: &str) -> GatewayConfig {
        match parse_gateway(&args(line)) {
            Ok(GatewayCommand::Start(config)) => *config,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn flags_are_etcds() {
        let config = start("");
        assert_eq!(config.listen_addr, "127.0.0.1:23790");
        assert_eq!(config.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(config.retry_delay, Duration::from_secs(60));
        let config = start("--endpoints=a:1,b:2 --endpoints c:3 --retry-delay 500ms --insecure-discovery");
        assert_eq!(config.endpoints, ["a:1", "b:2", "c:3"]);
        assert_eq!(config.retry_delay, Duration::from_millis(500));
        assert!(config.insecure_discovery);
        assert_eq!(
            parse_gateway(&args("--retry-delay 5")),
            Err(ConfigError::Syntax(
                "invalid argument \"5\" for \"--retry-delay\" flag: time: missing unit in duration \"5\"".to_owned()
            ))
        );
        assert_eq!(parse_gateway(&args("--bogus")), Err(ConfigError::Syntax("unknown flag: --bogus".to_owned())));
        assert_eq!(parse_gateway(&args("-h")), Ok(GatewayCommand::Help));
    }

    #[test]
    fn endpoints_lose_their_scheme_and_must_be_host_port() {
        assert_eq!(strip_schema("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(strip_schema("https://h:1/"), "h:1");
        assert_eq!(strip_schema("h:1"), "h:1");
        assert!(valid_host_port("h:1") && valid_host_port("[::1]:2379") && valid_host_port("a.x.:2379"));
        assert!(!valid_host_port("foo") && !valid_host_port("::1:x") && !valid_host_port("h:"));
    }

    fn remote(addr: &str, priority: u16) -> Remote {
        Remote { addr: addr.to_owned(), priority, dead_until: None }
    }

    #[test]
    fn picks_rotate_over_live_endpoints_of_the_best_priority() {
        let remotes = Remotes::new(vec![remote("a:1", 0), remote("b:2", 0), remote("c:3", 1)], Duration::from_secs(60));
        let now = Instant::now();
        let picks: Vec<String> = (0..4).map(|_| remotes.pick(now).unwrap()).collect();
        assert_eq!(picks, ["a:1", "b:2", "a:1", "b:2"]);
        remotes.fail("a:1", now);
        assert_eq!(remotes.pick(now).unwrap(), "b:2");
        remotes.fail("b:2", now);
        assert_eq!(remotes.pick(now).unwrap(), "c:3", "a worse priority only when the best are dead");
        remotes.fail("c:3", now);
        assert_eq!(remotes.pick(now), None);
        // After the retry delay, the dead are tried again.
        assert!(remotes.pick(now + Duration::from_secs(61)).is_some());
    }

    #[test]
    fn member_lists_replace_endpoints_keeping_what_is_known() {
        let remotes = Remotes::new(vec![remote("a:1", 0), remote("b:2", 0)], Duration::from_secs(60));
        let now = Instant::now();
        remotes.fail("b:2", now);
        assert!(remotes.replace(&["b:2".to_owned(), "c:3".to_owned()]));
        assert_eq!(remotes.addrs(), ["b:2", "c:3"]);
        assert_eq!(remotes.alive_addrs(now), ["c:3"], "b:2 stays dead");
        assert!(!remotes.replace(&[]));
        assert!(!remotes.replace(&["b:2".to_owned(), "c:3".to_owned()]));
        assert!(!remotes.replace(&["c:3".to_owned(), "b:2".to_owned()]), "order alone changes nothing");
    }
}
