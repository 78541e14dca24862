//! The simulated cluster: members on in-memory "disks", the network's
//! messages in flight, and the fault schedule, all driven by one loop.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_mvcc::{KvStore, MemBackend};
use keel_node::peer::local::{Delivery, Envelope, LocalNetwork};
use keel_node::{ClusterState, MemSpool, Member, MemberConfig, MemberStepper, Parts, TokioClock};
use keel_raft_node::{Clock, MemLogEngine};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault_points;
use crate::workload::Workload;
use crate::{checks, Failure, Faults, SimConfig};

/// Raft's timing in the simulation: etcd's defaults.
const HEARTBEAT: Duration = Duration::from_millis(100);
const ELECTION: Duration = Duration::from_secs(1);
/// The loop's step: every member is stepped once per virtual millisecond.
const STEP: Duration = Duration::from_millis(1);
/// After the faults: everything healed and restarted, long enough for a
/// leader, caught-up members and expired leases.
const QUIET: Duration = Duration::from_secs(12);
/// The final reads start this long before the end.
const FINAL_READS: Duration = Duration::from_secs(4);

/// What a run did, for the caller's summary (and, hashed, to show that a
/// seed replays identically).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Report {
    pub operations: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub watch_events: usize,
    pub faults: Vec<String>,
    pub final_revision: i64,
    /// A digest of everything the clients saw.
    pub trace: u64,
}

/// One member's place in the cluster, across its restarts.
struct Node {
    id: u64,
    url: String,
    config: MemberConfig,
    log: MemLogEngine,
    backend: Arc<MemBackend>,
    /// Snapshots from the leader (only complete, so durable, ones are kept).
    spool: Arc<MemSpool>,
    /// Running: the member and what steps it.
    up: Option<(Arc<Member>, MemberStepper, Arc<KvStore>)>,
    /// Removed from the cluster: never started again.
    removed: bool,
    /// Crashed at a fault point: restarts then.
    restart_at: Option<Instant>,
}

pub(crate) struct World {
    rng: StdRng,
    network: LocalNetwork,
    nodes: Vec<Node>,
    clock: Arc<dyn Clock>,
    /// Messages in flight, by (due time, send order).
    in_flight: BinaryHeap<Reverse<(Instant, u64)>>,
    envelopes: BTreeMap<u64, Envelope>,
    sent: u64,
    faults: Faults,
    pub(crate) log: Vec<String>,
    next_member: usize,
}

impl World {
    fn new(config: &SimConfig, clock: Arc<dyn Clock>) -> Result<World, String> {
        let mut world = World {
            rng: StdRng::seed_from_u64(config.seed),
            network: LocalNetwork::new(Delivery::Held),
            nodes: Vec::new(),
            clock,
            in_flight: BinaryHeap::new(),
            envelopes: BTreeMap::new(),
            sent: 0,
            faults: config.faults.clone(),
            log: Vec::new(),
            next_member: config.members,
        };
        let initial: Vec<(String, Vec<String>)> =
            (0..config.members).map(|i| (format!("m{i}"), vec![format!("http://m{i}:2380")])).collect();
        for (name, urls) in &initial {
            let config =
                member_config(name, &urls[0], initial.clone(), ClusterState::New, config.faults.strict_reconfig);
            world.nodes.push(Node {
                id: keel_node::ids::member_id(urls, &config.cluster_token),
                url: urls[0].clone(),
                config,
                log: MemLogEngine::default(),
                backend: Arc::new(MemBackend::with_power_loss()),
                spool: Arc::default(),
                up: None,
                removed: false,
                restart_at: None,
            });
        }
        for i in 0..world.nodes.len() {
            world.start(i)?;
        }
        Ok(world)
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let jitter = self.rng.gen_range(0..(ELECTION.as_millis() / HEARTBEAT.as_millis()) as usize);
        let node = &mut self.nodes[i];
        if node.up.is_some() || node.removed {
            return Ok(());
        }
        let backend: Arc<dyn keel_mvcc::Backend> = node.backend.clone();
        let kv = Arc::new(KvStore::open(backend).map_err(|e| format!("opening {}'s store: {e}", node.url))?);
        let network: Arc<dyn keel_node::Network> = Arc::new(self.network.clone());
        let mut parts = Parts::in_memory(kv.clone(), node.log.clone(), network, self.clock.clone());
        parts.election_jitter = Some(jitter);
        parts.spool = node.spool.clone();
        let (member, stepper) =
            Member::assemble_stepped(node.config.clone(), parts).map_err(|e| format!("starting {}: {e}", node.url))?;
        let member = Arc::new(member);
        node.id = member.member_id();
        self.network.join(&member, &node.url);
        // As the server does: announce the name, so members joining later
        // find this one in the membership they are started with.
        let publisher = member.clone();
        let client_url = node.url.replace(":2380", ":2379");
        tokio::spawn(async move { publisher.publish(vec![client_url]).await });
        node.up = Some((member, stepper, kv));
        Ok(())
    }

