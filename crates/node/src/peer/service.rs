//! The receiving end of the peer protocol: raft batches from a peer go
//! straight to this member's raft inbox; forwarded calls are answered here.

use std::sync::Arc;

use keel_proto::keelpb::raft_peer_server::RaftPeer;
use keel_proto::keelpb::{
    ClusterInfoAnswer, ClusterInfoRequest, LeaseRenewForward, LeaseRenewed, LeaseTimeToLiveAnswer,
    LeaseTimeToLiveForward, PeerActive, PeerActivityAnswer, PeerActivityRequest, RaftBatch, RaftBatchAck, SnapshotAck,
    SnapshotChunk,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

use super::status_of;
use crate::Member;

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
            if let Err(err) = self.member.receive_raft(batch.cluster_id, batch.messages) {
                tracing::warn!(from = %format!("{:x}", batch.from), %err, "raft traffic refused");
                return Err(status_of(err));
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
            status_of(err)
        })?;
        while let Some(chunk) = chunks.next().await {
            snapshot.push(chunk?.data).map_err(status_of)?;
        }
        let from = snapshot.from();
        self.member.receive_snapshot(snapshot).map_err(|err| {
            tracing::warn!(from = %format!("{from:x}"), %err, "snapshot not taken");
            status_of(err)
        })?;
        Ok(Response::new(SnapshotAck {}))
    }

    async fn cluster_info(&self, _request: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoAnswer>, Status> {
        let (cluster_id, members) = self.member.cluster_info().map_err(status_of)?;
        Ok(Response::new(ClusterInfoAnswer { cluster_id, members }))
    }

    async fn peer_activity(
        &self,
        request: Request<PeerActivityRequest>,
    ) -> Result<Response<PeerActivityAnswer>, Status> {
        let active = self.member.peer_activity_here(request.into_inner().cluster_id).map_err(status_of)?;
        let active = active
            .into_iter()
            .map(|(id, for_)| PeerActive { id, active_for_ms: u64::try_from(for_.as_millis()).unwrap_or(u64::MAX) })
            .collect();
        Ok(Response::new(PeerActivityAnswer { active }))
    }

    async fn lease_renew(&self, request: Request<LeaseRenewForward>) -> Result<Response<LeaseRenewed>, Status> {
        let request = request.into_inner();
        let ttl = self.member.lease_renew_here(request.cluster_id, request.id).await.map_err(status_of)?;
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
            .await
            .map_err(status_of)?;
        Ok(Response::new(LeaseTimeToLiveAnswer { ttl: answer.ttl, granted_ttl: answer.granted_ttl, keys: answer.keys }))
    }
}
