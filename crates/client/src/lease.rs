//! Lease calls and the keep-alive loop.
//!
//! A keep-alive is a background task owned by its [`LeaseKeepAlive`] handle:
//! dropping the handle stops it. The task renews every TTL/3, as etcd's Go
//! client does, and re-opens its stream (on the next endpoint if need be)
//! when the stream breaks. It gives up, reporting `LeaseExpired`, when the
//! server says the lease is gone or when no renewal succeeded for a whole
//! TTL, since by then the server may have expired the lease.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use crate::client::{Deadline, Retry};
use crate::error::endpoint_failed;
use crate::retry::{is_transient, Backoff};
use crate::{Client, ClientError};

/// Keep-alive responses buffered for a consumer that reads them slowly;
/// beyond this they are dropped, never the renewals themselves.
const RESPONSE_BUFFER: usize = 16;

impl Client {
    /// Grants a lease of `ttl` seconds; `id` 0 lets the server choose the id.
    /// The server may raise a TTL below its minimum.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, ClientError> {
        let request = LeaseGrantRequest { ttl, id };
        let response = self
            .call(Retry::IfNotSent, Deadline::Request, |channel| async move {
                LeaseClient::new(channel).lease_grant(request).await.map(tonic::Response::into_inner)
            })
            .await?;
        if !response.error.is_empty() {
            return Err(ClientError::Status { code: tonic::Code::Unknown, message: response.error });
        }
        Ok(response)
    }

    /// Revokes a lease, deleting every key attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, ClientError> {
        let request = LeaseRevokeRequest { id };
        self.call(Retry::IfNotSent, Deadline::Request, |channel| async move {
            LeaseClient::new(channel).lease_revoke(request).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// The remaining TTL of a lease (`ttl` is -1 if it does not exist) and,
    /// with `keys`, the keys attached to it.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, ClientError> {
        let request = LeaseTimeToLiveRequest { id, keys };
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            LeaseClient::new(channel).lease_time_to_live(request).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Every lease the cluster knows.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, ClientError> {
        self.call(Retry::Always, Deadline::Request, |channel| async move {
            LeaseClient::new(channel).lease_leases(LeaseLeasesRequest {}).await.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Renews lease `id` once now and then in the background until the
    /// returned handle is dropped. Fails with `LeaseExpired` if the lease
    /// does not exist. The handle is a stream of renewals; it ends with an
    /// error when the lease is lost.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAlive, ClientError> {
        let (requests, responses, first) = open_keep_alive(self, id).await?;
        if first.ttl <= 0 {
            return Err(ClientError::LeaseExpired { id });
        }
        let (out, rx) = mpsc::channel(RESPONSE_BUFFER);
        let ttl = first.ttl;
        let task = tokio::spawn(KeepAliveTask { client: self.clone(), id, requests, responses, out }.run(ttl));
        Ok(LeaseKeepAlive { id, ttl, rx, task })
    }
}

/// A running keep-alive; see [`Client::lease_keep_alive`]. Dropping it
/// stops the renewals (the lease then expires after its TTL unless revoked).
#[derive(Debug)]
pub struct LeaseKeepAlive {
    id: i64,
    ttl: i64,
    rx: mpsc::Receiver<Result<LeaseKeepAliveResponse, ClientError>>,
    task: JoinHandle<()>,
}

impl LeaseKeepAlive {
    /// The lease being kept alive.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL the first renewal reported, in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}

impl Stream for LeaseKeepAlive {
    type Item = Result<LeaseKeepAliveResponse, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for LeaseKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type KeepAliveStream = (mpsc::Sender<LeaseKeepAliveRequest>, Streaming<LeaseKeepAliveResponse>, LeaseKeepAliveResponse);

/// Opens a keep-alive stream and renews once, so a broken endpoint shows up
/// here, where the call can move on to the next one.
async fn open_keep_alive(client: &Client, id: i64) -> Result<KeepAliveStream, ClientError> {
    client
        .call(Retry::Always, Deadline::Request, |channel| async move {
            let (requests, rx) = mpsc::channel(1);
            requests.try_send(LeaseKeepAliveRequest { id }).expect("a new channel has room");
            let mut responses = LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
            let first = responses.message().await?.ok_or_else(|| Status::unavailable("keep-alive stream closed"))?;
            Ok((requests, responses, first))
        })
        .await
}

struct KeepAliveTask {
    client: Client,
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    out: mpsc::Sender<Result<LeaseKeepAliveResponse, ClientError>>,
}

/// When the lease runs out unless renewed, and when to renew it next.
struct Schedule {
    expires: Instant,
    next: Instant,
    period: Duration,
}

impl Schedule {
    /// The lease was just renewed for `ttl` seconds.
    fn renewed(ttl: i64) -> Schedule {
        let ttl = Duration::from_secs(ttl.max(1) as u64);
        let now = Instant::now();
        Schedule { expires: now + ttl, next: now + ttl / 3, period: ttl / 3 }
    }
}

impl KeepAliveTask {
    async fn run(mut self, ttl: i64) {
        let mut schedule = Schedule::renewed(ttl);
        loop {
            let broken = tokio::select! {
                _ = sleep_until(schedule.expires) => {
                    let id = self.id;
                    return self.finish(ClientError::LeaseExpired { id }).await;
                }
                _ = sleep_until(schedule.next) => {
                    // Sent again after another period if no answer comes.
                    schedule.next = Instant::now() + schedule.period;
                    self.requests.send(LeaseKeepAliveRequest { id: self.id }).await.is_err()
                }
                message = self.responses.message() => match message {
                    Ok(Some(response)) => match self.renewed(response) {
                        Ok(renewed) => {
                            schedule = renewed;
                            false
                        }
                        Err(e) => return self.finish(e).await,
                    },
                    Ok(None) => true,
                    Err(status) if endpoint_failed(&status) => true,
                    Err(status) => return self.finish(status.into()).await,
                },
            };
            if broken {
                match self.reopen(schedule.expires).await {
                    Ok(renewed) => schedule = renewed,
                    Err(e) => return self.finish(e).await,
                }
            }
        }
    }

    /// Passes a renewal on and schedules the next one.
    fn renewed(&mut self, response: LeaseKeepAliveResponse) -> Result<Schedule, ClientError> {
        if response.ttl <= 0 {
            return Err(ClientError::LeaseExpired { id: self.id });
        }
        let schedule = Schedule::renewed(response.ttl);
        // A full buffer means nobody reads the renewals; dropping them is
        // harmless, blocking here would stop the renewals themselves.
        let _ = self.out.try_send(Ok(response));
        Ok(schedule)
    }

    /// Opens a new stream (with failover) and renews on it, until the lease
    /// would have expired anyway.
    async fn reopen(&mut self, expires: Instant) -> Result<Schedule, ClientError> {
        let mut backoff = Backoff::new();
        loop {
            match open_keep_alive(&self.client, self.id).await {
                Ok((requests, responses, first)) => {
                    self.requests = requests;
                    self.responses = responses;
                    return self.renewed(first);
                }
                Err(e) if is_transient(&e) => {
                    tracing::debug!(lease = self.id, error = %e, "keep-alive stream broken, retrying");
                    let wait = backoff.next_delay();
                    if Instant::now() + wait >= expires {
                        return Err(ClientError::LeaseExpired { id: self.id });
                    }
                    sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn finish(self, error: ClientError) {
        tracing::debug!(lease = self.id, error = %error, "keep-alive stopped");
        let _ = self.out.send(Err(error)).await;
    }
}
