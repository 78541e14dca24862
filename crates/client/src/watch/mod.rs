//! Watches that survive reconnects.
//!
//! Each [`Watcher`] owns one gRPC watch stream and a background task that
//! reads it; dropping the watcher stops the task and closes the stream (etcd
//! then drops the server-side watcher). When the stream breaks, the task
//! re-creates the watch, on the next endpoint if the current one is down,
//! from the revision after the last one delivered (see [`resume`]).
//!
//! The task waits for the consumer: a slow reader slows the stream down
//! (HTTP/2 flow control) instead of growing a buffer without bound.
//!
//! [`Watcher::request_progress`] asks the server for a progress
//! notification. etcd answers on the stream with watch id -1 ("not
//! associated with any watch": it is for every watch of the stream, and
//! each of ours has its own). That answer is handed on but does not move
//! the resume point: etcd before 3.4.25 and 3.5.8 sends it without waiting
//! for the events still queued for the watch (etcd#15220), so trusting it
//! could skip them on a reconnect. Periodic notifications, which etcd sends
//! only to watches that have caught up, do move it.

mod resume;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_create_request::FilterType;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use self::resume::Resume;
use crate::client::{Deadline, Retry};
use crate::error::endpoint_failed;
use crate::keys::KeyRange;
use crate::retry::{is_transient, Backoff};
use crate::{Client, ClientError};

/// Responses read ahead of the consumer.
const BUFFER: usize = 16;
/// How long a cancel waits for etcd to confirm before closing the stream.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// The watch id of etcd's answer to a progress request.
const PROGRESS_ANSWER: i64 = -1;

/// What to watch and from when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    range: KeyRange,
    start_revision: i64,
    prev_kv: bool,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
}

impl WatchOptions {
    /// Changes to the single key, from now on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key that starts with the key (every key if the key is empty).
    pub fn with_prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }

    /// Every key greater than or equal to the key.
    pub fn with_from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }

    /// The keys in `[key, end)`.
    pub fn with_range(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range = KeyRange::End(end.into());
        self
    }

    /// Starts with the events of `revision` (inclusive), replaying history.
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// Each event carries the key-value as it was before the event.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// The server sends empty responses now and then that carry the
    /// revision the watch has caught up to.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }

    /// Leaves out put events.
    pub fn with_no_put(mut self) -> Self {
        self.no_put = true;
        self
    }

    /// Leaves out delete events.
    pub fn with_no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }

    fn build(&self, key: Vec<u8>) -> WatchCreateRequest {
        let (key, range_end) = self.range.resolve(key);
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if self.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        WatchCreateRequest {
            key,
            range_end,
            start_revision: self.start_revision,
            progress_notify: self.progress_notify,
            filters,
            prev_kv: self.prev_kv,
            watch_id: 0,
            fragment: false,
        }
    }
}

impl Client {
    /// Watches `key` (or a range, see `options`). Returns once etcd has
    /// created the watch, so every change after `created_revision()` is
    /// seen. The watcher is a stream of responses, each with one or more
    /// events in revision order (or none: a progress notification). It ends
    /// with `Err(Compacted)` if it must resume below the compaction
    /// revision, and after `cancel`. Across reconnects no event is lost or
    /// repeated; while no endpoint is reachable it keeps retrying.
    pub async fn watch(&self, key: impl Into<Vec<u8>>, options: WatchOptions) -> Result<Watcher, ClientError> {
        let request = options.build(key.into());
        let mut resume = Resume::new(request.start_revision);
        let (stream, created) = open(self, &request, &resume).await?;
        resume.created(&created);
        let created_revision = created.header.as_ref().map_or(0, |h| h.revision);

        let (out, rx) = mpsc::channel(BUFFER);
        let (cancel_tx, cancel) = mpsc::channel(1);
        let (progress_tx, progress) = mpsc::channel(1);
        let task = WatchTask { client: self.clone(), request, resume, out, cancel, progress };
        let task = tokio::spawn(task.run(stream));
        Ok(Watcher { created_revision, rx, cancel: Some(cancel_tx), progress: progress_tx, task })
    }
}

