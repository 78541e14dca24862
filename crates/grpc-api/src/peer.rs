//! The receiving end of the raft transport: batches from a peer go straight
//! to this member's raft inbox.

use std::sync::Arc;

use keel_lease_manager::LeaseError;
use keel_node::{Member, NodeError};
use keel_proto::keelpb::raft_peer_server::RaftPeer;
use keel_proto::keelpb::{
    ClusterInfoAnswer, ClusterInfoRequest, LeaseRenewForward, LeaseRenewed, LeaseTimeToLiveAnswer,
    LeaseTimeToLiveForward, PeerActive, PeerActivityAnswer, PeerActivityRequest, RaftBatch, RaftBatchAck, SnapshotAck,
    SnapshotChunk,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

pub struct PeerService {
    member: Arc<Member>,
}

impl PeerService {
    pub fn new(member: Arc<Member>) -> Self {
        PeerService { member }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftBatchAck>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            match self.member.receive_raft(batch.cluster_id, batch.messages) {
                Ok(()) => {}
                Err(err @ NodeError::ClusterMismatch { .. }) => {
                    tracing::error!(from = %format!("{:x}", batch.from), %err, "raft traffic refused");
                    return Err(Status::new(Code::FailedPrecondition, err.to_string()));
                }
                Err(err) => return Err(Status::new(Code::Unavailable, err.to_string())),
            }
        }
        Ok(Response::new(RaftBatchAck {}))
    }

    async fn send_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<SnapshotAck>, Status> {
        let mut chunks = request.into_inner();
        let first =
            chunks.next().await.ok_or_else(|| Status::new(Code::InvalidArgument, "empty snapshot stream"))??;
        let mut snapshot = self.member.snapshot_assembly(first).map_err(|err| {
            tracing::error!(%err, "snapshot refused");
            match err {
                NodeError::ClusterMismatch { .. } => Status::new(Code::FailedPrecondition, err.to_string()),
                err => Status::new(Code::InvalidArgument, err.to_string()),
            }
        })?;
        while let Some(chunk) = chunks.next().await {
            snapshot.push(chunk?.data).map_err(|err| Status::new(Code::InvalidArgument, err.to_string()))?;
        }
        let from = snapshot.from();
        self.member.receive_snapshot(snapshot).map_err(|err| {
            tracing::warn!(from = %format!("{from:x}"), %err, "snapshot not taken");
            Status::new(Code::Unavailable, err.to_string())
        })?;
        Ok(Response::new(SnapshotAck {}))
    }

    async fn cluster_info(&self, _request: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoAnswer>, Status> {
        let (cluster_id, members) =
            self.member.cluster_info().map_err(|err| Status::new(Code::Unavailable, err.to_string()))?;
        Ok(Response::new(ClusterInfoAnswer { cluster_id, members }))
    }

    async fn peer_activity(
        &self,
        request: Request<PeerActivityRequest>,
    ) -> Result<Response<PeerActivityAnswer>, Status> {
        let active = self.member.peer_activity_here(request.into_inner().cluster_id).map_err(|err| match err {
            NodeError::NotLeader => Status::new(Code::FailedPrecondition, err.to_string()),
            other => Status::new(Code::Unavailable, other.to_string()),
        })?;
        let active = active
            .into_iter()
            .map(|(id, for_)| PeerActive { id, active_for_ms: u64::try_from(for_.as_millis()).unwrap_or(u64::MAX) })
            .collect();
        Ok(Response::new(PeerActivityAnswer { active }))
    }

    async fn lease_renew(&self, request: Request<LeaseRenewForward>) -> Result<Response<LeaseRenewed>, Status> {
        let request = request.into_inner();
        let ttl = self.member.lease_renew_here(request.cluster_id, request.id).await.map_err(forwarded_lease_error)?;
        Ok(Response::new(LeaseRenewed { ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveForward>,
    ) -> Result<Response<LeaseTimeToLiveAnswer>, Status> {
        let request = request.into_inner();
        let answer = self
            .member
            .lease_time_to_live_here(request.cluster_id, request.id, request.keys)
            .map_err(forwarded_lease_error)?;
        Ok(Response::new(LeaseTimeToLiveAnswer { ttl: answer.ttl, granted_ttl: answer.granted_ttl, keys: answer.keys }))
    }
}

/// The answers a forwarding member understands (see `keelpb.RaftPeer`).
fn forwarded_lease_error(err: NodeError) -> Status {
    match err {
        NodeError::Lease(LeaseError::NotFound | LeaseError::Expired) => Status::new(Code::NotFound, err.to_string()),
        NodeError::Lease(LeaseError::NotPrimary) => {
            Status::new(Code::FailedPrecondition, "lease manager is not primary")
        }
        err @ NodeError::ClusterMismatch { .. } => Status::new(Code::PermissionDenied, err.to_string()),
        err => Status::new(Code::Unavailable, err.to_string()),
    }
}
