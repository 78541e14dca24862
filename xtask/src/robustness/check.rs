//! After the faults: what every member holds at the end, every recorded
//! answer checked against it, and the report.
//!
//! The reference history is a watch from revision 1 on each member, opened
//! once the cluster is whole again; all members must give the same one.
//! The KV history's writes of unknown outcome are resolved against it
//! (`keel_lincheck::persisted`), then the whole history is searched for a
//! linearization (`keel_lincheck::check`, split by key).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use keel_client::{GetOptions, WatchOptions};
use keel_lincheck::events::{check_reference, Event};
use keel_lincheck::lease::check_leases;
use keel_lincheck::lock::{check_fencing, LockAnomaly};
use keel_lincheck::persisted::{check_acknowledged, final_values, resolve_unknown, Resolution};
use keel_lincheck::watch::check_watch;
use keel_lincheck::{check, KvModel, Verdict};
use tokio_stream::StreamExt;

use super::cluster::{member_client, Target};
use super::nemesis::{Fault, Timeline};
use super::watcher::reopen_summary;
use super::workload::{fencing_token, Kind, Recorder, ALL_PREFIX, FENCED_KEY, KV_PREFIX, LEASE_TTL_SECS, LOCK_NAME};

/// What one member holds at the end.
pub struct Final {
    pub member: String,
    /// Its history of `/rb/` from revision 1 up to the sentinel, or why not.
    pub history: Result<Vec<Event>, String>,
    /// Its `/rb/kv/` keys (a serializable read: its own copy).
    pub values: Result<BTreeMap<Vec<u8>, Vec<u8>>, String>,
    /// HashKV at the sentinel's revision.
    pub hash: Result<u32, String>,
}

pub async fn collect_finals(endpoints: &[String], end_revision: u64) -> Vec<Final> {
    let mut finals = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let history = history(endpoint, end_revision).await;
        let values = async {
            let client = member_client(endpoint, Duration::from_secs(5)).await.map_err(|e| format!("{e:#}"))?;
            let found = client
                .get_with(KV_PREFIX, GetOptions::new().with_prefix().with_serializable())
                .await
                .map_err(|e| e.to_string())?;
            Ok(found.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        }
        .await;
        let hash = async {
            let client = member_client(endpoint, Duration::from_secs(10)).await.map_err(|e| format!("{e:#}"))?;
            client.hash_kv(end_revision as i64).await.map(|h| h.hash).map_err(|e| e.to_string())
        }
        .await;
        finals.push(Final { member: format!("m{i}"), history, values, hash });
    }
    finals
}

async fn history(endpoint: &str, end_revision: u64) -> Result<Vec<Event>, String> {
    let client = member_client(endpoint, Duration::from_secs(5)).await.map_err(|e| format!("{e:#}"))?;
    let options = WatchOptions::new().with_prefix().with_start_revision(1);
    let mut stream = client.watch(ALL_PREFIX, options).await.map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    let collect = async {
        while let Some(response) = stream.next().await {
            let response = response.map_err(|e| e.to_string())?;
            events.extend(response.events.iter().map(super::workload::event));
            if events.last().is_some_and(|e: &Event| e.revision >= end_revision) {
                return Ok(());
            }
        }
        Err("the watch ended before the last revision".to_owned())
    };
    let within = history_budget(end_revision);
    match tokio::time::timeout(within, collect).await {
        Ok(Ok(())) => Ok(events),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("the history up to revision {end_revision} did not arrive within {within:?}")),
    }
}

/// How long a member may take to replay its history from revision 1: 30 s,
/// and a second per 2,000 revisions on top. etcd replays a watch from the
/// past about 1,000 revisions per 100 ms sync, so a 30-minute run's
/// quarter million revisions take it longer than 30 s on a busy machine.
fn history_budget(end_revision: u64) -> Duration {
    Duration::from_secs(30 + end_revision / 2_000)
}

pub struct Inputs<'a> {
    pub target: Target,
    pub seed: u64,
    pub duration: Duration,
    pub rec: &'a Recorder,
    pub timeline: &'a Timeline,
    pub crashed: Vec<(String, String)>,
    pub end_revision: u64,
    pub checked_at: u64,
    pub finals: Vec<Final>,
}

pub struct Report {
    text: String,
    /// One line with the figures the benchmark compares.
    summary: String,
    anomalies: BTreeMap<&'static str, Vec<String>>,
}

/// The linearizability search's limit; beyond it the verdict is
/// `linearizability-inconclusive`, which fails the run.
const SEARCH_BUDGET: Duration = Duration::from_secs(120);

