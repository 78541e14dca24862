//! The raft transport between members: one gRPC client stream per peer.
//!
//! The raft thread must never wait on the network, so `send` only queues:
//! each peer has a bounded queue drained by its own task. A full queue (a slow
//! or dead peer) drops the messages and tells raft the peer is unreachable;
//! raft retries from its own state, so nothing is lost that matters.
//!
//! Snapshots take another road: each goes, read from the leader's
//! checkpoint as it is sent, on a stream of its own (see `snapshot.rs`), at
//! most one per peer at a time, and raft hears how the transfer ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::keelpb::raft_peer_client::RaftPeerClient;
use keel_proto::keelpb::RaftBatch;
use keel_raft_node::{Message, MessageType, Transport};
use keel_tls::Connector;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Endpoint;

use crate::metrics::{PeerLinkMetrics, PeerMetrics};
use crate::snapshots::SnapshotShelf;
use crate::NodeError;

/// Messages waiting for one peer, at most (beyond: dropped, peer unreachable).
const QUEUE_BATCHES: usize = 1024;
/// Snapshot chunks read ahead of the stream, at most.
const SNAPSHOT_READ_AHEAD: usize = 4;
pub(super) const RECONNECT_AFTER: Duration = Duration::from_millis(100);
/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often each peer's round-trip time is measured (etcd's prober).
const PROBE_INTERVAL: Duration = Duration::from_secs(4);

/// The members this one talks to, changed as membership changes are applied.
/// Each peer has a bounded queue drained by its own task on the runtime.
#[derive(Clone)]
pub(crate) struct PeerSet {
    inner: Arc<PeerSetInner>,
}

struct PeerSetInner {
    runtime: tokio::runtime::Handle,
    cluster_id: u64,
    from: u64,
    queues: Mutex<HashMap<u64, Peer>>,
    unreachable: Arc<Mutex<Vec<u64>>>,
    /// A peer answered that this member was removed from the cluster.
    removed: Arc<AtomicBool>,
    /// Ended snapshot transfers: the peer, and whether it got it all.
    snapshot_outcomes: Arc<Mutex<Vec<(u64, bool)>>>,
    /// The checkpoints snapshots are read from.
    shelf: Arc<SnapshotShelf>,
    /// Dials peers: plain for `http://` URLs, TLS for `https://` ones.
    connector: Connector,
    metrics: PeerMetrics,
}

struct Peer {
    url: String,
    queue: mpsc::Sender<Vec<Vec<u8>>>,
    sending_snapshot: Arc<AtomicBool>,
    /// etcd_network_known_peers for this peer: 0 once it is dropped.
    known: keel_metrics::prometheus::IntGauge,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.known.set(0);
    }
}

impl PeerSet {
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        cluster_id: u64,
        from: u64,
        shelf: Arc<SnapshotShelf>,
        connector: Connector,
        metrics: PeerMetrics,
    ) -> PeerSet {
        PeerSet {
            inner: Arc::new(PeerSetInner {
                runtime,
                cluster_id,
                from,
                queues: Mutex::new(HashMap::new()),
                unreachable: Arc::new(Mutex::new(Vec::new())),
                removed: Arc::new(AtomicBool::new(false)),
                snapshot_outcomes: Arc::new(Mutex::new(Vec::new())),
                shelf,
                connector,
                metrics,
            }),
        }
    }

    /// Starts talking to `peer` at `url` (or moves it to a new URL).
    pub(crate) fn add(&self, peer: u64, url: &str) {
        let inner = &self.inner;
        let mut queues = inner.queues.lock();
        if queues.get(&peer).is_some_and(|p| p.url == url) || peer == inner.from {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let alive = tx.downgrade();
        let metrics = inner.metrics.link(inner.from, peer);
        // Replacing a peer drops its old queue, which ends its task.
        queues.insert(
            peer,
            Peer {
                url: url.to_owned(),
                queue: tx,
                sending_snapshot: Arc::new(AtomicBool::new(false)),
                known: metrics.known.clone(),
            },
        );
        metrics.known.set(1);
        let link = Link {
            cluster_id: inner.cluster_id,
            from: inner.from,
            peer,
            url: url.to_owned(),
            unreachable: inner.unreachable.clone(),
            removed: inner.removed.clone(),
            connector: inner.connector.clone(),
            metrics,
        };
        inner.runtime.spawn(probe_peer(url.to_owned(), link.connector.clone(), link.metrics.clone(), alive));
        inner.runtime.spawn(run_peer(link, rx));
    }

    /// Stops talking to every peer not in `members`.
    pub(crate) fn retain(&self, members: &[u64]) {
        self.inner.queues.lock().retain(|id, _| members.contains(id));
    }

    /// Stops talking to `peer` (removed from the cluster).
    pub(crate) fn remove(&self, peer: u64) {
        self.inner.queues.lock().remove(&peer);
    }

    pub(crate) fn url(&self, peer: u64) -> Option<String> {
        self.inner.queues.lock().get(&peer).map(|p| p.url.clone())
    }

    pub(crate) fn connector(&self) -> Connector {
        self.inner.connector.clone()
    }
}

