//! One Keel member: raft, the MVCC store, the lease manager and the watch
//! hub wired together, with the operations the client and peer services
//! call. Built from its parts in `build.rs`; one file per service after that
//! (`kv.rs`, `lease.rs`, `cluster.rs`, `maintenance.rs`).

#[cfg(test)]
mod admission_tests;
mod auth;
mod build;
mod cluster;
mod corruption;
mod kv;
mod lease;
mod maintenance;
mod v2;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use keel_auth::AuthInfo;
use keel_lease_manager::Lessor;
use keel_mvcc::KvStore;
use keel_proto::etcdserverpb::ResponseHeader;
use keel_proto::keelpb::internal_raft_request::Request;
use keel_raft_node::{Clock, RaftHandle, RaftNode};
use keel_watch_hub::WatchHub;
use parking_lot::Mutex;

pub use build::{MemberStepper, Offload, Parts};
pub use maintenance::MemberStatus;
pub use v2::RaftPosition;

use crate::auth::AuthStore;
use crate::config::MemberConfig;
use crate::lease_clock::LeaseClock;
use crate::metrics::NodeMetrics;
use crate::peer::PeerLinks;
use crate::proposals::{Proposals, WriteAnswer};
use crate::NodeError;

pub struct Member {
    config: MemberConfig,
    member_id: u64,
    cluster_id: u64,
    kv: Arc<KvStore>,
    lessor: Arc<Mutex<Lessor>>,
    auth: Arc<AuthStore>,
    alarms: Arc<crate::alarms::Alarms>,
    /// The v2 keys API's store.
    v2: Arc<crate::v2keys::V2Keys>,
    watches: Arc<WatchHub>,
    raft: RaftHandle,
    proposals: Proposals,
    applied: Arc<AtomicU64>,
    /// Peers: raft's messages, calls forwarded to the leader.
    links: Arc<dyn PeerLinks>,
    /// Where snapshots from the leader wait to be installed.
    spool: Arc<dyn crate::SnapshotSpool>,
    /// Notified when a configuration change removes this member.
    removed: Arc<tokio::sync::Notify>,
    /// Members removed from the cluster (kept up to date by the applier).
    removed_members: Arc<parking_lot::RwLock<std::collections::HashSet<u64>>>,
    /// The cluster's members as applied (kept up to date by the applier):
    /// raft messages come only from them.
    current_members: Arc<parking_lot::RwLock<std::collections::HashSet<u64>>>,
    /// Whether this member is a learner, as applied (kept by the applier).
    learner: Arc<std::sync::atomic::AtomicBool>,
    /// Whether this start's attributes (name, client URLs) are applied
    /// (etcd's ReadyNotify): `/readyz` waits on it.
    published: std::sync::atomic::AtomicBool,
    lease_clock: Arc<LeaseClock>,
    clock: Arc<dyn Clock>,
    offload: Offload,
    running: Mutex<Option<Running>>,
    metrics: NodeMetrics,
    quota: crate::quota::Quota,
}

/// What [`Member::leader_turn`] found.
pub(crate) enum Turn {
    /// This member leads: the task does its work.
    Lead(Arc<Member>),
    /// Another member leads (or none): the task waits for its next turn.
    Follow,
    /// The member stopped or was dropped: the task ends.
    Gone,
}

/// The threads a member runs on its own (none when a simulation steps it).
struct Running {
    raft: RaftNode,
    applier: std::thread::JoinHandle<()>,
    expiry: std::thread::JoinHandle<()>,
    stop_expiry: Arc<std::sync::atomic::AtomicBool>,
}

impl Member {
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// --max-request-bytes: the largest proposal, and what sizes peer messages.
    pub fn max_request_bytes(&self) -> usize {
        self.config.max_request_bytes
    }

    /// etcd's server and peer series this member writes.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Registers every series of this member (raft, store, leases,
    /// watches, server and peers) in `registry`.
    pub fn register_metrics(&self, registry: &keel_metrics::prometheus::Registry) -> Result<(), NodeError> {
        use keel_metrics::Measures;
        let learner = self.learner.clone();
        let measures = crate::metrics::MemberMeasures {
            metrics: self.metrics.clone(),
            sources: crate::metrics::Sources {
                applied: self.applied.clone(),
                waiters: self.proposals.waiters(),
                is_learner: Arc::new(move || learner.load(std::sync::atomic::Ordering::Acquire)),
            },
        };
        let register =
            |measures: &dyn Measures| measures.register(registry).map_err(|e| NodeError::Config(e.to_string()));
        register(&measures)?;
        register(self.raft.metrics())?;
        register(self.kv.metrics())?;
        register(self.watches.metrics())?;
        let lease_metrics = self.lessor.lock().metrics().clone();
        register(&lease_metrics)?;
        Ok(())
    }

