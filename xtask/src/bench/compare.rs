//! `bench compare`: each workload against a fresh etcd and a fresh Keel in
//! turn, A B A B (the machines are shared and noisy; alternating spreads the
//! noise over both), then the median of every column and the Keel/etcd ratio.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::doc;
use super::load;
use super::server::Server;
use super::workload::{key, Plan, Workload};

pub const DEFAULT_WORKLOADS: &str = "put-1,put-64,put-256,range-l-256,range-s-256,txn-put-64";

#[derive(Args, Debug)]
pub struct CompareOptions {
    /// Workloads in order, each `<kind>-<clients>`; kinds: put, range-l, range-s, txn-put, txn-mixed.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_WORKLOADS)]
    pub workloads: Vec<WorkloadName>,
    /// Rounds per workload (each round: fresh etcd, then fresh Keel).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Requests per run.
    #[arg(long, default_value_t = 10_000)]
    pub total: usize,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys puts draw from (at random), and txn-put / txn-mixed cycle through.
    #[arg(long, default_value_t = 100_000)]
    pub key_space_size: usize,
    /// Keys written (untimed) before range and txn-mixed runs, so reads find data.
    #[arg(long, default_value_t = 1000)]
    pub prefill: usize,
    /// Keys each range request covers, from the first prefilled key (1: a point
    /// read, as etcd's performance guide measures).
    #[arg(long, default_value_t = 1)]
    pub range_keys: usize,
    /// Puts per txn in txn-put.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    /// Reads per write in txn-mixed.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// Clients sharing one gRPC connection (etcd's guide: 1000 clients over 100).
    #[arg(long, default_value_t = 8)]
    pub clients_per_conn: usize,
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// A prebuilt keel binary; by default `cargo build --release --bin keel`.
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Where the servers keep data (same filesystem for both).
    #[arg(long, default_value = "/var/tmp")]
    pub data_root: PathBuf,
    /// Rewrite the generated results section of docs/benchmarks.md.
    #[arg(long)]
    pub write_doc: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Put,
    RangeLinearizable,
    RangeSerializable,
    TxnPut,
    TxnMixed,
}

/// A workload as named on the command line: `put-64`, `range-s-256`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadName {
    pub kind: Kind,
    pub clients: usize,
}

const KINDS: [(&str, Kind); 5] = [
    ("put", Kind::Put),
    ("range-l", Kind::RangeLinearizable),
    ("range-s", Kind::RangeSerializable),
    ("txn-put", Kind::TxnPut),
    ("txn-mixed", Kind::TxnMixed),
];

impl FromStr for WorkloadName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected <kind>-<clients>, kind one of put, range-l, range-s, txn-put, txn-mixed");
        let (kind, clients) = s.rsplit_once('-').ok_or_else(bad)?;
        let kind = KINDS.iter().find(|(name, _)| *name == kind).map(|(_, kind)| *kind).ok_or_else(bad)?;
        let clients = clients.parse().ok().filter(|&c| c > 0).ok_or_else(bad)?;
        Ok(WorkloadName { kind, clients })
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = KINDS.iter().find(|(_, kind)| *kind == self.kind).map_or("?", |(name, _)| name);
        write!(f, "{kind}-{}", self.clients)
    }
}

impl WorkloadName {
    pub fn plan(&self, options: &CompareOptions) -> Plan {
        let range = |serializable| {
            // [first key, successor of the last) covers exactly the first `range_keys` keys.
            let last = options.range_keys.saturating_sub(1);
            let end = if options.range_keys > 1 { [key(last, options.key_size), vec![0]].concat() } else { Vec::new() };
            Workload::Range { key: key(0, options.key_size), end, serializable, limit: 0, count_only: false }
        };
        let key_space = options.key_space_size;
        let workload = match self.kind {
            Kind::Put => Workload::Put { key_space, sequential: false },
            Kind::RangeLinearizable => range(false),
            Kind::RangeSerializable => range(true),
            Kind::TxnPut => Workload::TxnPut { key_space, ops: options.txn_ops },
            Kind::TxnMixed => {
                Workload::TxnMixed { key_space, rw_ratio: options.rw_ratio, end: Vec::new(), limit: 1000, serializable: false }
            }
        };
        Plan {
            workload,
            total: options.total,
            clients: self.clients,
            conns: self.clients.div_ceil(options.clients_per_conn.max(1)),
            key_size: options.key_size,
            val_size: options.val_size,
        }
    }