    /// A power loss: the member stops at once and its disks keep only what
    /// was synced.
    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some((member, stepper, _)) = node.up.take() {
            self.network.leave(node.id);
            drop(stepper);
            member.stop();
            node.backend = Arc::new(node.backend.after_power_loss());
            node.log = node.log.after_power_loss();
        }
    }

    /// The members clients may call: every running one.
    pub(crate) fn members(&self) -> Vec<Arc<Member>> {
        self.nodes.iter().filter_map(|n| n.up.as_ref().map(|(m, _, _)| m.clone())).collect()
    }

    /// A running member's store, for the final checks.
    pub(crate) fn stores(&self) -> Vec<(String, Arc<KvStore>)> {
        self.nodes.iter().filter_map(|n| n.up.as_ref().map(|(_, _, kv)| (n.url.clone(), kv.clone()))).collect()
    }

    /// One turn: route what was sent, deliver what is due, step everyone.
    fn step(&mut self) {
        let now = self.clock.now();
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|at| now >= at) {
                self.nodes[i].restart_at = None;
                if let Err(err) = self.start(i) {
                    self.log.push(format!("restarting {} failed: {err}", self.nodes[i].url));
                } else {
                    self.log.push(format!("restart {}", self.nodes[i].url));
                }
            }
        }
        for envelope in self.network.take_held() {
            if self.rng.gen_bool(self.faults.loss) {
                self.network.drop_message(envelope);
                continue;
            }
            let max = self.faults.max_delay.as_micros() as u64;
            // One message in fifty takes far longer: reordering.
            let delay =
                if self.rng.gen_ratio(1, 50) { max * self.rng.gen_range(5..30) } else { self.rng.gen_range(0..=max) };
            self.sent += 1;
            self.in_flight.push(Reverse((now + Duration::from_micros(delay), self.sent)));
            self.envelopes.insert(self.sent, envelope);
        }
        while let Some(Reverse((due, seq))) = self.in_flight.peek().copied() {
            if due > now {
                break;
            }
            self.in_flight.pop();
            if let Some(envelope) = self.envelopes.remove(&seq) {
                // An undeliverable message is lost (a snapshot's sender hears).
                self.network.deliver(envelope);
            }
        }
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let Some((_, stepper, _)) = &mut node.up else { continue };
            match fault_points::stepping(|| stepper.step()) {
                Ok(true) => {}
                Ok(false) => {
                    // Removed from the cluster: raft stopped itself.
                    node.removed = true;
                    if let Some((member, _, _)) = node.up.take() {
                        self.network.leave(node.id);
                        member.stop();
                    }
                }
                Err(point) => {
                    let url = node.url.clone();
                    self.crash(i);
                    self.log.push(format!("crash {url} at {point}"));
                    let down = Duration::from_millis(self.rng.gen_range(100..3000));
                    self.nodes[i].restart_at = Some(now + down);
                }
            }
        }
    }

    fn heal(&mut self) -> Result<(), String> {
        self.network.heal();
        for i in 0..self.nodes.len() {
            self.nodes[i].restart_at = None;
            self.start(i)?;
        }
        Ok(())
    }

    /// Each member's state, for a failure's report.
    fn describe(&self) -> String {
        let mut out = Vec::new();
        for node in &self.nodes {
            let state = match (&node.up, node.removed) {
                (_, true) => "removed".to_string(),
                (None, false) => "down".to_string(),
                (Some((member, _, _)), false) => {
                    let s = member.status();
                    format!(
                        "leader {:x} term {} commit {} applied {}",
                        s.leader, s.raft_term, s.raft_index, s.raft_applied_index
                    )
                }
            };
            out.push(format!("{} ({:x}): {state}", node.url, node.id));
        }
        out.join("; ")
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].up.is_some()).collect()
    }

    fn voters(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.nodes[i].removed).collect()
    }
}

