//! The watchers: each records every response it gets on `/rb/` — events
//! and progress notifications — and, whenever its stream ends, breaks or
//! falls silent, opens a new one on the same member from the revision after
//! the last one it is sure of (its last event, or its last progress
//! notification: what a client restarted from a bookmark does). So a
//! watcher outlives kills, pauses and the replacement of its member, and
//! every reconnect is part of what the checks judge (reliable, resumable,
//! bookmarkable: `keel_lincheck::watch`).
//!
//! Two ways of watching:
//! - [`Via::Raw`]: the gRPC stream itself, so the checks see exactly what
//!   the member sent (a client library would drop duplicates). It asks for
//!   periodic progress notifications (`progress_notify`; members run with a
//!   1 s interval) and sends a progress request every second.
//! - [`Via::Client`]: `keel-client`'s watch (which itself resumes a broken
//!   stream, and retries a re-creation that timed out), with periodic
//!   progress notifications and a progress request every second
//!   (`Watcher::request_progress`).
//!
//! A stream that delivers nothing for [`SILENT`] while notifications are
//! due is taken for dead (a member killed while its link was down leaves a
//! half-open TCP connection behind) and reopened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keel_client::WatchOptions;
use keel_lincheck::events::Event;
use keel_lincheck::watch::{Delivery, WatchLog};
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::cluster::member_client;
use super::workload::{event, Clock, Recorder, ALL_PREFIX, CALL_TIMEOUT};

/// How often a raw watcher asks for progress (and members notify).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Silence after which a stream is taken for dead.
const SILENT: Duration = Duration::from_secs(6);

/// How a watcher talks to its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Raw,
    Client,
}

/// Why a stream was left.
enum Ended {
    Stopped,
    Reopen(String),
}

/// One watcher's state across its streams.
struct State {
    name: String,
    log: Arc<Mutex<WatchLog>>,
    clock: Clock,
    /// The revision to (re)open from: every event below it was delivered.
    next: u64,
    seen: watch::Sender<u64>,
}

impl State {
    /// Records one response; `Err` with why the stream must be left.
    fn record(&mut self, response: &WatchResponse) -> Result<(), String> {
        if response.canceled {
            return Err(format!(
                "canceled by the member (compact revision {}): {}",
                response.compact_revision, response.cancel_reason
            ));
        }
        if response.created {
            return Ok(());
        }
        let received = self.clock.now();
        let events: Vec<Event> = response.events.iter().map(event).collect();
        match events.iter().map(|e| e.revision).max() {
            Some(highest) => {
                self.next = self.next.max(highest + 1);
                self.seen.send_if_modified(|s| {
                    let bigger = highest > *s;
                    *s = (*s).max(highest);
                    bigger
                });
                self.log.lock().deliveries.push(Delivery::events(received, events));
            }
            None => {
                // A progress notification: every event up to the header's
                // revision was sent, so a resume may start after it.
                let revision = response.header.as_ref().map_or(0, |h| h.revision).max(0) as u64;
                self.next = self.next.max(revision + 1);
                self.log.lock().deliveries.push(Delivery::progress(received, revision));
            }
        }
        Ok(())
    }
}

