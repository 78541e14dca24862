//! The clients: each records every operation with its invocation and
//! completion time (microseconds since the run began) and its outcome.
//!
//! - KV clients: linearizable gets, puts, compare-and-swap txns and deletes
//!   over a few keys under `/rb/kv/`; every value written is unique
//!   (`c<client>-<n>`), which is what lets the checkers find each write in
//!   the store's history. A write that fails is recorded as indeterminate:
//!   it may have been applied.
//! - Watchers (`super::watcher`): one per member on all of `/rb/`, from
//!   revision 1, plus one opened part-way from an earlier revision
//!   (resumption from history).
//! - Lease clients: grant, attach keys, then either keep the lease alive
//!   for a while and revoke it, or abandon it to expire.
//!
//! All loops stop at the deadline; every call has a timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_client::concurrency::{Mutex as EtcdMutex, Session, SessionOptions};
use keel_client::proto::mvccpb::event::EventType;
use keel_client::proto::mvccpb::KeyValue;
use keel_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use keel_lincheck::events::{Event, EventKind};
use keel_lincheck::lease::{LeaseLog, Renewal};
use keel_lincheck::watch::WatchLog;
use keel_lincheck::{KvInput, KvOperation, KvOutput, Operation};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cluster::member_client;

pub const KV_PREFIX: &str = "/rb/kv/";
pub const LEASE_PREFIX: &str = "/rb/lease/";
pub const ALL_PREFIX: &str = "/rb/";
pub const SENTINEL: &str = "/rb/end";
/// The lock's name: contenders queue under `/rb/lock/`.
pub const LOCK_NAME: &str = "/rb/lock";
/// Written only by the lock's owner, with its fencing token.
pub const FENCED_KEY: &str = "/rb/fenced";
/// Few keys, so operations collide and the checker has something to check.
pub const KEYS: usize = 6;
pub const LEASE_TTL_SECS: i64 = 5;
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The run's clock.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What kind of request a latency belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Get,
    Put,
    Cas,
    Delete,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    LeasePut,
    LockAcquire,
    FencedPut,
}

/// One request's fate, for the throughput and latency report.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub kind: Kind,
    pub call: u64,
    pub ret: u64,
    pub ok: bool,
}

/// Everything the clients recorded.
#[derive(Default)]
pub struct Recorder {
    pub kv: Mutex<Vec<KvOperation>>,
    pub samples: Mutex<Vec<Sample>>,
    pub watches: Mutex<Vec<Arc<Mutex<WatchLog>>>>,
    /// Each watcher's reopened streams, with why.
    pub reopens: Mutex<BTreeMap<String, Vec<String>>>,
    pub leases: Mutex<Vec<LeaseLog>>,
}

impl Recorder {
    fn sample(&self, kind: Kind, call: u64, ret: u64, ok: bool) {
        self.samples.lock().push(Sample { kind, call, ret, ok });
    }
}

fn key(n: usize) -> Vec<u8> {
    format!("{KV_PREFIX}k{n}").into_bytes()
}

