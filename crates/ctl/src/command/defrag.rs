//! `defrag`: defragments each endpoint's backend, one at a time.

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

fn run(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    if !ctx.flags.string("data-dir").is_empty() {
        return Err(Failure::exit(exit::ERROR, "keelctl does not implement \"defrag --data-dir\" yet"));
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
