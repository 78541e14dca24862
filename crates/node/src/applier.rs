//! The applier: committed raft entries become MVCC changes, and the clients
//! waiting for them are answered.
//!
//! It runs on its own thread so the raft thread can persist the next batch
//! while this one is applied. It is also where linearizable reads wait: a
//! read index is only safe to serve once everything up to it is applied, and
//! this thread is the one that knows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use keel_lease_manager::Lessor;
use keel_mvcc::{KvStore, LeaseLookup, LeaseRecord, MvccError, WriteRequest};
use keel_proto::etcdserverpb::Member as EtcdMember;
use keel_proto::etcdserverpb::{AlarmType, LeaseGrantResponse, LeaseRevokeResponse};
use keel_proto::keelpb::{internal_raft_request::Request, AuthHeader, ConfChangeContext, InternalRaftRequest};
use keel_proto::mvccpb::{event::EventType, Event};
use keel_raft_node::failpoints::fault_point;
use keel_raft_node::{Apply, Clock, ConfChangeType, ConfChangeV2, Entry, EntryType, RaftHandle, ReadState, Snapshot};
use keel_watch_hub::WatchHub;
use parking_lot::Mutex;
use prost::Message as _;

use crate::alarms::Alarms;
use crate::auth::AuthStore;
use crate::lease_clock::LeaseClock;
use crate::metrics::NodeMetrics;
use crate::peer::PeerLinks;
use crate::proposals::{Applied, Waiters};
use crate::snapshots::{install_spooled, SnapshotShelf, SnapshotSpool};
use crate::v2keys::{InternalWrites, V2Keys};
use crate::NodeError;

/// Batches of raft's output waiting for the applier thread, at most. When
/// the applier falls this far behind, the raft thread waits for it (as
/// etcd's raft loop waits on its apply channel) instead of queueing without
/// bound; proposals are refused long before ("too many requests").
const APPLY_QUEUE: usize = 1024;

pub(crate) enum ApplyEvent {
    /// A peer said this member was removed from the cluster.
    Removed,
    Committed(Vec<Entry>),
    ReadStates(Vec<ReadState>),
    Dropped(u64),
    SnapshotWanted,
    InstallSnapshot(Snapshot, std::sync::mpsc::Sender<Result<(), String>>),
}

/// The raft thread's side of an applier on its own thread.
pub(crate) struct ApplySender {
    events: SyncSender<ApplyEvent>,
    /// The applier's applied index and the readers' waiters: a read index
    /// already applied is answered here, without waking the applier.
    applied: Arc<AtomicU64>,
    waiters: Arc<Waiters>,
}

impl ApplySender {
    /// The raft loop's end of an applier's queue, and the applier's end.
    pub(crate) fn channel(applied: Arc<AtomicU64>, waiters: Arc<Waiters>) -> (ApplySender, Receiver<ApplyEvent>) {
        let (events_tx, events_rx) = std::sync::mpsc::sync_channel(APPLY_QUEUE);
        (ApplySender { events: events_tx, applied, waiters }, events_rx)
    }
}

impl Apply for ApplySender {
    fn committed(&mut self, entries: Vec<Entry>) {
        let _ = self.events.send(ApplyEvent::Committed(entries));
    }
    fn read_states(&mut self, mut states: Vec<ReadState>) {
        // A lone reader's read index is usually applied already (nothing was
        // written meanwhile): answer it now rather than after a hand-off to
        // the applier thread. The applied index is published only after the
        // store holds the write, so a reader released here sees it.
        let applied = self.applied.load(Ordering::Acquire);
        let mut ready = Vec::new();
        states.retain(|state| {
            let applied_already = state.index <= applied;
            if applied_already {
                if let Ok(ctx) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) {
                    ready.push(u64::from_be_bytes(ctx));
                }
            }
            !applied_already
        });
        if !ready.is_empty() {
            self.waiters.release_reads(ready);
        }
        if !states.is_empty() {
            let _ = self.events.send(ApplyEvent::ReadStates(states));
        }
    }
    fn dropped(&mut self, tag: u64) {
        let _ = self.events.send(ApplyEvent::Dropped(tag));
    }
    fn snapshot_wanted(&mut self) {
        let _ = self.events.send(ApplyEvent::SnapshotWanted);
    }
    fn removed(&mut self) {
        let _ = self.events.send(ApplyEvent::Removed);
    }
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        // Everything committed before the snapshot is queued ahead of it, so
        // the applier installs it in log order; raft waits for the outcome.
        let (done, outcome) = std::sync::mpsc::channel();
        self.events
            .send(ApplyEvent::InstallSnapshot(snapshot.clone(), done))
            .map_err(|_| "applier stopped".to_string())?;
        outcome.recv().map_err(|_| "applier stopped".to_string())?
    }
}