/// The raft thread's side of the [`PeerSet`]: `send` only queues.
pub(crate) struct GrpcTransport {
    peers: PeerSet,
}

impl GrpcTransport {
    pub(crate) fn new(peers: PeerSet) -> GrpcTransport {
        GrpcTransport { peers }
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, messages: Vec<Message>) {
        // Per peer: its encoded messages, and how many are heartbeats.
        let mut by_peer: HashMap<u64, (Vec<Vec<u8>>, u64)> = HashMap::new();
        for message in messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(message);
                continue;
            }
            match protobuf::Message::write_to_bytes(&message) {
                Ok(bytes) => {
                    let (batch, heartbeats) = by_peer.entry(message.to).or_default();
                    batch.push(bytes);
                    *heartbeats += u64::from(message.get_msg_type() == MessageType::MsgHeartbeat);
                }
                Err(err) => tracing::error!(%err, "cannot encode a raft message"),
            }
        }
        let inner = &self.peers.inner;
        let queues = inner.queues.lock();
        for (peer, (batch, heartbeats)) in by_peer {
            match queues.get(&peer) {
                Some(p) => {
                    for batch in super::batches(batch) {
                        if p.queue.try_send(batch).is_err() {
                            inner.unreachable.lock().push(peer);
                            // The call's heartbeats count as lost (batches are
                            // cut only past 4 MiB: nearly always one batch).
                            inner.metrics.heartbeat_send_failures.inc_by(heartbeats);
                            break;
                        }
                    }
                }
                None => {
                    tracing::debug!(peer = %format!("{peer:x}"), "raft message to a member not (yet) known dropped")
                }
            }
        }
    }

    fn unreachable(&mut self) -> Vec<u64> {
        std::mem::take(&mut *self.peers.inner.unreachable.lock())
    }

    fn snapshot_outcomes(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut *self.peers.inner.snapshot_outcomes.lock())
    }

    fn removed_from_cluster(&mut self) -> bool {
        self.peers.inner.removed.load(Ordering::Acquire)
    }
}

