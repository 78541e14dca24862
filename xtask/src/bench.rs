//! `cargo xtask bench`: a load generator for any etcd v3 endpoint, and a
//! side-by-side run of Keel and real etcd on this machine.
//!
//! `bench put` mirrors etcd's `benchmark put` (same flags, same summary
//! layout). `bench compare` starts fresh etcd and Keel servers in turn
//! (A B A B: these machines are shared and noisy, so alternating spreads the
//! noise over both) and prints the median of each.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

#[derive(Subcommand)]
pub enum Bench {
    /// Puts against running endpoints, as etcd's `benchmark put`.
    Put(PutOptions),
    /// Fresh etcd and Keel, alternating, same workload; medians and ratio.
    Compare(CompareOptions),
}

#[derive(Args, Clone, Debug)]
pub struct Load {
    /// Total number of requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: usize,
    /// Concurrent clients (in-flight requests).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys to write (etcd's default writes one key over and over).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: usize,
    /// Write keys in order rather than at random.
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Args, Debug)]
pub struct PutOptions {
    /// Comma-separated client URLs.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    #[command(flatten)]
    pub load: Load,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompareOptions {
    #[command(flatten)]
    pub load: Load,
    /// Rounds per system (each round: fresh etcd, then fresh Keel).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// A prebuilt keel binary; by default `cargo build --release --bin keel`.
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Where the servers keep data (same filesystem for both).
    #[arg(long, default_value = "/var/tmp")]
    pub data_root: PathBuf,
}

pub fn run(bench: Bench) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match bench {
        Bench::Put(options) => {
            let summary = runtime.block_on(put_load(&options.endpoints, &options.load))?;
            if options.json {
                println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
            } else {
                print!("{}", summary.render());
            }
            Ok(())
        }
        Bench::Compare(options) => runtime.block_on(compare(&options)),
    }
}

/// Latencies of one run, and how long it took.
pub struct Summary {
    latencies: Vec<Duration>,
    total: Duration,
    errors: usize,
    /// CPU seconds the load generator itself used (to show it was not the bottleneck).
    generator_cpu: Duration,
}

impl Summary {
    fn requests_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.total.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn average(&self) -> Duration {
        let sum: Duration = self.latencies.iter().sum();
        sum / self.latencies.len().max(1) as u32
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total_secs": self.total.as_secs_f64(),
            "requests": self.latencies.len(),
            "errors": self.errors,
            "requests_per_sec": self.requests_per_sec(),
            "average_secs": self.average().as_secs_f64(),
            "slowest_secs": self.latencies.last().copied().unwrap_or_default().as_secs_f64(),
            "fastest_secs": self.latencies.first().copied().unwrap_or_default().as_secs_f64(),
            "p50_secs": self.percentile(50.0).as_secs_f64(),
            "p90_secs": self.percentile(90.0).as_secs_f64(),
            "p99_secs": self.percentile(99.0).as_secs_f64(),
            "generator_cpu_secs": self.generator_cpu.as_secs_f64(),
        })
    }

    /// etcd benchmark's layout.
    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let secs = |d: Duration| d.as_secs_f64();
        let avg = self.average();
        let variance = self.latencies.iter().map(|l| (secs(*l) - secs(avg)).powi(2)).sum::<f64>()
            / self.latencies.len().max(1) as f64;
        let _ = writeln!(out, "\nSummary:");
        let _ = writeln!(out, "  Total:\t{:.4} secs.", secs(self.total));
        let _ = writeln!(out, "  Slowest:\t{:.4} secs.", secs(self.latencies.last().copied().unwrap_or_default()));
        let _ = writeln!(out, "  Fastest:\t{:.4} secs.", secs(self.latencies.first().copied().unwrap_or_default()));
        let _ = writeln!(out, "  Average:\t{:.4} secs.", secs(avg));
        let _ = writeln!(out, "  Stddev:\t{:.4} secs.", variance.sqrt());
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.requests_per_sec());
        if self.errors > 0 {
            let _ = writeln!(out, "  Errors:\t{}", self.errors);
        }
        let _ = writeln!(out, "\nResponse time histogram:");
        if let (Some(first), Some(last)) = (self.latencies.first(), self.latencies.last()) {
            let buckets = 10;
            let step = (secs(*last) - secs(*first)) / buckets as f64;
            let mut counts = vec![0usize; buckets + 1];
            for latency in &self.latencies {
                let bucket = if step > 0.0 { ((secs(*latency) - secs(*first)) / step) as usize } else { 0 };
                counts[bucket.min(buckets)] += 1;
            }
            let max = counts.iter().copied().max().unwrap_or(1).max(1);
            for (i, count) in counts.iter().enumerate() {
                let mark = secs(*first) + step * i as f64;
                let bar = "∎".repeat(count * 40 / max);
                let _ = writeln!(out, "  {mark:.4} [{count}]\t|{bar}");
            }
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            let _ = writeln!(out, "  {p}% in {:.4} secs.", secs(self.percentile(p)));
        }
        let _ = writeln!(out, "\nLoad generator CPU: {:.2} s over {:.2} s wall", secs(self.generator_cpu), secs(self.total));
        out
    }
}

