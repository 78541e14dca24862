//! The Watch service: each client stream is served by one task that turns
//! the client's creates, cancels and progress requests into upstream
//! watches (`group.rs` for watches from "now", which are shared;
//! `upstream.rs` for the rest) and their notes into etcd's responses,
//! with the client's own watch ids, fragments and namespace.

mod group;
mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::watch_server::Watch;
use keel_proto::etcdserverpb::{ResponseHeader, StatusRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use keel_proto::mvccpb::Event;
use prost::Message;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

pub(crate) use group::Groups;
use group::{DirectSink, Group, Queue};
pub(crate) use upstream::{run, Note, Sink, Spec};

use crate::Shared;

/// Notes waiting for one client watch (its share of its stream's queue). A
/// watch whose notes find it full leaves its group for an upstream watch
/// of its own (see `group.rs`).
const WATCH_QUEUE: usize = 64;
/// Responses waiting for the client to read them.
const RESPONSES_QUEUE: usize = 16;
/// How long a progress request on a stream without watches waits for the
/// upstream's current revision before answering with the latest seen.
const PROGRESS_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// etcd's `AutoWatchID`: let the server pick.
const AUTO_WATCH_ID: i64 = 0;

static NEXT_WATCH: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
pub(crate) struct WatchProxy(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl Watch for WatchProxy {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        let identity = request.metadata().get("token").map(|token| token.as_bytes().to_vec());
        let (responses, outgoing) = mpsc::channel(RESPONSES_QUEUE);
        let (queue, notes) = mpsc::unbounded_channel();
        let stream = ClientStream {
            shared: self.0.clone(),
            identity,
            responses,
            queue,
            watches: HashMap::new(),
            by_client_id: HashMap::new(),
            next_id: 0,
            header: ResponseHeader::default(),
        };
        tokio::spawn(stream.run(request.into_inner(), notes));
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }
}

/// One client watch as its stream knows it.
struct ClientWatch {
    client_id: i64,
    progress_notify: bool,
    fragment: bool,
    /// Every event up to this revision was sent to the client.
    delivered: i64,
    route: Route,
    /// Its share of the stream's queue: a permit per note it may have waiting.
    room: Arc<Semaphore>,
}

enum Route {
    Group(Arc<Group>),
    Own(AbortHandle),
}

struct ClientStream {
    shared: Arc<Shared>,
    identity: Option<Vec<u8>>,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Every watch's notes, each watch bounded by its `room`.
    queue: mpsc::UnboundedSender<(u64, Note)>,
    /// By proxy-internal number, which is never reused: a note for a
    /// cancelled watch cannot reach a new one with the same client id.
    watches: HashMap<u64, ClientWatch>,
    by_client_id: HashMap<i64, u64>,
    next_id: i64,
    /// The latest header seen, for the responses the proxy makes itself.
    header: ResponseHeader,
}

impl ClientStream {
    async fn run(mut self, mut requests: Streaming<WatchRequest>, mut notes: mpsc::UnboundedReceiver<(u64, Note)>) {
        loop {
            let open = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(request)) => self.request(request).await,
                    // The client closed its side or went away.
                    Ok(None) | Err(_) => false,
                },
                Some((id, note)) = notes.recv() => self.note(id, note).await,
            };
            if !open {
                break;
            }
        }
        for (id, watch) in self.watches.drain() {
            stop(&self.shared, watch, id);
            self.shared.metrics.watchers.dec();
        }
    }

    async fn send(&self, response: WatchResponse) -> bool {
        self.responses.send(Ok(response)).await.is_ok()
    }

    async fn request(&mut self, request: WatchRequest) -> bool {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                let Some(id) = self.by_client_id.remove(&cancel.watch_id) else { return true };
                if let Some(watch) = self.watches.remove(&id) {
                    stop(&self.shared, watch, id);
                }
                self.shared.metrics.watchers.dec();
                let response = WatchResponse {
                    header: Some(self.header),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                self.send(response).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Everything up to the smallest revision every watch of
                // this stream has delivered (-1: etcd's id for a reply to
                // a progress request). With no watch, the cluster's current
                // revision, as etcd 3.4's server answers.
                let header = match self.watches.values().map(|w| w.delivered).min() {
                    Some(revision) => ResponseHeader { revision, ..self.header },
                    None => self.current_header().await,
                };
                self.send(WatchResponse { header: Some(header), watch_id: -1, ..Default::default() }).await
            }
            None => true,
        }
    }

    /// The upstream member's header now (its Status, under the caller's
    /// token); the latest seen if it cannot be had.
    async fn current_header(&mut self) -> ResponseHeader {
        let mut request = Request::new(StatusRequest {});
        if let Some(value) = self.identity.as_ref().and_then(|token| MetadataValue::try_from(token.as_slice()).ok()) {
            request.metadata_mut().insert("token", value);
        }
        let status = self.shared.upstream.unary(request, true, |channel, request| async move {
            MaintenanceClient::new(channel).status(request).await
        });
        match tokio::time::timeout(PROGRESS_STATUS_TIMEOUT, status).await {
            Ok(Ok(answer)) => {
                if let Some(header) = answer.into_inner().header {
                    self.header = header;
                }
            }
            Ok(Err(status)) => tracing::debug!(%status, "no current revision for a progress request"),
            Err(_) => tracing::debug!("no current revision for a progress request: timed out"),
        }
        self.header
    }

    async fn create(&mut self, mut create: WatchCreateRequest) -> bool {
        let client_id = if create.watch_id == AUTO_WATCH_ID {
            while self.by_client_id.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        } else {
            create.watch_id
        };
        if self.by_client_id.contains_key(&client_id) {
            let response = WatchResponse {
                header: Some(self.header),
                watch_id: client_id,
                created: true,
                canceled: true,
                cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".to_owned(),
                ..Default::default()
            };
            return self.send(response).await;
        }
        if let Err(refusal) = self.shared.policy.read(&create.key, &create.range_end) {
            // As etcd refuses a watch it does not permit: created and
            // canceled at once, the reason given.
            let status = self.shared.refuse(refusal);
            let response = WatchResponse {
                header: Some(self.header),
                watch_id: client_id,
                created: true,
                canceled: true,
                cancel_reason: status.message().to_owned(),
                ..Default::default()
            };
            return self.send(response).await;
        }
        if !self.shared.namespace.is_empty() {
            self.shared.namespace.watch(&mut create);
        }
        let mut filters = create.filters.clone();
        filters.sort_unstable();
        filters.dedup();
        let spec = Spec {
            key: create.key,
            range_end: create.range_end,
            filters,
            prev_kv: create.prev_kv,
            identity: self.identity.clone(),
        };
        let id = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
        let room = Arc::new(Semaphore::new(WATCH_QUEUE));
        let queue = Queue::new(id, self.queue.clone(), room.clone());
        let groups = &self.shared.watch_groups;
        let route = match create.start_revision {
            0 => Route::Group(groups.join(&self.shared, spec, id, queue)),
            start => match groups.join_from(&self.shared, &spec, id, &queue, start) {
                Some(group) => Route::Group(group),
                None => {
                    let sink = DirectSink { queue };
                    let task = tokio::spawn(upstream::run(self.shared.clone(), Arc::new(spec), start, false, sink));
                    Route::Own(task.abort_handle())
                }
            },
        };
        self.shared.metrics.watchers.inc();
        self.by_client_id.insert(client_id, id);
        self.watches.insert(
            id,
            ClientWatch {
                client_id,
                progress_notify: create.progress_notify,
                fragment: create.fragment,
                delivered: create.start_revision.saturating_sub(1).max(0),
                route,
                room,
            },
        );
        true
    }

    async fn note(&mut self, id: u64, note: Note) -> bool {
        let Some(watch) = self.watches.get_mut(&id) else { return true };
        watch.room.add_permits(1);
        let client_id = watch.client_id;
        match note {
            Note::Created { header } => {
                watch.delivered = header.revision;
                self.header = header;
                self.send(WatchResponse {
                    header: Some(header),
                    watch_id: client_id,
                    created: true,
                    ..Default::default()
                })
                .await
            }
            Note::Progress { header } => {
                watch.delivered = watch.delivered.max(header.revision);
                self.header = header;
                if !watch.progress_notify {
                    return true;
                }
                self.send(WatchResponse { header: Some(header), watch_id: client_id, ..Default::default() }).await
            }
            Note::Events { header, events } => {
                if let Some(revision) = events.last().and_then(|e| e.kv.as_ref()).map(|kv| kv.mod_revision) {
                    watch.delivered = revision;
                }
                let fragment = watch.fragment;
                if header.revision >= self.header.revision {
                    self.header = header;
                }
                let mut events = Arc::unwrap_or_clone(events);
                if !self.shared.namespace.is_empty() {
                    events.iter_mut().for_each(|event| self.shared.namespace.strip_event(event));
                }
                for response in split(header, client_id, events, fragment, self.shared.max_send_bytes) {
                    if !self.send(response).await {
                        return false;
                    }
                }
                true
            }
            Note::Canceled { header, reason, compact_revision, created } => {
                if let Some(watch) = self.watches.remove(&id) {
                    self.by_client_id.remove(&watch.client_id);
                    stop(&self.shared, watch, id);
                    self.shared.metrics.watchers.dec();
                }
                let header = if header.cluster_id == 0 { self.header } else { header };
                let response = WatchResponse {
                    header: Some(header),
                    watch_id: client_id,
                    created,
                    canceled: true,
                    compact_revision,
                    cancel_reason: reason,
                    ..Default::default()
                };
                self.send(response).await
            }
        }
    }
}

