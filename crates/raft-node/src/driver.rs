//! The thread that owns the raft state machine.
//!
//! raft-rs is sans-IO: it is told about time, messages and proposals, and
//! hands back `Ready`s saying what to persist, send and apply. One OS thread
//! drives it (fsync is blocking work and must never stall the async runtime);
//! everything else talks to it through an inbox of [`Command`]s.
//!
//! Batching: before each Ready the whole inbox is drained, so every proposal
//! that arrived while the previous fsync was running rides the next one.
//!
//! The inbox is bounded ([`INBOX_CAPACITY`]): a full inbox refuses
//! proposals and read requests (the member answers "too many requests") and
//! drops peer messages (raft resends). The same driver runs on its own thread
//! ([`RaftNode::start`]) or is stepped by a simulation ([`RaftNode::manual`]),
//! with time from a [`Clock`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::prelude::{ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole};

use crate::clock::{Clock, SystemClock};
use crate::log_store::RaftLogStore;
use crate::metrics::RaftMetrics;
use crate::RaftNodeError;

/// Commands waiting for the raft thread, at most. Under a flood of
/// proposals the thread drains this many per Ready and the rest are refused
/// at once rather than queued without bound.
pub const INBOX_CAPACITY: usize = 16 * 1024;

/// Where outgoing raft messages go. The in-process implementation connects
/// simulated members; the gRPC one (peer transport) real ones.
pub trait Transport: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);
    /// Peers that messages could not be delivered to since the last call.
    fn unreachable(&mut self) -> Vec<u64> {
        Vec::new()
    }
    /// Snapshot transfers that ended since the last call: the peer, and
    /// whether it received the whole snapshot. A transport that hands
    /// snapshots over like any other message need not report them.
    fn snapshot_outcomes(&mut self) -> Vec<(u64, bool)> {
        Vec::new()
    }
    /// Whether a peer said this member was removed from the cluster (its
    /// removal was committed while it was cut off, so it never applied it).
    fn removed_from_cluster(&mut self) -> bool {
        false
    }
}

/// A transport for a single-member cluster: there is nobody to talk to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            tracing::warn!(count = messages.len(), "raft messages to peers of a single-member cluster dropped");
        }
    }
}

/// The receiving end of the log: the member's state machine.
///
/// Calls arrive on the raft thread in log order and must not block for long;
/// implementations hand the work to their own applier.
pub trait Apply: Send + 'static {
    /// Entries committed by the cluster, in index order (normal entries and
    /// configuration changes alike; configuration changes are already in
    /// effect inside raft when this is called).
    fn committed(&mut self, entries: Vec<Entry>);
    /// Read index answers: `ctx` was committed-safe to read at `index`.
    fn read_states(&mut self, states: Vec<ReadState>);
    /// A proposal or read with this tag was refused locally (no leader, or
    /// leadership in transfer); its caller should hear about it now rather
    /// than time out.
    fn dropped(&mut self, tag: u64);
    /// A follower is behind the compacted log: prepare a snapshot of the
    /// state machine and hand it over with [`RaftHandle::snapshot_ready`].
    fn snapshot_wanted(&mut self) {}
    /// The leader's snapshot: replace the state machine's state with it
    /// before returning (the raft thread waits; the log restarts after it).
    fn install_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), String> {
        Err("this state machine cannot install snapshots".into())
    }
    /// A peer said this member was removed from the cluster: raft stops.
    fn removed(&mut self) {}
}

/// Requests to the raft thread.
pub enum Command {
    Propose {
        tag: u64,
        data: Vec<u8>,
    },
    ReadIndex {
        tag: u64,
    },
    Step(Message),
    ProposeConfChange {
        tag: u64,
        change: ConfChangeV2,
    },
    Campaign,
    /// Hand leadership to this member (raft's leader transfer).
    TransferLeader(u64),
    /// Drop the log up to this index (the state machine has it durably).
    Compact(u64),
    /// The state machine's snapshot at `index`, for followers behind the log.
    SnapshotReady {
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    },
    Shutdown,
}

/// Role, term and indexes published by the raft thread for everyone to read
/// without a round trip.
#[derive(Default, Debug)]
pub struct RaftStatus {
    term: AtomicU64,
    leader: AtomicU64,
    commit: AtomicU64,
    last_index: AtomicU64,
    role: AtomicU8,
    /// On the leader: each member's progress (others: empty).
    progress: std::sync::Mutex<Vec<PeerProgress>>,
}

