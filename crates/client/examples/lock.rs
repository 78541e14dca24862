//! Workers competing for one lock, the plain way: a worker owns the lock
//! while the lock key exists with its name, and creates it only if it does
//! not exist yet (a txn comparing `create_revision == 0`). The key is
//! attached to the worker's lease, so a crashed holder loses the lock when
//! its lease expires. The key's create revision is the fencing token: a
//! later holder always has a greater one, so a resource can refuse writes
//! that carry an older token.
//!
//! This is the seed's lock, for showing the primitives; it wakes every
//! waiter on each release. `keel_client::concurrency::Mutex` queues waiters
//! fairly instead.
//!
//! ```text
//! cargo run -p keel-client --example lock -- --endpoints 127.0.0.1:2379 --workers 2
//! ```
//! Several processes can compete too: run it twice with `--workers 1` and
//! different `--name`s.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use keel_client::{
    txn_range, Client, ClientOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio_stream::StreamExt;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Comma-separated etcd or Keel endpoints.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// The lock key.
    #[arg(long, default_value = "/keel-example/lock")]
    key: String,
    /// Competing workers in this process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Worker name prefix (use different ones for different processes).
    #[arg(long, default_value = "worker")]
    name: String,
    /// Times each worker takes the lock.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// How long a worker holds the lock, in milliseconds.
    #[arg(long, default_value_t = 300)]
    hold_ms: u64,
    /// Lease TTL in seconds: how long a crashed holder blocks the others.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = Client::connect(args.endpoints.clone(), ClientOptions::default())
        .await
        .with_context(|| format!("connecting to {:?}", args.endpoints))?;
    let workers: Vec<_> = (0..args.workers)
        .map(|i| tokio::spawn(worker(client.clone(), args.clone(), format!("{}-{i}", args.name))))
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

async fn worker(client: Client, args: Args, me: String) -> Result<()> {
    let lease = client.lease_grant(args.ttl, 0).await?.id;
    // Renewed until dropped at the end of this function.
    let _keep_alive = client.lease_keep_alive(lease).await?;
    for _ in 0..args.rounds {
        let fencing = acquire(&client, &args.key, &me, lease).await?;
        println!("{me}: holds the lock, fencing revision {fencing}");
        tokio::time::sleep(Duration::from_millis(args.hold_ms)).await;
        // Delete only our own key: if the lease had expired meanwhile,
        // another worker may hold the lock now.
        let release = Txn::new()
            .when([Compare::create_revision(args.key.clone(), CompareOp::Equal, fencing)])
            .and_then([TxnOp::delete(args.key.clone(), DeleteOptions::new())]);
        if client.txn(release).await?.succeeded {
            println!("{me}: released");
        } else {
            println!("{me}: lost the lock before releasing it");
        }
    }
    client.lease_revoke(lease).await?;
    Ok(())
}

/// Takes the lock, waiting while someone else holds it; returns the
/// fencing revision.
async fn acquire(client: &Client, key: &str, me: &str, lease: i64) -> Result<i64> {
    loop {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, me, PutOptions::new().with_lease(lease))])
            .or_else([TxnOp::get(key, GetOptions::new())]);
        let response = client.txn(txn).await?;
        let revision = response.header.as_ref().context("txn response without header")?.revision;
        if response.succeeded {
            return Ok(revision);
        }
        if let Some(holder) = txn_range(&response, 0).and_then(|range| range.kvs.first()) {
            println!(
                "{me}: lock held by {} (fencing revision {}), waiting",
                String::from_utf8_lossy(&holder.value),
                holder.create_revision
            );
        }
        // Changes after the read: the delete that frees the lock, even if it
        // happened before the watch was created.
        let mut deletes =
            client.watch(key, WatchOptions::new().with_start_revision(revision + 1).with_no_put()).await?;
        deletes.next().await.context("watch ended")??;
    }
}
