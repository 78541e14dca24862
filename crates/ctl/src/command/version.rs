//! `version`: the etcdctl version keelctl is compatible with.

use super::Command;
use crate::error::Failure;
use crate::global::Context;

/// keelctl answers as the etcdctl whose output it reproduces, since
/// scripts parse this.
pub const ETCDCTL_VERSION: &str = "3.4.23";
pub const API_VERSION: &str = "3.4";

pub const VERSION: Command =
    Command { name: "version", short: "Prints the version of etcdctl", usage: "version", long: "", flags: &[], run };

fn run(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let _ = write!(ctx.io.stdout, "etcdctl version: {ETCDCTL_VERSION}\nAPI version: {API_VERSION}\n");
    Ok(())
}