fn member_config(
    name: &str,
    url: &str,
    cluster: Vec<(String, Vec<String>)>,
    state: ClusterState,
    strict: bool,
) -> MemberConfig {
    let mut config = MemberConfig::new(name, format!("/sim/{name}"))
        .with_raft_timing(HEARTBEAT, ELECTION)
        .expect("etcd's default timing is valid");
    config.peer_urls = vec![url.to_owned()];
    config.initial_cluster = cluster;
    config.initial_cluster_state = state;
    // Small, so logs are compacted and lagging members get snapshots.
    config.snapshot_count = 64;
    config.snapshot_catchup_entries = 16;
    config.strict_reconfig_check = strict;
    config
}

/// A fault in progress, and when it ends.
enum Fault {
    Partition { until: Instant },
    Down { node: usize, until: Instant },
    Replacing,
}

/// Runs the whole simulation: traffic and faults, then quiet, then checks.
pub(crate) async fn simulate(config: SimConfig) -> Result<Report, Failure> {
    let fail = |what: String| Failure { seed: config.seed, what };
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(1_700_000_000_000 + config.seed % 1000 * 1000));
    let world = Arc::new(Mutex::new(World::new(&config, clock.clone()).map_err(fail)?));
    let start = clock.now();
    let traffic_end = start + config.duration;
    let end = traffic_end + QUIET;

    let stop_traffic = Arc::new(AtomicBool::new(false));
    let workload = Workload::start(&config, world.clone(), stop_traffic.clone());

    if config.faults.point_crash_one_in > 0 {
        fault_points::arm(config.seed, config.faults.point_crash_one_in);
    }
    // Disarmed however the run ends (an early error included).
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            fault_points::disarm();
        }
    }
    let _disarm = Disarm;
    let mut fault: Option<Fault> = None;
    let mut fault_rng = StdRng::seed_from_u64(config.seed ^ 0x5eed_fa17);
    let mut next_fault = start + config.faults.fault_every;
    let replacing = Arc::new(AtomicBool::new(false));
    let mut healed = false;
    let mut final_reads = None;
    loop {
        let now = clock.now();
        if now >= end {
            break;
        }
        if final_reads.is_none() && now + FINAL_READS >= end {
            final_reads = Some(workload.final_reads(world.clone()));
        }
        if now >= traffic_end {
            stop_traffic.store(true, Ordering::Release);
            if !healed {
                fault_points::disarm();
                world.lock().heal().map_err(fail)?;
                healed = true;
                fault = None;
            }
        } else {
            fault =
                run_faults(&config, &world, &mut fault_rng, fault, &mut next_fault, &replacing, now).map_err(fail)?;
        }
        world.lock().step();
        tokio::time::sleep(STEP).await;
    }
    let mut history = workload.finish(&world).await;
    match final_reads {
        Some(reads) if reads.is_finished() => match reads.await {
            Ok(Ok(ops)) => history.kv.extend(ops),
            Ok(Err(err)) => history.incomplete.push(err),
            Err(err) => history.incomplete.push(format!("final reads failed: {err}")),
        },
        _ => history.incomplete.push("the final reads did not finish".into()),
    }
    let report = checks::check(&config, &world, history).map_err(|what| {
        let w = world.lock();
        fail(format!("{what}\n  faults: {}\n  members: {}", w.log.join("; "), w.describe()))
    })?;
    Ok(report)
}