impl GrpcTransport {
    /// Starts the transfer of a MsgSnapshot on its own task; raft hears the
    /// outcome through `snapshot_outcomes`.
    fn send_snapshot(&self, message: Message) {
        let inner = &self.peers.inner;
        let to = message.to;
        let (url, in_flight) = match inner.queues.lock().get(&to) {
            Some(peer) => (peer.url.clone(), peer.sending_snapshot.clone()),
            None => {
                inner.snapshot_outcomes.lock().push((to, false));
                return;
            }
        };
        if in_flight.swap(true, Ordering::AcqRel) {
            // The transfer under way reports for this one too.
            return;
        }
        let outcomes = inner.snapshot_outcomes.clone();
        let connector = inner.connector.clone();
        let sending = inner.metrics.snapshot_sending(to);
        let report = TransferReport { to, delivered: false, in_flight, outcomes };
        let index = message.get_snapshot().get_metadata().index;
        let Some(checkpoint) = inner.shelf.at(index) else {
            tracing::warn!(peer = %format!("{to:x}"), index, "no checkpoint for the snapshot raft sends");
            return;
        };
        // Reading the checkpoint blocks on disk: a thread of the blocking
        // pool reads ahead at most a few chunks, and the stream takes them.
        let (chunks_tx, chunks_rx) = mpsc::channel(SNAPSHOT_READ_AHEAD);
        let chunks = super::snapshot::chunks(inner.cluster_id, inner.from, &message, checkpoint);
        inner.runtime.spawn_blocking(move || {
            for chunk in chunks {
                match chunk {
                    Ok(chunk) => {
                        if chunks_tx.blocking_send(chunk).is_err() {
                            return;
                        }
                    }
                    // The stream ends without its end mark: the peer refuses it.
                    Err(err) => {
                        tracing::error!(%err, "cannot read the checkpoint for a snapshot");
                        return;
                    }
                }
            }
        });
        inner.runtime.spawn(async move {
            // The whole guard moves into the task (not just the field it sets).
            let mut report = report;
            let started = std::time::Instant::now();
            match transfer_snapshot(&url, connector, tokio_stream::wrappers::ReceiverStream::new(chunks_rx)).await {
                Ok(()) => {
                    tracing::info!(peer = %format!("{to:x}"), index, elapsed = ?started.elapsed(), "snapshot sent");
                    report.delivered = true;
                    sending.succeeded();
                }
                Err(err) => tracing::warn!(peer = %format!("{to:x}"), %err, "snapshot transfer failed"),
            }
        });
    }
}

/// Tells raft how a snapshot transfer ended, and lets the next one start,
/// when dropped: also if the task panics or the runtime drops it, so raft
/// never waits for a report that cannot come.
struct TransferReport {
    to: u64,
    delivered: bool,
    in_flight: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl Drop for TransferReport {
    fn drop(&mut self) {
        self.in_flight.store(false, Ordering::Release);
        self.outcomes.lock().push((self.to, self.delivered));
    }
}

/// Where a peer at `url` is reached, connecting for at most
/// [`CONNECT_TIMEOUT`]. Dialled with the set's [`Connector`], which turns
/// Nagle off (raft messages are small and latency-bound) and speaks TLS to
/// `https://` URLs.
pub(super) fn peer_endpoint(url: &str) -> Result<Endpoint, NodeError> {
    let endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|e| NodeError::Config(format!("peer URL {url}: {e}")))?;
    Ok(endpoint.tcp_nodelay(true).connect_timeout(CONNECT_TIMEOUT))
}

/// Streams `chunks` to the peer at `url`; the chunks are read as the stream
/// takes them, so HTTP/2 flow control paces the reader.
async fn transfer_snapshot(
    url: &str,
    connector: Connector,
    chunks: impl tokio_stream::Stream<Item = keel_proto::keelpb::SnapshotChunk> + Send + 'static,
) -> Result<(), NodeError> {
    let endpoint = peer_endpoint(url)?
        // A peer that dies mid-transfer is noticed, not waited on forever.
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| NodeError::Storage(format!("connecting to {url}: {e}")))?;
    RaftPeerClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .send_snapshot(chunks)
        .await
        .map_err(|status| NodeError::Storage(format!("peer answered {:?}: {}", status.code(), status.message())))?;
    Ok(())
}

/// What one peer's task needs of its set: not the set itself, whose queues
/// the task's lifetime depends on.
struct Link {
    cluster_id: u64,
    from: u64,
    peer: u64,
    url: String,
    unreachable: Arc<Mutex<Vec<u64>>>,
    removed: Arc<AtomicBool>,
    connector: Connector,
    metrics: PeerLinkMetrics,
}