/// A running watch; see [`Client::watch`].
#[derive(Debug)]
pub struct Watcher {
    created_revision: i64,
    rx: mpsc::Receiver<Result<WatchResponse, ClientError>>,
    // Dropping the sender is the cancel signal.
    cancel: Option<mpsc::Sender<()>>,
    progress: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// The store revision when the watch was created.
    pub fn created_revision(&self) -> i64 {
        self.created_revision
    }

    /// Asks the server for a progress notification: a response without
    /// events whose header carries the store's current revision (see the
    /// module docs for what it promises). Requests made before the answer
    /// comes may be answered once; one made while the stream is being
    /// re-created is sent on the new stream. Fails only once the watch has
    /// ended.
    pub fn request_progress(&self) -> Result<(), ClientError> {
        match self.progress.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => Ok(()),
            Err(TrySendError::Closed(())) => {
                Err(ClientError::WatchCanceled { reason: "the watch has ended".to_owned() })
            }
        }
    }

    /// Cancels the watch on the server. Responses already received can
    /// still be read; then the stream ends.
    pub async fn cancel(&mut self) {
        if self.cancel.take().is_none() {
            return;
        }
        if timeout(CANCEL_GRACE * 2, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Stream for Watcher {
    type Item = Result<WatchResponse, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One open watch stream.
struct Open {
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    watch_id: i64,
}

/// Creates the watch on a new stream, from where `resume` says, and waits for
/// etcd to confirm.
async fn open(
    client: &Client,
    request: &WatchCreateRequest,
    resume: &Resume,
) -> Result<(Open, WatchResponse), ClientError> {
    let request = WatchCreateRequest { start_revision: resume.start_revision(), ..request.clone() };
    let max = client.max_decoding();
    let (open, created) = client
        .call(Retry::Always, Deadline::Request, |channel| {
            let create = WatchRequest { request_union: Some(RequestUnion::CreateRequest(request.clone())) };
            async move {
                let (requests, rx) = mpsc::channel(2);
                requests.try_send(create).expect("a new channel has room");
                let mut watch = WatchClient::new(channel).max_decoding_message_size(max);
                let mut responses = watch.watch(ReceiverStream::new(rx)).await?.into_inner();
                let created = responses.message().await?.ok_or_else(|| Status::unavailable("watch stream closed"))?;
                Ok((Open { requests, responses, watch_id: created.watch_id }, created))
            }
        })
        .await?;
    if created.canceled {
        return Err(canceled(&created));
    }
    if !created.created {
        return Err(ClientError::UnexpectedResponse("first watch response is not a creation"));
    }
    Ok((open, created))
}

/// An answer to a progress request: nothing but a header.
fn is_progress_answer(response: &WatchResponse) -> bool {
    response.events.is_empty() && !response.created && !response.canceled && response.compact_revision == 0
}

fn canceled(response: &WatchResponse) -> ClientError {
    if response.compact_revision > 0 {
        ClientError::Compacted { compact_revision: Some(response.compact_revision) }
    } else {
        ClientError::WatchCanceled { reason: response.cancel_reason.clone() }
    }
}

struct WatchTask {
    client: Client,
    request: WatchCreateRequest,
    resume: Resume,
    out: mpsc::Sender<Result<WatchResponse, ClientError>>,
    cancel: mpsc::Receiver<()>,
    progress: mpsc::Receiver<()>,
}

/// Why reading a stream stopped.
enum Stop {
    /// The stream broke; re-create the watch.
    Broken,
    /// Canceled, failed for good, or nobody listens any more.
    Done,
}

impl WatchTask {
    async fn run(mut self, mut stream: Open) {
        loop {
            if let Stop::Done = self.pump(&mut stream).await {
                return;
            }
            match self.reopen().await {
                Some(reopened) => stream = reopened,
                None => return,
            }
        }
    }

    async fn pump(&mut self, stream: &mut Open) -> Stop {
        loop {
            let message = tokio::select! {
                _ = self.cancel.recv() => {
                    cancel(stream).await;
                    return Stop::Done;
                }
                Some(()) = self.progress.recv() => {
                    let request = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    if stream.requests.send(request).await.is_err() {
                        return Stop::Broken;
                    }
                    continue;
                }
                message = stream.responses.message() => message,
            };
            let mut response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Stop::Broken,
                Err(status) if endpoint_failed(&status) => {
                    tracing::debug!(error = %status, "watch stream broken");
                    return Stop::Broken;
                }
                Err(status) => {
                    self.deliver(Err(status.into())).await;
                    return Stop::Done;
                }
            };
            if response.watch_id == PROGRESS_ANSWER && stream.watch_id != PROGRESS_ANSWER {
                // Handed on without moving the resume point (module docs).
                if is_progress_answer(&response) && !self.deliver(Ok(response)).await {
                    return Stop::Done;
                }
                continue;
            }
            if response.watch_id != stream.watch_id {
                continue;
            }
            if response.canceled || response.compact_revision > 0 {
                self.deliver(Err(canceled(&response))).await;
                return Stop::Done;
            }
            if response.created {
                self.resume.created(&response);
                continue;
            }
            if self.resume.accept(&mut response) && !self.deliver(Ok(response)).await {
                return Stop::Done;
            }
        }
    }

    /// Re-creates the watch, backing off while no endpoint answers.
    async fn reopen(&mut self) -> Option<Open> {
        let mut backoff = Backoff::new();
        loop {
            tokio::select! {
                _ = self.cancel.recv() => return None,
                _ = sleep(backoff.next_delay()) => {}
            }
            match open(&self.client, &self.request, &self.resume).await {
                Ok((stream, created)) => {
                    tracing::debug!(start_revision = self.resume.start_revision(), "watch resumed");
                    self.resume.created(&created);
                    return Some(stream);
                }
                Err(e) if is_transient(&e) => tracing::debug!(error = %e, "watch reconnect failed"),
                Err(e) => {
                    self.deliver(Err(e)).await;
                    return None;
                }
            }
        }
    }

    /// Hands one item to the consumer; false if it is gone or canceled.
    async fn deliver(&mut self, item: Result<WatchResponse, ClientError>) -> bool {
        tokio::select! {
            sent = self.out.send(item) => sent.is_ok(),
            _ = self.cancel.recv() => false,
        }
    }
}

/// Asks etcd to cancel the watch and waits briefly for it to confirm; the
/// stream is closed afterwards either way, which cancels it too.
async fn cancel(stream: &mut Open) {
    let request = WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: stream.watch_id })),
    };
    if stream.requests.send(request).await.is_err() {
        return;
    }
    let confirmed = async {
        while let Ok(Some(response)) = stream.responses.message().await {
            if response.watch_id == stream.watch_id && response.canceled {
                return;
            }
        }
    };
    let _ = timeout(CANCEL_GRACE, confirmed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_header_is_a_progress_answer() {
        let answer = WatchResponse { watch_id: PROGRESS_ANSWER, ..Default::default() };
        assert!(is_progress_answer(&answer));
        assert!(!is_progress_answer(&WatchResponse { canceled: true, ..answer.clone() }));
        assert!(!is_progress_answer(&WatchResponse { created: true, ..answer.clone() }));
        assert!(!is_progress_answer(&WatchResponse { compact_revision: 3, ..answer.clone() }));
        let event = keel_proto::mvccpb::Event::default();
        assert!(!is_progress_answer(&WatchResponse { events: vec![event], ..answer }));
    }

    #[test]
    fn options_fill_the_create_request() {
        let request = WatchOptions::new()
            .with_prefix()
            .with_start_revision(9)
            .with_prev_kv()
            .with_no_delete()
            .build(b"/svc/".to_vec());
        assert_eq!(request.key, b"/svc/");
        assert_eq!(request.range_end, b"/svc0");
        assert_eq!(request.start_revision, 9);
        assert!(request.prev_kv && !request.progress_notify);
        assert_eq!(request.filters, [FilterType::Nodelete as i32]);
    }
}
