//! The Watch service: one bidirectional stream per client carrying many
//! watches, on the member's watch hub.
//!
//! Two tasks per stream. The receiving task turns requests into hub calls;
//! the sending task turns the hub's deliveries, already in their final order,
//! into responses: it fills `prev_kv`, splits large responses for watches
//! that asked for fragments, and asks for the periodic progress
//! notifications. A client that stops reading fills the outgoing buffer,
//! then the hub's; from there its watchers catch up from storage and no one
//! else waits for it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use keel_node::Member;
use keel_proto::etcdserverpb::watch_create_request::FilterType;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::watch_server::Watch;
use keel_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};

use crate::identity::Credentials;
use keel_watch_hub::{Delivery, Filters, WatchSpec, WatchStream};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Deliveries the hub may queue for one stream before its watchers fall back
/// to catching up from storage (etcd's `chanBufLen`).
const HUB_BUFFER: usize = 128;
/// Responses waiting for the client to read them.
const OUT_BUFFER: usize = 16;

/// Far enough away to mean never, near enough not to overflow an Instant.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub type WatchResponses = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

pub struct WatchService {
    member: Arc<Member>,
    max_request_bytes: usize,
    progress_interval: Duration,
}

impl WatchService {
    /// `max_request_bytes` sizes fragments; `progress_interval` spaces the
    /// progress notifications of watches that asked for them.
    pub fn new(member: Arc<Member>, max_request_bytes: usize, progress_interval: Duration) -> Self {
        WatchService { member, max_request_bytes, progress_interval }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<WatchResponses>, Status> {
        let credentials = Credentials::of(&request);
        Ok(Response::new(self.start(credentials, request.into_inner())))
    }
}

impl WatchService {
    /// A watch stream fed by `requests`, for the caller of `caller`: what
    /// the gRPC Watch runs, for other transports too (the JSON gateway).
    pub fn open<T, S>(&self, caller: &Request<T>, requests: S) -> WatchResponses
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        self.start(Credentials::of(caller), requests)
    }

    fn start<S>(&self, credentials: Credentials, requests: S) -> WatchResponses
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let (stream, deliveries) = self.member.watches().open_stream(HUB_BUFFER);
        let stream = Arc::new(stream);
        let (out, responses) = mpsc::channel(OUT_BUFFER);
        let gate = Gate { member: self.member.clone(), credentials, out: out.clone() };
        tokio::spawn(receive(requests, stream.clone(), gate));
        let sender = Sender {
            member: self.member.clone(),
            stream,
            out,
            max_request_bytes: self.max_request_bytes,
            watches: HashMap::new(),
            progress_due: HashMap::new(),
        };
        tokio::spawn(sender.run(deliveries, self.progress_interval));
        Box::pin(ReceiverStream::new(responses))
    }
}

/// Requests in, hub calls out. Ends with the client's side of the stream;
/// like etcd, a client that half-closes keeps its watches until it leaves.
async fn receive<S>(mut requests: S, stream: Arc<WatchStream>, gate: Gate)
where
    S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
{
    while let Some(Ok(request)) = requests.next().await {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                if !gate.admits(&create).await {
                    continue;
                }
                // Refusals reach the client as a Created/Canceled response.
                let _ = stream.watch(spec_of(create)).await;
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                stream.cancel(cancel.watch_id).await;
            }
            Some(RequestUnion::ProgressRequest(_)) => stream.request_progress_all(),
            None => {}
        }
    }
}

