//! Maintenance calls.

use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{StatusRequest, StatusResponse};

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
}
