//! One Keel member: raft, the MVCC store and the applier wired together,
//! with the client-facing operations the gRPC layer calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_lease_manager::{Lessor, LessorConfig, TimeToLive};
use keel_mvcc::{Identity, KvStore, WriteResponse};
use keel_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseCheckpoint,
    LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    Member as EtcdMember, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest,
    TxnResponse,
};
use keel_proto::keelpb::{
    internal_raft_request::Request, ConfChangeContext, InternalRaftRequest, LeaseExpiry, MemberAttributes,
};
use keel_proto::mvccpb::{event::EventType, Event};
use keel_raft_node::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, NoPeers, RaftConfig, RaftHandle, RaftLogStore, RaftNode,
    RocksLogEngine,
};
use keel_watch_hub::WatchHub;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::oneshot;

use crate::applier::{conf_state_of, Membership, Snapshots};
use crate::applier::{Applied, Applier, ApplySender, Waiters};
use crate::history::StoreHistory;
use crate::lease_clock::LeaseClock;
use crate::peers::{GrpcTransport, PeerClients, PeerSet};
use crate::read_rounds::ReadRounds;
use crate::{ids, NodeError};

/// etcd's default --max-request-bytes (1.5 MiB): proposals above it are refused.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd 3.6's default --snapshot-count.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 10_000;
/// etcd's default --experimental-snapshot-catchup-entries.
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;

/// etcd's version this member speaks for (API level).
pub const ETCD_VERSION: &str = "3.6.0";

#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the raft log lives when not under `data_dir` (etcd's --wal-dir:
    /// a dedicated disk keeps log syncs away from the store's writes).
    pub wal_dir: Option<PathBuf>,
    /// This member's advertised peer URLs; with the token, they make its id.
    pub peer_urls: Vec<String>,
    /// Every member of a new cluster (name, peer URLs), this one included;
    /// empty for a cluster of this member alone.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub cluster_token: String,
    /// Encoded proposals larger than this are refused ("request is too large").
    pub max_request_bytes: usize,
    /// How long a client waits for its write or read to go through raft.
    pub request_timeout: Duration,
    /// Raft's tick: the leader's heartbeat period (etcd's --heartbeat-interval).
    pub heartbeat_interval: Duration,
    /// Followers campaign after this long without a heartbeat (etcd's
    /// --election-timeout); a whole number of heartbeats.
    pub election_timeout: Duration,
    /// How often the leader records each long lease's remaining TTL through
    /// raft (etcd's --experimental-lease-checkpoint-interval, 5 min).
    pub lease_checkpoint_interval: Duration,
    /// New: bootstrap a cluster of `initial_cluster`. Existing: join a running
    /// cluster that already added this member (MemberAdd).
    pub initial_cluster_state: ClusterState,
    /// Compact the raft log after this many applied entries (etcd's
    /// --snapshot-count).
    pub snapshot_count: u64,
    /// Entries kept behind the applied index when compacting, so slightly
    /// slow followers catch up without a snapshot (etcd's
    /// --experimental-snapshot-catchup-entries).
    pub snapshot_catchup_entries: u64,
    /// Refuse membership changes that would lose quorum (etcd's
    /// --strict-reconfig-check, on by default).
    pub strict_reconfig_check: bool,
}

/// etcd's --initial-cluster-state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl MemberConfig {
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        MemberConfig {
            name: name.into(),
            data_dir: data_dir.into(),
            wal_dir: None,
            peer_urls: vec!["http://localhost:2380".to_string()],
            initial_cluster: Vec::new(),
            cluster_token: "etcd-cluster".to_string(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            // etcd: 5 s plus two election timeouts.
            request_timeout: Duration::from_secs(7),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            lease_checkpoint_interval: keel_lease_manager::DEFAULT_CHECKPOINT_INTERVAL,
            initial_cluster_state: ClusterState::New,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            strict_reconfig_check: true,
        }
    }

    /// Sets raft's timing as etcd's flags do, with etcd's checks, and the
    /// request timeout that follows from it (5 s plus two election timeouts).
    pub fn with_raft_timing(mut self, heartbeat: Duration, election: Duration) -> Result<Self, NodeError> {
        if heartbeat.is_zero() {
            return Err(NodeError::Config("--heartbeat-interval must be positive".into()));
        }
        if election < heartbeat * 5 {
            return Err(NodeError::Config(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                election.as_millis(),
                heartbeat.as_millis()
            )));
        }
        if election > Duration::from_secs(50) {
            return Err(NodeError::Config(format!(
                "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
                election.as_millis()
            )));
        }
        self.heartbeat_interval = heartbeat;
        self.election_timeout = election;
        self.request_timeout = Duration::from_secs(5) + election * 2;
        Ok(self)
    }

    fn election_ticks(&self) -> usize {
        (self.election_timeout.as_nanos() / self.heartbeat_interval.as_nanos()).max(1) as usize
    }
}

/// What `Status` reports about this member.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub is_learner: bool,
}

