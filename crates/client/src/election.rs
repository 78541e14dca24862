//! The server-side Election service (`v3electionpb`). The client-side
//! recipe that needs only KV, Watch and Lease is
//! [`crate::concurrency::Election`].

use std::pin::Pin;
use std::task::{Context, Poll};

use keel_proto::mvccpb::KeyValue;
use keel_proto::v3electionpb::election_client::ElectionClient;
use keel_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest,
    ResignResponse,
};
use tokio_stream::Stream;
use tonic::Streaming;

use crate::client::{Deadline, Retry};
use crate::{Client, ClientError};

impl Client {
    /// Waits until this campaigner leads election `name`, publishing
    /// `value`; leadership ends with `resign` or with `lease`. The returned
    /// key is the proof of leadership for `proclaim` and `resign`.
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<LeaderKey, ClientError> {
        let request = CampaignRequest { name: name.into(), lease, value: value.into() };
        let response = self
            .call(Retry::IfNotSent, Deadline::None, |channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).campaign(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        response.leader.ok_or(ClientError::UnexpectedResponse("campaign response without a leader key"))
    }

    /// Publishes a new value as the leader.
    pub async fn proclaim(
        &self,
        leader: LeaderKey,
        value: impl Into<Vec<u8>>,
    ) -> Result<ProclaimResponse, ClientError> {
        let request = ProclaimRequest { leader: Some(leader), value: value.into() };
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move { ElectionClient::new(channel).proclaim(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// The current leader's key and value; `NoLeader` if nobody leads.
    pub async fn leader(&self, name: impl Into<Vec<u8>>) -> Result<KeyValue, ClientError> {
        let request = LeaderRequest { name: name.into() };
        let response = self
            .call(Retry::Always, Deadline::Request, |channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).leader(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        response.kv.ok_or(ClientError::NoLeader)
    }

    /// Streams each leader value of election `name` as it changes. Returns
    /// only once there is a leader: etcd sends nothing, not even response
    /// headers, before. The stream is not resumed after a connection
    /// failure; it ends with the error instead.
    pub async fn observe(&self, name: impl Into<Vec<u8>>) -> Result<LeaderStream, ClientError> {
        let request = LeaderRequest { name: name.into() };
        let inner = self
            .call(Retry::Always, Deadline::None, |channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).observe(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(LeaderStream { inner })
    }

    /// Gives up leadership, letting the next campaigner win.
    pub async fn resign(&self, leader: LeaderKey) -> Result<ResignResponse, ClientError> {
        let request = ResignRequest { leader: Some(leader) };
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move { ElectionClient::new(channel).resign(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }
}

/// Leader changes from [`Client::observe`].
#[derive(Debug)]
pub struct LeaderStream {
    inner: Streaming<LeaderResponse>,
}

impl Stream for LeaderStream {
    type Item = Result<LeaderResponse, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| item.map(|r| r.map_err(ClientError::from)))
    }
}
