//! The receiving end of the raft transport: batches from a peer go straight
//! to this member's raft inbox.

use std::sync::Arc;

use keel_node::{Member, NodeError};
use keel_proto::keelpb::raft_peer_server::RaftPeer;
use keel_proto::keelpb::{RaftBatch, RaftBatchAck};
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
}
