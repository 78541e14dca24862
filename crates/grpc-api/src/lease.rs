//! The Lease service, as far as it goes before the lease manager lands:
//! no lease can be granted yet, so every lease a client names is unknown and
//! the answers below are exactly etcd's for an unknown lease.

use std::sync::Arc;

use keel_node::Member;
use keel_proto::etcdserverpb::lease_server::Lease;
use keel_proto::etcdserverpb::{
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tonic::{Request, Response, Status};

use crate::errors::{status, LEASE_NOT_FOUND};

pub struct LeaseService {
    member: Arc<Member>,
}

impl LeaseService {
    pub fn new(member: Arc<Member>) -> Self {
        LeaseService { member }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_revoke(&self, _request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        Err(status(LEASE_NOT_FOUND))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        // etcd reports an unknown (or expired) lease as TTL -1, not as an error.
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: Some(self.member.header()),
            id: request.into_inner().id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        }))
    }

    async fn lease_leases(&self, _request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.member.header()), leases: Vec::new() }))
    }
}