/// A watcher on `/rb/` from `start_revision` until `stop` says so; `seen`
/// carries the highest revision of an event delivered.
#[allow(clippy::too_many_arguments)]
pub async fn watcher(
    name: String,
    endpoint: String,
    start_revision: u64,
    via: Via,
    clock: Clock,
    rec: Arc<Recorder>,
    seen: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let log = Arc::new(Mutex::new(WatchLog {
        name: name.clone(),
        prefix: ALL_PREFIX.as_bytes().to_vec(),
        start_revision,
        caught_up_to: None,
        deliveries: Vec::new(),
    }));
    rec.watches.lock().push(log.clone());
    let mut state = State { name, log, clock, next: start_revision, seen };
    loop {
        if *stop.borrow() {
            return;
        }
        let ended = match via {
            Via::Raw => raw(&endpoint, &mut state, &mut stop).await,
            Via::Client => client(&endpoint, &mut state, &mut stop).await,
        };
        match ended {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Reopen(why)) => {
                rec.reopens.lock().entry(state.name.clone()).or_default().push(why);
            }
            // Could not open: the member is down, paused or cut off.
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn raw(endpoint: &str, state: &mut State, stop: &mut watch::Receiver<bool>) -> Result<Ended> {
    let (requests, mut responses) = tokio::time::timeout(CALL_TIMEOUT, open_raw(endpoint, state.next))
        .await
        .context("opening the watch timed out")??;
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stopped),
            _ = ticker.tick() => {
                if heard.elapsed() > SILENT {
                    return Ok(Ended::Reopen(format!("silent for {SILENT:?}")));
                }
                let progress = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                let _ = requests.try_send(progress);
            }
            message = responses.message() => match message {
                Ok(Some(response)) => {
                    heard = Instant::now();
                    if let Err(why) = state.record(&response) {
                        return Ok(Ended::Reopen(why));
                    }
                }
                Ok(None) => return Ok(Ended::Reopen("stream closed".to_owned())),
                Err(status) => return Ok(Ended::Reopen(format!("stream broke: {:?}", status.code()))),
            }
        }
    }
}

/// A new watch stream from `start`, once the member confirmed it.
async fn open_raw(endpoint: &str, start: u64) -> Result<(mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>)> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await?;
    let (requests, rx) = mpsc::channel(4);
    let create = WatchCreateRequest {
        key: ALL_PREFIX.as_bytes().to_vec(),
        range_end: keel_client::prefix_end(ALL_PREFIX.as_bytes()),
        start_revision: start as i64,
        progress_notify: true,
        ..WatchCreateRequest::default()
    };
    requests.try_send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })?;
    let mut responses = WatchClient::new(channel).watch(ReceiverStream::new(rx)).await?.into_inner();
    let created = responses.message().await?.context("the watch stream closed before it was created")?;
    if created.canceled || !created.created {
        bail!("watch not created: {}", created.cancel_reason);
    }
    Ok((requests, responses))
}

async fn client(endpoint: &str, state: &mut State, stop: &mut watch::Receiver<bool>) -> Result<Ended> {
    let client = member_client(endpoint, CALL_TIMEOUT).await?;
    let options = WatchOptions::new().with_prefix().with_start_revision(state.next as i64).with_progress_notify();
    let mut stream = tokio::time::timeout(CALL_TIMEOUT * 2, client.watch(ALL_PREFIX, options))
        .await
        .context("opening the watch timed out")??;
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stopped),
            _ = ticker.tick() => {
                if heard.elapsed() > SILENT {
                    return Ok(Ended::Reopen(format!("silent for {SILENT:?}")));
                }
                if let Err(err) = stream.request_progress() {
                    return Ok(Ended::Reopen(format!("keel-client: {err}")));
                }
            }
            next = stream.next() => match next {
                Some(Ok(response)) => {
                    heard = Instant::now();
                    if let Err(why) = state.record(&response) {
                        return Ok(Ended::Reopen(why));
                    }
                }
                Some(Err(err)) => return Ok(Ended::Reopen(format!("keel-client: {err}"))),
                None => return Ok(Ended::Reopen("keel-client's stream ended".to_owned())),
            }
        }
    }
}

/// Reopens by watcher, counted by reason, for the report.
pub fn reopen_summary(reopens: &BTreeMap<String, Vec<String>>, watcher: &str) -> String {
    let Some(list) = reopens.get(watcher) else { return "never reopened".to_owned() };
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for why in list {
        *by_reason.entry(why.as_str()).or_default() += 1;
    }
    let reasons: Vec<String> = by_reason.iter().map(|(why, n)| format!("{n}× {why}")).collect();
    format!("reopened {} times ({})", list.len(), reasons.join("; "))
}
