//! The Cluster service: the membership as this member has applied it, and
//! changes to it through raft configuration changes.

use std::sync::Arc;

use keel_node::Member;
use keel_proto::etcdserverpb::cluster_server::Cluster;
use keel_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::errors::node_error;
use crate::identity::{require_admin, require_user};

pub struct ClusterService {
    member: Arc<Member>,
}

impl ClusterService {
    pub fn new(member: Arc<Member>) -> Self {
        ClusterService { member }
    }

    /// etcd's cluster server fills ids and term, never the revision.
    fn header(&self) -> keel_proto::etcdserverpb::ResponseHeader {
        self.member.header_at(0)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    /// Any logged-in user may list members (etcd 3.5.29 and 3.6.10 on).
    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        require_user(&self.member, &request).await?;
        let members = self.member.member_list(request.into_inner().linearizable).await.map_err(node_error)?;
        Ok(Response::new(MemberListResponse { header: Some(self.header()), members }))
    }

    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let request = request.into_inner();
        let (added, members) =
            self.member.member_add(request.peer_ur_ls, request.is_learner).await.map_err(node_error)?;
        Ok(Response::new(MemberAddResponse { header: Some(self.header()), member: Some(added), members }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let members = self.member.member_remove(request.into_inner().id).await.map_err(node_error)?;
        Ok(Response::new(MemberRemoveResponse { header: Some(self.header()), members }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let request = request.into_inner();
        let members = self.member.member_update(request.id, request.peer_ur_ls).await.map_err(node_error)?;
        Ok(Response::new(MemberUpdateResponse { header: Some(self.header()), members }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let members = self.member.member_promote(request.into_inner().id).await.map_err(node_error)?;
        Ok(Response::new(MemberPromoteResponse { header: Some(self.header()), members }))
    }
}