/// One KV client on one member until `deadline`.
/// With `serializable`, gets read the member's own copy: stale on a member
/// cut off from the leader, which the linearizability check must catch
/// (`--serializable-reads`, the suite's test of itself).
pub async fn kv_client(
    id: u64,
    endpoint: String,
    seed: u64,
    serializable: bool,
    clock: Clock,
    deadline: Instant,
    rec: Arc<Recorder>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(client) = member_client(&endpoint, CALL_TIMEOUT).await else { return };
    // What this client last saw of each key: the expected value of its swaps.
    let mut last: Vec<Option<Vec<u8>>> = vec![None; KEYS];
    let mut n = 0u64;
    while Instant::now() < deadline {
        let k = rng.gen_range(0..KEYS);
        let key = key(k);
        n += 1;
        let value = format!("c{id}-{n}").into_bytes();
        let roll = rng.gen_range(0..100);
        let call = clock.now();
        let (input, kind, result) = if roll < 40 {
            let options = if serializable { GetOptions::new().with_serializable() } else { GetOptions::new() };
            let r = client.get_with(key.clone(), options).await.map(|r| {
                let kv = r.kvs.into_iter().next();
                KvOutput::Get {
                    mod_revision: kv.as_ref().map(|kv| kv.mod_revision as u64),
                    value: kv.map(|kv| kv.value),
                }
            });
            (KvInput::Get { key }, Kind::Get, r)
        } else if roll < 70 {
            let r = client
                .put(key.clone(), value.clone())
                .await
                .map(|r| KvOutput::Put { revision: r.header.map(|h| h.revision as u64) });
            (KvInput::Put { key, value }, Kind::Put, r)
        } else if roll < 92 {
            let expected = last[k].clone();
            let compare = match &expected {
                Some(v) => Compare::value(key.clone(), CompareOp::Equal, v.clone()),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let txn = Txn::new().when([compare]).and_then([TxnOp::put(key.clone(), value.clone(), PutOptions::new())]);
            let r = client.txn(txn).await.map(|r| KvOutput::CompareAndSwap {
                succeeded: r.succeeded,
                revision: r.header.map(|h| h.revision as u64),
            });
            (KvInput::CompareAndSwap { key, expected, new: value }, Kind::Cas, r)
        } else {
            let r = client
                .delete(key.clone())
                .await
                .map(|r| KvOutput::Delete { deleted: r.deleted > 0, revision: r.header.map(|h| h.revision as u64) });
            (KvInput::Delete { key }, Kind::Delete, r)
        };
        let ret = clock.now();
        rec.sample(kind, call, ret, result.is_ok());
        let failed = result.is_err();
        let op = match result {
            Ok(output) => {
                last[k] = match (&input, &output) {
                    (_, KvOutput::Get { value, .. }) => value.clone(),
                    (KvInput::Put { value, .. }, _) => Some(value.clone()),
                    (KvInput::CompareAndSwap { new, .. }, KvOutput::CompareAndSwap { succeeded: true, .. }) => {
                        Some(new.clone())
                    }
                    (KvInput::Delete { .. }, _) => None,
                    _ => last[k].clone(),
                };
                Operation::returned(id, call, input, ret, output)
            }
            // A failed write may still have been applied; a failed read
            // constrains nothing, and the checker drops it.
            Err(_) => Operation::unknown(id, call, input),
        };
        rec.kv.lock().push(op);
        // A little air between requests: the lab shares two cores with the
        // members and must not measure only its own contention. After a
        // failure more: a member that is down refuses at once, and a client
        // spinning on it would fill the history with failed writes.
        let pause = if failed { rng.gen_range(50..150) } else { rng.gen_range(0..5) };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

pub(super) fn event(e: &keel_client::proto::mvccpb::Event) -> Event {
    let kv: KeyValue = e.kv.clone().unwrap_or_default();
    let kind = if e.r#type == EventType::Delete as i32 { EventKind::Delete } else { EventKind::Put };
    Event { revision: kv.mod_revision as u64, kind, key: kv.key, value: kv.value, lease: kv.lease }
}

/// One lease client on one member until `deadline`; at the end it revokes
/// the lease it holds.
pub async fn lease_client(id: u64, endpoint: String, seed: u64, clock: Clock, deadline: Instant, rec: Arc<Recorder>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(client) = member_client(&endpoint, CALL_TIMEOUT).await else { return };
    while Instant::now() < deadline {
        let sent = clock.now();
        let granted = client.lease_grant(LEASE_TTL_SECS, 0).await;
        let received = clock.now();
        rec.sample(Kind::LeaseGrant, sent, received, granted.is_ok());
        let Ok(granted) = granted else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let lease = granted.id;
        let mut log = LeaseLog {
            id: lease,
            renewals: vec![Renewal { sent, received, ttl: secs(granted.ttl) }],
            revoke_sent: None,
            must_be_gone: false,
        };
        for j in 0..3 {
            let key = format!("{LEASE_PREFIX}{lease:x}/{j}");
            let call = clock.now();
            let put = client.put_with(key, format!("c{id}"), PutOptions::new().with_lease(lease)).await;
            rec.sample(Kind::LeasePut, call, clock.now(), put.is_ok());
        }
        // Keep it alive for a while, then revoke it or let it expire.
        let keep_for = Duration::from_millis(rng.gen_range(1_000..10_000));
        let revoke = rng.gen_bool(0.7);
        let until = (Instant::now() + keep_for).min(deadline);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let sent = clock.now();
            // One renewal per call: the client's keep-alive stream renews
            // once before it returns, and dropping it stops it, so each
            // promise is recorded with the time its request left.
            let renewed = client.lease_keep_alive(lease).await;
            let received = clock.now();
            rec.sample(Kind::LeaseKeepAlive, sent, received, renewed.is_ok());
            if let Ok(renewed) = renewed {
                log.renewals.push(Renewal { sent, received, ttl: secs(renewed.ttl()) });
            }
        }
        if revoke || Instant::now() >= deadline {
            let sent = clock.now();
            log.revoke_sent = Some(sent);
            let revoked = client.lease_revoke(lease).await;
            rec.sample(Kind::LeaseRevoke, sent, clock.now(), revoked.is_ok());
            log.must_be_gone = revoked.is_ok();
        }
        rec.leases.lock().push(log);
    }
}

fn secs(ttl: i64) -> u64 {
    ttl.max(0) as u64 * 1_000_000
}

/// One lock client on one member until `deadline`: takes the lock with a
/// 5 s session, writes the fenced key twice guarded by its own queue key
/// (`<token>:<client>-<n>`), and lets go.
pub async fn lock_client(id: u64, endpoint: String, seed: u64, clock: Clock, deadline: Instant, rec: Arc<Recorder>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(client) = member_client(&endpoint, CALL_TIMEOUT).await else { return };
    let mut n = 0;
    while Instant::now() < deadline {
        let session =
            tokio::time::timeout(CALL_TIMEOUT * 2, Session::new(&client, SessionOptions { ttl: 5, lease: None }));
        let Ok(Ok(session)) = session.await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut mutex = EtcdMutex::new(&session, LOCK_NAME);
        let call = clock.now();
        // Abandoning the wait deletes the queued key (the recipe's drop guard).
        let locked = tokio::time::timeout(Duration::from_secs(10), mutex.lock()).await;
        let locked = matches!(locked, Ok(Ok(())));
        rec.sample(Kind::LockAcquire, call, clock.now(), locked);
        if locked {
            let token = mutex.revision();
            for _ in 0..2 {
                n += 1;
                let put = TxnOp::put(FENCED_KEY, format!("{token}:c{id}-{n}"), PutOptions::new());
                let call = clock.now();
                let done = client.txn(Txn::new().when([mutex.is_owner()]).and_then([put])).await;
                rec.sample(Kind::FencedPut, call, clock.now(), done.is_ok_and(|r| r.succeeded));
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..300))).await;
            }
            let _ = mutex.unlock().await;
        }
        let _ = session.close().await;
    }
}

/// The fencing token a fenced value carries.
pub fn fencing_token(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.split(':').next()?.parse().ok()
}