/// Starts, continues or ends the fault of the moment.
fn run_faults(
    config: &SimConfig,
    world: &Arc<Mutex<World>>,
    rng: &mut StdRng,
    fault: Option<Fault>,
    next_fault: &mut Instant,
    replacing: &Arc<AtomicBool>,
    now: Instant,
) -> Result<Option<Fault>, String> {
    let mut w = world.lock();
    match fault {
        Some(Fault::Partition { until }) if now >= until => {
            w.network.heal();
            w.log.push("heal".into());
            Ok(None)
        }
        Some(Fault::Down { node, until }) if now >= until => {
            w.start(node)?;
            let url = w.nodes[node].url.clone();
            w.log.push(format!("restart {url}"));
            Ok(None)
        }
        Some(Fault::Replacing) if !replacing.load(Ordering::Acquire) => Ok(None),
        Some(fault) => Ok(Some(fault)),
        None if now < *next_fault => Ok(None),
        None => {
            let every = config.faults.fault_every.as_millis() as u64;
            *next_fault = now + Duration::from_millis(rng.gen_range(every / 2..=every * 3 / 2));
            let mut kinds = Vec::new();
            if config.faults.partitions {
                kinds.push(0);
            }
            if config.faults.crashes {
                kinds.push(1);
            }
            if config.faults.membership_changes {
                kinds.push(2);
            }
            let Some(&kind) = kinds.get(rng.gen_range(0..kinds.len().max(1))) else { return Ok(None) };
            let hold = Duration::from_millis(rng.gen_range(500..5000));
            match kind {
                0 => {
                    let voters = w.voters();
                    let ids: Vec<u64> = voters.iter().map(|&i| w.nodes[i].id).collect();
                    let mut side: Vec<u64> = ids.iter().copied().filter(|_| rng.gen_bool(0.4)).collect();
                    if side.is_empty() {
                        side.push(ids[rng.gen_range(0..ids.len())]);
                    }
                    let one_way = rng.gen_ratio(1, 4);
                    for &a in &side {
                        for &b in ids.iter().filter(|b| !side.contains(b)) {
                            w.network.set_link(a, b, false);
                            if !one_way {
                                w.network.set_link(b, a, false);
                            }
                        }
                    }
                    w.log.push(format!("partition {side:x?}{}", if one_way { " one-way" } else { "" }));
                    Ok(Some(Fault::Partition { until: now + hold }))
                }
                1 => {
                    let running = w.running();
                    if running.is_empty() {
                        return Ok(None);
                    }
                    let node = running[rng.gen_range(0..running.len())];
                    w.crash(node);
                    let url = w.nodes[node].url.clone();
                    w.log.push(format!("crash {url}"));
                    Ok(Some(Fault::Down { node, until: now + hold }))
                }
                _ => {
                    let voters = w.voters();
                    let n = w.next_member;
                    w.next_member += 1;
                    let url = format!("http://m{n}:2380");
                    // Below its starting size (an earlier add failed), the
                    // cluster only grows back: removing more could remove
                    // its last member, an operator's error, not a fault.
                    let victim_id = if voters.len() >= config.members {
                        let victim = voters[rng.gen_range(0..voters.len())];
                        let (victim_id, victim_url) = (w.nodes[victim].id, w.nodes[victim].url.clone());
                        w.log.push(format!("replace {victim_url} by {url}"));
                        Some(victim_id)
                    } else {
                        w.log.push(format!("add {url}"));
                        None
                    };
                    replacing.store(true, Ordering::Release);
                    drop(w);
                    let strict = config.faults.strict_reconfig;
                    let as_learner = rng.gen_bool(0.5);
                    tokio::spawn(replace_member(
                        world.clone(),
                        victim_id,
                        format!("m{n}"),
                        url,
                        strict,
                        as_learner,
                        replacing.clone(),
                    ));
                    Ok(Some(Fault::Replacing))
                }
            }
        }
    }
}

