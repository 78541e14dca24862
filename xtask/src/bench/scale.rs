//! `bench scale`: a million keys in a fresh etcd and a fresh Keel, in turn.
//! What it costs to load them (time), to hold them (RSS, disk), and how long
//! a linearizable Range of one 1,000-key page takes once they are there.
//!
//! Unlike etcd's `benchmark put`, whose one value is repeated for every key,
//! every key gets its own random value: a store that compresses its data
//! must not look smaller on disk than it would with real data.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use keel_proto::etcdserverpb::RangeRequest;

use super::compare::{median, thousands};
use super::doc;
use super::load::{self, Tally};
use super::server::{Server, Systems};
use super::workload::{check_key_size, key, Class, Reported, Rng};

#[derive(Args, Debug)]
pub struct ScaleOptions {
    /// Keys loaded (sequential: key i is i, zero-padded to --key-size).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes; every key's value is random and its own.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Concurrent put clients while loading.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    #[arg(long, default_value_t = 8)]
    pub clients_per_conn: usize,
    /// Keys per page read (a linearizable Range from a random key, with this limit).
    #[arg(long, default_value_t = 1000)]
    pub page_keys: usize,
    /// Page reads after loading, one at a time.
    #[arg(long, default_value_t = 500)]
    pub pages: usize,
    /// Rounds (each: fresh etcd, then fresh Keel).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    #[command(flatten)]
    pub systems: Systems,
    /// Rewrite the scale section of docs/benchmarks.md.
    #[arg(long)]
    pub write_doc: bool,
}

/// One system's run.
struct Sample {
    load: Duration,
    load_p99: Duration,
    peak_rss_kib: u64,
    rss_kib: u64,
    disk_bytes: u64,
    page_p50: Duration,
    page_p99: Duration,
    errors: usize,
    first_error: Option<String>,
}

