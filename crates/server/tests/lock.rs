//! The Lock service end to end, through keel-client: contenders exclude each
//! other, each holder's writes are fenced by its lock key's create revision,
//! an abandoned wait leaves the queue, and all of it holds while the raft
//! leader of a three-member cluster is killed under the contenders.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, Keel};
use keel_client::proto::etcdserverpb::ResponseHeader;
use keel_client::{Client, ClientError, ClientOptions, Code, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use parking_lot::Mutex;

/// Bound on anything a test waits for, so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);
/// Outside every lock's `<name>/` prefix: a key there would queue as a
/// contender.
const COUNTER: &str = "counter";

async fn client(endpoints: &[String]) -> Client {
    let options = ClientOptions { request_timeout: Some(Duration::from_secs(10)), ..Default::default() };
    Client::connect(endpoints.to_vec(), options).await.expect("connect to keel")
}

/// The lock key's create revision: the fencing token. It grows from each
/// holder to the next, since a later holder's key was created later.
async fn token(client: &Client, key: &[u8]) -> Result<i64, ClientError> {
    let found = client.get(key.to_vec()).await?;
    Ok(found.kvs.first().expect("a holder's lock key exists").create_revision)
}

/// Increments the counter only while `key` still has create revision
/// `token`, i.e. only while its holder still holds the lock. Returns whether
/// the write was accepted.
async fn fenced_increment(client: &Client, key: &[u8], token: i64) -> Result<bool, ClientError> {
    let current = client.get(COUNTER).await?;
    let value: u64 = current.kvs.first().map_or(0, |kv| String::from_utf8_lossy(&kv.value).parse().unwrap());
    let txn = Txn::new()
        .when([Compare::create_revision(key.to_vec(), CompareOp::Equal, token)])
        .and_then([TxnOp::put(COUNTER, (value + 1).to_string(), PutOptions::new())]);
    Ok(client.txn(txn).await?.succeeded)
}

async fn counter(client: &Client) -> Result<u64, ClientError> {
    let current = client.get(COUNTER).await?;
    Ok(current.kvs.first().map_or(0, |kv| String::from_utf8_lossy(&kv.value).parse().unwrap()))
}

/// etcd's Lock service answers every failure as Unknown with the message.
fn unknown(error: &ClientError, expected: &str) -> bool {
    matches!(error, ClientError::Status { code: Code::Unknown, message } if message == expected)
}

/// What every contender checks: at most one holder at a time, and each
/// holder's token above every earlier holder's.
#[derive(Default)]
struct Referee {
    holders: AtomicUsize,
    last_token: Mutex<i64>,
}

impl Referee {
    fn enter(&self, token: i64) {
        assert_eq!(self.holders.fetch_add(1, Ordering::SeqCst), 0, "two holders of the lock at once");
        let mut last = self.last_token.lock();
        assert!(token > *last, "fencing token {token} not above the previous holder's {}", *last);
        *last = token;
    }

    /// Called before unlocking: from here on the holder must not act.
    fn leave(&self) {
        self.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contenders_exclude_each_other_and_writes_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let endpoints = [keel.endpoint()];
    let referee = Arc::new(Referee::default());
    const CONTENDERS: usize = 4;
    const ROUNDS: u64 = 5;

    let mut tasks = Vec::new();
    for _ in 0..CONTENDERS {
        let client = client(&endpoints).await;
        let referee = referee.clone();
        tasks.push(tokio::spawn(async move {
            let lease = client.lease_grant(30, 0).await.unwrap().id;
            for _ in 0..ROUNDS {
                let held = client.lock("fenced", lease).await.unwrap();
                let token = token(&client, &held.key).await.unwrap();
                referee.enter(token);
                let written = fenced_increment(&client, &held.key, token).await.unwrap();
                assert!(written, "the holder's fenced write was refused");
                referee.leave();
                client.unlock(held.key.clone()).await.unwrap();
                // The released token no longer fences anything.
                assert!(!fenced_increment(&client, &held.key, token).await.unwrap(), "a released token still writes");
            }
        }));
    }
    tokio::time::timeout(LIMIT, futures::future::try_join_all(tasks)).await.expect("contenders finish").unwrap();
    let client = client(&endpoints).await;
    assert_eq!(counter(&client).await.unwrap(), CONTENDERS as u64 * ROUNDS, "an increment was lost or doubled");
    let queued = client.get_with("fenced/", GetOptions::new().with_prefix().with_count_only()).await.unwrap();
    assert_eq!(queued.count, 0, "lock keys left behind");
}

#[tokio::test]
async fn a_holder_whose_lease_ended_is_fenced_off() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let client = client(&[keel.endpoint()]).await;
    let first = client.lease_grant(30, 0).await.unwrap().id;
    let second = client.lease_grant(30, 0).await.unwrap().id;

    let stale = client.lock("expiring", first).await.unwrap();
    assert_eq!(stale.key, format!("expiring/{first:x}").into_bytes());
    let stale_token = token(&client, &stale.key).await.unwrap();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("expiring", second).await.unwrap() })
    };
    // The first holder's lease ends (as when it stops renewing): its key
    // goes, the lock passes on, and its writes are refused from then on.
    client.lease_revoke(first).await.unwrap();
    let fresh = tokio::time::timeout(LIMIT, waiting).await.expect("the waiter gets the lock").unwrap();
    let fresh_token = token(&client, &fresh.key).await.unwrap();
    assert!(fresh_token > stale_token);
    assert!(!fenced_increment(&client, &stale.key, stale_token).await.unwrap(), "a stale holder wrote");
    assert!(fenced_increment(&client, &fresh.key, fresh_token).await.unwrap());
    assert_eq!(counter(&client).await.unwrap(), 1);
}