/// What the leader knows of one member.
#[derive(Clone, Copy, Debug)]
struct PeerProgress {
    id: u64,
    matched: u64,
    /// Since when messages from it have kept arriving without a silence of
    /// an election timeout; `None` while it is silent (or for the leader).
    active_since: Option<Instant>,
}

impl RaftStatus {
    /// The highest log index the leader knows member `id` holds; `None` on a
    /// member that does not lead, or for an id raft does not track.
    pub fn matched(&self, id: u64) -> Option<u64> {
        self.peer(id).map(|peer| peer.matched)
    }

    /// On the leader: since when member `id` has been in touch without an
    /// election timeout's silence (etcd's transport "active since");
    /// `None` for a silent member, on a member that does not lead, and for
    /// the leader itself.
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        self.peer(id).and_then(|peer| peer.active_since)
    }

    /// On the leader: each member in touch, and since when.
    pub fn active_peers(&self) -> Vec<(u64, Instant)> {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.iter().filter_map(|peer| Some((peer.id, peer.active_since?))).collect()
    }

    fn peer(&self, id: u64) -> Option<PeerProgress> {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.iter().find(|peer| peer.id == id).copied()
    }
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
    /// The current leader's id, 0 when none is known.
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }
    pub fn commit_index(&self) -> u64 {
        self.commit.load(Ordering::Acquire)
    }
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Acquire)
    }
    pub fn is_leader(&self) -> bool {
        self.role.load(Ordering::Acquire) == StateRole::Leader as u8
    }
}

#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: u64,
    /// Members of a new cluster; ignored when the log already has a configuration.
    pub initial_voters: Vec<u64>,
    pub tick_interval: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Last index the state machine has durably applied: raft resumes after it.
    pub applied: u64,
    /// When set, this member's election timeout is exactly `election_ticks +
    /// jitter` ticks instead of raft-rs's own random draw in [E, 2E): a
    /// simulation draws it from its seeded RNG so runs replay identically.
    pub election_jitter: Option<usize>,
}

impl RaftConfig {
    /// etcd's defaults: 100 ms heartbeat, 1 s election timeout.
    pub fn new(id: u64, initial_voters: Vec<u64>, applied: u64) -> Self {
        RaftConfig {
            id,
            initial_voters,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            applied,
            election_jitter: None,
        }
    }

    /// How long followers wait for a heartbeat before campaigning.
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_ticks as u32
    }
}

/// The handle everyone else holds: cheap to clone, never blocks.
#[derive(Clone)]
pub struct RaftHandle {
    inbox: SyncSender<Command>,
    status: Arc<RaftStatus>,
    metrics: RaftMetrics,
}

impl RaftHandle {
    pub fn status(&self) -> &RaftStatus {
        &self.status
    }

    /// etcd's raft and WAL series of this member.
    pub fn metrics(&self) -> &RaftMetrics {
        &self.metrics
    }

    fn send(&self, command: Command) -> Result<(), RaftNodeError> {
        self.inbox.try_send(command).map_err(|err| match err {
            TrySendError::Full(_) => RaftNodeError::Busy,
            TrySendError::Disconnected(_) => RaftNodeError::Stopped,
        })
    }

    /// Proposes `data` for the log; the outcome arrives through [`Apply`]
    /// (committed entry, or `dropped(tag)`).
    pub fn propose(&self, tag: u64, data: Vec<u8>) -> Result<(), RaftNodeError> {
        self.send(Command::Propose { tag, data })
    }

    /// Asks for a linearizable read point; answered by `read_states` with
    /// `ctx` = `tag` as 8 big-endian bytes.
    pub fn read_index(&self, tag: u64) -> Result<(), RaftNodeError> {
        self.send(Command::ReadIndex { tag })
    }

    pub fn step(&self, message: Message) -> Result<(), RaftNodeError> {
        self.send(Command::Step(message))
    }

    pub fn propose_conf_change(&self, tag: u64, change: ConfChangeV2) -> Result<(), RaftNodeError> {
        self.send(Command::ProposeConfChange { tag, change })
    }

    pub fn campaign(&self) -> Result<(), RaftNodeError> {
        self.send(Command::Campaign)
    }

    /// Lets raft drop its log up to `index`, which the state machine has
    /// applied and made durable.
    pub fn compact(&self, index: u64) -> Result<(), RaftNodeError> {
        self.send(Command::Compact(index))
    }