pub struct Member {
    config: MemberConfig,
    member_id: u64,
    cluster_id: u64,
    kv: Arc<KvStore>,
    lessor: Arc<Mutex<Lessor>>,
    watches: Arc<WatchHub>,
    raft: RaftHandle,
    waiters: Arc<Waiters>,
    applied: Arc<AtomicU64>,
    next_tag: Arc<AtomicU64>,
    /// Linearizable reads, sharing read-index requests.
    reads: ReadRounds,
    /// For forwarding keep-alives and time-to-live questions to the leader.
    leader_peers: PeerClients,
    /// Notified when a configuration change removes this member.
    removed: Arc<tokio::sync::Notify>,
    lease_clock: Arc<LeaseClock>,
    running: Mutex<Option<Running>>,
}

struct Running {
    raft: RaftNode,
    applier: std::thread::JoinHandle<()>,
    expiry: std::thread::JoinHandle<()>,
    stop_expiry: Arc<std::sync::atomic::AtomicBool>,
}

impl Member {
    /// Opens (or creates) the member's data under `data_dir/member` and starts
    /// raft. Blocking: call it off the async runtime or before it starts.
    pub fn start(config: MemberConfig) -> Result<Member, NodeError> {
        let member_dir = config.data_dir.join("member");
        std::fs::create_dir_all(&member_dir)
            .map_err(|e| NodeError::Storage(format!("{}: {e}", member_dir.display())))?;
        let kv = Arc::new(KvStore::open_rocksdb(&member_dir.join("kv")).map_err(NodeError::Mvcc)?);
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
                    ClusterState::Existing => joined_membership(&config)?,
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

        let applied_index = kv.consistent_index();
        let log_dir = config.wal_dir.clone().unwrap_or_else(|| member_dir.join("raft"));
        let engine = RocksLogEngine::open(&log_dir).map_err(NodeError::Raft)?;
        let mut store = RaftLogStore::open(Box::new(engine), &voters).map_err(NodeError::Raft)?;
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

        let records = kv.lease_records().map_err(NodeError::Mvcc)?;
        let leased_keys = kv.leased_keys().map_err(NodeError::Mvcc)?;
        // Checkpointing is on by default in Keel (off in etcd): without it a
        // leader change gives every lease its full TTL again, so a lease whose
        // holder died can outlive its TTL by far under repeated elections.
        let lease_config = LessorConfig {
            min_ttl: keel_lease_manager::min_lease_ttl(config.election_ticks() as u64, config.heartbeat_interval),
            checkpointing: true,
            checkpoint_interval: config.lease_checkpoint_interval,
            ..LessorConfig::default()
        };
        let lessor = Arc::new(Mutex::new(Lessor::restore(
            lease_config,
            records.into_iter().map(|r| keel_lease_manager::LeaseRecord {
                id: r.id,
                ttl: r.ttl,
                remaining_ttl: r.remaining_ttl,
            }),
            leased_keys,
        )));
        let waiters = Arc::new(Waiters::default());
        let applied = Arc::new(AtomicU64::new(applied_index));
        let watches = WatchHub::new(Arc::new(StoreHistory(kv.clone())), kv.current_revision());
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        // Peers come and go with membership changes, so any member that runs
        // on a tokio runtime gets the gRPC transport, even alone.
        let peer_set = tokio::runtime::Handle::try_current().ok().map(|rt| PeerSet::new(rt, cluster_id, member_id));
        let transport: Box<dyn keel_raft_node::Transport> = match &peer_set {
            Some(set) => {
                for (id, url) in &peers {
                    set.add(*id, url);
                }
                Box::new(GrpcTransport::new(set.clone()))
            }
            None if peers.is_empty() => Box::new(NoPeers),
            None => return Err(NodeError::Config("a multi-member cluster needs a tokio runtime".into())),
        };
        let removed = Arc::new(tokio::sync::Notify::new());
        let raft_config = RaftConfig {
            tick_interval: config.heartbeat_interval,
            election_ticks: config.election_ticks(),
            heartbeat_ticks: 1,
            ..RaftConfig::new(member_id, voters.clone(), applied_index)
        };
        let election_timeout = raft_config.election_timeout();
        // Committed entries queue in the channel until the applier starts.
        let raft = RaftNode::start(raft_config, store, transport, Box::new(ApplySender(events_tx)))
            .map_err(NodeError::Raft)?;
        let lease_clock = Arc::new(LeaseClock::new(raft.handle(), election_timeout));
        let applier = Applier::new(kv.clone(), lessor.clone(), waiters.clone(), applied.clone(), watches.clone())
            .with_lease_clock(lease_clock.clone())
            .with_membership(Membership { member_id, peers: peer_set.clone(), removed: removed.clone() })
            .with_snapshots(Snapshots {
                raft: raft.handle(),
                count: config.snapshot_count.max(1),
                catchup_entries: config.snapshot_catchup_entries,
                compacted_at: applied_index,
                offered_at: None,
            });
        let applier = std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || applier.run(events_rx))
            .map_err(|e| NodeError::Storage(format!("cannot start applier thread: {e}")))?;

