//! The Maintenance service. Status is what `etcdctl endpoint status` reads;
//! MoveLeader is `etcdctl move-leader`; HashKV is `etcdctl endpoint hashkv`;
//! Snapshot streams the store as etcd's snapshot file (`etcdctl snapshot
//! save`); Defragment never stops the member from serving; Downgrade
//! refuses as etcd refuses a target it cannot go to.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

/// What Maintenance.Snapshot answers with (the default stubs' boxed stream).
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use keel_node::{Member, ETCD_VERSION};
use keel_proto::etcdserverpb::alarm_request::AlarmAction;
use keel_proto::etcdserverpb::downgrade_request::DowngradeAction;
use keel_proto::etcdserverpb::maintenance_server::Maintenance;
use keel_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};

use crate::errors::{
    node_error, status, INVALID_DOWNGRADE_TARGET, NO_INFLIGHT_DOWNGRADE, WRONG_DOWNGRADE_VERSION_FORMAT,
};
use crate::identity::{caller, require_admin, require_user};
use tonic::{Request, Response, Status};

/// Bytes of the database per Snapshot message (etcd's snapshotSendBufferSize).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Snapshot messages read ahead of a slow client; with the chunk size, what
/// a stream holds in memory.
const SNAPSHOT_BUFFER: usize = 4;
/// Snapshots streamed at once by one member; more wait their turn.
const MAX_SNAPSHOTS: usize = 2;

pub struct MaintenanceService {
    member: Arc<Member>,
    /// Snapshots streaming at once: each holds a file the size of the store
    /// and a blocking thread while its client reads.
    snapshots: Arc<tokio::sync::Semaphore>,
    /// Reported in every Status answer, as etcd reports its alarms there.
    status_errors: Vec<String>,
}

impl MaintenanceService {
    pub fn new(member: Arc<Member>, status_errors: Vec<String>) -> Self {
        MaintenanceService { member, status_errors, snapshots: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOTS)) }
    }
}

