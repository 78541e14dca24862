//! The raft transport between members: one gRPC client stream per peer.
//!
//! The raft thread must never wait on the network, so `send` only queues:
//! each peer has a bounded queue drained by its own task. A full queue (a slow
//! or dead peer) drops the messages and tells raft the peer is unreachable;
//! raft retries from its own state, so nothing is lost that matters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_proto::keelpb::raft_peer_client::RaftPeerClient;
use keel_lease_manager::{LeaseError, TimeToLive};
use keel_proto::keelpb::{LeaseRenewForward, LeaseTimeToLiveForward, RaftBatch};
use keel_raft_node::{Message, Transport};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use crate::NodeError;

/// Messages waiting for one peer, at most (beyond: dropped, peer unreachable).
const QUEUE_BATCHES: usize = 1024;
const RECONNECT_AFTER: Duration = Duration::from_millis(100);

pub(crate) struct GrpcTransport {
    queues: HashMap<u64, mpsc::Sender<Vec<Vec<u8>>>>,
    unreachable: Arc<Mutex<Vec<u64>>>,
}

impl GrpcTransport {
    /// Starts one sender task per peer on `runtime`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        cluster_id: u64,
        from: u64,
        peers: &HashMap<u64, String>,
    ) -> GrpcTransport {
        let unreachable = Arc::new(Mutex::new(Vec::new()));
        let mut queues = HashMap::new();
        for (&peer, url) in peers {
            let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
            queues.insert(peer, tx);
            runtime.spawn(run_peer(cluster_id, from, peer, url.clone(), rx, unreachable.clone()));
        }
        GrpcTransport { queues, unreachable }
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, messages: Vec<Message>) {
        let mut by_peer: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        for message in messages {
            match protobuf::Message::write_to_bytes(&message) {
                Ok(bytes) => by_peer.entry(message.to).or_default().push(bytes),
                Err(err) => tracing::error!(%err, "cannot encode a raft message"),
            }
        }
        for (peer, batch) in by_peer {
            match self.queues.get(&peer) {
                Some(queue) => {
                    if queue.try_send(batch).is_err() {
                        self.unreachable.lock().push(peer);
                    }
                }
                None => tracing::warn!(peer = %format!("{peer:x}"), "raft message to an unknown member dropped"),
            }
        }
    }

    fn unreachable(&mut self) -> Vec<u64> {
        std::mem::take(&mut *self.unreachable.lock())
    }
}

async fn run_peer(
    cluster_id: u64,
    from: u64,
    peer: u64,
    url: String,
    mut queue: mpsc::Receiver<Vec<Vec<u8>>>,
    unreachable: Arc<Mutex<Vec<u64>>>,
) {
    let endpoint = match Endpoint::from_shared(url.clone()) {
        Ok(endpoint) => endpoint.tcp_nodelay(true).connect_timeout(Duration::from_secs(1)),
        Err(err) => {
            tracing::error!(%url, %err, "bad peer URL; this peer gets no raft messages");
            return;
        }
    };
    loop {
        // Wait for something to send before (re)connecting.
        let Some(first) = queue.recv().await else { return };
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(err) => {
                tracing::debug!(peer = %format!("{peer:x}"), %err, "peer unreachable");
                unreachable.lock().push(peer);
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(QUEUE_BATCHES);
        let _ = stream_tx.send(RaftBatch { cluster_id, from, messages: first }).await;
        let mut client = RaftPeerClient::new(channel);
        let call = tokio::spawn(async move { client.send(tokio_stream::wrappers::ReceiverStream::new(stream_rx)).await });
        // Forward until the stream breaks; then reconnect.
        loop {
            tokio::select! {
                batch = queue.recv() => {
                    let Some(messages) = batch else { return };
                    if stream_tx.send(RaftBatch { cluster_id, from, messages }).await.is_err() {
                        break;
                    }
                }
                _ = stream_tx.closed() => break,
            }
        }
        match call.await {
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                tracing::error!(peer = %format!("{peer:x}"), message = status.message(), "peer refused us");
            }
            _ => {}
        }
        unreachable.lock().push(peer);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Unary calls to other members (lease calls forwarded to the leader), over
/// one lazily connected channel per peer.
pub(crate) struct PeerClients {
    cluster_id: u64,
    urls: HashMap<u64, String>,
    clients: Mutex<HashMap<u64, RaftPeerClient<tonic::transport::Channel>>>,
}

/// How long a forwarded lease call may take before it is retried.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

impl PeerClients {
    pub(crate) fn new(cluster_id: u64, urls: HashMap<u64, String>) -> Self {
        PeerClients { cluster_id, urls, clients: Mutex::new(HashMap::new()) }
    }

    fn client(&self, peer: u64) -> Result<RaftPeerClient<tonic::transport::Channel>, NodeError> {
        if let Some(client) = self.clients.lock().get(&peer) {
            return Ok(client.clone());
        }
        let url = self.urls.get(&peer).ok_or(NodeError::NotLeader)?;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| NodeError::Config(format!("peer URL {url}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(FORWARD_TIMEOUT)
            .timeout(FORWARD_TIMEOUT);
        let client = RaftPeerClient::new(endpoint.connect_lazy());
        self.clients.lock().insert(peer, client.clone());
        Ok(client)
    }

    pub(crate) async fn renew(&self, leader: u64, id: i64) -> Result<i64, NodeError> {
        let request = LeaseRenewForward { cluster_id: self.cluster_id, id };
        let answer = self.client(leader)?.lease_renew(request).await.map_err(forwarding_error)?;
        Ok(answer.into_inner().ttl)
    }

    pub(crate) async fn time_to_live(&self, leader: u64, id: i64, keys: bool) -> Result<TimeToLive, NodeError> {
        let request = LeaseTimeToLiveForward { cluster_id: self.cluster_id, id, keys };
        let answer = self.client(leader)?.lease_time_to_live(request).await.map_err(forwarding_error)?.into_inner();
        Ok(TimeToLive { id, granted_ttl: answer.granted_ttl, ttl: answer.ttl, keys: answer.keys })
    }
}

/// The leader's refusal, back in the member's terms: an unknown lease is an
/// answer; anything else (not primary yet, unreachable) is worth a retry.
fn forwarding_error(status: tonic::Status) -> NodeError {
    match status.code() {
        tonic::Code::NotFound => NodeError::Lease(LeaseError::NotFound),
        tonic::Code::FailedPrecondition => NodeError::NotLeader,
        _ => NodeError::Storage(format!("forwarding to the leader: {}", status.message())),
    }
}
