//! `cargo xtask bench`: a load generator for any etcd v3 endpoint, and a
//! side-by-side run of Keel and real etcd on this machine.
//!
//! The workload commands mirror etcd's `tools/benchmark` (same names, flags,
//! defaults and summary layout): `put`, `range`, `txn-put`, `txn-mixed`,
//! `watch`, `watch-latency`, `lease-keepalive`; and two of ours:
//! `slow-watcher` and `lease-grant-revoke`. Not yet: `watch-get`.
//! `compare` runs a list of them against fresh etcd and Keel servers in turn
//! (see [`compare`]).
//!
//! - [`workload`]: what each request is; keys and values, generated up front.
//! - [`load`]: clients, connections, timing.
//! - [`json`], [`v2`]: the put and range workloads through the JSON gateway
//!   and through the v2 keys API, over [`http`]'s keep-alive connections
//!   (`compare` only: `json-put-N`, `json-range-N`, `v2-set-N`, `v2-get-N`).
//! - [`watch`], [`delivery`]: watchers, puts at a rate, and the exactly-once check.
//! - [`stall`]: a watch stream nobody reads, beside a put load.
//! - [`storm`]: one huge DeleteRange among many watchers, and the put latency meanwhile.
//! - [`lease`]: keep-alive streams, grants and revokes.
//! - [`summary`], [`histogram`]: percentiles and etcd's report layout.
//! - [`server`]: a fresh etcd or Keel, its peak RSS and data size.
//! - [`compare`], [`doc`] and [`chart`]: the comparison, its section of
//!   docs/benchmarks.md and the SVG chart beside it; [`proxy`]: the same
//!   through each system's gRPC proxy (`compare --proxy`).
//! - [`scale`]: a million keys in each system; load time, memory, disk, page reads.
//! - [`snapshot`]: a new member catching up from a snapshot of a million keys;
//!   how long it takes, and the memory it costs both sides.
//! - [`maintenance`]: etcd-format snapshots, the import of etcd's, and
//!   defragmentation under load, on a million keys.

mod chart;
mod compare;
mod ctl;
mod delivery;
mod dial;
mod doc;
mod histogram;
mod http;
mod json;
mod lease;
mod load;
mod maintenance;
mod proxy;
mod scale;
mod server;
mod snapshot;
mod stall;
mod storm;
mod summary;
mod v2;
mod watch;
mod workload;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};

use lease::{LeasePlan, LeaseWorkload};
use watch::{WatchPlan, Watched};
use workload::{Plan, Workload};

#[derive(Subcommand)]
pub enum Bench {
    /// Puts, as etcd's `benchmark put`.
    Put(PutOptions),
    /// The same Range over and over, as etcd's `benchmark range key [end]`.
    Range(RangeOptions),
    /// Txns of --txn-ops puts, as etcd's `benchmark txn-put`.
    TxnPut(TxnPutOptions),
    /// Txns holding one read or one write, as etcd's `benchmark txn-mixed`.
    TxnMixed(TxnMixedOptions),
    /// Watchers on many streams and puts to what they watch, as etcd's
    /// `benchmark watch`; every event must arrive exactly once.
    Watch(WatchOptions),
    /// The delay from each put to each watcher's event, as etcd's `benchmark watch-latency`.
    WatchLatency(WatchLatencyOptions),
    /// Put latency without, then with, one watch stream whose client never reads.
    SlowWatcher(SlowWatcherOptions),
    /// Keep-alives over bidi streams, each waiting for its response, as etcd's
    /// `benchmark lease-keepalive`.
    LeaseKeepalive(LeaseOptions),
    /// Lease grants, each followed by its revoke.
    LeaseGrantRevoke(LeaseOptions),
    /// Fresh etcd and Keel, alternating, for each workload; medians and ratios.
    Compare(compare::CompareOptions),
    /// A million keys loaded into fresh etcd and Keel in turn: load time,
    /// RSS, disk, and the latency of linearizable 1,000-key page reads.
    Scale(scale::ScaleOptions),
    /// One DeleteRange of 100,000 keys while 1,000 watchers watch other
    /// keys: how long it takes, and the worst put latency meanwhile.
    DeleteStorm(storm::StormOptions),
    /// A member added to a one-member cluster holding a million keys, in
    /// fresh Keel and etcd in turn: how long until it has caught up from a
    /// snapshot, and the extra RSS on the leader and on the new member.
    Snapshot(snapshot::SnapshotOptions),
    /// A million keys in etcd: snapshot save on each system (time, extra
    /// RSS), the import of etcd's snapshot into Keel, and a defragmentation
    /// under a put load (the slowest put meanwhile).
    Maintenance(maintenance::MaintenanceOptions),
    /// keelctl and etcdctl as scripts run them, a process per command: the
    /// wall time of a `get` (A B A B), and optionally `check perf`.
    Ctl(ctl::CtlOptions),
}