/// The applier driven by the raft loop itself, without a thread of its own
/// (a simulation steps both in turn).
impl Apply for Applier {
    fn committed(&mut self, entries: Vec<Entry>) {
        self.handle(ApplyEvent::Committed(entries));
    }
    fn read_states(&mut self, states: Vec<ReadState>) {
        self.handle(ApplyEvent::ReadStates(states));
    }
    fn dropped(&mut self, tag: u64) {
        self.handle(ApplyEvent::Dropped(tag));
    }
    fn snapshot_wanted(&mut self) {
        self.handle(ApplyEvent::SnapshotWanted);
    }
    fn removed(&mut self) {
        self.handle(ApplyEvent::Removed);
    }
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.take_snapshot(snapshot)
    }
}

/// When the applier compacts the raft log, and how it answers for
/// snapshots (etcd's --snapshot-count and --snapshot-catchup-entries).
pub(crate) struct Snapshots {
    pub(crate) raft: RaftHandle,
    /// Compact the log after this many applied entries.
    pub(crate) count: u64,
    /// Keep this many entries behind the applied index, so a follower a
    /// little behind catches up from the log rather than a snapshot.
    pub(crate) catchup_entries: u64,
    pub(crate) compacted_at: u64,
    /// The applied index of the last snapshot handed to raft: raft may ask
    /// again before that one arrives, and checkpointing the store twice at
    /// the same index is wasted work.
    pub(crate) offered_at: Option<u64>,
    /// Where the offered checkpoint waits for the transfers that read it.
    pub(crate) shelf: Arc<SnapshotShelf>,
    /// Where the leader's snapshots wait to be installed.
    pub(crate) spool: Arc<dyn SnapshotSpool>,
}

/// The lease manager as MVCC sees it while applying a Put.
/// Locks per lookup rather than across the whole KV write: lease state only
/// changes on this thread, so the answer cannot move during the write, and
/// keep-alives on the async runtime never wait for a RocksDB batch.
struct Leases<'a>(&'a Mutex<Lessor>);

/// etcd warns about (and counts) an apply slower than this.
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

impl LeaseLookup for Leases<'_> {
    fn exists(&self, lease_id: i64) -> bool {
        self.0.lock().exists(lease_id)
    }
}

pub(crate) struct Applier {
    pub(crate) kv: Arc<KvStore>,
    pub(crate) lessor: Arc<Mutex<Lessor>>,
    pub(crate) auth: Arc<AuthStore>,
    pub(crate) alarms: Arc<Alarms>,
    /// The v2 keys API's store.
    pub(crate) v2: Arc<V2Keys>,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) applied: Arc<AtomicU64>,
    /// Told of every revision once it is in the store.
    pub(crate) watches: Arc<WatchHub>,
    clock: Arc<dyn Clock>,
    /// Told when a term's opening entry is applied (lease promotion).
    lease_clock: Option<Arc<LeaseClock>>,
    /// Who to tell about configuration changes.
    membership: Option<Membership>,
    snapshots: Option<Snapshots>,
    /// Reads whose read index is not applied yet, by that index.
    pending_reads: BTreeMap<u64, Vec<u64>>,
    metrics: NodeMetrics,
    apply_durations: crate::metrics::ApplyDurations,
}

