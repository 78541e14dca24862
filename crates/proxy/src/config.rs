//! `keel grpc-proxy start`'s command line, parsed as etcd's (cobra and
//! pflag: `--flag value`, `--flag=value`, bare booleans, comma-separated
//! lists) into one validated [`ProxyConfig`]. Flags etcd has that this
//! proxy does not implement yet are refused by name rather than ignored, so
//! nobody runs it believing a setting took effect.

use std::path::PathBuf;
use std::time::Duration;

use crate::policy::{parse_prefixes, Policy};

/// Where the proxy listens: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl ListenAddr {
    fn parse(text: &str) -> ListenAddr {
        match text.strip_prefix("unix://") {
            Some(path) => ListenAddr::Unix(PathBuf::from(path)),
            None => ListenAddr::Tcp(text.to_owned()),
        }
    }
}

/// TLS towards the cluster (etcd's `--cert`, `--key`, `--cacert`,
/// `--insecure-skip-tls-verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

impl UpstreamTls {
    pub fn is_set(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.ca_file.is_some() || self.insecure_skip_verify
    }
}

/// TLS towards the proxy's own clients (`--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-crl-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    pub crl_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub listen_addr: ListenAddr,
    pub endpoints: Vec<String>,
    pub advertise_client_url: String,
    /// Prefix added to every key the clients name; empty: none.
    pub namespace: Vec<u8>,
    pub upstream_tls: UpstreamTls,
    pub serve_tls: Option<ServeTls>,
    pub metrics_addr: Option<String>,
    pub data_dir: PathBuf,
    pub debug: bool,
    pub max_send_bytes: usize,
    pub max_recv_bytes: usize,
    pub max_concurrent_streams: u32,
    /// `--read-only`, `--allow-prefix` (Keel's).
    pub policy: Policy,
    /// `--resolver-prefix`: where the proxy registers itself; MemberList
    /// through it lists every registered proxy.
    pub resolver_prefix: Option<String>,
    /// `--resolver-ttl`, in seconds: the registration's lease.
    pub resolver_ttl: i64,
    /// `--auto-sync-interval` (Keel's): how often the upstream endpoints
    /// are replaced by the member list's client URLs; zero: never.
    pub auto_sync_interval: Duration,
    /// `--service-prefix` (Keel's): where registered local services' keys
    /// live.
    pub service_prefix: String,
    /// `--service-config-dir` (Keel's): one JSON registration per file,
    /// loaded at start.
    pub service_config_dir: Option<PathBuf>,
    /// `--cache-prefix` (Keel's): Range answers under these prefixes (the
    /// client's key space) are cached; none: no cache.
    pub cache_prefixes: Vec<Vec<u8>>,
    /// `--cache-max-bytes` (Keel's): what the cached answers may take.
    pub cache_max_bytes: usize,
    /// `--discovery-srv`: a domain whose `_etcd-client-ssl._tcp` (and with
    /// `insecure_discovery`, `_etcd-client._tcp`) SRV records name the
    /// endpoints; none found: `endpoints`.
    pub discovery_srv: Option<String>,
    /// `--discovery-srv-name`: appended to the SRV service names.
    pub discovery_srv_name: String,
    pub insecure_discovery: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen_addr: ListenAddr::Tcp(DEFAULT_LISTEN.to_owned()),
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            advertise_client_url: DEFAULT_LISTEN.to_owned(),
            namespace: Vec::new(),
            upstream_tls: UpstreamTls::default(),
            serve_tls: None,
            metrics_addr: None,
            data_dir: PathBuf::from("default.proxy"),
            debug: false,
            // etcd's defaults: 1.5 MiB sent, math.MaxInt32 received.
            max_send_bytes: 1536 * 1024,
            max_recv_bytes: i32::MAX as usize,
            max_concurrent_streams: u32::MAX,
            policy: Policy::default(),
            resolver_prefix: None,
            resolver_ttl: 0,
            auto_sync_interval: DEFAULT_AUTO_SYNC,
            service_prefix: DEFAULT_SERVICE_PREFIX.to_owned(),
            service_config_dir: None,
            cache_prefixes: Vec::new(),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            discovery_srv: None,
            discovery_srv_name: String::new(),
            insecure_discovery: false,
        }
    }
}

