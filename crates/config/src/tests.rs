use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::table::FLAGS;
use crate::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn run(line: &str, vars: &[(&str, &str)]) -> Result<(Config, Vec<Notice>), ConfigError> {
    match load(args(line), env(vars))? {
        Outcome::Run { config, notices } => Ok((*config, notices)),
        other => panic!("{line}: expected a configuration, got {other:?}"),
    }
}

fn config(line: &str) -> Config {
    run(line, &[]).unwrap_or_else(|err| panic!("{line}: {err}")).0
}

fn error(line: &str) -> ConfigError {
    run(line, &[]).err().unwrap_or_else(|| panic!("{line}: expected an error"))
}

/// A value etcd's flag of this kind refuses, and the text it prints after
/// `for flag -name: ` (or, for booleans, after `for -name: `).
fn bad_value(kind: Kind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        Kind::Bool => ("maybe", "parse error"),
        Kind::Uint => ("-1", "parse error"),
        Kind::Uint32 => ("abc", "strconv.ParseUint: parsing \"abc\": invalid syntax"),
        Kind::Int => ("1e3", "parse error"),
        Kind::Duration => ("5", "parse error"),
        Kind::Urls => ("localhost:2379", "URL scheme must be http, https, unix, or unixs: localhost:2379"),
        Kind::Choice(_) => ("bogus", "invalid value"),
        Kind::Choices(_) => ("bogus", "invalid value \"bogus\""),
        Kind::FeatureGates => ("Bogus=true", "unrecognized feature gate: Bogus"),
        Kind::Str | Kind::Strings | Kind::Legacy => return None,
    })
}

#[test]
fn table_is_consistent() {
    let mut names = BTreeSet::new();
    for flag in FLAGS {
        assert!(names.insert(flag.name), "--{} is listed twice", flag.name);
        assert!(
            flag.kind == Kind::Legacy || flag.kind.parse(flag.default).is_ok() || flag.default.is_empty(),
            "--{}: default {:?} does not parse",
            flag.name,
            flag.default
        );
        if let Some(new) = flag.replaced_by {
            let target = find(new).unwrap_or_else(|| panic!("--{} is replaced by unknown --{new}", flag.name));
            assert_eq!(target.kind, flag.kind, "--{} and --{new} take different values", flag.name);
        }
        if flag.kind != Kind::Legacy {
            assert!(!flag.usage.is_empty(), "--{} has no usage text", flag.name);
        }
    }
    // The flags the issue names, and etcd's protections, are in the table.
    for name in [
        "quota-backend-bytes",
        "auth-token-ttl",
        "experimental-initial-corrupt-check",
        "auto-compaction-retention",
        "enable-v2",
        "logger",
        "feature-gates",
        "experimental-snapshot-catchup-entries",
        "snapshot-catchup-entries",
    ] {
        assert!(find(name).is_some(), "--{name} is missing");
    }
    for name in [
        "cert-file",
        "key-file",
        "trusted-ca-file",
        "client-cert-auth",
        "client-crl-file",
        "auto-tls",
        "peer-cert-file",
        "peer-key-file",
        "peer-trusted-ca-file",
        "peer-client-cert-auth",
        "peer-crl-file",
        "peer-auto-tls",
        "peer-cert-allowed-cn",
        "peer-cert-allowed-hostname",
    ] {
        assert_eq!(find(name).unwrap().support, Support::Implemented, "--{name} is served by keel-tls");
    }
}

/// Every flag, from every source: its default parses, each syntax of
/// setting it is taken, a bad value gets etcd's message.
#[test]
fn every_flag() {
    for flag in FLAGS {
        let name = flag.name;
        if matches!(name, "version" | "config-file") {
            continue;
        }
        // Refused flags are tried with their default, which starts.
        let sample = sample_value(flag);
        let mut forms = vec![vec![format!("--{name}={sample}")], vec![format!("-{name}={sample}")]];
        if !flag.kind.is_bool() {
            forms.push(vec![format!("--{name}"), sample.clone()]);
        }
        for mut form in forms {
            form.extend(required(name));
            if let Err(err) = load(form.clone(), Vec::new()) {
                panic!("{form:?}: {err}");
            }
        }
        if let Err(err) = load(required(name), env(&[(&flag.env_var(), &sample)])) {
            panic!("{} from the environment: {err}", flag.env_var());
        }
        if let Some((bad, reason)) = bad_value(flag.kind) {
            let expected = if flag.kind.is_bool() {
                format!("invalid boolean value \"{bad}\" for -{name}: {reason}")
            } else {
                format!("invalid value \"{bad}\" for flag -{name}: {reason}")
            };
            assert_eq!(error(&format!("--{name}={bad}")), ConfigError::Syntax(expected));
            assert_eq!(
                run("", &[(&flag.env_var(), bad)]).unwrap_err(),
                ConfigError::Invalid(format!("invalid value \"{bad}\" for {}: {reason}", flag.env_var()))
            );
        }
        if !flag.kind.is_bool() {
            assert_eq!(error(&format!("--{name}")), ConfigError::Syntax(format!("flag needs an argument: -{name}")));
        }
    }
}

