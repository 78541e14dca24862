//! The receiving end of the peer protocol: raft batches from a peer go
//! straight to this member's raft inbox; forwarded calls are answered here.

use std::sync::Arc;

use keel_proto::keelpb::raft_peer_server::RaftPeer;
use keel_proto::keelpb::{
    ClusterInfoAnswer, ClusterInfoRequest, LeaseRenewForward, LeaseRenewed, LeaseTimeToLiveAnswer,
    LeaseTimeToLiveForward, PeerActive, PeerActivityAnswer, PeerActivityRequest, ProbeAnswer, ProbeRequest, RaftBatch,
    RaftBatchAck, SnapshotAck, SnapshotChunk,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

use super::status_of;
use crate::Member;

/// Snapshot chunks read off the stream ahead of the spool, at most.
const SPOOL_AHEAD: usize = 4;

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
        let peer = &self.member.metrics().peer;
        // The sender's byte counter, resolved once per stream, and only once
        // its batch was taken: a stranger's claimed id never becomes a label.
        let mut received: Option<(u64, keel_metrics::prometheus::IntCounter)> = None;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let from = batch.from;
            let bytes = batch.messages.iter().map(|message| message.len() as u64).sum();
            if let Err(err) = self.member.receive_raft(batch.cluster_id, batch.messages) {
                peer.receive_failed(self.member.is_current_member(from).then_some(from));
                tracing::warn!(from = %format!("{from:x}"), %err, "raft traffic refused");
                return Err(status_of(err));
            }
            match &received {
                Some((sender, counter)) if *sender == from => counter.inc_by(bytes),
                _ => {
                    let counter = peer.received_from(from);
                    counter.inc_by(bytes);
                    received = Some((from, counter));
                }
            }
        }
        Ok(Response::new(RaftBatchAck {}))
    }

    async fn send_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<SnapshotAck>, Status> {
        let mut chunks = request.into_inner();
        let first =
            chunks.next().await.ok_or_else(|| Status::new(Code::InvalidArgument, "empty snapshot stream"))??;
        // etcd's label for a sender not (yet) known to be a member.
        let sender = self.member.is_current_member(first.from).then_some(first.from);
        let receiving = crate::metrics::SnapshotReceiving::start(&self.member.metrics().peer, sender);
        // The spool writes to disk: a blocking thread takes the chunks in
        // while this task reads them off the stream, a few ahead at most.
        let member = self.member.clone();
        let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(SPOOL_AHEAD);
        let spooling = tokio::task::spawn_blocking(move || {
            let mut receipt = member.snapshot_receipt(first)?;
            while let Some(chunk) = chunks_rx.blocking_recv() {
                receipt.push(chunk)?;
            }
            let from = receipt.from();
            member.receive_snapshot(receipt).map_err(|err| {
                tracing::warn!(from = %format!("{from:x}"), %err, "snapshot not taken");
                err
            })
        });
        while let Some(chunk) = chunks.next().await {
            if chunks_tx.send(chunk?).await.is_err() {
                // The spool gave up; its error is the answer.
                break;
            }
        }
        drop(chunks_tx);
        match spooling.await {
            Ok(Ok(())) => {
                self.member.metrics().peer.snap_db_save_seconds.observe(receiving.elapsed().as_secs_f64());
                receiving.succeeded();
                Ok(Response::new(SnapshotAck {}))
            }
            Ok(Err(err)) => {
                tracing::error!(%err, "snapshot refused");
                Err(status_of(err))
            }
            Err(err) => Err(Status::new(Code::Internal, format!("snapshot spool: {err}"))),
        }
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeAnswer>, Status> {
        Ok(Response::new(ProbeAnswer {}))
    }

    async fn hash_kv(
        &self,
        request: Request<keel_proto::keelpb::PeerHashKvRequest>,
    ) -> Result<Response<keel_proto::keelpb::PeerHashKvAnswer>, Status> {
        let request = request.into_inner();
        self.member.check_cluster(request.cluster_id).map_err(status_of)?;
        let hash = self.member.hash_kv(request.revision).await.map_err(status_of)?;
        Ok(Response::new(keel_proto::keelpb::PeerHashKvAnswer {
            member_id: self.member.member_id(),
            revision: hash.current_revision,
            compact_revision: hash.compact_revision,
            hash: hash.hash,
        }))
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
