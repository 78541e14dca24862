//! `bench maintenance`: a million keys in etcd, then the operator's tasks
//! on each system: `snapshot save` (time, and the RSS it costs the
//! server), the import of etcd's snapshot into Keel (time until it
//! serves), and a defragmentation under a put load (how long the slowest
//! put waited meanwhile: etcd stops writes for its whole defrag).
//!
//! Keel's million keys are etcd's, imported: the same store in both.
//! Snapshots alternate between the systems (A B A B), both kept running.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{DefragmentRequest, PutRequest, SnapshotRequest};
use tokio_stream::StreamExt;

use super::compare::{median, thousands};
use super::load;
use super::server::{Server, Systems};

#[derive(Args, Debug)]
pub struct MaintenanceOptions {
    /// Keys loaded into etcd (and imported into Keel).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Random values of this size, each key its own.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Concurrent put clients while loading.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Snapshot saves per system (alternating).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Put clients running while each system defragments.
    #[arg(long, default_value_t = 16)]
    pub defrag_clients: usize,
    #[command(flatten)]
    pub systems: Systems,
}

/// One `snapshot save`: how long, how many bytes, the server's extra RSS.
struct Save {
    took: Duration,
    bytes: u64,
    extra_rss_kib: u64,
}

/// One defragmentation under load.
struct Defrag {
    took: Duration,
    puts: usize,
    worst_put: Duration,
    errors: usize,
}

pub async fn run(options: &MaintenanceOptions) -> Result<()> {
    if options.keys == 0 || options.rounds == 0 || options.clients == 0 {
        bail!("--keys, --rounds and --clients must be positive");
    }
    let keel_bin = options.systems.keel_bin()?;
    let root = &options.systems.data_root;
    println!(
        "maintenance: {} keys of {} bytes with random {}-byte values in etcd; snapshot save on each system \
         ({} rounds, A B A B), etcd's snapshot imported into Keel, and a defragmentation under {} put clients",
        thousands(options.keys),
        options.key_size,
        options.val_size,
        options.rounds,
        options.defrag_clients
    );

    let mut etcd = Server::start(&options.systems.etcd_bin, root, "etcd")?;
    etcd.wait_ready().await?;
    let loading = Instant::now();
    let shape = load::FillShape {
        keys: options.keys,
        clients: options.clients,
        clients_per_conn: 8,
        key_size: options.key_size,
        val_size: options.val_size,
    };
    let loaded = load::fill(&[etcd.url.clone()], shape).await.context("etcd: loading")?;
    if loaded.writes.errors > 0 {
        bail!("etcd: {} puts failed loading (first: {:?})", loaded.writes.errors, loaded.first_error);
    }
    println!("etcd: loaded in {:.1} s", loading.elapsed().as_secs_f64());

    let scratch = tempfile::Builder::new().prefix("bench-maintenance-").tempdir_in(root)?;
    let etcd_file = scratch.path().join("etcd.db");
    let first = save(&etcd, &etcd_file).await.context("etcd: snapshot save")?;
    println!("etcd: snapshot of {:.0} MiB", first.bytes as f64 / (1 << 20) as f64);

    let importing = Instant::now();
    let import = vec!["--import-etcd-snapshot".to_string(), etcd_file.display().to_string()];
    let mut keel = Server::start_cluster(&keel_bin, root, "keel", 1, false, &import)?.remove(0);
    keel.wait_ready_within(Duration::from_secs(600)).await.context("keel: importing etcd's snapshot")?;
    let import_took = importing.elapsed();
    println!("keel: imported etcd's snapshot and serving in {:.1} s", import_took.as_secs_f64());

    let (mut etcd_saves, mut keel_saves) = (vec![first], Vec::new());
    for round in 0..options.rounds {
        for (system, server) in [("etcd", &etcd), ("keel", &keel)] {
            if system == "etcd" && round == 0 {
                continue; // the first etcd save made the file Keel imported
            }
            let file = scratch.path().join(format!("{system}-{round}.db"));
            let sample = save(server, &file).await.with_context(|| format!("{system}: snapshot save"))?;
            std::fs::remove_file(&file)?;
            println!(
                "round {round} {system:4}: snapshot save {:5.2} s ({:6.0} MiB)  extra RSS {:5.0} MiB",
                sample.took.as_secs_f64(),
                sample.bytes as f64 / (1 << 20) as f64,
                sample.extra_rss_kib as f64 / 1024.0
            );
            if system == "etcd" {
                etcd_saves.push(sample)
            } else {
                keel_saves.push(sample)
            }
        }
    }

    let mut defrags = Vec::new();
    for (system, server) in [("etcd", &mut etcd), ("keel", &mut keel)] {
        let d = defrag_under_load(server, options).await.with_context(|| format!("{system}: defrag"))?;
        println!(
            "{system:4}: defrag {:5.2} s; {} puts meanwhile, the slowest waited {:.0} ms{}",
            d.took.as_secs_f64(),
            d.puts,
            d.worst_put.as_secs_f64() * 1e3,
            if d.errors > 0 { format!(", {} failed", d.errors) } else { String::new() }
        );
        defrags.push(d);
        if let Some(status) = server.exited() {
            bail!("{system} exited during the maintenance run ({status})");
        }
    }

    let med = |saves: &[Save], f: &dyn Fn(&Save) -> f64| median(saves.iter().map(f).collect());
    let mut table = String::new();
    let _ = writeln!(table, "| system | snapshot save s | snapshot MiB | extra RSS while saving MiB | import s | defrag s | slowest put during defrag ms |");
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|");
    for ((system, saves), defrag) in [("etcd", &etcd_saves), ("keel", &keel_saves)].into_iter().zip(&defrags) {
        let import = if system == "keel" { format!("{:.1}", import_took.as_secs_f64()) } else { "-".into() };
        let _ = writeln!(
            table,
            "| {system} | {:.2} | {:.0} | {:.0} | {import} | {:.2} | {:.0} |",
            med(saves, &|s| s.took.as_secs_f64()),
            med(saves, &|s| s.bytes as f64 / (1 << 20) as f64),
            med(saves, &|s| s.extra_rss_kib as f64 / 1024.0),
            defrag.took.as_secs_f64(),
            defrag.worst_put.as_secs_f64() * 1e3,
        );
    }
    println!("\n{table}");
    if defrags.iter().any(|d| d.errors > 0) {
        bail!("puts failed during a defragmentation");
    }
    Ok(())
}

