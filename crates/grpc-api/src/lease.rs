//! The Lease service: grant and revoke go through raft; keep-alives and
//! time-to-live are answered by the leader's lease manager.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt;
use keel_lease_manager::LeaseError;
use keel_node::{Member, NodeError};
use keel_proto::etcdserverpb::lease_server::Lease;
use keel_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::errors::node_error;
use crate::identity::{caller, Credentials};

pub struct LeaseService {
    member: Arc<Member>,
}

impl LeaseService {
    pub fn new(member: Arc<Member>) -> Self {
        LeaseService { member }
    }
}

pub type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

impl LeaseService {
    /// Keep-alives from `requests`, each answered as it comes, for the
    /// caller `credentials` names: what the gRPC stream runs, for other
    /// transports too (the JSON gateway).
    pub fn keep_alive_stream<T, S>(&self, caller: &Request<T>, requests: S) -> KeepAliveStream
    where
        S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
    {
        self.keep_alive(Credentials::of(caller), requests)
    }

    fn keep_alive<S>(&self, credentials: Credentials, requests: S) -> KeepAliveStream
    where
        S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
    {
        let member = self.member.clone();
        // Resolved again for every keep-alive: the token's lifetime starts
        // over with each use, and a revoked permission stops the renewals.
        let responses = requests.then(move |keep_alive| {
            let member = member.clone();
            let credentials = credentials.clone();
            async move {
                let id = keep_alive?.id;
                let who = credentials.resolve(&member).await?;
                // etcd answers a keep-alive for an unknown lease with TTL 0.
                let ttl = match member.lease_renew(&who, id).await {
                    Ok(ttl) => ttl,
                    Err(NodeError::Lease(LeaseError::NotFound | LeaseError::Expired)) => 0,
                    Err(err) => return Err(node_error(err)),
                };
                Ok(LeaseKeepAliveResponse { header: Some(member.header()), id, ttl })
            }
        });
        Box::pin(responses)
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        // Refused before raft, as etcd does: a bad grant costs no log entry.
        if request.ttl > keel_lease_manager::MAX_LEASE_TTL {
            return Err(node_error(NodeError::Lease(LeaseError::TtlTooLarge)));
        }
        self.member.lease_grant(&who, request).await.map(Response::new).map_err(node_error)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        self.member.lease_revoke(&who, request.into_inner()).await.map(Response::new).map_err(node_error)
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let credentials = Credentials::of(&request);
        Ok(Response::new(self.keep_alive(credentials, request.into_inner())))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        let header = Some(self.member.header());
        match self.member.lease_time_to_live(&who, request.id, request.keys).await {
            Ok(ttl) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: ttl.id,
                ttl: ttl.ttl,
                granted_ttl: ttl.granted_ttl,
                keys: ttl.keys,
            })),
            // etcd reports an unknown (or expired) lease as TTL -1, not as an error.
            Err(NodeError::Lease(LeaseError::NotFound | LeaseError::Expired)) => {
                Ok(Response::new(LeaseTimeToLiveResponse {
                    header,
                    id: request.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: vec![],
                }))
            }
            Err(err) => Err(node_error(err)),
        }
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        self.member.check_lease_listing(&who).map_err(node_error)?;
        let leases = self.member.leases().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.member.header()), leases }))
    }
}
