//! `cargo xtask bench`: a load generator for any etcd v3 endpoint, and a
//! side-by-side run of Keel and real etcd on this machine.
//!
//! The workload commands mirror etcd's `tools/benchmark` (same names, flags,
//! defaults and summary layout): `put`, `range`, `txn-put`, `txn-mixed`.
//! Not yet: the watch workloads (Keel has no Watch service yet) and `lease-keepalive`.
//! `compare` runs a list of them against fresh etcd and Keel servers in turn
//! (see [`compare`]).
//!
//! - [`workload`]: what each request is; keys and values, generated up front.
//! - [`load`]: clients, connections, timing.
//! - [`summary`]: percentiles and etcd's report layout.
//! - [`server`]: a fresh etcd or Keel, its peak RSS and data size.
//! - [`compare`] and [`doc`]: the comparison and its section of docs/benchmarks.md.

mod compare;
mod doc;
mod load;
mod server;
mod summary;
mod workload;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

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
    /// Fresh etcd and Keel, alternating, for each workload; medians and ratios.
    Compare(compare::CompareOptions),
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

pub fn run(bench: Bench) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (target, workload, sizes, prefill) = match bench {
        Bench::Compare(options) => return runtime.block_on(compare::run(&options)),
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
    if target.json {
        println!("{}", serde_json::to_string_pretty(&outcome.to_json())?);
    } else {
        print!("{}", outcome.render());
    }
    Ok(())
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
