use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_client::concurrency::{Election, Mutex, Observer, Session, SessionOptions};
use keel_client::{ClientError, GetOptions, PutOptions, Txn, TxnOp};
use tokio_stream::StreamExt;

use crate::harness::{eventually, Etcd};

const WAIT: Duration = Duration::from_secs(10);

fn session_options() -> SessionOptions {
    SessionOptions { ttl: 5, lease: None }
}

/// The next leader value an observer reports.
async fn next(observer: &mut Observer) -> Vec<u8> {
    tokio::time::timeout(WAIT, observer.next()).await.expect("observed").expect("observer open").unwrap().value
}

/// Number of keys queued under a lock or election prefix.
async fn queued(client: &keel_client::Client, prefix: &str) -> i64 {
    client.get_with(prefix, GetOptions::new().with_prefix().with_count_only()).await.unwrap().count
}

#[tokio::test]
async fn mutex_excludes_a_second_session_until_the_first_unlocks() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let first = Session::new(&client, session_options()).await.unwrap();
    let second = Session::new(&client, session_options()).await.unwrap();

    let mut m1 = Mutex::new(&first, "/locks/m");
    m1.lock().await.unwrap();
    assert_eq!(m1.key(), format!("/locks/m/{:x}", first.lease()).as_bytes());
    let first_token = m1.revision();
    assert!(first_token > 0);

    let released = Arc::new(AtomicBool::new(false));
    let mut m2 = Mutex::new(&second, "/locks/m");
    let waiter = {
        let released = released.clone();
        tokio::spawn(async move {
            m2.lock().await.unwrap();
            assert!(released.load(Ordering::SeqCst), "second session got the lock while the first held it");
            m2
        })
    };
    // The second session is queued behind the first...
    eventually("the second session to queue", WAIT, || async {
        (queued(&client, "/locks/m/").await == 2).then_some(())
    })
    .await;
    assert!(!waiter.is_finished());

    // ...and a write guarded by the first's ownership still goes through.
    let guarded = Txn::new().when([m1.is_owner()]).and_then([TxnOp::put("/fenced", "1", PutOptions::new())]);
    assert!(client.txn(guarded).await.unwrap().succeeded);

    released.store(true, Ordering::SeqCst);
    m1.unlock().await.unwrap();
    let m2 = tokio::time::timeout(WAIT, waiter).await.expect("second session locks after the unlock").unwrap();
    assert!(m2.revision() > first_token, "fencing token grows: {} then {}", first_token, m2.revision());

    // The first session no longer owns the lock, so its guarded write fails.
    let stale = Txn::new().when([m1.is_owner()]).and_then([TxnOp::put("/fenced", "2", PutOptions::new())]);
    assert!(!client.txn(stale).await.unwrap().succeeded);
}

#[tokio::test]
async fn try_lock_fails_fast_and_closing_a_session_releases_its_lock() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let holder = Session::new(&client, session_options()).await.unwrap();
    let other = Session::new(&client, session_options()).await.unwrap();

    let mut held = Mutex::new(&holder, "/locks/t");
    held.lock().await.unwrap();
    // Locking again from the same session is a no-op.
    held.lock().await.unwrap();

    let mut contender = Mutex::new(&other, "/locks/t");
    assert!(matches!(contender.try_lock().await, Err(ClientError::Locked)));
    assert_eq!(queued(&client, "/locks/t/").await, 1, "a failed try_lock leaves nothing queued");

    let waiter = tokio::spawn(async move {
        contender.lock().await.unwrap();
        contender
    });
    eventually("the contender to queue", WAIT, || async { (queued(&client, "/locks/t/").await == 2).then_some(()) })
        .await;
    holder.close().await.unwrap();
    let contender =
        tokio::time::timeout(WAIT, waiter).await.expect("lock passes on when the holder's session closes").unwrap();
    assert!(contender.revision() > held.revision());
}

#[tokio::test]
async fn election_leader_observe_proclaim_and_resign() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let s1 = Session::new(&client, session_options()).await.unwrap();
    let s2 = Session::new(&client, session_options()).await.unwrap();

    let mut e1 = Election::new(&s1, "/elect/e");
    assert!(matches!(e1.leader().await, Err(ClientError::NoLeader)));
    let mut observer = e1.observe();

    e1.campaign("one").await.unwrap();
    assert!(e1.is_leading());
    assert_eq!(e1.leader().await.unwrap().value, b"one");
    assert_eq!(next(&mut observer).await, b"one");

    let mut e2 = Election::new(&s2, "/elect/e");
    let campaigner = tokio::spawn(async move {
        e2.campaign("two").await.unwrap();
        e2
    });
    eventually("the second campaigner to queue", WAIT, || async {
        (queued(&client, "/elect/e/").await == 2).then_some(())
    })
    .await;

    e1.proclaim("one again").await.unwrap();
    assert_eq!(next(&mut observer).await, b"one again");
    assert_eq!(e1.leader().await.unwrap().value, b"one again");
    assert!(!campaigner.is_finished());

    let first_token = e1.revision();
    e1.resign().await.unwrap();
    assert!(matches!(e1.proclaim("late").await, Err(ClientError::NotLeader)));
    let e2 = tokio::time::timeout(WAIT, campaigner).await.expect("second campaigner wins after the resign").unwrap();
    assert!(e2.revision() > first_token);
    assert_eq!(next(&mut observer).await, b"two");
    assert_eq!(e2.leader().await.unwrap().value, b"two");
}

#[tokio::test]
async fn a_closed_session_revokes_its_lease() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let session = Session::new(&client, session_options()).await.unwrap();
    let lease = session.lease();
    assert!(session.is_alive());
    client.put_with("/s/k", "v", PutOptions::new().with_lease(lease)).await.unwrap();
    session.close().await.unwrap();
    assert!(client.get("/s/k").await.unwrap().kvs.is_empty());
    assert_eq!(client.lease_time_to_live(lease, false).await.unwrap().ttl, -1);

    // A session whose lease is revoked elsewhere notices.
    let session = Session::new(&client, session_options()).await.unwrap();
    client.lease_revoke(session.lease()).await.unwrap();
    tokio::time::timeout(WAIT, session.expired()).await.expect("session notices its lease is gone");
    assert!(!session.is_alive());
}