/// A value to set `flag` to that starts Keel: etcd's default for refused
/// flags, something else where the kind allows.
fn sample_value(flag: &Flag) -> String {
    if matches!(flag.support, Support::Refused { .. }) {
        return match flag.kind {
            Kind::Bool => "false".to_string(),
            _ => flag.default.to_string(),
        };
    }
    match flag.name {
        "initial-cluster" => "default=http://localhost:2380".to_string(),
        "initial-cluster-state" => "existing".to_string(),
        "heartbeat-interval" => "50".to_string(),
        "election-timeout" => "2000".to_string(),
        "log-outputs" | "log-output" => "stdout".to_string(),
        "log-level" => "debug".to_string(),
        "auto-compaction-retention" => "1h".to_string(),
        "bcrypt-cost" => "12".to_string(),
        "tls-min-version" | "tls-max-version" => "TLS1.3".to_string(),
        "logger" => "capnslog".to_string(),
        "log-format" => "console".to_string(),
        "metrics" => "extensive".to_string(),
        "auto-compaction-mode" => "revision".to_string(),
        "feature-gates" => "LeaseCheckpoint=true".to_string(),
        _ => match flag.kind {
            Kind::Bool | Kind::Legacy => "true".to_string(),
            Kind::Uint | Kind::Uint32 | Kind::Int => "7".to_string(),
            Kind::Duration => "1m30s".to_string(),
            Kind::Urls => "http://127.0.0.1:9".to_string(),
            Kind::Choice(choices) => choices[0].to_string(),
            Kind::Choices(choices) => choices[0].to_string(),
            Kind::Str | Kind::Strings | Kind::FeatureGates => "x".to_string(),
        },
    }
}

/// etcd requires --advertise-client-urls with --listen-client-urls.
fn required(name: &str) -> Vec<String> {
    match name {
        "listen-client-urls" => vec!["--advertise-client-urls=http://127.0.0.1:9".to_string()],
        // etcd: "KeyFile and CertFile must both be present".
        "cert-file" => vec!["--key-file=x".to_string()],
        "key-file" => vec!["--cert-file=x".to_string()],
        "peer-cert-file" => vec!["--peer-key-file=x".to_string()],
        "peer-key-file" => vec!["--peer-cert-file=x".to_string()],
        _ => Vec::new(),
    }
}

#[test]
fn defaults_are_etcds() {
    let config = config("");
    assert_eq!(config, Config::defaults());
    assert_eq!(config.name, "default");
    assert_eq!(config.data_dir, PathBuf::from("default.etcd"));
    assert_eq!(config.wal_dir, None);
    assert_eq!(
        config.listen_client_urls.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["http://localhost:2379"]
    );
    assert_eq!(config.advertise_client_urls, ["http://localhost:2379"]);
    assert_eq!(config.initial_advertise_peer_urls, ["http://localhost:2380"]);
    assert!(!config.listen_peer_urls_given);
    assert!(config.initial_cluster.is_empty());
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert_eq!(config.initial_cluster_token, "etcd-cluster");
    assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(config.election_timeout, Duration::from_secs(1));
    assert_eq!(config.snapshot_count, 10_000);
    assert_eq!(config.snapshot_catchup_entries, 5_000);
    assert_eq!(config.max_request_bytes, 1_572_864);
    assert_eq!(config.max_txn_ops, 128);
    assert_eq!(config.max_concurrent_streams, u32::MAX);
    assert_eq!(config.grpc_keepalive_interval, Duration::from_secs(7200));
    assert_eq!(config.grpc_keepalive_timeout, Duration::from_secs(20));
    assert_eq!(config.watch_progress_notify_interval, Duration::from_secs(600));
    assert_eq!(config.lease_checkpoint_interval, Duration::from_secs(300));
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.log_outputs, [LogOutput::Stderr]);
    assert!(config.ignored.is_empty());
}

