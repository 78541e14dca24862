//! The slow watcher: one watch stream whose client stops reading, while other
//! clients put. A server must not let it change their put latency (its
//! events wait for it, in the server's buffers or in storage), and must
//! still give it every event, once, when it reads again.
//!
//! `bench slow-watcher` runs the same put load twice on one server, without
//! and then with the stalled stream; `compare` gives each half a fresh server.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::Streaming;

use super::delivery::{Delivery, Ledger};
use super::load::{self, Outcome};
use super::workload::Plan;

/// HTTP/2's default window (grpc-go's before it measures the link): the
/// server can push this much to the stalled stream before it must hold back.
const WINDOW: u32 = 65_535;

/// How long the stalled watcher, reading again, waits for an event before
/// calling the rest missing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A watch on every key, on a connection of its own, that nobody reads.
pub struct StalledWatch {
    /// Kept open: dropping it would half-close the stream.
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    watch_id: i64,
    /// The first revision the watch reports.
    from: i64,
}

impl StalledWatch {
    /// Creates the watch from the next revision, reads its `Created`, and stops.
    pub async fn open(endpoint: &str) -> Result<Self> {
        let from = current_revision(endpoint).await? + 1;
        let endpoint_config = Endpoint::from_shared(endpoint.to_owned())?
            .tcp_nodelay(true)
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW);
        let channel = super::dial::dial(endpoint_config).await.with_context(|| format!("connect to {endpoint}"))?;
        let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
        let (requests, outgoing) = mpsc::channel(1);
        // Every key: etcd's "\0" to "\0".
        let create =
            WatchCreateRequest { key: vec![0], range_end: vec![0], start_revision: from, ..Default::default() };
        requests
            .send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })
            .await
            .map_err(|_| anyhow!("stalled watch stream closed"))?;
        let mut responses =
            client.watch(ReceiverStream::new(outgoing)).await.context("opening the stalled watch")?.into_inner();
        let created = responses.message().await?.ok_or_else(|| anyhow!("stalled watch stream closed"))?;
        if !created.created || created.canceled {
            bail!("the stalled watch was not created ({:?})", created.cancel_reason);
        }
        Ok(StalledWatch { requests, responses, watch_id: created.watch_id, from })
    }

    /// Reads again: revisions from the watch's start through `through` must
    /// each arrive once, in order (nobody but the run writes).
    pub async fn drain(mut self, through: i64) -> Result<Delivery> {
        let revisions = usize::try_from(through - self.from + 1).unwrap_or(0);
        let mut ledger = Ledger::new(revisions, revisions);
        let mut delivery = Delivery::default();
        while !ledger.is_done() {
            let response = match tokio::time::timeout(IDLE_TIMEOUT, self.responses.message()).await {
                Err(_) => break,
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => {
                    delivery.note("the stalled watch stream was closed by the server".to_owned());
                    break;
                }
                Ok(Err(status)) => {
                    delivery.note(format!(
                        "the stalled watch stream failed: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    break;
                }
            };
            if response.watch_id != self.watch_id {
                delivery.note(format!("a response for watch id {} on the stalled stream", response.watch_id));
                break;
            }
            for event in &response.events {
                let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let n = usize::try_from(revision - self.from).ok();
                ledger.record(n, true, revision);
            }
            if response.canceled {
                ledger.cancel(format!("{:?} (compacted at {})", response.cancel_reason, response.compact_revision));
            }
        }
        let from = self.from;
        delivery.add(
            &ledger,
            || "the stalled watcher".to_owned(),
            || ledger.first_missing(|_| true).map(|n| n + from as usize),
        );
        drop(self.requests);
        Ok(delivery)
    }
}

/// The store's revision now.
pub async fn current_revision(endpoint: &str) -> Result<i64> {
    let channel = super::dial::dial(Endpoint::from_shared(endpoint.to_owned())?)
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    let mut kv = KvClient::new(channel);
    let response = kv.range(RangeRequest { key: vec![0], limit: 1, count_only: true, ..Default::default() }).await?;
    response.into_inner().header.map(|h| h.revision).ok_or_else(|| anyhow!("a range response without a header"))
}

/// `plan` with one stalled watcher: the put load's outcome, then what the
/// stalled watcher received once it read again.
pub async fn run_stalled(endpoints: &[String], plan: &Plan) -> Result<(Outcome, Delivery)> {
    let endpoint = endpoints.first().ok_or_else(|| anyhow!("no endpoints"))?;
    let stalled = StalledWatch::open(endpoint).await?;
    let outcome = load::run(endpoints, plan).await?;
    let through = current_revision(endpoint).await?;
    let delivery = stalled.drain(through).await?;
    Ok((outcome, delivery))
}

/// Both halves of `bench slow-watcher`.
pub struct SlowOutcome {
    pub without: Outcome,
    pub with: Outcome,
    pub stalled: Delivery,
}

impl SlowOutcome {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "Without a stalled watcher:\n{}", self.without.render());
        let _ = write!(out, "\nWith one stalled watch stream:\n{}", self.with.render());
        let (without, with) = (self.without.combined(), self.with.combined());
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "\nWith/without: requests/sec {:.2}, p50 {:.2}, p99 {:.2}",
            with.requests_per_sec() / without.requests_per_sec().max(f64::MIN_POSITIVE),
            ratio(with.percentile(50.0), without.percentile(50.0)),
            ratio(with.percentile(99.0), without.percentile(99.0)),
        );
        let _ = writeln!(out, "Stalled watcher, reading again: {}", self.stalled.render());
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "without": self.without.to_json(),
            "with": self.with.to_json(),
            "stalled_watcher": self.stalled.to_json(),
        })
    }
}

/// `bench slow-watcher`: on one server, the put load without, then with, a stalled watcher.
pub async fn run(endpoints: &[String], plan: &Plan) -> Result<SlowOutcome> {
    let without = load::run(endpoints, plan).await?;
    let (with, stalled) = run_stalled(endpoints, plan).await?;
    Ok(SlowOutcome { without, with, stalled })
}
