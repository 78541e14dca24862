//! Construction and bootstrap: a member is assembled from its parts (log
//! engine, MVCC store, network, clock), takes its identity and membership
//! from its data or, the first time, from its flags, and starts raft, the
//! applier and the lease clock — on threads of their own, or stepped by a
//! simulation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use keel_lease_manager::{Lessor, LessorConfig};
use keel_mvcc::{Identity, KvStore, RocksBackend, RocksOptions};
use keel_proto::etcdserverpb::Member as EtcdMember;
use keel_raft_node::{
    Apply, Clock, Entry, LogEngine, LogEngineKind, MemLogEngine, RaftConfig, RaftHandle, RaftLogStore, RaftNode,
    RaftStepper, ReadState, Snapshot, SystemClock,
};
use keel_watch_hub::WatchHub;
use parking_lot::Mutex;

use super::{Member, Running};
use crate::alarms::Alarms;
use crate::applier::{conf_state_of, Applier, ApplySender, Membership, Snapshots};
use crate::auth::AuthStore;
use crate::config::{ClusterState, MemberConfig};
use crate::history::StoreHistory;
use crate::lease_clock::LeaseClock;
use crate::lease_expiry::{LeaseExpiry, LEASE_TICK};
use crate::metrics::NodeMetrics;
use crate::peer::{GrpcNetwork, Network, NoNetwork};
use crate::proposals::{Proposals, Waiters};
use crate::snapshots::{install_spooled, DirSpool, MemSpool, SnapshotShelf, SnapshotSpool};
use crate::{ids, NodeError};

/// What a member is made of.
pub struct Parts {
    /// The MVCC store (its backend: RocksDB or memory).
    pub kv: Arc<KvStore>,
    /// Where the raft log and hard state live.
    pub log: Box<dyn LogEngine>,
    pub network: Arc<dyn Network>,
    pub clock: Arc<dyn Clock>,
    /// Fixes this member's election timeout at `election ticks + jitter`
    /// (a simulation draws it from its seed); `None`: raft-rs draws it.
    pub election_jitter: Option<usize>,
    pub offload: Offload,
    /// Where snapshots from the leader wait to be installed.
    pub spool: Arc<dyn SnapshotSpool>,
}

/// Fault points between the batches of a compaction's deletions, for the
/// crash tests: `compact-batch=return(crash:compact-batch-<n>)` stops the
/// process after batch n is written, and `compact-batch-sync=return` first
/// flushes the store, as a memtable flush in the middle of a compaction
/// would (so a restart finds the compaction scheduled, not finished, and
/// already recorded as applied: it must resume it, not replay it).
#[cfg(feature = "failpoints")]
fn crash_between_compaction_batches(kv: &Arc<KvStore>) {
    let backend = kv.backend();
    kv.set_compaction_batch_hook(Box::new(move |batch| {
        let marker = format!("compact-batch-{batch}");
        if fail::eval("compact-batch-sync", |_| ()).is_some() {
            let _ = backend.sync();
        }
        keel_raft_node::failpoints::fault_point("compact-batch", &[marker.as_bytes()]);
    }));
}

/// The raft log engine for a member that has no log yet: the segment log,
/// unless `KEEL_RAFT_LOG_ENGINE=rocksdb` asks for the RocksDB one (kept for
/// data dirs written before the segment log, and for benchmarks comparing
/// the two in one binary).
fn fresh_log_engine() -> LogEngineKind {
    match std::env::var("KEEL_RAFT_LOG_ENGINE").as_deref() {
        Ok("rocksdb") => LogEngineKind::RocksDb,
        _ => LogEngineKind::Segments,
    }
}

