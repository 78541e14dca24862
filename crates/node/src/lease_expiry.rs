//! The leader's lease clock at work: every tick it keeps the lease
//! manager's role in step with raft (see `lease_clock`), proposes a revoke
//! for every lease whose deadline has passed, and checkpoints long leases'
//! remaining TTLs. The revoke, applied through raft, deletes the lease's keys
//! on every member at one revision.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_lease_manager::Lessor;
use keel_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest};
use keel_proto::keelpb::{internal_raft_request::Request, InternalRaftRequest, LeaseExpiry as ExpiredLeases};
use keel_raft_node::RaftHandle;
use parking_lot::Mutex;
use prost::Message as _;

use crate::lease_clock::LeaseClock;
use crate::NodeError;

/// How often the leader looks for expired leases (etcd: every 500 ms; the
/// shorter period keeps an expiry within a tenth of a second of its TTL).
pub(crate) const LEASE_TICK: Duration = Duration::from_millis(100);
/// Leases revoked per tick at most, in one raft entry (etcd: 1000 per
/// second, one entry each).
const EXPIRY_BATCH: usize = 100;

pub(crate) struct LeaseExpiry {
    pub(crate) lessor: Arc<Mutex<Lessor>>,
    pub(crate) clock: Arc<LeaseClock>,
    pub(crate) raft: RaftHandle,
}

impl LeaseExpiry {
    /// One look at the deadlines; proposals that raft refuses (no leader,
    /// busy) are made again next tick, since the leases are still due.
    pub(crate) fn tick(&self) {
        let now = self.clock.now();
        let (expired, checkpoints) = {
            let mut lessor = self.lessor.lock();
            self.clock.align(&mut lessor);
            (lessor.expired(now, EXPIRY_BATCH), lessor.checkpoints_due(now, keel_lease_manager::MAX_CHECKPOINT_BATCH))
        };
        if !checkpoints.is_empty() {
            let checkpoints =
                checkpoints.into_iter().map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl }).collect();
            let request = InternalRaftRequest {
                id: 0,
                auth: None,
                request: Some(Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })),
            };
            let _ = self.raft.propose(0, request.encode_to_vec());
        }
        if !expired.is_empty() {
            // One entry for every lease that expired this tick; tag 0: no
            // client waits for an expiry.
            let request = InternalRaftRequest {
                id: 0,
                auth: None,
                request: Some(Request::LeaseExpiry(ExpiredLeases { ids: expired })),
            };
            let _ = self.raft.propose(0, request.encode_to_vec());
        }
    }

    /// Runs `tick` every [`LEASE_TICK`] on a thread of its own until `stop`.
    pub(crate) fn spawn(self, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>, NodeError> {
        std::thread::Builder::new()
            .name("lease-expiry".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(LEASE_TICK);
                    self.tick();
                }
            })
            .map_err(|e| NodeError::Storage(format!("cannot start lease expiry thread: {e}")))
    }
}
