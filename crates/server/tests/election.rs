//! The Election service end to end, through keel-client: campaigners queue
//! behind the leader, Observe reports every leader and every value it
//! proclaims in order, a stale leader key is refused, an abandoned campaign
//! leaves the queue, and a follower keeps observing while the raft leader is
//! killed.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Keel};
use keel_client::proto::v3electionpb::{LeaderKey, LeaderResponse};
use keel_client::{Client, ClientError, ClientOptions, Code, GetOptions, LeaderStream};
use tokio_stream::StreamExt;

/// Bound on anything a test waits for, so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

async fn client(endpoint: String) -> Client {
    let options = ClientOptions { request_timeout: Some(Duration::from_secs(10)), ..Default::default() };
    Client::connect([endpoint], options).await.expect("connect to keel")
}

/// The next value Observe reports, with its response.
async fn next(observed: &mut LeaderStream) -> (Vec<u8>, LeaderResponse) {
    let response = tokio::time::timeout(LIMIT, observed.next())
        .await
        .expect("an observed leader change")
        .expect("the observe stream is open")
        .expect("an observed leader");
    (response.kv.clone().expect("a leader key-value").value, response)
}

async fn queued(client: &Client, name: &str) -> i64 {
    client.get_with(format!("{name}/"), GetOptions::new().with_prefix().with_count_only()).await.unwrap().count
}

/// Polls `check` until it holds, for at most [`LIMIT`].
async fn wait_for<Fut: std::future::Future<Output = bool>>(what: &str, check: impl FnMut() -> Fut) {
    common::wait_for(what, LIMIT, check).await
}

fn unknown(error: &ClientError, expected: &str) -> bool {
    matches!(error, ClientError::Status { code: Code::Unknown, message } if message == expected)
}

#[tokio::test]
async fn observe_reports_each_leader_and_value_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let client = client(keel.endpoint()).await;
    let (a, b, c) = (
        client.lease_grant(30, 0).await.unwrap().id,
        client.lease_grant(30, 0).await.unwrap().id,
        client.lease_grant(30, 0).await.unwrap().id,
    );

    assert!(matches!(client.leader("jobs").await, Err(ClientError::NoLeader)));
    // Observe answers only once there is a leader, so it waits on its own.
    let observing = {
        let client = client.clone();
        tokio::spawn(async move { client.observe("jobs").await.unwrap() })
    };
    let first = client.campaign("jobs", "a1", a).await.unwrap();
    assert_eq!(first.key, format!("jobs/{a:x}").into_bytes());
    assert_eq!((first.name.as_slice(), first.lease), (b"jobs".as_slice(), a));
    let mut observed = tokio::time::timeout(LIMIT, observing).await.expect("observe answers").unwrap();
    let (value, response) = next(&mut observed).await;
    assert_eq!(value, b"a1");
    assert_eq!(response.kv.unwrap().create_revision, first.rev);

    let second = {
        let client = client.clone();
        tokio::spawn(async move { client.campaign("jobs", "b1", b).await.unwrap() })
    };
    wait_for("the second campaigner to queue", || async { queued(&client, "jobs").await == 2 }).await;
    client.proclaim(first.clone(), "a2").await.unwrap();
    assert_eq!(next(&mut observed).await.0, b"a2");
    assert!(!second.is_finished(), "a campaigner won while the leader led");

    // A key that is not the leader's (another create revision) is refused.
    let stale = LeaderKey { rev: first.rev + 1000, ..first.clone() };
    let error = client.proclaim(stale, "nope").await.unwrap_err();
    assert!(unknown(&error, "election: not leader"), "{error:?}");

    let resigned = client.resign(first.clone()).await.unwrap().header.unwrap().revision;
    let winner = tokio::time::timeout(LIMIT, second).await.expect("the next campaigner wins").unwrap();
    assert_eq!(winner.key, format!("jobs/{b:x}").into_bytes());
    let (value, response) = next(&mut observed).await;
    assert_eq!(value, b"b1");
    assert_eq!(response.header.unwrap().revision, resigned);
    assert_eq!(client.leader("jobs").await.unwrap().value, b"b1");
    let error = client.proclaim(first, "a3").await.unwrap_err();
    assert!(unknown(&error, "election: not leader"), "{error:?}");

    // The leader's lease ends and nobody campaigns: Observe waits for the
    // next campaigner, whose value is reported next.
    client.lease_revoke(b).await.unwrap();
    assert!(matches!(client.leader("jobs").await, Err(ClientError::NoLeader)));
    client.campaign("jobs", "c1", c).await.unwrap();
    assert_eq!(next(&mut observed).await.0, b"c1");
}

