//! The typed configuration Keel starts from, validated once with etcd's
//! checks and messages (etcd's `embed.Config.Validate` and `etcdmain`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::flag::{find, Value};
use crate::goflag::{self, FlagUrl};
use crate::load::{IgnoredFlag, Notice, Settings};

/// etcd's longest election timeout.
const MAX_ELECTION_MS: u64 = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How log lines look (etcd's --logger): etcd 3.5+'s structured zap lines,
/// or human-readable text (etcd 3.4's capnslog, which etcd 3.5 removed and
/// Keel keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logger {
    Zap,
    Capnslog,
}

/// zap's encoding (etcd's --log-format): one JSON object a line, or zap's
/// tab-separated console lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Console,
}

/// Where logs go (etcd's --log-outputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// etcd's TLS settings of one side, client or peer (etcd's `TLSInfo`):
/// paths as given, unchecked until the server reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The certificate this member presents when it dials (`--client-cert-file`,
    /// `--peer-client-cert-file`); `cert_file` when not given.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    pub crl_file: Option<PathBuf>,
    /// Peers only: a connecting peer's certificate CN must be one of these.
    pub allowed_cns: Vec<String>,
    /// A connecting client's or peer's certificate must be valid for one of these.
    pub allowed_hostnames: Vec<String>,
    /// Generate a self-signed certificate at start when no cert and key are given.
    pub auto_tls: bool,
    /// Peers only (`--peer-skip-client-san-verification`): do not check that a
    /// connecting peer's certificate is valid for the address it connects
    /// from. etcd checks on its peer listeners by default and never on its
    /// client listeners, so this is false on the client side and unused.
    pub skip_client_san_verification: bool,
}