impl Parts {
    /// A production member: RocksDB under `data_dir/member` (the raft log
    /// under `--wal-dir` when set), the gRPC network when on a tokio
    /// runtime, the machine's clock. Blocking.
    pub fn on_disk(config: &MemberConfig) -> Result<Parts, NodeError> {
        let member_dir = config.data_dir.join("member");
        std::fs::create_dir_all(&member_dir)
            .map_err(|e| NodeError::Storage(format!("{}: {e}", member_dir.display())))?;
        // The raft log is the store's write-ahead log: it keeps every entry
        // after the store's last flush (the log is compacted only after one)
        // and a restart replays them, so the store keeps no WAL of its own.
        let store_dir = crate::import::store_dir(&config.data_dir);
        let backend = RocksBackend::open_with(&store_dir, RocksOptions::replayed_from_raft_log())
            .map_err(|e| NodeError::Mvcc(e.into()))?;
        let kv = Arc::new(KvStore::open(Arc::new(backend)).map_err(NodeError::Mvcc)?);
        #[cfg(feature = "failpoints")]
        crash_between_compaction_batches(&kv);
        let log_dir = config.wal_dir.clone().unwrap_or_else(|| member_dir.join("raft"));
        let log = LogEngineKind::of_dir(&log_dir, fresh_log_engine()).open(&log_dir).map_err(NodeError::Raft)?;
        // Peers come and go with membership changes, so any member that runs
        // on a tokio runtime gets the gRPC network, even alone.
        let network: Arc<dyn Network> = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Arc::new(GrpcNetwork::new(runtime)),
            Err(_) => Arc::new(NoNetwork),
        };
        let spool = Arc::new(DirSpool::open(&member_dir.join("snap"))?);
        Ok(Parts {
            kv,
            log,
            network,
            clock: Arc::new(SystemClock),
            election_jitter: None,
            offload: Offload::Pool,
            spool,
        })
    }

    /// A member in memory on `network`: for tests and the simulation.
    pub fn in_memory(kv: Arc<KvStore>, log: MemLogEngine, network: Arc<dyn Network>, clock: Arc<dyn Clock>) -> Parts {
        Parts {
            kv,
            log: Box::new(log),
            network,
            clock,
            election_jitter: None,
            offload: Offload::Inline,
            spool: Arc::new(MemSpool::default()),
        }
    }
}

/// Where a member runs store reads that may block on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// tokio's blocking pool, never the async runtime's threads.
    Pool,
    /// Right away, on the caller's thread: for in-memory stores, and so a
    /// simulation stays deterministic.
    Inline,
}

impl Offload {
    pub(crate) async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NodeError> {
        match self {
            Offload::Pool => {
                tokio::task::spawn_blocking(work).await.map_err(|e| NodeError::Storage(format!("storage task: {e}")))
            }
            Offload::Inline => Ok(work()),
        }
    }
}

/// A member driven by its caller instead of threads: raft (with the
/// applier, called from the raft loop), the lease clock and watch catch-up
/// move one step per call.
pub struct MemberStepper {
    raft: RaftStepper,
    expiry: LeaseExpiry,
    next_expiry: Instant,
    watches: Arc<WatchHub>,
    clock: Arc<dyn Clock>,
}

impl MemberStepper {
    /// One step; false once raft has stopped (removed or failed).
    pub fn step(&mut self) -> bool {
        let alive = self.raft.step();
        let now = self.clock.now();
        if alive && now >= self.next_expiry {
            self.expiry.tick();
            self.next_expiry = now + LEASE_TICK;
        }
        self.watches.catch_up_round();
        alive
    }

    /// The next time something is due without outside input.
    pub fn next_deadline(&self) -> Instant {
        self.raft.next_tick().min(self.next_expiry)
    }
}

impl Member {
    /// Opens (or creates) the member's data under `data_dir/member` and starts
    /// it on threads of its own. Blocking: call it off the async runtime or
    /// before it starts.
    pub fn start(config: MemberConfig) -> Result<Member, NodeError> {
        let parts = Parts::on_disk(&config)?;
        Member::assemble(config, parts)
    }

    /// A member from `parts`, running on threads of its own.
    pub fn assemble(config: MemberConfig, parts: Parts) -> Result<Member, NodeError> {
        let (member, _) = build(config, parts, false)?;
        Ok(member)
    }

