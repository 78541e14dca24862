//! Proposals and their waiters: the one place where a client's request
//! becomes a raft proposal (or a read-index request) and where the client
//! waits for the outcome.
//!
//! Every waiter is registered under a tag unique to this member (etcd's
//! request id layout); the applier answers it when the entry is applied or
//! the read index is reached, and raft answers at once when it refuses the
//! proposal. A waiter whose client gave up is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_mvcc::WriteResponse;
use keel_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse,
    Member as EtcdMember, PutResponse, ResponseHeader, TxnResponse,
};
use keel_proto::keelpb::{internal_raft_request::Request, AuthHeader, ConfChangeContext, InternalRaftRequest};
use keel_raft_node::{ConfChangeSingle, ConfChangeType, ConfChangeV2, RaftHandle, RaftNodeError};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::oneshot;

use crate::metrics::NodeMetrics;
use crate::read_rounds::ReadRounds;
use crate::NodeError;

/// What applying one proposal produced for the client waiting for it.
pub(crate) enum Applied {
    Kv(WriteResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    /// An auth change; a login's token.
    Auth(Option<String>),
    /// A v2 keys write: the store's event, or its refusal.
    V2(Result<keel_v2store::Event, keel_v2store::V2Error>),
    /// Bookkeeping no client waits for an answer to: a member's published
    /// attributes, lease checkpoints, configuration changes.
    Internal,
}

pub(crate) type WriteReply = oneshot::Sender<Result<Applied, NodeError>>;
pub(crate) type ReadReply = oneshot::Sender<Result<(), NodeError>>;

/// Clients of this member waiting for their proposal or read to come back.
#[derive(Default)]
pub(crate) struct Waiters {
    writes: Mutex<HashMap<u64, WriteReply>>,
    reads: Mutex<HashMap<u64, ReadReply>>,
}

impl Waiters {
    pub(crate) fn wait_write(&self, tag: u64, reply: WriteReply) {
        self.writes.lock().insert(tag, reply);
    }
    pub(crate) fn wait_read(&self, tag: u64, reply: ReadReply) {
        self.reads.lock().insert(tag, reply);
    }
    pub(crate) fn forget(&self, tag: u64) {
        self.writes.lock().remove(&tag);
        self.reads.lock().remove(&tag);
    }
    /// Writes waiting for their entry to be applied.
    pub(crate) fn pending_writes(&self) -> usize {
        self.writes.lock().len()
    }

