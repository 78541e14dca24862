//! Cluster membership calls.

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::{MemberListRequest, MemberListResponse};

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
}