const DEFAULT_LISTEN: &str = "127.0.0.1:23790";
const DEFAULT_SERVICE_PREFIX: &str = "/keel/services";
const DEFAULT_CACHE_MAX_BYTES: usize = 64 << 20;
/// As etcdctl's and clientv3's usual `AutoSyncInterval`.
pub(crate) const DEFAULT_AUTO_SYNC: Duration = Duration::from_secs(30);

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Start(Box<ProxyConfig>),
    Help,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A malformed command line, reported as cobra does: the message, then
    /// the usage.
    #[error("{0}")]
    Syntax(String),
    /// A well-formed flag this proxy does not implement.
    #[error("{flag} is not supported by keel grpc-proxy: {why}")]
    Unsupported { flag: String, why: &'static str },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Every flag of etcd 3.4's `grpc-proxy start`, and whether this proxy
/// takes it; `Err` gives the reason it is refused.
const FLAGS: &[(&str, Kind, Result<(), &str>)] = &[
    ("listen-addr", Kind::Value, Ok(())),
    ("endpoints", Kind::Value, Ok(())),
    ("advertise-client-url", Kind::Value, Ok(())),
    ("namespace", Kind::Value, Ok(())),
    ("cert", Kind::Value, Ok(())),
    ("key", Kind::Value, Ok(())),
    ("cacert", Kind::Value, Ok(())),
    ("insecure-skip-tls-verify", Kind::Bool, Ok(())),
    ("cert-file", Kind::Value, Ok(())),
    ("key-file", Kind::Value, Ok(())),
    ("trusted-ca-file", Kind::Value, Ok(())),
    ("client-crl-file", Kind::Value, Ok(())),
    ("metrics-addr", Kind::Value, Ok(())),
    ("data-dir", Kind::Value, Ok(())),
    ("debug", Kind::Bool, Ok(())),
    ("max-send-bytes", Kind::Value, Ok(())),
    ("max-recv-bytes", Kind::Value, Ok(())),
    ("max-concurrent-streams", Kind::Value, Ok(())),
    ("help", Kind::Bool, Ok(())),
    ("resolver-prefix", Kind::Value, Ok(())),
    ("resolver-ttl", Kind::Value, Ok(())),
    ("discovery-srv", Kind::Value, Ok(())),
    ("discovery-srv-name", Kind::Value, Ok(())),
    ("insecure-discovery", Kind::Bool, Ok(())),
    // Keel's own.
    ("read-only", Kind::Bool, Ok(())),
    ("allow-prefix", Kind::Value, Ok(())),
    ("auto-sync-interval", Kind::Value, Ok(())),
    ("service-prefix", Kind::Value, Ok(())),
    ("service-config-dir", Kind::Value, Ok(())),
    ("cache-prefix", Kind::Value, Ok(())),
    ("cache-max-bytes", Kind::Value, Ok(())),
    ("enable-pprof", Kind::Bool, Err("Go's runtime profiler has no equivalent in a Rust process")),
    ("auto-tls", Kind::Bool, Err("generated certificates are not implemented; give --cert-file and --key-file")),
    ("listen-cipher-suites", Kind::Value, Err("cipher suites are not configurable yet")),
    ("experimental-leasing-prefix", Kind::Value, Err("leasing is not implemented")),
    ("experimental-serializable-ordering", Kind::Bool, Err("not implemented")),
];

/// Parses the arguments after `grpc-proxy start`.
pub fn parse(args: &[String]) -> Result<Command, ConfigError> {
    let mut config = ProxyConfig::default();
    let mut endpoints_given = false;
    let mut tls_files = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(body) = arg.strip_prefix("--") else {
            if arg == "-h" {
                return Ok(Command::Help);
            }
            if let Some(short) = arg.strip_prefix('-').and_then(|rest| rest.chars().next()) {
                return Err(ConfigError::Syntax(format!("unknown shorthand flag: '{short}' in {arg}")));
            }
            // cobra: a leaf command with no Args rule takes stray words.
            continue;
        };
        if body.is_empty() {
            break;
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        let Some((_, kind, allowed)) = FLAGS.iter().find(|(flag, _, _)| *flag == name) else {
            return Err(ConfigError::Syntax(format!("unknown flag: --{name}")));
        };
        let value = match (kind, inline) {
            (_, Some(value)) => value,
            (Kind::Bool, None) => "true".to_owned(),
            (Kind::Value, None) => match args.next() {
                Some(value) => value.clone(),
                None => return Err(ConfigError::Syntax(format!("flag needs an argument: --{name}"))),
            },
        };
        let boolean = || parse_bool(&value).map_err(|()| bad_value(&value, name, "parse error"));
        if *kind == Kind::Bool && !boolean()? {
            // An explicit `--flag=false` asks for nothing, refused or not.
            continue;
        }
        if let Err(why) = allowed {
            return Err(ConfigError::Unsupported { flag: format!("--{name}"), why });
        }
        match name {
            "help" => return Ok(Command::Help),
            "listen-addr" => config.listen_addr = ListenAddr::parse(&value),
            "endpoints" => {
                // pflag's string slices: the first use replaces the default,
                // later ones append.
                if !endpoints_given {
                    config.endpoints.clear();
                    endpoints_given = true;
                }
                config.endpoints.extend(value.split(',').filter(|e| !e.is_empty()).map(str::to_owned));
            }
            "advertise-client-url" => config.advertise_client_url = value,
            "namespace" => config.namespace = value.into_bytes(),
            "cert" => config.upstream_tls.cert_file = Some(value.into()),
            "key" => config.upstream_tls.key_file = Some(value.into()),
            "cacert" => config.upstream_tls.ca_file = Some(value.into()),
            "insecure-skip-tls-verify" => config.upstream_tls.insecure_skip_verify = true,
            "cert-file" => tls_files.0 = Some(value.into()),
            "key-file" => tls_files.1 = Some(value.into()),
            "trusted-ca-file" => tls_files.2 = Some(value.into()),
            "client-crl-file" => tls_files.3 = Some(value.into()),
            "metrics-addr" => config.metrics_addr = Some(value).filter(|addr| !addr.is_empty()),
            "data-dir" => config.data_dir = value.into(),
            "debug" => config.debug = true,
            "max-send-bytes" => config.max_send_bytes = parse_size(&value, name)?,
            "max-recv-bytes" => config.max_recv_bytes = parse_size(&value, name)?,
            "max-concurrent-streams" => {
                config.max_concurrent_streams = value.parse().map_err(|_| bad_value(&value, name, "invalid syntax"))?;
            }
            "resolver-prefix" => config.resolver_prefix = Some(value).filter(|prefix| !prefix.is_empty()),
            "resolver-ttl" => {
                config.resolver_ttl = value.parse().map_err(|_| bad_value(&value, name, "invalid syntax"))?;
            }
            "discovery-srv" => config.discovery_srv = Some(value).filter(|domain| !domain.is_empty()),
            "discovery-srv-name" => config.discovery_srv_name = value,
            "insecure-discovery" => config.insecure_discovery = true,
            "read-only" => config.policy.read_only = true,
            "allow-prefix" => config.policy.allow_prefixes.extend(parse_prefixes(&value)),
            "auto-sync-interval" => {
                config.auto_sync_interval = parse_duration(&value).map_err(|why| bad_value(&value, name, why))?;
            }
            "service-prefix" => {
                if value.trim_end_matches('/').is_empty() {
                    return Err(ConfigError::Invalid("--service-prefix must not be empty or /".to_owned()));
                }
                config.service_prefix = value;
            }
            "service-config-dir" => {
                config.service_config_dir = Some(value.into()).filter(|dir: &PathBuf| !dir.as_os_str().is_empty())
            }
            // An empty value caches every key (from-key ranges included).
            "cache-prefix" if value.is_empty() => config.cache_prefixes.push(Vec::new()),
            "cache-prefix" => config.cache_prefixes.extend(parse_prefixes(&value)),
            "cache-max-bytes" => config.cache_max_bytes = parse_size(&value, name)?,
            _ => unreachable!("every accepted flag is handled"),
        }
    }
    if config.endpoints.is_empty() {
        return Err(ConfigError::Invalid("no endpoints given (--endpoints)".to_owned()));
    }
    if config.resolver_prefix.is_some() && config.resolver_ttl < 1 {
        // etcd's words.
        return Err(ConfigError::Invalid(format!("invalid resolver-ttl {}", config.resolver_ttl)));
    }
    config.serve_tls = match tls_files {
        (Some(cert_file), Some(key_file), trusted_ca_file, crl_file) => {
            Some(ServeTls { cert_file, key_file, trusted_ca_file, crl_file })
        }
        (None, None, None, None) => None,
        _ => return Err(ConfigError::Invalid("--cert-file and --key-file must be given together".to_owned())),
    };
    if config.upstream_tls.cert_file.is_some() != config.upstream_tls.key_file.is_some() {
        return Err(ConfigError::Invalid("--cert and --key must be given together".to_owned()));
    }
    Ok(Command::Start(Box::new(config)))
}

fn bad_value(value: &str, name: &str, why: &str) -> ConfigError {
    ConfigError::Syntax(format!("invalid argument {value:?} for \"--{name}\" flag: {why}"))
}

fn parse_size(value: &str, name: &str) -> Result<usize, ConfigError> {
    value.parse::<usize>().ok().filter(|size| *size > 0).ok_or_else(|| bad_value(value, name, "invalid syntax"))
}

/// Go's `time.ParseDuration`: `1m0s`, `500ms`, `1.5h`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err("invalid duration");
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| "invalid duration")?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err("missing unit in duration"),
            _ => return Err("unknown unit in duration"),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|_| "invalid duration")
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Result<bool, ()> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(()),
    }
}