    fn prefills(&self) -> bool {
        matches!(self.kind, Kind::RangeLinearizable | Kind::RangeSerializable | Kind::TxnMixed)
    }

    /// One line saying what the workload does, for the output and the doc.
    pub fn describe(&self, options: &CompareOptions) -> String {
        let plan = self.plan(options);
        let clients = match (plan.clients, plan.conns) {
            (1, _) => "1 client".to_owned(),
            (clients, 1) => format!("{clients} clients on 1 connection"),
            (clients, conns) => format!("{clients} clients over {conns} connections"),
        };
        let what = match self.kind {
            Kind::Put => format!("put, keys at random from {}", thousands(options.key_space_size)),
            Kind::RangeLinearizable | Kind::RangeSerializable => format!(
                "range ({}), {} of {} prefilled keys",
                if self.kind == Kind::RangeLinearizable { "linearizable" } else { "serializable" },
                if options.range_keys == 1 { "1 key".to_owned() } else { format!("{} keys", thousands(options.range_keys)) },
                thousands(options.prefill)
            ),
            Kind::TxnPut => format!(
                "txn-put, {} put{} per txn, keys in turn from {}",
                options.txn_ops,
                if options.txn_ops == 1 { "" } else { "s" },
                thousands(options.key_space_size)
            ),
            Kind::TxnMixed => format!(
                "txn-mixed, rw-ratio {}, reads of up to 1,000 keys, {} prefilled",
                options.rw_ratio,
                thousands(options.prefill)
            ),
        };
        format!("{what}; {clients}")
    }
}

/// One server's run of one workload.
struct Sample {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    peak_rss_kib: u64,
    disk_bytes: u64,
    generator_cpu: Duration,
    wall: Duration,
    errors: usize,
    first_error: Option<String>,
}

/// The median of each column over the rounds (each taken on its own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Medians {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_mib: f64,
    pub disk_mib: f64,
    pub generator_cpu_secs: f64,
    pub wall_secs: f64,
}

impl Medians {
    fn of(samples: &[Sample]) -> Medians {
        let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Medians {
            requests_per_sec: m(&|s| s.requests_per_sec),
            p50_ms: m(&|s| s.p50.as_secs_f64() * 1e3),
            p99_ms: m(&|s| s.p99.as_secs_f64() * 1e3),
            peak_rss_mib: m(&|s| s.peak_rss_kib as f64 / 1024.0),
            disk_mib: m(&|s| s.disk_bytes as f64 / (1024.0 * 1024.0)),
            generator_cpu_secs: m(&|s| s.generator_cpu.as_secs_f64()),
            wall_secs: m(&|s| s.wall.as_secs_f64()),
        }
    }
}

/// A workload's outcome, as the table and the doc show it.
pub struct WorkloadResult {
    pub name: WorkloadName,
    pub description: String,
    pub etcd: Medians,
    pub keel: Medians,
    /// Failed requests over all rounds, and the first error seen, per system.
    pub etcd_errors: (usize, Option<String>),
    pub keel_errors: (usize, Option<String>),
}