fn stop(shared: &Shared, watch: ClientWatch, id: u64) {
    // Whatever still sends to it (a group waiting for room) gives up.
    watch.room.close();
    match watch.route {
        Route::Group(group) => shared.watch_groups.leave(shared, &group, id),
        Route::Own(task) => task.abort(),
    }
}

/// One response for the events, or, for a watch that asked for fragments,
/// as many as keep each under `limit` bytes (a single event larger than
/// the limit travels alone), all but the last marked `fragment`.
fn split(
    header: ResponseHeader,
    watch_id: i64,
    events: Vec<Event>,
    fragment: bool,
    limit: usize,
) -> Vec<WatchResponse> {
    let whole = WatchResponse { header: Some(header), watch_id, events, ..Default::default() };
    if !fragment || whole.encoded_len() <= limit {
        return vec![whole];
    }
    let base = WatchResponse { header: Some(header), watch_id, fragment: true, ..Default::default() };
    let mut out = Vec::new();
    let mut current = base.clone();
    let mut size = base.encoded_len();
    for event in whole.events {
        let len = event.encoded_len() + 8;
        if !current.events.is_empty() && size + len > limit {
            out.push(std::mem::replace(&mut current, base.clone()));
            size = base.encoded_len();
        }
        size += len;
        current.events.push(event);
    }
    current.fragment = false;
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::mvccpb::KeyValue;

    fn event(revision: i64, size: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                value: vec![b'v'; size],
                mod_revision: revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fragments_cover_every_event_once_in_order() {
        let events: Vec<Event> = (1..=10).map(|r| event(r, 100)).collect();
        let parts = split(ResponseHeader::default(), 7, events.clone(), true, 300);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment) && !parts.last().unwrap().fragment);
        assert!(parts.iter().all(|p| p.watch_id == 7 && !p.events.is_empty()));
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
        // Without fragment, one response whatever its size.
        assert_eq!(split(ResponseHeader::default(), 7, events, false, 300).len(), 1);
    }
}
