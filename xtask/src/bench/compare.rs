//! `bench compare`: each workload against a fresh etcd and a fresh Keel in
//! turn, A B A B (the machines are shared and noisy; alternating spreads the
//! noise over both), then the median of every column and the Keel/etcd ratio.
//! A watch run that loses, repeats or reorders an event fails the comparison
//! (after every table is printed, and written with `--write-doc`).

use std::fmt::{self, Write as _};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::chart;
use super::delivery::Delivery;
use super::dial;
use super::doc;
use super::lease::{self, LeasePlan, LeaseWorkload};
use super::load::{self, Outcome};
use super::proxy;
use super::server::{Server, Systems};
use super::stall;
use super::v2;
use super::watch::{self, WatchOutcome, WatchPlan, Watched};
use super::workload::{key, Plan, Workload};

pub const DEFAULT_WORKLOADS: &str = "put-1,put-64,put-256,range-l-256,range-s-256,txn-put-64,\
    watch-10x100,watch-latency-10x10,watch-fanout-100x10,slow-watcher-64,lease-keepalive-64,lease-grant-revoke-64";

/// Put clients of a fan-out run: enough to keep the rate while puts slow down.
const FANOUT_PUT_CLIENTS: usize = 16;

#[derive(Args, Debug)]
pub struct CompareOptions {
    /// Workloads in order, each `<kind>-<clients>`, or for watch kinds
    /// `<kind>-<streams>x<watchers per stream>`; kinds: put, range-l, range-s,
    /// txn-put, txn-mixed, slow-watcher, lease-keepalive, lease-grant-revoke;
    /// watch, watch-latency, watch-fanout; json-put, json-range (through
    /// the JSON gateway, one HTTP connection per client); v2-set, v2-get
    /// (through the v2 keys API, servers started with --enable-v2, one HTTP
    /// connection per client).
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
    /// Clients (or watch streams) sharing one gRPC connection (etcd's guide: 1000 clients over 100).
    #[arg(long, default_value_t = 8)]
    pub clients_per_conn: usize,
    /// Puts in watch and watch-latency runs; every watcher watches the key they write.
    #[arg(long, default_value_t = 1000)]
    pub watch_puts: usize,
    /// Puts per second in watch-latency runs (watch runs put as fast as one client goes).
    #[arg(long, default_value_t = 100)]
    pub watch_put_rate: usize,
    /// Puts per second in watch-fanout runs (every watcher watches the prefix they write under).
    #[arg(long, default_value_t = 1000)]
    pub fanout_put_rate: usize,
    /// Seconds of puts in watch-fanout runs.
    #[arg(long, default_value_t = 2)]
    pub fanout_secs: usize,
    /// Seconds a watch run waits without any event, after its last put, before
    /// the events still expected count as missing.
    #[arg(long, default_value_t = 10)]
    pub watch_idle_timeout: u64,
    /// TTL of the leases granted in lease runs, in seconds.
    #[arg(long, default_value_t = 100)]
    pub lease_ttl: i64,
    #[command(flatten)]
    pub systems: Systems,
    /// Rewrite the generated results section of docs/benchmarks.md (single
    /// members only: that section is the one-member table).
    #[arg(long)]
    pub write_doc: bool,
    /// Members per cluster, for both systems (peak RSS and disk are summed
    /// over the members; clients spread over all of them).
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// TLS on every client and peer URL of both systems (one self-signed
    /// certificate; the load generator skips verification).
    #[arg(long)]
    pub tls: bool,
    /// Auth on in both systems (simple tokens): every request carries the
    /// token of a user that is not root, with READWRITE on every key, so the
    /// permission checks run. One member only (simple tokens are per member).
    #[arg(long)]
    pub auth: bool,
    /// Clients connect through a gRPC proxy in front of each cluster: `etcd
    /// grpc-proxy start` for etcd, `keel grpc-proxy start` for Keel, one
    /// process with every member as an endpoint. The proxy's peak RSS is
    /// added to the members'; each round also reports the watch and
    /// keep-alive streams the members were opened and the most watchers they
    /// held (from their `/metrics`). gRPC workloads only, without --tls or --auth.
    #[arg(long)]
    pub proxy: bool,
    /// With --proxy: Keel's proxy caches every range (`--cache-prefix=`),
    /// as etcd's proxy always does for serializable ones.
    #[arg(long, requires = "proxy")]
    pub proxy_cache: bool,
}

impl CompareOptions {
    /// "over TLS, with auth", "with auth", ...; empty when neither is on.
    pub fn security(&self) -> &'static str {
        match (self.tls, self.auth) {
            (false, false) => "",
            (true, false) => "over TLS",
            (false, true) => "with auth",
            (true, true) => "over TLS, with auth",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Put,
    RangeLinearizable,
    RangeSerializable,
    TxnPut,
    TxnMixed,
    Watch,
    WatchLatency,
    WatchFanout,
    SlowWatcher,
    LeaseKeepalive,
    LeaseGrantRevoke,
    /// Put through the JSON gateway (`POST /v3/kv/put`).
    JsonPut,
    /// Linearizable range through the JSON gateway (`POST /v3/kv/range`).
    JsonRange,
    /// Set through the v2 keys API (`PUT /v2/keys/<key>`).
    V2Set,
    /// Read of one key through the v2 keys API (`GET /v2/keys/<key>`).
    V2Get,
}

impl Kind {
    /// Named `<kind>-<streams>x<watchers per stream>`.
    fn is_watch(self) -> bool {
        matches!(self, Kind::Watch | Kind::WatchLatency | Kind::WatchFanout)
    }
}

/// A workload as named on the command line: `put-64`, `range-s-256`, `watch-10x100`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadName {
    pub kind: Kind,
    /// Clients, or for watch kinds streams.
    pub clients: usize,
    /// Watch kinds only.
    pub watchers_per_stream: Option<usize>,
}

