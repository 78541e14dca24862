//! `move-leader`: finds the leader among `--endpoints` and asks it to hand
//! leadership over.

use super::member::parse_member_id;
use super::Command;
use crate::error::{exit, Failure};
use crate::global::Context;

pub const MOVE_LEADER: Command = Command {
    name: "move-leader",
    short: "Transfers leadership to another etcd cluster member.",
    usage: "move-leader <transferee-member-id>",
    long: "",
    flags: &[],
    run,
};

/// The endpoint without its scheme, as clientv3's log lines name it.
fn log_target(endpoint: &str) -> String {
    endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest).to_owned()
}

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(Failure::exit(exit::BAD_ARGS, "move-leader command needs 1 argument"));
    }
    let target = parse_member_id(&args[0]).map_err(|e| Failure::exit(exit::BAD_ARGS, e))?;
    ctx.setup()?;
    let endpoints = ctx.flags.strings("endpoints").to_vec();
    let mut leader = None;
    for endpoint in &endpoints {
        let status = ctx
            .call_on(endpoint, |client| async move { client.status().await })
            .map_err(|rpc| Failure::Rpc { rpc, target: log_target(endpoint) })?;
        if status.header.unwrap_or_default().member_id == status.leader {
            leader = Some((endpoint.clone(), status.leader));
            break;
        }
    }
    let Some((endpoint, leader_id)) = leader else {
        return Err(Failure::exit(exit::BAD_ARGS, format!("no leader endpoint given at [{}]", endpoints.join(" "))));
    };
    ctx.call_on(&endpoint, |client| async move { client.move_leader(target).await })
        .map_err(|rpc| Failure::Rpc { rpc, target: log_target(&endpoint) })?;
    let _ = writeln!(ctx.io.stdout, "Leadership transferred from {leader_id:x} to {target:x}");
    Ok(())
}