/// Removes member `victim` and adds a fresh one in its place, through any
/// running member, as an operator would with etcdctl; refusals (strict
/// reconfiguration checks, no leader) end the attempt.
async fn replace_member(
    world: Arc<Mutex<World>>,
    victim: Option<u64>,
    name: String,
    url: String,
    strict: bool,
    as_learner: bool,
    busy: Arc<AtomicBool>,
) {
    let outcome = async {
        // Through a member that stays (the one removed stops at once).
        let members = world.lock().members();
        let via = members.iter().find(|m| Some(m.member_id()) != victim).cloned().ok_or("no member running")?;
        if let Some(victim) = victim {
            remove_member(&world, &via, victim).await?;
        }
        let (added, list) =
            tokio::time::timeout(Duration::from_secs(10), via.member_add(vec![url.clone()], as_learner))
                .await
                .map_err(|_| "add timed out".to_string())?
                .map_err(|e| format!("add refused: {e}"))?;
        let cluster: Vec<(String, Vec<String>)> = list
            .iter()
            .map(|m| (if m.id == added.id { name.clone() } else { m.name.clone() }, m.peer_ur_ls.clone()))
            .filter(|(member_name, _)| !member_name.is_empty())
            .collect();
        {
            let mut w = world.lock();
            w.nodes.push(Node {
                id: added.id,
                url: url.clone(),
                config: member_config(&name, &url, cluster, ClusterState::Existing, strict),
                log: MemLogEngine::default(),
                backend: Arc::new(MemBackend::with_power_loss()),
                spool: Arc::default(),
                up: None,
                removed: false,
                restart_at: None,
            });
            let i = w.nodes.len() - 1;
            w.start(i)?;
            w.log.push(format!("joined {url}{}", if as_learner { " as a learner" } else { "" }));
        }
        if as_learner {
            promote(&world, added.id).await?;
            world.lock().log.push(format!("promoted {url}"));
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(err) = outcome {
        world.lock().log.push(format!("replace: {err}"));
    }
    busy.store(false, Ordering::Release);
}

/// Promotes learner `id` through the leader once it has caught up (etcd
/// refuses before), giving up after a while.
async fn promote(world: &Mutex<World>, id: u64) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let members = world.lock().members();
        let leader = members.iter().find(|m| m.leader() == m.member_id()).cloned();
        let outcome = match leader {
            Some(leader) => match tokio::time::timeout(Duration::from_secs(5), leader.member_promote(id)).await {
                Ok(Ok(_)) => Ok(()),
                // An earlier attempt that timed out went through after all.
                Ok(Err(keel_node::NodeError::MemberNotLearner)) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("timed out".to_string()),
            },
            None => Err("no leader".to_string()),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(format!("promote refused: {err}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Removes `victim` through `via`; an unknown outcome is settled by asking
/// for the membership. The removed member never starts again.
async fn remove_member(world: &Mutex<World>, via: &Member, victim: u64) -> Result<(), String> {
    let removal = tokio::time::timeout(Duration::from_secs(10), via.member_remove(victim)).await;
    let (removed, why) = match removal {
        Ok(Ok(_)) => (true, String::new()),
        // Refused outright, or unknown: the membership tells.
        Ok(Err(err)) => (false, err.to_string()),
        Err(_) => (false, "timed out".to_string()),
    };
    let removed = removed || {
        let list = tokio::time::timeout(Duration::from_secs(5), via.member_list(true)).await;
        matches!(list, Ok(Ok(list)) if !list.iter().any(|m| m.id == victim))
    };
    if removed {
        // Gone from the cluster: never started again, even if it was down
        // and missed its removal.
        let mut w = world.lock();
        if let Some(i) = w.nodes.iter().position(|n| n.id == victim) {
            w.nodes[i].removed = true;
            w.crash(i);
        }
    } else {
        return Err(format!("remove of {victim:x}: {why}"));
    }
    Ok(())
}