    /// Gives the write waiting under `tag`, if any, its outcome.
    pub(crate) fn answer_write(&self, tag: u64, outcome: Result<Applied, NodeError>) {
        if let Some(reply) = self.writes.lock().remove(&tag) {
            let _ = reply.send(outcome);
        }
    }
    /// Gives the read waiting under `tag`, if any, its outcome.
    pub(crate) fn answer_read(&self, tag: u64, outcome: Result<(), NodeError>) {
        if let Some(reply) = self.reads.lock().remove(&tag) {
            let _ = reply.send(outcome);
        }
    }
    /// Answers every read in `tags` (their read index is applied).
    pub(crate) fn release_reads(&self, tags: Vec<u64>) {
        let mut reads = self.reads.lock();
        for tag in tags {
            if let Some(reply) = reads.remove(&tag) {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

/// How a member sends requests through raft and waits for them.
pub(crate) struct Proposals {
    raft: RaftHandle,
    waiters: Arc<Waiters>,
    /// The next tag: one sequence for writes, reads and lease ids.
    tags: Arc<AtomicU64>,
    /// The applier's progress, to refuse proposals while it lags.
    applied: Arc<AtomicU64>,
    reads: ReadRounds,
    max_request_bytes: usize,
    request_timeout: Duration,
    metrics: NodeMetrics,
}

impl Proposals {
    pub(crate) fn new(
        raft: RaftHandle,
        waiters: Arc<Waiters>,
        applied: Arc<AtomicU64>,
        first_tag: u64,
        max_request_bytes: usize,
        request_timeout: Duration,
        metrics: NodeMetrics,
    ) -> Proposals {
        let tags = Arc::new(AtomicU64::new(first_tag));
        let reads = ReadRounds::new(raft.clone(), waiters.clone(), tags.clone());
        Proposals { raft, waiters, tags, applied, reads, max_request_bytes, request_timeout, metrics }
    }

    /// etcd's request id layout: the member id's low bits on top, so ids
    /// from different members never meet, then wall time in milliseconds, so
    /// a restart does not reuse ids.
    pub(crate) fn first_tag(member_id: u64, unix_millis: u64) -> u64 {
        ((member_id & 0xffff) << 48) | ((unix_millis & 0xff_ffff_ffff) << 8)
    }

    pub(crate) fn waiters(&self) -> Arc<Waiters> {
        self.waiters.clone()
    }

    pub(crate) fn next_tag(&self) -> u64 {
        self.tags.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one write through raft and waits until this member applied it.
    /// `auth`: who the client is, for the checks made when the entry is
    /// applied; `None` for the member's own requests.
    pub(crate) async fn propose(&self, request: Request, auth: Option<AuthHeader>) -> Result<Applied, NodeError> {
        let outcome = self.propose_once(request, auth).await;
        if let Err(NodeError::NoLeader | NodeError::Timeout) = outcome {
            self.metrics.proposals_failed.inc();
        }
        outcome
    }

    async fn propose_once(&self, request: Request, auth: Option<AuthHeader>) -> Result<Applied, NodeError> {
        // As etcd: while the applier is this far behind the log, more
        // proposals would only queue up memory and latency.
        let applied = self.applied.load(Ordering::Acquire);
        if self.raft.status().commit_index() > applied + MAX_APPLY_LAG {
            return Err(NodeError::TooManyRequests);
        }
        let tag = self.next_tag();
        let retry_payload = InternalRaftRequest { id: tag, auth, request: Some(request) };
        let data = retry_payload.encode_to_vec();
        if data.len() > self.max_request_bytes {
            return Err(NodeError::RequestTooLarge);
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut data = Some(data);
        loop {
            let (reply, answer) = oneshot::channel();
            self.waiters.wait_write(tag, reply);
            // A client that gives up (its future dropped) leaves no waiter
            // behind, nor a pending proposal in the metrics.
            let _waiting = Waiting { waiters: &self.waiters, tag };
            // The payload is moved into the proposal; a retry (refused before
            // it reached the log) encodes the request again.
            let payload = data.take().unwrap_or_else(|| retry_payload.encode_to_vec());
            if let Err(err) = self.raft.propose(tag, payload) {
                self.waiters.forget(tag);
                return Err(refused(err));
            }
            match self.answer_by(tag, answer, deadline).await {
                Err(NodeError::NoLeader) => {
                    // Refused before it reached the log (an election is
                    // running): proposing again cannot apply it twice.
                    if tokio::time::Instant::now() + RETRY_AFTER_NO_LEADER >= deadline {
                        return Err(NodeError::NoLeader);
                    }
                    tokio::time::sleep(RETRY_AFTER_NO_LEADER).await;
                }
                result => return result,
            }
        }
    }

    /// Proposes a configuration change about `member` and waits until this
    /// member has applied it.
    pub(crate) async fn change_membership(&self, kind: ConfChangeType, member: EtcdMember) -> Result<(), NodeError> {
        let tag = self.next_tag();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.set_node_id(member.id);
        let mut change = ConfChangeV2::default();
        change.set_changes(vec![single].into());
        change.set_context(ConfChangeContext { id: tag, member: Some(member) }.encode_to_vec().into());
        let (reply, answer) = oneshot::channel();
        self.waiters.wait_write(tag, reply);
        if let Err(err) = self.raft.propose_conf_change(tag, change) {
            self.waiters.forget(tag);
            return Err(refused(err));
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        self.answer_by(tag, answer, deadline).await.map(|_| ())
    }

    /// The outcome of the proposal waiting under `tag`, or `Timeout` at
    /// `deadline` (the waiter is then forgotten).
    async fn answer_by(
        &self,
        tag: u64,
        answer: oneshot::Receiver<Result<Applied, NodeError>>,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, NodeError> {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => {
                self.waiters.forget(tag);
                Err(NodeError::Timeout)
            }
        }
    }

    /// Waits until this member has applied everything committed before now
    /// (raft's read index), so a read sees every write acknowledged before it.
    pub(crate) async fn wait_linearizable(&self) -> Result<(), NodeError> {
        let outcome = self.wait_read_index().await;
        // As etcd: a read index that timed out is slow; one lost to a
        // leader change (or a member stopping) failed.
        match outcome {
            Err(NodeError::Timeout) => self.metrics.slow_read_indexes.inc(),
            Err(_) => self.metrics.read_indexes_failed.inc(),
            Ok(()) => {}
        }
        outcome
    }

    async fn wait_read_index(&self) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
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
}

/// Forgets the write waiting under `tag` when dropped: answered, timed
/// out, or abandoned by its client.
struct Waiting<'a> {
    waiters: &'a Waiters,
    tag: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.writes.lock().remove(&self.tag);
    }
}

/// Why raft did not take a request in.
pub(crate) fn refused(err: RaftNodeError) -> NodeError {
    match err {
        RaftNodeError::Busy => NodeError::TooManyRequests,
        _ => NodeError::Stopped,
    }
}

/// The response of one kind of write, picked out of the store's answer.
pub(crate) trait WriteAnswer: Sized {
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
    AlarmResponse => Applied::Alarm(answer),
);

/// etcd's maxGapBetweenApplyAndCommitIndex: proposals are refused ("too many
/// requests") while the applier is more than this many entries behind.
pub(crate) const MAX_APPLY_LAG: u64 = 5_000;

pub(crate) const RETRY_AFTER_NO_LEADER: Duration = Duration::from_millis(50);
