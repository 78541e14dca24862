//! The Lease service: unary calls pass through (`services.rs`); every
//! client's keep-alives share one upstream keep-alive stream.
//!
//! Each keep-alive a client sends goes upstream at once and its answer is
//! routed back by lease id (answers for one id come in the order asked),
//! so a lease is renewed exactly when its client asked: it never outlives
//! the client's last keep-alive by more than its TTL, as it can behind
//! etcd's proxy, which renews on a schedule of its own. When the upstream
//! stream breaks, the keep-alives waiting on it fail with Unavailable (their
//! clients retry) instead of being silently resent later.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::lease_server::Lease;
use keel_proto::etcdserverpb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::services::Forward;
use crate::upstream::endpoint_failed;
use crate::Shared;

/// Keep-alives waiting for the shared stream's task.
const RENEW_QUEUE: usize = 1024;
/// Answers waiting for one client to read them.
const ANSWER_QUEUE: usize = 16;

type Answer = mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>;

pub(crate) struct Renew {
    id: i64,
    answer: Answer,
}

/// The handle clients' streams send keep-alives to.
pub(crate) struct KeepAlives {
    renew: mpsc::Sender<Renew>,
}

impl KeepAlives {
    /// Starts the task owning the upstream stream; it ends when the last
    /// handle is dropped.
    pub(crate) fn start(shared: std::sync::Weak<Shared>) -> KeepAlives {
        let (renew, requests) = mpsc::channel(RENEW_QUEUE);
        tokio::spawn(mux(shared, requests));
        KeepAlives { renew }
    }
}

struct Upstream {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    answers: Streaming<LeaseKeepAliveResponse>,
    picked: crate::upstream::Picked,
}

async fn mux(shared: std::sync::Weak<Shared>, mut renewals: mpsc::Receiver<Renew>) {
    let mut waiting: HashMap<i64, VecDeque<Answer>> = HashMap::new();
    let mut upstream: Option<Upstream> = None;
    loop {
        let answer = async {
            match &mut upstream {
                Some(up) => up.answers.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            renew = renewals.recv() => {
                let Some(renew) = renew else { return };
                let Some(shared) = shared.upgrade() else { return };
                if upstream.is_none() {
                    match open(&shared, renew.id).await {
                        Ok(up) => upstream = Some(up),
                        Err(status) => {
                            let _ = renew.answer.try_send(Err(status));
                            continue;
                        }
                    }
                } else if let Some(up) = &upstream {
                    if up.requests.send(LeaseKeepAliveRequest { id: renew.id }).await.is_err() {
                        let _ = renew.answer.try_send(Err(Status::unavailable("upstream keep-alive stream closed")));
                        fail_all(&shared, &mut upstream, &mut waiting);
                        continue;
                    }
                }
                shared.metrics.keepalives.inc();
                waiting.entry(renew.id).or_default().push_back(renew.answer);
            }
            answer = answer => match answer {
                Ok(Some(response)) => {
                    if let Some(queue) = waiting.get_mut(&response.id) {
                        if let Some(client) = queue.pop_front() {
                            // A client that does not read its answers loses
                            // them rather than stalling everyone's.
                            let _ = client.try_send(Ok(response));
                        }
                        if queue.is_empty() {
                            waiting.remove(&response.id);
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    let Some(shared) = shared.upgrade() else { return };
                    fail_all(&shared, &mut upstream, &mut waiting);
                }
            },
        }
    }
}

fn fail_all(shared: &Shared, upstream: &mut Option<Upstream>, waiting: &mut HashMap<i64, VecDeque<Answer>>) {
    if let Some(up) = upstream.take() {
        shared.upstream.failed(&up.picked);
    }
    for (_, queue) in waiting.drain() {
        for client in queue {
            let _ = client.try_send(Err(Status::unavailable("upstream keep-alive stream broke; retry")));
        }
    }
}

/// Opens the shared stream with its first keep-alive already queued,
/// trying each endpoint once.
async fn open(shared: &Shared, first: i64) -> Result<Upstream, Status> {
    let mut last = Status::unavailable("no upstream endpoint");
    for _ in 0..shared.upstream.len() {
        let picked = shared.upstream.pick();
        let (requests, outgoing) = mpsc::channel(RENEW_QUEUE);
        let _ = requests.try_send(LeaseKeepAliveRequest { id: first });
        let opened = LeaseClient::new(picked.channel.clone()).lease_keep_alive(ReceiverStream::new(outgoing)).await;
        match opened {
            Ok(response) => return Ok(Upstream { requests, answers: response.into_inner(), picked }),
            Err(status) if endpoint_failed(&status) => {
                shared.upstream.failed(&picked);
                last = crate::upstream::as_unavailable(status);
            }
            Err(status) => return Err(status),
        }
    }
    Err(last)
}

#[tonic::async_trait]
impl Lease for Forward {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        self.grant(request).await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.revoke(request).await
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        let (answers, outgoing) = mpsc::channel(ANSWER_QUEUE);
        let shared: Arc<Shared> = self.0.clone();
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            // Ends when the client half-closes; the stream then ends once
            // the answers still owed have been sent (each holds a sender).
            while let Ok(Some(request)) = requests.message().await {
                let renew = Renew { id: request.id, answer: answers.clone() };
                if shared.keepalives.renew.send(renew).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.time_to_live(request).await
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.leases(request).await
    }
}
