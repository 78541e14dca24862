//! `bench watch` and `bench watch-latency`: watchers on many streams, puts at
//! a fixed rate, and the delay from sending each put to each watcher
//! receiving its event. Every event must arrive exactly once
//! ([`super::delivery`]).
//!
//! The order of a run: connections; then every stream opened and every
//! watcher created, each create waiting for its `Created` (timed on its own,
//! as etcd's tool reports "watch creation"); then the clock starts, the
//! putters send put `n` at `n / rate` seconds, and one task per stream reads
//! its responses until all of its watchers have every event they expect. Put
//! `n` writes key `n % keys` with its number in the value, so an event names
//! the put that caused it whatever the order puts were applied in. Putters
//! have their own connections: watch traffic never queues behind puts on the
//! client side, or the other way round.
//!
//! Latencies are measured from the moment the putter hands the put to the
//! client (etcd's `watch-latency` starts at the put's response, which leaves
//! out the commit the event waits for) and kept in a histogram: a fan-out run
//! delivers millions of events.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use keel_proto::mvccpb::event::EventType;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::delivery::{Delivery, Ledger, PutTag, Verdict};
use super::dial::Conn;
use super::histogram::Histogram;
use super::load;
use super::summary::Summary;
use super::workload::digits;

/// Every watched key starts with this byte; a prefix watch covers [`PREFIX`, `PREFIX_END`).
const PREFIX: u8 = b'w';
const PREFIX_END: u8 = PREFIX + 1;

/// Put clients sharing one connection.
const PUTTERS_PER_CONN: usize = 8;

/// What the watchers watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// `n` keys: watcher `w` watches key `w % n` (etcd's `--watched-key-total`).
    Keys(usize),
    /// Every watcher watches the prefix the puts write their `n` keys under.
    Prefix(usize),
}

impl Watched {
    /// Distinct keys the puts write.
    pub fn keys(&self) -> usize {
        match self {
            Watched::Keys(n) | Watched::Prefix(n) => *n,
        }
    }

    /// Whether watcher `w` (numbered over all streams) sees put `n`.
    pub fn wants(&self, w: usize, n: usize) -> bool {
        match self {
            Watched::Keys(keys) => n % keys == w % keys,
            Watched::Prefix(_) => true,
        }
    }

    /// How many of puts `0..puts` watcher `w` sees.
    pub fn expected(&self, w: usize, puts: usize) -> usize {
        match self {
            Watched::Keys(keys) => puts.saturating_sub(w % keys).div_ceil(*keys),
            Watched::Prefix(_) => puts,
        }
    }
}

#[derive(Clone, Debug)]
pub struct WatchPlan {
    pub streams: usize,
    pub watchers_per_stream: usize,
    /// Connections the streams are spread over.
    pub conns: usize,
    pub watched: Watched,
    pub puts: usize,
    /// Puts per second; 0 sends them as fast as the put clients go.
    pub put_rate: usize,
    /// Puts in flight at most (each client waits for its response).
    pub put_clients: usize,
    pub key_size: usize,
    pub val_size: usize,
    /// How long to wait without any event, once the puts are done, before
    /// calling the events still expected missing.
    pub idle_timeout: Duration,
}

impl WatchPlan {
    pub fn validate(&self) -> Result<()> {
        if self.streams == 0 || self.watchers_per_stream == 0 {
            bail!("--streams and --watch-per-stream must be positive");
        }
        if self.conns == 0 || self.put_clients == 0 {
            bail!("--conns and --clients must be positive");
        }
        if self.conns > self.streams {
            bail!(
                "--conns {} is more than --streams {}: some connections would carry no stream",
                self.conns,
                self.streams
            );
        }
        if self.puts == 0 {
            bail!("--put-total must be positive");
        }
        let keys = self.watched.keys();
        if keys == 0 {
            bail!("expected positive --watched-key-total, got 0");
        }
        let needed = 1 + digits(keys - 1);
        if self.key_size < needed {
            bail!(
                "--key-size {} cannot hold {keys} distinct keys (needs {needed} bytes: a prefix byte and the digits)",
                self.key_size
            );
        }
        if self.idle_timeout.is_zero() {
            bail!("the idle timeout must be positive");
        }
        PutTag::new(self.puts, self.val_size).map(drop)
    }

    pub fn watchers(&self) -> usize {
        self.streams * self.watchers_per_stream
    }