impl Applier {
    pub(crate) fn new(
        kv: Arc<KvStore>,
        lessor: Arc<Mutex<Lessor>>,
        auth: Arc<AuthStore>,
        waiters: Arc<Waiters>,
        applied: Arc<AtomicU64>,
        watches: Arc<WatchHub>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Applier {
            kv,
            lessor,
            auth,
            alarms: Arc::default(),
            v2: Arc::new(V2Keys::empty()),
            waiters,
            applied,
            watches,
            clock,
            lease_clock: None,
            membership: None,
            snapshots: None,
            pending_reads: BTreeMap::new(),
            metrics: NodeMetrics::default(),
            apply_durations: Default::default(),
        }
    }

    /// The cluster's alarms, shared with the member that reports them.
    pub(crate) fn with_alarms(mut self, alarms: Arc<Alarms>) -> Self {
        self.alarms = alarms;
        self
    }

    /// The member's v2 store (loaded from `kv`), shared with its readers.
    pub(crate) fn with_v2(mut self, v2: Arc<V2Keys>) -> Self {
        self.v2 = v2;
        self
    }

    pub(crate) fn with_metrics(mut self, metrics: NodeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub(crate) fn with_lease_clock(mut self, clock: Arc<LeaseClock>) -> Self {
        self.lease_clock = Some(clock);
        self
    }

    pub(crate) fn with_membership(mut self, membership: Membership) -> Self {
        self.membership = Some(membership);
        self
    }

    pub(crate) fn with_snapshots(mut self, snapshots: Snapshots) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Runs the applier on a thread of its own, fed by `events`.
    pub(crate) fn spawn(self, events: Receiver<ApplyEvent>) -> Result<std::thread::JoinHandle<()>, NodeError> {
        std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || self.run(events))
            .map_err(|e| NodeError::Storage(format!("cannot start applier thread: {e}")))
    }