        let stop_expiry = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let expiry = {
            let (lessor, raft, clock, stop) = (lessor.clone(), raft.handle(), lease_clock.clone(), stop_expiry.clone());
            std::thread::Builder::new()
                .name("lease-expiry".into())
                .spawn(move || run_lease_expiry(&lessor, &clock, &raft, &stop))
                .map_err(|e| NodeError::Storage(format!("cannot start lease expiry thread: {e}")))?
        };

        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // etcd's request id layout: member id's low bits on top, so ids from
        // different members never meet, then time, so restarts don't reuse ids.
        let first_tag = ((member_id & 0xffff) << 48) | ((millis & 0xff_ffff_ffff) << 8);
        let next_tag = Arc::new(AtomicU64::new(first_tag));
        let reads = ReadRounds::new(raft.handle(), waiters.clone(), next_tag.clone());
        tracing::info!(
            name = %config.name,
            member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{cluster_id:x}"),
            applied_index,
            "member started"
        );
        Ok(Member {
            config,
            member_id,
            cluster_id,
            kv,
            lessor,
            watches,
            raft: raft.handle(),
            waiters,
            applied,
            next_tag,
            reads,
            leader_peers: PeerClients::new(cluster_id, peer_set),
            removed,
            lease_clock,
            running: Mutex::new(Some(Running { raft, applier, expiry, stop_expiry })),
        })
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Where watch streams are opened.
    pub fn watches(&self) -> &Arc<WatchHub> {
        &self.watches
    }

    /// `events` with each `prev_kv` filled: the key's value just before the
    /// event, as etcd's watch server reads it (none for a creation, or when
    /// compaction already removed it).
    pub async fn with_prev_kvs(&self, mut events: Vec<Event>) -> Vec<Event> {
        let kv = self.kv.clone();
        let fill = move || {
            for event in &mut events {
                let Some(current) = &event.kv else { continue };
                let created = event.r#type == EventType::Put as i32 && current.create_revision == current.mod_revision;
                if created {
                    continue;
                }
                let request =
                    RangeRequest { key: current.key.clone(), revision: current.mod_revision - 1, ..Default::default() };
                event.prev_kv = kv.range(&request).ok().and_then(|r| r.kvs.into_iter().next());
            }
            events
        };
        tokio::task::spawn_blocking(fill).await.unwrap_or_default()
    }

    /// The header every response carries, at the store's current revision.
    pub fn header(&self) -> ResponseHeader {
        self.header_at(self.kv.current_revision())
    }