    /// A member from `parts` that runs only when its stepper is stepped.
    pub fn assemble_stepped(config: MemberConfig, parts: Parts) -> Result<(Member, MemberStepper), NodeError> {
        let (member, stepper) = build(config, parts, true)?;
        let stepper = stepper.ok_or_else(|| NodeError::Config("no stepper".into()))?;
        Ok((member, stepper))
    }
}

fn build(config: MemberConfig, parts: Parts, stepped: bool) -> Result<(Member, Option<MemberStepper>), NodeError> {
    let Parts { kv, log, network, clock, election_jitter, offload, spool } = parts;
    finish_interrupted_install(&kv, &*spool)?;
    let (identity, members) = match kv.identity().map_err(NodeError::Mvcc)? {
        Some(identity) => {
            // As etcd: a bootstrapped member ignores --initial-cluster and
            // its token; its identity and membership are in its data.
            let from_flags = ids::member_id(&config.peer_urls, &config.cluster_token);
            if from_flags != identity.member_id {
                tracing::warn!(
                    member_id = %format!("{:x}", identity.member_id),
                    "data dir already bootstrapped; --initial-* flags are ignored"
                );
            }
            (identity, kv.members().map_err(NodeError::Mvcc)?)
        }
        None => {
            let (identity, members) = match config.initial_cluster_state {
                ClusterState::New => initial_membership(&config)?,
                ClusterState::Existing => joined_membership(&config, network.as_ref())?,
            };
            kv.bootstrap(identity, &members).map_err(NodeError::Mvcc)?;
            (identity, members)
        }
    };
    let (member_id, cluster_id) = (identity.member_id, identity.cluster_id);
    // A joining member starts its log with the others as the
    // configuration; the entry that added it, replayed from the leader,
    // adds it. (Only used for a log that was never written.)
    let voters: Vec<u64> = members
        .iter()
        .filter(|m| !m.is_learner && (config.initial_cluster_state == ClusterState::New || m.id != member_id))
        .map(|m| m.id)
        .collect();
    let peers: HashMap<u64, String> = members
        .iter()
        .filter(|m| m.id != member_id)
        .filter_map(|m| m.peer_ur_ls.first().map(|url| (m.id, url.clone())))
        .collect();

    let mut store = RaftLogStore::open(log, &voters).map_err(NodeError::Raft)?;
    if store.snapshot_index() > kv.consistent_index() {
        // A crash came between recording the leader's snapshot in the raft
        // log and installing it in the store: the spool still has it.
        reinstall_newest(&kv, &*spool, store.snapshot_index())?;
    }
    let applied_index = kv.consistent_index();
    if applied_index > store.last_log_index() {
        // A crash came between installing a leader's snapshot in the store
        // and recording it in the raft log: the log catches up with the
        // store. The boundary's term is unknown (0), so the leader's next
        // append will not match and it sends a snapshot again if needed.
        let mut snapshot = keel_raft_node::Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = applied_index;
        meta.set_conf_state(conf_state_of(&members));
        store.apply_snapshot(&snapshot).map_err(NodeError::Raft)?;
    }

    let lessor = Arc::new(Mutex::new(restore_lessor(&config, &kv)?));
    let auth = Arc::new(AuthStore::restore(&kv, config.auth.clone())?);
    let alarms = Arc::new(Alarms::restore(&kv)?);
    let v2 = Arc::new(crate::v2keys::V2Keys::load(&kv)?);
    let waiters = Arc::new(Waiters::default());
    let applied = Arc::new(AtomicU64::new(applied_index));
    let history = Arc::new(StoreHistory(kv.clone()));
    let watches = if stepped {
        WatchHub::without_thread(history, kv.current_revision())
    } else {
        WatchHub::new(history, kv.current_revision())
    };
    let shelf = Arc::new(SnapshotShelf::default());
    let metrics = NodeMetrics::new();
    metrics.server_id.with_label_values(&[&format!("{member_id:x}")]).set(1);
    metrics.server_version.with_label_values(&[crate::ETCD_VERSION]).set(1);
    metrics.cluster_version.with_label_values(&[crate::CLUSTER_VERSION]).set(1);
    metrics.quota_backend_bytes.set(config.quota_backend_bytes);
    let links = network.links(cluster_id, member_id, shelf.clone(), metrics.peer.clone());
    for (id, url) in &peers {
        links.add(*id, url);
    }
    let removed = Arc::new(tokio::sync::Notify::new());
    let removed_members =
        Arc::new(parking_lot::RwLock::new(kv.removed_members().map_err(NodeError::Mvcc)?.into_iter().collect()));
    let members_now = kv.members().map_err(NodeError::Mvcc)?;
    let current_members = Arc::new(parking_lot::RwLock::new(members_now.iter().map(|m| m.id).collect()));
    let learner = Arc::new(AtomicBool::new(members_now.iter().any(|m| m.id == member_id && m.is_learner)));
    let raft_config = RaftConfig {
        tick_interval: config.heartbeat_interval,
        election_ticks: config.election_ticks(),
        heartbeat_ticks: 1,
        election_jitter,
        ..RaftConfig::new(member_id, voters.clone(), applied_index)
    };
    let election_timeout = raft_config.election_timeout();
    let make_applier = |raft: RaftHandle, lease_clock: Arc<LeaseClock>| {
        Applier::new(
            kv.clone(),
            lessor.clone(),
            auth.clone(),
            waiters.clone(),
            applied.clone(),
            watches.clone(),
            clock.clone(),
        )
        .with_lease_clock(lease_clock)
        .with_metrics(metrics.clone())
        .with_alarms(alarms.clone())
        .with_v2(v2.clone())
        .with_membership(Membership {
            member_id,
            links: links.clone(),
            removed: removed.clone(),
            removed_members: removed_members.clone(),
            current_members: current_members.clone(),
            learner: learner.clone(),
        })
        .with_snapshots(Snapshots {
            raft,
            count: config.snapshot_count.max(1),
            catchup_entries: config.snapshot_catchup_entries,
            compacted_at: applied_index,
            offered_at: None,
            shelf: shelf.clone(),
            spool: spool.clone(),
        })
    };
    let lease_clock_of = |raft: &RaftHandle| Arc::new(LeaseClock::new(raft.clone(), election_timeout, clock.clone()));
    let expiry_of = |raft: &RaftHandle, lease_clock: &Arc<LeaseClock>| LeaseExpiry {
        lessor: lessor.clone(),
        clock: lease_clock.clone(),
        raft: raft.clone(),
    };
    // Raft needs its applier first, and the applier raft's handle: the
    // applier joins once raft exists, before raft applies anything to it.
    let (raft, lease_clock, running, stepper) = if stepped {
        let applier = DeferredApplier::default();
        let (raft, raft_stepper) =
            RaftNode::manual(raft_config, store, links.transport(), Box::new(applier.clone()), clock.clone())
                .map_err(NodeError::Raft)?;
        let lease_clock = lease_clock_of(&raft);
        applier.set(make_applier(raft.clone(), lease_clock.clone()));
        let stepper = MemberStepper {
            raft: raft_stepper,
            expiry: expiry_of(&raft, &lease_clock),
            next_expiry: clock.now() + LEASE_TICK,
            watches: watches.clone(),
            clock: clock.clone(),
        };
        (raft, lease_clock, None, Some(stepper))
    } else {
        // Committed entries wait in the applier's queue until it starts.
        let (sender, events) = ApplySender::channel(applied.clone(), waiters.clone());
        let replay_to = store.hard_state().commit.max(applied_index);
        let node = RaftNode::start(raft_config, store, links.transport(), Box::new(sender)).map_err(NodeError::Raft)?;
        let raft = node.handle();
        let lease_clock = lease_clock_of(&raft);
        let applier = make_applier(raft.clone(), lease_clock.clone()).spawn(events)?;
        wait_for_replay(&applied, applied_index, replay_to, &applier)?;
        let stop_expiry = Arc::new(AtomicBool::new(false));
        let expiry = expiry_of(&raft, &lease_clock).spawn(stop_expiry.clone())?;
        (raft, lease_clock, Some(Running { raft: node, applier, expiry, stop_expiry }), None)
    };

    let proposals = Proposals::new(
        raft.clone(),
        waiters,
        applied.clone(),
        Proposals::first_tag(member_id, clock.unix_millis()),
        config.max_request_bytes,
        config.request_timeout,
        metrics.clone(),
    );
    tracing::info!(
        name = %config.name,
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        applied_index,
        "member started"
    );
    let (quota_bytes, quota_kv) = (config.quota_backend_bytes, kv.clone());
    let member = Member {
        config,
        member_id,
        cluster_id,
        kv,
        lessor,
        auth,
        alarms,
        v2,
        watches,
        raft,
        proposals,
        applied,
        links,
        spool,
        removed,
        removed_members,
        current_members,
        learner,
        published: std::sync::atomic::AtomicBool::new(false),
        lease_clock,
        clock,
        offload,
        running: Mutex::new(running),
        metrics,
        quota: crate::quota::Quota::new(quota_bytes, quota_kv),
    };
    Ok((member, stepper))
}

