//! Cluster membership calls.

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

use crate::client::{Deadline, Retry};
use crate::{Client, ClientError};

impl Client {
    /// The cluster's members. With `linearizable`, the list goes through
    /// consensus instead of the member's local view (etcd 3.5 and later;
    /// older servers ignore it).
    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse, ClientError> {
        let request = MemberListRequest { linearizable };
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            ClusterClient::new(channel).member_list(request).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Adds a member with `peer_urls`; a learner does not vote until promoted.
    pub async fn member_add(&self, peer_urls: Vec<String>, learner: bool) -> Result<MemberAddResponse, ClientError> {
        let request = MemberAddRequest { peer_ur_ls: peer_urls, is_learner: learner };
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move { ClusterClient::new(channel).member_add(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Removes member `id` from the cluster.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, ClientError> {
        self.call(Retry::IfNotSent, Deadline::Request, |channel| async move {
            ClusterClient::new(channel).member_remove(MemberRemoveRequest { id }).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Replaces the peer URLs of member `id`.
    pub async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<MemberUpdateResponse, ClientError> {
        let request = MemberUpdateRequest { id, peer_ur_ls: peer_urls };
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move { ClusterClient::new(channel).member_update(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Makes learner `id` a voting member.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, ClientError> {
        self.call(Retry::IfNotSent, Deadline::Request, |channel| async move {
            ClusterClient::new(channel)
                .member_promote(MemberPromoteRequest { id })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }
}
