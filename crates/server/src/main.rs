//! The `keel` binary: parse etcd-style flags, start the member, serve its
//! client API until SIGTERM or SIGINT. Composition only; no logic lives here.

mod config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keel_grpc_api::ApiOptions;
use keel_node::{ClusterState, Member, MemberConfig};
use tokio::net::TcpListener;

use crate::config::{listen_addr, Flags};

/// Threads for blocking work (store reads, mostly); enough that a long scan
/// (HashKV, a large range) leaves others free.
const BLOCKING_THREADS: usize = 16;

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(flags.tracing_level())),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Reads run on the blocking pool. With tokio's default of 512 threads,
    // a busy server keeps hundreds of them, and nearly every read wakes a
    // sleeping one (a futex wake and a context switch per request: ~10% of
    // the CPU of a range-s-256 run). A few threads stay busy instead and take
    // queued reads one after another.
    let runtime = tokio::runtime::Builder::new_multi_thread().max_blocking_threads(BLOCKING_THREADS).enable_all().build()?;
    runtime.block_on(run(flags))
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let addrs = flags.listen_client_urls.iter().map(|url| listen_addr(url)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for clients on {addr}"))?;
        listeners.push(listener);
    }

    let initial_cluster = flags.initial_cluster()?;
    // Peers listen when there are peers, or when asked to: a single member
    // with the default flags needs no peer port (and tests can run many).
    let mut peer_listeners = Vec::new();
    if initial_cluster.len() > 1 || !flags.listen_peer_urls.is_empty() {
        let default = vec!["http://localhost:2380".to_string()];
        let urls = if flags.listen_peer_urls.is_empty() { &default } else { &flags.listen_peer_urls };
        for url in urls {
            let addr = listen_addr(url)?;
            let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for peers on {addr}"))?;
            peer_listeners.push(listener);
        }
    }

    let mut member_config = MemberConfig::new(flags.name.clone(), flags.data_dir()).with_raft_timing(
        Duration::from_millis(flags.heartbeat_interval),
        Duration::from_millis(flags.election_timeout),
    )?;
    member_config.peer_urls = flags.initial_advertise_peer_urls.clone();
    member_config.initial_cluster = initial_cluster;
    member_config.cluster_token = flags.initial_cluster_token.clone();
    member_config.max_request_bytes = flags.max_request_bytes;
    member_config.lease_checkpoint_interval = flags.lease_checkpoint_interval;
    member_config.snapshot_count = flags.snapshot_count;
    member_config.snapshot_catchup_entries = flags.snapshot_catchup_entries;
    member_config.initial_cluster_state =
        if flags.initial_cluster_state == "existing" { ClusterState::Existing } else { ClusterState::New };
    let member = tokio::task::spawn_blocking(move || Member::start(member_config))
        .await?
        .context("cannot start the member")?;
    let member = Arc::new(member);
    tokio::spawn({
        let (member, client_urls) = (member.clone(), flags.advertise_client_urls.clone());
        async move { member.publish(client_urls).await }
    });

    let options = ApiOptions {
        max_request_bytes: flags.max_request_bytes,
        max_txn_ops: flags.max_txn_ops,
        watch_progress_notify_interval: flags.watch_progress_notify_interval,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        tracing::info!(addr = %listener.local_addr()?, "serving client requests");
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        servers.spawn(keel_grpc_api::serve(listener, member.clone(), options.clone(), shutdown));
    }
    for listener in peer_listeners {
        tracing::info!(addr = %listener.local_addr()?, "serving raft peers");
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        servers.spawn(keel_grpc_api::serve_peers(listener, member.clone(), shutdown));
    }
    tracing::info!(name = %flags.name, advertise = ?flags.advertise_client_urls, "ready to serve client requests");

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