    pub fn header_at(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.status().term(),
        }
    }

    /// Fills in the header a store response carries (it knows only the revision).
    fn stamp(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or_else(|| self.kv.current_revision(), |h| h.revision);
        *header = Some(self.header_at(revision));
    }

    /// The leader's id as raft knows it, 0 when none: cheap enough for every
    /// request (`hasleader`), unlike [`Member::status`], which reads storage.
    pub fn leader(&self) -> u64 {
        self.raft.status().leader()
    }

    /// What `Status` reports. Reads storage: call it off the async runtime.
    pub fn status(&self) -> MemberStatus {
        let raft = self.raft.status();
        MemberStatus {
            member_id: self.member_id,
            leader: raft.leader(),
            raft_term: raft.term(),
            raft_index: raft.commit_index(),
            raft_applied_index: self.applied.load(Ordering::Acquire),
            db_size: self.kv.db_size(),
            db_size_in_use: self.kv.db_size_in_use(),
            is_learner: self
                .kv
                .members()
                .is_ok_and(|members| members.iter().any(|m| m.id == self.member_id && m.is_learner)),
        }
    }

    /// etcd's HashKV: a CRC-32C of the stored history up to `revision` (0:
    /// the current one), equal on members that applied the same log.
    pub async fn hash_kv(&self, revision: i64) -> Result<keel_mvcc::KvHash, NodeError> {
        let kv = self.kv.clone();
        tokio::task::spawn_blocking(move || kv.hash_by_rev(revision))
            .await
            .map_err(|e| NodeError::Storage(format!("hash task: {e}")))?
            .map_err(NodeError::Mvcc)
    }

    fn next_tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, NodeError> {
        if !request.serializable {
            self.wait_linearizable().await?;
        }
        let kv = self.kv.clone();
        let mut response = tokio::task::spawn_blocking(move || kv.range(&request))
            .await
            .map_err(|e| NodeError::Storage(format!("range task: {e}")))?
            .map_err(NodeError::Mvcc)?;
        self.stamp(&mut response.header);
        Ok(response)
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, NodeError> {
        self.write(Request::Put(request)).await
    }

    pub async fn delete_range(&self, request: DeleteRangeRequest) -> Result<DeleteRangeResponse, NodeError> {
        self.write(Request::DeleteRange(request)).await
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, NodeError> {
        if keel_mvcc::is_txn_read_only(&request) {
            // As etcd: a txn that only reads is served like a Range, without
            // a trip through the log.
            if !txn_is_serializable(&request) {
                self.wait_linearizable().await?;
            }
            let kv = self.kv.clone();
            let (request, answer) = tokio::task::spawn_blocking(move || {
                let answer = kv.read_txn(&request);
                (request, answer)
            })
            .await
            .map_err(|e| NodeError::Storage(format!("txn task: {e}")))?;
            // The store has the last word on what only reads; anything else
            // goes through the log below.
            if let Some(answer) = answer {
                let mut response = answer.map_err(NodeError::Mvcc)?;
                self.stamp(&mut response.header);
                return Ok(response);
            }
            return self.write(Request::Txn(request)).await;
        }
        self.write(Request::Txn(request)).await
    }

    pub async fn compact(&self, request: CompactionRequest) -> Result<CompactionResponse, NodeError> {
        self.write(Request::Compaction(request)).await
    }

    /// Raft messages from a peer. Refused when the peer belongs to another
    /// cluster, so two clusters never mix their logs.
    pub fn receive_raft(&self, cluster_id: u64, messages: Vec<Vec<u8>>) -> Result<(), NodeError> {
        if cluster_id != self.cluster_id {
            return Err(NodeError::ClusterMismatch { ours: self.cluster_id, theirs: cluster_id });
        }
        for bytes in messages {
            let message: keel_raft_node::Message = protobuf::Message::parse_from_bytes(&bytes)
                .map_err(|e| NodeError::Corrupt(format!("raft message from a peer: {e}")))?;
            self.raft.step(message).map_err(|_| NodeError::Stopped)?;
        }
        Ok(())
    }

    /// Starts taking in a leader's snapshot from the first chunk of its
    /// stream (refused when it comes from another cluster).
    pub fn snapshot_assembly(
        &self,
        first: keel_proto::keelpb::SnapshotChunk,
    ) -> Result<crate::SnapshotAssembly, NodeError> {
        crate::SnapshotAssembly::start(self.cluster_id, first)
    }

    /// Hands a whole snapshot to raft.
    pub fn receive_snapshot(&self, snapshot: crate::SnapshotAssembly) -> Result<(), NodeError> {
        self.raft.step(snapshot.finish()?).map_err(|_| NodeError::Stopped)
    }

    /// Grants a lease through raft; id 0 asks the member to choose one.
    pub async fn lease_grant(&self, mut request: LeaseGrantRequest) -> Result<LeaseGrantResponse, NodeError> {
        if request.id == 0 {
            // etcd draws lease ids from its request id generator, kept positive.
            request.id = (self.next_tag() & i64::MAX as u64) as i64;
        }
        self.write(Request::LeaseGrant(request)).await
    }

    pub async fn lease_revoke(&self, request: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, NodeError> {
        self.write(Request::LeaseRevoke(request)).await
    }

    /// A keep-alive: the lease's deadline moves to now + TTL; returns the TTL.
    /// Only the leader's lease manager keeps time, so on any other member (or
    /// on a leader still applying earlier terms) it is forwarded to the
    /// leader, and retried until the request timeout, as etcd does. The
    /// primary acknowledges only once a read index confirms it still leads
    /// (etcd#15247): a leader cut off from
    /// the others goes on believing it leads until check-quorum demotes it,
    /// while a new leader may already have expired the lease.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, NodeError> {
        self.at_lease_primary(
            |lessor| lessor.renew(id, Instant::now()),
            |leader| self.leader_peers.renew(leader, id),
            true,
        )
        .await
    }

    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<TimeToLive, NodeError> {
        self.at_lease_primary(
            |lessor| lessor.time_to_live(id, Instant::now(), keys),
            |leader| self.leader_peers.time_to_live(leader, id, keys),
            false,
        )
        .await
    }

    /// A keep-alive forwarded by another member: answered here or refused
    /// with `NotPrimary`, never forwarded again.
    pub async fn lease_renew_here(&self, cluster_id: u64, id: i64) -> Result<i64, NodeError> {
        self.check_cluster(cluster_id)?;
        if self.lessor_in_step().is_primary() {
            self.confirm_leadership().await?;
        }
        self.lessor_in_step().renew(id, Instant::now()).map_err(NodeError::Lease)
    }

    /// Waits for a read index, then checks this member still leads.
    async fn confirm_leadership(&self) -> Result<(), NodeError> {
        self.wait_linearizable().await?;
        if self.raft.status().is_leader() {
            Ok(())
        } else {
            Err(NodeError::Lease(keel_lease_manager::LeaseError::NotPrimary))
        }
    }

    pub fn lease_time_to_live_here(&self, cluster_id: u64, id: i64, keys: bool) -> Result<TimeToLive, NodeError> {
        self.check_cluster(cluster_id)?;
        self.lessor_in_step().time_to_live(id, Instant::now(), keys).map_err(NodeError::Lease)
    }

    /// Runs `here` on this member's lease manager if it is the primary (after
    /// a read index confirms it still leads, when `confirm`), else `forward`
    /// to the leader; retries while there is no primary yet.
    async fn at_lease_primary<T, F>(
        &self,
        here: impl Fn(&mut Lessor) -> Result<T, keel_lease_manager::LeaseError>,
        forward: impl Fn(u64) -> F,
        confirm: bool,
    ) -> Result<T, NodeError>
    where
        F: std::future::Future<Output = Result<T, NodeError>>,
    {
        use keel_lease_manager::LeaseError;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        loop {
            if confirm && self.lessor_in_step().is_primary() {
                match self.confirm_leadership().await {
                    // Demoted meanwhile: `here` refuses and the leader is asked.
                    Ok(()) | Err(NodeError::Lease(LeaseError::NotPrimary) | NodeError::NoLeader) => {}
                    Err(err) => return Err(err),
                }
            }
            match here(&mut self.lessor_in_step()) {
                Err(LeaseError::NotPrimary) => {}
                answer => return answer.map_err(NodeError::Lease),
            }
            let leader = self.raft.status().leader();
            if leader != 0 && leader != self.member_id {
                match forward(leader).await {
                    Err(NodeError::NotLeader) => {}
                    Err(err @ NodeError::Lease(_)) => return Err(err),
                    Err(err) => tracing::debug!(%err, leader = %format!("{leader:x}"), "forwarding a lease call"),
                    Ok(answer) => return Ok(answer),
                }
            }
            if tokio::time::Instant::now() + RETRY_AFTER_NO_LEADER >= deadline {
                return Err(if self.raft.status().leader() == 0 { NodeError::NoLeader } else { NodeError::Timeout });
            }
            tokio::time::sleep(RETRY_AFTER_NO_LEADER).await;
        }
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), NodeError> {
        if cluster_id != self.cluster_id {
            return Err(NodeError::ClusterMismatch { ours: self.cluster_id, theirs: cluster_id });
        }
        Ok(())
    }

    /// The lease manager, in step with raft right now (the expiry thread
    /// would only notice a change on its next tick).
    fn lessor_in_step(&self) -> parking_lot::MutexGuard<'_, Lessor> {
        let mut lessor = self.lessor.lock();
        self.lease_clock.align(&mut lessor);
        lessor
    }

    /// The cluster's members, by id; `linearizable` waits for a read index
    /// first, so a member added or removed just before is reflected.
    pub async fn member_list(&self, linearizable: bool) -> Result<Vec<EtcdMember>, NodeError> {
        if linearizable {
            self.wait_linearizable().await?;
        }
        let kv = self.kv.clone();
        tokio::task::spawn_blocking(move || kv.members())
            .await
            .map_err(|e| NodeError::Storage(format!("member list task: {e}")))?
            .map_err(NodeError::Mvcc)
    }

    /// Adds a member (as a learner if asked), through a raft configuration
    /// change; returns it and the membership after the change. The new
    /// member is then started with `--initial-cluster-state existing`.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(EtcdMember, Vec<EtcdMember>), NodeError> {
        check_peer_urls(&peer_urls)?;
        let members = self.member_list(true).await?;
        // etcd checks quorum before the URL and learner limits.
        self.check_reconfig(Reconfig::Add { is_learner }, &members).await?;
        if members.iter().any(|m| m.peer_ur_ls.iter().any(|url| peer_urls.contains(url))) {
            return Err(NodeError::PeerUrlExists);
        }
        if is_learner && members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(NodeError::TooManyLearners);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let member = EtcdMember {
            id: ids::added_member_id(&peer_urls, now),
            peer_ur_ls: peer_urls,
            is_learner,
            ..Default::default()
        };
        let kind = if is_learner { ConfChangeType::AddLearnerNode } else { ConfChangeType::AddNode };
        self.change_membership(kind, member.clone()).await?;
        Ok((member, self.member_list(false).await?))
    }

    /// Removes a member (the leader included) through a configuration change.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<EtcdMember>, NodeError> {
        let members = self.member_list(true).await?;
        self.check_reconfig(Reconfig::Remove(id), &members).await?;
        let member = members.into_iter().find(|m| m.id == id).ok_or(NodeError::MemberNotFound)?;
        self.change_membership(ConfChangeType::RemoveNode, member).await?;
        self.member_list(false).await
    }

    /// Makes a learner a voter, once it has caught up with the leader (etcd:
    /// its log holds at least 90% of the leader's).
    pub async fn member_promote(&self, id: u64) -> Result<Vec<EtcdMember>, NodeError> {
        let members = self.member_list(true).await?;
        let mut member = members.iter().find(|m| m.id == id).cloned().ok_or(NodeError::MemberNotFound)?;
        if !member.is_learner {
            return Err(NodeError::MemberNotLearner);
        }
        let status = self.raft.status();
        if !status.is_leader() {
            // Only the leader knows how far the learner got.
            return Err(NodeError::NotLeader);
        }
        let leader_matched = status.matched(self.member_id).unwrap_or(0);
        let learner_matched = status.matched(id).unwrap_or(0);
        if (learner_matched as f64) < leader_matched as f64 * LEARNER_READY_FRACTION {
            return Err(NodeError::LearnerNotReady);
        }
        self.check_reconfig(Reconfig::Promote, &members).await?;
        member.is_learner = false;
        self.change_membership(ConfChangeType::AddNode, member).await?;
        self.member_list(false).await
    }

    /// Changes a member's peer URLs (no configuration change in raft: the
    /// member keeps its id and vote).
    pub async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<Vec<EtcdMember>, NodeError> {
        check_peer_urls(&peer_urls)?;
        let members = self.member_list(true).await?;
        if !members.iter().any(|m| m.id == id) {
            return Err(NodeError::MemberNotFound);
        }
        if members.iter().any(|m| m.id != id && m.peer_ur_ls.iter().any(|url| peer_urls.contains(url))) {
            return Err(NodeError::PeerUrlExists);
        }
        let update = keel_proto::etcdserverpb::MemberUpdateRequest { id, peer_ur_ls: peer_urls };
        self.propose(Request::MemberUpdate(update)).await?;
        self.member_list(false).await
    }

    /// etcd's --strict-reconfig-check: a change must leave a quorum of
    /// started (published) voting members, and the members the change relies
    /// on must have been in touch for `HEALTH_INTERVAL`. Only the leader hears
    /// from every member, so a follower asks it (etcd's members, a full
    /// mesh, each judge for themselves).
    async fn check_reconfig(&self, change: Reconfig, members: &[EtcdMember]) -> Result<(), NodeError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let voters: Vec<&EtcdMember> = members.iter().filter(|m| !m.is_learner).collect();
        let started = |m: &EtcdMember| !m.name.is_empty();
        let ready = |nmembers: usize, nstarted: usize| nstarted > nmembers / 2;
        match change {
            Reconfig::Add { is_learner } => {
                let (nmembers, nstarted) = (voters.len() + 1, voters.iter().filter(|m| started(m)).count());
                // etcd lets a lone started member take a second (a restore).
                let restoring = nstarted == 1 && nmembers == 2;
                if !(is_learner || restoring || ready(nmembers, nstarted)) {
                    return Err(NodeError::NotEnoughStartedMembers);
                }
                let activity = self.peer_activity().await?;
                if !voters.iter().all(|m| activity.healthy(m.id)) {
                    return Err(NodeError::Unhealthy);
                }
            }
            Reconfig::Promote => {
                let (nmembers, nstarted) = (voters.len() + 1, voters.iter().filter(|m| started(m)).count() + 1);
                if !ready(nmembers, nstarted) {
                    return Err(NodeError::NotEnoughStartedMembers);
                }
            }
            Reconfig::Remove(id) => {
                if !voters.iter().any(|m| m.id == id) {
                    return Ok(()); // a learner, or unknown (refused later)
                }
                let rest: Vec<&&EtcdMember> = voters.iter().filter(|m| m.id != id).collect();
                if !ready(rest.len(), rest.iter().filter(|m| started(m)).count()) {
                    return Err(NodeError::NotEnoughStartedMembers);
                }
                let activity = self.peer_activity().await?;
                // A member that is down is safe to remove: it is not part
                // of the active quorum.
                if activity.silent(id) {
                    return Ok(());
                }
                let in_touch = voters.iter().filter(|m| activity.healthy(m.id)).count();
                if in_touch < 2 + (voters.len() - 1) / 2 {
                    return Err(NodeError::Unhealthy);
                }
            }
        }
        Ok(())
    }

    /// The leader's view of how long each member has been in touch with it.
    async fn peer_activity(&self) -> Result<PeerActivity, NodeError> {
        if self.raft.status().is_leader() {
            return Ok(PeerActivity { leader: self.member_id, active: self.active_peers() });
        }
        match self.raft.status().leader() {
            0 => Err(NodeError::NoLeader),
            // A leader that cannot be asked is no healthy cluster to change.
            leader => {
                let active = self.leader_peers.peer_activity(leader).await.map_err(|_| NodeError::Unhealthy)?;
                Ok(PeerActivity { leader, active })
            }
        }
    }

    fn active_peers(&self) -> Vec<(u64, Duration)> {
        let now = std::time::Instant::now();
        self.raft.status().active_peers().into_iter().map(|(id, since)| (id, now.duration_since(since))).collect()
    }

    /// Another member asks the leader's view (`peer_activity`): refused with
    /// `NotLeader` unless this member leads.
    pub fn peer_activity_here(&self, cluster_id: u64) -> Result<Vec<(u64, Duration)>, NodeError> {
        self.check_cluster(cluster_id)?;
        if !self.raft.status().is_leader() {
            return Err(NodeError::NotLeader);
        }
        Ok(self.active_peers())
    }

    /// Proposes a configuration change about `member` and waits until this
    /// member has applied it.
    async fn change_membership(&self, kind: ConfChangeType, member: EtcdMember) -> Result<(), NodeError> {
        let tag = self.next_tag();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.set_node_id(member.id);
        let mut change = ConfChangeV2::default();
        change.set_changes(vec![single].into());
        change.set_context(ConfChangeContext { id: tag, member: Some(member) }.encode_to_vec().into());
        let (reply, answer) = oneshot::channel();
        self.waiters.wait_write(tag, reply);
        self.raft.propose_conf_change(tag, change).map_err(|_| NodeError::Stopped)?;
        match tokio::time::timeout(self.config.request_timeout, answer).await {
            Ok(Ok(result)) => result.map(|_| ()),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => {
                self.waiters.forget(tag);
                Err(NodeError::Timeout)
            }
        }
    }

    /// Hands leadership to `target` (etcd's MoveLeader): only the leader can,
    /// and only to a voting member; waits until `target` leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), NodeError> {
        if !self.raft.status().is_leader() {
            return Err(NodeError::NotLeader);
        }
        let members = self.member_list(false).await?;
        if !members.iter().any(|m| m.id == target && !m.is_learner) {
            return Err(NodeError::BadLeaderTransferee);
        }
        if target == self.member_id {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.raft.transfer_leader(target).map_err(|_| NodeError::Stopped)?;
        while self.raft.status().leader() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::LeaderTransferTimeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Resolves once a configuration change has removed this member from
    /// the cluster (etcd then stops the member).
    pub async fn removed(&self) {
        self.removed.notified().await
    }

    /// The cluster id and membership, for a member joining the cluster.
    pub fn cluster_info(&self) -> Result<(u64, Vec<EtcdMember>), NodeError> {
        Ok((self.cluster_id, self.kv.members().map_err(NodeError::Mvcc)?))
    }

    /// Announces this member's name and client URLs through raft (etcd's
    /// "publish"), retrying until it is applied or the member stops.
    pub async fn publish(&self, client_urls: Vec<String>) {
        let attributes = MemberAttributes { member_id: self.member_id, name: self.config.name.clone(), client_urls };
        loop {
            match self.propose(Request::MemberAttributes(attributes.clone())).await {
                Ok(_) => {
                    tracing::info!(name = %attributes.name, client_urls = ?attributes.client_urls, "published member attributes");
                    return;
                }
                Err(NodeError::Stopped) => return,
                Err(err) => {
                    tracing::debug!(%err, "publishing member attributes; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    pub fn leases(&self) -> Vec<i64> {
        self.lessor.lock().leases()
    }

    /// A write through raft, answered with its own response type and header.
    async fn write<T: WriteAnswer>(&self, request: Request) -> Result<T, NodeError> {
        let mut response = T::from_write(self.propose(request).await?)
            .ok_or_else(|| NodeError::Corrupt("a write was answered with another kind of response".into()))?;
        self.stamp(response.header_mut());
        Ok(response)
    }

    /// Sends one write through raft and waits until this member applied it.
    async fn propose(&self, request: Request) -> Result<Applied, NodeError> {
        // As etcd: while the applier is this far behind the log, more
        // proposals would only queue up memory and latency.
        let applied = self.applied.load(Ordering::Acquire);
        if self.raft.status().commit_index() > applied + MAX_APPLY_LAG {
            return Err(NodeError::TooManyRequests);
        }
        let tag = self.next_tag();
        let retry_payload = InternalRaftRequest { id: tag, request: Some(request) };
        let data = retry_payload.encode_to_vec();
        if data.len() > self.config.max_request_bytes {
            return Err(NodeError::RequestTooLarge);
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut data = Some(data);
        loop {
            let (reply, answer) = oneshot::channel();
            self.waiters.wait_write(tag, reply);
            // The payload is moved into the proposal; a retry (refused before
            // it reached the log) encodes the request again.
            let payload = data.take().unwrap_or_else(|| retry_payload.encode_to_vec());
            self.raft.propose(tag, payload).map_err(|_| NodeError::Stopped)?;
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Err(NodeError::NoLeader))) => {
                    // Refused before it reached the log (an election is
                    // running): proposing again cannot apply it twice.
                    if tokio::time::Instant::now() + RETRY_AFTER_NO_LEADER >= deadline {
                        return Err(NodeError::NoLeader);
                    }
                    tokio::time::sleep(RETRY_AFTER_NO_LEADER).await;
                }
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => {
                    self.waiters.forget(tag);
                    return Err(NodeError::Timeout);
                }
            }
        }
    }

    /// Waits until this member has applied everything committed before now
    /// (raft's read index), so a read sees every write acknowledged before it.
    async fn wait_linearizable(&self) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.reads.read_point()).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(NodeError::NoLeader))) => {
                    if tokio::time::Instant::now() + RETRY_AFTER_NO_LEADER >= deadline {
                        return Err(NodeError::NoLeader);
                    }
                    tokio::time::sleep(RETRY_AFTER_NO_LEADER).await;
                }
                Ok(Ok(Err(err))) => return Err(err),
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => return Err(NodeError::Timeout),
            }
        }
    }

    /// Stops raft and the applier; acknowledged writes are already durable in
    /// the raft log, so nothing needs flushing. Blocking.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().take() {
            running.stop_expiry.store(true, Ordering::Release);
            let _ = running.expiry.join();
            running.raft.stop();
            let _ = running.applier.join();
            self.watches.stop();
        }
    }
}