/// Waits until the store has applied again what the raft log holds as
/// committed (`replay_to`) beyond what the store kept (`kept`): the store
/// keeps no WAL, so after a crash it may be behind what the member served
/// before, and the member must not serve reads older than those until the
/// replay is done. Committed entries need no leader to be applied, so this
/// ends without one.
fn wait_for_replay(
    applied: &AtomicU64,
    kept: u64,
    replay_to: u64,
    applier: &std::thread::JoinHandle<()>,
) -> Result<(), NodeError> {
    let started = Instant::now();
    let mut reported = started;
    loop {
        let now_applied = applied.load(std::sync::atomic::Ordering::Acquire);
        if now_applied >= replay_to {
            break;
        }
        if applier.is_finished() {
            return Err(NodeError::Storage("the applier stopped while replaying the raft log".into()));
        }
        if reported.elapsed() >= REPLAY_REPORT_EVERY {
            tracing::info!(applied = now_applied, replay_to, "replaying the raft log into the store");
            reported = Instant::now();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if replay_to > kept {
        tracing::info!(
            entries = replay_to - kept,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the raft log into the store"
        );
    }
    Ok(())
}

/// How often a long replay says how far it got.
const REPLAY_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A crash cut off the install of a leader's snapshot: the store is part
/// old, part new, so the install is done again from the spool before
/// anything reads the store. Snapshots already installed are dropped.
fn finish_interrupted_install(kv: &KvStore, spool: &dyn SnapshotSpool) -> Result<(), NodeError> {
    if kv.snapshot_install_interrupted().map_err(NodeError::Mvcc)? {
        reinstall_newest(kv, spool, 0)?;
    }
    spool.clear_through(kv.consistent_index());
    Ok(())
}

/// Installs the newest spooled snapshot, which must reach `at_least`.
fn reinstall_newest(kv: &KvStore, spool: &dyn SnapshotSpool, at_least: u64) -> Result<(), NodeError> {
    let index = spool.newest().filter(|&index| index >= at_least).ok_or_else(|| {
        NodeError::Storage(
            "installing a snapshot from the leader was cut off and the snapshot is gone; \
             remove this member's data and add it to the cluster again"
                .into(),
        )
    })?;
    tracing::warn!(index, "installing the leader's snapshot again: a crash cut it off");
    install_spooled(kv, spool, index)
}

/// The lease manager as the store last recorded it. Checkpointing is on by
/// default in Keel (off in etcd): without it a leader change gives every
/// lease its full TTL again, so a lease whose holder died can outlive its
/// TTL by far under repeated elections.
fn restore_lessor(config: &MemberConfig, kv: &KvStore) -> Result<Lessor, NodeError> {
    let records = kv.lease_records().map_err(NodeError::Mvcc)?;
    let leased_keys = kv.leased_keys().map_err(NodeError::Mvcc)?;
    let lease_config = LessorConfig {
        min_ttl: keel_lease_manager::min_lease_ttl(config.election_ticks() as u64, config.heartbeat_interval),
        checkpointing: true,
        checkpoint_interval: config.lease_checkpoint_interval,
        ..LessorConfig::default()
    };
    Ok(Lessor::restore(
        lease_config,
        records.into_iter().map(|r| keel_lease_manager::LeaseRecord {
            id: r.id,
            ttl: r.ttl,
            remaining_ttl: r.remaining_ttl,
        }),
        leased_keys,
    ))
}

/// The applier of a stepped member, set once raft exists; raft calls it
/// only when stepped, which is after that.
#[derive(Clone, Default)]
struct DeferredApplier(Arc<Mutex<Option<Applier>>>);

impl DeferredApplier {
    fn set(&self, applier: Applier) {
        *self.0.lock() = Some(applier);
    }

    fn with(&self, work: impl FnOnce(&mut Applier)) {
        if let Some(applier) = self.0.lock().as_mut() {
            work(applier);
        }
    }
}

impl Apply for DeferredApplier {
    fn committed(&mut self, entries: Vec<Entry>) {
        self.with(|applier| applier.committed(entries));
    }
    fn read_states(&mut self, states: Vec<ReadState>) {
        self.with(|applier| applier.read_states(states));
    }
    fn dropped(&mut self, tag: u64) {
        self.with(|applier| applier.dropped(tag));
    }
    fn snapshot_wanted(&mut self) {
        self.with(|applier| applier.snapshot_wanted());
    }
    fn removed(&mut self) {
        self.with(Apply::removed);
    }
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let mut outcome = Err("the applier is not set".to_string());
        self.with(|applier| outcome = applier.install_snapshot(snapshot));
        outcome
    }
}

/// Who this member is and who its first peers are, from the flags of a
/// member that has never started: `--initial-cluster` (or this member alone),
/// with etcd's ids, so etcd tooling sees the ids etcd would compute.
fn initial_membership(config: &MemberConfig) -> Result<(Identity, Vec<EtcdMember>), NodeError> {
    let member_id = ids::member_id(&config.peer_urls, &config.cluster_token);
    for (name, urls) in &config.initial_cluster {
        if name == &config.name && ids::member_id(urls, &config.cluster_token) != member_id {
            return Err(NodeError::Config(format!(
                "--initial-cluster has {name}={} but this member advertises {}",
                urls.join(","),
                config.peer_urls.join(",")
            )));
        }
        if name != &config.name && urls.is_empty() {
            return Err(NodeError::Config(format!("member {name} has no peer URL")));
        }
    }
    if !config.initial_cluster.is_empty() && !config.initial_cluster.iter().any(|(name, _)| name == &config.name) {
        return Err(NodeError::Config(format!("--initial-cluster has no member named {:?}", config.name)));
    }
    Ok(ids::new_cluster(&config.name, &config.peer_urls, &config.initial_cluster, &config.cluster_token))
}

/// Who this member is in a running cluster it joins: the cluster id and the
/// members (this one included, as MemberAdd recorded it) come from the
/// members named in `--initial-cluster`.
fn joined_membership(config: &MemberConfig, network: &dyn Network) -> Result<(Identity, Vec<EtcdMember>), NodeError> {
    let others: Vec<String> = config
        .initial_cluster
        .iter()
        .filter(|(name, _)| name != &config.name)
        .flat_map(|(_, urls)| urls.iter().cloned())
        .collect();
    if others.is_empty() {
        return Err(NodeError::Config(
            "--initial-cluster-state existing needs the other members in --initial-cluster".into(),
        ));
    }
    let (cluster_id, members) = network.cluster_info(&others)?;
    let me =
        members.iter().find(|m| m.peer_ur_ls.iter().any(|url| config.peer_urls.contains(url))).ok_or_else(|| {
            NodeError::Config(format!(
                "the cluster has no member with peer URLs {}: add it first (etcdctl member add)",
                config.peer_urls.join(",")
            ))
        })?;
    Ok((Identity { member_id: me.id, cluster_id }, members))
}
