//! The peer protocol: how members talk to each other, both sides.
//!
//! A member reaches its peers through a [`Network`]: the gRPC one
//! (`keelpb.RaftPeer` on the peer URLs: [`transport`] streams raft messages
//! and [`snapshot`]s out, [`calls`] makes the unary calls, [`service`]
//! answers them) or the in-process one ([`local`]) that tests and the
//! simulation use. Errors cross the wire through one mapping,
//! [`status_of`] and [`error_of`].

mod calls;
pub mod local;
mod service;
pub(crate) mod snapshot;
mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use keel_lease_manager::{LeaseError, TimeToLive};
use keel_proto::etcdserverpb::Member as EtcdMember;
use keel_raft_node::{NoPeers, Transport};

pub use service::PeerService;
pub use snapshot::SnapshotReceipt;

use crate::metrics::PeerMetrics;
use crate::snapshots::SnapshotShelf;
use crate::NodeError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a member needs from the network between members.
pub trait Network: Send + Sync + 'static {
    /// Asks the members at `urls` which cluster they form and who is in it,
    /// for a member joining a running cluster. Blocking.
    fn cluster_info(&self, urls: &[String]) -> Result<(u64, Vec<EtcdMember>), NodeError>;

    /// This member's links to its peers, once it knows who it is; the
    /// snapshots it sends are read from `shelf`.
    /// Traffic is counted in `metrics`.
    fn links(
        &self,
        cluster_id: u64,
        member_id: u64,
        shelf: Arc<SnapshotShelf>,
        metrics: PeerMetrics,
    ) -> Arc<dyn PeerLinks>;
}

/// One member's links to the others: raft's outgoing messages, and the
/// calls it makes to the leader. Peers are added and removed as
/// configuration changes are applied.
pub trait PeerLinks: Send + Sync + 'static {
    /// The raft loop's side: must never wait on the network.
    fn transport(&self) -> Box<dyn Transport>;
    /// Starts talking to `peer` at `url` (or moves it to a new URL).
    fn add(&self, peer: u64, url: &str);
    /// Stops talking to `peer` (removed from the cluster).
    fn remove(&self, peer: u64);
    /// Stops talking to every peer not in `members`.
    fn retain(&self, members: &[u64]);
    /// A keep-alive, answered by the leader's lease manager.
    fn lease_renew(&self, leader: u64, id: i64) -> BoxFuture<'_, Result<i64, NodeError>>;
    fn lease_time_to_live(&self, leader: u64, id: i64, keys: bool) -> BoxFuture<'_, Result<TimeToLive, NodeError>>;
    /// The leader's view of how long each member has been in touch.
    fn peer_activity(&self, leader: u64) -> BoxFuture<'_, Result<Vec<(u64, Duration)>, NodeError>>;
    /// `peer`'s HashKV at `revision`, for the corruption checks. Networks
    /// without it answer that the peer cannot be asked.
    fn hash_kv(&self, peer: u64, revision: i64) -> BoxFuture<'_, Result<PeerHash, NodeError>> {
        let _ = (peer, revision);
        Box::pin(async { Err(NodeError::Storage("peer hashes are not available on this network".into())) })
    }
}

/// The gRPC network, on the tokio runtime it was made on.
pub struct GrpcNetwork {
    runtime: tokio::runtime::Handle,
    connector: keel_tls::Connector,
}

impl GrpcNetwork {
    /// Peers reached at `http://` URLs only.
    pub fn new(runtime: tokio::runtime::Handle) -> GrpcNetwork {
        GrpcNetwork { runtime, connector: keel_tls::Connector::new(None) }
    }

    /// Peers reached with `tls` at `https://` URLs (and plainly at
    /// `http://` ones): etcd's --peer-trusted-ca-file and peer certificate.
    pub fn with_tls(runtime: tokio::runtime::Handle, tls: keel_tls::ClientTls) -> GrpcNetwork {
        GrpcNetwork { runtime, connector: keel_tls::Connector::new(Some(tls)) }
    }
}