    /// Answers [`Apply::snapshot_wanted`]: the state at applied `index`.
    pub fn snapshot_ready(&self, index: u64, conf_state: ConfState, data: Vec<u8>) -> Result<(), RaftNodeError> {
        self.send(Command::SnapshotReady { index, conf_state, data })
    }

    /// Asks the leader to hand leadership to `target`; watch
    /// [`RaftStatus::leader`] for the outcome.
    pub fn transfer_leader(&self, target: u64) -> Result<(), RaftNodeError> {
        self.send(Command::TransferLeader(target))
    }
}

/// The running raft thread. Dropping it without [`RaftNode::stop`] leaves the
/// thread to end when the last handle goes.
pub struct RaftNode {
    handle: RaftHandle,
    thread: Option<JoinHandle<()>>,
}

impl RaftNode {
    /// Starts raft on a thread of its own, on the machine's clock.
    pub fn start(
        config: RaftConfig,
        store: RaftLogStore,
        transport: Box<dyn Transport>,
        apply: Box<dyn Apply>,
    ) -> Result<RaftNode, RaftNodeError> {
        let (handle, stepper) = RaftNode::manual(config.clone(), store, transport, apply, Arc::new(SystemClock))?;
        let mut driver = stepper.driver;
        let thread = std::thread::Builder::new()
            .name(format!("raft-{:x}", config.id))
            .spawn(move || driver.run())
            .map_err(|e| RaftNodeError::Storage(format!("cannot start raft thread: {e}")))?;
        Ok(RaftNode { handle, thread: Some(thread) })
    }

    /// Raft without a thread: the caller drives it with
    /// [`RaftStepper::step`], on `clock`'s time (a simulation).
    pub fn manual(
        config: RaftConfig,
        store: RaftLogStore,
        transport: Box<dyn Transport>,
        apply: Box<dyn Apply>,
        clock: Arc<dyn Clock>,
    ) -> Result<(RaftHandle, RaftStepper), RaftNodeError> {
        let mut raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: config.applied,
            // etcd's limits: one append carries at most 1 MiB of entries, and
            // at most 256 appends are in flight to one follower, so catching
            // up a far-behind follower is paced by its acknowledgements.
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // A leader takes at most this much uncommitted data (then refuses
            // proposals), and hands at most this much committed data to the
            // applier per Ready, so no Ready grows without bound.
            max_uncommitted_size: 256 << 20,
            max_committed_size_per_ready: 64 << 20,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        if let Some(jitter) = config.election_jitter {
            raft_config.min_election_tick = config.election_ticks + jitter;
            raft_config.max_election_tick = config.election_ticks + jitter + 1;
        }
        raft_config.validate()?;
        let mut store = store;
        let commit = store.hard_state().commit;
        if config.applied > commit {
            // The state machine applied entries whose commit index had not
            // reached disk yet (the commit index is written unsynced). An
            // applied entry was committed, so the commit index catches up.
            if config.applied > raft::Storage::last_index(&store)? {
                return Err(RaftNodeError::Corrupt(format!(
                    "state machine applied up to {} but the raft log ends at {}",
                    config.applied,
                    raft::Storage::last_index(&store)?
                )));
            }
            store.set_commit(config.applied)?;
        }
        let single_voter = store.conf_state().voters == [config.id];
        let logger = slog::Logger::root(crate::log::TracingDrain, slog::o!());
        let mut raw = RawNode::new(&raft_config, store, &logger)?;
        if single_voter {
            // Alone in the cluster: no reason to wait out an election timeout.
            raw.campaign()?;
        }
        let (inbox, commands) = std::sync::mpsc::sync_channel(INBOX_CAPACITY);
        let status = Arc::new(RaftStatus::default());
        let metrics = RaftMetrics::new(status.clone());
        let next_tick = clock.now() + config.tick_interval;
        let mut driver = Driver {
            raw,
            metrics: metrics.clone(),
            leader_seen: raft::INVALID_ID,
            commands,
            transport,
            apply,
            status: status.clone(),
            tick_interval: config.tick_interval,
            silence: config.tick_interval * config.election_ticks as u32,
            contact: HashMap::new(),
            removed: false,
            stopped: false,
            clock,
            next_tick,
        };
        driver.publish_status();
        Ok((RaftHandle { inbox, status, metrics }, RaftStepper { driver }))
    }

    pub fn handle(&self) -> RaftHandle {
        self.handle.clone()
    }