impl MaintenanceService {
    /// etcd lists each active alarm among Status's errors, in the protobuf
    /// text form its Go types print (`memberID:<id> alarm:NOSPACE `).
    fn alarm_errors(&self) -> Vec<String> {
        self.member
            .alarms()
            .iter()
            .map(|alarm| {
                let kind = keel_proto::etcdserverpb::AlarmType::try_from(alarm.alarm)
                    .map_or_else(|_| alarm.alarm.to_string(), |kind| kind.as_str_name().to_string());
                format!("memberID:{} alarm:{kind} ", alarm.member_id)
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// The store as etcd's snapshot file: the database in chunks, then its
    /// sha256. Written to a file first (bbolt names its root at the front),
    /// then read out a chunk at a time as the client takes them.
    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<SnapshotStream>, Status> {
        require_admin(&self.member, &request).await?;
        let turn = self.snapshots.clone().acquire_owned().await.map_err(|_| Status::unavailable("stopping"))?;
        let (file, revision) = self.member.etcd_snapshot().await.map_err(node_error)?;
        let summary = file.summary();
        tracing::info!(revision, size_bytes = summary.size, "sending database snapshot to client");
        // etcd sends no header on the stream.
        let _ = revision;
        let (out, responses) = mpsc::channel(SNAPSHOT_BUFFER);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            for chunk in file.stream(SNAPSHOT_CHUNK_BYTES) {
                let response = chunk
                    .map(|chunk| SnapshotResponse {
                        header: None,
                        remaining_bytes: chunk.remaining_bytes,
                        blob: chunk.blob,
                        version: ETCD_VERSION.to_string(),
                    })
                    .map_err(|err| Status::internal(err.to_string()));
                let failed = response.is_err();
                // A closed channel: the client went away; the file goes too.
                if out.blocking_send(response).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        require_admin(&self.member, &request).await?;
        self.member.defragment().await.map_err(node_error)?;
        // etcd answers without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let (hash, revision) = self.member.backend_hash().await.map_err(node_error)?;
        Ok(Response::new(HashResponse { header: Some(self.member.header_at(revision)), hash }))
    }

    /// A Keel cluster runs one version and cannot hand its data to an older
    /// etcd member by member: validating or enabling a downgrade is refused
    /// as etcd refuses a target it cannot go to; cancelling, with no
    /// downgrade ever running, succeeds as in etcd 3.6. Moving back to etcd
    /// is a snapshot away: see docs/migrate-from-etcd.md.
    async fn downgrade(&self, request: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let request = request.into_inner();
        if request.action() == DowngradeAction::Cancel {
            tracing::warn!(error = NO_INFLIGHT_DOWNGRADE.1, "failed to cancel downgrade");
            return Ok(Response::new(DowngradeResponse {
                header: Some(self.member.header()),
                version: keel_node::CLUSTER_VERSION.to_string(),
            }));
        }
        if parse_cluster_version(&request.version).is_none() {
            return Err(status(WRONG_DOWNGRADE_VERSION_FORMAT));
        }
        tracing::warn!(target_version = %request.version, "reject downgrade request");
        Err(status(INVALID_DOWNGRADE_TARGET))
    }

    /// Any logged-in user (etcd after its 2026 security releases; 3.4
    /// answered anyone).
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        require_user(&self.member, &request).await?;
        let member = self.member.clone();
        let status = tokio::task::spawn_blocking(move || member.status())
            .await
            .map_err(|err| Status::internal(format!("status task: {err}")))?;
        Ok(Response::new(StatusResponse {
            header: Some(self.member.header()),
            version: ETCD_VERSION.to_string(),
            db_size: status.db_size,
            leader: status.leader,
            raft_index: status.raft_index,
            raft_term: status.raft_term,
            raft_applied_index: status.raft_applied_index,
            db_size_in_use: status.db_size_in_use,
            is_learner: status.is_learner,
            storage_version: ETCD_VERSION.to_string(),
            db_size_quota: self.member.quota_backend_bytes(),
            errors: self.status_errors.iter().cloned().chain(self.alarm_errors()).collect(),
            ..Default::default()
        }))
    }

    /// Raising or clearing an alarm is for root (etcd's security releases);
    /// listing them, for any logged-in user.
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match request.get_ref().action() {
            AlarmAction::Get => require_user(&self.member, &request).await?,
            AlarmAction::Activate | AlarmAction::Deactivate => require_admin(&self.member, &request).await?,
        }
        let who = caller(&self.member, &request).await?;
        // etcd answers Alarm without a header (its applier's response,
        // returned as it is).
        let mut response = self.member.alarm(&who, request.into_inner()).await.map_err(node_error)?;
        response.header = None;
        Ok(Response::new(response))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let hash = self.member.hash_kv(request.into_inner().revision).await.map_err(node_error)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.member.header_at(hash.current_revision)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        require_admin(&self.member, &request).await?;
        self.member.move_leader(request.into_inner().target_id).await.map_err(node_error)?;
        Ok(Response::new(MoveLeaderResponse { header: Some(self.member.header()) }))
    }
}

/// etcd's `convertToClusterVersion`: a semantic version, or `major.minor`,
/// cut to its major and minor.
fn parse_cluster_version(version: &str) -> Option<(u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let parts: Vec<&str> = core.split('.').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if parts.iter().any(|p| p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    Some((parts[0].parse().ok()?, parts[1].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::parse_cluster_version;

    #[test]
    fn downgrade_targets_parse_as_etcds_cluster_versions() {
        assert_eq!(parse_cluster_version("3.5"), Some((3, 5)));
        assert_eq!(parse_cluster_version("3.5.0"), Some((3, 5)));
        assert_eq!(parse_cluster_version("3.5.2-rc.1"), Some((3, 5)));
        for bad in ["", "3", "three.five", "3.5.0.1", "v3.5", "03.5", "3..5"] {
            assert_eq!(parse_cluster_version(bad), None, "{bad}");
        }
    }
}