/// Details printed per kind of anomaly; the count is always complete.
const SHOWN: usize = 5;

impl Report {
    pub fn anomalies(&self) -> usize {
        self.anomalies.values().map(Vec::len).sum()
    }

    pub fn print(&self) {
        println!("{}", self.text);
        if self.anomalies.is_empty() {
            println!("anomalies: none");
        }
        for (kind, list) in &self.anomalies {
            println!("anomalies: {kind}: {}", list.len());
            for detail in list.iter().take(SHOWN) {
                println!("  {detail}");
            }
        }
        println!("{}; {} anomalies", self.summary, self.anomalies());
    }

    pub fn build(inputs: Inputs<'_>) -> Report {
        let mut found: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut add = |kind: &'static str, detail: String| found.entry(kind).or_default().push(detail);
        let mut text = String::new();
        let secs = inputs.duration.as_secs_f64().max(1e-3);
        let _ = writeln!(
            text,
            "robustness report: target {:?}, seed {}, {:.0} s of load",
            inputs.target, inputs.seed, secs
        );

        // Throughput and latency.
        let samples = inputs.rec.samples.lock().clone();
        let ok = samples.iter().filter(|s| s.ok).count();
        let _ = writeln!(
            text,
            "requests: {} ({} ok, {} failed or timed out); {:.1} ok/s; p99 {} overall",
            samples.len(),
            ok,
            samples.len() - ok,
            ok as f64 / secs,
            p99(samples.iter().filter(|s| s.ok).map(|s| s.ret - s.call))
        );
        let mut kinds: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.ok) {
            kinds.entry(s.kind).or_default().push(s.ret - s.call);
        }
        for (kind, latencies) in &kinds {
            let _ = writeln!(text, "  {kind:?}: {} ok, p99 {}", latencies.len(), p99(latencies.iter().copied()));
        }

        // Faults and recovery.
        let timeline = inputs.timeline;
        let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
        for a in &timeline.applied {
            *counts.entry(a.fault).or_default() += 1;
        }
        let _ = writeln!(text, "faults applied: {}", timeline.applied.len());
        for a in &timeline.applied {
            let _ = writeln!(
                text,
                "  {:>7.1}-{:<7.1} s {:?}: {}",
                a.start as f64 / 1e6,
                a.end as f64 / 1e6,
                a.fault,
                a.detail
            );
        }
        for (fault, n) in &counts {
            let _ = writeln!(text, "  {fault:?}: {n}");
        }
        for (fault, why) in &timeline.skipped {
            let passed = match timeline.passed.get(fault) {
                Some(n) => format!(" ({n} of its turns passed without a fault)"),
                None => String::new(),
            };
            let _ = writeln!(text, "  SKIPPED {fault:?}: {why}{passed}");
        }
        for (fault, why) in &timeline.failed {
            let _ = writeln!(text, "  FAILED TO APPLY {fault:?}: {why}");
        }
        let writes = |s: &&super::workload::Sample| s.ok && matches!(s.kind, Kind::Put | Kind::Cas | Kind::Delete);
        let mut recoveries = Vec::new();
        for a in timeline.applied.iter().filter(|a| a.on_leader) {
            let first = samples.iter().filter(writes).filter(|s| s.call >= a.start).map(|s| s.ret).min();
            let recovery = first.map(|r| r - a.start);
            let shown = recovery.map_or("no write succeeded".to_owned(), |r| format!("{:.2} s", r as f64 / 1e6));
            let _ = writeln!(text, "  recovery after {:?} ({}): first write acknowledged {shown}", a.fault, a.detail);
            if a.fault == Fault::PartitionLeader {
                recoveries.extend(recovery);
            }
        }
        let recovery = if recoveries.is_empty() {
            "no leader partition".to_owned()
        } else {
            let max = recoveries.iter().max().copied().unwrap_or(0);
            let mean = recoveries.iter().sum::<u64>() / recoveries.len() as u64;
            format!("mean {:.2} s, max {:.2} s over {}", mean as f64 / 1e6, max as f64 / 1e6, recoveries.len())
        };
        let _ = writeln!(text, "recovery after a leader partition (first acknowledged write): {recovery}");