const SAMPLE_FLAGS: &str = "--name infra1 --data-dir=/var/lib/keel -wal-dir /wal \
    --listen-client-urls http://127.0.0.1:2379,http://10.0.0.1:2379 --advertise-client-urls=http://10.0.0.1:2379 \
    --listen-peer-urls http://10.0.0.1:2380 --initial-advertise-peer-urls http://10.0.0.1:2380 \
    --initial-cluster infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380 --initial-cluster-state existing \
    --initial-cluster-token tok --heartbeat-interval 200 --election-timeout=2000 --snapshot-count 500 \
    --experimental-snapshot-catchup-entries 100 --max-request-bytes 0x100000 --max-txn-ops 64 \
    --experimental-watch-progress-notify-interval 5s --grpc-keepalive-interval 1m --enable-pprof \
    --quota-backend-bytes 8589934592 --log-outputs stdout --log-level warn --cors http://a:1,http://b:2";

const SAMPLE_ENV: &[(&str, &str)] = &[
    ("ETCD_NAME", "infra1"),
    ("ETCD_DATA_DIR", "/var/lib/keel"),
    ("ETCD_WAL_DIR", "/wal"),
    ("ETCD_LISTEN_CLIENT_URLS", "http://10.0.0.1:2379,http://127.0.0.1:2379"),
    ("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.0.1:2379"),
    ("ETCD_LISTEN_PEER_URLS", "http://10.0.0.1:2380"),
    ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.0.1:2380"),
    ("ETCD_INITIAL_CLUSTER", "infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380"),
    ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
    ("ETCD_INITIAL_CLUSTER_TOKEN", "tok"),
    ("ETCD_HEARTBEAT_INTERVAL", "200"),
    ("ETCD_ELECTION_TIMEOUT", "2000"),
    ("ETCD_SNAPSHOT_COUNT", "500"),
    ("ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", "100"),
    ("ETCD_MAX_REQUEST_BYTES", "1048576"),
    ("ETCD_MAX_TXN_OPS", "64"),
    ("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "5s"),
    ("ETCD_GRPC_KEEPALIVE_INTERVAL", "60s"),
    ("ETCD_ENABLE_PPROF", "true"),
    ("ETCD_QUOTA_BACKEND_BYTES", "8589934592"),
    ("ETCD_LOG_OUTPUTS", "stdout"),
    ("ETCD_LOG_LEVEL", "warn"),
    ("ETCD_CORS", "http://a:1,http://b:2"),
];

const SAMPLE_YAML: &str = "
name: infra1
data-dir: /var/lib/keel
wal-dir: /wal
listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379
advertise-client-urls: http://10.0.0.1:2379
listen-peer-urls: http://10.0.0.1:2380
initial-advertise-peer-urls: http://10.0.0.1:2380
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380
initial-cluster-state: 'existing'
initial-cluster-token: tok
heartbeat-interval: 200
election-timeout: 2000
snapshot-count: 500
snapshot-catchup-entries: 100
max-request-bytes: 1048576
max-txn-ops: 64
watch-progress-notify-interval: 5000000000
grpc-keepalive-interval: 1m
enable-pprof: true
quota-backend-bytes: 8589934592
log-outputs: [stdout]
log-level: warn
cors: http://a:1,http://b:2
client-transport-security:
  client-cert-auth: false
  cert-file:
";

#[test]
fn flags_environment_and_file_agree() {
    let from_flags = config(SAMPLE_FLAGS);
    let (from_env, env_notices) = run("", SAMPLE_ENV).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.yml");
    std::fs::write(&path, SAMPLE_YAML).unwrap();
    let from_file = config(&format!("--config-file {}", path.display()));
    assert_eq!(from_flags, from_env);
    // The file also says explicitly what the default is.
    assert_eq!(from_flags, Config { settings: from_flags.settings.clone(), ..from_file });

    assert_eq!(from_flags.name, "infra1");
    assert_eq!(from_flags.wal_dir, Some(PathBuf::from("/wal")));
    assert_eq!(
        from_flags.listen_client_urls.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["http://10.0.0.1:2379", "http://127.0.0.1:2379"],
        "sorted, as etcd sorts URL lists"
    );
    assert_eq!(
        from_flags.initial_cluster,
        [
            ("infra1".to_string(), vec!["http://10.0.0.1:2380".to_string()]),
            ("infra2".to_string(), vec!["http://10.0.0.2:2380".to_string()])
        ]
    );
    assert_eq!(from_flags.initial_cluster_state, ClusterState::Existing);
    assert_eq!(from_flags.snapshot_catchup_entries, 100);
    assert_eq!(from_flags.max_request_bytes, 1 << 20);
    assert_eq!(from_flags.watch_progress_notify_interval, Duration::from_secs(5));
    assert_eq!(from_flags.grpc_keepalive_interval, Duration::from_secs(60));
    assert_eq!(from_flags.log_outputs, [LogOutput::Stdout]);
    assert_eq!(from_flags.log_level, LogLevel::Warn);
    let ignored: Vec<&str> = from_flags.ignored.iter().map(|entry| entry.flag).collect();
    assert_eq!(ignored, ["cors", "enable-pprof"]);
    assert_eq!(from_flags.quota_backend_bytes, 8 << 30);
    assert!(env_notices
        .iter()
        .any(|notice| notice.message == "recognized and used environment variable ETCD_NAME=infra1"));
}

#[test]
fn environment_follows_etcd() {
    let err = run("--name a", &[("ETCD_NAME", "b")]).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Invalid(
            "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
                .into()
        )
    );
    assert_eq!(err.exit_code(), 1);
    let (config, notices) =
        run("", &[("ETCD_FOO", "1"), ("ETCD_NAME", ""), ("ETCDCTL_API", "3"), ("HOME", "/")]).unwrap();
    assert_eq!(config.name, "default", "an empty variable is not used");
    let warnings: Vec<&str> =
        notices.iter().filter(|notice| notice.level == Level::Warn).map(|notice| notice.message.as_str()).collect();
    assert!(warnings.contains(&"unrecognized environment variable ETCD_FOO=1"), "{warnings:?}");
    assert!(!warnings.iter().any(|warning| warning.contains("ETCDCTL_API")), "{warnings:?}");
    // ETCD_VERSION cannot turn a start into a version print (etcd 3.5).
    assert!(matches!(load(Vec::new(), env(&[("ETCD_VERSION", "true")])).unwrap(), Outcome::Run { .. }));
}