/// Who this member is and who its first peers are, from the flags of a
/// member that has never started: `--initial-cluster` (or this member alone),
/// with etcd's ids, so etcd tooling sees the ids etcd would compute.
fn initial_membership(config: &MemberConfig) -> Result<(Identity, Vec<EtcdMember>), NodeError> {
    let member_id = ids::member_id(&config.peer_urls, &config.cluster_token);
    let mut members = vec![EtcdMember {
        id: member_id,
        name: config.name.clone(),
        peer_ur_ls: config.peer_urls.clone(),
        ..Default::default()
    }];
    for (name, urls) in &config.initial_cluster {
        let id = ids::member_id(urls, &config.cluster_token);
        if name == &config.name {
            if id != member_id {
                return Err(NodeError::Config(format!(
                    "--initial-cluster has {name}={} but this member advertises {}",
                    urls.join(","),
                    config.peer_urls.join(",")
                )));
            }
            continue;
        }
        if urls.is_empty() {
            return Err(NodeError::Config(format!("member {name} has no peer URL")));
        }
        members.push(EtcdMember { id, name: name.clone(), peer_ur_ls: urls.clone(), ..Default::default() });
    }
    if !config.initial_cluster.is_empty() && !config.initial_cluster.iter().any(|(name, _)| name == &config.name) {
        return Err(NodeError::Config(format!("--initial-cluster has no member named {:?}", config.name)));
    }
    members.sort_by_key(|m| m.id);
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    Ok((Identity { member_id, cluster_id: ids::cluster_id(&ids) }, members))
}

