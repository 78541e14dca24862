//! Linearizable reads share raft read-index requests.
//!
//! A read must see every write acknowledged before it arrived, so it may only
//! use a read index that raft was asked for after its arrival. Reads that
//! arrive while a request is out therefore wait together for the next one:
//! under load one read index (on a cluster, one heartbeat round) serves every
//! read that queued meanwhile, as etcd's linearizable read loop does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_raft_node::RaftHandle;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::proposals::{refused, ReadReply, Waiters};
use crate::NodeError;

/// raft-rs silently ignores read requests until a new leader has committed
/// an entry of its term, so a request not answered by then is made again.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

/// The rounds of read-index requests of one member.
pub(crate) struct ReadRounds {
    inner: Arc<Inner>,
}

struct Inner {
    raft: RaftHandle,
    waiters: Arc<Waiters>,
    /// Shared with the member's writes: a tag names one waiter of either kind.
    tags: Arc<AtomicU64>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A task is running rounds; it takes `queued` when its round ends.
    running: bool,
    /// Reads that arrived since the current round's request was made.
    queued: Vec<ReadReply>,
}

impl ReadRounds {
    pub(crate) fn new(raft: RaftHandle, waiters: Arc<Waiters>, tags: Arc<AtomicU64>) -> ReadRounds {
        ReadRounds { inner: Arc::new(Inner { raft, waiters, tags, state: Mutex::new(State::default()) }) }
    }

    /// Answers once this member has applied a read index that raft gave
    /// after this call: Ok, or why not (no leader, stopped). Must be called
    /// on a tokio runtime (the rounds run on a task of their own, so a
    /// caller that gives up never stalls the others).
    pub(crate) fn read_point(&self) -> oneshot::Receiver<Result<(), NodeError>> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.inner.state.lock();
            state.queued.push(reply);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(run_rounds(self.inner.clone()));
        }
        answer
    }
}

/// One round per batch of queued reads, until none are queued.
async fn run_rounds(inner: Arc<Inner>) {
    loop {
        let batch = {
            let mut state = inner.state.lock();
            if state.queued.is_empty() {
                state.running = false;
                return;
            }
            std::mem::take(&mut state.queued)
        };
        let outcome = inner.round(&batch).await;
        for reply in batch {
            let _ = reply.send(copy(&outcome));
        }
    }
}

impl Inner {
    /// One read index for `batch`, asked again until answered or until every
    /// reader of the batch has given up.
    async fn round(&self, batch: &[ReadReply]) -> Result<(), NodeError> {
        loop {
            let tag = self.tags.fetch_add(1, Ordering::Relaxed);
            let (reply, answer) = oneshot::channel();
            self.waiters.wait_read(tag, reply);
            if let Err(err) = self.raft.read_index(tag) {
                self.waiters.forget(tag);
                return Err(refused(err));
            }
            match tokio::time::timeout(READ_INDEX_RETRY, answer).await {
                Ok(Ok(outcome)) => return outcome,
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => {
                    self.waiters.forget(tag);
                    if batch.iter().all(ReadReply::is_closed) {
                        return Err(NodeError::Timeout);
                    }
                }
            }
        }
    }
}

/// One round's outcome, for each of its readers.
fn copy(outcome: &Result<(), NodeError>) -> Result<(), NodeError> {
    match outcome {
        Ok(()) => Ok(()),
        Err(NodeError::NoLeader) => Err(NodeError::NoLeader),
        Err(NodeError::Stopped) => Err(NodeError::Stopped),
        Err(NodeError::Timeout) => Err(NodeError::Timeout),
        Err(NodeError::TooManyRequests) => Err(NodeError::TooManyRequests),
        Err(other) => Err(NodeError::Storage(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft_node::{Apply, Entry, MemLogEngine, RaftConfig, RaftLogStore, RaftNode, ReadState};

    /// Counts read-index answers and hands them to the waiters at once (the
    /// single member applies nothing, so every index is "applied").
    struct Answer(Arc<Waiters>, Arc<AtomicU64>);

    impl Apply for Answer {
        fn committed(&mut self, _entries: Vec<Entry>) {}
        fn read_states(&mut self, states: Vec<ReadState>) {
            for state in states {
                self.1.fetch_add(1, Ordering::Relaxed);
                let tag = u64::from_be_bytes(state.request_ctx.as_slice().try_into().unwrap());
                self.0.answer_read(tag, Ok(()));
            }
        }
        fn dropped(&mut self, _tag: u64) {}
    }

    // One runtime thread: the 500 reads all queue before the rounds task runs.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_reads_share_read_index_requests() {
        let waiters = Arc::new(Waiters::default());
        let answered = Arc::new(AtomicU64::new(0));
        let store = RaftLogStore::open(Box::new(MemLogEngine::default()), &[1]).unwrap();
        let raft = RaftNode::start(
            RaftConfig::new(1, vec![1], 0),
            store,
            Box::new(keel_raft_node::NoPeers),
            Box::new(Answer(waiters.clone(), answered.clone())),
        )
        .unwrap();
        while !raft.handle().status().is_leader() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rounds = ReadRounds::new(raft.handle(), waiters, Arc::new(AtomicU64::new(1)));
        // A new leader answers reads once it has committed in its term.
        rounds.read_point().await.unwrap().unwrap();
        let before = answered.load(Ordering::Relaxed);

        let reads: Vec<_> = (0..500).map(|_| rounds.read_point()).collect();
        for read in reads {
            read.await.unwrap().unwrap();
        }
        let requests = answered.load(Ordering::Relaxed) - before;
        assert_eq!(requests, 1, "read-index requests for 500 reads");
        raft.stop();
    }
}