impl Network for GrpcNetwork {
    fn cluster_info(&self, urls: &[String]) -> Result<(u64, Vec<EtcdMember>), NodeError> {
        self.runtime.block_on(calls::fetch_cluster_info(urls, self.connector.clone()))
    }

    fn links(
        &self,
        cluster_id: u64,
        member_id: u64,
        shelf: Arc<SnapshotShelf>,
        metrics: PeerMetrics,
    ) -> Arc<dyn PeerLinks> {
        let peers = transport::PeerSet::new(
            self.runtime.clone(),
            cluster_id,
            member_id,
            shelf,
            self.connector.clone(),
            metrics,
        );
        let clients = calls::PeerClients::new(cluster_id, peers.clone());
        Arc::new(GrpcLinks { peers, clients })
    }
}

struct GrpcLinks {
    peers: transport::PeerSet,
    clients: calls::PeerClients,
}

impl PeerLinks for GrpcLinks {
    fn transport(&self) -> Box<dyn Transport> {
        Box::new(transport::GrpcTransport::new(self.peers.clone()))
    }
    fn add(&self, peer: u64, url: &str) {
        self.peers.add(peer, url);
    }
    fn remove(&self, peer: u64) {
        self.peers.remove(peer);
    }
    fn retain(&self, members: &[u64]) {
        self.peers.retain(members);
    }
    fn lease_renew(&self, leader: u64, id: i64) -> BoxFuture<'_, Result<i64, NodeError>> {
        Box::pin(self.clients.renew(leader, id))
    }
    fn lease_time_to_live(&self, leader: u64, id: i64, keys: bool) -> BoxFuture<'_, Result<TimeToLive, NodeError>> {
        Box::pin(self.clients.time_to_live(leader, id, keys))
    }
    fn peer_activity(&self, leader: u64) -> BoxFuture<'_, Result<Vec<(u64, Duration)>, NodeError>> {
        Box::pin(self.clients.peer_activity(leader))
    }
    fn hash_kv(&self, peer: u64, revision: i64) -> BoxFuture<'_, Result<PeerHash, NodeError>> {
        Box::pin(self.clients.hash_kv(peer, revision))
    }
}

/// A member's HashKV as a peer answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHash {
    pub member_id: u64,
    /// The peer's store revision when it hashed.
    pub revision: i64,
    pub compact_revision: i64,
    pub hash: u32,
}

/// No network: a member alone, off any async runtime (tools, tests).
pub struct NoNetwork;

impl Network for NoNetwork {
    fn cluster_info(&self, _urls: &[String]) -> Result<(u64, Vec<EtcdMember>), NodeError> {
        Err(NodeError::Config("joining a cluster needs a tokio runtime".into()))
    }
    fn links(&self, _: u64, _: u64, _: Arc<SnapshotShelf>, _: PeerMetrics) -> Arc<dyn PeerLinks> {
        Arc::new(NoNetwork)
    }
}

impl PeerLinks for NoNetwork {
    fn transport(&self) -> Box<dyn Transport> {
        Box::new(NoPeers)
    }
    fn add(&self, peer: u64, _url: &str) {
        tracing::warn!(peer = %format!("{peer:x}"), "a member without a network cannot reach a peer");
    }
    fn remove(&self, _peer: u64) {}
    fn retain(&self, _members: &[u64]) {}
    fn lease_renew(&self, _leader: u64, _id: i64) -> BoxFuture<'_, Result<i64, NodeError>> {
        Box::pin(async { Err(NodeError::NotLeader) })
    }
    fn lease_time_to_live(&self, _leader: u64, _id: i64, _keys: bool) -> BoxFuture<'_, Result<TimeToLive, NodeError>> {
        Box::pin(async { Err(NodeError::NotLeader) })
    }
    fn peer_activity(&self, _leader: u64) -> BoxFuture<'_, Result<Vec<(u64, Duration)>, NodeError>> {
        Box::pin(async { Err(NodeError::NotLeader) })
    }
}