/// Measures the round-trip time to a peer every [`PROBE_INTERVAL`] while
/// its queue exists (etcd's prober); a failed probe is not a sample.
async fn probe_peer(
    url: String,
    connector: Connector,
    metrics: PeerLinkMetrics,
    alive: mpsc::WeakSender<Vec<Vec<u8>>>,
) {
    let Ok(endpoint) = peer_endpoint(&url) else { return };
    let mut client = None;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        if alive.upgrade().is_none() {
            return;
        }
        if client.is_none() {
            client = endpoint.connect_with_connector(connector.clone()).await.ok().map(RaftPeerClient::new);
        }
        let Some(peer) = client.as_mut() else { continue };
        let started = std::time::Instant::now();
        match tokio::time::timeout(PROBE_INTERVAL, peer.probe(keel_proto::keelpb::ProbeRequest {})).await {
            Ok(Ok(_)) => metrics.round_trip_time.observe(started.elapsed().as_secs_f64()),
            _ => client = None,
        }
    }
}

async fn run_peer(link: Link, mut queue: mpsc::Receiver<Vec<Vec<u8>>>) {
    let Link { cluster_id, from, peer, url, unreachable, removed, connector, metrics } = link;
    let endpoint = match peer_endpoint(&url) {
        Ok(endpoint) => endpoint,
        Err(err) => {
            tracing::error!(%url, %err, "bad peer URL; this peer gets no raft messages");
            return;
        }
    };
    loop {
        // Wait for something to send before (re)connecting.
        let Some(first) = queue.recv().await else { return };
        let channel = match endpoint.connect_with_connector(connector.clone()).await {
            Ok(channel) => channel,
            Err(err) => {
                tracing::debug!(peer = %format!("{peer:x}"), %err, "peer unreachable");
                metrics.sent_failures.inc();
                unreachable.lock().push(peer);
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        metrics.active.inc();
        // The call's body reads the peer's queue itself: a message goes from
        // the raft thread to the task that encodes it, with no task
        // forwarding in between. The queue comes back when the call is over.
        let (back, returned) = oneshot::channel();
        let outbox = Outbox {
            first: Some(first),
            queue: Some(queue),
            back: Some(back),
            cluster_id,
            from,
            metrics: metrics.clone(),
        };
        let outcome = RaftPeerClient::new(channel).send(outbox).await;
        // The client and its connection are gone by now, and with them the
        // call's body, which hands the queue back as it drops.
        let Ok(Some(returned)) = returned.await else {
            // Every sender is gone: this peer was removed.
            metrics.active.dec();
            return;
        };
        queue = returned;
        match outcome {
            Err(status) if status.code() == super::REFUSED => {
                tracing::error!(peer = %format!("{peer:x}"), message = status.message(), "peer refused us");
            }
            Err(status) if status.code() == super::GONE => {
                tracing::error!(peer = %format!("{peer:x}"), message = status.message(), "peer refused us");
                removed.store(true, Ordering::Release);
                metrics.active.dec();
                return;
            }
            _ => {}
        }
        metrics.active.dec();
        metrics.disconnected.inc();
        metrics.sent_failures.inc();
        unreachable.lock().push(peer);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Where the raft thread's batches for one peer wait.
type PeerQueue = mpsc::Receiver<Vec<Vec<u8>>>;

/// A peer call's stream of raft batches, read straight from the peer's
/// queue; dropped (the call over), it hands the queue back, or `None` once
/// the queue has ended (no sender left).
struct Outbox {
    first: Option<Vec<Vec<u8>>>,
    queue: Option<PeerQueue>,
    back: Option<oneshot::Sender<Option<PeerQueue>>>,
    cluster_id: u64,
    from: u64,
    metrics: PeerLinkMetrics,
}

impl futures::Stream for Outbox {
    type Item = RaftBatch;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RaftBatch>> {
        let messages = match self.first.take() {
            Some(first) => first,
            None => match self.queue.as_mut() {
                Some(queue) => match std::task::ready!(queue.poll_recv(cx)) {
                    Some(messages) => messages,
                    None => {
                        self.queue = None;
                        return std::task::Poll::Ready(None);
                    }
                },
                None => return std::task::Poll::Ready(None),
            },
        };
        self.metrics.sent_bytes.inc_by(bytes_of(&messages));
        std::task::Poll::Ready(Some(RaftBatch { cluster_id: self.cluster_id, from: self.from, messages }))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            let _ = back.send(self.queue.take());
        }
    }
}

fn bytes_of(messages: &[Vec<u8>]) -> u64 {
    messages.iter().map(|message| message.len() as u64).sum()
}
