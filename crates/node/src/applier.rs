//! The applier: committed raft entries become MVCC changes, and the clients
//! waiting for them are answered.
//!
//! It runs on its own thread so the raft thread can persist the next batch
//! while this one is applied. It is also where linearizable reads wait: a
//! read index is only safe to serve once everything up to it is applied, and
//! this thread is the one that knows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use keel_mvcc::{KvStore, MvccError, NoLeases, WriteRequest, WriteResponse};
use keel_proto::keelpb::{internal_raft_request::Request, InternalRaftRequest};
use keel_raft_node::{Apply, Entry, EntryType, ReadState};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::oneshot;

use crate::NodeError;

pub(crate) type WriteReply = oneshot::Sender<Result<WriteResponse, NodeError>>;
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
}

pub(crate) enum ApplyEvent {
    Committed(Vec<Entry>),
    ReadStates(Vec<ReadState>),
    Dropped(u64),
}

/// The raft thread's side: forwards to the applier thread without blocking.
pub(crate) struct ApplySender(pub(crate) Sender<ApplyEvent>);

impl Apply for ApplySender {
    fn committed(&mut self, entries: Vec<Entry>) {
        let _ = self.0.send(ApplyEvent::Committed(entries));
    }
    fn read_states(&mut self, states: Vec<ReadState>) {
        let _ = self.0.send(ApplyEvent::ReadStates(states));
    }
    fn dropped(&mut self, tag: u64) {
        let _ = self.0.send(ApplyEvent::Dropped(tag));
    }
}

pub(crate) struct Applier {
    pub(crate) kv: Arc<KvStore>,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) applied: Arc<AtomicU64>,
    /// Reads whose read index is not applied yet, by that index.
    pending_reads: BTreeMap<u64, Vec<u64>>,
}

impl Applier {
    pub(crate) fn new(kv: Arc<KvStore>, waiters: Arc<Waiters>, applied: Arc<AtomicU64>) -> Self {
        Applier { kv, waiters, applied, pending_reads: BTreeMap::new() }
    }

    pub(crate) fn run(mut self, events: Receiver<ApplyEvent>) {
        while let Ok(event) = events.recv() {
            match event {
                ApplyEvent::Committed(entries) => {
                    for entry in entries {
                        if let Err(err) = self.apply_entry(&entry) {
                            // Applying is deterministic; a member that cannot
                            // apply an entry must not go on diverging.
                            tracing::error!(%err, index = entry.index, "cannot apply committed entry; stopping the applier");
                            return;
                        }
                    }
                    self.release_reads();
                }
                ApplyEvent::ReadStates(states) => {
                    for state in states {
                        let Ok(ctx) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else { continue };
                        let tag = u64::from_be_bytes(ctx);
                        self.pending_reads.entry(state.index).or_default().push(tag);
                    }
                    self.release_reads();
                }
                ApplyEvent::Dropped(tag) => {
                    if let Some(reply) = self.waiters.writes.lock().remove(&tag) {
                        let _ = reply.send(Err(NodeError::NoLeader));
                    }
                    if let Some(reply) = self.waiters.reads.lock().remove(&tag) {
                        let _ = reply.send(Err(NodeError::NoLeader));
                    }
                }
            }
        }
    }

    fn apply_entry(&mut self, entry: &Entry) -> Result<(), NodeError> {
        let index = entry.index;
        if index <= self.applied.load(Ordering::Acquire) {
            return Ok(());
        }
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            let request = InternalRaftRequest::decode(entry.data.as_ref())
                .map_err(|e| NodeError::Corrupt(format!("entry {index}: {e}")))?;
            let result = match &request.request {
                Some(Request::Put(put)) => self.kv.apply(index, WriteRequest::Put(put), &NoLeases),
                Some(Request::DeleteRange(delete)) => self.kv.apply(index, WriteRequest::DeleteRange(delete), &NoLeases),
                Some(Request::Txn(txn)) => self.kv.apply(index, WriteRequest::Txn(txn), &NoLeases),
                Some(Request::Compaction(compact)) => self.kv.apply(index, WriteRequest::Compact(compact), &NoLeases),
                // Leases arrive with the lease manager (until then, no lease exists).
                Some(Request::LeaseGrant(_)) | Some(Request::LeaseRevoke(_)) | None => {
                    Err(MvccError::Unsupported("lease requests".into()))
                }
            };
            let result = match result {
                Ok(outcome) => Ok(outcome.response),
                Err(err) if err.is_fatal() => return Err(NodeError::Mvcc(err)),
                Err(err) => Err(NodeError::Mvcc(err)),
            };
            if let Some(reply) = self.waiters.writes.lock().remove(&request.id) {
                let _ = reply.send(result);
            }
        }
        self.applied.store(index, Ordering::Release);
        Ok(())
    }

    fn release_reads(&mut self) {
        let applied = self.applied.load(Ordering::Acquire);
        while let Some(entry) = self.pending_reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let mut reads = self.waiters.reads.lock();
            for tag in entry.remove() {
                if let Some(reply) = reads.remove(&tag) {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }
}