#[test]
fn config_file_replaces_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.yml");
    std::fs::write(&path, "name: from-file\n").unwrap();
    let path = path.display().to_string();
    let (config, _) = run(&format!("--config-file={path} --name from-flag"), &[("ETCD_DATA_DIR", "/env")]).unwrap();
    assert_eq!(config.name, "from-file");
    assert_eq!(config.data_dir, PathBuf::from("from-file.etcd"));
    let (config, _) = run("--name from-flag", &[("ETCD_CONFIG_FILE", &path)]).unwrap();
    assert_eq!(config.name, "from-file");

    let write = |text: &str| {
        std::fs::write(dir.path().join("bad.yml"), text).unwrap();
        run(&format!("--config-file {}", dir.path().join("bad.yml").display()), &[])
    };
    assert_eq!(write("nmae: typo\n").unwrap_err(), ConfigError::Invalid("config file: unknown key \"nmae\"".into()));
    assert_eq!(
        write("client-transport-security:\n  cert-flie: x\n").unwrap_err(),
        ConfigError::Invalid("config file: unknown key \"client-transport-security.cert-flie\"".into())
    );
    assert!(
        matches!(write("election-timeout: 60000\n").unwrap_err(), ConfigError::Invalid(message) if message == "--election-timeout[60000ms] is too long, and should be set less than 50000ms")
    );
    assert_eq!(
        write("client-transport-security:\n  cert-file: /etc/ssl/server.crt\n").unwrap_err(),
        ConfigError::Invalid("KeyFile and CertFile must both be present[key: , cert: /etc/ssl/server.crt]".into())
    );
    assert!(matches!(write("enable-pprof: \"true\"\n").unwrap_err(), ConfigError::Invalid(_)));
    assert!(
        matches!(write("name: [\n").unwrap_err(), ConfigError::Invalid(message) if message.starts_with("error converting YAML to JSON"))
    );
    assert_eq!(
        run("--config-file /nonexistent.yml", &[]).unwrap_err(),
        ConfigError::Invalid("open /nonexistent.yml: no such file or directory".into())
    );
    // etcd's own sample file starts Keel (its protections are all off).
    let sample = include_str!("testdata/etcd.conf.yml.sample");
    std::fs::write(dir.path().join("sample.yml"), sample).unwrap();
    let (config, _) = run(&format!("--config-file {}", dir.path().join("sample.yml").display()), &[]).unwrap();
    assert_eq!(config.log_level, LogLevel::Debug);
}