const KINDS: [(&str, Kind); 15] = [
    ("put", Kind::Put),
    ("range-l", Kind::RangeLinearizable),
    ("range-s", Kind::RangeSerializable),
    ("txn-put", Kind::TxnPut),
    ("txn-mixed", Kind::TxnMixed),
    ("watch", Kind::Watch),
    ("watch-latency", Kind::WatchLatency),
    ("watch-fanout", Kind::WatchFanout),
    ("slow-watcher", Kind::SlowWatcher),
    ("lease-keepalive", Kind::LeaseKeepalive),
    ("lease-grant-revoke", Kind::LeaseGrantRevoke),
    ("json-put", Kind::JsonPut),
    ("json-range", Kind::JsonRange),
    ("v2-set", Kind::V2Set),
    ("v2-get", Kind::V2Get),
];

impl FromStr for WorkloadName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected <kind>-<clients>, kind one of put, range-l, range-s, txn-put, txn-mixed, slow-watcher, \
                 lease-keepalive, lease-grant-revoke, json-put, json-range, v2-set, v2-get; or \
                 <kind>-<streams>x<watchers per stream>, kind one of watch, watch-latency, watch-fanout"
            )
        };
        let (kind, count) = s.rsplit_once('-').ok_or_else(bad)?;
        let kind = KINDS.iter().find(|(name, _)| *name == kind).map(|(_, kind)| *kind).ok_or_else(bad)?;
        let positive = |n: &str| n.parse().ok().filter(|&n: &usize| n > 0).ok_or_else(bad);
        let (clients, watchers_per_stream) = if kind.is_watch() {
            let (streams, per_stream) = count.split_once('x').ok_or_else(bad)?;
            (positive(streams)?, Some(positive(per_stream)?))
        } else {
            (positive(count)?, None)
        };
        Ok(WorkloadName { kind, clients, watchers_per_stream })
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = KINDS.iter().find(|(_, kind)| *kind == self.kind).map_or("?", |(name, _)| name);
        match self.watchers_per_stream {
            Some(per_stream) => write!(f, "{kind}-{}x{per_stream}", self.clients),
            None => write!(f, "{kind}-{}", self.clients),
        }
    }
}

/// What one run of a workload does.
#[derive(Clone, Debug)]
pub enum Job {
    Kv(Plan),
    /// A KV plan sent through the JSON gateway, one HTTP connection per client.
    Json(Plan),
    /// A put or point-range plan sent through the v2 keys API, one HTTP
    /// connection per client.
    V2(Plan),
    Watch(WatchPlan),
    /// The put plan, run with one stalled watcher (and, on other servers, without).
    SlowWatcher(Plan),
    Lease(LeasePlan),
}

impl Job {
    fn validate(&self) -> Result<()> {
        match self {
            Job::Kv(plan) | Job::Json(plan) | Job::V2(plan) | Job::SlowWatcher(plan) => plan.validate(),
            Job::Watch(plan) => plan.validate(),
            Job::Lease(plan) => plan.validate(),
        }
    }
}

impl WorkloadName {
    pub fn job(&self, options: &CompareOptions) -> Job {
        let range = |serializable| {
            // [first key, successor of the last) covers exactly the first `range_keys` keys.
            let last = options.range_keys.saturating_sub(1);
            let end = if options.range_keys > 1 { [key(last, options.key_size), vec![0]].concat() } else { Vec::new() };
            Workload::Range { key: key(0, options.key_size), end, serializable, limit: 0, count_only: false }
        };
        let key_space = options.key_space_size;
        let conns = self.clients.div_ceil(options.clients_per_conn.max(1));
        let kv = |workload| Plan {
            workload,
            total: options.total,
            clients: self.clients,
            conns,
            key_size: options.key_size,
            val_size: options.val_size,
        };
        let watch = |watched, puts, put_rate, put_clients| {
            Job::Watch(WatchPlan {
                streams: self.clients,
                watchers_per_stream: self.watchers_per_stream.unwrap_or(1),
                conns,
                watched,
                puts,
                put_rate,
                put_clients,
                key_size: options.key_size,
                val_size: options.val_size,
                idle_timeout: Duration::from_secs(options.watch_idle_timeout),
            })
        };
        let lease = |workload, total| {
            Job::Lease(LeasePlan {
                workload,
                total,
                clients: self.clients,
                conns,
                ttl: options.lease_ttl,
                live_leases: 0,
            })
        };
        match self.kind {
            Kind::Put => Job::Kv(kv(Workload::Put { key_space, sequential: false })),
            Kind::RangeLinearizable => Job::Kv(kv(range(false))),
            Kind::RangeSerializable => Job::Kv(kv(range(true))),
            Kind::TxnPut => Job::Kv(kv(Workload::TxnPut { key_space, ops: options.txn_ops })),
            Kind::TxnMixed => Job::Kv(kv(Workload::TxnMixed {
                key_space,
                rw_ratio: options.rw_ratio,
                end: Vec::new(),
                limit: 1000,
                serializable: false,
            })),
            Kind::Watch => watch(Watched::Keys(1), options.watch_puts, 0, 1),
            Kind::WatchLatency => watch(Watched::Keys(1), options.watch_puts, options.watch_put_rate, 1),
            Kind::WatchFanout => {
                let puts = options.fanout_put_rate * options.fanout_secs;
                watch(Watched::Prefix(key_space), puts, options.fanout_put_rate, FANOUT_PUT_CLIENTS)
            }
            Kind::SlowWatcher => Job::SlowWatcher(kv(Workload::Put { key_space, sequential: false })),
            Kind::LeaseKeepalive => lease(LeaseWorkload::KeepAlive, options.total),
            // `total` counts requests everywhere: a lease is two of them.
            Kind::LeaseGrantRevoke => lease(LeaseWorkload::GrantRevoke, options.total.div_ceil(2)),
            Kind::JsonPut => {
                Job::Json(Plan { conns: self.clients, ..kv(Workload::Put { key_space, sequential: false }) })
            }
            Kind::JsonRange => Job::Json(Plan { conns: self.clients, ..kv(range(false)) }),
            Kind::V2Set => Job::V2(Plan { conns: self.clients, ..kv(Workload::Put { key_space, sequential: false }) }),
            // v2 reads a key, never a range: always the first prefilled key,
            // whatever --range-keys says. A plain GET is a local read on both
            // systems, so which consistency the Range names does not matter.
            Kind::V2Get => Job::V2(Plan {
                conns: self.clients,
                ..kv(Workload::Range {
                    key: key(0, options.key_size),
                    end: Vec::new(),
                    serializable: false,
                    limit: 0,
                    count_only: false,
                })
            }),
        }
    }

