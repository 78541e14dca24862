//! Five members on an in-process network that drops, delays and partitions
//! messages, with members restarted from their durable logs, driven by a
//! seeded random schedule. Whatever happens, no two members may ever commit
//! different entries at the same index, and once the network heals every
//! member converges on one log.
//!
//! The seed is printed; `CHAOS_SEED=<n>` replays the same schedule (thread
//! timing still varies, so a replay is close, not identical).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

use keel_raft_node::{
    Apply, Entry, EntryType, MemLogEngine, Message, RaftConfig, RaftHandle, RaftLogStore, RaftNode, ReadState,
    Transport,
};
use parking_lot::Mutex;
use rand::{rngs::StdRng, Rng, SeedableRng};

const MEMBERS: [u64; 5] = [1, 2, 3, 4, 5];
const STEPS: usize = 300;

/// Every committed normal entry any member has seen, by index: the first
/// member to commit an index fixes what every other must commit there.
#[derive(Default)]
struct History {
    committed: Mutex<BTreeMap<u64, (u64, Vec<u8>)>>,
    divergence: Mutex<Option<String>>,
}

/// index -> (term, data).
type CommittedLog = BTreeMap<u64, (u64, Vec<u8>)>;

#[derive(Clone)]
struct Member {
    id: u64,
    history: Arc<History>,
    /// This member's own committed log.
    log: Arc<Mutex<CommittedLog>>,
}

impl Apply for Member {
    fn committed(&mut self, entries: Vec<Entry>) {
        let mut global = self.history.committed.lock();
        let mut log = self.log.lock();
        for entry in entries {
            let value = (entry.term, entry.data.to_vec());
            if entry.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            if let Some(seen) = global.get(&entry.index) {
                if *seen != value {
                    self.history.divergence.lock().get_or_insert_with(|| {
                        format!("member {} committed {:?} at {}, another {:?}", self.id, value, entry.index, seen)
                    });
                }
            } else {
                global.insert(entry.index, value.clone());
            }
            // A restarted member replays its log: the same entries again.
            if let Some(mine) = log.get(&entry.index) {
                if *mine != value {
                    self.history.divergence.lock().get_or_insert_with(|| {
                        format!("member {} re-applied a different entry at {}", self.id, entry.index)
                    });
                }
            }
            log.insert(entry.index, value);
        }
    }
    fn read_states(&mut self, _states: Vec<ReadState>) {}
    fn dropped(&mut self, _tag: u64) {}
}

/// The network: links can be cut; messages are dropped or delayed at random.
struct Network {
    state: std::sync::Mutex<NetState>,
    wake: Condvar,
    stop: AtomicBool,
}

struct NetState {
    handles: HashMap<u64, RaftHandle>,
    cut: HashSet<(u64, u64)>,
    drop_rate: f64,
    rng: StdRng,
    in_flight: Vec<(Instant, Message)>,
}

