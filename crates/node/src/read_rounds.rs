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

    /// Returns once this member has applied a read index that raft gave
    /// after this call: Ok, or why not (no leader, stopped). Must be called
    /// on a tokio runtime.
    ///
    /// The read that finds no round running runs the next one itself, on
    /// its own task: a lone reader's answer then wakes it directly, with no
    /// task in between. Reads that queued meanwhile get a round of their
    /// own on a task, so no reader waits for another's round; and if the
    /// running reader gives up (its future dropped), the round's readers
    /// go on with a task, so a caller that gives up never stalls the others.
    pub(crate) async fn read_point(&self) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        let run = {
            let mut state = self.inner.state.lock();
            state.queued.push(reply);
            !std::mem::replace(&mut state.running, true)
        };
        if run {
            Round { inner: self.inner.clone(), batch: Vec::new(), finished: false }.run().await;
        }
        answer.await.unwrap_or(Err(NodeError::Stopped))
    }
}

/// One round run by a reader, for the reads queued when it starts.
struct Round {
    inner: Arc<Inner>,
    batch: Vec<ReadReply>,
    finished: bool,
}

impl Round {
    async fn run(mut self) {
        self.batch = std::mem::take(&mut self.inner.state.lock().queued);
        let outcome = self.inner.round(&self.batch).await;
        for reply in self.batch.drain(..) {
            let _ = reply.send(copy(&outcome));
        }
        self.finished = true;
        let more = {
            let mut state = self.inner.state.lock();
            state.running = !state.queued.is_empty();
            state.running
        };
        if more {
            tokio::spawn(run_rounds(self.inner.clone()));
        }
    }
}

impl Drop for Round {
    /// The reader gave up during its round: the round's readers wait for
    /// the next one, which a task runs.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.inner.state.lock();
        let queued = std::mem::take(&mut state.queued);
        state.queued = std::mem::take(&mut self.batch);
        state.queued.extend(queued);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run_rounds(self.inner.clone()));
            }
            // The runtime is going away: nobody is left to wait.
            Err(_) => {
                state.queued.clear();
                state.running = false;
            }
        }
    }
}

/// Rounds on a task of their own, one per batch of queued reads, until none
/// are queued.
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
            // Forgotten however the wait ends, the round dropped included.
            let _waiting = ForgetRead { waiters: &self.waiters, tag };
            if let Err(err) = self.raft.read_index(tag) {
                return Err(refused(err));
            }
            match tokio::time::timeout(READ_INDEX_RETRY, answer).await {
                Ok(Ok(outcome)) => return outcome,
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => {
                    if batch.iter().all(ReadReply::is_closed) {
                        return Err(NodeError::Timeout);
                    }
                }
            }
        }
    }
}

/// Forgets the read waiting under `tag` when dropped.
struct ForgetRead<'a> {
    waiters: &'a Waiters,
    tag: u64,
}

impl Drop for ForgetRead<'_> {
    fn drop(&mut self) {
        self.waiters.forget_read(self.tag);
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

    /// A member of one with the raft thread running; `apply` gets what it commits and reads.
    async fn leader(apply: Box<dyn Apply>) -> RaftNode {
        let store = RaftLogStore::open(Box::new(MemLogEngine::default()), &[1]).unwrap();
        let raft =
            RaftNode::start(RaftConfig::new(1, vec![1], 0), store, Box::new(keel_raft_node::NoPeers), apply).unwrap();
        // raft-rs drops read requests until the leader has committed in its term.
        while !raft.handle().status().is_leader() || raft.handle().status().commit_index() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        raft
    }

    /// Holds read-index answers until the test releases them.
    struct Held(Arc<Mutex<Vec<u64>>>);

    impl Apply for Held {
        fn committed(&mut self, _entries: Vec<Entry>) {}
        fn read_states(&mut self, states: Vec<ReadState>) {
            for state in states {
                self.0.lock().push(u64::from_be_bytes(state.request_ctx.as_slice().try_into().unwrap()));
            }
        }
        fn dropped(&mut self, _tag: u64) {}
    }

    /// Answers the read-index requests raft holds, waiting for one to come.
    async fn release(waiters: &Waiters, held: &Mutex<Vec<u64>>) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no read-index request was made");
            let tags = std::mem::take(&mut *held.lock());
            if !tags.is_empty() {
                let n = tags.len();
                waiters.release_reads(tags);
                return n;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    // One runtime thread: the first read runs a round for itself; the other
    // 499 queue meanwhile and share the next.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_reads_share_read_index_requests() {
        let waiters = Arc::new(Waiters::default());
        let held = Arc::new(Mutex::new(Vec::new()));
        let raft = leader(Box::new(Held(held.clone()))).await;
        let rounds = Arc::new(ReadRounds::new(raft.handle(), waiters.clone(), Arc::new(AtomicU64::new(1))));
        let reads: Vec<_> = (0..500)
            .map(|_| {
                let rounds = rounds.clone();
                tokio::spawn(async move { rounds.read_point().await })
            })
            .collect();
        let mut requests = 0;
        while !reads.iter().all(tokio::task::JoinHandle::is_finished) {
            requests += release(&waiters, &held).await;
            // The answered readers run; the next round is asked for.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for read in reads {
            read.await.unwrap().unwrap();
        }
        assert_eq!(requests, 2, "read-index requests for 500 reads");
        raft.stop();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_that_gives_up_during_its_round_leaves_the_others_a_round() {
        let waiters = Arc::new(Waiters::default());
        let held = Arc::new(Mutex::new(Vec::new()));
        let raft = leader(Box::new(Held(held.clone()))).await;
        let rounds = Arc::new(ReadRounds::new(raft.handle(), waiters.clone(), Arc::new(AtomicU64::new(1))));
        let first = tokio::spawn({
            let rounds = rounds.clone();
            async move { rounds.read_point().await }
        });
        // The first reader runs its round and waits for the answer;
        // the second queues behind it.
        while held.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let second = tokio::spawn({
            let rounds = rounds.clone();
            async move { rounds.read_point().await }
        });
        tokio::task::yield_now().await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        // The abandoned round's answer finds nobody waiting; the second
        // reader's own round, run by a task, answers it.
        assert_eq!(release(&waiters, &held).await, 1);
        assert_eq!(release(&waiters, &held).await, 1);
        second.await.unwrap().unwrap();
        assert_eq!(waiters.pending_reads(), 0, "no waiter left behind");
        raft.stop();
    }
}
