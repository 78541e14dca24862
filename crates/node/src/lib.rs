//! The member core: client requests become raft proposals, committed entries
//! are applied to the MVCC store, and each waiting client gets its answer.
//!
//! It owns the ordering guarantees: a write is acknowledged only after its
//! entry is durable in the raft log and applied; a linearizable read waits for
//! a raft read index to be applied before it touches the store.

mod alarms;
mod applier;
pub mod auth;
pub mod compactor;
mod config;
mod history;
pub mod import;
mod lease_clock;
mod lease_expiry;
mod member;
pub mod metrics;
pub mod peer;
mod proposals;
mod quota;
mod read_rounds;
mod snapshots;
mod v2keys;

pub use config::{
    ClusterState, MemberConfig, CLUSTER_VERSION, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
    DEFAULT_SNAPSHOT_COUNT, ETCD_VERSION,
};
/// etcd's member and cluster ids (kept with the store's identity).
pub use keel_mvcc::ids;
pub use keel_raft_node::{Clock, SystemClock, TokioClock};
pub use member::{Member, MemberStatus, MemberStepper, Offload, Parts, RaftPosition};
pub use peer::{GrpcNetwork, Network, NoNetwork, PeerHash, PeerLinks, PeerService, SnapshotReceipt};
pub use quota::MAX_QUOTA_BYTES;
pub use snapshots::{DirSpool, MemSpool, SnapshotShelf, SnapshotSpool, SpoolWriter};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Mvcc(keel_mvcc::MvccError),
    #[error(transparent)]
    Raft(keel_raft_node::RaftNodeError),
    #[error(transparent)]
    Lease(keel_lease_manager::LeaseError),
    #[error(transparent)]
    Auth(keel_auth::AuthError),
    #[error("no leader")]
    NoLeader,
    /// This member is not (or not yet) the one that can answer.
    #[error("not leader")]
    NotLeader,
    #[error("member not found")]
    MemberNotFound,
    /// A raft message from a member that was removed from the cluster.
    #[error("the member has been permanently removed from the cluster")]
    MemberRemoved,
    /// A raft message for another member, or from one that is not a
    /// member: refused (nobody outside the cluster may speak raft to it).
    #[error("raft message from {from:x} to {to:x} refused: not between members of this cluster")]
    NotAPeer { from: u64, to: u64 },
    /// A snapshot from a leader of an earlier term.
    #[error("snapshot of term {theirs} refused: this member is at term {ours}")]
    StaleSnapshot { theirs: u64, ours: u64 },
    #[error("peer URLs already exist")]
    PeerUrlExists,
    #[error("given member URLs are invalid")]
    BadPeerUrls,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// --strict-reconfig-check: the change would leave fewer started
    /// members than a quorum.
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// --strict-reconfig-check: the leader has not been in touch with
    /// enough members for long enough to risk a change.
    #[error("unhealthy cluster")]
    Unhealthy,
    #[error("can only promote a learner member")]
    MemberNotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    #[error("leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("request timed out")]
    Timeout,
    #[error("request is too large")]
    RequestTooLarge,
    /// The applier lags the committed log too far to take more proposals.
    #[error("too many requests")]
    TooManyRequests,
    #[error("member is stopping")]
    Stopped,
    #[error("configuration: {0}")]
    Config(String),
    #[error("member from cluster {theirs:x} refused: this is cluster {ours:x}")]
    ClusterMismatch { ours: u64, theirs: u64 },
    #[error("storage: {0}")]
    Storage(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The NOSPACE alarm is raised: writes that grow the store are refused.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is raised: the cluster serves no data.
    #[error("corrupt cluster")]
    CorruptCluster,
}
