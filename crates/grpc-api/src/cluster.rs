//! The Cluster service: the membership as this member has applied it.

use std::sync::Arc;

use keel_node::Member;
use keel_proto::etcdserverpb::cluster_server::Cluster;
use keel_proto::etcdserverpb::{MemberListRequest, MemberListResponse};
use tonic::{Request, Response, Status};

use crate::errors::node_error;

pub struct ClusterService {
    member: Arc<Member>,
}

impl ClusterService {
    pub fn new(member: Arc<Member>) -> Self {
        ClusterService { member }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let members = self.member.member_list(request.into_inner().linearizable).await.map_err(node_error)?;
        Ok(Response::new(MemberListResponse { header: Some(self.member.header()), members }))
    }
}
