//! The clients: KV readers and writers whose every call and answer goes
//! into the history, watchers that follow the key space across members
//! (resuming after the last revision they saw, as clientv3 does), and a
//! lease user that grants, keeps alive, revokes and abandons leases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_lincheck::{KvInput, KvOperation, KvOutput, Operation};
use keel_node::{Member, NodeError};
use keel_proto::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use keel_proto::mvccpb::event::EventType;
use keel_watch_hub::{Delivery, WatchSpec};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use crate::world::World;
use crate::SimConfig;

/// The simulation runs with auth off: every request is anonymous.
static ANYONE: keel_auth::AuthInfo = keel_auth::AuthInfo { user: String::new(), revision: 0 };

/// A client gives up on a call after this long: its outcome is unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const FINAL_READ_ATTEMPT: Duration = Duration::from_millis(500);
const FINAL_READS_WITHIN: Duration = Duration::from_secs(3);
/// The KV clients' keys share this prefix; the watchers watch it.
pub(crate) const KEY_PREFIX: &[u8] = b"k";
pub(crate) const LEASE_PREFIX: &[u8] = b"lease/";

/// Everything the clients saw.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) kv: Vec<KvOperation>,
    pub(crate) watches: Vec<WatchLog>,
    pub(crate) acked_puts: Vec<AckedPut>,
    /// Leases whose revoke was acknowledged.
    pub(crate) revoked: Vec<i64>,
    /// Leases still found after their revoke was acknowledged.
    pub(crate) revoked_but_alive: Vec<i64>,
    /// Final reads that could not be made.
    pub(crate) incomplete: Vec<String>,
}

/// An acknowledged put: key, value, revision.
pub(crate) type AckedPut = (Vec<u8>, Vec<u8>, i64);

/// One watcher's events, across every member it watched through.
#[derive(Debug, Default)]
pub(crate) struct WatchLog {
    pub(crate) start: i64,
    pub(crate) events: Vec<WatchedEvent>,
    pub(crate) errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WatchedEvent {
    pub(crate) revision: i64,
    pub(crate) key: Vec<u8>,
    /// `None` for a delete.
    pub(crate) value: Option<Vec<u8>>,
}

/// Logical time: call and return events in the order they happened.
#[derive(Default)]
struct Recorder {
    clock: AtomicU64,
    acked_puts: Mutex<Vec<AckedPut>>,
}

impl Recorder {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) struct Workload {
    clients: Vec<JoinHandle<Vec<KvOperation>>>,
    watchers: Vec<JoinHandle<WatchLog>>,
    leases: JoinHandle<(Vec<i64>, Vec<i64>)>,
    recorder: Arc<Recorder>,
    keys: usize,
}

impl Workload {
    pub(crate) fn start(config: &SimConfig, world: Arc<Mutex<World>>, stop: Arc<AtomicBool>) -> Workload {
        let recorder = Arc::new(Recorder::default());
        let clients = (0..config.clients as u64)
            .map(|id| {
                let rng = StdRng::seed_from_u64(config.seed.wrapping_mul(0x9e37_79b9).wrapping_add(id));
                let client = KvClient { id, keys: config.keys, stale_reads: config.stale_reads };
                tokio::spawn(kv_client(client, rng, world.clone(), stop.clone(), recorder.clone()))
            })
            .collect();
        let watchers = (0..2u64)
            .map(|id| {
                let rng = StdRng::seed_from_u64(config.seed.wrapping_mul(0x85eb_ca6b).wrapping_add(id));
                tokio::spawn(watcher(rng, world.clone(), stop.clone()))
            })
            .collect();
        let rng = StdRng::seed_from_u64(config.seed.wrapping_mul(0xc2b2_ae35));
        let leases = tokio::spawn(lease_user(rng, world, stop));
        Workload { clients, watchers, leases, recorder, keys: config.keys }
    }

    /// Waits for the clients (stopped by now), then reads every key once more
    /// through a member, as the last operations of the history.
    pub(crate) async fn finish(self, world: &Arc<Mutex<World>>) -> History {
        let mut history = History::default();
        for client in self.clients {
            match client.await {
                Ok(ops) => history.kv.extend(ops),
                Err(err) => history.incomplete.push(format!("a client failed: {err}")),
            }
        }
        for watcher in self.watchers {
            match watcher.await {
                Ok(log) => history.watches.push(log),
                Err(err) => history.incomplete.push(format!("a watcher failed: {err}")),
            }
        }
        match self.leases.await {
            Ok((revoked, alive)) => {
                history.revoked = revoked;
                history.revoked_but_alive = alive;
            }
            Err(err) => history.incomplete.push(format!("the lease user failed: {err}")),
        }
        history.acked_puts = std::mem::take(&mut *self.recorder.acked_puts.lock());
        let _ = (world, self.keys);
        history
    }