/// Who this member is in a running cluster it joins: the cluster id and the
/// members (this one included, as MemberAdd recorded it) come from the
/// members named in `--initial-cluster`.
fn joined_membership(config: &MemberConfig) -> Result<(Identity, Vec<EtcdMember>), NodeError> {
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
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| NodeError::Config("joining a cluster needs a tokio runtime".into()))?;
    let (cluster_id, members) = runtime.block_on(crate::peers::fetch_cluster_info(&others))?;
    let me =
        members.iter().find(|m| m.peer_ur_ls.iter().any(|url| config.peer_urls.contains(url))).ok_or_else(|| {
            NodeError::Config(format!(
                "the cluster has no member with peer URLs {}: add it first (etcdctl member add)",
                config.peer_urls.join(",")
            ))
        })?;
    Ok((Identity { member_id: me.id, cluster_id }, members))
}

/// The response of one kind of write, picked out of the store's answer.
trait WriteAnswer: Sized {
    fn from_write(response: Applied) -> Option<Self>;
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! write_answer {
    ($bind:ident; $($response:ty => $pattern:pat),* $(,)?) => {$(
        impl WriteAnswer for $response {
            fn from_write(response: Applied) -> Option<Self> {
                match response {
                    $pattern => Some($bind),
                    _ => None,
                }
            }
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

write_answer!(answer;
    PutResponse => Applied::Kv(WriteResponse::Put(answer)),
    DeleteRangeResponse => Applied::Kv(WriteResponse::DeleteRange(answer)),
    TxnResponse => Applied::Kv(WriteResponse::Txn(answer)),
    CompactionResponse => Applied::Kv(WriteResponse::Compact(answer)),
    LeaseGrantResponse => Applied::LeaseGrant(answer),
    LeaseRevokeResponse => Applied::LeaseRevoke(answer),
);

/// etcd's `isTxnSerializable`: every range in both branches is serializable.
fn txn_is_serializable(request: &TxnRequest) -> bool {
    use keel_proto::etcdserverpb::request_op::Request as Op;
    request.success.iter().chain(&request.failure).all(|op| match &op.request {
        Some(Op::RequestRange(range)) => range.serializable,
        _ => false,
    })
}

/// The leader's lease clock: keep the lease manager's role in step with
/// raft (see `lease_clock`), and propose a revoke for every
/// lease whose deadline has passed (the revoke, applied through raft, deletes
/// the lease's keys on every member at one revision).
fn run_lease_expiry(
    lessor: &Mutex<Lessor>,
    clock: &LeaseClock,
    raft: &RaftHandle,
    stop: &std::sync::atomic::AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(LEASE_TICK);
        let now = Instant::now();
        let (expired, checkpoints) = {
            let mut lessor = lessor.lock();
            clock.align(&mut lessor);
            (lessor.expired(now, EXPIRY_BATCH), lessor.checkpoints_due(now, keel_lease_manager::MAX_CHECKPOINT_BATCH))
        };
        if !checkpoints.is_empty() {
            let checkpoints =
                checkpoints.into_iter().map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl }).collect();
            let request = InternalRaftRequest {
                id: 0,
                request: Some(Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })),
            };
            let _ = raft.propose(0, request.encode_to_vec());
        }
        if !expired.is_empty() {
            // One entry for every lease that expired this tick; tag 0: no
            // client waits for an expiry.
            let request =
                InternalRaftRequest { id: 0, request: Some(Request::LeaseExpiry(LeaseExpiry { ids: expired })) };
            let _ = raft.propose(0, request.encode_to_vec());
        }
    }
}