#[test]
fn command_line_syntax_is_gos() {
    assert_eq!(error("--foo"), ConfigError::Syntax("flag provided but not defined: -foo".into()));
    assert_eq!(error("--foo").exit_code(), 2);
    assert_eq!(error("---name=x"), ConfigError::Syntax("bad flag syntax: ---name=x".into()));
    assert_eq!(error("--enable-v2 true"), ConfigError::Invalid("'true' is not a valid flag".into()));
    assert_eq!(error("--enable-v2 true").exit_code(), 1);
    // Parsing stops at the first non-flag, as Go's does.
    assert_eq!(error("stray --name x"), ConfigError::Invalid("'stray' is not a valid flag".into()));
    assert!(matches!(load(args("--help"), Vec::new()).unwrap(), Outcome::Help));
    assert!(matches!(load(args("-h"), Vec::new()).unwrap(), Outcome::Help));
    assert!(matches!(load(args("--version"), Vec::new()).unwrap(), Outcome::Version));
    assert!(matches!(load(args("-version --name x"), Vec::new()).unwrap(), Outcome::Version));
    // The last of repeated flags wins; "--" ends the flags.
    assert_eq!(config("--name a --name b").name, "b");
    assert_eq!(config("--name a --").name, "a");
    assert_eq!(config("--max-txn-ops 0x10").max_txn_ops, 16);
    assert_eq!(config("--snapshot").name, "default", "etcd 2's flags are ignored");
}