impl Network {
    fn new(seed: u64) -> Arc<Network> {
        let network = Arc::new(Network {
            state: std::sync::Mutex::new(NetState {
                handles: HashMap::new(),
                cut: HashSet::new(),
                drop_rate: 0.0,
                rng: StdRng::seed_from_u64(seed ^ 0x6e6574),
                in_flight: Vec::new(),
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let deliverer = network.clone();
        std::thread::spawn(move || deliverer.deliver_loop());
        network
    }

    fn deliver_loop(&self) {
        let mut state = self.state.lock().unwrap();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = state.in_flight.drain(..).partition(|(at, _)| *at <= now);
            state.in_flight = later;
            for (_, message) in due {
                // A link cut while the message was in flight loses it too.
                if state.cut.contains(&(message.from, message.to)) {
                    continue;
                }
                if let Some(handle) = state.handles.get(&message.to) {
                    let _ = handle.step(message);
                }
            }
            state = self.wake.wait_timeout(state, Duration::from_millis(1)).unwrap().0;
        }
    }

    fn send(&self, messages: Vec<Message>) {
        let mut state = self.state.lock().unwrap();
        for message in messages {
            if state.cut.contains(&(message.from, message.to)) {
                continue;
            }
            let drop_rate = state.drop_rate;
            if state.rng.gen_bool(drop_rate) {
                continue;
            }
            let delay = Duration::from_millis(state.rng.gen_range(0..8));
            state.in_flight.push((Instant::now() + delay, message));
        }
    }

    fn isolate(&self, id: u64) {
        let mut state = self.state.lock().unwrap();
        for other in MEMBERS {
            if other != id {
                state.cut.insert((id, other));
                state.cut.insert((other, id));
            }
        }
    }

    fn heal(&self) {
        self.state.lock().unwrap().cut.clear();
    }
}

struct ChaosTransport(Arc<Network>);

impl Transport for ChaosTransport {
    fn send(&mut self, messages: Vec<Message>) {
        self.0.send(messages);
    }
}

fn start(member: &Member, engine: &MemLogEngine, network: &Arc<Network>) -> RaftNode {
    let store = RaftLogStore::open(Box::new(engine.clone()), &MEMBERS).unwrap();
    let mut config = RaftConfig::new(member.id, MEMBERS.to_vec(), 0);
    config.tick_interval = Duration::from_millis(10);
    let node =
        RaftNode::start(config, store, Box::new(ChaosTransport(network.clone())), Box::new(member.clone())).unwrap();
    network.state.lock().unwrap().handles.insert(member.id, node.handle());
    node
}

#[test]
fn committed_entries_never_diverge_under_drops_delays_partitions_and_restarts() {
    let seed: u64 = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("CHAOS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let network = Network::new(seed);
    network.state.lock().unwrap().drop_rate = 0.05;
    let history = Arc::new(History::default());
    let members: Vec<Member> =
        MEMBERS.iter().map(|&id| Member { id, history: history.clone(), log: Arc::default() }).collect();
    let engines: Vec<MemLogEngine> = MEMBERS.iter().map(|_| MemLogEngine::default()).collect();
    let mut nodes: Vec<Option<RaftNode>> =
        members.iter().zip(&engines).map(|(m, e)| Some(start(m, e, &network))).collect();

    let mut proposed = 0u64;
    let mut isolated: Option<usize> = None;
    for step in 0..STEPS {
        match rng.gen_range(0..100) {
            0..=59 => {
                let i = rng.gen_range(0..MEMBERS.len());
                if let Some(node) = &nodes[i] {
                    proposed += 1;
                    let _ = node.handle().propose(proposed, format!("p{proposed}").into_bytes());
                }
            }
            60..=67 if isolated.is_none() => {
                let i = rng.gen_range(0..MEMBERS.len());
                network.isolate(MEMBERS[i]);
                isolated = Some(i);
            }
            68..=77 => {
                network.heal();
                isolated = None;
            }
            78..=82 => {
                // Crash and restart: raft state comes back from the durable log.
                let i = rng.gen_range(0..MEMBERS.len());
                if let Some(node) = nodes[i].take() {
                    network.state.lock().unwrap().handles.remove(&MEMBERS[i]);
                    node.stop();
                }
                nodes[i] = Some(start(&members[i], &engines[i], &network));
            }
            83..=86 => {
                let rate = [0.0, 0.05, 0.2][rng.gen_range(0..3)];
                network.state.lock().unwrap().drop_rate = rate;
            }
            _ => {}
        }
        if let Some(divergence) = history.divergence.lock().clone() {
            panic!("step {step}: {divergence} (seed {seed})");
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..15)));
    }

    // Heal, and keep proposing until every member holds the same log.
    network.heal();
    network.state.lock().unwrap().drop_rate = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs: Vec<BTreeMap<u64, (u64, Vec<u8>)>> = members.iter().map(|m| m.log.lock().clone()).collect();
        let converged = logs.windows(2).all(|w| w[0] == w[1]) && !logs[0].is_empty();
        if converged {
            break;
        }
        assert!(Instant::now() < deadline, "members did not converge after healing (seed {seed})");
        proposed += 1;
        if let Some(leader) = nodes.iter().flatten().find(|n| n.handle().status().is_leader()) {
            let _ = leader.handle().propose(proposed, format!("p{proposed}").into_bytes());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(divergence) = history.divergence.lock().clone() {
        panic!("{divergence} (seed {seed})");
    }
    let committed: usize = members[0].log.lock().values().filter(|(_, data)| !data.is_empty()).count();
    println!("{committed} of {proposed} proposals committed");
    assert!(committed > 20, "only {committed} proposals committed out of {proposed} (seed {seed})");
    network.stop.store(true, Ordering::Relaxed);
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
}