/// etcd's maxLearners.
const MAX_LEARNERS: usize = 1;

/// How long the leader must have been in touch with members before a
/// strict membership change relies on them (etcd's HealthInterval).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// The leader's view of its members, for --strict-reconfig-check: the
/// members in touch with it, and for how long.
struct PeerActivity {
    leader: u64,
    active: Vec<(u64, Duration)>,
}

impl PeerActivity {
    /// In touch for `HEALTH_INTERVAL` (etcd's numConnectedSince); the leader
    /// counts itself.
    fn healthy(&self, id: u64) -> bool {
        id == self.leader || self.active.iter().any(|(peer, since)| *peer == id && *since >= HEALTH_INTERVAL)
    }

    /// Not in touch at all (etcd's zero ActiveSince).
    fn silent(&self, id: u64) -> bool {
        id != self.leader && !self.active.iter().any(|(peer, _)| *peer == id)
    }
}

/// A membership change, for --strict-reconfig-check.
#[derive(Clone, Copy)]
enum Reconfig {
    Add { is_learner: bool },
    Promote,
    Remove(u64),
}

/// etcd's maxGapBetweenApplyAndCommitIndex: proposals are refused ("too many
/// requests") while the applier is more than this many entries behind.
const MAX_APPLY_LAG: u64 = 5_000;
/// etcd's readyPercent: a learner may be promoted once its log holds this
/// much of the leader's.
const LEARNER_READY_FRACTION: f64 = 0.9;

/// Peer URLs must be `http(s)://host:port`, as etcd checks them.
fn check_peer_urls(urls: &[String]) -> Result<(), NodeError> {
    let valid = |url: &str| {
        let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
        let rest = rest.trim_end_matches('/');
        rest.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(|u| valid(u)) {
        return Err(NodeError::BadPeerUrls);
    }
    Ok(())
}

const LEASE_TICK: Duration = Duration::from_millis(100);
/// Leases revoked per tick at most, in one raft entry (etcd: 1000 per
/// second, one entry each).
const EXPIRY_BATCH: usize = 100;

const RETRY_AFTER_NO_LEADER: Duration = Duration::from_millis(50);