    /// Stops the raft thread after the Ready in progress; waits for it.
    pub fn stop(mut self) {
        let _ = self.handle.inbox.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Raft driven by its caller instead of a thread (see [`RaftNode::manual`]).
pub struct RaftStepper {
    driver: Driver,
}

impl RaftStepper {
    /// Takes in every queued command, ticks if a tick is due on the clock,
    /// and handles one Ready (persist, send, apply). Returns false once raft
    /// has stopped (shut down, removed, or its log failed).
    pub fn step(&mut self) -> bool {
        self.driver.step_once()
    }

    /// When the next tick is due: a simulation need not step before then
    /// unless a command or message arrives.
    pub fn next_tick(&self) -> Instant {
        self.driver.next_tick
    }
}

struct Driver {
    raw: RawNode<RaftLogStore>,
    metrics: RaftMetrics,
    /// The leader (or none) at the last Ready, to count changes as etcd does.
    leader_seen: u64,
    commands: Receiver<Command>,
    transport: Box<dyn Transport>,
    apply: Box<dyn Apply>,
    status: Arc<RaftStatus>,
    tick_interval: Duration,
    /// No message for this long ends a peer's run of contact.
    silence: Duration,
    /// Per peer: (start of its current run of contact, last message).
    contact: HashMap<u64, (Instant, Instant)>,
    /// A configuration change without this member was applied: raft-rs
    /// cannot go on (a leader that removed itself panics on its next
    /// append), and there is nothing left for this member to do.
    removed: bool,
    /// Shut down, removed or failed: nothing more is driven.
    stopped: bool,
    clock: Arc<dyn Clock>,
    next_tick: Instant,
}

impl Driver {
    fn run(&mut self) {
        while !self.stopped {
            let wait = self.next_tick.saturating_duration_since(self.clock.now());
            match self.commands.recv_timeout(wait) {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.step_once();
        }
    }

    /// One turn of the loop: the whole inbox, a tick if due, one Ready.
    fn step_once(&mut self) -> bool {
        while !self.stopped {
            match self.commands.try_recv() {
                Ok(command) => self.handle(command),
                Err(_) => break,
            }
        }
        if self.stopped {
            return false;
        }
        let now = self.clock.now();
        if now >= self.next_tick {
            self.raw.tick();
            self.next_tick += self.tick_interval;
            if self.next_tick < now {
                self.next_tick = now + self.tick_interval;
            }
        }
        for peer in self.transport.unreachable() {
            self.raw.report_unreachable(peer);
        }
        if self.transport.removed_from_cluster() {
            tracing::warn!("a peer says this member was removed from the cluster");
            self.apply.removed();
            self.removed = true;
            self.stop();
            return false;
        }
        for (peer, delivered) in self.transport.snapshot_outcomes() {
            // Failure sends the leader back to probing, so it tries again.
            let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            self.raw.report_snapshot(peer, status);
        }
        let outcome = self.on_ready();
        if self.removed {
            tracing::info!("this member was removed from the cluster; its raft stops");
            self.stop();
        } else if let Err(err) = outcome {
            // The log can no longer be trusted to be durable; a member
            // that keeps going could acknowledge writes it then loses.
            tracing::error!(%err, "raft log write failed; stopping this member's raft");
            self.stop();
        }
        !self.stopped
    }

    /// Nothing more is driven, and nobody may go on believing this member
    /// leads.
    fn stop(&mut self) {
        self.status.leader.store(raft::INVALID_ID, Ordering::Release);
        self.status.role.store(StateRole::Follower as u8, Ordering::Release);
        self.stopped = true;
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Propose { tag, data } => {
                if self.raw.propose(Vec::new(), data).is_err() {
                    self.apply.dropped(tag);
                }
            }
            Command::ReadIndex { tag } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    self.apply.dropped(tag);
                } else {
                    self.raw.read_index(tag.to_be_bytes().to_vec());
                }
            }
            Command::Step(message) => {
                let from = message.from;
                match self.raw.step(message) {
                    // Only messages raft took count as contact.
                    Ok(()) => {
                        let now = self.clock.now();
                        let (since, last) = self.contact.entry(from).or_insert((now, now));
                        if now.duration_since(*last) > self.silence {
                            *since = now;
                        }
                        *last = now;
                    }
                    Err(err) => tracing::debug!(%err, "raft message ignored"),
                }
            }
            Command::ProposeConfChange { tag, change } => {
                if self.raw.propose_conf_change(Vec::new(), change).is_err() {
                    self.apply.dropped(tag);
                }
            }
            Command::Campaign => {
                let _ = self.raw.campaign();
            }
            Command::TransferLeader(target) => self.raw.transfer_leader(target),
            Command::Compact(index) => {
                let applied = self.raw.raft.raft_log.applied;
                if let Err(err) = self.raw.mut_store().compact(index.min(applied)) {
                    tracing::warn!(%err, index, "raft log compaction failed");
                }
            }
            Command::SnapshotReady { index, conf_state, data } => {
                if let Err(err) = self.raw.mut_store().set_snapshot(index, conf_state, data) {
                    tracing::warn!(%err, index, "snapshot not usable");
                }
            }
            Command::Shutdown => self.stop(),
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftNodeError> {
        if self.raw.store().take_snapshot_wanted() {
            self.apply.snapshot_wanted();
        }
        if !self.raw.has_ready() {
            self.publish_status();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            // Recorded in the log first, as etcd saves it to its WAL first:
            // a crash before the state machine has it all is repaired at
            // restart from the log's new start.
            self.raw.mut_store().apply_snapshot(&snapshot)?;
            self.apply
                .install_snapshot(&snapshot)
                .map_err(|e| RaftNodeError::Storage(format!("installing the leader's snapshot: {e}")))?;
        }
        let committed = ready.take_committed_entries();
        self.apply_committed(committed)?;
        if self.removed {
            return Ok(());
        }
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        if !entries.is_empty() || hard_state.is_some() {
            let started = Instant::now();
            // etcd's fsync histogram counts fsyncs: a commit-only write is not one.
            if self.raw.mut_store().append(&entries, hard_state.as_ref())? {
                self.metrics.wal_fsync.observe(started.elapsed().as_secs_f64());
            }
            let bytes: usize = entries.iter().map(|entry| entry.data.len()).sum();
            self.metrics.wal_write_bytes.add(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        if !ready.read_states().is_empty() {
            self.apply.read_states(ready.take_read_states());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply_committed(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.publish_status();
        Ok(())
    }

    fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), RaftNodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            match entry.get_entry_type() {
                EntryType::EntryConfChange if !entry.data.is_empty() => {
                    // Keel proposes only V2 changes; a V1 change in the log came from elsewhere.
                    return Err(RaftNodeError::Corrupt(format!("entry {} is a V1 conf change", entry.index)));
                }
                EntryType::EntryConfChangeV2 if !entry.data.is_empty() => {
                    let change: ConfChangeV2 = protobuf::Message::parse_from_bytes(&entry.data)
                        .map_err(|e| RaftNodeError::Corrupt(format!("conf change: {e}")))?;
                    let id = self.raw.raft.id;
                    let was_member = is_member(self.raw.store().conf_state(), id);
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.removed |= was_member && !is_member(&conf_state, id);
                    // A removed member's contact history goes with it (an id
                    // is never reused, so nothing else would drop it).
                    self.contact.retain(|peer, _| is_member(&conf_state, *peer));
                    self.raw.mut_store().set_conf_state(conf_state)?;
                }
                _ => {}
            }
        }
        self.apply.committed(entries);
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        // etcd counts every arrival of a leader after another or after none,
        // so a leader re-elected after a partition counts again.
        if raft.leader_id != self.leader_seen {
            if raft.leader_id != raft::INVALID_ID {
                self.metrics.leader_changes.inc();
            }
            self.leader_seen = raft.leader_id;
        }
        self.status.term.store(raft.term, Ordering::Release);
        self.status.leader.store(raft.leader_id, Ordering::Release);
        self.status.commit.store(raft.raft_log.committed, Ordering::Release);
        self.status.last_index.store(raft.raft_log.last_index(), Ordering::Release);
        self.status.role.store(raft.state as u8, Ordering::Release);
        // Runs after every Ready: refill in place rather than allocate.
        let mut peers = self.status.progress.lock().unwrap_or_else(|e| e.into_inner());
        peers.clear();
        if raft.state == StateRole::Leader {
            let now = self.clock.now();
            peers.extend(raft.prs().iter().map(|(id, progress)| {
                PeerProgress {
                    id: *id,
                    matched: progress.matched,
                    active_since: self
                        .contact
                        .get(id)
                        .filter(|(_, last)| now.duration_since(*last) <= self.silence)
                        .map(|(since, _)| *since),
                }
            }));
        }
    }
}

/// Whether `id` votes or learns in `conf_state`.
fn is_member(conf_state: &ConfState, id: u64) -> bool {
    conf_state.voters.contains(&id) || conf_state.learners.contains(&id)
}
