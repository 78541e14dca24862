//! Service discovery: register this instance under a prefix with a leased
//! key kept alive in the background, list the instances, and print every
//! change to the list until Ctrl-C (or `--run-for`). On exit the lease is
//! revoked, which deregisters the instance at once; if the process dies
//! instead, the key disappears when the lease expires.
//!
//! ```text
//! cargo run -p keel-client --example service_discovery -- --instance a --addr 10.0.0.1:80
//! cargo run -p keel-client --example service_discovery -- --instance b --addr 10.0.0.2:80
//! ```

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use keel_client::proto::mvccpb::event::EventType;
use keel_client::{Client, ClientOptions, GetOptions, PutOptions, WatchOptions};
use tokio_stream::StreamExt;

#[derive(Parser, Debug)]
struct Args {
    /// Comma-separated etcd or Keel endpoints.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Where instances of the service register.
    #[arg(long, default_value = "/services/demo/")]
    prefix: String,
    /// This instance's name (default: instance-<pid>).
    #[arg(long)]
    instance: Option<String>,
    /// The address this instance advertises.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: i64,
    /// Exit after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    run_for: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = Client::connect(args.endpoints.clone(), ClientOptions::default())
        .await
        .with_context(|| format!("connecting to {:?}", args.endpoints))?;
    let instance = args.instance.clone().unwrap_or_else(|| format!("instance-{}", std::process::id()));
    let key = format!("{}{instance}", args.prefix);

    let lease = client.lease_grant(args.ttl, 0).await?;
    client.put_with(key.clone(), args.addr.clone(), PutOptions::new().with_lease(lease.id)).await?;
    let mut keep_alive = client.lease_keep_alive(lease.id).await?;
    println!("registered {key} -> {} (lease {:x}, ttl {}s)", args.addr, lease.id, lease.ttl);

    let listed = client.get_with(args.prefix.clone(), GetOptions::new().with_prefix()).await?;
    let revision = listed.header.as_ref().context("range response without header")?.revision;
    println!("instances at revision {revision}:");
    for kv in &listed.kvs {
        println!("  {} -> {}", name(&kv.key, &args.prefix), String::from_utf8_lossy(&kv.value));
    }

    // From the revision after the listing: no change is missed or shown twice.
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1).with_prev_kv();
    let mut changes = client.watch(args.prefix.clone(), options).await?;
    let stop = async {
        match args.run_for {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            renewal = keep_alive.next() => match renewal {
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("registration lost: {e}"),
                None => anyhow::bail!("keep-alive stopped"),
            },
            change = changes.next() => {
                let change = change.context("watch ended")??;
                for event in change.events {
                    let Some(kv) = event.kv else { continue };
                    if event.r#type == EventType::Delete as i32 {
                        println!("- {} (revision {})", name(&kv.key, &args.prefix), kv.mod_revision);
                    } else {
                        let verb = if event.prev_kv.is_some() { "~" } else { "+" };
                        println!(
                            "{verb} {} -> {} (revision {})",
                            name(&kv.key, &args.prefix),
                            String::from_utf8_lossy(&kv.value),
                            kv.mod_revision
                        );
                    }
                }
            }
        }
    }

    client.lease_revoke(lease.id).await?;
    println!("deregistered {key}");
    Ok(())
}

fn name<'a>(key: &'a [u8], prefix: &str) -> std::borrow::Cow<'a, str> {
    String::from_utf8_lossy(key.strip_prefix(prefix.as_bytes()).unwrap_or(key))
}