impl WorkloadResult {
    /// The markdown table, then the generator's cost and any errors.
    pub fn render(&self) -> String {
        let mut out = markdown_table(&self.etcd, &self.keel);
        let _ = writeln!(
            out,
            "\nLoad generator CPU (median): {:.1} s per {:.1} s run against etcd, {:.1} s per {:.1} s against Keel.",
            self.etcd.generator_cpu_secs, self.etcd.wall_secs, self.keel.generator_cpu_secs, self.keel.wall_secs
        );
        for (system, (count, first)) in [("etcd", &self.etcd_errors), ("Keel", &self.keel_errors)] {
            if *count > 0 {
                let _ = writeln!(
                    out,
                    "\n**{count} requests failed against {system}** (first: `{}`).",
                    first.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }
}

/// Medians of etcd and Keel side by side, and Keel's as a multiple of etcd's.
pub fn markdown_table(etcd: &Medians, keel: &Medians) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| system | req/s | p50 ms | p99 ms | peak RSS MiB | disk MiB |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (system, m) in [("etcd", etcd), ("keel", keel)] {
        let _ = writeln!(
            out,
            "| {system} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} |",
            m.requests_per_sec, m.p50_ms, m.p99_ms, m.peak_rss_mib, m.disk_mib
        );
    }
    let ratio = |k: f64, e: f64| if e > 0.0 { format!("{:.2}", k / e) } else { "-".to_owned() };
    let _ = writeln!(
        out,
        "| keel/etcd | {} | {} | {} | {} | {} |",
        ratio(keel.requests_per_sec, etcd.requests_per_sec),
        ratio(keel.p50_ms, etcd.p50_ms),
        ratio(keel.p99_ms, etcd.p99_ms),
        ratio(keel.peak_rss_mib, etcd.peak_rss_mib),
        ratio(keel.disk_mib, etcd.disk_mib),
    );
    out
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// 100000 -> "100,000".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = digits[..head].to_owned();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

fn round_line(round: usize, system: &str, s: &Sample) -> String {
    let mut line = format!(
        "round {round} {system:4}: {:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  peak RSS {:4.0} MiB  disk {:6.1} MiB  generator CPU {:.2}s/{:.2}s",
        s.requests_per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.peak_rss_kib as f64 / 1024.0,
        s.disk_bytes as f64 / (1024.0 * 1024.0),
        s.generator_cpu.as_secs_f64(),
        s.wall.as_secs_f64(),
    );
    if s.errors > 0 {
        let _ = write!(line, "  ERRORS {} (first: {})", s.errors, s.first_error.as_deref().unwrap_or("?"));
    }
    line
}

pub async fn run(options: &CompareOptions) -> Result<()> {
    if options.rounds == 0 || options.total == 0 {
        bail!("--rounds and --total must be positive");
    }
    if options.range_keys == 0 || options.range_keys > options.prefill {
        bail!("--range-keys must be between 1 and --prefill ({})", options.prefill);
    }
    for name in &options.workloads {
        name.plan(options).validate().with_context(|| format!("workload {name}"))?;
    }
    let keel_bin = match &options.keel_bin {
        Some(bin) => bin.clone(),
        None => crate::cargo::build_release_bin("keel")?,
    };
    let mut rounds_log = String::new();
    let mut results = Vec::new();
    for name in &options.workloads {
        let plan = name.plan(options);
        let header = format!(
            "{name}: {} ({} requests, {}-byte keys, {}-byte values, {} round{}, A B A B)",
            name.describe(options),
            thousands(plan.total),
            plan.key_size,
            plan.val_size,
            options.rounds,
            if options.rounds == 1 { "" } else { "s" },
        );
        println!("\n{header}");
        let _ = writeln!(rounds_log, "{header}");
        let (mut etcd, mut keel) = (Vec::new(), Vec::new());
        for round in 0..options.rounds {
            for (system, bin) in [("etcd", options.etcd_bin.as_path()), ("keel", keel_bin.as_path())] {
                let (sample, complaints) = measure(bin, &options.data_root, system, name, &plan, options).await?;
                let line = round_line(round, system, &sample);
                println!("{line}");
                let _ = writeln!(rounds_log, "{line}");
                for complaint in complaints.iter().take(3) {
                    println!("    {system} log: {complaint}");
                }
                if system == "etcd" { etcd.push(sample) } else { keel.push(sample) }
            }
        }
        let errors = |samples: &[Sample]| {
            (samples.iter().map(|s| s.errors).sum(), samples.iter().find_map(|s| s.first_error.clone()))
        };
        let result = WorkloadResult {
            name: *name,
            description: name.describe(options),
            etcd: Medians::of(&etcd),
            keel: Medians::of(&keel),
            etcd_errors: errors(&etcd),
            keel_errors: errors(&keel),
        };
        println!("\n{}", result.render());
        rounds_log.push('\n');
        results.push(result);
    }
    if options.write_doc {
        let path = crate::cargo::workspace_root().join("docs/benchmarks.md");
        let facts = doc::Facts::gather(&options.etcd_bin, &keel_bin, &options.data_root);
        let section = doc::results_section(&facts, options, &results, &rounds_log);
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(&path, doc::replace_results(&old, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One run on a fresh server; also returns the lines of its log that complain.
async fn measure(
    bin: &Path,
    root: &Path,
    system: &str,
    name: &WorkloadName,
    plan: &Plan,
    options: &CompareOptions,
) -> Result<(Sample, Vec<String>)> {
    let mut server = Server::start(bin, root, system)?;
    server.wait_ready().await?;
    let endpoints = [server.url.clone()];
    if name.prefills() {
        load::prefill(&endpoints, options.prefill, options.key_size, options.val_size)
            .await
            .with_context(|| system.to_owned())?;
    }
    let outcome = load::run(&endpoints, plan).await.with_context(|| format!("{system}: {name}"))?;
    if let Some(status) = server.exited() {
        bail!("{system} exited during {name} ({status})");
    }
    let all = outcome.combined();
    let sample = Sample {
        requests_per_sec: all.requests_per_sec(),
        p50: all.percentile(50.0),
        p99: all.percentile(99.0),
        peak_rss_kib: server.peak_rss_kib(),
        disk_bytes: server.disk_bytes(),
        generator_cpu: all.generator_cpu,
        wall: all.total,
        errors: all.errors,
        first_error: outcome.first_error,
    };
    Ok((sample, server.log_complaints()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: CompareOptions,
    }

    fn options(args: &[&str]) -> CompareOptions {
        Cli::parse_from(std::iter::once("compare").chain(args.iter().copied())).options
    }

    #[test]
    fn workload_names_round_trip() {
        for name in DEFAULT_WORKLOADS.split(',').chain(["txn-mixed-16"]) {
            assert_eq!(name.parse::<WorkloadName>().unwrap().to_string(), name);
        }
        let parsed: WorkloadName = "range-s-256".parse().unwrap();
        assert_eq!(parsed, WorkloadName { kind: Kind::RangeSerializable, clients: 256 });
        for bad in ["put", "put-0", "range-256", "get-1", "put-x", ""] {
            assert!(bad.parse::<WorkloadName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_follow_the_options() {
        let options = options(&["--range-keys", "10", "--clients-per-conn", "8"]);
        assert_eq!(options.workloads.len(), 6);
        let plan = "range-s-256".parse::<WorkloadName>().unwrap().plan(&options);
        assert_eq!((plan.clients, plan.conns), (256, 32));
        let Workload::Range { key, end, serializable, .. } = plan.workload else { panic!() };
        assert_eq!((key, end, serializable), (b"00000000".to_vec(), b"00000009\0".to_vec(), true));
        let plan = "put-1".parse::<WorkloadName>().unwrap().plan(&options);
        assert_eq!((plan.clients, plan.conns, plan.val_size), (1, 1, 256));
        let point = "range-l-4".parse::<WorkloadName>().unwrap().plan(&self::options(&[]));
        let Workload::Range { end, serializable, .. } = point.workload else { panic!() };
        assert!(end.is_empty() && !serializable);
    }

    #[test]
    fn descriptions_read_as_prose() {
        let options = options(&[]);
        let describe = |name: &str| name.parse::<WorkloadName>().unwrap().describe(&options);
        assert_eq!(describe("put-1"), "put, keys at random from 100,000; 1 client");
        assert_eq!(
            describe("range-l-256"),
            "range (linearizable), 1 key of 1,000 prefilled keys; 256 clients over 32 connections"
        );
        assert_eq!(describe("txn-put-4"), "txn-put, 1 put per txn, keys in turn from 100,000; 4 clients on 1 connection");
    }

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
        assert_eq!((thousands(0), thousands(999), thousands(1000), thousands(1234567)), ("0".into(), "999".into(), "1,000".into(), "1,234,567".into()));
    }

    #[test]
    fn table_has_a_ratio_row() {
        let m = |rps, p50, rss, disk| Medians {
            requests_per_sec: rps,
            p50_ms: p50,
            p99_ms: p50 * 2.0,
            peak_rss_mib: rss,
            disk_mib: disk,
            generator_cpu_secs: 1.0,
            wall_secs: 2.0,
        };
        let table = markdown_table(&m(1000.0, 2.0, 50.0, 64.0), &m(1500.0, 1.0, 25.0, 0.0));
        assert_eq!(
            table,
            "| system | req/s | p50 ms | p99 ms | peak RSS MiB | disk MiB |\n\
             |---|---:|---:|---:|---:|---:|\n\
             | etcd | 1000 | 2.00 | 4.00 | 50 | 64.0 |\n\
             | keel | 1500 | 1.00 | 2.00 | 25 | 0.0 |\n\
             | keel/etcd | 1.50 | 0.50 | 0.50 | 0.50 | 0.00 |\n"
        );
        assert!(markdown_table(&m(0.0, 0.0, 0.0, 0.0), &m(1.0, 1.0, 1.0, 1.0)).contains("| keel/etcd | - | - |"));
    }
}
