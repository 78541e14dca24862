//! `defrag`: defragments each endpoint's backend, one at a time.

use std::path::Path;

use keel_mvcc::{Backend, RocksBackend};

use super::endpoint::endpoints_from_cluster;
use super::Command;
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;

pub const DEFRAG: Command = Command {
    name: "defrag",
    short: "Defragments the storage of the etcd members with given endpoints",
    usage: "defrag",
    long: "",
    flags: &[
        FlagSpec::new("cluster", Kind::Bool, "false", "use all endpoints from the cluster member list"),
        FlagSpec::new(
            "data-dir",
            Kind::String,
            "",
            "Optional. If present, defragments a data directory not in use by etcd.",
        ),
    ],
    run,
};

/// Compacts a stopped member's store in place. A running member holds the
/// store's lock, and RocksDB refuses a second writer with its message.
fn defrag_data_dir(data_dir: &Path) -> Result<(), String> {
    let store = data_dir.join("member").join("kv");
    if !store.join("CURRENT").is_file() {
        return Err(format!("no Keel store at {}", store.display()));
    }
    let backend = RocksBackend::open(&store).map_err(|e| e.to_string())?;
    backend.defragment().map_err(|e| e.to_string())
}

fn run(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let data_dir = ctx.flags.string("data-dir").to_string();
    if !data_dir.is_empty() {
        // As etcdctl: nothing printed on success. Where etcdctl panics (no
        // database there), a sentence says why.
        if let Err(cause) = defrag_data_dir(Path::new(&data_dir)) {
            let _ = writeln!(ctx.io.stderr, "Failed to defragment etcd data[{data_dir}] ({cause})");
            return Err(Failure::Quiet(exit::ERROR));
        }
        return Ok(());
    }
    // etcdctl 3.4 prints the same lines whatever --write-out says.
    ctx.setup()?;
    let mut failed = false;
    for endpoint in endpoints_from_cluster(ctx)? {
        match ctx.call_on(&endpoint, |client| async move { client.defragment().await }) {
            Ok(_) => {
                let _ = writeln!(ctx.io.stdout, "Finished defragmenting etcd member[{endpoint}]");
            }
            Err(rpc) => {
                failed = true;
                let _ = writeln!(ctx.io.stderr, "Failed to defragment etcd member[{endpoint}] ({})", rpc.printed);
                ctx.diagnose(&rpc);
            }
        }
    }
    if failed {
        return Err(Failure::Quiet(exit::ERROR));
    }
    Ok(())
}