#[tokio::test]
async fn an_abandoned_wait_leaves_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let client = client(&[keel.endpoint()]).await;
    let holder = client.lease_grant(30, 0).await.unwrap().id;
    let quitter = client.lease_grant(30, 0).await.unwrap().id;
    let held = client.lock("abandoned", holder).await.unwrap();

    let queued = |client: Client| async move {
        client.get_with("abandoned/", GetOptions::new().with_prefix().with_count_only()).await.unwrap().count
    };
    let wait = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("abandoned", quitter).await })
    };
    wait_for("the second contender to queue", || async { queued(client.clone()).await == 2 }).await;
    // Cancelling the call (dropping it) is what a client's timeout does.
    wait.abort();
    wait_for("the abandoned key to be deleted", || async { queued(client.clone()).await == 1 }).await;
    let left = client.get(format!("abandoned/{quitter:x}")).await.unwrap();
    assert!(left.kvs.is_empty());
    client.unlock(held.key).await.unwrap();
}

#[tokio::test]
async fn lock_answers_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let client = client(&[keel.endpoint()]).await;

    // An unknown lease: etcd's embedded client turns the KV's NotFound into
    // Unknown with the same message.
    let error = client.lock("answers", 0x1234).await.unwrap_err();
    assert!(unknown(&error, "etcdserver: requested lease not found"), "{error:?}");
    // Lease 0: the service grants a 60 s lease of its own for the key.
    let held = client.lock("answers", 0).await.unwrap();
    let key = client.get(held.key.clone()).await.unwrap().kvs.remove(0);
    assert_ne!(key.lease, 0);
    assert_eq!(held.key, format!("answers/{:x}", key.lease).into_bytes());
    let ttl = client.lease_time_to_live(key.lease, false).await.unwrap();
    assert_eq!(ttl.granted_ttl, 60);
    // Locking again with the holder's lease returns at once, same key.
    let again = client.lock("answers", key.lease).await.unwrap();
    assert_eq!(again.key, held.key);
    let unlocked = client.unlock(held.key.clone()).await.unwrap();
    assert!(unlocked.header.is_some_and(|h: ResponseHeader| h.revision > key.create_revision));
    // Unlocking what is not locked is no error; an empty key is.
    client.unlock(held.key).await.unwrap();
    let error = client.unlock(Vec::new()).await.unwrap_err();
    assert!(unknown(&error, "etcdserver: key is not provided"), "{error:?}");
}