    /// Events the run must deliver: each watcher's share of the puts.
    pub fn expected_events(&self) -> usize {
        (0..self.watchers()).map(|w| self.watched.expected(w, self.puts)).sum()
    }

    /// Key `k`: the prefix byte, then `k` zero-padded to fill `key_size`.
    pub fn key(&self, k: usize) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.key_size);
        key.push(PREFIX);
        key.extend_from_slice(format!("{k:0width$}", width = self.key_size - 1).as_bytes());
        key
    }

    /// The create request of watcher `w` (numbered over all streams).
    pub fn create_request(&self, w: usize) -> WatchRequest {
        let (key, range_end) = match self.watched {
            Watched::Keys(keys) => (self.key(w % keys), Vec::new()),
            Watched::Prefix(_) => (vec![PREFIX], vec![PREFIX_END]),
        };
        let create = WatchCreateRequest { key, range_end, ..Default::default() };
        WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }
    }

    /// One line for reports: "1,000 watchers (10 streams × 100) on one key".
    pub fn describe_watchers(&self) -> String {
        let on = match self.watched {
            Watched::Keys(1) => "one key".to_owned(),
            Watched::Keys(n) => format!("{} keys", thousands(n)),
            Watched::Prefix(_) => "one prefix".to_owned(),
        };
        let watchers = self.watchers();
        format!(
            "{} watcher{} ({} stream{} × {}) on {on}",
            thousands(watchers),
            if watchers == 1 { "" } else { "s" },
            thousands(self.streams),
            if self.streams == 1 { "" } else { "s" },
            thousands(self.watchers_per_stream)
        )
    }
}

fn thousands(n: usize) -> String {
    super::compare::thousands(n)
}

/// What a watch run measured.
pub struct WatchOutcome {
    /// From sending each create to its `Created`.
    pub create: Summary,
    /// Each put's own latency; errors are failed puts.
    pub puts: Summary,
    /// From sending each put to each watcher receiving its event; errors are
    /// the delivery's problems.
    pub events: Summary,
    pub delivery: Delivery,
    pub first_put_error: Option<String>,
    /// The generator's CPU, and the wall time, over the whole run (creation included).
    pub generator_cpu: Duration,
    pub wall: Duration,
}

impl WatchOutcome {
    /// The first thing that went wrong, if anything did.
    pub fn first_problem(&self) -> Option<String> {
        if let Some(error) = &self.first_put_error {
            return Some(format!("put failed: {error}"));
        }
        (!self.delivery.is_exact()).then(|| self.delivery.render())
    }

    /// etcd's layout: the creation, put and event summaries, then the delivery check.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "Watch creation summary:\n{}", self.create.render());
        let _ = write!(out, "\nPut summary:\n{}", self.puts.render());
        let _ = write!(out, "\nWatch events summary:\n{}", self.events.render());
        let _ = writeln!(out, "\n{}", self.delivery.render());
        if let Some(error) = &self.first_put_error {
            let _ = writeln!(out, "First put error: {error}");
        }
        let _ = writeln!(
            out,
            "\nLoad generator CPU: {:.2} s over {:.2} s wall",
            self.generator_cpu.as_secs_f64(),
            self.wall.as_secs_f64()
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "create": self.create.to_json(),
            "put": self.puts.to_json(),
            "events": self.events.to_json(),
            "delivery": self.delivery.to_json(),
            "first_put_error": self.first_put_error,
            "generator_cpu_secs": self.generator_cpu.as_secs_f64(),
            "wall_secs": self.wall.as_secs_f64(),
        })
    }
}

/// When each put was handed to the client: nanoseconds after the start, plus
/// one (zero: not sent yet).
struct SendTimes {
    start: Instant,
    offsets: Vec<AtomicU64>,
}

impl SendTimes {
    fn new(start: Instant, puts: usize) -> Self {
        SendTimes { start, offsets: (0..puts).map(|_| AtomicU64::new(0)).collect() }
    }

    fn mark(&self, n: usize, at: Instant) {
        let offset = at.saturating_duration_since(self.start).as_nanos() as u64 + 1;
        self.offsets[n].store(offset, Ordering::Release);
    }

    fn get(&self, n: usize) -> Option<Instant> {
        match self.offsets.get(n)?.load(Ordering::Acquire) {
            0 => None,
            offset => Some(self.start + Duration::from_nanos(offset - 1)),
        }
    }
}

