//! `bench snapshot`: a new member catching up from a snapshot of many keys
//! (the issue: "Snapshot of 1 M keys sent to a new member with less than
//! 64 MiB extra RSS on either side, and faster than etcd's").
//!
//! Each run starts one member with a small `--snapshot-count`, so that once
//! the keys are loaded its raft log has been compacted far past its start
//! (etcd 3.4 keeps a fixed 5,000 entries behind each snapshot, and Keel's
//! `--snapshot-catchup-entries` defaults to the same): a member added then can
//! only catch up from a snapshot. The run adds a second member through the
//! Cluster service (MemberAdd), starts it with `--initial-cluster-state
//! existing`, and samples both processes' VmRSS every 20 ms until the new
//! member serves the last key written from its own store (a serializable
//! Range at the leader's revision or later).
//!
//! Reported: the time from starting the new member until then; the leader's
//! peak RSS during catch-up above its RSS just before the add; the new
//! member's peak RSS. A peak is the larger of the samples and VmHWM (the
//! kernel's own high-water mark, which misses no spike between samples; the
//! leader's is reset just before the add, so it covers the catch-up alone),
//! and its RSS once caught up and idle for two seconds (holding the data
//! costs that much; its peak above it is what the transfer cost).
//!
//! `KEEL_BENCH_LOG_LEVEL=info` runs the servers at that log level and prints
//! the end of both members' logs after each run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::{MemberAddRequest, MemberListRequest, RangeRequest};
use tonic::transport::Endpoint;

use super::compare::{median, thousands};
use super::load;
use super::server::{free_ports, Server, Systems};
use super::workload::{check_key_size, key};

#[derive(Args, Debug)]
pub struct SnapshotOptions {
    /// Keys loaded before the new member is added (sequential: key i is i,
    /// zero-padded to --key-size).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes; every key's value is random and its own.
    #[arg(long, default_value_t = 100)]
    pub val_size: usize,
    /// Concurrent put clients while loading.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    #[arg(long, default_value_t = 8)]
    pub clients_per_conn: usize,
    /// Both servers' --snapshot-count: applied entries between snapshots,
    /// each of which lets the raft log go up to 5,000 entries behind it.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: usize,
    /// Add the new member as a learner rather than a voter. (etcd 3.4 then
    /// serves clients only once a first attempt to publish its name has timed
    /// out, 7 s after it has caught up: its time shows that, not the snapshot.)
    #[arg(long)]
    pub learner: bool,
    /// Rounds (each: fresh Keel, then fresh etcd).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    #[command(flatten)]
    pub systems: Systems,
}

/// Entries etcd 3.4 keeps behind a snapshot (fixed; Keel's default is the same).
const CATCH_UP_ENTRIES: usize = 5_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How often the new member is asked for the last key.
const POLL_EVERY: Duration = Duration::from_millis(5);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the caught-up member idles before its settled RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

/// One system's run.
struct Sample {
    load: Duration,
    catch_up: Duration,
    leader_before_kib: u64,
    leader_peak_kib: u64,
    joiner_peak_kib: u64,
    /// The new member's RSS once caught up and idle: what holding the data
    /// costs it, so its peak above this is what the transfer cost.
    joiner_settled_kib: u64,
}

impl Sample {
    fn leader_extra_kib(&self) -> u64 {
        self.leader_peak_kib.saturating_sub(self.leader_before_kib)
    }

    fn line(&self, round: usize, system: &str, keys: usize) -> String {
        format!(
            "round {round} {system:4}: load {:6.1} s ({:6.0} puts/s)  caught up in {:6.2} s  leader RSS {:5.0} MiB before, \
             +{:4.0} MiB at peak  new member peak RSS {:5.0} MiB ({:5.0} MiB settled)",
            self.load.as_secs_f64(),
            keys as f64 / self.load.as_secs_f64(),
            self.catch_up.as_secs_f64(),
            mib(self.leader_before_kib),
            mib(self.leader_extra_kib()),
            mib(self.joiner_peak_kib),
            mib(self.joiner_settled_kib),
        )
    }