    fn run(mut self, events: Receiver<ApplyEvent>) {
        while let Ok(event) = events.recv() {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: ApplyEvent) {
        match event {
            ApplyEvent::Committed(entries) => {
                // The batch's changes reach the store's engine in one write.
                self.kv.hold_writes();
                for entry in entries {
                    let started = std::time::Instant::now();
                    let outcome = self.apply_entry(&entry);
                    if started.elapsed() > SLOW_APPLY {
                        self.metrics.slow_apply.inc();
                    }
                    if let Err(err) = outcome {
                        // Applying is deterministic, so this member's
                        // storage failed. Stopping only this thread would
                        // leave raft leading and clients timing out, and
                        // a member that goes on could diverge: stop the
                        // process, as etcd panics. The raft log is
                        // durable; a restart replays from it.
                        tracing::error!(%err, index = entry.index, "cannot apply committed entry; stopping the member");
                        std::process::abort();
                    }
                }
                if let Err(err) = self.kv.write_held() {
                    tracing::error!(%err, "cannot write applied entries to the store; stopping the member");
                    std::process::abort();
                }
                self.release_reads();
                if let Err(err) = self.maybe_compact_log() {
                    tracing::error!(%err, "cannot make the applied state durable; stopping the member");
                    std::process::abort();
                }
            }
            ApplyEvent::SnapshotWanted => self.offer_snapshot(),
            ApplyEvent::InstallSnapshot(snapshot, done) => {
                self.metrics.snapshot_apply_in_progress.set(1);
                let outcome = self.take_snapshot(&snapshot);
                self.metrics.snapshot_apply_in_progress.set(0);
                let _ = done.send(outcome);
            }
            ApplyEvent::ReadStates(states) => {
                for state in states {
                    let Ok(ctx) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else { continue };
                    let tag = u64::from_be_bytes(ctx);
                    self.pending_reads.entry(state.index).or_default().push(tag);
                }
                self.release_reads();
            }
            ApplyEvent::Removed => {
                if let Some(membership) = &self.membership {
                    membership.notify_removed();
                }
            }
            ApplyEvent::Dropped(tag) => {
                self.waiters.answer_write(tag, Err(NodeError::NoLeader));
                self.waiters.answer_read(tag, Err(NodeError::NoLeader));
            }
        }
    }

    fn apply_entry(&mut self, entry: &Entry) -> Result<(), NodeError> {
        let index = entry.index;
        if index <= self.applied.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut stored = false;
        if entry.get_entry_type() == EntryType::EntryNormal && entry.data.is_empty() {
            if let Some(clock) = &self.lease_clock {
                clock.term_opened(&mut self.lessor.lock(), entry.term);
            }
        }
        if entry.get_entry_type() == EntryType::EntryConfChangeV2 && !entry.data.is_empty() {
            let (tag, result) = self.apply_conf_change(index, entry)?;
            stored = result.is_ok();
            self.waiters.answer_write(tag, result);
        }
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            let request = InternalRaftRequest::decode(entry.data.as_ref())
                .map_err(|e| NodeError::Corrupt(format!("entry {index}: {e}")))?;
            fault_point("apply-before", &[&entry.data]);
            let op = crate::metrics::apply_op(request.request.as_ref());
            let started = std::time::Instant::now();
            let result = self.apply_request(index, request.request, request.auth.as_ref());
            self.apply_durations.observe(&self.metrics, op, result.is_ok(), started.elapsed());
            fault_point("apply-after", &[&entry.data]);
            let result = match result {
                Err(NodeError::Mvcc(err)) if err.is_fatal() => return Err(NodeError::Mvcc(err)),
                other => other,
            };
            // Every successful apply wrote consistent_index with its change.
            stored = result.is_ok();
            self.waiters.answer_write(request.id, result);
        }
        if !stored {
            // Empty and configuration entries, and requests refused while
            // applying, change nothing; recording them keeps a restart from
            // replaying them (and keeps consistent_index the true applied index).
            self.kv.advance_consistent_index(index).map_err(NodeError::Mvcc)?;
        }
        self.applied.store(index, Ordering::Release);
        Ok(())
    }

