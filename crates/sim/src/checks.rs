//! What a finished run must show.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use keel_lincheck::{check as check_linearizable, KvModel, Verdict};
use keel_proto::etcdserverpb::RangeRequest;
use keel_proto::mvccpb::event::EventType;
use parking_lot::Mutex;

use crate::workload::{History, WatchedEvent, KEY_PREFIX, LEASE_PREFIX};
use crate::world::{Report, World};
use crate::SimConfig;

/// The checker's time budget for one history (it reports "unknown" past it,
/// which fails the run: a history too hard to check is a finding too).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn check(config: &SimConfig, world: &Arc<Mutex<World>>, history: History) -> Result<Report, String> {
    let _ = config;
    if let Some(problem) = history.incomplete.first() {
        return Err(problem.clone());
    }
    let stores = world.lock().stores();
    let Some((first_url, first)) = stores.first().cloned() else {
        return Err("no member is running at the end".into());
    };

    // The members converged: the same revision, the same keys.
    let everything = |kv: &keel_mvcc::KvStore| {
        kv.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() })
            .map(|r| r.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    };
    let reference = everything(&first)?;
    for (url, kv) in &stores[1..] {
        if kv.current_revision() != first.current_revision() || everything(kv)? != reference {
            return Err(format!(
                "members diverged: {first_url} at revision {} and {url} at revision {}",
                first.current_revision(),
                kv.current_revision()
            ));
        }
    }
    if let Some((key, _, _)) = reference.iter().find(|(key, _, _)| key.starts_with(LEASE_PREFIX)) {
        return Err(format!("{} outlived its lease", String::from_utf8_lossy(key)));
    }
    if let Some(id) = history.revoked_but_alive.first() {
        return Err(format!("lease {id:x} was still alive after its revoke was acknowledged"));
    }

    // One history of events under the watched prefix.
    let events: Vec<WatchedEvent> = first
        .events_between(1, 0, usize::MAX)
        .map_err(|e| format!("reading the history back: {e}"))?
        .into_iter()
        .filter_map(|event| {
            let kv = event.kv?;
            kv.key.starts_with(KEY_PREFIX).then(|| WatchedEvent {
                revision: kv.mod_revision,
                key: kv.key,
                value: (event.r#type == EventType::Put as i32).then_some(kv.value),
            })
        })
        .collect();
    for (key, value, revision) in &history.acked_puts {
        let found = events.iter().any(|e| e.revision == *revision && &e.key == key && e.value.as_ref() == Some(value));
        if !found {
            return Err(format!(
                "acknowledged put of {}={} at revision {revision} is not in the history",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ));
        }
    }
    let mut watch_events = 0;
    for (n, watch) in history.watches.iter().enumerate() {
        if let Some(error) = watch.errors.first() {
            return Err(format!("watcher {n}: {error}"));
        }
        let from = events.iter().position(|e| e.revision >= watch.start).unwrap_or(events.len());
        let expected = &events[from..];
        if let Some(i) = (0..watch.events.len()).find(|&i| expected.get(i) != Some(&watch.events[i])) {
            return Err(format!(
                "watcher {n} saw {:?} as its event {i}, where the history has {:?}",
                watch.events[i],
                expected.get(i)
            ));
        }
        watch_events += watch.events.len();
    }

    match check_linearizable(&KvModel, &history.kv, Some(CHECK_TIMEOUT)) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable(counterexample) => {
            return Err(format!("the client history is not linearizable: {}", counterexample.explanation))
        }
        Verdict::Unknown => return Err("the linearizability check timed out".into()),
    }

    let mut report = Report {
        operations: history.kv.len(),
        acknowledged: history.kv.iter().filter(|op| op.output().is_some()).count(),
        unknown: history.kv.iter().filter(|op| op.output().is_none()).count(),
        watch_events,
        faults: world.lock().log.clone(),
        final_revision: first.current_revision(),
        trace: 0,
    };
    let mut hasher = DefaultHasher::new();
    format!("{:?}", history.kv).hash(&mut hasher);
    history.watches.iter().for_each(|w| w.events.hash(&mut hasher));
    report.hash(&mut hasher);
    report.trace = hasher.finish();
    Ok(report)
}
