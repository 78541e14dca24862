//! The Lease service: unary calls pass through (`services.rs`); every
//! client's keep-alives share one upstream keep-alive stream (one per
//! auth identity, when clients send tokens).
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
use tokio_stream::{StreamExt, StreamMap};
use tonic::codegen::BoxStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::services::Forward;
use crate::upstream::endpoint_failed;
use crate::Shared;

/// Keep-alives waiting for the shared stream's task.
const RENEW_QUEUE: usize = 1024;
/// Answers waiting for one client to read them.
const ANSWER_QUEUE: usize = 16;

type Answer = mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>;

/// The caller's token, if any: with auth on, a cluster may refuse
/// keep-alives without one, so callers with different tokens get
/// different upstream streams (one per identity, not per client).
type Identity = Option<MetadataValue<Ascii>>;

pub(crate) struct Renew {
    id: i64,
    identity: Identity,
    answer: Answer,
}

/// The handle clients' streams send keep-alives to.
pub(crate) struct KeepAlives {
    renew: mpsc::Sender<Renew>,
}

impl KeepAlives {
    /// Starts the task owning the upstream streams; it ends when the last
    /// handle is dropped.
    pub(crate) fn start(shared: std::sync::Weak<Shared>) -> KeepAlives {
        let (renew, requests) = mpsc::channel(RENEW_QUEUE);
        tokio::spawn(mux(shared, requests));
        KeepAlives { renew }
    }
}

struct Upstream {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    picked: crate::upstream::Picked,
}

/// Each identity's upstream answers.
type Answers = StreamMap<Identity, Streaming<LeaseKeepAliveResponse>>;

/// The answers still owed, by identity and lease, in the order asked.
type Waiting = HashMap<(Identity, i64), VecDeque<Answer>>;

async fn mux(shared: std::sync::Weak<Shared>, mut renewals: mpsc::Receiver<Renew>) {
    let mut waiting: Waiting = HashMap::new();
    let mut upstreams: HashMap<Identity, Upstream> = HashMap::new();
    let mut answers: Answers = StreamMap::new();
    loop {
        tokio::select! {
            renew = renewals.recv() => {
                let Some(renew) = renew else { return };
                let Some(shared) = shared.upgrade() else { return };
                let sent = match upstreams.get(&renew.identity) {
                    Some(up) => up.requests.send(LeaseKeepAliveRequest { id: renew.id }).await.is_ok(),
                    None => match open(&shared, &renew).await {
                        Ok((up, stream)) => {
                            upstreams.insert(renew.identity.clone(), up);
                            answers.insert(renew.identity.clone(), stream);
                            true
                        }
                        Err(status) => {
                            let _ = renew.answer.try_send(Err(status));
                            continue;
                        }
                    },
                };
                if !sent {
                    let _ = renew.answer.try_send(Err(Status::unavailable("upstream keep-alive stream closed")));
                    fail(&shared, &renew.identity, &mut upstreams, &mut answers, &mut waiting);
                    continue;
                }
                shared.metrics.keepalives.inc();
                waiting.entry((renew.identity, renew.id)).or_default().push_back(renew.answer);
            }
            Some((identity, answer)) = answers.next(), if !answers.is_empty() => match answer {
                Ok(response) => {
                    let key = (identity, response.id);
                    if let Some(queue) = waiting.get_mut(&key) {
                        if let Some(client) = queue.pop_front() {
                            // A client that does not read its answers loses
                            // them rather than stalling everyone's.
                            let _ = client.try_send(Ok(response));
                        }
                        if queue.is_empty() {
                            waiting.remove(&key);
                        }
                    }
                }
                Err(_) => {
                    let Some(shared) = shared.upgrade() else { return };
                    fail(&shared, &identity, &mut upstreams, &mut answers, &mut waiting);
                }
            },
        }
    }
}

/// One identity's upstream stream broke: its waiting keep-alives fail (their
/// clients retry) and the next keep-alive opens a new stream.
fn fail(
    shared: &Shared,
    identity: &Identity,
    upstreams: &mut HashMap<Identity, Upstream>,
    answers: &mut Answers,
    waiting: &mut Waiting,
) {
    answers.remove(identity);
    if let Some(up) = upstreams.remove(identity) {
        shared.upstream.failed(&up.picked);
    }
    waiting.retain(|(who, _), queue| {
        if who != identity {
            return true;
        }
        for client in queue.drain(..) {
            let _ = client.try_send(Err(Status::unavailable("upstream keep-alive stream broke; retry")));
        }
        false
    });
}

/// Opens an identity's stream with its first keep-alive already queued,
/// trying each endpoint once.
async fn open(shared: &Shared, first: &Renew) -> Result<(Upstream, Streaming<LeaseKeepAliveResponse>), Status> {
    let mut last = Status::unavailable("no upstream endpoint");
    for _ in 0..shared.upstream.len() {
        let picked = shared.upstream.pick();
        let (requests, outgoing) = mpsc::channel(RENEW_QUEUE);
        let _ = requests.try_send(LeaseKeepAliveRequest { id: first.id });
        let mut request = Request::new(ReceiverStream::new(outgoing));
        if let Some(token) = &first.identity {
            request.metadata_mut().insert("token", token.clone());
        }
        let opened = LeaseClient::new(picked.channel.clone()).lease_keep_alive(request).await;
        match opened {
            Ok(response) => return Ok((Upstream { requests, picked }, response.into_inner())),
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
        // Keeping a lease alive changes the cluster: not through a
        // read-only proxy.
        self.0.check(self.0.policy.effect(crate::policy::Effect::Write))?;
        let (answers, outgoing) = mpsc::channel(ANSWER_QUEUE);
        let shared: Arc<Shared> = self.0.clone();
        let identity = request.metadata().get("token").cloned();
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            // Ends when the client half-closes; the stream then ends once
            // the answers still owed have been sent (each holds a sender).
            while let Ok(Some(request)) = requests.message().await {
                let renew = Renew { id: request.id, identity: identity.clone(), answer: answers.clone() };
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