    fn apply_request(
        &self,
        index: u64,
        request: Option<Request>,
        auth: Option<&AuthHeader>,
    ) -> Result<Applied, NodeError> {
        if let Some(request) = &request {
            if let Some(applied) =
                self.auth.apply(&self.kv, index, auth, request, self.clock.now(), self.clock.unix_millis() / 1000)
            {
                return applied;
            }
            let lease_keys = |id: i64| self.lessor.lock().keys(id).unwrap_or_default();
            self.auth.check_write(auth, request, &lease_keys).map_err(NodeError::Auth)?;
        }
        if let Some(request) = &request {
            self.check_alarms(request)?;
        }
        let kv_write = |write: WriteRequest<'_>| -> Result<Applied, NodeError> {
            let outcome = self.kv.apply(index, write, &Leases(&self.lessor)).map_err(NodeError::Mvcc)?;
            if !outcome.events.is_empty() {
                track_leased_keys(&mut self.lessor.lock(), &outcome.events);
                self.watches.notify(outcome.revision, outcome.events);
            }
            Ok(Applied::Kv(outcome.response))
        };
        match request {
            Some(Request::Put(put)) => kv_write(WriteRequest::Put(&put)),
            Some(Request::DeleteRange(delete)) => kv_write(WriteRequest::DeleteRange(&delete)),
            Some(Request::Txn(txn)) => kv_write(WriteRequest::Txn(&txn)),
            Some(Request::Compaction(compact)) => kv_write(WriteRequest::Compact(&compact)),
            Some(Request::LeaseGrant(grant)) => {
                let info = self.lessor.lock().grant(grant.id, grant.ttl, self.clock.now()).map_err(NodeError::Lease)?;
                self.kv
                    .apply_lease_grant(index, LeaseRecord { id: info.id, ttl: info.ttl, remaining_ttl: 0 })
                    .map_err(NodeError::Mvcc)?;
                Ok(Applied::LeaseGrant(LeaseGrantResponse {
                    header: None,
                    id: info.id,
                    ttl: info.ttl,
                    error: String::new(),
                }))
            }
            Some(Request::LeaseRevoke(revoke)) => {
                if cfg!(feature = "failpoints") {
                    fault_point("lease-revoke", &[revoke.id.to_string().as_bytes()]);
                }
                let keys = self.lessor.lock().revoke(revoke.id).map_err(NodeError::Lease)?;
                let outcome = self.kv.apply_lease_revoke(index, revoke.id, &keys).map_err(NodeError::Mvcc)?;
                if !outcome.events.is_empty() {
                    self.watches.notify(outcome.revision, outcome.events);
                }
                Ok(Applied::LeaseRevoke(LeaseRevokeResponse {
                    header: Some(keel_proto::etcdserverpb::ResponseHeader {
                        revision: outcome.revision,
                        ..Default::default()
                    }),
                }))
            }
            Some(Request::LeaseExpiry(expiry)) => {
                // All but the last revoke record index - 1 as applied: a crash
                // part-way replays the entry, and leases already revoked
                // (gone from the lease manager after a restart) are skipped.
                let last = expiry.ids.len().saturating_sub(1);
                let mut recorded = false;
                for (i, &id) in expiry.ids.iter().enumerate() {
                    let Ok(keys) = self.lessor.lock().revoke(id) else { continue };
                    let at = if i == last { index } else { index - 1 };
                    let outcome = self.kv.apply_lease_revoke(at, id, &keys).map_err(NodeError::Mvcc)?;
                    recorded |= i == last;
                    if !outcome.events.is_empty() {
                        self.watches.notify(outcome.revision, outcome.events);
                    }
                }
                if !recorded {
                    self.kv.advance_consistent_index(index).map_err(NodeError::Mvcc)?;
                }
                Ok(Applied::Internal)
            }
            Some(Request::LeaseCheckpoint(request)) => {
                let checkpoints: Vec<(i64, i64)> =
                    request.checkpoints.iter().map(|c| (c.id, c.remaining_ttl)).collect();
                {
                    let mut lessor = self.lessor.lock();
                    for &(id, remaining_ttl) in &checkpoints {
                        lessor.checkpoint(id, remaining_ttl);
                    }
                }
                self.kv.apply_lease_checkpoints(index, &checkpoints).map_err(NodeError::Mvcc)?;
                Ok(Applied::Internal)
            }
            Some(Request::MemberUpdate(update)) => {
                let v2 = self.v2.internal(InternalWrites::UPDATED);
                self.kv.apply_member_peer_urls(index, update.id, &update.peer_ur_ls, v2).map_err(NodeError::Mvcc)?;
                if let (Some(membership), Some(url)) = (&self.membership, update.peer_ur_ls.first()) {
                    membership.links.add(update.id, url);
                }
                Ok(Applied::Internal)
            }
            Some(Request::Alarm(alarm)) => Ok(Applied::Alarm(self.alarms.apply(&self.kv, index, &alarm)?)),
            Some(Request::MemberAttributes(attributes)) => {
                // A fresh cluster's bootstrap members and cluster version
                // never went through this log (raft starts from their
                // configuration); etcd's counted them before the first
                // publish, so they are counted with it.
                let writes = if self.v2.is_fresh() {
                    let members = self.kv.members().map_err(NodeError::Mvcc)?.len();
                    InternalWrites::added(u32::try_from(members).unwrap_or(u32::MAX))
                        .and(InternalWrites::published(true))
                } else {
                    InternalWrites::published(false)
                };
                let v2 = self.v2.internal(writes);
                self.kv
                    .apply_member_attributes(index, attributes.member_id, &attributes.name, &attributes.client_urls, v2)
                    .map_err(NodeError::Mvcc)?;
                Ok(Applied::Internal)
            }
            Some(Request::V2Write(write)) => {
                let Some(write) = crate::v2keys::decode(write) else {
                    return Err(NodeError::Corrupt(format!("entry {index}: a v2 write of an unknown kind")));
                };
                Ok(Applied::V2(self.v2.apply(&self.kv, index, &write)?))
            }
            // Auth requests were applied above.
            Some(_) => Err(NodeError::Corrupt(format!("entry {index}: an auth request the auth store did not take"))),
            None => Err(NodeError::Mvcc(MvccError::Unsupported("empty request".into()))),
        }
    }

    /// etcd's capped and corrupt appliers: with NOSPACE raised, requests
    /// that grow the store are refused (reads, deletes and compactions go
    /// on, so the operator can make room); with CORRUPT, every KV and lease
    /// request is.
    fn check_alarms(&self, request: &Request) -> Result<(), NodeError> {
        if self.alarms.is_active(AlarmType::Corrupt)
            && matches!(
                request,
                Request::Put(_)
                    | Request::DeleteRange(_)
                    | Request::Txn(_)
                    | Request::Compaction(_)
                    | Request::LeaseGrant(_)
                    | Request::LeaseRevoke(_)
            )
        {
            return Err(NodeError::CorruptCluster);
        }
        if self.alarms.is_active(AlarmType::Nospace) {
            let grows = match request {
                Request::Put(_) | Request::LeaseGrant(_) => true,
                Request::Txn(txn) => txn_puts(txn),
                _ => false,
            };
            if grows {
                return Err(NodeError::NoSpace);
            }
        }
        Ok(())
    }

    /// Every `count` applied entries: make the store durable up to the
    /// applied index, then let raft drop its log up to `catchup_entries`
    /// before it.
    fn maybe_compact_log(&mut self) -> Result<(), NodeError> {
        let applied = self.applied.load(Ordering::Acquire);
        let Some(snapshots) = &mut self.snapshots else { return Ok(()) };
        if applied < snapshots.compacted_at + snapshots.count {
            return Ok(());
        }
        self.kv.sync().map_err(NodeError::Mvcc)?;
        let _ = snapshots.raft.compact(applied.saturating_sub(snapshots.catchup_entries));
        snapshots.compacted_at = applied;
        Ok(())
    }

    /// A follower is behind the compacted log: hand raft the whole state at
    /// the applied index, with the configuration it implies.
    fn offer_snapshot(&mut self) {
        let Some(snapshots) = &mut self.snapshots else { return };
        if snapshots.offered_at == Some(self.kv.consistent_index()) {
            return;
        }
        fault_point("snapshot-build", &[]);
        let made = self.kv.checkpoint().and_then(|checkpoint| Ok((checkpoint, self.kv.members()?)));
        match made {
            Ok((checkpoint, members)) => {
                let index = checkpoint.index();
                tracing::info!(index, "checkpoint prepared for a follower");
                snapshots.offered_at = Some(index);
                snapshots.shelf.offer(checkpoint);
                // The data travels beside raft's message, read from the shelf.
                let _ = snapshots.raft.snapshot_ready(index, conf_state_of(&members), Vec::new());
            }
            Err(err) => tracing::warn!(%err, "cannot prepare a snapshot"),
        }
    }

    /// Installs the leader's snapshot for raft (which waits for the outcome),
    /// then releases the reads it satisfies.
    fn take_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let outcome = self.install_snapshot(snapshot);
        if let Err(err) = &outcome {
            tracing::error!(%err, "installing the leader's snapshot failed");
        }
        self.release_reads();
        outcome.map_err(|e| e.to_string())
    }

    /// Replaces this member's state with the leader's snapshot, then brings
    /// everything that mirrors the store back in step: the applied index, the
    /// lease manager, the watchers and the peers.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let Some(snapshots) = &self.snapshots else {
            return Err(NodeError::Storage("this member takes no snapshots".into()));
        };
        fault_point("snapshot-install-before", &[]);
        install_spooled(&self.kv, &*snapshots.spool, snapshot.get_metadata().index)?;
        fault_point("snapshot-install-after", &[]);
        let index = self.kv.consistent_index();
        tracing::info!(index, snapshot_index = snapshot.get_metadata().index, "installed the leader's snapshot");
        self.applied.store(index, Ordering::Release);
        let records = self.kv.lease_records().map_err(NodeError::Mvcc)?;
        let leased_keys = self.kv.leased_keys().map_err(NodeError::Mvcc)?;
        {
            let mut lessor = self.lessor.lock();
            let config = lessor.config().clone();
            let metrics = lessor.metrics().clone();
            *lessor = Lessor::restore(
                config,
                records.into_iter().map(|r| keel_lease_manager::LeaseRecord {
                    id: r.id,
                    ttl: r.ttl,
                    remaining_ttl: r.remaining_ttl,
                }),
                leased_keys,
            )
            .with_metrics(metrics);
        }
        self.auth.reload(&self.kv)?;
        self.alarms.reload(&self.kv)?;
        self.v2.reload(&self.kv)?;
        self.watches.jump_to(self.kv.current_revision());
        if let Some(membership) = &self.membership {
            *membership.removed_members.write() =
                self.kv.removed_members().map_err(NodeError::Mvcc)?.into_iter().collect();
            let members = self.kv.members().map_err(NodeError::Mvcc)?;
            *membership.current_members.write() = members.iter().map(|m| m.id).collect();
            let learner = members.iter().any(|m| m.id == membership.member_id && m.is_learner);
            membership.learner.store(learner, Ordering::Release);
            membership.links.retain(&members.iter().map(|m| m.id).collect::<Vec<_>>());
            for m in &members {
                if let Some(url) = m.peer_ur_ls.first() {
                    membership.links.add(m.id, url);
                }
            }
        }
        if let Some(snapshots) = &mut self.snapshots {
            snapshots.compacted_at = index;
        }
        Ok(())
    }

    /// A configuration change raft has already put in effect: record the
    /// membership with the applied index, and connect to or drop the peer.
    /// Returns the proposer's tag and the answer for it.
    fn apply_conf_change(&self, index: u64, entry: &Entry) -> Result<(u64, Result<Applied, NodeError>), NodeError> {
        let change: ConfChangeV2 = protobuf::Message::parse_from_bytes(&entry.data)
            .map_err(|e| NodeError::Corrupt(format!("conf change at {index}: {e}")))?;
        let context = ConfChangeContext::decode(change.get_context())
            .map_err(|e| NodeError::Corrupt(format!("conf change context at {index}: {e}")))?;
        let Some(member) = context.member else {
            return Err(NodeError::Corrupt(format!("conf change at {index} names no member")));
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for single in change.get_changes() {
            match single.get_change_type() {
                ConfChangeType::AddNode => added.push(EtcdMember { is_learner: false, ..member.clone() }),
                ConfChangeType::AddLearnerNode => added.push(EtcdMember { is_learner: true, ..member.clone() }),
                ConfChangeType::RemoveNode => removed.push(single.get_node_id()),
            }
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let v2 = self
            .v2
            .internal(InternalWrites::added(count(added.len())).and(InternalWrites::removed(count(removed.len()))));
        self.kv.apply_membership(index, &added, &removed, v2).map_err(NodeError::Mvcc)?;
        if let Some(membership) = &self.membership {
            for member in &added {
                membership.current_members.write().insert(member.id);
                if member.id == membership.member_id {
                    membership.learner.store(member.is_learner, Ordering::Release);
                }
                if let Some(url) = member.peer_ur_ls.first() {
                    membership.links.add(member.id, url);
                }
            }
            for id in &removed {
                membership.links.remove(*id);
                membership.removed_members.write().insert(*id);
                membership.current_members.write().remove(id);
                if *id == membership.member_id {
                    membership.notify_removed();
                }
            }
        }
        Ok((context.id, Ok(Applied::Internal)))
    }

    fn release_reads(&mut self) {
        let applied = self.applied.load(Ordering::Acquire);
        while let Some(entry) = self.pending_reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            self.waiters.release_reads(entry.remove());
        }
    }
}