/// Where the load goes and how much of it (etcd's global flags, and --total).
#[derive(Args, Debug)]
pub struct Target {
    /// Comma-separated client URLs.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Total number of requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Sizes {
    /// Key size in bytes (keys are zero-padded decimals: "00000042").
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
}

#[derive(Args, Debug)]
pub struct PutOptions {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub sizes: Sizes,
    /// Maximum possible keys (etcd's default writes one key over and over).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: usize,
    /// Use sequential keys rather than random ones.
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Args, Debug)]
pub struct RangeOptions {
    pub key: String,
    /// Range end (exclusive); empty reads `key` alone.
    pub end: Option<String>,
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum number of results per range (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only return the count of keys.
    #[arg(long)]
    pub count_only: bool,
    /// First write keys 0..N (untimed; --key-size and --val-size apply) so ranges find data.
    #[arg(long, default_value_t = 0)]
    pub prefill: usize,
    #[command(flatten)]
    pub sizes: Sizes,
}

#[derive(Args, Debug)]
pub struct TxnPutOptions {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub sizes: Sizes,
    /// Maximum possible keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: usize,
    /// Number of puts per txn.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

#[derive(Args, Debug)]
pub struct TxnMixedOptions {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub sizes: Sizes,
    /// Maximum possible keys (writes cycle through them).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: usize,
    /// Read/write ops ratio.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// Read operation range result limit.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Read operation range end key; by default reads range over every key.
    #[arg(long, default_value = "")]
    pub end_key: String,
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

/// Where watch streams go, and the put clients beside them.
#[derive(Args, Debug)]
pub struct StreamTarget {
    /// Comma-separated client URLs.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// gRPC connections the watch streams share (put clients have their own).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Put clients (puts in flight at most).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Seconds without any event, once every put is acknowledged, before the
    /// events still expected count as missing.
    #[arg(long, default_value_t = 10)]
    pub idle_timeout: u64,
    /// Print the summaries as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WatchOptions {
    #[command(flatten)]
    pub target: StreamTarget,
    /// Watch streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers per stream.
    #[arg(long, default_value_t = 100, alias = "watchers-per-stream")]
    pub watch_per_stream: usize,
    /// Keys watched (watcher i watches key i mod N) and written (put n writes key n mod N).
    #[arg(long, default_value_t = 1)]
    pub watched_key_total: usize,
    /// Every watcher watches the prefix all the keys are under, instead of one key.
    #[arg(long)]
    pub prefix: bool,
    /// Puts.
    #[arg(long, default_value_t = 1000)]
    pub put_total: usize,
    /// Puts per second (0: as fast as the put clients go).
    #[arg(long, default_value_t = 0)]
    pub put_rate: usize,
    /// Key size in bytes ("w" and zero-padded digits).
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size in bytes (the put's number, then filler).
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
}

#[derive(Args, Debug)]
pub struct WatchLatencyOptions {
    #[command(flatten)]
    pub target: StreamTarget,
    /// Watch streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers per stream, all on one key.
    #[arg(long, default_value_t = 10, alias = "watchers-per-stream")]
    pub watch_per_stream: usize,
    /// Puts.
    #[arg(long, default_value_t = 1000)]
    pub put_total: usize,
    /// Puts per second (0: as fast as the put clients go).
    #[arg(long, default_value_t = 100)]
    pub put_rate: usize,
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

#[derive(Args, Debug)]
pub struct SlowWatcherOptions {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub sizes: Sizes,
    /// Puts draw their keys at random from this many.
    #[arg(long, default_value_t = 100_000)]
    pub key_space_size: usize,
}

#[derive(Args, Debug)]
pub struct LeaseOptions {
    /// --total counts keep-alives, or leases granted and revoked.
    #[command(flatten)]
    pub target: Target,
    /// TTL of the leases granted, in seconds.
    #[arg(long, default_value_t = 100)]
    pub ttl: i64,
    /// lease-keepalive: first grant this many more leases (untimed) and keep
    /// them alive for the run, e.g. 1000000.
    #[arg(long, default_value_t = 0)]
    pub live_leases: usize,
}

impl StreamTarget {
    fn plan(
        &self,
        streams: usize,
        per_stream: usize,
        watched: Watched,
        puts: (usize, usize),
        sizes: (usize, usize),
    ) -> WatchPlan {
        WatchPlan {
            streams,
            watchers_per_stream: per_stream,
            conns: self.conns,
            watched,
            puts: puts.0,
            put_rate: puts.1,
            put_clients: self.clients,
            key_size: sizes.0,
            val_size: sizes.1,
            idle_timeout: Duration::from_secs(self.idle_timeout),
        }
    }
}

fn print_json_or(json: bool, value: serde_json::Value, text: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

fn run_watch(runtime: &tokio::runtime::Runtime, target: &StreamTarget, plan: &WatchPlan) -> Result<()> {
    plan.validate()?;
    let outcome = runtime.block_on(watch::run(&target.endpoints, plan))?;
    print_json_or(target.json, outcome.to_json(), outcome.render())?;
    if let Some(problem) = outcome.first_problem() {
        bail!("{problem}");
    }
    Ok(())
}

fn run_lease(runtime: &tokio::runtime::Runtime, options: &LeaseOptions, workload: LeaseWorkload) -> Result<()> {
    let target = &options.target;
    let plan = LeasePlan {
        workload,
        total: target.total,
        clients: target.clients,
        conns: target.conns,
        ttl: options.ttl,
        live_leases: options.live_leases,
    };
    plan.validate()?;
    let outcome = runtime.block_on(lease::run(&target.endpoints, &plan))?;
    print_json_or(target.json, outcome.to_json(), outcome.render())
}

pub fn run(bench: Bench) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (target, workload, sizes, prefill) = match bench {
        Bench::Compare(options) => return runtime.block_on(compare::run(&options)),
        Bench::Scale(options) => return runtime.block_on(scale::run(&options)),
        Bench::DeleteStorm(options) => return runtime.block_on(storm::run(&options)),
        Bench::Snapshot(options) => return runtime.block_on(snapshot::run(&options)),
        Bench::Maintenance(options) => return runtime.block_on(maintenance::run(&options)),
        Bench::Ctl(options) => return runtime.block_on(ctl::run(&options)),
        Bench::Watch(o) => {
            let watched =
                if o.prefix { Watched::Prefix(o.watched_key_total) } else { Watched::Keys(o.watched_key_total) };
            let plan = o.target.plan(
                o.streams,
                o.watch_per_stream,
                watched,
                (o.put_total, o.put_rate),
                (o.key_size, o.val_size),
            );
            return run_watch(&runtime, &o.target, &plan);
        }
        Bench::WatchLatency(o) => {
            let plan = o.target.plan(
                o.streams,
                o.watch_per_stream,
                Watched::Keys(1),
                (o.put_total, o.put_rate),
                (o.key_size, o.val_size),
            );
            return run_watch(&runtime, &o.target, &plan);
        }
        Bench::LeaseKeepalive(o) => return run_lease(&runtime, &o, LeaseWorkload::KeepAlive),
        Bench::LeaseGrantRevoke(o) => return run_lease(&runtime, &o, LeaseWorkload::GrantRevoke),
        Bench::SlowWatcher(o) => {
            let plan = Plan {
                workload: Workload::Put { key_space: o.key_space_size, sequential: false },
                total: o.target.total,
                clients: o.target.clients,
                conns: o.target.conns,
                key_size: o.sizes.key_size,
                val_size: o.sizes.val_size,
            };
            plan.validate()?;
            let outcome = runtime.block_on(stall::run(&o.target.endpoints, &plan))?;
            print_json_or(o.target.json, outcome.to_json(), outcome.render())?;
            if !outcome.stalled.is_exact() {
                bail!("the stalled watcher, reading again: {}", outcome.stalled.render());
            }
            return Ok(());
        }
        Bench::Put(o) => {
            let workload = Workload::Put { key_space: o.key_space_size, sequential: o.sequential_keys };
            (o.target, workload, o.sizes, 0)
        }
        Bench::Range(o) => {
            let serializable = o.consistency == Consistency::S;
            report_consistency(serializable, o.target.json);
            let workload = Workload::Range {
                key: o.key.into_bytes(),
                end: o.end.unwrap_or_default().into_bytes(),
                serializable,
                limit: o.limit,
                count_only: o.count_only,
            };
            (o.target, workload, o.sizes, o.prefill)
        }
        Bench::TxnPut(o) => {
            let workload = Workload::TxnPut { key_space: o.key_space_size, ops: o.txn_ops };
            (o.target, workload, o.sizes, 0)
        }
        Bench::TxnMixed(o) => {
            let serializable = o.consistency == Consistency::S;
            report_consistency(serializable, o.target.json);
            let workload = Workload::TxnMixed {
                key_space: o.key_space_size,
                rw_ratio: o.rw_ratio,
                end: o.end_key.into_bytes(),
                limit: o.limit,
                serializable,
            };
            (o.target, workload, o.sizes, 0)
        }
    };
    let plan = Plan {
        workload,
        total: target.total,
        clients: target.clients,
        conns: target.conns,
        key_size: sizes.key_size,
        val_size: sizes.val_size,
    };
    plan.validate()?;
    let outcome = runtime.block_on(async {
        load::prefill(&target.endpoints, prefill, sizes.key_size, sizes.val_size).await?;
        load::run(&target.endpoints, &plan).await
    })?;
    print_json_or(target.json, outcome.to_json(), outcome.render())
}

/// etcd's first line for range and txn-mixed (kept off stdout when it carries JSON).
fn report_consistency(serializable: bool, json: bool) {
    let line = format!("bench with {} range", if serializable { "serializable" } else { "linearizable" });
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}