/// The code a peer answers with when it refuses a member of another
/// cluster: the sender stops retrying and says so.
pub(crate) const REFUSED: tonic::Code = tonic::Code::PermissionDenied;
/// The code a peer answers a removed member's raft messages with (etcd's
/// HTTP 410 Gone): the sender stops.
pub(crate) const GONE: tonic::Code = tonic::Code::Aborted;

/// Raft messages travel in batches of about this many bytes at most (one
/// larger message travels alone).
pub const PEER_BATCH_BYTES: usize = 4 << 20;

/// The largest peer message a member decodes: a batch, or one message
/// carrying an entry as large as a client request may be, or a snapshot
/// chunk. Anything larger is refused before it is read into memory.
pub fn max_peer_message_bytes(max_request_bytes: usize) -> usize {
    PEER_BATCH_BYTES + 2 * max_request_bytes + (1 << 20)
}

/// `messages` (encoded) cut into batches of at most [`PEER_BATCH_BYTES`],
/// in order.
pub(crate) fn batches(messages: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut batches = vec![Vec::new()];
    let mut bytes = 0;
    for message in messages {
        let last = batches.last_mut().expect("one batch at least");
        if !last.is_empty() && bytes + message.len() > PEER_BATCH_BYTES {
            bytes = 0;
            batches.push(Vec::new());
        }
        bytes += message.len();
        batches.last_mut().expect("one batch at least").push(message);
    }
    batches
}

/// A member's error as its peer hears it. The receiving side ([`error_of`])
/// tells answers (an unknown lease), redirections (not the leader) and
/// refusals apart from failures worth a retry.
pub(crate) fn status_of(err: NodeError) -> tonic::Status {
    use tonic::{Code, Status};
    match err {
        NodeError::Lease(LeaseError::NotFound | LeaseError::Expired) => Status::new(Code::NotFound, err.to_string()),
        NodeError::Lease(LeaseError::NotPrimary) | NodeError::NotLeader => {
            Status::new(Code::FailedPrecondition, "not leader")
        }
        err @ (NodeError::ClusterMismatch { .. } | NodeError::NotAPeer { .. } | NodeError::StaleSnapshot { .. }) => {
            Status::new(REFUSED, err.to_string())
        }
        err @ NodeError::MemberRemoved => Status::new(GONE, err.to_string()),
        err @ NodeError::Corrupt(_) => Status::new(Code::InvalidArgument, err.to_string()),
        err => Status::new(Code::Unavailable, err.to_string()),
    }
}

/// A peer's answer, back in the member's terms (see [`status_of`]).
pub(crate) fn error_of(status: tonic::Status) -> NodeError {
    match status.code() {
        tonic::Code::NotFound => NodeError::Lease(LeaseError::NotFound),
        tonic::Code::FailedPrecondition => NodeError::NotLeader,
        GONE => NodeError::MemberRemoved,
        _ => NodeError::Storage(format!("peer answered {:?}: {}", status.code(), status.message())),
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_stay_under_the_limit_and_keep_order() {
        let message = |n: u8, len: usize| vec![n; len];
        let cut = batches(vec![message(1, 3 << 20), message(2, 2 << 20), message(3, 5 << 20), message(4, 10)]);
        let lens: Vec<Vec<u8>> = cut.iter().map(|b| b.iter().map(|m| m[0]).collect()).collect();
        assert_eq!(lens, vec![vec![1], vec![2], vec![3], vec![4]]);
        let small = batches((0..10).map(|n| message(n, 100)).collect());
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].len(), 10);
        for batch in &cut {
            let bytes: usize = batch.iter().map(Vec::len).sum();
            assert!(batch.len() == 1 || bytes <= PEER_BATCH_BYTES);
        }
    }
}