    /// Where watch streams are opened.
    pub fn watches(&self) -> &Arc<WatchHub> {
        &self.watches
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

    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// A client's write through raft, as `who`, answered with its own
    /// response type and header.
    async fn write<T: WriteAnswer>(&self, who: &AuthInfo, request: Request) -> Result<T, NodeError> {
        if !self.quota.available(&request) {
            return Err(self.out_of_space().await);
        }
        let header = AuthStore::header_of(who);
        let mut response = T::from_write(self.proposals.propose(request, Some(header)).await?)
            .ok_or_else(|| NodeError::Corrupt("a write was answered with another kind of response".into()))?;
        self.stamp(response.header_mut());
        Ok(response)
    }

    /// For the leader's periodic tasks (auto-compaction, corruption
    /// checks): waits `interval`, then says whether the member still runs
    /// and leads. Holds the member weakly, so a task never keeps it alive.
    pub(crate) async fn leader_turn(member: &std::sync::Weak<Member>, interval: std::time::Duration) -> Turn {
        tokio::time::sleep(interval).await;
        let Some(member) = member.upgrade() else { return Turn::Gone };
        if member.running.lock().is_none() {
            return Turn::Gone;
        }
        if member.leader() != member.member_id {
            return Turn::Follow;
        }
        Turn::Lead(member)
    }

    /// Raises `kind` for `member_id` through raft, as the member itself
    /// (the quota, the corruption checks), not as any caller: alarms are
    /// applied without a permission check.
    pub(crate) async fn raise_alarm(
        &self,
        member_id: u64,
        kind: keel_proto::etcdserverpb::AlarmType,
    ) -> Result<(), NodeError> {
        use keel_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest};
        let raise = AlarmRequest { action: AlarmAction::Activate as i32, member_id, alarm: kind as i32 };
        let header = AuthStore::header_of(&keel_auth::AuthInfo::default());
        self.proposals.propose(Request::Alarm(raise), Some(header)).await.map(drop)
    }

    /// etcd's quota interceptor: raises NOSPACE through raft (once: an
    /// active alarm is not raised again) and refuses the request.
    async fn out_of_space(&self) -> NodeError {
        use keel_proto::etcdserverpb::AlarmType;
        if !self.alarms.is_active(AlarmType::Nospace) {
            match self.raise_alarm(self.member_id, AlarmType::Nospace).await {
                Ok(()) => tracing::warn!(
                    quota_size_bytes = self.config.quota_backend_bytes,
                    "database space exceeded; raised the NOSPACE alarm"
                ),
                Err(err) => tracing::warn!(%err, "database space exceeded; cannot raise the NOSPACE alarm"),
            }
        }
        NodeError::NoSpace
    }

    pub(crate) fn check_cluster(&self, cluster_id: u64) -> Result<(), NodeError> {
        if cluster_id != self.cluster_id {
            return Err(NodeError::ClusterMismatch { ours: self.cluster_id, theirs: cluster_id });
        }
        Ok(())
    }

    /// Raft messages from a peer. Refused when the peer belongs to another
    /// cluster, so two clusters never mix their logs.
    pub fn receive_raft(&self, cluster_id: u64, messages: Vec<Vec<u8>>) -> Result<(), NodeError> {
        self.check_cluster(cluster_id)?;
        for bytes in messages {
            let message: keel_raft_node::Message = protobuf::Message::parse_from_bytes(&bytes)
                .map_err(|e| NodeError::Corrupt(format!("raft message from a peer: {e}")))?;
            self.step_raft(message)?;
        }
        Ok(())
    }

    /// One raft message, already decoded (the in-process network). A full
    /// inbox drops it: raft sends again.
    pub(crate) fn step_raft(&self, message: keel_raft_node::Message) -> Result<(), NodeError> {
        self.admit(&message)?;
        match self.raft.step(message) {
            Ok(()) | Err(keel_raft_node::RaftNodeError::Busy) => Ok(()),
            Err(_) => Err(NodeError::Stopped),
        }
    }

    /// A raft message gets through only from a current member and only
    /// when it is addressed to this member; removed members are told so.
    fn admit(&self, message: &keel_raft_node::Message) -> Result<(), NodeError> {
        if self.removed_members.read().contains(&message.from) {
            return Err(NodeError::MemberRemoved);
        }
        if message.to != self.member_id || !self.current_members.read().contains(&message.from) {
            return Err(NodeError::NotAPeer { from: message.from, to: message.to });
        }
        Ok(())
    }

    /// Starts taking in a leader's snapshot from the first chunk of its
    /// stream (refused when it comes from another cluster). Blocking.
    pub fn snapshot_receipt(
        &self,
        first: keel_proto::keelpb::SnapshotChunk,
    ) -> Result<crate::SnapshotReceipt, NodeError> {
        // Refused before a byte is spooled: a stranger's, or a deposed
        // leader's (an earlier term than this member is at).
        crate::SnapshotReceipt::start(self.cluster_id, first, &*self.spool, |message| {
            self.admit(message)?;
            let ours = self.raft.status().term();
            if message.term < ours {
                return Err(NodeError::StaleSnapshot { theirs: message.term, ours });
            }
            Ok(())
        })
    }

    /// Hands raft a snapshot whose every piece is in the spool. Blocking.
    pub fn receive_snapshot(&self, receipt: crate::SnapshotReceipt) -> Result<(), NodeError> {
        let message = receipt.finish()?;
        self.admit(&message)?;
        self.raft.step(message).map_err(crate::proposals::refused)
    }

    /// Stops raft and the applier, then flushes the store. Acknowledged
    /// writes are already durable in the raft log; the flush (the store
    /// keeps no WAL) spares the next start a replay, and leaves a data dir
    /// that offline tools (`keelctl data-dir status`, `defrag --data-dir`)
    /// read as the member last served it. Blocking.
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().take() {
            running.stop_expiry.store(true, std::sync::atomic::Ordering::Release);
            let _ = running.expiry.join();
            running.raft.stop();
            let _ = running.applier.join();
            if let Err(err) = self.kv.sync() {
                tracing::warn!(%err, "cannot flush the store at shutdown; the next start replays the raft log");
            }
        }
        self.watches.stop();
    }
}