/// What every stream task shares.
struct Shared {
    plan: WatchPlan,
    tag: PutTag,
    sent: SendTimes,
    /// Events received over all streams (progress, for the idle timeout).
    events: AtomicUsize,
    /// Streams with nothing more to wait for (done, or broken).
    finished: AtomicUsize,
}

/// A stream with its watchers created, ready to read events.
struct Opened {
    index: usize,
    /// Kept open: dropping it would half-close the stream.
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    /// Server-given watch id to watcher on this stream.
    watch_ids: HashMap<i64, usize>,
    create_latencies: Vec<Duration>,
}

/// Opens stream `index` and creates its watchers one at a time.
async fn open(channel: Conn, plan: WatchPlan, index: usize) -> Result<Opened> {
    let per_stream = plan.watchers_per_stream;
    let first = index * per_stream;
    let (requests, outgoing) = mpsc::channel(per_stream);
    let closed = || anyhow!("stream {index} closed while creating its watchers");
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut create_latencies = Vec::with_capacity(per_stream);
    let mut watch_ids = HashMap::with_capacity(per_stream);
    // The first create goes out with the call: a server may hold its response
    // headers until it has something to say.
    let mut sent = Instant::now();
    requests.send(plan.create_request(first)).await.map_err(|_| closed())?;
    let mut responses =
        client.watch(ReceiverStream::new(outgoing)).await.context("opening a watch stream")?.into_inner();
    for w in 0..per_stream {
        if w > 0 {
            sent = Instant::now();
            requests.send(plan.create_request(first + w)).await.map_err(|_| closed())?;
        }
        let response = responses.message().await.with_context(closed)?.ok_or_else(closed)?;
        if !response.created || response.canceled {
            bail!("stream {index}: watcher {w} was not created ({:?})", response.cancel_reason);
        }
        create_latencies.push(sent.elapsed());
        if watch_ids.insert(response.watch_id, w).is_some() {
            bail!("stream {index}: watch id {} given to two watchers", response.watch_id);
        }
    }
    Ok(Opened { index, requests, responses, watch_ids, create_latencies })
}

/// One stream's reading of events.
struct StreamTally {
    index: usize,
    ledgers: Vec<Ledger>,
    latencies: Histogram,
    /// Watchers still expecting events.
    pending: usize,
    /// When the last of them got its last event.
    done_at: Option<Instant>,
    problem: Option<String>,
}

impl StreamTally {
    fn new(index: usize, plan: &WatchPlan) -> Self {
        let first = index * plan.watchers_per_stream;
        let ledgers: Vec<Ledger> = (first..first + plan.watchers_per_stream)
            .map(|w| Ledger::new(plan.puts, plan.watched.expected(w, plan.puts)))
            .collect();
        let pending = ledgers.iter().filter(|l| !l.is_done()).count();
        StreamTally { index, ledgers, latencies: Histogram::default(), pending, done_at: None, problem: None }
    }

