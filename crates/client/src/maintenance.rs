//! Maintenance calls.

use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::Streaming;

use crate::client::{Deadline, Retry};
use crate::{Client, ClientError};

impl Client {
    /// Status of the member calls currently go to (see
    /// `Client::current_endpoint`): version, leader, raft indices, db size.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            MaintenanceClient::new(channel).status(StatusRequest {}).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Lists (`action` Get), raises or clears alarms; `member_id` 0 and
    /// `alarm` None mean all.
    pub async fn alarm(&self, request: AlarmRequest) -> Result<AlarmResponse, ClientError> {
        // Raising or clearing twice has the effect of doing it once.
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            MaintenanceClient::new(channel).alarm(request).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Defragments the backend of the member calls currently go to.
    pub async fn defragment(&self) -> Result<DefragmentResponse, ClientError> {
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            MaintenanceClient::new(channel).defragment(DefragmentRequest {}).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// The hash of the current member's MVCC history up to `revision` (0: all).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, ClientError> {
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            MaintenanceClient::new(channel).hash_kv(HashKvRequest { revision }).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Asks the current member, which must be the leader, to hand
    /// leadership to member `target_id`.
    pub async fn move_leader(&self, target_id: u64) -> Result<MoveLeaderResponse, ClientError> {
        self.call(Retry::IfNotSent, Deadline::Request, |channel| async move {
            MaintenanceClient::new(channel)
                .move_leader(MoveLeaderRequest { target_id })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Opens a stream of the current member's backend, in chunks; the
    /// caller reads it to the end (no deadline: it may be large).
    pub async fn snapshot(&self) -> Result<SnapshotStream, ClientError> {
        let max = self.max_decoding();
        let inner = self
            .call(Retry::Always, Deadline::None, |channel| async move {
                MaintenanceClient::new(channel)
                    .max_decoding_message_size(max)
                    .snapshot(SnapshotRequest {})
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(SnapshotStream { inner })
    }
}

/// The chunks of a backend snapshot, in order; see [`Client::snapshot`].
pub struct SnapshotStream {
    inner: Streaming<SnapshotResponse>,
}

impl SnapshotStream {
    /// The next chunk, or `None` once the server has sent the whole file.
    pub async fn next_chunk(&mut self) -> Result<Option<SnapshotResponse>, ClientError> {
        Ok(self.inner.message().await?)
    }
}
