//! Command-line flags, named and defaulted as etcd's so existing scripts and
//! unit files work unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "keel", version, about = "Keel: an etcd v3 compatible key/value store")]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: ${name}.etcd].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,
    /// Comma-separated client URLs this member advertises to the cluster.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// Comma-separated URLs to listen on for peer traffic [default:
    /// http://localhost:2380, listened on only when --initial-cluster names
    /// other members; give it to let a single member grow by MemberAdd].
    #[arg(long, value_delimiter = ',')]
    pub listen_peer_urls: Vec<String>,
    /// "new" to bootstrap a cluster of --initial-cluster; "existing" to join a
    /// running cluster that already added this member (etcdctl member add).
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// This member's peer URLs to advertise to the rest of the cluster; they
    /// and the token determine the member id.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=peer-url,...
    /// (empty: this member alone).
    #[arg(long, default_value = "")]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = keel_node::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = keel_grpc_api::DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: usize,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// How often the leader records long leases' remaining TTL through raft,
    /// so leader changes and restarts resume them instead of granting a full
    /// TTL again (a Go duration).
    #[arg(long, alias = "experimental-lease-checkpoint-interval", default_value = "5m", value_parser = go_duration)]
    pub lease_checkpoint_interval: std::time::Duration,
    /// Number of committed transactions to trigger a snapshot to disk (the
    /// raft log is compacted then).
    #[arg(long, default_value_t = keel_node::DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting
    /// the raft log entries.
    #[arg(long, alias = "experimental-snapshot-catchup-entries", default_value_t = keel_node::DEFAULT_SNAPSHOT_CATCHUP_ENTRIES)]
    pub snapshot_catchup_entries: u64,
    /// Period of progress notifications to quiet watches that asked for
    /// them, as a Go duration (10m, 5s, 1m30s).
    #[arg(long, alias = "experimental-watch-progress-notify-interval", default_value = "10m", value_parser = go_duration)]
    pub watch_progress_notify_interval: std::time::Duration,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info", value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,
}

impl Flags {
    /// `--initial-cluster` as (name, peer URLs), URLs of one name grouped.
    pub fn initial_cluster(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for entry in self.initial_cluster.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, url) =
                entry.split_once('=').with_context(|| format!("--initial-cluster entry {entry:?} is not name=url"))?;
            listen_addr(url).with_context(|| format!("--initial-cluster member {name}"))?;
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
        Ok(members)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    pub fn tracing_level(&self) -> &str {
        match self.log_level.as_str() {
            "panic" | "fatal" => "error",
            other => other,
        }
    }
}

/// Parses a Go duration string ("1h2m3.5s", "100ms", "0"), as etcd's flags take.
pub fn go_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {text:?}");
    if text.is_empty() {
        return Err(bad());
    }
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// Turns `http://host:port` into an address to bind. `localhost` means the
/// IPv4 loopback, as Go's listener (and so etcd) picks it.
pub fn listen_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => bail!("{url}: TLS client URLs are not supported yet"),
        Some((scheme, _)) => bail!("{url}: unsupported scheme {scheme:?} (expected http)"),
        None => bail!("{url}: expected a URL such as http://127.0.0.1:2379"),
    };
    let host_port = rest.trim_end_matches('/');
    if host_port.contains('/') {
        bail!("{url}: a listen URL cannot have a path");
    }
    let (host, port) = host_port.rsplit_once(':').with_context(|| format!("{url}: missing port"))?;
    let port: u16 = port.parse().with_context(|| format!("{url}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
        other => other.parse().with_context(|| format!("{url}: host must be an IP address or localhost"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls() {
        assert_eq!(listen_addr("http://localhost:2379").unwrap(), "127.0.0.1:2379".parse().unwrap());
        assert_eq!(listen_addr("http://0.0.0.0:1/").unwrap(), "0.0.0.0:1".parse().unwrap());
        assert_eq!(listen_addr("http://[::1]:5").unwrap(), "[::1]:5".parse().unwrap());
        assert!(listen_addr("https://localhost:2379").is_err());
        assert!(listen_addr("localhost:2379").is_err());
        assert!(listen_addr("http://localhost").is_err());
        assert!(listen_addr("http://example.com:80").is_err());
    }

    #[test]
    fn initial_cluster_groups_urls_by_name() {
        let flags = Flags::parse_from([
            "keel",
            "--initial-cluster",
            "a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3",
        ]);
        let members = flags.initial_cluster().unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].1, vec!["http://127.0.0.1:1".to_string(), "http://127.0.0.1:3".to_string()]);
        assert!(Flags::parse_from(["keel", "--initial-cluster", "nourl"]).initial_cluster().is_err());
    }

    #[test]
    fn etcd_defaults() {
        let flags = Flags::parse_from(["keel"]);
        assert_eq!(flags.data_dir(), PathBuf::from("default.etcd"));
        assert_eq!(flags.max_request_bytes, 1_572_864);
        assert_eq!(flags.max_txn_ops, 128);
        assert_eq!(flags.watch_progress_notify_interval, std::time::Duration::from_secs(600));
        assert!(Flags::try_parse_from(["keel", "--no-such-flag"]).is_err());
    }
}

#[cfg(test)]
mod duration_tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(go_duration("10m0s").unwrap(), Duration::from_secs(600));
        assert_eq!(go_duration("1h2m3.5s").unwrap(), Duration::from_secs_f64(3723.5));
        assert_eq!(go_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(go_duration("0").unwrap(), Duration::ZERO);
        assert!(go_duration("10").is_err());
        assert!(go_duration("5x").is_err());
        assert!(go_duration("").is_err());
    }
}