    fn columns(&self) -> [f64; 5] {
        [
            self.catch_up.as_secs_f64(),
            mib(self.leader_before_kib),
            mib(self.leader_extra_kib()),
            mib(self.joiner_peak_kib),
            mib(self.joiner_peak_kib.saturating_sub(self.joiner_settled_kib)),
        ]
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Every round's row, then each system's medians and Keel's over etcd's.
fn table(rounds: &[(usize, &str, &Sample)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| round | system | catch-up s | leader RSS before MiB | leader extra peak MiB | new member peak MiB | new member peak over settled MiB |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|");
    for (round, system, sample) in rounds {
        let [secs, before, extra, joiner, joiner_extra] = sample.columns();
        let _ = writeln!(
            out,
            "| {round} | {system} | {secs:.2} | {before:.0} | {extra:.0} | {joiner:.0} | {joiner_extra:.0} |"
        );
    }
    let medians = |system: &str| -> [f64; 5] {
        let of = |i: usize| median(rounds.iter().filter(|r| r.1 == system).map(|r| r.2.columns()[i]).collect());
        [of(0), of(1), of(2), of(3), of(4)]
    };
    let (keel, etcd) = (medians("keel"), medians("etcd"));
    let ratios: Vec<String> =
        keel.iter().zip(etcd).map(|(k, e)| if e > 0.0 { format!("{:.2}", k / e) } else { "-".to_owned() }).collect();
    let _ = writeln!(out, "| median | keel/etcd | {} |", ratios.join(" | "));
    out
}

pub async fn run(options: &SnapshotOptions) -> Result<()> {
    if options.rounds == 0 || options.clients == 0 || options.snapshot_count == 0 {
        bail!("--rounds, --clients and --snapshot-count must be positive");
    }
    // Fewer, and the new member could catch up from the log alone.
    if options.keys <= options.snapshot_count + CATCH_UP_ENTRIES {
        bail!(
            "--keys must exceed --snapshot-count + {CATCH_UP_ENTRIES} ({}), so that the log is compacted \
             and the new member needs a snapshot",
            options.snapshot_count + CATCH_UP_ENTRIES
        );
    }
    check_key_size(options.keys, options.key_size)?;
    let keel_bin = options.systems.keel_bin()?;
    println!(
        "snapshot: {} keys of {} bytes with random {}-byte values in one member (--snapshot-count {}); then a new \
         {} is added and started, and catches up ({} round{}, A B A B)",
        thousands(options.keys),
        options.key_size,
        options.val_size,
        thousands(options.snapshot_count),
        if options.learner { "learner" } else { "voter" },
        options.rounds,
        if options.rounds == 1 { "" } else { "s" },
    );
    let mut samples = Vec::new();
    for round in 0..options.rounds {
        for (system, bin) in [("keel", keel_bin.as_path()), ("etcd", options.systems.etcd_bin.as_path())] {
            let sample = measure(bin, system, options).await.with_context(|| format!("{system}, round {round}"))?;
            println!("{}", sample.line(round, system, options.keys));
            samples.push((round, system, sample));
        }
    }
    let rows: Vec<(usize, &str, &Sample)> = samples.iter().map(|(round, system, s)| (*round, *system, s)).collect();
    println!("\n{}", table(&rows));
    Ok(())
}

/// One fresh leader, loaded; one new member, timed until it has caught up.
/// Both are killed and their directories removed when this returns, however
/// it returns.
async fn measure(bin: &Path, system: &str, options: &SnapshotOptions) -> Result<Sample> {
    let root = &options.systems.data_root;
    let flags = ["--snapshot-count".to_owned(), options.snapshot_count.to_string()];
    let ports = free_ports()?;
    let initial = format!("m0=http://127.0.0.1:{}", ports.1);
    let mut leader = Server::start_member(bin, root, system, "m0", ports, &initial, &flags)?;
    leader.wait_ready().await?;
    // Until the leader has published its name it does not count as started,
    // and strict reconfiguration checks refuse to add a voter.
    wait_published(&leader.url).await?;

    let loaded = load::fill(
        std::slice::from_ref(&leader.url),
        load::FillShape {
            keys: options.keys,
            clients: options.clients,
            clients_per_conn: options.clients_per_conn,
            key_size: options.key_size,
            val_size: options.val_size,
        },
    )
    .await
    .context("loading")?;
    if let Some(error) = &loaded.first_error {
        bail!("loading: {} of {} puts failed, first: {error}", loaded.writes.errors, options.keys);
    }
    let last_key = key(options.keys - 1, options.key_size);
    let mut kv = load::connect(std::slice::from_ref(&leader.url), 1).await?.remove(0);
    let header = kv.range(RangeRequest { key: last_key.clone(), ..Default::default() }).await?.into_inner().header;
    let revision = header.context("a Range answered without a header")?.revision;

    let ports = free_ports()?;
    let peer_url = format!("http://127.0.0.1:{}", ports.1);
    let hwm_reset = leader.reset_peak_rss();
    let leader_before_kib = leader.rss_kib();
    let mut cluster = ClusterClient::connect(leader.url.clone()).await?;
    let add = MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: options.learner };
    cluster.member_add(add).await.context("member add")?;
    let initial = format!("{initial},m1={peer_url}");
    let joiner_flags = [&flags[..], &["--initial-cluster-state".to_owned(), "existing".to_owned()]].concat();
    let mut joiner = Server::start_member(bin, root, &format!("{system}-new"), "m1", ports, &initial, &joiner_flags)?;
    let started = Instant::now();

    let joiner_url = joiner.url.clone();
    let caught_up = serves(&joiner_url, &last_key, revision);
    tokio::pin!(caught_up);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut leader_peak_kib, mut joiner_peak_kib) = (leader_before_kib, 0);
    let catch_up = loop {
        tokio::select! {
            result = &mut caught_up => {
                let took = started.elapsed();
                result?;
                break took;
            }
            _ = tick.tick() => {
                leader_peak_kib = leader_peak_kib.max(leader.rss_kib());
                joiner_peak_kib = joiner_peak_kib.max(joiner.rss_kib());
                for (who, server) in [("leader", &mut leader), ("new member", &mut joiner)] {
                    if let Some(status) = server.exited() {
                        bail!("the {who} exited during catch-up ({status}):\n{}", server.log_tail(20));
                    }
                }
                // Here, not in `serves`: a request to a member that is not
                // serving yet may wait indefinitely.
                if started.elapsed() > CATCH_UP_TIMEOUT {
                    bail!("the new member did not serve the last key within {CATCH_UP_TIMEOUT:?}");
                }
            }
        }
    };
    if hwm_reset {
        leader_peak_kib = leader_peak_kib.max(leader.peak_rss_kib());
    }
    joiner_peak_kib = joiner_peak_kib.max(joiner.peak_rss_kib());
    // Before the check, whose answer (every key) would weigh on it.
    tokio::time::sleep(SETTLE).await;
    let joiner_settled_kib = joiner.rss_kib();
    check_complete(&joiner_url, options).await?;
    if std::env::var("KEEL_BENCH_LOG_LEVEL").is_ok() {
        eprintln!("new member: {} KiB anon, {} KiB file", joiner.rss_anon_kib(), joiner.rss_file_kib());
        eprintln!("--- leader\n{}\n--- new member\n{}", leader.log_tail(30), joiner.log_tail(30));
    }
    Ok(Sample {
        load: loaded.writes.total,
        catch_up,
        leader_before_kib,
        leader_peak_kib,
        joiner_peak_kib,
        joiner_settled_kib,
    })
}

/// Waits until every member of the cluster at `url` has published its name.
async fn wait_published(url: &str) -> Result<()> {
    let mut cluster = ClusterClient::connect(url.to_owned()).await?;
    let deadline = Instant::now() + PUBLISH_TIMEOUT;
    loop {
        let members = cluster.member_list(MemberListRequest { linearizable: false }).await?.into_inner().members;
        if members.iter().all(|m| !m.name.is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not publish its name within {PUBLISH_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the member at `url` serves `key` from its own store, at
/// `revision` or later; connection failures only mean it is still starting.
/// (etcd accepts connections from its start but serves them only once it
/// has joined, so an early request may wait for that.)
async fn serves(url: &str, key: &[u8], revision: i64) -> Result<()> {
    let endpoint = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true);
    let mut kv = None;
    loop {
        if kv.is_none() {
            kv = endpoint.connect().await.ok().map(KvClient::new);
        }
        if let Some(client) = &mut kv {
            let request = RangeRequest { key: key.to_vec(), serializable: true, ..Default::default() };
            if let Ok(answer) = client.range(request).await {
                let answer = answer.into_inner();
                if !answer.kvs.is_empty() && answer.header.is_some_and(|h| h.revision >= revision) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The new member holds every key (untimed: the clock stopped at the last one).
async fn check_complete(url: &str, options: &SnapshotOptions) -> Result<()> {
    let mut kv = load::connect(&[url.to_owned()], 1).await?.remove(0);
    let request =
        RangeRequest { key: vec![0], range_end: vec![0], serializable: true, count_only: true, ..Default::default() };
    let count = kv.range(request).await.context("counting the new member's keys")?.into_inner().count;
    if count != options.keys as i64 {
        bail!("the new member holds {count} keys, not {}", options.keys);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(catch_up_ms: u64, before_mib: u64, peak_mib: u64, joiner_mib: u64) -> Sample {
        Sample {
            load: Duration::from_secs(10),
            catch_up: Duration::from_millis(catch_up_ms),
            leader_before_kib: before_mib * 1024,
            leader_peak_kib: peak_mib * 1024,
            joiner_peak_kib: joiner_mib * 1024,
            joiner_settled_kib: joiner_mib * 1024 * 3 / 4,
        }
    }

    #[test]
    fn the_table_shows_every_round_and_divides_keel_by_etcd() {
        let (keel, etcd) = (sample(1_000, 300, 340, 100), sample(4_000, 600, 760, 400));
        let table = table(&[(0, "keel", &keel), (0, "etcd", &etcd)]);
        assert!(table.contains("| 0 | keel | 1.00 | 300 | 40 | 100 | 25 |"), "{table}");
        assert!(table.contains("| 0 | etcd | 4.00 | 600 | 160 | 400 | 100 |"), "{table}");
        assert!(table.contains("| median | keel/etcd | 0.25 | 0.50 | 0.25 | 0.25 | 0.25 |"), "{table}");
    }
}
