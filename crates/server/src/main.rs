//! The `keel` binary: load etcd's configuration (flags, `ETCD_*` variables
//! or a config file), start the member, serve its client API until SIGTERM
//! or SIGINT. Composition only; no logic lives here.

mod grpc_proxy;
mod logging;
mod tcp_gateway;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use keel_config::{bind_addr, ClusterState as ConfigClusterState, Config, ConfigError, Outcome};
use keel_grpc_api::ApiOptions;
use keel_node::{ClusterState, GrpcNetwork, Member, MemberConfig, Parts};
use keel_tls::{Incoming, ServerTls};
use tokio::net::TcpListener;

/// Threads for blocking work (store reads, mostly); enough that a long scan
/// (HashKV, a large range) leaves others free.
const BLOCKING_THREADS: usize = 16;

fn main() -> std::process::ExitCode {
    // A panic in any thread is a bug that would leave the member half alive
    // (a dead applier or raft thread behind a server still answering as
    // leader): the whole process stops instead, as etcd's panic does.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let Some(args) = std::env::args_os().skip(1).map(|arg| arg.into_string().ok()).collect::<Option<Vec<_>>>() else {
        eprintln!("keel: error verifying flags, an argument is not valid UTF-8. See 'keel --help'.");
        return std::process::ExitCode::FAILURE;
    };
    if args.first().map(String::as_str) == Some("grpc-proxy") {
        return grpc_proxy::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("gateway") {
        return tcp_gateway::main(&args[1..]);
    }
    // Variables that are not UTF-8 cannot be etcd's; they are left alone.
    let env = std::env::vars_os().filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    let (config, notices) = match keel_config::load(args, env) {
        Ok(Outcome::Run { config, notices }) => (config, notices),
        Ok(Outcome::Help) => {
            print!("{}", keel_config::help_text());
            return std::process::ExitCode::SUCCESS;
        }
        Ok(Outcome::Version) => {
            print!("{}", keel_config::version_text(env!("CARGO_PKG_VERSION")));
            return std::process::ExitCode::SUCCESS;
        }
        Err(err) => return config_failure(&err),
    };
    // etcd sets its logger up while verifying its flags: an output it
    // cannot open is one more flag error, before anything starts.
    if let Err(err) = logging::init(&config, &notices) {
        eprintln!("keel: error verifying flags, {err}. See 'keel --help'.");
        return std::process::ExitCode::FAILURE;
    }
    match serve(*config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("Error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reports a configuration error as etcd does: a syntax error with the
/// usage (exit 2), anything else as "error verifying flags" (exit 1).
fn config_failure(err: &ConfigError) -> std::process::ExitCode {
    match err {
        ConfigError::Syntax(message) => eprintln!("{message}\n{}", keel_config::usage_text()),
        other => eprintln!("keel: error verifying flags, {other}. See 'keel --help'."),
    }
    std::process::ExitCode::from(err.exit_code() as u8)
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Every certificate, key, CA and CRL is read now, before anything
    // listens or the member opens its data: a bad file fails the start.
    let tls = tls::Tls::build(&config)?;
    // Reads run on the blocking pool. With tokio's default of 512 threads,
    // a busy server keeps hundreds of them, and nearly every read wakes a
    // sleeping one (a futex wake and a context switch per request: ~10% of
    // the CPU of a range-s-256 run). A few threads stay busy instead and take
    // queued reads one after another.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().max_blocking_threads(BLOCKING_THREADS).enable_all().build()?;
    runtime.block_on(run(config, tls))
}

/// One listening address and the schemes its URLs asked for: etcd lets
/// `http://` and `https://` share an address, and then serves both.
struct Listen {
    addr: SocketAddr,
    plain: bool,
    secure: bool,
}

fn group_by_address(urls: &[keel_config::goflag::FlagUrl]) -> anyhow::Result<Vec<Listen>> {
    let mut listens: Vec<Listen> = Vec::new();
    for url in urls {
        let addr = bind_addr(url)?;
        let secure = url.scheme == "https";
        match listens.iter_mut().find(|listen| listen.addr == addr) {
            Some(listen) => {
                listen.secure |= secure;
                listen.plain |= !secure;
            }
            None => listens.push(Listen { addr, plain: !secure, secure }),
        }
    }
    Ok(listens)
}

async fn listen(
    listens: Vec<Listen>,
    tls: Option<&ServerTls>,
    what: &str,
) -> anyhow::Result<Vec<(SocketAddr, Incoming)>> {
    let mut incoming = Vec::with_capacity(listens.len());
    for Listen { addr, plain, secure } in listens {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}"))?;
        let local = listener.local_addr()?;
        let stream = match (secure, tls) {
            (false, _) => Incoming::plain(listener),
            (true, Some(tls)) if plain => Incoming::tls_and_plain(listener, tls.clone()),
            (true, Some(tls)) => Incoming::tls(listener, tls.clone()),
            // keel-config refuses https:// URLs without certificates.
            (true, None) => anyhow::bail!("no TLS certificate for https:// {what} URLs on {addr}"),
        };
        tracing::info!(addr = %local, tls = secure, plain, "listening for {what}");
        incoming.push((local, stream));
    }
    Ok(incoming)
}

async fn run(config: Config, tls: tls::Tls) -> anyhow::Result<()> {
    let listeners = listen(group_by_address(&config.listen_client_urls)?, tls.client.as_ref(), "clients").await?;

    // Peers listen when there are peers, or when asked to: a single member
    // with the default flags needs no peer port (and tests can run many).
    let mut peer_listeners = Vec::new();
    if config.initial_cluster.len() > 1 || config.listen_peer_urls_given {
        peer_listeners = listen(group_by_address(&config.listen_peer_urls)?, tls.peer.as_ref(), "peers").await?;
    }
    // etcd serves https:// metrics URLs with the client certificate.
    let metrics_listeners =
        listen(group_by_address(&config.listen_metrics_urls)?, tls.client.as_ref(), "metrics").await?;

    let mut member_config = MemberConfig::new(config.name.clone(), config.data_dir.clone())
        .with_raft_timing(config.heartbeat_interval, config.election_timeout)?;
    member_config.wal_dir = config.wal_dir.clone();
    member_config.peer_urls = config.initial_advertise_peer_urls.clone();
    member_config.initial_cluster = config.initial_cluster.clone();
    member_config.cluster_token = config.initial_cluster_token.clone();
    member_config.max_request_bytes = config.max_request_bytes;
    member_config.lease_checkpoint_interval = config.lease_checkpoint_interval;
    member_config.snapshot_count = config.snapshot_count;
    member_config.snapshot_catchup_entries = config.snapshot_catchup_entries;
    member_config.strict_reconfig_check = config.strict_reconfig_check;
    // 0 keeps etcd's default; a negative value (no quota) is kept as etcd
    // exports it.
    if config.quota_backend_bytes != 0 {
        member_config.quota_backend_bytes = config.quota_backend_bytes;
    }
    member_config.auth = auth_config(&config)?;
    member_config.initial_cluster_state = match config.initial_cluster_state {
        ConfigClusterState::New => ClusterState::New,
        ConfigClusterState::Existing => ClusterState::Existing,
    };
    let peer_client = tls.peer_client.clone();
    // As etcd, only a member restarting on its data checks it against its
    // peers; a new one has nothing to compare yet.
    let initialized = keel_node::import::store_dir(&config.data_dir).is_dir();
    let import = config.import_etcd_snapshot.clone();
    let member = tokio::task::spawn_blocking(move || {
        let new_cluster = member_config.initial_cluster_state == ClusterState::New;
        keel_node::import::prepare_data_dir(&member_config.data_dir, import.as_deref(), new_cluster)?;
        let mut parts = Parts::on_disk(&member_config)?;
        // Peers are dialled with the peer TLS settings (https:// peer URLs).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            parts.network = Arc::new(GrpcNetwork::with_tls(runtime, peer_client));
        }
        Member::assemble(member_config, parts)
    })
    .await?
    .context("cannot start the member")?;
    let member = Arc::new(member);
    let metrics = keel_metrics::Metrics::new()?;
    member.register_metrics(metrics.registry())?;
    // One set of gRPC series for every client listener, as etcd's.
    let grpc_metrics = keel_grpc_api::GrpcMetrics::new(config.extensive_metrics);
    keel_metrics::Measures::register(&grpc_metrics, metrics.registry())?;
    // etcd serves no client before its attributes are published (its
    // listeners wait on ReadyNotify), so a member without quorum leaves its
    // clients hanging; Keel serves at once (a minority member still answers
    // serializable reads and health checks) and publishes beside.
    tokio::spawn({
        let (member, client_urls) = (member.clone(), config.advertise_client_urls.clone());
        async move { member.publish(client_urls).await }
    });
    // TTL nodes of the v2 store expire by the leader's clock, as etcd's do.
    tokio::spawn(Member::run_v2_expiry(Arc::downgrade(&member)));
    if let Some(mode) = config.auto_compaction {
        let mode = match mode {
            keel_config::AutoCompaction::Periodic(period) => keel_node::compactor::AutoCompaction::Periodic(period),
            keel_config::AutoCompaction::Revision(revisions) => {
                keel_node::compactor::AutoCompaction::Revision(revisions)
            }
        };
        tokio::spawn(Member::run_auto_compaction(Arc::downgrade(&member), mode));
    }

    let options = ApiOptions {
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        watch_progress_notify_interval: config.watch_progress_notify_interval,
        max_concurrent_streams: config.max_concurrent_streams,
        keepalive_interval: config.grpc_keepalive_interval,
        keepalive_timeout: config.grpc_keepalive_timeout,
        status_errors: config.ignored.iter().map(ToString::to_string).collect(),
        metrics: grpc_metrics,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (addr, listener) in peer_listeners {
        tracing::info!(%addr, "serving raft peers");
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        servers.spawn(keel_grpc_api::serve_peers(listener, member.clone(), shutdown));
    }
    // Peers are served first: members restarting together with the check
    // on answer each other's hashes before any of them serves clients.
    if config.initial_corrupt_check && initialized {
        member.initial_corruption_check().await.context("initial corruption check")?;
    }
    if let Some(interval) = config.corrupt_check_time {
        tokio::spawn(Member::run_corruption_checks(Arc::downgrade(&member), interval));
    }
    for (addr, listener) in listeners {
        tracing::info!(%addr, "serving client requests");
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let mut http = keel_gateway::client_routes(member.clone(), metrics.clone());
        if config.enable_grpc_gateway {
            http = http.merge(keel_gateway::json::routes(member.clone(), &options));
        }
        if config.enable_v2 {
            http = http.merge(keel_gateway::v2::routes(member.clone()));
        }
        servers.spawn(keel_grpc_api::serve(listener, member.clone(), options.clone(), http, shutdown));
    }
    for (addr, listener) in metrics_listeners {
        tracing::info!(%addr, "serving metrics and health");
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let http = keel_gateway::metrics_routes(member.clone(), metrics.clone());
        servers.spawn(keel_grpc_api::serve_http(listener, http, shutdown));
    }
    tracing::info!(name = %config.name, advertise = ?config.advertise_client_urls, "ready to serve client requests");
    notify_systemd_ready();

    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
        () = member.removed() => tracing::warn!("this member was removed from the cluster; shutting down"),
        Some(result) = servers.join_next() => {
            result?.context("client server stopped")?;
        }
    }
    let _ = stop_tx.send(true);
    // In-flight requests get a moment to finish; idle client connections
    // (a watcher, a pooled channel) would otherwise hold shutdown forever.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = servers.join_next().await {
            match result {
                Ok(Err(err)) => tracing::warn!(%err, "client server ended with an error"),
                Err(err) => tracing::warn!(%err, "client server task failed"),
                Ok(Ok(())) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!("closing client connections still open after {SHUTDOWN_GRACE:?}");
        servers.abort_all();
    }
    let stopping = member.clone();
    tokio::task::spawn_blocking(move || stopping.stop()).await?;
    Ok(())
}

/// systemd's readiness protocol, as etcd speaks it: Debian's etcd unit is
/// `Type=notify`, so systemd waits for one `READY=1` datagram on
/// `$NOTIFY_SOCKET` once clients are served.
fn notify_systemd_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let sent = (|| -> std::io::Result<()> {
        let address = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(b"READY=1", &address)?;
        Ok(())
    })();
    if let Err(err) = sent {
        tracing::warn!(%err, socket = %path, "cannot notify systemd that keel is ready");
    }
}

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// etcd's auth flags: the token provider (JWT keys loaded and checked now,
/// so a bad key stops the start with its file named) and bcrypt's cost.
fn auth_config(config: &Config) -> anyhow::Result<keel_node::auth::AuthConfig> {
    use keel_node::auth::{AuthConfig, TokenProvider};
    let tokens = match keel_auth::TokenSpec::parse(&config.auth_token)? {
        keel_auth::TokenSpec::Simple => TokenProvider::Simple,
        keel_auth::TokenSpec::None => TokenProvider::None,
        keel_auth::TokenSpec::Jwt(options) => TokenProvider::Jwt(Arc::new(keel_auth::JwtTokens::load(&options)?)),
    };
    let mut bcrypt_cost = config.bcrypt_cost;
    if !(keel_auth::MIN_BCRYPT_COST..=keel_auth::MAX_BCRYPT_COST).contains(&bcrypt_cost) {
        tracing::warn!(given = bcrypt_cost, "use default bcrypt cost instead of the invalid given cost");
        bcrypt_cost = keel_auth::DEFAULT_BCRYPT_COST;
    }
    Ok(AuthConfig { tokens, token_ttl: config.auth_token_ttl, bcrypt_cost })
}