        // The benchmark line (issue 19's performance point): requests invoked
        // while a fault was in place, against those invoked in quiet time.
        let faulty = |s: &super::workload::Sample| timeline.applied.iter().any(|a| s.call >= a.start && s.call < a.end);
        let in_faults: u64 = timeline.applied.iter().map(|a| a.end - a.start).sum();
        let during: Vec<_> = samples.iter().filter(|s| faulty(s)).collect();
        let quiet: Vec<_> = samples.iter().filter(|s| !faulty(s)).collect();
        let rate =
            |v: &[&super::workload::Sample], secs: f64| v.iter().filter(|s| s.ok).count() as f64 / secs.max(1e-3);
        let summary = format!(
            "summary: target {:?}, seed {}: {:.1} ok/s, p99 {}; under faults ({:.0} s) {:.1} ok/s, p99 {}, {} failed; \
             quiet {:.1} ok/s, p99 {}; recovery after a leader partition {recovery}",
            inputs.target,
            inputs.seed,
            ok as f64 / secs,
            p99(samples.iter().filter(|s| s.ok).map(|s| s.ret - s.call)),
            in_faults as f64 / 1e6,
            rate(&during, in_faults as f64 / 1e6),
            p99(during.iter().filter(|s| s.ok).map(|s| s.ret - s.call)),
            during.iter().filter(|s| !s.ok).count(),
            rate(&quiet, secs - in_faults as f64 / 1e6),
            p99(quiet.iter().filter(|s| s.ok).map(|s| s.ret - s.call)),
        );

        for (member, log) in &inputs.crashed {
            add("member-exited", format!("{member} exited by itself: {log}"));
        }

        // The reference, and every member agreeing with it.
        let Some(reference) = inputs.finals.iter().find_map(|f| f.history.as_ref().ok()).cloned() else {
            let why: Vec<String> = inputs
                .finals
                .iter()
                .filter_map(|f| f.history.as_ref().err().map(|e| format!("{}: {e}", f.member)))
                .collect();
            add("no-reference", format!("no member gave its history ({})", why.join("; ")));
            return Report { text, summary, anomalies: found };
        };
        let reference: Vec<Event> = reference.into_iter().filter(|e| e.revision <= inputs.end_revision).collect();
        for anomaly in check_reference(&reference) {
            add("reference-history", format!("{anomaly:?}"));
        }
        let expected_values: BTreeMap<Vec<u8>, Vec<u8>> =
            final_values(&reference).into_iter().filter(|(k, _)| k.starts_with(KV_PREFIX.as_bytes())).collect();
        let mut hashes = BTreeMap::new();
        for f in &inputs.finals {
            match &f.history {
                Ok(h) => {
                    let h: Vec<&Event> = h.iter().filter(|e| e.revision <= inputs.end_revision).collect();
                    if h.len() != reference.len() || h.iter().zip(&reference).any(|(a, b)| *a != b) {
                        add("members-disagree", format!("{}'s history differs from the reference", f.member));
                    }
                }
                Err(e) => add("members-disagree", format!("{} gave no history: {e}", f.member)),
            }
            match &f.values {
                Ok(v) if *v != expected_values => {
                    add("final-read", format!("{} serves {} keys unlike its history's end", f.member, v.len()))
                }
                Ok(_) => {}
                Err(e) => add("final-read", format!("{} could not be read: {e}", f.member)),
            }
            match &f.hash {
                Ok(h) => {
                    hashes.insert(f.member.clone(), *h);
                }
                Err(e) => {
                    let _ = writeln!(text, "note: HashKV on {}: {e}", f.member);
                }
            }
        }
        let distinct: std::collections::BTreeSet<u32> = hashes.values().copied().collect();
        if distinct.len() > 1 {
            add("hashkv-mismatch", format!("HashKV at revision {}: {hashes:?}", inputs.end_revision));
        }
        let _ = writeln!(text, "history: {} events up to revision {}", reference.len(), inputs.end_revision);

        // Watches.
        let watches: Vec<_> = inputs.rec.watches.lock().iter().map(|w| w.lock().clone()).collect();
        for mut log in watches {
            // The sentinel is under the watched prefix: a watcher that got
            // it was waited for, and must have everything before it.
            let highest = log.deliveries.iter().flat_map(|d| &d.events).map(|e| e.revision).max().unwrap_or(0);
            if highest >= inputs.end_revision {
                log.caught_up_to = Some(inputs.end_revision);
            } else {
                add(
                    "watch-stalled",
                    format!("{} did not deliver revision {} within 20 s", log.name, inputs.end_revision),
                );
            }
            let delivered: usize = log.deliveries.iter().map(|d| d.events.len()).sum();
            let notified = log.deliveries.iter().filter(|d| d.progress.is_some()).count();
            let _ = writeln!(
                text,
                "  {}: {} events from revision {}, {} progress notifications, {}",
                log.name,
                delivered,
                log.start_revision,
                notified,
                reopen_summary(&inputs.rec.reopens.lock(), &log.name)
            );
            for anomaly in check_watch(&reference, &log) {
                let kind = match anomaly {
                    keel_lincheck::watch::WatchAnomaly::Unordered { .. } => "watch-unordered",
                    keel_lincheck::watch::WatchAnomaly::Duplicate { .. } => "watch-duplicate",
                    keel_lincheck::watch::WatchAnomaly::SplitRevision { .. } => "watch-not-atomic",
                    keel_lincheck::watch::WatchAnomaly::Missing { .. } => "watch-missing-event",
                    keel_lincheck::watch::WatchAnomaly::Unexpected { .. } => "watch-unexpected-event",
                    keel_lincheck::watch::WatchAnomaly::NotBookmarkable { .. } => "watch-not-bookmarkable",
                };
                add(kind, format!("{anomaly:?}"));
            }
        }

