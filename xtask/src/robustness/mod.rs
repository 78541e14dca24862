//! `cargo xtask robustness`: a 3-member cluster of real processes (`keel`,
//! or real etcd with `--target etcd`), each in its own network namespace,
//! under faults chosen by a seeded RNG (`nemesis`), with clients recording
//! every operation (`workload`); then every recorded answer is checked
//! (`check`): linearizability of the KV history, no acknowledged write
//! lost, etcd's watch guarantees and lease safety, with the checkers of
//! `keel-lincheck`.
//!
//! Everything the lab makes (namespaces, bridge, veths, iptables rules,
//! qdiscs, processes, the temp dir) is owned by values whose `Drop` removes
//! it, so an error, a panic or Ctrl-C (which drops the run's future) leaves
//! nothing behind; a run killed outright is cleaned up by the next one
//! (`net::sweep_stale`).

mod check;
mod cluster;
mod disk;
mod nemesis;
mod net;
mod watcher;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

pub use cluster::Target;
use cluster::{member_client, Cluster};
use nemesis::Nemesis;
use net::Net;
use watcher::Via;
use workload::{Clock, Recorder};

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Which store to run: keel, or real etcd as the reference.
    #[arg(long, value_enum, default_value_t = Target::Keel)]
    pub target: Target,
    /// The keel binary.
    #[arg(long, default_value_os_t = default_keel_bin())]
    pub keel_bin: PathBuf,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// How long clients run under faults (e.g. 90s, 2m, 30m).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub duration: Duration,
    /// The seed of every random choice (faults, operations); printed, so a
    /// run can be replayed. Random when not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// KV clients per member.
    #[arg(long, default_value_t = 2)]
    pub clients_per_member: usize,
    /// Keep the data dirs and member logs (their folder is printed).
    #[arg(long)]
    pub keep: bool,
    /// Run without faults (a baseline).
    #[arg(long)]
    pub no_faults: bool,
    /// The suite's test of itself: KV gets read the member's own copy
    /// (serializable), which a member cut off from the leader serves stale,
    /// so the run must report `not-linearizable` once a partition has hit.
    #[arg(long)]
    pub serializable_reads: bool,
}

fn default_keel_bin() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("/var/tmp/keel-target"), PathBuf::from);
    target.join("debug/keel")
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected a number and s, m or h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (s, m or h)")),
    }
}

/// Why the suite cannot run on this machine (no network namespaces), or
/// `None`.
pub fn unavailable() -> Option<String> {
    net::netns_unavailable()
}

pub fn run(options: &Options) -> Result<()> {
    let seed = options.seed.unwrap_or_else(rand::random);
    println!(
        "robustness: target {:?}, seed {seed} (replay with --seed {seed}), duration {:?}",
        options.target, options.duration
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // Dropping `lab` (on an interrupt) runs every cleanup.
        tokio::select! {
            report = lab(options, seed) => report,
            _ = tokio::signal::ctrl_c() => bail!("interrupted (Ctrl-C); the lab was cleaned up"),
            _ = terminate.recv() => bail!("terminated (SIGTERM); the lab was cleaned up"),
        }
    });
    // Tasks still holding clients are dropped with the runtime, before the
    // verdict is printed.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = report?;
    report.print();
    if report.anomalies() > 0 {
        bail!("{} anomalies against {:?} (seed {seed})", report.anomalies(), options.target);
    }
    Ok(())
}

