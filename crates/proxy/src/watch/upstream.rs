//! One watch held open on the cluster, whatever happens to the member it
//! is on.
//!
//! Invariant: `next` is the first revision not yet handed to the sink.
//! Every (re)open asks for exactly `next`, so after a member dies, loses
//! its leader or is partitioned away (the stream requires a leader, so
//! the member ends it), the watch resumes on the next member with no gap
//! and no repeat. Fragments are joined here, so a revision's events always
//! travel together. Only the cluster ends a watch: a compacted resume
//! revision, or a refusal such as a permission error.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchProgressRequest, WatchRequest};
use keel_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::Request;

use crate::upstream::endpoint_failed;
use crate::Shared;

/// What a watch is on, as the cluster sees it (the namespace applied):
/// watches with equal specs and the same caller get the same events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Spec {
    pub(crate) key: Vec<u8>,
    pub(crate) range_end: Vec<u8>,
    /// Sorted, so the order a client listed them in does not split groups.
    pub(crate) filters: Vec<i32>,
    pub(crate) prev_kv: bool,
    /// The caller's token: a watch is checked against its caller's
    /// permissions, so callers never share one.
    pub(crate) identity: Option<Vec<u8>>,
}

/// What an upstream watch reports, in order.
#[derive(Debug, Clone)]
pub(crate) enum Note {
    /// The watch exists; `revision`: everything up to it is behind it.
    Created {
        header: ResponseHeader,
    },
    /// One or more whole revisions' events.
    Events {
        header: ResponseHeader,
        events: Arc<Vec<Event>>,
    },
    /// Nothing more up to `header.revision`.
    Progress {
        header: ResponseHeader,
    },
    Canceled {
        header: ResponseHeader,
        reason: String,
        compact_revision: i64,
        created: bool,
    },
}

impl Note {
    /// The revision up to which everything has been reported, when known.
    pub(crate) fn revision(&self) -> Option<i64> {
        match self {
            Note::Created { header } | Note::Progress { header } => Some(header.revision),
            Note::Events { events, .. } => events.last().and_then(|e| e.kv.as_ref()).map(|kv| kv.mod_revision),
            Note::Canceled { .. } => None,
        }
    }
}

/// Where notes go; `false` from `deliver`: nobody listens, stop.
pub(crate) trait Sink: Send {
    fn deliver(&mut self, note: Note) -> impl std::future::Future<Output = bool> + Send;

    /// The stream broke; the watch resumes from the first revision not
    /// delivered, and nothing is delivered until it has.
    fn interrupted(&mut self) {}

    /// A notification the watch answers with a progress request upstream
    /// (the cache waits for a revision this way).
    fn progress_requests(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Runs until the cluster cancels the watch or the sink goes away.
/// `start`: 0 for "from now", else the first revision wanted. With
/// `quiet_created`, the first Created is not reported (a watch resuming
/// for a listener that already had one).
pub(crate) async fn run(shared: Arc<Shared>, spec: Arc<Spec>, start: i64, quiet_created: bool, mut sink: impl Sink) {
    let mut next = start;
    let mut created = quiet_created;
    let mut backoff = MIN_BACKOFF;
    let mut metadata = MetadataMap::new();
    if let Some(token) = spec.identity.as_ref().and_then(|t| t.as_slice().try_into().ok()) {
        metadata.insert("token", token);
    }
    // Without a leader a member cannot see new writes: make it end the
    // stream so the watch moves to a member that can.
    metadata.insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
    loop {
        let picked = shared.upstream.pick();
        let (requests, outgoing) = mpsc::channel(4);
        let create = WatchCreateRequest {
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: next,
            progress_notify: true,
            filters: spec.filters.clone(),
            prev_kv: spec.prev_kv,
            watch_id: 0,
            fragment: true,
        };
        let _ = requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
        let mut request = Request::new(ReceiverStream::new(outgoing));
        *request.metadata_mut() = metadata.clone();
        let opened =
            WatchClient::new(picked.channel.clone()).max_decoding_message_size(usize::MAX).watch(request).await;
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) if endpoint_failed(&status) => {
                tracing::debug!(endpoint = %picked.url, %status, "watch could not open");
                shared.upstream.failed(&picked);
                sink.interrupted();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(status) => {
                let header = ResponseHeader::default();
                let note = Note::Canceled {
                    header,
                    reason: status.message().to_owned(),
                    compact_revision: 0,
                    created: !created,
                };
                sink.deliver(note).await;
                return;
            }
        };
        let mut pieces: Vec<Event> = Vec::new();
        let progress = sink.progress_requests();
        loop {
            let message = match &progress {
                Some(wanted) => tokio::select! {
                    message = stream.message() => message,
                    () = wanted.notified() => {
                        let request = RequestUnion::ProgressRequest(WatchProgressRequest {});
                        // A full queue already holds a request that will do.
                        let _ = requests.try_send(WatchRequest { request_union: Some(request) });
                        continue;
                    }
                },
                None => stream.message().await,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(status) if endpoint_failed(&status) => break,
                Err(status) => {
                    let header = ResponseHeader::default();
                    let reason = status.message().to_owned();
                    sink.deliver(Note::Canceled { header, reason, compact_revision: 0, created: !created }).await;
                    return;
                }
            };
            let header = response.header.unwrap_or_default();
            if response.canceled {
                let note = Note::Canceled {
                    header,
                    reason: response.cancel_reason,
                    compact_revision: response.compact_revision,
                    created: response.created && !created,
                };
                sink.deliver(note).await;
                return;
            }
            if response.created {
                backoff = MIN_BACKOFF;
                if next == 0 {
                    next = header.revision + 1;
                }
                if !created {
                    created = true;
                    let mut header = header;
                    header.revision = next - 1;
                    if !sink.deliver(Note::Created { header }).await {
                        return;
                    }
                }
                continue;
            }
            if response.fragment {
                pieces.extend(response.events);
                continue;
            }
            let events = if pieces.is_empty() {
                response.events
            } else {
                pieces.extend(response.events);
                std::mem::take(&mut pieces)
            };
            let note = if events.is_empty() {
                // A progress notification: all of the watch's events up to
                // the header's revision were sent before it.
                if header.revision < next {
                    continue;
                }
                next = header.revision + 1;
                Note::Progress { header }
            } else {
                next = events.last().and_then(|e| e.kv.as_ref()).map_or(next, |kv| kv.mod_revision + 1);
                Note::Events { header, events: Arc::new(events) }
            };
            if !sink.deliver(note).await {
                return;
            }
        }
        drop(requests);
        sink.interrupted();
        tracing::info!(endpoint = %picked.url, resume = next, "upstream watch ended; resuming");
        shared.upstream.failed(&picked);
        shared.metrics.watch_resumes.inc();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
