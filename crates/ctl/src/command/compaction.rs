//! `compaction`: compacts the history up to a revision.

use super::Command;
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;
use crate::gostr;

pub const COMPACTION: Command = Command {
    name: "compaction",
    short: "Compacts the event history in etcd",
    usage: "compaction [options] <revision>",
    long: "",
    flags: &[FlagSpec::new(
        "physical",
        Kind::Bool,
        "false",
        "'true' to wait for compaction to physically remove all old revisions",
    )],
    run,
};

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(Failure::exit(exit::BAD_ARGS, "compaction command needs 1 argument"));
    }
    let revision = gostr::parse_int(&args[0], 10).map_err(|e| Failure::exit(exit::ERROR, e))?;
    let physical = ctx.flags.bool("physical");
    // etcdctl 3.4 prints the same line whatever --write-out says.
    ctx.setup()?;
    ctx.call(|client| async move { client.compact(revision, physical).await })?;
    let _ = writeln!(ctx.io.stdout, "compacted revision {revision}");
    Ok(())
}