/// The usage cobra prints after a syntax error and for `--help`.
pub fn usage() -> &'static str {
    "Usage:
  keel grpc-proxy start [flags]

Flags:
      --advertise-client-url string     advertise address to register (must be reachable by client) (default \"127.0.0.1:23790\")
      --cacert string                   verify certificates of TLS-enabled secure etcd servers using this CA bundle
      --cert string                     identify secure connections with etcd servers using this TLS certificate file
      --cert-file string                identify secure connections to the proxy using this TLS certificate file
      --client-crl-file string          proxy client certificate revocation list file.
      --data-dir string                 Data directory for persistent data (default \"default.proxy\")
      --debug                           Enable debug-level logging for grpc-proxy.
      --discovery-srv string            domain name to query for SRV records describing cluster endpoints
      --discovery-srv-name string       service name to query when using DNS discovery
      --endpoints strings               comma separated etcd cluster endpoints (default [127.0.0.1:2379])
  -h, --help                            help for start
      --insecure-discovery              accept insecure SRV records
      --insecure-skip-tls-verify        skip authentication of etcd server TLS certificates (CAUTION: this option should be enabled only for testing purposes)
      --key string                      identify secure connections with etcd servers using this TLS key file
      --key-file string                 identify secure connections to the proxy using this TLS key file
      --listen-addr string              listen address, host:port or unix://path (default \"127.0.0.1:23790\")
      --max-concurrent-streams uint32   Maximum concurrent streams that each client can open at a time. (default 4294967295)
      --max-recv-bytes int              message receive limits in bytes (default value is math.MaxInt32) (default 2147483647)
      --max-send-bytes int              message send limits in bytes (default value is 1.5 MiB) (default 1572864)
      --metrics-addr string             listen for endpoint /metrics requests on an additional interface
      --namespace string                string to prefix to all keys for namespacing requests
      --resolver-prefix string          prefix to use for registering proxy (must be shared with other grpc-proxy members)
      --resolver-ttl int                specify TTL, in seconds, when registering proxy endpoints
      --trusted-ca-file string          verify certificates of TLS-enabled secure proxy using this CA bundle

Keel's own:
      --allow-prefix strings            serve only keys under these prefixes (repeatable, comma separated)
      --auto-sync-interval duration     replace --endpoints with the member list's client URLs this often, 0: never (default 30s)
      --cache-max-bytes int             bytes the range cache may hold (default 67108864)
      --cache-prefix strings            cache Range answers under these prefixes, kept current by a watch (repeatable, comma separated; \"\" every key)
      --read-only                       refuse every write
      --service-config-dir string       register the local services described in this folder's *.json files at start
      --service-prefix string           where registered local services' keys live (default \"/keel/services\")

Not supported yet (refused): --enable-pprof, --auto-tls, --listen-cipher-suites,
--experimental-leasing-prefix, --experimental-serializable-ordering.
"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn start(line: &str) -> ProxyConfig {
        match parse(&args(line)) {
            Ok(Command::Start(config)) => *config,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn durations_are_gos() {
        assert_eq!(parse_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err() && parse_duration("").is_err() && parse_duration("3x").is_err());
    }

    #[test]
    fn defaults_are_etcds() {
        let config = start("");
        assert_eq!(config.listen_addr, ListenAddr::Tcp("127.0.0.1:23790".to_owned()));
        assert_eq!(config.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(config.max_send_bytes, 1572864);
        assert!(config.serve_tls.is_none() && !config.upstream_tls.is_set());
    }

    #[test]
    fn both_value_forms_lists_and_unix_sockets() {
        let config = start("--listen-addr=unix:///tmp/p.sock --endpoints a:1,b:2 --endpoints=c:3 --namespace /ns/");
        assert_eq!(config.listen_addr, ListenAddr::Unix("/tmp/p.sock".into()));
        assert_eq!(config.endpoints, ["a:1", "b:2", "c:3"]);
        assert_eq!(config.namespace, b"/ns/");
        let config = start("--cert c --key k --cacert ca --cert-file sc --key-file sk --metrics-addr 127.0.0.1:9");
        assert_eq!(config.upstream_tls.ca_file.as_deref(), Some(std::path::Path::new("ca")));
        assert_eq!(config.serve_tls.unwrap().key_file, PathBuf::from("sk"));
        assert_eq!(config.metrics_addr.as_deref(), Some("127.0.0.1:9"));
    }

    #[test]
    fn refusals_name_the_flag() {
        let cases = [
            ("--bogus", ConfigError::Syntax("unknown flag: --bogus".to_owned())),
            ("-x", ConfigError::Syntax("unknown shorthand flag: 'x' in -x".to_owned())),
            ("--listen-addr", ConfigError::Syntax("flag needs an argument: --listen-addr".to_owned())),
            (
                "--debug=maybe",
                ConfigError::Syntax("invalid argument \"maybe\" for \"--debug\" flag: parse error".to_owned()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(&args(line)), Err(want), "{line}");
        }
        assert!(
            matches!(parse(&args("--enable-pprof")), Err(ConfigError::Unsupported { flag, .. }) if flag == "--enable-pprof")
        );
        assert_eq!(
            parse(&args("--resolver-prefix /p")),
            Err(ConfigError::Invalid("invalid resolver-ttl 0".to_owned()))
        );
        let config =
            start("--resolver-prefix /p --resolver-ttl 7 --read-only --allow-prefix /a/,/b/ --allow-prefix=/c/");
        assert_eq!((config.resolver_prefix.as_deref(), config.resolver_ttl), (Some("/p"), 7));
        assert!(config.policy.read_only);
        assert_eq!(config.policy.allow_prefixes, [b"/a/".to_vec(), b"/b/".to_vec(), b"/c/".to_vec()]);
        assert_eq!(start("--auto-sync-interval 1m0s").auto_sync_interval, Duration::from_secs(60));
        assert_eq!(start("").service_prefix, "/keel/services");
        let config = start("--service-prefix /svc --service-config-dir /etc/keel/services");
        assert_eq!(
            (config.service_prefix.as_str(), config.service_config_dir),
            ("/svc", Some("/etc/keel/services".into()))
        );
        assert!(matches!(parse(&args("--service-prefix /")), Err(ConfigError::Invalid(_))));
        let config = start("--cache-prefix /a/,/b/ --cache-prefix=/c/ --cache-max-bytes 1024");
        assert_eq!(config.cache_prefixes, [b"/a/".to_vec(), b"/b/".to_vec(), b"/c/".to_vec()]);
        assert_eq!(config.cache_max_bytes, 1024);
        assert_eq!(start("--cache-prefix=").cache_prefixes, [Vec::<u8>::new()]);
        assert!(start("").cache_prefixes.is_empty(), "no cache unless asked");
        assert!(matches!(parse(&args("--cache-max-bytes 0")), Err(ConfigError::Syntax(_))));
        assert!(matches!(parse(&args("--cert-file c")), Err(ConfigError::Invalid(_))));
        // Turning an unsupported boolean off asks for nothing.
        start("--enable-pprof=false");
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
    }
}