        // Leases.
        let watches = inputs.rec.watches.lock().iter().map(|w| w.lock().clone()).collect::<Vec<_>>();
        let mut first_seen: BTreeMap<u64, u64> = BTreeMap::new();
        for log in &watches {
            for d in &log.deliveries {
                for e in &d.events {
                    let t = first_seen.entry(e.revision).or_insert(d.received);
                    *t = (*t).min(d.received);
                }
            }
        }
        let mut leases = inputs.rec.leases.lock().clone();
        let ttl = LEASE_TTL_SECS as u64 * 1_000_000;
        for lease in &mut leases {
            let promised = lease.renewals.iter().map(|r| r.received + r.ttl).max().unwrap_or(0);
            // A new leader renews every lease once when it takes over; the
            // grace before the check covers that and the expiry scan.
            lease.must_be_gone |= promised + ttl + 3_000_000 < inputs.checked_at;
        }
        let _ = writeln!(text, "leases: {}", leases.len());
        for anomaly in check_leases(&reference, &leases, |r| first_seen.get(&r).copied()) {
            let kind = match anomaly {
                keel_lincheck::lease::LeaseAnomaly::NotAtomic { .. } => "lease-keys-not-deleted-together",
                keel_lincheck::lease::LeaseAnomaly::KeysLeft { .. } => "lease-keys-left",
                keel_lincheck::lease::LeaseAnomaly::ExpiredEarly { .. } => "lease-expired-while-kept-alive",
            };
            add(kind, format!("{anomaly:?}"));
        }

        // The lock.
        let fenced = reference.iter().filter(|e| e.key == FENCED_KEY.as_bytes()).count();
        let _ = writeln!(text, "lock: {fenced} fenced writes");
        let queue = format!("{LOCK_NAME}/");
        for anomaly in check_fencing(&reference, queue.as_bytes(), FENCED_KEY.as_bytes(), fencing_token) {
            let kind = match anomaly {
                LockAnomaly::NotOwner { .. } => "lock-write-by-non-owner",
                LockAnomaly::TokenWentBack { .. } => "lock-fencing-token-went-back",
                LockAnomaly::Unreadable { .. } => "lock-unreadable-token",
            };
            add(kind, format!("{anomaly:?}"));
        }

        // The KV history.
        let history = inputs.rec.kv.lock().clone();
        let (resolved, Resolution { persisted, dropped, unresolved, unexplained }) =
            resolve_unknown(&history, &reference);
        let _ = writeln!(
            text,
            "kv history: {} operations; unknown outcomes: {persisted} found applied (deletes included), {dropped} not \
             applied or reads, {unresolved} deletes left unknown",
            history.len()
        );
        for event in unexplained {
            add("delete-nobody-asked-for", format!("{event:?}: no delete of the history can account for it"));
        }
        for lost in check_acknowledged(&history, &reference) {
            add("acknowledged-write-lost", format!("{:?} found {:?}", lost.operation, lost.found));
        }
        let started = Instant::now();
        let verdict = check(&KvModel, &resolved, Some(SEARCH_BUDGET));
        let took = started.elapsed().as_secs_f64();
        match verdict {
            Verdict::Linearizable => {
                let _ = writeln!(text, "linearizability: ok ({} operations checked in {took:.2} s)", resolved.len());
            }
            Verdict::NotLinearizable(c) => {
                add("not-linearizable", format!("(search took {took:.2} s) {}", c.explanation))
            }
            Verdict::Unknown => {
                add("linearizability-inconclusive", format!("the search ran out of its {} s", SEARCH_BUDGET.as_secs()))
            }
        }
        Report { text, summary, anomalies: found }
    }
}

fn p99(latencies: impl Iterator<Item = u64>) -> String {
    let mut v: Vec<u64> = latencies.collect();
    if v.is_empty() {
        return "-".to_owned();
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    format!("{:.1} ms", v[i] as f64 / 1e3)
}