#[tokio::test]
async fn an_abandoned_campaign_leaves_the_queue_and_campaigning_again_proclaims() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let client = client(keel.endpoint()).await;
    let leader_lease = client.lease_grant(30, 0).await.unwrap().id;
    let quitter = client.lease_grant(30, 0).await.unwrap().id;
    let leader = client.campaign("queue", "first", leader_lease).await.unwrap();

    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.campaign("queue", "second", quitter).await })
    };
    wait_for("the second campaigner to queue", || async { queued(&client, "queue").await == 2 }).await;
    // Dropping the call is what a client's timeout does.
    waiting.abort();
    wait_for("the abandoned campaign to resign", || async { queued(&client, "queue").await == 1 }).await;

    // The leader campaigning again with another value keeps its key and
    // proclaims the value.
    let again = client.campaign("queue", "first-again", leader_lease).await.unwrap();
    assert_eq!((again.key.as_slice(), again.rev), (leader.key.as_slice(), leader.rev));
    assert_eq!(client.leader("queue").await.unwrap().value, b"first-again");

    let error = client.campaign("queue", "x", 0x1234).await.unwrap_err();
    assert!(unknown(&error, "etcdserver: requested lease not found"), "{error:?}");
}

/// A campaigner on one follower leads, another waits on the second follower,
/// where an observer watches too. The raft leader is killed; the leadership
/// then passes on and the observer, still on its follower, reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_observes_the_leadership_pass_while_the_raft_leader_is_killed() {
    let mut cluster = Cluster::start(3).await;
    let leader = raft_leader(&cluster).await;
    let (one, two) = ((leader + 1) % 3, (leader + 2) % 3);
    let first = client(cluster.member(one).endpoint()).await;
    let second = client(cluster.member(two).endpoint()).await;
    let first_lease = first.lease_grant(60, 0).await.unwrap().id;
    let second_lease = second.lease_grant(60, 0).await.unwrap().id;

    let leading = first.campaign("cluster-election", "one", first_lease).await.unwrap();
    let mut observed = second.observe("cluster-election").await.unwrap();
    assert_eq!(next(&mut observed).await.0, b"one");
    let waiting = {
        let second = second.clone();
        tokio::spawn(async move { second.campaign("cluster-election", "two", second_lease).await.unwrap() })
    };
    wait_for("the second campaigner to queue", || async { queued(&second, "cluster-election").await == 2 }).await;

    cluster.kill9(leader);
    // A proposal forwarded to the dead leader is lost and its caller waits
    // out the request timeout (7 s), so resign once a new leader is known.
    raft_leader(&cluster).await;
    let deadline = Instant::now() + LIMIT;
    while let Err(error) = first.resign(leading.clone()).await {
        assert!(Instant::now() < deadline, "resign keeps failing: {error:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let won = tokio::time::timeout(LIMIT, waiting).await.expect("the waiting campaigner wins").unwrap();
    assert_eq!(won.lease, second_lease);
    assert_eq!(next(&mut observed).await.0, b"two");
}

/// The member that leads raft.
async fn raft_leader(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + LIMIT;
    loop {
        for (i, keel) in cluster.members.iter().enumerate() {
            let Some(keel) = keel else { continue };
            let Ok(client) = Client::connect([keel.endpoint()], ClientOptions::default()).await else { continue };
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