    /// The final reads, made while the cluster still runs.
    pub(crate) fn final_reads(&self, world: Arc<Mutex<World>>) -> JoinHandle<Result<Vec<KvOperation>, String>> {
        let recorder = self.recorder.clone();
        let keys = self.keys;
        tokio::spawn(async move {
            let mut ops = Vec::new();
            let deadline = tokio::time::Instant::now() + FINAL_READS_WITHIN;
            for k in 0..keys {
                let key = key_name(k);
                // Any member that answers will do; a member cut off from the
                // others (or removed without knowing) does not answer.
                'key: loop {
                    let members = world.lock().members();
                    for member in members {
                        let call = recorder.tick();
                        let input = KvInput::Get { key: key.clone() };
                        let attempt =
                            tokio::time::timeout(FINAL_READ_ATTEMPT, perform(&member, &input, &recorder, false));
                        if let Ok(Ok(output)) = attempt.await {
                            ops.push(Operation::returned(u64::MAX, call, input, recorder.tick(), output));
                            break 'key;
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!("no member answered the final read of {}", String::from_utf8_lossy(&key)));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(ops)
        })
    }
}

/// A running member, picked at random; none (after a pause, so the caller
/// can loop) while every member is down.
async fn pick_member(world: &Mutex<World>, rng: &mut StdRng) -> Option<Arc<Member>> {
    let members = world.lock().members();
    if members.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return None;
    }
    Some(members[rng.gen_range(0..members.len())].clone())
}

fn key_name(k: usize) -> Vec<u8> {
    let mut key = KEY_PREFIX.to_vec();
    key.extend(k.to_string().as_bytes());
    key
}

struct KvClient {
    id: u64,
    keys: usize,
    stale_reads: bool,
}

async fn kv_client(
    client: KvClient,
    mut rng: StdRng,
    world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
) -> Vec<KvOperation> {
    let KvClient { id, keys, stale_reads } = client;
    let mut ops = Vec::new();
    let mut seen: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let Some(member) = pick_member(&world, &mut rng).await else { continue };
        let key = key_name(rng.gen_range(0..keys));
        let value = format!("c{id}-{n}").into_bytes();
        n += 1;
        let input = match rng.gen_range(0..10) {
            0..=3 => KvInput::Get { key },
            4..=6 => KvInput::Put { key, value },
            7 => KvInput::Delete { key },
            _ => {
                let expected = if rng.gen_bool(0.2) { None } else { seen.get(&key).cloned() };
                KvInput::CompareAndSwap { key, expected, new: value }
            }
        };
        let call = recorder.tick();
        let outcome = tokio::time::timeout(CALL_TIMEOUT, perform(&member, &input, &recorder, stale_reads)).await;
        let ret = recorder.tick();
        match outcome {
            Ok(Ok(output)) => {
                if let KvOutput::Get { value: Some(value), .. } = &output {
                    seen.insert(input.key().to_vec(), value.clone());
                }
                ops.push(Operation::returned(id, call, input, ret, output));
            }
            // Refused before it reached the log: it never happened.
            Ok(Err(NodeError::NoLeader | NodeError::TooManyRequests | NodeError::RequestTooLarge)) => {}
            // A read that failed had no effect.
            _ if matches!(input, KvInput::Get { .. }) => {}
            _ => ops.push(Operation::unknown(id, call, input)),
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
    }
    ops
}

async fn perform(member: &Member, input: &KvInput, recorder: &Recorder, stale: bool) -> Result<KvOutput, NodeError> {
    match input {
        KvInput::Get { key } => {
            let request = RangeRequest { key: key.clone(), serializable: stale, ..Default::default() };
            let response = member.range(&ANYONE, request).await?;
            let kv = response.kvs.into_iter().next();
            Ok(KvOutput::Get {
                mod_revision: kv.as_ref().map(|kv| kv.mod_revision as u64),
                value: kv.map(|kv| kv.value),
            })
        }
        KvInput::Put { key, value } => {
            let response = member
                .put(&ANYONE, PutRequest { key: key.clone(), value: value.clone(), ..Default::default() })
                .await?;
            let revision = response.header.map_or(0, |h| h.revision);
            recorder.acked_puts.lock().push((key.clone(), value.clone(), revision));
            Ok(KvOutput::Put { revision: Some(revision as u64) })
        }
        KvInput::Delete { key } => {
            let response =
                member.delete_range(&ANYONE, DeleteRangeRequest { key: key.clone(), ..Default::default() }).await?;
            Ok(KvOutput::delete(response.deleted == 1))
        }
        KvInput::CompareAndSwap { key, expected, new } => {
            let compare = match expected {
                Some(value) => Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Value as i32,
                    key: key.clone(),
                    target_union: Some(compare::TargetUnion::Value(value.clone())),
                    ..Default::default()
                },
                None => Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Version as i32,
                    key: key.clone(),
                    target_union: Some(compare::TargetUnion::Version(0)),
                    ..Default::default()
                },
            };
            let put = PutRequest { key: key.clone(), value: new.clone(), ..Default::default() };
            let response = member
                .txn(
                    &ANYONE,
                    TxnRequest {
                        compare: vec![compare],
                        success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put)) }],
                        failure: Vec::new(),
                    },
                )
                .await?;
            if response.succeeded {
                let revision = response.header.map_or(0, |h| h.revision);
                recorder.acked_puts.lock().push((key.clone(), new.clone(), revision));
            }
            Ok(KvOutput::compare_and_swap(response.succeeded))
        }
    }
}