    fn prefills(&self) -> bool {
        matches!(
            self.kind,
            Kind::RangeLinearizable | Kind::RangeSerializable | Kind::TxnMixed | Kind::JsonRange | Kind::V2Get
        )
    }

    /// Whether the servers must serve the v2 API (off otherwise, so that the
    /// other workloads run on the servers' defaults).
    fn needs_v2(&self) -> bool {
        matches!(self.kind, Kind::V2Set | Kind::V2Get)
    }

    /// Whether the workload goes through the JSON gateway.
    fn is_json(&self) -> bool {
        matches!(self.kind, Kind::JsonPut | Kind::JsonRange)
    }

    /// What each run's rate column counts.
    fn unit(&self) -> &'static str {
        if self.kind.is_watch() {
            "events/s"
        } else {
            "req/s"
        }
    }

    /// How much one run does: "10,000 requests", "1,000 puts, 100,000 events".
    pub fn amount(&self, options: &CompareOptions) -> String {
        match self.job(options) {
            Job::Kv(plan) | Job::Json(plan) | Job::V2(plan) => format!("{} requests", thousands(plan.total)),
            Job::SlowWatcher(plan) => format!("{} puts per run", thousands(plan.total)),
            Job::Lease(plan) => format!("{} requests", thousands(plan.requests())),
            Job::Watch(plan) => format!("{} puts, {} events", thousands(plan.puts), thousands(plan.expected_events())),
        }
    }

    /// One line saying what the workload does, for the output and the doc.
    pub fn describe(&self, options: &CompareOptions) -> String {
        let job = self.job(options);
        let (clients, conns) = match &job {
            Job::Kv(plan) | Job::Json(plan) | Job::V2(plan) | Job::SlowWatcher(plan) => (plan.clients, plan.conns),
            Job::Lease(plan) => (plan.clients, plan.conns),
            Job::Watch(plan) => (plan.streams, plan.conns),
        };
        let clients = match (clients, conns) {
            (1, _) => "1 client".to_owned(),
            (clients, 1) => format!("{clients} clients on 1 connection"),
            (clients, conns) => format!("{clients} clients over {conns} connections"),
        };
        let what = match self.kind {
            Kind::Put => format!("put, keys at random from {}", thousands(options.key_space_size)),
            Kind::RangeLinearizable | Kind::RangeSerializable => format!(
                "range ({}), {} of {} prefilled keys",
                if self.kind == Kind::RangeLinearizable { "linearizable" } else { "serializable" },
                if options.range_keys == 1 {
                    "1 key".to_owned()
                } else {
                    format!("{} keys", thousands(options.range_keys))
                },
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
            Kind::SlowWatcher => format!(
                "put, keys at random from {}, beside one stalled watch stream (never read) on every key",
                thousands(options.key_space_size)
            ),
            Kind::LeaseKeepalive => "lease-keepalive, one lease and one keep-alive stream per client".to_owned(),
            Kind::LeaseGrantRevoke => format!("lease grant (TTL {} s), then its revoke", options.lease_ttl),
            Kind::JsonPut => format!("JSON gateway put, keys at random from {}", thousands(options.key_space_size)),
            Kind::JsonRange => {
                format!("JSON gateway range (linearizable), 1 key of {} prefilled keys", thousands(options.prefill))
            }
            Kind::V2Set => format!("v2 set, keys at random from {}", thousands(options.key_space_size)),
            Kind::V2Get => {
                format!("v2 get (local read), 1 key of {} keys set first through v2", thousands(options.prefill))
            }
            Kind::Watch | Kind::WatchLatency | Kind::WatchFanout => match &job {
                Job::Watch(plan) => return self.describe_watch(plan, options),
                _ => unreachable!("watch kinds plan watch jobs"),
            },
        };
        format!("{what}; {clients}")
    }

    fn describe_watch(&self, plan: &WatchPlan, options: &CompareOptions) -> String {
        let (kind, puts) = match self.kind {
            Kind::Watch => ("watch", format!("{} puts from 1 client, as fast as it goes", thousands(plan.puts))),
            Kind::WatchLatency => {
                ("watch-latency", format!("{} puts at {}/s", thousands(plan.puts), thousands(plan.put_rate)))
            }
            _ => (
                "watch fan-out",
                format!("{} puts/s for {} s to keys under it", thousands(plan.put_rate), options.fanout_secs),
            ),
        };
        let conns = match plan.conns {
            1 => "1 connection".to_owned(),
            conns => format!("{conns} connections"),
        };
        format!("{kind}, {}, {puts}; streams over {conns}", plan.describe_watchers())
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
    /// Watch runs: events delivered and expected; slow-watcher runs: what the
    /// stalled watcher received once it read again.
    delivery: Option<Delivery>,
    /// Watch runs: puts per second achieved (a server slow to answer puts
    /// lowers the rate its watchers are offered).
    put_rate: Option<f64>,
    /// `--proxy` runs: the streams the members behind the proxy saw.
    upstream: Option<proxy::Upstream>,
}

impl Sample {
    fn of_requests(outcome: &Outcome) -> Sample {
        let all = outcome.combined();
        Sample {
            requests_per_sec: all.requests_per_sec(),
            p50: all.percentile(50.0),
            p99: all.percentile(99.0),
            peak_rss_kib: 0,
            disk_bytes: 0,
            generator_cpu: all.generator_cpu,
            wall: all.total,
            errors: all.errors,
            first_error: outcome.first_error.clone(),
            delivery: None,
            put_rate: None,
            upstream: None,
        }
    }

    /// The events' rate and latency; errors are failed puts and wrong events.
    fn of_watch(outcome: WatchOutcome) -> Sample {
        Sample {
            requests_per_sec: outcome.events.requests_per_sec(),
            p50: outcome.events.percentile(50.0),
            p99: outcome.events.percentile(99.0),
            peak_rss_kib: 0,
            disk_bytes: 0,
            generator_cpu: outcome.generator_cpu,
            wall: outcome.wall,
            errors: outcome.puts.errors + outcome.delivery.problems(),
            first_error: outcome.first_problem(),
            put_rate: Some(outcome.puts.requests_per_sec()),
            delivery: Some(outcome.delivery),
            upstream: None,
        }
    }

    /// Why the run fails the comparison: an event lost, repeated or out of order.
    fn failure(&self) -> Option<String> {
        self.delivery.as_ref().filter(|d| !d.is_exact()).map(Delivery::render)
    }
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
    /// What the rate column counts ("req/s", "events/s").
    pub unit: &'static str,
    pub etcd: Medians,
    pub keel: Medians,
    /// slow-watcher: the same put load on other fresh servers, with no watcher.
    pub baseline: Option<(Medians, Medians)>,
    /// Failed requests (or wrong events) over all rounds, and the first error seen, per system.
    pub etcd_errors: (usize, Option<String>),
    pub keel_errors: (usize, Option<String>),
    /// Watch kinds: puts per second achieved (median), etcd's and Keel's.
    pub put_rates: Option<(f64, f64)>,
    /// `--proxy` runs: what the members behind etcd's and Keel's proxy saw
    /// (medians of the rounds).
    pub upstream: Option<(proxy::Upstream, proxy::Upstream)>,
    /// Watch kinds: events each run had to deliver, when every run delivered them exactly once.
    pub delivery: Option<String>,
    /// Runs that failed the exactly-once check: "round 1 keel: ...".
    pub failures: Vec<String>,
}

impl WorkloadResult {
    /// The markdown table, then the generator's cost and any errors.
    pub fn render(&self) -> String {
        let mut out = markdown_table(self.unit, &self.etcd, &self.keel);
        if let Some((etcd, keel)) = &self.baseline {
            let _ = writeln!(out, "\nThe same puts with no watcher (fresh servers, same rounds):\n");
            out.push_str(&markdown_table(self.unit, etcd, keel));
            let ratios = |with: &Medians, without: &Medians| {
                format!(
                    "req/s {}, p50 {}, p99 {}",
                    ratio(with.requests_per_sec, without.requests_per_sec),
                    ratio(with.p50_ms, without.p50_ms),
                    ratio(with.p99_ms, without.p99_ms)
                )
            };
            let _ = writeln!(
                out,
                "\nWith the stalled watcher / without: etcd {}; Keel {}.",
                ratios(&self.etcd, etcd),
                ratios(&self.keel, keel)
            );
        }
        let _ = writeln!(
            out,
            "\nLoad generator CPU (median): {:.1} s per {:.1} s run against etcd, {:.1} s per {:.1} s against Keel.",
            self.etcd.generator_cpu_secs, self.etcd.wall_secs, self.keel.generator_cpu_secs, self.keel.wall_secs
        );
        if let Some((etcd, keel)) = &self.upstream {
            let _ = writeln!(
                out,
                "\nBehind the proxy (median per run), etcd's members saw {}; Keel's {}.",
                etcd.render(),
                keel.render()
            );
        }
        if let Some((etcd, keel)) = self.put_rates {
            let _ =
                writeln!(out, "\nPuts per second achieved (median): {etcd:.0} against etcd, {keel:.0} against Keel.");
        }
        if let Some(delivery) = &self.delivery {
            let _ = writeln!(out, "\n{delivery}");
        }
        for (system, (count, first)) in [("etcd", &self.etcd_errors), ("Keel", &self.keel_errors)] {
            if *count > 0 {
                let what = if self.unit == "req/s" { "requests failed" } else { "puts failed or events went wrong" };
                let _ = writeln!(
                    out,
                    "\n**{count} {what} against {system}** (first: `{}`).",
                    first.as_deref().unwrap_or("?")
                );
            }
        }
        for failure in &self.failures {
            let _ = writeln!(out, "\n**Exactly-once check failed**, {failure}");
        }
        out
    }
}

/// The median of each of the runs' upstream figures.
fn upstream(samples: &[Sample]) -> proxy::Upstream {
    let m = |f: &dyn Fn(&proxy::Upstream) -> f64| {
        median(samples.iter().filter_map(|s| s.upstream.as_ref()).map(f).collect())
    };
    proxy::Upstream {
        watch_streams: m(&|u| u.watch_streams),
        keepalive_streams: m(&|u| u.keepalive_streams),
        max_watchers: m(&|u| u.max_watchers),
    }
}

fn put_rate(samples: &[Sample]) -> f64 {
    median(samples.iter().filter_map(|s| s.put_rate).collect())
}

fn ratio(k: f64, e: f64) -> String {
    if e > 0.0 {
        format!("{:.2}", k / e)
    } else {
        "-".to_owned()
    }
}

/// Medians of etcd and Keel side by side, and Keel's as a multiple of etcd's.
pub fn markdown_table(unit: &str, etcd: &Medians, keel: &Medians) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| system | {unit} | p50 ms | p99 ms | peak RSS MiB | disk MiB |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (system, m) in [("etcd", etcd), ("keel", keel)] {
        let _ = writeln!(
            out,
            "| {system} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} |",
            m.requests_per_sec, m.p50_ms, m.p99_ms, m.peak_rss_mib, m.disk_mib
        );
    }
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

pub(super) fn median(mut values: Vec<f64>) -> f64 {
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

fn round_line(round: usize, system: &str, unit: &str, s: &Sample) -> String {
    let mut line = format!(
        "round {round} {system:4}: {:8.0} {unit}  p50 {:6.2} ms  p99 {:6.2} ms  peak RSS {:4.0} MiB  disk {:6.1} MiB  generator CPU {:.2}s/{:.2}s",
        s.requests_per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.peak_rss_kib as f64 / 1024.0,
        s.disk_bytes as f64 / (1024.0 * 1024.0),
        s.generator_cpu.as_secs_f64(),
        s.wall.as_secs_f64(),
    );
    if let Some(rate) = s.put_rate {
        let _ = write!(line, "  puts {rate:.0}/s");
    }
    if let Some(delivery) = &s.delivery {
        let _ = write!(line, "  delivered {}/{}", delivery.delivered, delivery.expected);
    }
    if let Some(upstream) = &s.upstream {
        let _ = write!(line, "  {}", upstream.render());
    }
    if s.errors > 0 {
        let _ = write!(line, "  ERRORS {} (first: {})", s.errors, s.first_error.as_deref().unwrap_or("?"));
    } else if let Some(failure) = s.failure() {
        let _ = write!(line, "  FAILED: {failure}");
    }
    line
}

pub async fn run(options: &CompareOptions) -> Result<()> {
    if options.write_doc && options.members != 1 {
        bail!("--write-doc writes the one-member results; drop it with --members {}", options.members);
    }
    if options.auth && options.members != 1 {
        bail!(
            "--auth logs in on one member (simple tokens are per member); drop it with --members {}",
            options.members
        );
    }
    if options.members == 0 {
        bail!("--members must be at least 1");
    }
    if options.proxy && (options.tls || options.auth) {
        bail!("--proxy runs without --tls and --auth (the proxies dial plain members, and carry no login)");
    }
    if options.proxy {
        if let Some(http) = options.workloads.iter().find(|name| name.needs_v2() || name.is_json()) {
            bail!("--proxy is for the gRPC workloads; {http} speaks HTTP to the members");
        }
    }
    if options.rounds == 0 || options.total == 0 {
        bail!("--rounds and --total must be positive");
    }
    if options.range_keys == 0 || options.range_keys > options.prefill {
        bail!("--range-keys must be between 1 and --prefill ({})", options.prefill);
    }
    for name in &options.workloads {
        name.job(options).validate().with_context(|| format!("workload {name}"))?;
    }
    let keel_bin = options.systems.keel_bin()?;
    let mut rounds_log = String::new();
    let mut results = Vec::new();
    for name in &options.workloads {
        let job = name.job(options);
        let header = format!(
            "{name}: {} ({}, {}-byte keys, {}-byte values, {} round{}, A B A B)",
            name.describe(options),
            name.amount(options),
            options.key_size,
            options.val_size,
            options.rounds,
            if options.rounds == 1 { "" } else { "s" },
        );
        let header = match options.security() {
            "" => header,
            security => format!("{header} {security}"),
        };
        let header = match (options.proxy, options.proxy_cache) {
            (true, false) => format!("{header}, through each system's grpc-proxy"),
            (true, true) => format!("{header}, through each system's grpc-proxy (Keel's caching every range)"),
            (false, _) => header,
        };
        println!("\n{header}");
        let _ = writeln!(rounds_log, "{header}");
        let (mut etcd, mut keel, mut etcd_base, mut keel_base) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut failures = Vec::new();
        let mut log = |round: usize, label: &str, sample: &Sample, complaints: &[String]| {
            let line = round_line(round, label, name.unit(), sample);
            println!("{line}");
            let _ = writeln!(rounds_log, "{line}");
            for complaint in complaints.iter().take(3) {
                println!("    {label} log: {complaint}");
            }
        };
        for round in 0..options.rounds {
            for (system, bin) in [("etcd", options.systems.etcd_bin.as_path()), ("keel", keel_bin.as_path())] {
                if let Job::SlowWatcher(plan) = &job {
                    let baseline = Job::Kv(plan.clone());
                    let (sample, complaints) =
                        measure(bin, &options.systems.data_root, system, name, &baseline, options).await?;
                    log(round, &format!("{system} (no watcher)"), &sample, &complaints);
                    if system == "etcd" {
                        etcd_base.push(sample)
                    } else {
                        keel_base.push(sample)
                    }
                }
                let (sample, complaints) =
                    measure(bin, &options.systems.data_root, system, name, &job, options).await?;
                log(round, system, &sample, &complaints);
                if let Some(failure) = sample.failure() {
                    failures.push(format!("round {round} {system}: {failure}"));
                }
                if system == "etcd" {
                    etcd.push(sample)
                } else {
                    keel.push(sample)
                }
            }
        }
        let errors = |samples: &[Sample]| {
            (samples.iter().map(|s| s.errors).sum(), samples.iter().find_map(|s| s.first_error.clone()))
        };
        let delivery = match (&job, failures.is_empty()) {
            (Job::Watch(plan), true) => Some(format!(
                "Every run delivered all {} events, each exactly once, in order.",
                thousands(plan.expected_events())
            )),
            (Job::SlowWatcher(_), true) => Some(
                "In every run the stalled watcher, reading again after the puts, received every revision exactly once, in order."
                    .to_owned(),
            ),
            _ => None,
        };
        let result = WorkloadResult {
            name: *name,
            description: name.describe(options),
            unit: name.unit(),
            etcd: Medians::of(&etcd),
            keel: Medians::of(&keel),
            baseline: (!etcd_base.is_empty()).then(|| (Medians::of(&etcd_base), Medians::of(&keel_base))),
            put_rates: matches!(job, Job::Watch(_)).then(|| (put_rate(&etcd), put_rate(&keel))),
            upstream: options.proxy.then(|| (upstream(&etcd), upstream(&keel))),
            etcd_errors: errors(&etcd),
            keel_errors: errors(&keel),
            delivery,
            failures,
        };
        println!("\n{}", result.render());
        rounds_log.push('\n');
        results.push(result);
    }
    if options.write_doc {
        let path = crate::cargo::workspace_root().join("docs/benchmarks.md");
        let facts = doc::Facts::gather(&options.systems.etcd_bin, &keel_bin, &options.systems.data_root);
        let section = doc::results_section(&facts, options, &results, &rounds_log);
        let markers = doc::results_markers(options);
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(&path, doc::replace_section(&old, markers, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        // The chart is the plaintext table's; TLS and auth sections are tables only.
        if options.security().is_empty() {
            let rows: Vec<chart::Ratios> = results
                .iter()
                .map(|r| chart::Ratios {
                    workload: r.name.to_string(),
                    throughput: chart::ratio(r.keel.requests_per_sec, r.etcd.requests_per_sec),
                    peak_rss: chart::ratio(r.keel.peak_rss_mib, r.etcd.peak_rss_mib),
                })
                .collect();
            let svg_path = path.with_file_name(doc::CHART_FILE);
            let title = format!("Keel / etcd, one member, medians of {} rounds ({})", options.rounds, facts.date());
            std::fs::write(&svg_path, chart::svg(&rows, &title)?)
                .with_context(|| format!("writing {}", svg_path.display()))?;
            println!("wrote {}", svg_path.display());
        }
    }
    let failed: Vec<String> =
        results.iter().flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.name))).collect();
    if !failed.is_empty() {
        bail!("the exactly-once check failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

/// One run on a fresh server; also returns the lines of its log that complain.
async fn measure(
    bin: &Path,
    root: &Path,
    system: &str,
    name: &WorkloadName,
    job: &Job,
    options: &CompareOptions,
) -> Result<(Sample, Vec<String>)> {
    // Connections dialled from here on send no token until this server's is known.
    dial::set_token(None)?;
    let mut flags: Vec<String> =
        if options.auth { dial::AUTH_FLAGS.iter().map(|f| f.to_string()).collect() } else { Vec::new() };
    if name.needs_v2() {
        flags.push(v2::SERVER_FLAG.to_owned());
    }
    let mut servers = Server::start_cluster(bin, root, system, options.members, options.tls, &flags)?;
    for server in &mut servers {
        server.wait_ready().await?;
    }
    // Clients spread over every member, as etcd's benchmark does with
    // several endpoints; or all go to the proxy in front of them.
    let members: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let mut proxy = match options.proxy {
        true => {
            let cache = options.proxy_cache && system == "keel";
            let mut proxy = proxy::start(bin, root, system, &members, cache)?;
            proxy.wait_ready().await.with_context(|| format!("{system}'s grpc-proxy"))?;
            Some(proxy)
        }
        false => None,
    };
    let endpoints = match &proxy {
        Some(proxy) => vec![proxy.url.clone()],
        None => members.clone(),
    };
    if options.auth {
        let token = dial::enable_auth(&endpoints[0]).await.with_context(|| format!("{system}: enabling auth"))?;
        dial::set_token(Some(&token))?;
    }
    if name.prefills() {
        // The v2 keyspace is separate from the v3 one: v2 reads need keys set through v2.
        let prefilled = if name.needs_v2() {
            v2::prefill(&endpoints, options.prefill, options.key_size, options.val_size).await
        } else {
            load::prefill(&endpoints, options.prefill, options.key_size, options.val_size).await
        };
        prefilled.with_context(|| system.to_owned())?;
    }
    let context = || format!("{system}: {name}");
    let probe = match &proxy {
        Some(_) => Some(proxy::Probe::start(&members).await.with_context(context)?),
        None => None,
    };
    let mut sample = match job {
        Job::Kv(plan) => Sample::of_requests(&load::run(&endpoints, plan).await.with_context(context)?),
        Job::Json(plan) => Sample::of_requests(&super::json::run(&endpoints, plan).await.with_context(context)?),
        Job::V2(plan) => Sample::of_requests(&v2::run(&endpoints, plan).await.with_context(context)?),
        Job::Lease(plan) => Sample::of_requests(&lease::run(&endpoints, plan).await.with_context(context)?),
        Job::Watch(plan) => Sample::of_watch(watch::run(&endpoints, plan).await.with_context(context)?),
        Job::SlowWatcher(plan) => {
            let (outcome, stalled) = stall::run_stalled(&endpoints, plan).await.with_context(context)?;
            Sample { delivery: Some(stalled), ..Sample::of_requests(&outcome) }
        }
    };
    if let Some(probe) = probe {
        sample.upstream = Some(probe.finish().await.with_context(context)?);
    }
    for server in servers.iter_mut().chain(proxy.as_mut()) {
        if let Some(status) = server.exited() {
            bail!("{system} exited during {name} ({status})");
        }
    }
    // A cluster's cost is all of its members', and its proxy's.
    sample.peak_rss_kib = servers.iter().chain(proxy.as_ref()).map(Server::peak_rss_kib).sum();
    sample.disk_bytes = servers.iter().map(Server::disk_bytes).sum();
    Ok((sample, servers.iter().chain(proxy.as_ref()).flat_map(Server::log_complaints).collect()))
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
        let names = DEFAULT_WORKLOADS.split(',').map(str::trim);
        for name in names.chain(["txn-mixed-16", "watch-fanout-100x100", "json-put-8", "v2-set-8", "v2-get-64"]) {
            assert_eq!(name.parse::<WorkloadName>().unwrap().to_string(), name);
        }
        let parsed: WorkloadName = "range-s-256".parse().unwrap();
        assert_eq!(parsed, WorkloadName { kind: Kind::RangeSerializable, clients: 256, watchers_per_stream: None });
        let parsed: WorkloadName = "watch-latency-10x5".parse().unwrap();
        assert_eq!(parsed, WorkloadName { kind: Kind::WatchLatency, clients: 10, watchers_per_stream: Some(5) });
        let parsed: WorkloadName = "lease-grant-revoke-64".parse().unwrap();
        assert_eq!((parsed.kind, parsed.clients), (Kind::LeaseGrantRevoke, 64));
        for bad in [
            "put",
            "put-0",
            "range-256",
            "get-1",
            "put-x",
            "",
            "put-2x3",
            "watch-10",
            "watch-0x5",
            "watch-5x0",
            "watch-x5",
            "watch-latency",
            "v2-8",
            "v2-set",
            "v2-get-0",
        ] {
            assert!(bad.parse::<WorkloadName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn v2_workloads_set_at_random_and_get_the_first_prefilled_key() {
        let options = options(&["--range-keys", "10", "--total", "500"]);
        let name = |name: &str| name.parse::<WorkloadName>().unwrap();
        let Job::V2(set) = name("v2-set-64").job(&options) else { panic!("v2-set plans a v2 job") };
        assert_eq!((set.clients, set.conns, set.total, set.val_size), (64, 64, 500, 256));
        assert!(matches!(set.workload, Workload::Put { key_space: 100_000, sequential: false }));
        let Job::V2(get) = name("v2-get-8").job(&options) else { panic!("v2-get plans a v2 job") };
        assert_eq!((get.clients, get.conns), (8, 8));
        // A point read even when the gRPC ranges cover --range-keys keys.
        let Workload::Range { key, end, count_only, .. } = get.workload else { panic!("v2-get reads") };
        assert_eq!((key, end, count_only), (b"00000000".to_vec(), Vec::new(), false));
        assert!(name("v2-get-8").prefills() && !name("v2-set-8").prefills());
        assert!(name("v2-set-1").needs_v2() && name("v2-get-1").needs_v2());
        assert!(!name("json-put-8").needs_v2() && !name("put-8").needs_v2());
        for workload in ["v2-set-8", "v2-get-8"] {
            assert!(name(workload).job(&options).validate().is_ok(), "{workload}");
        }
        assert_eq!(name("v2-set-1").describe(&options), "v2 set, keys at random from 100,000; 1 client");
        assert_eq!(
            name("v2-get-64").describe(&options),
            "v2 get (local read), 1 key of 1,000 keys set first through v2; 64 clients over 64 connections"
        );
        assert_eq!(name("v2-get-64").amount(&options), "500 requests");
    }

    #[test]
    fn plans_follow_the_options() {
        let options = options(&["--range-keys", "10", "--clients-per-conn", "8"]);
        assert_eq!(options.workloads.len(), 12);
        let job = |name: &str, options: &CompareOptions| name.parse::<WorkloadName>().unwrap().job(options);
        let Job::Kv(plan) = job("range-s-256", &options) else { panic!() };
        assert_eq!((plan.clients, plan.conns), (256, 32));
        let Workload::Range { key, end, serializable, .. } = plan.workload else { panic!() };
        assert_eq!((key, end, serializable), (b"00000000".to_vec(), b"00000009\0".to_vec(), true));
        let Job::Kv(plan) = job("put-1", &options) else { panic!() };
        assert_eq!((plan.clients, plan.conns, plan.val_size), (1, 1, 256));
        let Job::Kv(point) = job("range-l-4", &self::options(&[])) else { panic!() };
        let Workload::Range { end, serializable, .. } = point.workload else { panic!() };
        assert!(end.is_empty() && !serializable);
    }

    #[test]
    fn new_workloads_plan_their_jobs() {
        let options = options(&["--fanout-secs", "3", "--watch-puts", "500", "--total", "101"]);
        let job = |name: &str| name.parse::<WorkloadName>().unwrap().job(&options);
        let Job::Watch(fanout) = job("watch-fanout-100x100") else { panic!() };
        assert_eq!((fanout.streams, fanout.watchers_per_stream, fanout.conns), (100, 100, 13));
        assert_eq!((fanout.watched, fanout.puts, fanout.put_rate), (Watched::Prefix(100_000), 3000, 1000));
        assert_eq!(fanout.expected_events(), 30_000_000);
        let Job::Watch(latency) = job("watch-latency-10x10") else { panic!() };
        assert_eq!(
            (latency.watched, latency.puts, latency.put_rate, latency.put_clients),
            (Watched::Keys(1), 500, 100, 1)
        );
        let Job::Watch(watch) = job("watch-10x100") else { panic!() };
        assert_eq!((watch.put_rate, watch.expected_events()), (0, 500_000));
        let Job::SlowWatcher(slow) = job("slow-watcher-64") else { panic!() };
        assert_eq!((slow.clients, slow.conns, slow.total), (64, 8, 101));
        let Job::Lease(grants) = job("lease-grant-revoke-64") else { panic!() };
        assert_eq!((grants.workload, grants.total, grants.requests()), (LeaseWorkload::GrantRevoke, 51, 102));
        let Job::Lease(keepalive) = job("lease-keepalive-8") else { panic!() };
        assert_eq!((keepalive.total, keepalive.conns, keepalive.ttl), (101, 1, 100));
        for name in options.workloads.iter() {
            assert!(name.job(&options).validate().is_ok(), "{name}");
        }
        let tiny_keys = self::options(&["--key-size", "3"]);
        assert!("watch-fanout-10x10".parse::<WorkloadName>().unwrap().job(&tiny_keys).validate().is_err());
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
        assert_eq!(
            describe("txn-put-4"),
            "txn-put, 1 put per txn, keys in turn from 100,000; 4 clients on 1 connection"
        );
        assert_eq!(
            describe("watch-fanout-100x100"),
            "watch fan-out, 10,000 watchers (100 streams × 100) on one prefix, 1,000 puts/s for 2 s to keys under it; streams over 13 connections"
        );
        assert_eq!(
            describe("watch-latency-10x10"),
            "watch-latency, 100 watchers (10 streams × 10) on one key, 1,000 puts at 100/s; streams over 2 connections"
        );
        assert_eq!(
            describe("watch-1x1"),
            "watch, 1 watcher (1 stream × 1) on one key, 1,000 puts from 1 client, as fast as it goes; streams over 1 connection"
        );
        assert_eq!(
            describe("lease-keepalive-64"),
            "lease-keepalive, one lease and one keep-alive stream per client; 64 clients over 8 connections"
        );
        let amount = |name: &str| name.parse::<WorkloadName>().unwrap().amount(&options);
        assert_eq!(amount("watch-10x100"), "1,000 puts, 1,000,000 events");
        assert_eq!(amount("lease-grant-revoke-1"), "10,000 requests");
        assert_eq!(amount("slow-watcher-1"), "10,000 puts per run");
    }

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(
            (thousands(0), thousands(999), thousands(1000), thousands(1234567)),
            ("0".into(), "999".into(), "1,000".into(), "1,234,567".into())
        );
    }

    fn medians(rps: f64, p50: f64) -> Medians {
        Medians {
            requests_per_sec: rps,
            p50_ms: p50,
            p99_ms: p50 * 2.0,
            peak_rss_mib: 30.0,
            disk_mib: 1.0,
            generator_cpu_secs: 1.0,
            wall_secs: 2.0,
        }
    }

    #[test]
    fn a_slow_watcher_result_shows_both_halves_and_their_ratio() {
        let result = WorkloadResult {
            name: "slow-watcher-64".parse().unwrap(),
            description: String::new(),
            unit: "req/s",
            etcd: medians(900.0, 2.2),
            keel: medians(1000.0, 1.0),
            baseline: Some((medians(1000.0, 2.0), medians(1000.0, 1.0))),
            put_rates: None,
            upstream: None,
            etcd_errors: (0, None),
            keel_errors: (0, None),
            delivery: Some("In every run ...".to_owned()),
            failures: Vec::new(),
        };
        let text = result.render();
        assert!(text.contains("The same puts with no watcher"), "{text}");
        assert_eq!(text.matches("| keel/etcd |").count(), 2, "{text}");
        assert!(
            text.contains("With the stalled watcher / without: etcd req/s 0.90, p50 1.10, p99 1.10; Keel req/s 1.00, p50 1.00, p99 1.00."),
            "{text}"
        );
        assert!(text.contains("\nIn every run ...\n"), "{text}");
    }

    #[test]
    fn wrong_events_are_reported_and_fail_the_run() {
        let mut delivery = Delivery { expected: 10, delivered: 9, ..Default::default() };
        let mut sample = Sample {
            requests_per_sec: 1.0,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            peak_rss_kib: 0,
            disk_bytes: 0,
            generator_cpu: Duration::ZERO,
            wall: Duration::ZERO,
            errors: 0,
            first_error: None,
            delivery: Some(delivery.clone()),
            put_rate: Some(99.6),
            upstream: Some(proxy::Upstream { watch_streams: 1.0, keepalive_streams: 0.0, max_watchers: 1.0 }),
        };
        let line = round_line(1, "keel", "events/s", &sample);
        assert!(
            line.contains("events/s")
                && line.contains("delivered 9/10  upstream 1 watch streams, max 1 watchers, 0 keep-alive streams  FAILED: Events delivered: 9 of 10"),
            "{line}"
        );
        delivery.delivered = 10;
        sample.delivery = Some(delivery);
        assert_eq!(sample.failure(), None);
        let result = WorkloadResult {
            name: "watch-1x1".parse().unwrap(),
            description: String::new(),
            unit: "events/s",
            etcd: medians(1.0, 1.0),
            keel: medians(1.0, 1.0),
            baseline: None,
            put_rates: Some((1000.0, 998.4)),
            upstream: None,
            etcd_errors: (0, None),
            keel_errors: (3, Some("3 missing".to_owned())),
            delivery: None,
            failures: vec!["round 0 keel: 3 missing".to_owned()],
        };
        let text = result.render();
        assert!(text.starts_with("| system | events/s |"), "{text}");
        assert!(text.contains("\nPuts per second achieved (median): 1000 against etcd, 998 against Keel.\n"), "{text}");
        assert!(text.contains("**3 puts failed or events went wrong against Keel** (first: `3 missing`)."), "{text}");
        assert!(text.contains("**Exactly-once check failed**, round 0 keel: 3 missing"), "{text}");
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
        let table = markdown_table("req/s", &m(1000.0, 2.0, 50.0, 64.0), &m(1500.0, 1.0, 25.0, 0.0));
        assert_eq!(
            table,
            "| system | req/s | p50 ms | p99 ms | peak RSS MiB | disk MiB |\n\
             |---|---:|---:|---:|---:|---:|\n\
             | etcd | 1000 | 2.00 | 4.00 | 50 | 64.0 |\n\
             | keel | 1500 | 1.00 | 2.00 | 25 | 0.0 |\n\
             | keel/etcd | 1.50 | 0.50 | 0.50 | 0.50 | 0.00 |\n"
        );
        assert!(
            markdown_table("req/s", &m(0.0, 0.0, 0.0, 0.0), &m(1.0, 1.0, 1.0, 1.0)).contains("| keel/etcd | - | - |")
        );
    }
}