/// Streams the server's snapshot to `file`, as `etcdctl snapshot save`.
async fn save(server: &Server, file: &Path) -> Result<Save> {
    let endpoint = tonic::transport::Endpoint::from_shared(server.url.clone())?;
    let mut client = MaintenanceClient::new(super::dial::dial(endpoint).await?).max_decoding_message_size(usize::MAX);
    server.reset_peak_rss();
    let before = server.rss_kib();
    let started = Instant::now();
    let mut stream = client.snapshot(SnapshotRequest {}).await?.into_inner();
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(file).await?);
    let mut bytes = 0u64;
    while let Some(message) = stream.next().await {
        let message = message?;
        bytes += message.blob.len() as u64;
        tokio::io::AsyncWriteExt::write_all(&mut out, &message.blob).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    let took = started.elapsed();
    if bytes % 512 != 32 {
        bail!("a snapshot of {bytes} bytes has no sha256 trailer");
    }
    Ok(Save { took, bytes, extra_rss_kib: server.peak_rss_kib().saturating_sub(before) })
}

/// Defragments while `defrag_clients` clients put, one put at a time each.
async fn defrag_under_load(server: &mut Server, options: &MaintenanceOptions) -> Result<Defrag> {
    let clients = load::connect(std::slice::from_ref(&server.url), options.defrag_clients.max(1)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, mut kv) in clients.into_iter().enumerate() {
        let stop = stop.clone();
        let value = vec![b'v'; options.val_size];
        tasks.push(tokio::spawn(async move {
            let (mut puts, mut worst, mut errors) = (0usize, Duration::ZERO, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("defrag/{i}/{}", puts % 1000).into_bytes();
                let sent = Instant::now();
                if kv.put(PutRequest { key, value: value.clone(), ..Default::default() }).await.is_err() {
                    errors += 1;
                }
                worst = worst.max(sent.elapsed());
                puts += 1;
            }
            (puts, worst, errors)
        }));
    }
    // The load runs a moment first, so the slowest put is the defrag's doing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let endpoint = tonic::transport::Endpoint::from_shared(server.url.clone())?;
    let mut client = MaintenanceClient::new(super::dial::dial(endpoint).await?);
    let started = Instant::now();
    client.defragment(DefragmentRequest {}).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut result = Defrag { took, puts: 0, worst_put: Duration::ZERO, errors: 0 };
    for task in tasks {
        let (puts, worst, errors) = task.await?;
        result.puts += puts;
        result.worst_put = result.worst_put.max(worst);
        result.errors += errors;
    }
    Ok(result)
}