/// Who may create watches on a stream: the caller is resolved again for
/// each (a token's lifetime starts over with every use); watching a range
/// needs reading it. Permissions are checked when a watch is created only,
/// as etcd does.
struct Gate {
    member: Arc<Member>,
    credentials: Credentials,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl Gate {
    /// False after telling the client its watch is refused, as etcd does:
    /// created and canceled at once, with watch id -1 and the error as Go
    /// prints a gRPC status.
    async fn admits(&self, create: &WatchCreateRequest) -> bool {
        let checked = match self.credentials.resolve(&self.member).await {
            Ok(who) => self
                .member
                .auth()
                .state()
                .check_watch(&who, &create.key, &create.range_end)
                .map_err(|err| crate::errors::node_error(keel_node::NodeError::Auth(err))),
            Err(status) => Err(status),
        };
        let Err(status) = checked else { return true };
        let response = WatchResponse {
            header: Some(self.member.header()),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: format!("rpc error: code = {:?} desc = {}", status.code(), status.message()),
            ..Default::default()
        };
        let _ = self.out.send(Ok(response)).await;
        false
    }
}

fn spec_of(create: WatchCreateRequest) -> WatchSpec {
    let mut filters = Filters::default();
    for filter in &create.filters {
        match FilterType::try_from(*filter) {
            Ok(FilterType::Noput) => filters.no_put = true,
            Ok(FilterType::Nodelete) => filters.no_delete = true,
            Err(_) => {}
        }
    }
    WatchSpec {
        watch_id: create.watch_id,
        key: create.key,
        range_end: create.range_end,
        start_revision: create.start_revision,
        filters,
        progress_notify: create.progress_notify,
        prev_kv: create.prev_kv,
        fragment: create.fragment,
    }
}

struct Sender {
    member: Arc<Member>,
    stream: Arc<WatchStream>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    max_request_bytes: usize,
    /// What each live watch asked for, learnt from its `Created`.
    watches: HashMap<i64, Arc<WatchSpec>>,
    /// Watches with progress_notify: true when nothing was sent to them in
    /// the last interval (etcd's rule: progress only for quiet watches).
    progress_due: HashMap<i64, bool>,
}

/// The client went away.
struct Gone;

impl Sender {
    async fn run(mut self, mut deliveries: mpsc::Receiver<Delivery>, progress_interval: Duration) {
        // A zero interval turns periodic progress off.
        let progress_interval = if progress_interval.is_zero() { NEVER } else { progress_interval };
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + progress_interval, progress_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                () = self.out.closed() => return,
                delivery = deliveries.recv() => match delivery {
                    Some(delivery) => self.deliver(self.stream.took(delivery)).await,
                    None => return,
                },
                _ = ticker.tick() => {
                    for (id, due) in &mut self.progress_due {
                        if *due {
                            self.stream.request_progress(*id);
                        }
                        *due = true;
                    }
                    Ok(())
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn deliver(&mut self, delivery: Delivery) -> Result<(), Gone> {
        match delivery {
            Delivery::Created { watch_id, revision, spec, error } => {
                let response = WatchResponse {
                    header: Some(self.member.header_at(revision)),
                    watch_id,
                    created: true,
                    canceled: error.is_some(),
                    cancel_reason: error.map(|e| e.to_string()).unwrap_or_default(),
                    ..Default::default()
                };
                if response.cancel_reason.is_empty() {
                    if spec.progress_notify {
                        self.progress_due.insert(watch_id, true);
                    }
                    self.watches.insert(watch_id, spec);
                }
                self.send(response).await
            }
            Delivery::Events { watch_id, revision, events } => {
                let Some(spec) = self.watches.get(&watch_id).cloned() else { return Ok(()) };
                let mut events = events.to_vec();
                if spec.prev_kv {
                    events = self.member.with_prev_kvs(events).await;
                }
                if let Some(due) = self.progress_due.get_mut(&watch_id) {
                    *due = false;
                }
                let response = WatchResponse {
                    header: Some(self.member.header_at(revision)),
                    watch_id,
                    events,
                    ..Default::default()
                };
                if spec.fragment {
                    for part in fragments(response, self.max_request_bytes) {
                        self.send(part).await?;
                    }
                    Ok(())
                } else {
                    self.send(response).await
                }
            }
            Delivery::Progress { watch_id, revision } => {
                self.send(WatchResponse {
                    header: Some(self.member.header_at(revision)),
                    watch_id,
                    ..Default::default()
                })
                .await
            }
            Delivery::Canceled { watch_id, revision, compact_revision } => {
                self.watches.remove(&watch_id);
                self.progress_due.remove(&watch_id);
                self.send(WatchResponse {
                    header: Some(self.member.header_at(revision)),
                    watch_id,
                    canceled: true,
                    compact_revision,
                    ..Default::default()
                })
                .await
            }
        }
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }
}

/// `WatchResponse.events`' field number in etcd's rpc.proto.
const WATCH_RESPONSE_EVENTS_FIELD: u32 = 11;

/// etcd's `sendFragments`: a response of several events whose encoding
/// reaches `max_bytes` is split into parts below it (a single event larger
/// than that travels alone); every part but the last has `fragment` set.
fn fragments(response: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if response.encoded_len() < max_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let mut template = response;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    // The part's size is kept as a running sum (each event's bytes in the
    // repeated field), so splitting stays linear in the number of events.
    let base = template.encoded_len();
    let mut size = base;
    let mut parts = Vec::new();
    let mut current = template.clone();
    for event in events {
        let event_len = prost::encoding::message::encoded_len(WATCH_RESPONSE_EVENTS_FIELD, &event);
        current.events.push(event);
        size += event_len;
        if current.events.len() > 1 && size >= max_bytes {
            let overflow = current.events.pop().expect("just pushed");
            parts.push(std::mem::replace(&mut current, template.clone()));
            current.events.push(overflow);
            size = base + event_len;
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use keel_proto::mvccpb::{Event, KeyValue};

    use super::*;

    fn event(size: usize) -> Event {
        Event {
            kv: Some(KeyValue { key: b"k".to_vec(), value: vec![7; size], ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn small_responses_are_not_split() {
        let response = WatchResponse { events: vec![event(10), event(10)], ..Default::default() };
        let parts = fragments(response.clone(), 1000);
        assert_eq!(parts, vec![response]);
    }

    #[test]
    fn large_responses_split_below_the_limit_and_keep_every_event() {
        let response =
            WatchResponse { watch_id: 3, events: (0..10).map(|_| event(100)).collect(), ..Default::default() };
        let parts = fragments(response, 350);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment && p.encoded_len() < 350));
        assert!(!parts.last().unwrap().fragment);
        assert!(parts.iter().all(|p| p.watch_id == 3));
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
    }

    #[test]
    fn an_oversized_event_travels_alone() {
        let response = WatchResponse { events: vec![event(10), event(1000), event(10)], ..Default::default() };
        let parts = fragments(response, 200);
        assert_eq!(parts.iter().map(|p| p.events.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
    }

    /// The running size is the encoded size: every part but the last stops
    /// just below the limit (one more event would reach it), for a revision
    /// of 100,000 events of mixed sizes, split in time linear in its events.
    #[test]
    fn running_sizes_match_the_encoding() {
        let events: Vec<Event> = (0..100_000).map(|i| event(i % 300)).collect();
        let response = WatchResponse { watch_id: 9, events: events.clone(), ..Default::default() };
        let limit = 64 * 1024;
        let parts = fragments(response, limit);
        let mut next = 0;
        for (i, part) in parts.iter().enumerate() {
            next += part.events.len();
            if i + 1 < parts.len() {
                assert!(part.encoded_len() < limit);
                let mut one_more = part.clone();
                one_more.events.push(events[next].clone());
                assert!(one_more.encoded_len() >= limit, "part {i} stopped early");
            }
        }
        assert_eq!(next, events.len());
    }
}