async fn lab(options: &Options, seed: u64) -> Result<check::Report> {
    let bin = match options.target {
        Target::Keel => options.keel_bin.clone(),
        Target::Etcd => options.etcd_bin.clone(),
    };
    if options.target == Target::Keel && !bin.exists() {
        bail!("{} does not exist (build it: cargo build --workspace --all-targets, or pass --keel-bin)", bin.display());
    }
    if let Some(why) = net::netns_unavailable() {
        bail!("network namespaces are unavailable here, so no fault can be injected: {why}");
    }
    net::sweep_stale();
    disk::sweep_stale();
    let dir = tempfile::Builder::new().prefix(&disk::temp_prefix()).tempdir()?;
    let net = Net::create(3).context("creating the lab network")?;
    let faketime = cluster::faketime(options.target);
    let disks =
        disk::Disks::create(dir.path(), 3).map_err(|e| format!("member disks that can lose unsynced writes: {e:#}"));
    let no_disks = disks.as_ref().err().cloned();
    let mut cluster = Cluster::start(&net, &bin, dir.path(), faketime.as_ref().ok().cloned(), disks.ok())?;
    let endpoints = cluster.endpoints();
    println!("robustness: members at {}, clients on {}", endpoints.join(" "), net.host);
    if let Err(err) = wait_ready(&endpoints, Duration::from_secs(30)).await {
        let logs: String = (0..3).map(|i| format!("--- m{i}\n{}\n", cluster.log_tail(i, 2000))).collect();
        bail!("{err:#}\n{logs}");
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let clock = Clock(Instant::now());
    let deadline = Instant::now() + options.duration;
    let rec = Arc::new(Recorder::default());
    let (stop_watchers, stop) = watch::channel(false);
    let mut watch_seen = Vec::new();
    let mut tasks = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let (seen, seen_rx) = watch::channel(0);
        watch_seen.push(seen_rx);
        let name = format!("watch-m{i}");
        let task = watcher::watcher(name, endpoint.clone(), 1, Via::Raw, clock, rec.clone(), seen, stop.clone());
        tasks.push(tokio::spawn(task));
        for c in 0..options.clients_per_member {
            let id = (i * options.clients_per_member + c) as u64;
            tasks.push(tokio::spawn(workload::kv_client(
                id,
                endpoint.clone(),
                rng.gen(),
                options.serializable_reads,
                clock,
                deadline,
                rec.clone(),
            )));
        }
        let lock = workload::lock_client(200 + i as u64, endpoint.clone(), rng.gen(), clock, deadline, rec.clone());
        tasks.push(tokio::spawn(lock));
        if i < 2 {
            tasks.push(tokio::spawn(workload::lease_client(
                100 + i as u64,
                endpoint.clone(),
                rng.gen(),
                clock,
                deadline,
                rec.clone(),
            )));
        }
    }
    // A watch opened part-way, from a revision in the past: it must replay
    // history and then go on live.
    let late = {
        let (seen, seen_rx) = watch::channel(0);
        watch_seen.push(seen_rx);
        let (rec, stop, endpoints) = (rec.clone(), stop.clone(), endpoints.clone());
        let delay = options.duration / 3;
        let member = rng.gen_range(0..endpoints.len());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let from = current_revision(&endpoints).await.map_or(1, |r| (r / 2).max(1));
            watcher::watcher(
                format!("late-watch-m{member}-from-{from}-keel-client"),
                endpoints[member].clone(),
                from,
                Via::Client,
                clock,
                rec,
                seen,
                stop,
            )
            .await;
        })
    };

    let nemesis_rng = StdRng::seed_from_u64(rng.gen());
    let mut nemesis = Nemesis::new(nemesis_rng, clock, &net, faketime.err(), no_disks);
    if !options.no_faults {
        nemesis.run(&mut cluster, &net, deadline).await;
    }
    // The clients stop at the deadline; a call in flight ends within its timeout.
    tokio::time::sleep_until(deadline.into()).await;
    let workload_end = clock.now();
    for task in std::mem::take(&mut tasks) {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    // Crashes first: healing restarts whatever is not running.
    let mut crashed = std::mem::take(&mut nemesis.timeline.crashed);
    crashed.extend(cluster.crashed());
    nemesis::heal(&mut cluster, &net)?;
    wait_ready(&endpoints, Duration::from_secs(60)).await.context("the cluster did not recover after the faults")?;

    // Abandoned leases expire within their TTL after the last renewal (a
    // new leader renews them all once); then every lease must be gone.
    let lease_grace = Duration::from_secs(workload::LEASE_TTL_SECS as u64 * 2 + 3);
    tokio::time::sleep(lease_grace).await;

    // A last write every watcher must deliver: up to it, they must have
    // everything.
    let sentinel = member_client(&endpoints[0], Duration::from_secs(5)).await?.put(workload::SENTINEL, "end").await?;
    let end_revision = sentinel.header.map_or(0, |h| h.revision) as u64;
    // Each watcher gets 20 s to deliver it (the report says which did not).
    let waited = Instant::now() + Duration::from_secs(20);
    for seen in &mut watch_seen {
        let _ = tokio::time::timeout_at(waited.into(), seen.wait_for(|&r| r >= end_revision)).await;
    }
    let _ = stop_watchers.send(true);
    let _ = late.await;
    let checked_at = clock.now();

    let finals = check::collect_finals(&endpoints, end_revision).await;
    let report = check::Report::build(check::Inputs {
        target: options.target,
        seed,
        duration: Duration::from_micros(workload_end),
        rec: &rec,
        timeline: &nemesis.timeline,
        crashed,
        end_revision,
        checked_at,
        finals,
    });
    if options.keep {
        let kept = dir.keep();
        println!("robustness: data dirs and logs kept in {}", kept.display());
    }
    drop(cluster);
    drop(net);
    Ok(report)
}

/// Waits until every member answers a linearizable read.
async fn wait_ready(endpoints: &[String], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for endpoint in endpoints {
        loop {
            let ok = match member_client(endpoint, Duration::from_secs(2)).await {
                Ok(client) => client.get("/rb/ready").await.is_ok(),
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{endpoint} did not answer a linearizable read within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn current_revision(endpoints: &[String]) -> Option<u64> {
    for endpoint in endpoints {
        let Ok(client) = member_client(endpoint, Duration::from_secs(2)).await else { continue };
        if let Ok(r) = client.get("/rb/ready").await {
            return r.header.map(|h| h.revision as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