impl Sample {
    fn line(&self, round: usize, system: &str, keys: usize) -> String {
        let mut line = format!(
            "round {round} {system:4}: load {:6.1} s ({:6.0} puts/s, p99 {:6.1} ms)  peak RSS {:5.0} MiB  RSS after {:5.0} MiB  disk {:6.0} MiB  page p50 {:6.2} ms  p99 {:6.2} ms",
            self.load.as_secs_f64(),
            keys as f64 / self.load.as_secs_f64(),
            ms(self.load_p99),
            mib(self.peak_rss_kib * 1024),
            mib(self.rss_kib * 1024),
            mib(self.disk_bytes),
            ms(self.page_p50),
            ms(self.page_p99),
        );
        if self.errors > 0 {
            let _ = write!(line, "  ERRORS {} (first: {})", self.errors, self.first_error.as_deref().unwrap_or("?"));
        }
        line
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The medians of one system's rounds, as the table shows them.
#[derive(Clone, Copy)]
struct Row {
    load_secs: f64,
    peak_rss_mib: f64,
    rss_mib: f64,
    disk_mib: f64,
    page_p50_ms: f64,
    page_p99_ms: f64,
}

impl Row {
    fn of(samples: &[Sample]) -> Row {
        let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Row {
            load_secs: m(&|s| s.load.as_secs_f64()),
            peak_rss_mib: m(&|s| mib(s.peak_rss_kib * 1024)),
            rss_mib: m(&|s| mib(s.rss_kib * 1024)),
            disk_mib: m(&|s| mib(s.disk_bytes)),
            page_p50_ms: m(&|s| ms(s.page_p50)),
            page_p99_ms: m(&|s| ms(s.page_p99)),
        }
    }

    fn columns(&self) -> [f64; 6] {
        [self.load_secs, self.peak_rss_mib, self.rss_mib, self.disk_mib, self.page_p50_ms, self.page_p99_ms]
    }
}

fn table(keys: usize, etcd: &Row, keel: &Row) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| system | load s | puts/s | peak RSS MiB | RSS after MiB | disk MiB | page p50 ms | page p99 ms |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (system, row) in [("etcd", etcd), ("keel", keel)] {
        let [load, peak, rss, disk, p50, p99] = row.columns();
        let _ = writeln!(
            out,
            "| {system} | {load:.1} | {:.0} | {peak:.0} | {rss:.0} | {disk:.0} | {p50:.2} | {p99:.2} |",
            keys as f64 / load
        );
    }
    let ratios: Vec<String> = etcd
        .columns()
        .iter()
        .zip(keel.columns())
        .map(|(e, k)| if *e > 0.0 { format!("{:.2}", k / e) } else { "-".to_owned() })
        .collect();
    let puts = if etcd.load_secs > 0.0 && keel.load_secs > 0.0 {
        format!("{:.2}", etcd.load_secs / keel.load_secs)
    } else {
        "-".to_owned()
    };
    let _ = writeln!(
        out,
        "| keel/etcd | {} | {puts} | {} | {} | {} | {} | {} |",
        ratios[0], ratios[1], ratios[2], ratios[3], ratios[4], ratios[5]
    );
    out
}

pub async fn run(options: &ScaleOptions) -> Result<()> {
    if options.rounds == 0 || options.keys == 0 || options.clients == 0 {
        bail!("--rounds, --keys and --clients must be positive");
    }
    if options.page_keys == 0 || options.page_keys > options.keys {
        bail!("--page-keys must be between 1 and --keys ({})", options.keys);
    }
    check_key_size(options.keys, options.key_size)?;
    let keel_bin = options.systems.keel_bin()?;
    let header = format!(
        "scale: {} keys of {} bytes with random {}-byte values, loaded by {} clients; then {} linearizable \
         reads of a {}-key page from a random key, one at a time ({} round{}, A B A B)",
        thousands(options.keys),
        options.key_size,
        options.val_size,
        options.clients,
        thousands(options.pages),
        thousands(options.page_keys),
        options.rounds,
        if options.rounds == 1 { "" } else { "s" },
    );
    println!("{header}");
    let mut rounds_log = String::new();
    let (mut etcd, mut keel) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        for (system, bin) in [("etcd", options.systems.etcd_bin.as_path()), ("keel", keel_bin.as_path())] {
            let sample = measure(bin, system, options).await?;
            let line = sample.line(round, system, options.keys);
            println!("{line}");
            let _ = writeln!(rounds_log, "{line}");
            if system == "etcd" {
                etcd.push(sample)
            } else {
                keel.push(sample)
            }
        }
    }
    let rendered = table(options.keys, &Row::of(&etcd), &Row::of(&keel));
    println!("\n{rendered}");
    if options.write_doc {
        let path = crate::cargo::workspace_root().join("docs/benchmarks.md");
        let facts = doc::Facts::gather(&options.systems.etcd_bin, &keel_bin, &options.systems.data_root);
        let mut section = format!("{}\n\n{header}.\n\n", facts.describe(&options.systems.data_root));
        let _ = writeln!(section, "```sh\n{}\n```\n", facts.command());
        section.push_str(&rendered);
        let _ = writeln!(section, "\n```\n{}```", rounds_log);
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(&path, doc::replace_section(&old, doc::SCALE_MARKERS, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let errors: usize = etcd.iter().chain(&keel).map(|s| s.errors).sum();
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

async fn measure(bin: &std::path::Path, system: &str, options: &ScaleOptions) -> Result<Sample> {
    let mut server = Server::start(bin, &options.systems.data_root, system)?;
    server.wait_ready().await?;
    let endpoints = [server.url.clone()];
    // The clock runs from the first put (connections are made before it).
    let loaded = load::fill(
        &endpoints,
        load::FillShape {
            keys: options.keys,
            clients: options.clients,
            clients_per_conn: options.clients_per_conn,
            key_size: options.key_size,
            val_size: options.val_size,
        },
    )
    .await
    .with_context(|| format!("{system}: loading"))?;
    let load = loaded.writes.total;
    let pages = read_pages(&endpoints, options).await.with_context(|| format!("{system}: page reads"))?;
    if let Some(status) = server.exited() {
        bail!("{system} exited during the scale run ({status})");
    }
    let writes = loaded.writes;
    Ok(Sample {
        load,
        load_p99: writes.percentile(99.0),
        peak_rss_kib: server.peak_rss_kib(),
        rss_kib: server.rss_kib(),
        disk_bytes: server.disk_bytes(),
        page_p50: pages.reads.percentile(50.0),
        page_p99: pages.reads.percentile(99.0),
        errors: writes.errors + pages.reads.errors,
        first_error: loaded.first_error.or(pages.first_error),
    })
}

/// `pages` linearizable Ranges of `page_keys` keys from a random key, one at a time.
async fn read_pages(endpoints: &[String], options: &ScaleOptions) -> Result<load::Outcome> {
    let mut kv = load::connect(endpoints, 1).await?.remove(0);
    let mut rng = Rng::new(7);
    let mut tally = Tally::with_capacity(options.pages);
    let started = Instant::now();
    for _ in 0..options.pages {
        let first = rng.below(options.keys - options.page_keys + 1);
        let request = RangeRequest {
            key: key(first, options.key_size),
            range_end: vec![0],
            limit: options.page_keys as i64,
            ..Default::default()
        };
        let sent = Instant::now();
        let result = match kv.range(request).await {
            Ok(answer) if answer.get_ref().kvs.len() == options.page_keys => Ok(()),
            Ok(answer) => Err(tonic::Status::data_loss(format!(
                "a page from key {first} held {} keys, not {}",
                answer.get_ref().kvs.len(),
                options.page_keys
            ))),
            Err(status) => Err(status),
        };
        tally.record(Class::Read, sent.elapsed(), result);
    }
    Ok(tally.into_outcome(Reported::Reads, started.elapsed(), Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_divides_keel_by_etcd() {
        let etcd = Row {
            load_secs: 100.0,
            peak_rss_mib: 1000.0,
            rss_mib: 800.0,
            disk_mib: 600.0,
            page_p50_ms: 4.0,
            page_p99_ms: 8.0,
        };
        let keel = Row {
            load_secs: 50.0,
            peak_rss_mib: 400.0,
            rss_mib: 200.0,
            disk_mib: 300.0,
            page_p50_ms: 2.0,
            page_p99_ms: 2.0,
        };
        let table = table(1_000_000, &etcd, &keel);
        assert!(table.contains("| etcd | 100.0 | 10000 | 1000 | 800 | 600 | 4.00 | 8.00 |"), "{table}");
        assert!(table.contains("| keel/etcd | 0.50 | 2.00 | 0.40 | 0.25 | 0.50 | 0.50 | 0.25 |"), "{table}");
    }
}