impl TlsSettings {
    /// etcd's `TLSInfo.Empty`: no certificate and key given.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// How history is compacted automatically (etcd's auto-compaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

/// Everything Keel acts on, plus what it was given and ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the raft log lives, if not under the data dir (etcd's --wal-dir).
    pub wal_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<FlagUrl>,
    /// Where /metrics and the health endpoints are served besides the
    /// client URLs (--listen-metrics-urls).
    pub listen_metrics_urls: Vec<FlagUrl>,
    /// --metrics extensive: also the gRPC handling-time histograms.
    pub extensive_metrics: bool,
    /// --quota-backend-bytes: 0 means etcd's default, a negative value no
    /// quota at all.
    pub quota_backend_bytes: i64,
    /// --experimental-initial-corrupt-check: compare hashes with the peers
    /// before serving.
    pub initial_corrupt_check: bool,
    /// --corrupt-check-time (--experimental-corrupt-check-time): how often
    /// the leader compares its followers' hashes; `None`: never.
    pub corrupt_check_time: Option<Duration>,
    /// --enable-grpc-gateway: the JSON gateway (`/v3/...`) on the client URLs.
    pub enable_grpc_gateway: bool,
    /// --enable-v2: the v2 keys API (`/v2/keys`, `/v2/members`, `/v2/stats`).
    pub enable_v2: bool,
    /// --auto-compaction-mode and --auto-compaction-retention; `None`: off.
    pub auto_compaction: Option<AutoCompaction>,
    /// --import-etcd-snapshot: an etcd snapshot file to load into the
    /// empty data dir before starting.
    pub import_etcd_snapshot: Option<PathBuf>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<FlagUrl>,
    /// Whether --listen-peer-urls was given: a lone member listens for peers
    /// only when asked to (so many can share a host).
    pub listen_peer_urls_given: bool,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster` as (name, peer URLs); empty when not given, which
    /// means this member alone.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    /// Refuse membership changes that would lose quorum.
    pub strict_reconfig_check: bool,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub max_concurrent_streams: u32,
    /// Zero turns server pings off.
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    pub lease_checkpoint_interval: Duration,
    pub watch_progress_notify_interval: Duration,
    pub logger: Logger,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    pub log_outputs: Vec<LogOutput>,
    /// Client listeners' TLS (`--cert-file`, ... `--auto-tls`).
    pub client_tls: TlsSettings,
    /// Peer listeners' and the peer client's TLS (`--peer-*`).
    pub peer_tls: TlsSettings,
    /// Validity of auto-TLS certificates, in years.
    pub self_signed_cert_validity: u32,
    /// Go's names, as given (`--cipher-suites`); checked by `keel-tls`.
    pub cipher_suites: Vec<String>,
    /// "TLS1.2", "TLS1.3", or "" for the default.
    pub tls_min_version: String,
    pub tls_max_version: String,
    /// `--auth-token` as given: `simple`, `jwt,...` or empty; the server
    /// parses it and loads the keys it names.
    pub auth_token: String,
    /// Lifetime of simple tokens after their last use.
    pub auth_token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// Flags accepted with values Keel does not act on.
    pub ignored: Vec<IgnoredFlag>,
    /// Everything given explicitly.
    pub settings: Settings,
}

impl Config {
    /// The configuration of a `keel` started with no flags.
    pub fn defaults() -> Config {
        Config::from_settings(Settings::default(), Vec::new(), false, &mut Vec::new())
            .expect("etcd's defaults are valid")
    }

    /// `from_file`: etcd checks some combinations only on the command line.
    pub(crate) fn from_settings(
        settings: Settings,
        ignored: Vec<IgnoredFlag>,
        from_file: bool,
        notices: &mut Vec<Notice>,
    ) -> Result<Config, ConfigError> {
        let get = |name: &str| -> Value {
            match settings.get(name) {
                Some(value) => value.clone(),
                None => find(name).unwrap_or_else(|| panic!("{name} is in the table")).default_value(),
            }
        };
        let string = |name: &str| get(name).to_string();
        let uint = |name: &str| match get(name) {
            Value::Uint(value) => value,
            other => panic!("{name} holds {other:?}"),
        };
        let duration = |name: &str| match get(name) {
            Value::Duration(value) => value,
            other => panic!("{name} holds {other:?}"),
        };
        let urls = |name: &str| match get(name) {
            Value::Urls(urls) => urls,
            other => panic!("{name} holds {other:?}"),
        };
        let list = |name: &str| match get(name) {
            Value::List(items) => items,
            other => panic!("{name} holds {other:?}"),
        };
        let flag = |name: &str| get(name) == Value::Bool(true);
        let path = |name: &str| Some(string(name)).filter(|path| !path.is_empty()).map(PathBuf::from);

        let name = string("name");
        let data_dir = match settings.get("data-dir").map(ToString::to_string).filter(|dir| !dir.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                notices.push(Notice::warn(format!("no data-dir provided, using default data-dir ./{name}.etcd")));
                PathBuf::from(format!("{name}.etcd"))
            }
        };
        let wal_dir = Some(string("wal-dir")).filter(|dir| !dir.is_empty()).map(PathBuf::from);

        let listen_client_urls = urls("listen-client-urls");
        let listen_peer_urls = urls("listen-peer-urls");
        let listen_metrics_urls = urls("listen-metrics-urls");
        let advertise_client_urls = urls("advertise-client-urls");
        let initial_advertise_peer_urls = urls("initial-advertise-peer-urls");
        for (flag, list) in [
            ("listen-client-urls", &listen_client_urls),
            ("listen-peer-urls", &listen_peer_urls),
            ("listen-metrics-urls", &listen_metrics_urls),
        ] {
            for url in list {
                check_scheme(flag, url)?;
                bind_addr(url)?;
            }
        }
        for (flag, list) in [
            ("initial-advertise-peer-urls", &initial_advertise_peer_urls),
            ("advertise-client-urls", &advertise_client_urls),
        ] {
            for url in list {
                check_scheme(flag, url)?;
                if url.host().is_empty() {
                    let all = list.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                    return Err(ConfigError::invalid(format!(
                        "--{flag} {all:?} must be \"host:port\" (unexpected empty host ({url}))"
                    )));
                }
            }
        }

        let initial_cluster = match settings.get("initial-cluster") {
            Some(value) => parse_initial_cluster(&value.to_string())?,
            None => Vec::new(),
        };
        if (name.is_empty() || !initial_cluster.is_empty())
            && !initial_cluster.iter().any(|(member, _)| *member == name)
        {
            return Err(ConfigError::invalid(format!(
                "couldn't find local name {name:?} in the initial cluster configuration"
            )));
        }
        let initial_cluster_state =
            if string("initial-cluster-state") == "existing" { ClusterState::Existing } else { ClusterState::New };

        let heartbeat_ms = uint("heartbeat-interval");
        let election_ms = uint("election-timeout");
        if heartbeat_ms == 0 {
            return Err(ConfigError::invalid(format!("--heartbeat-interval must be >0 (set to {heartbeat_ms}ms)")));
        }
        if election_ms == 0 {
            return Err(ConfigError::invalid(format!("--election-timeout must be >0 (set to {election_ms}ms)")));
        }
        if heartbeat_ms.saturating_mul(5) > election_ms {
            return Err(ConfigError::invalid(format!(
                "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]"
            )));
        }
        if election_ms > MAX_ELECTION_MS {
            return Err(ConfigError::invalid(format!(
                "--election-timeout[{election_ms}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms"
            )));
        }

        if !from_file && settings.is_set("listen-client-urls") && !settings.is_set("advertise-client-urls") {
            return Err(ConfigError::invalid(
                "--advertise-client-urls is required when --listen-client-urls is set explicitly",
            ));
        }

        let auto_compaction_mode = string("auto-compaction-mode");
        if !matches!(auto_compaction_mode.as_str(), "periodic" | "revision" | "") {
            return Err(ConfigError::invalid(format!("unknown auto-compaction-mode {auto_compaction_mode:?}")));
        }
        let auto_compaction = parse_auto_compaction(&auto_compaction_mode, &string("auto-compaction-retention"))?;
        let bcrypt_cost = uint("bcrypt-cost");
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(ConfigError::invalid(format!("invalid bcrypt-cost: {bcrypt_cost} (must be between 4 and 31)")));
        }
        let cipher_suites = list("cipher-suites");
        check_tls_versions(&string("tls-min-version"), &string("tls-max-version"), &cipher_suites)?;
        let client_tls = TlsSettings {
            cert_file: path("cert-file"),
            key_file: path("key-file"),
            client_cert_file: path("client-cert-file"),
            client_key_file: path("client-key-file"),
            trusted_ca_file: path("trusted-ca-file"),
            client_cert_auth: flag("client-cert-auth"),
            crl_file: path("client-crl-file"),
            allowed_cns: Vec::new(),
            allowed_hostnames: list("client-cert-allowed-hostname"),
            auto_tls: flag("auto-tls"),
            skip_client_san_verification: false,
        };
        let peer_tls = TlsSettings {
            cert_file: path("peer-cert-file"),
            key_file: path("peer-key-file"),
            client_cert_file: path("peer-client-cert-file"),
            client_key_file: path("peer-client-key-file"),
            trusted_ca_file: path("peer-trusted-ca-file"),
            client_cert_auth: flag("peer-client-cert-auth"),
            crl_file: path("peer-crl-file"),
            allowed_cns: list("peer-cert-allowed-cn"),
            allowed_hostnames: list("peer-cert-allowed-hostname"),
            auto_tls: flag("peer-auto-tls"),
            // --experimental-peer-skip-client-san-verification lands here too.
            skip_client_san_verification: flag("peer-skip-client-san-verification"),
        };
        check_tls_side(&client_tls, &listen_client_urls, "client", notices)?;
        check_tls_side(&peer_tls, &listen_peer_urls, "peer", notices)?;
        // https:// metrics URLs are served with the client certificate.
        if listen_metrics_urls.iter().any(|url| url.scheme == "https") && client_tls.is_empty() && !client_tls.auto_tls
        {
            return Err(ConfigError::invalid(
                "TLS key/cert (--cert-file, --key-file) must be provided for https:// --listen-metrics-urls"
                    .to_string(),
            ));
        }
        let self_signed_cert_validity = match uint("self-signed-cert-validity") {
            // etcd: "selfSignedCertValidity is invalid,it should be greater than 0".
            0 if client_tls.auto_tls || peer_tls.auto_tls => {
                return Err(ConfigError::invalid("selfSignedCertValidity is invalid,it should be greater than 0"));
            }
            years => u32::try_from(years).unwrap_or(u32::MAX).max(1),
        };
        // etcd's setupLogging and zap's level and format parsers.
        let logger = match string("logger").as_str() {
            "zap" => Logger::Zap,
            "capnslog" => Logger::Capnslog,
            other => return Err(ConfigError::invalid(format!("unknown logger option {other:?}"))),
        };
        let log_format = match string("log-format").as_str() {
            "json" | "" => LogFormat::Json,
            "console" => LogFormat::Console,
            other => {
                return Err(ConfigError::invalid(format!(
                    "unknown log format: {other}, supported values json, console"
                )))
            }
        };
        let metrics = string("metrics");
        if !matches!(metrics.as_str(), "basic" | "extensive") {
            return Err(ConfigError::invalid(format!(
                "unknown metrics option {metrics:?} (expected basic or extensive)"
            )));
        }
        let log_level = parse_log_level(&string("log-level"))?;
        let log_outputs = parse_log_outputs(&get("log-outputs"))?;

        let to_usize = |name: &str| {
            usize::try_from(uint(name)).map_err(|_| ConfigError::invalid(format!("--{name} is too large")))
        };
        Ok(Config {
            data_dir,
            wal_dir,
            listen_peer_urls_given: settings.is_set("listen-peer-urls"),
            advertise_client_urls: advertise_client_urls.iter().map(ToString::to_string).collect(),
            initial_advertise_peer_urls: initial_advertise_peer_urls.iter().map(ToString::to_string).collect(),
            listen_client_urls,
            listen_metrics_urls,
            extensive_metrics: metrics == "extensive",
            quota_backend_bytes: match get("quota-backend-bytes") {
                Value::Int(bytes) => bytes,
                Value::Uint(bytes) => i64::try_from(bytes).unwrap_or(i64::MAX),
                other => panic!("quota-backend-bytes holds {other:?}"),
            },
            auto_compaction,
            enable_grpc_gateway: get("enable-grpc-gateway") == Value::Bool(true),
            enable_v2: get("enable-v2") == Value::Bool(true),
            initial_corrupt_check: get("experimental-initial-corrupt-check") == Value::Bool(true),
            corrupt_check_time: Some(duration("corrupt-check-time")).filter(|d| !d.is_zero()),
            import_etcd_snapshot: Some(string("import-etcd-snapshot"))
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            listen_peer_urls,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token: string("initial-cluster-token"),
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            election_timeout: Duration::from_millis(election_ms),
            // etcd: 0 means the default.
            snapshot_count: match uint("snapshot-count") {
                0 => find("snapshot-count")
                    .and_then(|flag| flag.default.parse().ok())
                    .expect("snapshot-count has a numeric default"),
                count => count,
            },
            snapshot_catchup_entries: uint("snapshot-catchup-entries"),
            strict_reconfig_check: get("strict-reconfig-check") == Value::Bool(true),
            max_request_bytes: to_usize("max-request-bytes")?,
            max_txn_ops: to_usize("max-txn-ops")?,
            max_concurrent_streams: u32::try_from(uint("max-concurrent-streams")).unwrap_or(u32::MAX),
            grpc_keepalive_interval: duration("grpc-keepalive-interval"),
            grpc_keepalive_timeout: duration("grpc-keepalive-timeout"),
            lease_checkpoint_interval: nonzero_or(duration("lease-checkpoint-interval"), Duration::from_secs(300)),
            watch_progress_notify_interval: nonzero_or(
                duration("watch-progress-notify-interval"),
                Duration::from_secs(600),
            ),
            logger,
            log_format,
            log_level,
            log_outputs,
            client_tls,
            peer_tls,
            self_signed_cert_validity,
            cipher_suites,
            tls_min_version: string("tls-min-version"),
            tls_max_version: string("tls-max-version"),
            auth_token: string("auth-token"),
            auth_token_ttl: Duration::from_secs(uint("auth-token-ttl")),
            bcrypt_cost: u32::try_from(uint("bcrypt-cost")).unwrap_or(u32::MAX),
            name,
            ignored,
            settings,
        })
    }
}

fn nonzero_or(value: Duration, default: Duration) -> Duration {
    if value.is_zero() {
        default
    } else {
        value
    }
}

/// Keel serves HTTP/2 on TCP, plain or TLS; unix sockets are refused with a
/// reason rather than not served at all.
fn check_scheme(flag: &str, url: &FlagUrl) -> Result<(), ConfigError> {
    match url.scheme.as_str() {
        "http" | "https" => Ok(()),
        _ => {
            Err(ConfigError::invalid(format!("--{flag}: {url}: {}:// URLs are not supported by Keel yet", url.scheme)))
        }
    }
}

/// etcd's checks of one side's TLS settings against its listen URLs, made
/// at start in etcd (`configureClientListeners`, `transport.NewListener`,
/// `TLSInfo.ServerConfig`); the files themselves are read by the server.
fn check_tls_side(
    tls: &TlsSettings,
    listen: &[FlagUrl],
    side: &str,
    notices: &mut Vec<Notice>,
) -> Result<(), ConfigError> {
    let auto = tls.auto_tls && tls.is_empty();
    if tls.auto_tls && !tls.is_empty() {
        notices.push(Notice::warn(format!("ignoring {side} auto TLS since certs given")));
    }
    if !tls.is_empty() && (tls.cert_file.is_none() || tls.key_file.is_none()) {
        let show = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        return Err(ConfigError::invalid(format!(
            "KeyFile and CertFile must both be present[key: {}, cert: {}]",
            show(&tls.key_file),
            show(&tls.cert_file)
        )));
    }
    // etcd's warnings: TLS settings do not apply to http:// URLs.
    for url in listen.iter().filter(|url| url.scheme == "http") {
        if !tls.is_empty() {
            notices.push(Notice::warn(format!(
                "scheme is HTTP while key and cert files are present; ignoring key and cert files ({side} url {url})"
            )));
        }
        if tls.client_cert_auth {
            let flag = if side == "client" { "--client-cert-auth" } else { "--peer-client-cert-auth" };
            notices.push(Notice::warn(format!(
                "scheme is HTTP while {flag} is enabled; ignoring client cert auth for this URL ({side} url {url})"
            )));
        }
    }
    for url in listen.iter().filter(|url| url.scheme == "https") {
        if tls.is_empty() && !auto {
            return Err(ConfigError::invalid(match side {
                "client" => format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
                ),
                _ => format!("cannot listen on TLS for {}: KeyFile and CertFile are not presented", url.host_port),
            }));
        }
    }
    Ok(())
}

/// The address to bind for a listen URL. As etcd, only an IP address or
/// `localhost` (the IPv4 loopback, as Go's listener picks it) may be bound.
pub fn bind_addr(url: &FlagUrl) -> Result<SocketAddr, ConfigError> {
    let port: u16 = url.port().parse().map_err(|_| ConfigError::invalid(format!("invalid port in URL {url}")))?;
    let ip: IpAddr = match url.host() {
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        "" => Ipv4Addr::UNSPECIFIED.into(),
        host => host.parse().map_err(|_| ConfigError::invalid(format!("expected IP in URL for binding ({url})")))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// etcd's check that one way of bootstrapping is chosen; before refusals, so
/// the conflict is what gets reported.
pub(crate) fn check_bootstrap(settings: &Settings) -> Result<(), ConfigError> {
    let bootstrap_methods = ["initial-cluster", "discovery", "discovery-srv", "discovery-endpoints"]
        .iter()
        .filter(|flag| settings.get(flag).is_some_and(|value| !value.to_string().is_empty()))
        .count();
    if bootstrap_methods > 1 {
        return Err(ConfigError::invalid(
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\", \"discovery-endpoints\" or \"discovery-srv\"",
        ));
    }
    Ok(())
}

/// etcd's `types.NewURLsMap`: `name=url,...`, URLs of one name grouped.
fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let setting_up = |err: String| ConfigError::invalid(format!("error setting up initial cluster: {err}"));
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    // etcd's NewURLsMap skips empty entries.
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (name, url) = entry.split_once('=').unwrap_or((entry, ""));
        let url = goflag::parse_url(url.trim()).map_err(setting_up)?;
        check_scheme("initial-cluster", &url)?;
        let url = url.to_string();
        match members.iter_mut().find(|(member, _)| member == name) {
            Some((_, urls)) => urls.push(url),
            None => members.push((name.to_string(), vec![url])),
        }
    }
    for (_, urls) in &mut members {
        urls.sort();
    }
    Ok(members)
}

/// etcd's `parseCompactionRetention`: a whole number (hours in periodic
/// mode, revisions in revision mode) or else a Go duration, in either mode.
/// etcd's `parseCompactionRetention`: a whole number is hours (periodic)
/// or revisions (revision); anything else a Go duration (for the revision
/// mode, its nanoseconds count revisions, as etcd reads it). Zero (and a
/// negative duration) turns auto-compaction off.
fn parse_auto_compaction(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, ConfigError> {
    let whole = retention.strip_prefix('+').unwrap_or(retention);
    if !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = whole.parse().map_err(|_| {
            ConfigError::invalid(format!("error parsing CompactionRetention: {retention:?} is too large"))
        })?;
        return Ok(match (mode, n) {
            (_, 0) => None,
            ("revision", n) => Some(AutoCompaction::Revision(i64::try_from(n).unwrap_or(i64::MAX))),
            (_, hours) => Some(AutoCompaction::Periodic(Duration::from_secs(hours.saturating_mul(3600)))),
        });
    }
    match goflag::parse_duration(retention) {
        Ok(Some(duration)) if duration.is_zero() => Ok(None),
        Ok(Some(duration)) if mode == "revision" => {
            Ok(Some(AutoCompaction::Revision(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX))))
        }
        Ok(Some(duration)) => Ok(Some(AutoCompaction::Periodic(duration))),
        Ok(None) => Ok(None),
        Err(_) => {
            let digits = retention.strip_prefix('-').unwrap_or(retention);
            let detail = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                format!("time: missing unit in duration {retention:?}")
            } else {
                format!("time: invalid duration {retention:?}")
            };
            Err(ConfigError::invalid(format!("error parsing CompactionRetention: {detail}")))
        }
    }
}

fn check_tls_versions(min: &str, max: &str, cipher_suites: &[String]) -> Result<(), ConfigError> {
    let rank = |version: &str| -> Result<u8, ConfigError> {
        match version {
            "" => Ok(0),
            "TLS1.2" => Ok(2),
            "TLS1.3" => Ok(3),
            other => {
                Err(ConfigError::invalid(format!("unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)")))
            }
        }
    };
    let (low, high) = (rank(min)?, rank(max)?);
    if low != 0 && high != 0 && low > high {
        return Err(ConfigError::invalid(format!("min version ({min}) is greater than max version ({max})")));
    }
    // Go cannot restrict TLS 1.3's suites, so etcd refuses the attempt.
    if low == 3 && !cipher_suites.is_empty() {
        return Err(ConfigError::invalid("cipher suites cannot be configured when only TLS1.3 is enabled"));
    }
    Ok(())
}

/// zap's level names, as zap's `Level.UnmarshalText` reads them: exact or
/// lowercased, "" meaning info. etcd 3.5+ panics with zap's message on any
/// other value; Keel reports it as a flag error.
fn parse_log_level(text: &str) -> Result<LogLevel, ConfigError> {
    Ok(match text.to_lowercase().as_str() {
        "debug" => LogLevel::Debug,
        "info" | "" => LogLevel::Info,
        "warn" => LogLevel::Warn,
        "error" | "dpanic" | "panic" | "fatal" => LogLevel::Error,
        _ => return Err(ConfigError::invalid(format!("unrecognized level: {text:?}"))),
    })
}

/// etcd's --log-outputs: the given targets, deduplicated and sorted (etcd's
/// `UniqueStringsFromFlag`), with etcd's setupLogging checks.
fn parse_log_outputs(value: &Value) -> Result<Vec<LogOutput>, ConfigError> {
    let items: std::collections::BTreeSet<String> = match value {
        Value::List(items) if !items.is_empty() => items.iter().cloned().collect(),
        _ => ["default".to_string()].into(),
    };
    if items.len() > 1 {
        if items.contains("default") {
            return Err(ConfigError::invalid("multi logoutput for \"default\" is not supported yet"));
        }
        if items.contains("systemd/journal") {
            // Go's %q of a []string.
            let quoted = items.iter().map(|item| format!("{item:?}")).collect::<Vec<_>>().join(" ");
            return Err(ConfigError::invalid(format!(
                "running with systemd/journal but other '--log-outputs' values ([{quoted}]) are configured with 'default'; override 'default' value with something else"
            )));
        }
    }
    let mut outputs = Vec::new();
    for item in items {
        let output = match item.as_str() {
            // Keel has no journald writer; under systemd stderr reaches the journal.
            "default" | "stderr" | "systemd/journal" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            path => LogOutput::File(PathBuf::from(path)),
        };
        if !outputs.contains(&output) {
            outputs.push(output);
        }
    }
    Ok(outputs)
}