    /// One response, received at `now`.
    fn absorb(&mut self, response: &WatchResponse, watch_ids: &HashMap<i64, usize>, now: Instant, shared: &Shared) {
        let Some(&w) = watch_ids.get(&response.watch_id) else {
            self.problem.get_or_insert_with(|| {
                format!("stream {}: a response for watch id {} it never created", self.index, response.watch_id)
            });
            return;
        };
        let watcher = self.index * shared.plan.watchers_per_stream + w;
        let ledger = &mut self.ledgers[w];
        let was_done = ledger.is_done();
        for event in &response.events {
            let kv = event.kv.as_ref().filter(|_| event.r#type == EventType::Put as i32);
            let put = kv.and_then(|kv| shared.tag.parse(&kv.value));
            let wanted = put.is_some_and(|n| shared.plan.watched.wants(watcher, n));
            let revision = kv.map_or(0, |kv| kv.mod_revision);
            let verdict = ledger.record(put, wanted, revision);
            if matches!(verdict, Verdict::New | Verdict::OutOfOrder) {
                // An event for a put not yet sent cannot happen; should it, it counts as instant.
                let sent = put.and_then(|n| shared.sent.get(n)).unwrap_or(now);
                self.latencies.record(now.saturating_duration_since(sent));
            }
        }
        if response.canceled {
            let reason = if response.compact_revision != 0 {
                format!("compacted at revision {}", response.compact_revision)
            } else {
                format!("{:?}", response.cancel_reason)
            };
            ledger.cancel(reason);
        }
        shared.events.fetch_add(response.events.len(), Ordering::Relaxed);
        if !was_done && ledger.is_done() {
            self.pending -= 1;
            if self.pending == 0 {
                self.finish(now, shared);
            }
        }
    }

    fn finish(&mut self, now: Instant, shared: &Shared) {
        if self.done_at.is_none() {
            self.done_at = Some(now);
            shared.finished.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads stream `opened` until told to stop (it keeps reading after its own
/// watchers are done, so a late duplicate is still caught).
async fn receive(opened: Opened, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> StreamTally {
    let Opened { index, requests, mut responses, watch_ids, .. } = opened;
    let mut tally = StreamTally::new(index, &shared.plan);
    if tally.pending == 0 {
        tally.finish(Instant::now(), &shared);
    }
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = responses.message() => message,
        };
        match message {
            Ok(Some(response)) => tally.absorb(&response, &watch_ids, Instant::now(), &shared),
            Ok(None) => {
                tally.problem.get_or_insert_with(|| format!("stream {index} closed by the server"));
                break;
            }
            Err(status) => {
                tally
                    .problem
                    .get_or_insert_with(|| format!("stream {index} failed: {:?}: {}", status.code(), status.message()));
                break;
            }
        }
    }
    // A broken stream has nothing more to wait for (its missing events are counted).
    if tally.done_at.is_none() {
        shared.finished.fetch_add(1, Ordering::Relaxed);
    }
    drop(requests);
    tally
}

/// The putters' results.
struct Puts {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

async fn put_all(kvs: Vec<KvClient<Conn>>, shared: &Arc<Shared>) -> Result<Puts> {
    let plan = &shared.plan;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..plan.put_clients {
        let mut kv = kvs[client % kvs.len()].clone();
        let (shared, next) = (shared.clone(), next.clone());
        tasks.spawn(async move {
            let plan = &shared.plan;
            let mut puts = Puts { latencies: Vec::new(), errors: 0, first_error: None };
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= plan.puts {
                    break;
                }
                if plan.put_rate > 0 {
                    let due = shared.sent.start + Duration::from_secs_f64(n as f64 / plan.put_rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let key = plan.key(n % plan.watched.keys());
                let request = PutRequest { key, value: shared.tag.value(n), ..Default::default() };
                let sent = Instant::now();
                shared.sent.mark(n, sent);
                match kv.put(request).await {
                    Ok(_) => puts.latencies.push(sent.elapsed()),
                    Err(status) => {
                        puts.errors += 1;
                        puts.first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                    }
                }
            }
            puts
        });
    }
    let mut all = Puts { latencies: Vec::with_capacity(plan.puts), errors: 0, first_error: None };
    while let Some(puts) = tasks.join_next().await {
        let puts = puts?;
        all.latencies.extend(puts.latencies);
        all.errors += puts.errors;
        if all.first_error.is_none() {
            all.first_error = puts.first_error;
        }
    }
    Ok(all)
}

/// Runs `plan` against `endpoints` (streams are spread over them in turn).
pub async fn run(endpoints: &[String], plan: &WatchPlan) -> Result<WatchOutcome> {
    plan.validate()?;
    let cpu_before = load::process_cpu_time();
    let run_started = Instant::now();
    let channels = load::channels(endpoints, plan.conns).await?;
    let kvs = load::connect(endpoints, plan.put_clients.div_ceil(PUTTERS_PER_CONN)).await?;

    let mut opening = tokio::task::JoinSet::new();
    for index in 0..plan.streams {
        opening.spawn(open(channels[index % channels.len()].clone(), plan.clone(), index));
    }
    let mut streams = Vec::with_capacity(plan.streams);
    while let Some(opened) = opening.join_next().await {
        streams.push(opened??);
    }
    let create_wall = run_started.elapsed();
    let create_latencies: Vec<Duration> = streams.iter().flat_map(|s| s.create_latencies.iter().copied()).collect();

    let start = Instant::now();
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        tag: PutTag::new(plan.puts, plan.val_size)?,
        sent: SendTimes::new(start, plan.puts),
        events: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
    });
    let (stop, stopped) = watch::channel(false);
    let mut receivers = tokio::task::JoinSet::new();
    for opened in streams {
        receivers.spawn(receive(opened, shared.clone(), stopped.clone()));
    }
    let puts = put_all(kvs, &shared).await?;
    let puts_wall = start.elapsed();

    let mut last_progress = (shared.events.load(Ordering::Relaxed), Instant::now());
    while shared.finished.load(Ordering::Relaxed) < plan.streams {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let events = shared.events.load(Ordering::Relaxed);
        if events != last_progress.0 {
            last_progress = (events, Instant::now());
        } else if last_progress.1.elapsed() >= plan.idle_timeout {
            break;
        }
    }
    let _ = stop.send(true);
    let mut tallies = Vec::with_capacity(plan.streams);
    while let Some(tally) = receivers.join_next().await {
        tallies.push(tally?);
    }
    tallies.sort_by_key(|t| t.index);
    let wall = run_started.elapsed();
    let generator_cpu = load::process_cpu_time().saturating_sub(cpu_before);

    let mut delivery = Delivery::default();
    let mut latencies = Histogram::default();
    let all_done = tallies.iter().all(|t| t.done_at.is_some() && t.problem.is_none());
    for tally in &tallies {
        latencies.merge(&tally.latencies);
        // A broken stream explains its watchers' missing events: name it first.
        if let Some(problem) = &tally.problem {
            delivery.note(problem.clone());
        }
        for (w, ledger) in tally.ledgers.iter().enumerate() {
            let watcher = tally.index * plan.watchers_per_stream + w;
            delivery.add(
                ledger,
                || format!("watcher {w} of stream {}", tally.index),
                || ledger.first_missing(|n| plan.watched.wants(watcher, n)),
            );
        }
    }
    // Events: from the first put to the last event the run waited for.
    let events_end = if all_done { tallies.iter().filter_map(|t| t.done_at).max() } else { None };
    let events_wall = events_end.unwrap_or(last_progress.1).saturating_duration_since(start);
    Ok(WatchOutcome {
        create: Summary::new(create_latencies, create_wall, 0, generator_cpu),
        puts: Summary::new(puts.latencies, puts_wall, puts.errors, generator_cpu),
        events: Summary::binned(latencies, events_wall, delivery.problems(), generator_cpu),
        delivery,
        first_put_error: puts.first_error,
        generator_cpu,
        wall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> WatchPlan {
        WatchPlan {
            streams: 2,
            watchers_per_stream: 3,
            conns: 1,
            watched: Watched::Keys(1),
            puts: 10,
            put_rate: 0,
            put_clients: 1,
            key_size: 8,
            val_size: 8,
            idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn keyed_watchers_share_the_puts_in_turn() {
        let watched = Watched::Keys(3);
        let seen: Vec<usize> = (0..10).filter(|&n| watched.wants(4, n)).collect();
        assert_eq!(seen, [1, 4, 7]);
        assert_eq!((0..6).map(|w| watched.expected(w, 10)).collect::<Vec<_>>(), [4, 3, 3, 4, 3, 3]);
        assert_eq!(Watched::Keys(5).expected(4, 3), 0, "a key no put reaches");
        assert!(Watched::Prefix(3).wants(4, 0));
        assert_eq!(Watched::Prefix(3).expected(4, 10), 10);
    }

    #[test]
    fn expected_events_add_up() {
        let mut plan = plan();
        assert_eq!(plan.expected_events(), 60);
        plan.watched = Watched::Keys(4);
        // Watchers 0..6 on keys 0,1,2,3,0,1 of puts 0..10: 3,3,2,2,3,3.
        assert_eq!(plan.expected_events(), 16);
        plan.watched = Watched::Prefix(4);
        assert_eq!(plan.expected_events(), 60);
    }

    #[test]
    fn keys_and_create_requests() {
        let mut plan = plan();
        plan.watched = Watched::Keys(3);
        assert_eq!(plan.key(42), b"w0000042");
        let Some(RequestUnion::CreateRequest(create)) = plan.create_request(4).request_union else { panic!() };
        assert_eq!((create.key, create.range_end, create.start_revision), (b"w0000001".to_vec(), Vec::new(), 0));
        plan.watched = Watched::Prefix(3);
        let Some(RequestUnion::CreateRequest(create)) = plan.create_request(4).request_union else { panic!() };
        assert!(plan.key(2).starts_with(&create.key) && plan.key(2) < create.range_end);
        assert_eq!((create.key, create.range_end), (b"w".to_vec(), b"x".to_vec()));
    }

    #[test]
    fn flags_are_checked() {
        assert!(plan().validate().is_ok());
        let bad = [
            WatchPlan { streams: 0, ..plan() },
            WatchPlan { watchers_per_stream: 0, ..plan() },
            WatchPlan { conns: 0, ..plan() },
            WatchPlan { conns: 3, ..plan() },
            WatchPlan { put_clients: 0, ..plan() },
            WatchPlan { puts: 0, ..plan() },
            WatchPlan { watched: Watched::Keys(0), ..plan() },
            WatchPlan { watched: Watched::Prefix(100_000_000), ..plan() },
            WatchPlan { puts: 1_000_000_000, ..plan() },
            WatchPlan { idle_timeout: Duration::ZERO, ..plan() },
        ];
        for plan in bad {
            assert!(plan.validate().is_err(), "{plan:?}");
        }
        assert!(WatchPlan { watched: Watched::Prefix(10_000_000), ..plan() }.validate().is_ok());
        assert!(WatchPlan { puts: 100_000_000, ..plan() }.validate().is_ok());
    }

    #[test]
    fn descriptions() {
        let mut plan = plan();
        assert_eq!(plan.describe_watchers(), "6 watchers (2 streams × 3) on one key");
        plan.watched = Watched::Prefix(1000);
        plan.streams = 100;
        plan.watchers_per_stream = 100;
        assert_eq!(plan.describe_watchers(), "10,000 watchers (100 streams × 100) on one prefix");
    }

    #[test]
    fn send_times_are_kept_per_put() {
        let start = Instant::now();
        let sent = SendTimes::new(start, 3);
        assert_eq!(sent.get(1), None, "not sent yet");
        sent.mark(1, start + Duration::from_micros(1500));
        assert_eq!(sent.get(1), Some(start + Duration::from_micros(1500)));
        sent.mark(0, start);
        assert_eq!(sent.get(0), Some(start), "sent at the very start is still sent");
        assert_eq!(sent.get(7), None, "not a put of this run");
    }

    #[test]
    fn a_stream_tally_checks_every_event() {
        use keel_proto::mvccpb::{Event, KeyValue};
        let plan = WatchPlan { streams: 1, watchers_per_stream: 2, puts: 3, ..plan() };
        let start = Instant::now();
        let shared = Shared {
            tag: PutTag::new(plan.puts, plan.val_size).unwrap(),
            sent: SendTimes::new(start, plan.puts),
            plan,
            events: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        };
        let ids: HashMap<i64, usize> = [(10, 0), (11, 1)].into();
        let event = |n: usize| Event {
            kv: Some(KeyValue {
                key: shared.plan.key(0),
                value: shared.tag.value(n),
                mod_revision: n as i64 + 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = |watch_id, puts: &[usize]| WatchResponse {
            watch_id,
            events: puts.iter().map(|&n| event(n)).collect(),
            ..Default::default()
        };
        for n in 0..3 {
            shared.sent.mark(n, start + Duration::from_millis(n as u64));
        }
        let mut tally = StreamTally::new(0, &shared.plan);
        let now = start + Duration::from_millis(10);
        tally.absorb(&response(10, &[0, 1, 2]), &ids, now, &shared);
        tally.absorb(&response(11, &[0, 1]), &ids, now, &shared);
        assert_eq!((tally.pending, shared.finished.load(Ordering::Relaxed)), (1, 0));
        tally.absorb(&response(11, &[2]), &ids, now, &shared);
        assert_eq!((tally.pending, tally.done_at, shared.finished.load(Ordering::Relaxed)), (0, Some(now), 1));
        assert_eq!(shared.events.load(Ordering::Relaxed), 6);
        assert_eq!(
            (tally.latencies.min(), tally.latencies.max()),
            (Duration::from_millis(8), Duration::from_millis(10))
        );
        tally.absorb(&response(11, &[2]), &ids, now, &shared);
        tally.absorb(&response(99, &[]), &ids, now, &shared);
        assert!(tally.problem.as_deref().is_some_and(|p| p.contains("watch id 99")), "{:?}", tally.problem);
        let mut delivery = Delivery::default();
        for ledger in &tally.ledgers {
            delivery.add(ledger, || "w".to_owned(), || None);
        }
        assert_eq!((delivery.delivered, delivery.duplicates), (6, 1));
        assert!(!delivery.is_exact());
    }
}
