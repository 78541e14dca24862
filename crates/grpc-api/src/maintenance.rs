//! The Maintenance service. Status is what `etcdctl endpoint status` reads;
//! MoveLeader is `etcdctl move-leader`; HashKV is `etcdctl endpoint hashkv`;
//! the rest answers Unimplemented until the maintenance issue lands.

use std::sync::Arc;

use keel_node::{Member, ETCD_VERSION};
use keel_proto::etcdserverpb::alarm_request::AlarmAction;
use keel_proto::etcdserverpb::maintenance_server::Maintenance;
use keel_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, HashKvRequest, HashKvResponse, MoveLeaderRequest, MoveLeaderResponse, StatusRequest,
    StatusResponse,
};

use crate::errors::node_error;
use crate::identity::{caller, require_admin, require_user};
use tonic::{Request, Response, Status};

/// etcd's default backend quota (--quota-backend-bytes), reported by Status.
const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;

pub struct MaintenanceService {
    member: Arc<Member>,
    /// Reported in every Status answer, as etcd reports its alarms there.
    status_errors: Vec<String>,
}

impl MaintenanceService {
    pub fn new(member: Arc<Member>, status_errors: Vec<String>) -> Self {
        MaintenanceService { member, status_errors }
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
            db_size_quota: DEFAULT_QUOTA_BYTES,
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