/// Clients hold and wait for the lock on the two followers when the leader
/// is killed. The lock changes hands throughout, never has two holders, and
/// every holder's write is fenced by its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusion_holds_while_the_leader_is_killed() {
    let mut cluster = Cluster::start(3).await;
    let leader = leader_of(&cluster, None).await;
    let followers: Vec<String> = (0..3).filter(|&i| i != leader).map(|i| cluster.member(i).endpoint()).collect();
    let referee = Arc::new(Referee::default());
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let uncertain = Arc::new(AtomicUsize::new(0));
    const CONTENDERS: usize = 4;
    const ROUNDS: usize = 6;

    let mut tasks = Vec::new();
    for n in 0..CONTENDERS {
        // Each contender talks to one follower only.
        let client = client(&followers[n % 2..=n % 2]).await;
        let (referee, acknowledged, uncertain) = (referee.clone(), acknowledged.clone(), uncertain.clone());
        tasks.push(tokio::spawn(async move {
            // Long enough to outlive the test without renewals.
            let lease = retry(|| client.lease_grant(60, 0)).await.id;
            let mut last_stale: Option<(Vec<u8>, i64)> = None;
            for _ in 0..ROUNDS {
                // A lock call that fails (no leader for a while) is simply
                // repeated: with the same lease it finds its key again.
                let held = retry(|| client.lock("cluster-lock", lease)).await;
                let token = retry(|| token(&client, &held.key)).await;
                referee.enter(token);
                match fenced_increment(&client, &held.key, token).await {
                    Ok(true) => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(false) => panic!("a holder's fenced write was refused"),
                    // Unknown outcome (the leader died meanwhile).
                    Err(_) => {
                        uncertain.fetch_add(1, Ordering::SeqCst);
                    }
                }
                referee.leave();
                retry(|| client.unlock(held.key.clone())).await;
                last_stale = Some((held.key, token));
            }
            // After the last release, the old token fences nothing.
            let (key, token) = last_stale.unwrap();
            assert!(!retry(|| fenced_increment(&client, &key, token)).await, "a stale token wrote");
        }));
    }

    // Kill the leader once the lock has changed hands a few times, so some
    // contender holds it and others wait, on both followers.
    let observer = client(&followers).await;
    wait_for("the lock to change hands", || async { counter(&observer).await.is_ok_and(|n| n >= 3) }).await;
    cluster.kill9(leader);
    let new_leader = leader_of(&cluster, Some(leader)).await;
    assert_ne!(new_leader, leader);

    tokio::time::timeout(Duration::from_secs(60), futures::future::try_join_all(tasks))
        .await
        .expect("contenders finish after the leader change")
        .unwrap();
    let total = retry(|| counter(&observer)).await as usize;
    let (acknowledged, uncertain) = (acknowledged.load(Ordering::SeqCst), uncertain.load(Ordering::SeqCst));
    assert!(
        (acknowledged..=acknowledged + uncertain).contains(&total),
        "counter {total}: {acknowledged} acknowledged and {uncertain} uncertain increments"
    );
}

/// Repeats `call` until it succeeds (errors are expected while a new leader
/// is elected), for at most [`LIMIT`].
async fn retry<T, E: std::fmt::Debug, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                assert!(Instant::now() < deadline, "still failing after {LIMIT:?}: {error:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Polls `check` until it holds, for at most [`LIMIT`].
async fn wait_for<Fut: std::future::Future<Output = bool>>(what: &str, check: impl FnMut() -> Fut) {
    common::wait_for(what, LIMIT, check).await
}

/// The member that leads, other than `not`.
async fn leader_of(cluster: &Cluster, not: Option<usize>) -> usize {
    let deadline = Instant::now() + LIMIT;
    loop {
        for (i, keel) in cluster.members.iter().enumerate() {
            let Some(keel) = keel else { continue };
            if Some(i) == not {
                continue;
            }
            let options = ClientOptions { connect_timeout: Duration::from_millis(500), ..Default::default() };
            let Ok(client) = Client::connect([keel.endpoint()], options).await else { continue };
            if let Ok(status) = client.status().await {
                if status.leader != 0 && Some(status.leader) == status.header.map(|h| h.member_id) {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