#[test]
fn bad_input_gets_etcds_messages() {
    let cases: &[(&str, &str)] = &[
        ("--initial-cluster=bad", "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: "),
        ("--initial-cluster=default=foo", "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: foo"),
        ("--initial-cluster=a=http://127.0.0.1:1", "couldn't find local name \"default\" in the initial cluster configuration"),
        ("--heartbeat-interval=1000", "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[1000ms]"),
        ("--heartbeat-interval=0", "--heartbeat-interval must be >0 (set to 0ms)"),
        ("--election-timeout=60000", "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
        ("--listen-client-urls=http://127.0.0.1:1", "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
        (
            "--listen-client-urls=http://example.com:1 --advertise-client-urls=http://a:1",
            "expected IP in URL for binding (http://example.com:1)",
        ),
        (
            "--initial-advertise-peer-urls=http://:2380",
            "--initial-advertise-peer-urls \"http://:2380\" must be \"host:port\" (unexpected empty host (http://:2380))",
        ),
        ("--auto-compaction-retention=abc", "error parsing CompactionRetention: time: invalid duration \"abc\""),
        ("--auto-compaction-mode=foo", "unknown auto-compaction-mode \"foo\""),
        ("--logger=bogus", "unknown logger option \"bogus\""),
        ("--tls-min-version=TLS1.0", "unexpected TLS version \"TLS1.0\" (must be one of: TLS1.2, TLS1.3)"),
        ("--tls-min-version=TLS1.3 --tls-max-version=TLS1.2", "min version (TLS1.3) is greater than max version (TLS1.2)"),
        ("--bcrypt-cost=3", "invalid bcrypt-cost: 3 (must be between 4 and 31)"),
        (
            "--experimental-watch-progress-notify-interval=1s --watch-progress-notify-interval=2s",
            "cannot set --experimental-watch-progress-notify-interval and --watch-progress-notify-interval at the same time, please use --watch-progress-notify-interval only",
        ),
        (
            "--initial-cluster=default=http://localhost:2380 --discovery-srv=example.com",
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\", \"discovery-endpoints\" or \"discovery-srv\"",
        ),
    ];
    for (line, message) in cases {
        assert_eq!(error(line), ConfigError::Invalid(message.to_string()), "{line}");
    }
    assert_eq!(
        error("--listen-client-urls=http://127.0.0.1:1/path"),
        ConfigError::Syntax(
            "invalid value \"http://127.0.0.1:1/path\" for flag -listen-client-urls: URL must not contain a path: http://127.0.0.1:1/path"
                .into()
        )
    );
    assert_eq!(
        error("--max-concurrent-streams=99999999999"),
        ConfigError::Syntax(
            "invalid value \"99999999999\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"99999999999\": value out of range"
                .into()
        )
    );
}

#[test]
fn protections_keel_lacks_are_refused() {
    for line in ["--force-new-cluster", "--discovery=https://discovery.example/abc", "--proxy=on"] {
        let err = error(line);
        assert!(matches!(err, ConfigError::Refused { .. }), "{line}: {err:?}");
        let flag = line.trim_start_matches('-').split('=').next().unwrap();
        assert!(err.to_string().starts_with(&format!("--{flag} is not supported by Keel yet: ")), "{err}");
        assert_eq!(err.exit_code(), 1);
    }
    for line in [
        "--listen-client-urls=unix://localhost:1 --advertise-client-urls=http://127.0.0.1:1",
        "--listen-client-urls=unixs://localhost:1 --advertise-client-urls=http://127.0.0.1:1",
    ] {
        let err = error(line);
        assert!(err.to_string().contains("URLs are not supported by Keel yet"), "{line}: {err}");
    }
    // Their defaults, and settings that only configure a feature that is
    // off, start.
    config("--client-cert-auth=false --auto-tls=false --cert-file= --proxy=off --auth-token=jwt --bcrypt-cost=12");
}

#[test]
fn tls_settings_and_etcds_checks() {
    let secured = config(
        "--listen-client-urls=https://127.0.0.1:2379,http://127.0.0.1:2379 --advertise-client-urls=https://127.0.0.1:2379 \
         --cert-file=/pki/server.crt --key-file=/pki/server.key --trusted-ca-file=/pki/ca.crt --client-cert-auth \
         --client-crl-file=/pki/crl.pem --listen-peer-urls=https://127.0.0.1:2380 \
         --initial-advertise-peer-urls=https://127.0.0.1:2380 --initial-cluster=default=https://127.0.0.1:2380 \
         --peer-auto-tls --peer-cert-allowed-cn=member,other --cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 \
         --tls-max-version=TLS1.3 --self-signed-cert-validity=3",
    );
    assert_eq!(
        secured.client_tls,
        TlsSettings {
            cert_file: Some("/pki/server.crt".into()),
            key_file: Some("/pki/server.key".into()),
            trusted_ca_file: Some("/pki/ca.crt".into()),
            client_cert_auth: true,
            crl_file: Some("/pki/crl.pem".into()),
            ..TlsSettings::default()
        }
    );
    assert_eq!(
        secured.peer_tls,
        TlsSettings { auto_tls: true, allowed_cns: vec!["member".into(), "other".into()], ..TlsSettings::default() }
    );
    assert_eq!(secured.cipher_suites, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
    assert_eq!((secured.tls_min_version.as_str(), secured.tls_max_version.as_str()), ("TLS1.2", "TLS1.3"));
    assert_eq!(secured.self_signed_cert_validity, 3);
    assert_eq!(secured.initial_cluster, [("default".to_string(), vec!["https://127.0.0.1:2380".to_string()])]);

    for (line, message) in [
        (
            "--listen-client-urls=https://127.0.0.1:2379 --advertise-client-urls=https://127.0.0.1:2379",
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme",
        ),
        (
            "--listen-peer-urls=https://127.0.0.1:2380",
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented",
        ),
        ("--peer-key-file=/k", "KeyFile and CertFile must both be present[key: /k, cert: ]"),
        (
            "--tls-min-version=TLS1.3 --cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "cipher suites cannot be configured when only TLS1.3 is enabled",
        ),
        ("--auto-tls --self-signed-cert-validity=0", "selfSignedCertValidity is invalid,it should be greater than 0"),
    ] {
        assert_eq!(error(line), ConfigError::Invalid(message.into()), "{line}");
    }
    // Auto-TLS stands in for the files; given files win, with etcd's warning.
    config("--listen-client-urls=https://127.0.0.1:2379 --advertise-client-urls=https://127.0.0.1:2379 --auto-tls");
    let (_, notices) = run("--auto-tls --cert-file=/c --key-file=/k", &[]).unwrap();
    assert!(notices.iter().any(|n| n.message == "ignoring client auto TLS since certs given"), "{notices:?}");
    let (_, notices) = run("--cert-file=/c --key-file=/k --client-cert-auth", &[]).unwrap();
    for warning in [
        "scheme is HTTP while key and cert files are present; ignoring key and cert files (client url http://localhost:2379)",
        "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL (client url http://localhost:2379)",
    ] {
        assert!(notices.iter().any(|n| n.message == warning), "{warning}: {notices:?}");
    }
}

#[test]
fn accepted_flags_are_reported_only_when_they_would_matter() {
    let config = config(
        "--quota-backend-bytes=0 --enable-v2=false --pre-vote --experimental-enable-lease-checkpoint --unsafe-no-fsync",
    );
    assert_eq!(config.ignored.iter().map(|entry| entry.flag).collect::<Vec<_>>(), ["unsafe-no-fsync"]);
    let config = super::tests::config("--quota-backend-bytes=8589934592 --pre-vote=false");
    let reported: Vec<String> = config.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        reported,
        [
            "--pre-vote=false is accepted but not implemented by Keel (it would turn raft pre-vote off (Keel always uses pre-vote)); ignored",
        ]
    );
}

#[test]
fn renamed_flags_are_one() {
    assert_eq!(config("--experimental-snapshot-catchup-entries=7").snapshot_catchup_entries, 7);
    assert_eq!(config("--snapshot-catchup-entries=7").snapshot_catchup_entries, 7);
    assert_eq!(config("--log-output=stdout").log_outputs, [LogOutput::Stdout]);
    assert_eq!(config("--debug").log_level, LogLevel::Debug);
    assert_eq!(config("--watch-progress-notify-interval=0s").watch_progress_notify_interval, Duration::from_secs(600));
}

#[test]
fn help_lists_every_flag() {
    let help = help_text();
    for flag in FLAGS.iter().filter(|flag| !matches!(flag.group, Group::Legacy | Group::Usage)) {
        assert!(help.contains(&format!("\n  --{} '", flag.name)), "--{} is not in --help", flag.name);
    }
    let version = version_text("1.2.3");
    assert!(version.starts_with("keel Version: 1.2.3\netcd Version: 3.6.0\nAPI Version: 3.6\n"), "{version}");
}

/// docs/configuration.md is generated from the table (`cargo xtask docs`).
#[test]
fn configuration_doc_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let written = std::fs::read_to_string(path).unwrap_or_default();
    assert!(written == markdown(), "docs/configuration.md is stale: run `cargo xtask docs`");
}

/// Corners where etcd 3.4 was run beside Keel and behaved as asserted.
#[test]
fn corners_as_etcd() {
    // etcd 2's ignored flags take any value.
    config("--peer-heartbeat-interval=100 --snapshot=yes");
    // Every URL flag may be empty; duplicates are one URL; schemes fold case.
    assert!(config("--advertise-client-urls=").advertise_client_urls.is_empty());
    let urls = config("--listen-client-urls=http://127.0.0.1:9,HTTP://127.0.0.1:9 --advertise-client-urls=http://a:1")
        .listen_client_urls;
    assert_eq!(urls.iter().map(ToString::to_string).collect::<Vec<_>>(), ["http://127.0.0.1:9"]);
    // --debug wins over --log-level, with a warning.
    assert_eq!(config("--debug --log-level=info").log_level, LogLevel::Debug);
    // Empty entries of --initial-cluster are skipped.
    assert_eq!(config("--initial-cluster=default=http://localhost:2380,,").initial_cluster.len(), 1);
    // 0 means the default.
    assert_eq!(config("--snapshot-count=0").snapshot_count, 10_000);
    assert_eq!(config("--snapshot-count=1_000").snapshot_count, 1_000);
    // Retention: a whole number or a duration, in either mode.
    config("--auto-compaction-mode=revision --auto-compaction-retention=1h");
    let auto = |flags: &str| config(flags).auto_compaction;
    assert_eq!(auto(""), None, "off by default");
    assert_eq!(auto("--auto-compaction-retention=0"), None);
    assert_eq!(auto("--auto-compaction-retention=2"), Some(AutoCompaction::Periodic(Duration::from_secs(7200))));
    assert_eq!(auto("--auto-compaction-retention=90s"), Some(AutoCompaction::Periodic(Duration::from_secs(90))));
    assert_eq!(
        auto("--auto-compaction-mode=revision --auto-compaction-retention=1000"),
        Some(AutoCompaction::Revision(1000))
    );
    assert_eq!(
        error("--auto-compaction-retention=-1"),
        ConfigError::Invalid("error parsing CompactionRetention: time: missing unit in duration \"-1\"".into())
    );
    assert_eq!(
        error("--name="),
        ConfigError::Invalid("couldn't find local name \"\" in the initial cluster configuration".into())
    );
    assert!(matches!(error("--grpc-keepalive-interval=1.2.3s"), ConfigError::Syntax(_)));
    // An empty variable still conflicts with its flag.
    assert!(
        matches!(run("--name a", &[("ETCD_NAME", "")]), Err(ConfigError::Invalid(m)) if m.starts_with("conflicting"))
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.yml");
    // etcd checks --advertise-client-urls only on the command line; the
    // 3.5 socket-options map is read.
    std::fs::write(&path, "listen-client-urls: http://127.0.0.1:9\nsocket-options:\n  reuse-port: true\n").unwrap();
    let (config, _) = run(&format!("--config-file {}", path.display()), &[]).unwrap();
    assert_eq!(config.ignored.iter().map(|entry| entry.flag).collect::<Vec<_>>(), ["socket-reuse-port"]);
}

#[test]
fn peer_client_san_verification_is_on_unless_skipped() {
    // etcd's default: peers' certificates are checked against their address.
    assert!(!config("").peer_tls.skip_client_san_verification);
    assert!(config("--peer-skip-client-san-verification").peer_tls.skip_client_san_verification);
    assert!(!config("--peer-skip-client-san-verification=false").peer_tls.skip_client_san_verification);
    // etcd 3.4/3.5's name, with 3.6's deprecation warning.
    let (old, notices) = run("--experimental-peer-skip-client-san-verification", &[]).unwrap();
    assert!(old.peer_tls.skip_client_san_verification);
    assert!(notices
        .iter()
        .any(|n| n.message.contains("--experimental-peer-skip-client-san-verification is deprecated")));
    assert!(old.ignored.is_empty(), "implemented, not ignored: {:?}", old.ignored);
    let (env, _) = run("", &[("ETCD_PEER_SKIP_CLIENT_SAN_VERIFICATION", "true")]).unwrap();
    assert!(env.peer_tls.skip_client_san_verification);
    // No client-side twin: client listeners never check in etcd.
    assert!(!config("--peer-skip-client-san-verification").client_tls.skip_client_san_verification);
    assert_eq!(
        error("--experimental-peer-skip-client-san-verification --peer-skip-client-san-verification"),
        ConfigError::Invalid(
            "cannot set --experimental-peer-skip-client-san-verification and --peer-skip-client-san-verification \
             at the same time, please use --peer-skip-client-san-verification only"
                .into()
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.yml");
    std::fs::write(&path, "peer-transport-security:\n  skip-client-san-verification: true\n").unwrap();
    assert!(config(&format!("--config-file {}", path.display())).peer_tls.skip_client_san_verification);
}

/// etcd's --logger, --log-format, --log-level and --log-outputs: zap's level
/// and format parsers, and setupLogging's checks with their messages.
#[test]
fn logging_flags_as_etcd() {
    let defaults = config("");
    assert_eq!((defaults.logger, defaults.log_format), (Logger::Zap, LogFormat::Json));
    assert_eq!(defaults.log_outputs, [LogOutput::Stderr]);
    assert_eq!(config("--logger=capnslog").logger, Logger::Capnslog);
    assert_eq!(config("--log-format=console").log_format, LogFormat::Console);
    assert_eq!(config("--log-format=").log_format, LogFormat::Json);
    // zap reads a level as given or lowercased; "" is info.
    assert_eq!(config("--log-level=WARN").log_level, LogLevel::Warn);
    assert_eq!(config("--log-level=Debug").log_level, LogLevel::Debug);
    assert_eq!(config("--log-level=").log_level, LogLevel::Info);
    for level in ["error", "dpanic", "panic", "fatal"] {
        assert_eq!(config(&format!("--log-level={level}")).log_level, LogLevel::Error);
    }
    // Unique and sorted, as etcd's UniqueStringsFromFlag; "default" once is fine.
    assert_eq!(
        config("--log-outputs=stdout,/tmp/b.log,/tmp/a.log,stdout").log_outputs,
        [LogOutput::File(PathBuf::from("/tmp/a.log")), LogOutput::File(PathBuf::from("/tmp/b.log")), LogOutput::Stdout]
    );
    assert_eq!(config("--log-outputs=default,default").log_outputs, [LogOutput::Stderr]);
    assert_eq!(config("--log-outputs=systemd/journal").log_outputs, [LogOutput::Stderr]);
    assert_eq!(config("--log-outputs=stderr,stdout").log_outputs, [LogOutput::Stderr, LogOutput::Stdout]);
    let cases = [
        ("--log-level=bogus", "unrecognized level: \"bogus\""),
        ("--log-level=verbose", "unrecognized level: \"verbose\""),
        ("--logger=", "unknown logger option \"\""),
        ("--log-format=text", "unknown log format: text, supported values json, console"),
        ("--log-outputs=default,stderr", "multi logoutput for \"default\" is not supported yet"),
        (
            "--log-outputs=systemd/journal,stderr",
            "running with systemd/journal but other '--log-outputs' values ([\"stderr\" \"systemd/journal\"]) are configured with 'default'; override 'default' value with something else",
        ),
    ];
    for (line, message) in cases {
        assert_eq!(error(line), ConfigError::Invalid(message.to_string()), "{line}");
    }
}