fn process_cpu_time() -> Duration {
    // utime + stime of this process, from /proc (Linux only, as is the project).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn connect(endpoints: &[String], conns: usize) -> Result<Vec<KvClient<Channel>>> {
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns.max(1) {
        let url = &endpoints[i % endpoints.len()];
        let channel = Endpoint::from_shared(url.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {url}"))?;
        clients.push(KvClient::new(channel));
    }
    Ok(clients)
}

pub async fn put_load(endpoints: &[String], load: &Load) -> Result<Summary> {
    let conns = connect(endpoints, load.conns).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..load.clients.max(1) {
        let mut kv = conns[client % conns.len()].clone();
        let next = next.clone();
        let load = load.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let value = vec![b'v'; load.val_size];
            let mut rng_state = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= load.total {
                    break;
                }
                let key_number = if load.sequential_keys {
                    n % load.key_space_size.max(1)
                } else {
                    rng_state ^= rng_state << 13;
                    rng_state ^= rng_state >> 7;
                    rng_state ^= rng_state << 17;
                    (rng_state % load.key_space_size.max(1) as u64) as usize
                };
                let mut key = format!("{key_number:0width$}", width = load.key_size).into_bytes();
                key.truncate(load.key_size.max(1));
                let request = PutRequest { key, value: value.clone(), ..Default::default() };
                let sent = Instant::now();
                match kv.put(request).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(load.total);
    let mut errors = 0;
    while let Some(result) = tasks.join_next().await {
        let (mut l, e) = result?;
        latencies.append(&mut l);
        errors += e;
    }
    let total = started.elapsed();
    latencies.sort_unstable();
    Ok(Summary { latencies, total, errors, generator_cpu: process_cpu_time().saturating_sub(cpu_before) })
}

/// A server under test; killed on drop.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut kv) = KvClient::connect(url.to_string()).await {
            if kv.range(RangeRequest { key: b"ready".to_vec(), ..Default::default() }).await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `bin` (etcd or keel: they take the same flags) as a fresh single
/// member in a temp dir under `root`, on free loopback ports.
fn start_server(bin: &Path, root: &Path, name: &str) -> Result<(Server, String)> {
    let dir = tempfile::Builder::new().prefix(&format!("bench-{name}-")).tempdir_in(root)?;
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut command = Command::new(bin);
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--log-level", "error"]);
    if name == "etcd" {
        command.args(["--initial-cluster", &format!("default={peer_url}")]);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    Ok((Server { child, _dir: dir }, url))
}

struct Sample {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    peak_rss_kib: u64,
    generator_cpu: Duration,
    wall: Duration,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn compare(options: &CompareOptions) -> Result<()> {
    let keel_bin = match &options.keel_bin {
        Some(bin) => bin.clone(),
        None => crate::cargo::build_release_bin("keel")?,
    };
    let (mut etcd, mut keel) = (Vec::new(), Vec::new());
    println!(
        "put: total={} clients={} conns={} key-size={} val-size={} key-space={} ({} rounds, A B A B)",
        options.load.total,
        options.load.clients,
        options.load.conns,
        options.load.key_size,
        options.load.val_size,
        options.load.key_space_size,
        options.rounds
    );
    for round in 0..options.rounds {
        for system in ["etcd", "keel"] {
            let bin = if system == "etcd" { &options.etcd_bin } else { &keel_bin };
            let (server, url) = start_server(bin, &options.data_root, system)?;
            wait_ready(&url).await?;
            let summary = put_load(&[url], &options.load).await?;
            if summary.errors > 0 {
                bail!("{system}: {} requests failed", summary.errors);
            }
            let sample = Sample {
                requests_per_sec: summary.requests_per_sec(),
                p50: summary.percentile(50.0),
                p99: summary.percentile(99.0),
                peak_rss_kib: server.peak_rss_kib(),
                generator_cpu: summary.generator_cpu,
                wall: summary.total,
            };
            println!(
                "round {round} {system:4}: {:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  peak RSS {:6} MiB  generator CPU {:.1}s/{:.1}s",
                sample.requests_per_sec,
                sample.p50.as_secs_f64() * 1e3,
                sample.p99.as_secs_f64() * 1e3,
                sample.peak_rss_kib / 1024,
                sample.generator_cpu.as_secs_f64(),
                sample.wall.as_secs_f64(),
            );
            if system == "etcd" { etcd.push(sample) } else { keel.push(sample) }
            drop(server);
        }
    }
    let summarise = |samples: &[Sample]| {
        (
            median(samples.iter().map(|s| s.requests_per_sec).collect()),
            median(samples.iter().map(|s| s.p50.as_secs_f64() * 1e3).collect()),
            median(samples.iter().map(|s| s.p99.as_secs_f64() * 1e3).collect()),
            median(samples.iter().map(|s| s.peak_rss_kib as f64 / 1024.0).collect()),
        )
    };
    let (e, k) = (summarise(&etcd), summarise(&keel));
    println!("\n| system | req/s (median) | p50 ms | p99 ms | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    println!("| etcd | {:.0} | {:.2} | {:.2} | {:.0} |", e.0, e.1, e.2, e.3);
    println!("| keel | {:.0} | {:.2} | {:.2} | {:.0} |", k.0, k.1, k.2, k.3);
    println!("| keel/etcd | {:.2} | {:.2} | {:.2} | {:.2} |", k.0 / e.0, k.1 / e.1, k.2 / e.2, k.3 / e.3);
    Ok(())
}