/// Follows every change under [`KEY_PREFIX`] from revision 1, through one
/// member at a time; when that member stops answering, resumes on another
/// from the revision after the last one seen.
async fn watcher(mut rng: StdRng, world: Arc<Mutex<World>>, stop: Arc<AtomicBool>) -> WatchLog {
    let mut log = WatchLog { start: 1, ..WatchLog::default() };
    let mut next = 1i64;
    while !stop.load(Ordering::Acquire) {
        let Some(member) = pick_member(&world, &mut rng).await else { continue };
        // A small buffer, so the watcher falls behind and catches up.
        let (stream, mut deliveries) = member.watches().open_stream(4);
        let spec = WatchSpec::new(KEY_PREFIX, b"l".to_vec()).from_revision(next);
        if let Err(err) = stream.watch(spec).await {
            log.errors.push(format!("watch refused: {err}"));
            continue;
        }
        // Stay on this member for a while, then move on.
        let until = tokio::time::Instant::now() + Duration::from_millis(rng.gen_range(500..4000));
        loop {
            let delivery = tokio::select! {
                biased;
                delivery = deliveries.recv() => delivery,
                _ = tokio::time::sleep_until(until) => None,
            };
            let Some(delivery) = delivery else { break };
            match delivery {
                Delivery::Events { events, .. } => {
                    for event in events.iter() {
                        let Some(kv) = &event.kv else { continue };
                        let value = (event.r#type == EventType::Put as i32).then(|| kv.value.clone());
                        log.events.push(WatchedEvent { revision: kv.mod_revision, key: kv.key.clone(), value });
                        next = kv.mod_revision + 1;
                    }
                }
                Delivery::Canceled { compact_revision, .. } => {
                    log.errors.push(format!("watch canceled (compacted at {compact_revision})"));
                    break;
                }
                Delivery::Created { error: Some(err), .. } => {
                    log.errors.push(format!("watch not created: {err}"));
                    break;
                }
                Delivery::Created { .. } | Delivery::Progress { .. } => {}
            }
        }
    }
    log
}

/// Grants leases with a key each, keeps some alive for a while, revokes
/// some and abandons the rest (they must expire). Returns the leases whose
/// revoke was acknowledged, and those of them still found afterwards.
async fn lease_user(mut rng: StdRng, world: Arc<Mutex<World>>, stop: Arc<AtomicBool>) -> (Vec<i64>, Vec<i64>) {
    let (mut revoked, mut alive) = (Vec::new(), Vec::new());
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let Some(member) = pick_member(&world, &mut rng).await else { continue };
        let ttl = rng.gen_range(2..5);
        let grant =
            tokio::time::timeout(CALL_TIMEOUT, member.lease_grant(&ANYONE, LeaseGrantRequest { ttl, id: 0 })).await;
        let Ok(Ok(lease)) = grant else { continue };
        let mut key = LEASE_PREFIX.to_vec();
        key.extend(format!("{n}").as_bytes());
        n += 1;
        let put = PutRequest { key, value: b"held".to_vec(), lease: lease.id, ..Default::default() };
        let _ = tokio::time::timeout(CALL_TIMEOUT, member.put(&ANYONE, put)).await;
        for _ in 0..rng.gen_range(0..4) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
            let Some(member) = pick_member(&world, &mut rng).await else { break };
            let _ = tokio::time::timeout(CALL_TIMEOUT, member.lease_renew(&ANYONE, lease.id)).await;
        }
        if rng.gen_bool(0.5) {
            let Some(member) = pick_member(&world, &mut rng).await else { continue };
            let revoke = member.lease_revoke(&ANYONE, LeaseRevokeRequest { id: lease.id });
            if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, revoke).await {
                revoked.push(lease.id);
                // Gone for good, wherever asked.
                let Some(member) = pick_member(&world, &mut rng).await else { continue };
                if let Ok(Ok(ttl)) =
                    tokio::time::timeout(CALL_TIMEOUT, member.lease_time_to_live(&ANYONE, lease.id, false)).await
                {
                    if ttl.ttl > 0 {
                        alive.push(lease.id);
                    }
                }
            }
        }
    }
    (revoked, alive)
}
