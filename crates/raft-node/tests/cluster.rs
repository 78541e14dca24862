//! Members wired together in-process: what raft-node promises for one member
//! and for several.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_raft_node::{
    Apply, Entry, EntryType, MemLogEngine, Message, RaftConfig, RaftHandle, RaftLogStore, RaftNode, ReadState,
    Transport,
};
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct Applied {
    data: Arc<Mutex<Vec<Vec<u8>>>>,
    reads: Arc<Mutex<Vec<u64>>>,
    dropped: Arc<Mutex<Vec<u64>>>,
}

impl Apply for Applied {
    fn committed(&mut self, entries: Vec<Entry>) {
        let mut data = self.data.lock();
        for entry in entries {
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                data.push(entry.data.to_vec());
            }
        }
    }
    fn read_states(&mut self, states: Vec<ReadState>) {
        self.reads.lock().extend(states.iter().map(|s| s.index));
    }
    fn dropped(&mut self, tag: u64) {
        self.dropped.lock().push(tag);
    }
}

type Router = Arc<Mutex<HashMap<u64, RaftHandle>>>;

struct InProcess {
    router: Router,
}

impl Transport for InProcess {
    fn send(&mut self, messages: Vec<Message>) {
        let router = self.router.lock();
        for message in messages {
            if let Some(peer) = router.get(&message.to) {
                let _ = peer.step(message);
            }
        }
    }
}

fn config(id: u64, voters: &[u64]) -> RaftConfig {
    let mut config = RaftConfig::new(id, voters.to_vec(), 0);
    config.tick_interval = Duration::from_millis(10);
    config
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start(id: u64, voters: &[u64], engine: &MemLogEngine, router: &Router, applied: &Applied) -> RaftNode {
    let store = RaftLogStore::open(Box::new(engine.clone()), voters).unwrap();
    let node = RaftNode::start(
        config(id, voters),
        store,
        Box::new(InProcess { router: router.clone() }),
        Box::new(applied.clone()),
    )
    .unwrap();
    router.lock().insert(id, node.handle());
    node
}

#[test]
fn single_member_commits_every_proposal_in_order_and_replays_after_restart() {
    let engine = MemLogEngine::default();
    let router = Router::default();
    let applied = Applied::default();
    let node = start(1, &[1], &engine, &router, &applied);
    wait_until("leadership", || node.handle().status().is_leader());
    assert_eq!(node.handle().status().term(), 2, "the first election is for term 2, as with etcd");
    for i in 0..500u32 {
        node.handle().propose(u64::from(i), i.to_be_bytes().to_vec()).unwrap();
    }
    wait_until("all commits", || applied.data.lock().len() == 500);
    let expected: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(*applied.data.lock(), expected);
    node.stop();

    // Nothing was reported applied (applied = 0), so a restart hands the whole
    // durable log to the state machine again, in the same order.
    let replay = Applied::default();
    let node = start(1, &[1], &engine, &router, &replay);
    wait_until("replay", || replay.data.lock().len() == 500);
    assert_eq!(*replay.data.lock(), expected);
    wait_until("leadership after restart", || node.handle().status().is_leader());
    assert!(node.handle().status().term() > 2);
    node.stop();
}

#[test]
fn read_index_is_answered_once_the_leader_committed_in_its_term() {
    let router = Router::default();
    let applied = Applied::default();
    let node = start(1, &[1], &MemLogEngine::default(), &router, &applied);
    wait_until("leadership", || node.handle().status().is_leader());
    node.handle().propose(1, b"x".to_vec()).unwrap();
    wait_until("commit", || applied.data.lock().len() == 1);
    node.handle().read_index(9).unwrap();
    wait_until("read state", || !applied.reads.lock().is_empty());
    assert!(applied.reads.lock()[0] >= 2, "read index covers the committed proposal");
    node.stop();
}

#[test]
fn three_members_replicate_and_followers_forward_proposals() {
    let voters = [1, 2, 3];
    let router = Router::default();
    let applied: Vec<Applied> = voters.iter().map(|_| Applied::default()).collect();
    let nodes: Vec<RaftNode> = voters
        .iter()
        .zip(&applied)
        .map(|(&id, applied)| start(id, &voters, &MemLogEngine::default(), &router, applied))
        .collect();
    wait_until("a leader", || nodes.iter().any(|n| n.handle().status().is_leader()));
    let leader = nodes.iter().position(|n| n.handle().status().is_leader()).unwrap();
    let follower = (leader + 1) % 3;
    wait_until("followers to know the leader", || nodes[follower].handle().status().leader() != 0);

    nodes[leader].handle().propose(1, b"from-leader".to_vec()).unwrap();
    wait_until("first commit", || applied.iter().all(|a| a.data.lock().len() == 1));
    nodes[follower].handle().propose(2, b"from-follower".to_vec()).unwrap();
    wait_until("forwarded commit everywhere", || applied.iter().all(|a| a.data.lock().len() == 2));
    for a in &applied {
        assert_eq!(*a.data.lock(), vec![b"from-leader".to_vec(), b"from-follower".to_vec()]);
    }
    for node in nodes {
        node.stop();
    }
}

#[test]
fn restart_with_applied_ahead_of_the_persisted_commit_index() {
    // The commit index is written unsynced; after a crash the state machine
    // may have applied entries the hard state does not yet call committed.
    let engine = MemLogEngine::default();
    let router = Router::default();
    let applied = Applied::default();
    let node = start(1, &[1], &engine, &router, &applied);
    wait_until("leadership", || node.handle().status().is_leader());
    for i in 0..3u8 {
        node.handle().propose(u64::from(i), vec![i]).unwrap();
    }
    wait_until("commits", || applied.data.lock().len() == 3);
    node.stop();
    let last = keel_raft_node::LogEngine::load(&engine).unwrap().last_index;
    let mut hard_state = keel_raft_node::LogEngine::load(&engine).unwrap().hard_state;
    hard_state.commit = 1;
    keel_raft_node::LogEngine::write(
        &engine,
        keel_raft_node::engine::LogWrite { hard_state: Some(&hard_state), ..Default::default() },
    )
    .unwrap();

    let replay = Applied::default();
    let store = RaftLogStore::open(Box::new(engine.clone()), &[1]).unwrap();
    let mut config = config(1, &[1]);
    config.applied = last;
    let node = RaftNode::start(config, store, Box::new(InProcess { router: router.clone() }), Box::new(replay.clone()))
        .unwrap();
    node.handle().propose(9, b"after".to_vec()).unwrap();
    wait_until("a new commit", || !replay.data.lock().is_empty());
    assert_eq!(*replay.data.lock(), vec![b"after".to_vec()], "applied entries were handed out again");
    node.stop();
}