/// The raft configuration a membership implies.
pub(crate) fn conf_state_of(members: &[EtcdMember]) -> keel_raft_node::ConfState {
    let mut conf_state = keel_raft_node::ConfState::default();
    conf_state.set_voters(members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect());
    conf_state.set_learners(members.iter().filter(|m| m.is_learner).map(|m| m.id).collect());
    conf_state
}

/// What the applier tells about configuration changes: the transport (to
/// connect to added members and drop removed ones) and, when this member is
/// removed, whoever waits for that.
pub(crate) struct Membership {
    pub(crate) member_id: u64,
    pub(crate) links: Arc<dyn PeerLinks>,
    pub(crate) removed: Arc<tokio::sync::Notify>,
    /// Members removed from the cluster: their raft messages are refused.
    pub(crate) removed_members: Arc<parking_lot::RwLock<std::collections::HashSet<u64>>>,
    /// The members now: only their raft messages are taken.
    pub(crate) current_members: Arc<parking_lot::RwLock<std::collections::HashSet<u64>>>,
    /// Whether this member is a learner, as applied: read by health checks
    /// and metrics without touching storage.
    pub(crate) learner: Arc<AtomicBool>,
}

impl Membership {
    fn notify_removed(&self) {
        tracing::warn!("this member has been permanently removed from the cluster");
        self.removed.notify_waiters();
        self.removed.notify_one();
    }
}

/// Keeps the lease manager's key sets in step with the key space: a Put
/// attaches its key to its lease (moving it from any other), a Put without a
/// lease or a delete detaches it.
fn track_leased_keys(lessor: &mut Lessor, events: &[Event]) {
    for event in events {
        let Some(kv) = &event.kv else { continue };
        let previous = lessor.lease_of(&kv.key);
        let lease = if event.r#type == EventType::Put as i32 { kv.lease } else { 0 };
        if lease != 0 {
            let _ = lessor.attach(lease, &kv.key);
        } else if let Some(previous) = previous {
            let _ = lessor.detach(previous, &kv.key);
        }
    }
}

/// Whether a txn puts in either branch, nested txns included (etcd's
/// `isTxnPut`, which the capped applier refuses).
fn txn_puts(txn: &keel_proto::etcdserverpb::TxnRequest) -> bool {
    use keel_proto::etcdserverpb::request_op::Request as Op;
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(Op::RequestPut(_)) => true,
        Some(Op::RequestTxn(inner)) => txn_puts(inner),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_state(index: u64, tag: u64) -> ReadState {
        ReadState { index, request_ctx: tag.to_be_bytes().to_vec() }
    }

    #[test]
    fn a_read_index_already_applied_is_answered_by_the_raft_thread() {
        let applied = Arc::new(AtomicU64::new(5));
        let waiters = Arc::new(Waiters::default());
        let (mut sender, events) = ApplySender::channel(applied.clone(), waiters.clone());
        let (done, mut answered) = tokio::sync::oneshot::channel();
        let (later, mut waiting) = tokio::sync::oneshot::channel();
        waiters.wait_read(1, done);
        waiters.wait_read(2, later);
        sender.read_states(vec![read_state(5, 1), read_state(6, 2)]);
        assert!(matches!(answered.try_recv(), Ok(Ok(()))), "index 5 is applied: answered at once");
        assert!(waiting.try_recv().is_err(), "index 6 is not applied yet");
        // The unapplied one went to the applier, which releases it once it
        // has applied index 6.
        match events.try_recv() {
            Ok(ApplyEvent::ReadStates(states)) => {
                assert_eq!(states.iter().map(|s| s.index).collect::<Vec<_>>(), vec![6]);
            }
            _ => panic!("the applier was not handed index 6"),
        }
        assert!(events.try_recv().is_err());
    }
}
