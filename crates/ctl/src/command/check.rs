//! `check perf` and `check datascale`: etcdctl's load checks. Both refuse a
//! prefix that already has keys, write zero-filled values under random keys
//! through the `--load` model's number of concurrent writers, delete what
//! they wrote, and judge what they measured.
//!
//! etcdctl draws cheggaaa/pb v1 progress bars on stdout. Without a terminal
//! that bar has no width, so what a script reads is a frame of counters,
//! percentage and time left after a `\r` every 200 ms, and the first result
//! line continues the last frame unless the bar finished first
//! ([`PlainBar`], kept for them). On a terminal keelctl draws its own bar,
//! on stderr ([`Progress`]).
//!
//! keelctl's writers share one connection (HTTP/2 streams), where etcdctl
//! dials one per writer.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_client::{Client, ClientError, DeleteOptions, GetOptions};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout};

use super::endpoint::go_duration;
use super::lease::FOREVER;
use super::lock::{log_target, take_stdout, Failed};
use super::{Command, Group};
use crate::error::{exit, Failure, RpcError};
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;
use crate::gostr;
use crate::progress::{Progress, Unit};

pub const CHECK: Group = Group {
    name: "check",
    short: "commands for checking properties of the etcd cluster",
    usage: "check <subcommand>",
    long: "",
    flags: &[],
    subcommands: &[&DATASCALE, &PERF],
};

const PERF: Command = Command {
    name: "perf",
    short: "Check the performance of the etcd cluster",
    usage: "perf [options]",
    long: "",
    flags: &[
        AUTO_COMPACT,
        AUTO_DEFRAG,
        FlagSpec::new(
            "load",
            Kind::String,
            "s",
            "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)",
        ),
        FlagSpec::new(
            "prefix",
            Kind::String,
            "/etcdctl-check-perf/",
            "The prefix for writing the performance check's keys.",
        ),
    ],
    run: perf,
};

const DATASCALE: Command = Command {
    name: "datascale",
    short: "Check the memory usage of holding data for different workloads on a given server endpoint.",
    usage: "datascale [options]",
    long: "If no endpoint is provided, localhost will be used. If multiple endpoints are provided, first endpoint will be used.",
    flags: &[
        AUTO_COMPACT,
        AUTO_DEFRAG,
        FlagSpec::new(
            "load",
            Kind::String,
            "s",
            "The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)",
        ),
        FlagSpec::new(
            "prefix",
            Kind::String,
            "/etcdctl-check-datascale/",
            "The prefix for writing the datascale check's keys.",
        ),
    ],
    run: datascale,
};

const AUTO_COMPACT: FlagSpec =
    FlagSpec::new("auto-compact", Kind::Bool, "false", "Compact storage with last revision after test is finished.");
const AUTO_DEFRAG: FlagSpec =
    FlagSpec::new("auto-defrag", Kind::Bool, "false", "Defragment storage after test is finished.");

/// etcdctl's timeout for the cleanup's delete, compaction and defrag.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// cheggaaa/pb's refresh rate.
const REFRESH: Duration = Duration::from_millis(200);

/// One `--load` model of `check perf`: writes per second, writers, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PerfLoad {
    limit: u32,
    clients: usize,
    duration: u64,
}

/// One `--load` model of `check datascale`: writes in all, bytes per
/// key-value pair (as printed), writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatascaleLoad {
    limit: u64,
    kv_size: usize,
    clients: usize,
}

/// etcdctl's load aliases.
fn model(load: &str) -> Option<&'static str> {
    match load {
        "s" | "small" => Some("s"),
        "m" | "medium" => Some("m"),
        "l" | "large" => Some("l"),
        "xl" | "xLarge" => Some("xl"),
        _ => None,
    }
}

fn unknown_load(load: &str) -> Failure {
    Failure::exit(exit::BAD_FEATURE, format!("unknown load option {load}"))
}

/// etcdctl's `checkPerfCfgMap`.
fn perf_load(load: &str) -> Result<PerfLoad, Failure> {
    let (limit, clients) = match model(load) {
        Some("s") => (150, 50),
        Some("m") => (1000, 200),
        Some("l") => (8000, 500),
        Some(_) => (15000, 1000),
        None => return Err(unknown_load(load)),
    };
    Ok(PerfLoad { limit, clients, duration: 60 })
}

/// etcdctl's `checkDatascaleCfgMap`.
fn datascale_load(load: &str) -> Result<DatascaleLoad, Failure> {
    let (limit, clients) = match model(load) {
        Some("s") => (10_000, 50),
        Some("m") => (100_000, 200),
        Some("l") => (1_000_000, 500),
        // 3 versions of 1M keys: the upper bound, reached aggressively.
        Some(_) => (3_000_000, 1000),
        None => return Err(unknown_load(load)),
    };
    Ok(DatascaleLoad { limit, kv_size: 1024, clients })
}

fn perf(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let load = perf_load(ctx.flags.string("load"))?;
    ctx.setup()?;
    let prefix = ctx.flags.string("prefix").to_owned();
    let failed = Failed::new(&ctx.flags);
    // etcdctl's one context for the check: the probe and the writes end with it.
    let until = Instant::now() + Duration::from_secs(load.duration);
    let _ = ctx.flags.set("command-timeout", &format!("{}s", load.duration));
    let client = probe(ctx, &prefix)?;
    let cleanup = Cleanup { prefix: prefix.clone(), compact: ctx.flags.bool("auto-compact"), failed: &failed };
    let writes = Writes { client, prefix: prefix.into_bytes(), key_len: 256, value_len: 1024, clients: load.clients };
    let out = take_stdout(ctx);
    let outcome = ctx.block_on(async {
        let bar = Frames::start(
            &mut *out,
            Bar::Seconds { left: load.duration, next: Instant::now() + Duration::from_secs(1) },
            load.duration,
            Progress::start("check perf", Some(u64::from(load.limit) * load.duration), Unit::Count),
        );
        perf_run(writes, Pace::Rate { limiter: Limiter::new(load.limit), until }, bar, &cleanup).await
    });
    ctx.io.stdout = out;
    let report = outcome??;
    defrag_all(ctx)?;
    let (lines, ok) = perf_verdict(&report.stats(), &report.errors, load.limit);
    let _ = ctx.io.stdout.write_all(lines.as_bytes());
    let _ = ctx.io.stdout.flush();
    if !ok {
        return Err(Failure::Quiet(exit::ERROR));
    }
    Ok(())
}

async fn perf_run(writes: Writes, pace: Pace, mut bar: Frames<'_>, cleanup: &Cleanup<'_>) -> Result<Report, Failure> {
    let done = bar.done.clone();
    let report = bar.drive(writes.run(pace, done)).await;
    bar.finish_progress();
    cleanup.run(&mut bar, &writes.client, Some(CLEANUP_TIMEOUT)).await?;
    Ok(report)
}

fn datascale(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let load = datascale_load(ctx.flags.string("load"))?;
    ctx.setup()?;
    let prefix = ctx.flags.string("prefix").to_owned();
    let failed = Failed::new(&ctx.flags);
    // etcdctl waits on these calls without a deadline.
    let _ = ctx.flags.set("command-timeout", FOREVER);
    let client = probe(ctx, &prefix)?;
    let endpoint = ctx.flags.strings("endpoints").first().cloned().unwrap_or_default();
    let cleanup = Cleanup { prefix: prefix.clone(), compact: ctx.flags.bool("auto-compact"), failed: &failed };
    let writes = Writes { client, prefix: prefix.into_bytes(), key_len: 512, value_len: 512, clients: load.clients };
    let out = take_stdout(ctx);
    let outcome = ctx.block_on(datascale_run(writes, load, &endpoint, &cleanup, &mut *out));
    ctx.io.stdout = out;
    let (report, before, after) = outcome??;
    defrag_all(ctx)?;
    let (lines, ok) = datascale_verdict(&report.errors, after - before);
    let _ = ctx.io.stdout.write_all(lines.as_bytes());
    let _ = ctx.io.stdout.flush();
    if !ok {
        return Err(Failure::Quiet(exit::ERROR));
    }
    Ok(())
}

async fn datascale_run(
    writes: Writes,
    load: DatascaleLoad,
    endpoint: &str,
    cleanup: &Cleanup<'_>,
    out: &mut dyn Write,
) -> Result<(Report, f64, f64), Failure> {
    let no_memory = |out: &mut dyn Write, when: &str| {
        let _ = writeln!(out, "FAIL: Could not read process_resident_memory_bytes {when} the put operations.");
        let _ = out.flush();
        Failure::Quiet(exit::ERROR)
    };
    let before = resident_memory(endpoint, out).await;
    if before == 0.0 {
        return Err(no_memory(out, "before"));
    }
    let _ = writeln!(
        out,
        "Start data scale check for work load [{} key-value pairs, {} bytes per key-value, {} concurrent clients].",
        load.limit, load.kv_size, load.clients
    );
    let mut bar = Frames::start(
        &mut *out,
        Bar::Writes,
        load.limit,
        Progress::start("check datascale", Some(load.limit), Unit::Count),
    );
    let done = bar.done.clone();
    let report = bar.drive(writes.run(Pace::Count(load.limit), done)).await;
    bar.finish();
    let after = resident_memory(endpoint, bar.out).await;
    if after == 0.0 {
        return Err(no_memory(bar.out, "after"));
    }
    cleanup.run(&mut bar, &writes.client, None).await?;
    Ok((report, before, after))
}

/// Connects (under `--command-timeout`) and refuses a prefix that has keys.
fn probe(ctx: &mut Context<'_>, prefix: &str) -> Result<Client, Failure> {
    let key = prefix.as_bytes().to_vec();
    let (client, found) = ctx.call(|client| async move {
        let found = client.get_with(key, GetOptions::new().with_prefix().with_limit(1)).await?;
        Ok((client, found))
    })?;
    if !found.kvs.is_empty() {
        return Err(prefix_has_keys(prefix));
    }
    Ok(client)
}

fn prefix_has_keys(prefix: &str) -> Failure {
    let quoted = gostr::quote(prefix.as_bytes());
    Failure::exit(
        exit::INVALID_INPUT,
        format!("prefix {quoted} has keys. Delete with etcdctl del --prefix {prefix} first"),
    )
}

/// Deleting the check's keys, and `--auto-compact`.
struct Cleanup<'f> {
    prefix: String,
    compact: bool,
    failed: &'f Failed,
}

impl Cleanup<'_> {
    /// `limit`: etcdctl's deadline on the delete (`check perf` has one).
    async fn run(&self, bar: &mut Frames<'_>, client: &Client, limit: Option<Duration>) -> Result<(), Failure> {
        let delete = client.delete_with(self.prefix.clone(), DeleteOptions::new().with_prefix());
        let deleted = match limit {
            Some(limit) => bar.drive(bounded(limit, delete)).await,
            None => bar.drive(delete).await,
        };
        let deleted = deleted.map_err(|e| self.failed.of(e))?;
        if self.compact {
            let revision = deleted.header.map_or(0, |h| h.revision);
            bar.print(&format!("Compacting with revision {revision}\n"));
            bar.drive(bounded(CLEANUP_TIMEOUT, client.compact(revision, true))).await.map_err(|e| self.failed.of(e))?;
            bar.print(&format!("Compacted with revision {revision}\n"));
        }
        Ok(())
    }
}

/// A call under etcdctl's `context.WithTimeout`.
async fn bounded<T>(limit: Duration, call: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
    timeout(limit, call).await.unwrap_or(Err(ClientError::Timeout(limit)))
}

/// `--auto-defrag`: each of `--endpoints` in turn.
fn defrag_all(ctx: &mut Context<'_>) -> Result<(), Failure> {
    if !ctx.flags.bool("auto-defrag") {
        return Ok(());
    }
    let target = log_target(&ctx.flags);
    let _ = ctx.flags.set("command-timeout", "30s");
    for endpoint in ctx.flags.strings("endpoints").to_vec() {
        let quoted = gostr::quote(endpoint.as_bytes());
        let _ = writeln!(ctx.io.stdout, "Defragmenting {quoted}");
        let _ = ctx.io.stdout.flush();
        ctx.call_on(&endpoint, |client| async move { client.defragment().await })
            .map_err(|rpc| Failure::Rpc { rpc, target: target.clone() })?;
        let _ = writeln!(ctx.io.stdout, "Defragmented {quoted}");
    }
    Ok(())
}

/// How the writes are paced.
enum Pace {
    /// `check perf`: as fast as the limiter allows until the deadline.
    Rate { limiter: Limiter, until: Instant },
    /// `check datascale`: this many, as fast as the writers go.
    Count(u64),
}

/// The resolution of tokio's timers.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// golang.org/x/time/rate's limiter with a burst of 1, as etcdctl makes it:
/// the first write at once, then one every `1/limit` s; a producer that
/// falls behind gets one write at once, never a backlog. Times are counted
/// from the last time it fell behind, so rounding does not add up.
#[derive(Debug)]
struct Limiter {
    per_second: u64,
    base: Option<Instant>,
    /// Writes reserved since `base`.
    count: u64,
}

impl Limiter {
    fn new(per_second: u32) -> Limiter {
        Limiter { per_second: u64::from(per_second.max(1)), base: None, count: 0 }
    }

    /// When the next write may go, reserving it; `None` once that is past
    /// `until` (rate's `Wait` fails at once when the wait would outlast its
    /// context's deadline).
    fn reserve(&mut self, now: Instant, until: Instant) -> Option<Instant> {
        let due = self.base.map(|base| base + Duration::from_nanos(self.count * 1_000_000_000 / self.per_second));
        let at = match due {
            Some(due) if due >= now => due,
            _ => {
                self.base = Some(now);
                self.count = 0;
                now
            }
        };
        if at > until {
            return None;
        }
        self.count += 1;
        Some(at)
    }
}

/// The writes of one check: `clients` writers take keys from a queue as
/// long (etcdctl's channel of that capacity) and put a zero-filled value.
struct Writes {
    client: Client,
    prefix: Vec<u8>,
    key_len: usize,
    value_len: usize,
    clients: usize,
}

impl Writes {
    /// Runs the writes; `done` counts finished ones, for the bars.
    async fn run(&self, mut pace: Pace, done: Arc<AtomicU64>) -> Report {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(self.clients.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let report = Arc::new(std::sync::Mutex::new(Report::default()));
        let value = vec![0u8; self.value_len];
        let mut writers = JoinSet::new();
        for _ in 0..self.clients {
            let (client, rx, report, done, value) =
                (self.client.clone(), rx.clone(), report.clone(), done.clone(), value.clone());
            writers.spawn(async move {
                loop {
                    let key = rx.lock().await.recv().await;
                    let Some(key) = key else { break };
                    let start = Instant::now();
                    let put = client.put(key, value.clone()).await;
                    let error = put.err().map(|e| RpcError::from_client(&e).printed);
                    report.lock().unwrap_or_else(|e| e.into_inner()).record(start.elapsed(), error);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut keys = Keys::new(&self.prefix, self.key_len);
        loop {
            match &mut pace {
                Pace::Rate { limiter, until } => {
                    let Some(at) = limiter.reserve(Instant::now(), *until) else { break };
                    // tokio's timers tick in milliseconds, Go's do not: a
                    // sleep per write would cap the load near 1,000 writes/s
                    // (`--load l` wants 8,000). A write due within the next
                    // tick goes now; the limiter counts from its base, so
                    // the rate holds. A longer wait wakes a tick early.
                    if at.saturating_duration_since(Instant::now()) > TIMER_TICK {
                        sleep_until((at - TIMER_TICK).into()).await;
                    }
                }
                Pace::Count(0) => break,
                Pace::Count(left) => *left -= 1,
            }
            if tx.send(keys.next()).await.is_err() {
                break;
            }
        }
        drop(tx);
        while writers.join_next().await.is_some() {}
        let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|e| e.into_inner()));
        report.total = started.elapsed();
        report
    }
}

/// etcdctl's keys: the prefix, then a buffer of `len` bytes that starts
/// with a random number's varint. The buffer is reused, as etcdctl's is: a
/// shorter varint leaves the tail of a longer one in place.
struct Keys {
    prefix: Vec<u8>,
    buffer: Vec<u8>,
    state: u64,
}

impl Keys {
    fn new(prefix: &[u8], len: usize) -> Keys {
        use std::hash::{BuildHasher, Hasher};
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        );
        Keys { prefix: prefix.to_vec(), buffer: vec![0; len], state: seed.finish() }
    }

    fn next(&mut self) -> Vec<u8> {
        // splitmix64; etcdctl draws `rand.Int63n(math.MaxInt64)`.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let n = ((z ^ (z >> 31)) >> 1) % i64::MAX as u64;
        put_varint(&mut self.buffer, n as i64);
        [&self.prefix[..], &self.buffer[..]].concat()
    }
}

/// Go's `binary.PutVarint`: zigzag, then base-128 groups, low first.
/// Writes as much as fits in `buf`; returns the bytes written.
fn put_varint(buf: &mut [u8], x: i64) -> usize {
    let mut ux = (x as u64) << 1;
    if x < 0 {
        ux = !ux;
    }
    let mut i = 0;
    while ux >= 0x80 && i < buf.len() {
        buf[i] = ux as u8 | 0x80;
        ux >>= 7;
        i += 1;
    }
    if i < buf.len() {
        buf[i] = ux as u8;
        i += 1;
    }
    i
}

/// What etcd's `report` package gathers: each write's latency, errors by
/// text, and the time from the first write to the last answer.
#[derive(Default)]
struct Report {
    latencies: Vec<f64>,
    errors: BTreeMap<String, u64>,
    total: Duration,
}

/// etcd's `report.Stats`, the parts the checks judge.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    rps: f64,
    slowest: f64,
    stddev: f64,
}

impl Report {
    fn record(&mut self, took: Duration, error: Option<String>) {
        match error {
            Some(error) => *self.errors.entry(error).or_default() += 1,
            None => self.latencies.push(took.as_secs_f64()),
        }
    }

    /// etcd's `processResults`: NaN averages and deviations when nothing
    /// succeeded, as Go computes them.
    fn stats(&self) -> Stats {
        let n = self.latencies.len() as f64;
        let average = self.latencies.iter().sum::<f64>() / n;
        let variance = self.latencies.iter().map(|l| (l - average) * (l - average)).sum::<f64>() / n;
        Stats {
            rps: n / self.total.as_secs_f64(),
            slowest: self.latencies.iter().copied().fold(0.0, f64::max),
            stddev: variance.sqrt(),
        }
    }
}

/// The error lines both checks print.
fn error_lines(errors: &BTreeMap<String, u64>) -> String {
    let mut lines = "FAIL: too many errors\n".to_owned();
    for (error, count) in errors {
        lines.push_str(&format!("FAIL: ERROR({error}) -> {count}\n"));
    }
    lines
}

/// `check perf`'s judgement: its lines, and whether it passed. Go's `%f`
/// is `{:.6}` (NaN included); `int(rps)+1` truncates.
fn perf_verdict(stats: &Stats, errors: &BTreeMap<String, u64>, limit: u32) -> (String, bool) {
    let mut ok = true;
    let mut lines = String::new();
    if !errors.is_empty() {
        lines.push_str(&error_lines(errors));
        ok = false;
    }
    let throughput = stats.rps as i64 + 1;
    if stats.rps / f64::from(limit) <= 0.9 {
        lines.push_str(&format!("FAIL: Throughput too low: {throughput} writes/s\n"));
        ok = false;
    } else {
        lines.push_str(&format!("PASS: Throughput is {throughput} writes/s\n"));
    }
    // Slower than 500 ms, or spread wider than 100 ms, fails.
    if stats.slowest > 0.5 {
        lines.push_str(&format!("Slowest request took too long: {:.6}s\n", stats.slowest));
        ok = false;
    } else {
        lines.push_str(&format!("PASS: Slowest request took {:.6}s\n", stats.slowest));
    }
    if stats.stddev > 0.1 {
        lines.push_str(&format!("Stddev too high: {:.6}s\n", stats.stddev));
        ok = false;
    } else {
        lines.push_str(&format!("PASS: Stddev is {:.6}s\n", stats.stddev));
    }
    lines.push_str(if ok { "PASS\n" } else { "FAIL\n" });
    (lines, ok)
}

/// `check datascale`'s judgement from the errors and the resident memory
/// it grew by.
fn datascale_verdict(errors: &BTreeMap<String, u64>, bytes_used: f64) -> (String, bool) {
    if !errors.is_empty() {
        return (error_lines(errors), false);
    }
    let megabytes = bytes_used / (1024.0 * 1024.0);
    (format!("PASS: Approximate system memory used : {megabytes:.2} MB.\n"), true)
}

/// etcdctl's `endpointMemoryMetrics`: the member's resident memory from its
/// `/metrics`, or 0 after printing why not.
async fn resident_memory(endpoint: &str, out: &mut dyn Write) -> f64 {
    let host = if endpoint.starts_with("http://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let url = format!("{host}/metrics");
    let found = match http_get(&url).await {
        Ok(body) => resident_memory_in(&body),
        Err(error) => Err(format!("fetch error: {error}")),
    };
    found.unwrap_or_else(|line| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        0.0
    })
}

const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

/// The value of the first line that starts with the metric's name, or the
/// line etcdctl prints when there is none.
fn resident_memory_in(body: &str) -> Result<f64, String> {
    let Some(value) = body.split('\n').find_map(|line| line.strip_prefix(RESIDENT_MEMORY)) else {
        return Err(format!("could not find: {RESIDENT_MEMORY}"));
    };
    let value = value.trim();
    value.parse::<f64>().map_err(|_| {
        format!("parse error: strconv.ParseFloat: parsing {}: invalid syntax", gostr::quote(value.as_bytes()))
    })
}

/// Go's `http.Get` of a plain `http://` URL, enough for `/metrics`: the
/// body, or Go's error text.
async fn http_get(url: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| (&rest[..at], &rest[at..]));
    let address = if authority.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']')) {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let quoted = gostr::quote(url.as_bytes());
    let mut stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => e.to_string(),
        };
        format!("Get {quoted}: dial tcp {address}: connect: {cause}")
    })?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Go-http-client/1.1\r\nConnection: close\r\n\r\n"
    );
    let mut response = Vec::new();
    let exchanged = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read_to_end(&mut response).await
    };
    exchanged.await.map_err(|e| format!("Get {quoted}: {e}"))?;
    http_body(&response).ok_or_else(|| format!("Get {quoted}: malformed HTTP response"))
}

/// The body of a whole HTTP/1.1 response, de-chunked if need be.
fn http_body(response: &[u8]) -> Option<String> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let mut body = &response[split + 4..];
    if !head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked")) {
        return Some(String::from_utf8_lossy(body).into_owned());
    }
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// What moves etcdctl's bar.
enum Bar {
    /// `check perf`: one step a second for the check's duration, then it
    /// finishes by itself, whether the writes have ended or not.
    Seconds { left: u64, next: Instant },
    /// `check datascale`: one step per finished write.
    Writes,
}

/// Both bars while a check runs: etcdctl's frames on stdout when stdout is
/// no terminal, keelctl's own on stderr when stderr is one.
struct Frames<'o> {
    out: &'o mut dyn Write,
    plain: Option<PlainBar>,
    progress: Option<Progress>,
    bar: Bar,
    done: Arc<AtomicU64>,
    next_refresh: Instant,
}

impl<'o> Frames<'o> {
    fn start(out: &'o mut dyn Write, bar: Bar, total: u64, progress: Option<Progress>) -> Frames<'o> {
        let now = Instant::now();
        let mut frames =
            Frames { out, plain: None, progress, bar, done: Arc::new(AtomicU64::new(0)), next_refresh: now + REFRESH };
        if !std::io::stdout().is_terminal() {
            let (plain, first) = PlainBar::start(total as i64, now);
            frames.print(&first);
            frames.plain = Some(plain);
        }
        frames
    }

    fn print(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Awaits `work`, drawing meanwhile.
    async fn drive<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            let step = match self.bar {
                Bar::Seconds { left, next } if left > 0 => Some(next),
                _ => None,
            };
            tokio::select! {
                value = &mut work => return value,
                () = sleep_until(self.next_refresh.into()) => self.refresh(),
                () = sleep_until(step.unwrap_or(self.next_refresh).into()), if step.is_some() => self.step(),
            }
        }
    }

    /// pb's refresher: a frame, then the next 200 ms later.
    fn refresh(&mut self) {
        let done = self.done.load(Ordering::Relaxed);
        if let Some(progress) = &mut self.progress {
            progress.set(done);
        }
        if let Some(plain) = &mut self.plain {
            if matches!(self.bar, Bar::Writes) {
                plain.current = done as i64;
            }
            if let Some(frame) = plain.update(Instant::now()) {
                self.print(&frame);
            }
        }
        self.next_refresh = Instant::now() + REFRESH;
    }

    /// `check perf`'s second: one step, and the finish after the last.
    fn step(&mut self) {
        let Bar::Seconds { left, next } = &mut self.bar else { return };
        *left -= 1;
        *next = Instant::now() + Duration::from_secs(1);
        let last = *left == 0;
        if let Some(plain) = &mut self.plain {
            plain.current += 1;
            if last {
                let frame = plain.finish(Instant::now());
                self.print(&frame);
            }
        }
    }

    /// keelctl's bar ends with the writes.
    fn finish_progress(&mut self) {
        if let Some(mut progress) = self.progress.take() {
            progress.set(self.done.load(Ordering::Relaxed));
            progress.finish();
        }
    }

    /// Both bars end with the writes (`check datascale`).
    fn finish(&mut self) {
        self.finish_progress();
        if let Some(plain) = &mut self.plain {
            plain.current = self.done.load(Ordering::Relaxed) as i64;
            let frame = plain.finish(Instant::now());
            self.print(&frame);
        }
    }
}

/// cheggaaa/pb v1 (etcdctl 3.4's progress bar) on a stdout that is no
/// terminal: its width is 0, so each frame is only counters, percentage
/// and time left, written after a `\r`.
#[derive(Debug)]
struct PlainBar {
    total: i64,
    current: i64,
    previous: i64,
    started: Instant,
    /// When a refresh last saw the count change.
    changed: Option<Instant>,
    finished: bool,
}

impl PlainBar {
    /// pb's `Start`: the first frame at once.
    fn start(total: i64, now: Instant) -> (PlainBar, String) {
        let mut bar = PlainBar { total, current: 0, previous: 0, started: now, changed: None, finished: false };
        let first = bar.update(now).unwrap_or_default();
        (bar, first)
    }

    /// pb's `Update`; nothing once finished.
    fn update(&mut self, now: Instant) -> Option<String> {
        if self.finished {
            return None;
        }
        if self.current != self.previous {
            self.changed = Some(now);
            self.previous = self.current;
        }
        let eta = self.changed.map(|at| (at.duration_since(self.started), now.duration_since(at)));
        Some(format!("\r{}", frame(self.total, self.current, now.duration_since(self.started), eta, false)))
    }

    /// pb's `Finish`: the last frame with the time taken, and a newline.
    fn finish(&mut self, now: Instant) -> String {
        self.finished = true;
        format!("\r{}\n", frame(self.total, self.current, now.duration_since(self.started), None, true))
    }
}

/// One frame of pb v1's `write` at width 0. `eta`: when the count last
/// changed (from the start) and how long ago.
fn frame(total: i64, current: i64, elapsed: Duration, eta: Option<(Duration, Duration)>, finished: bool) -> String {
    let percent = current as f64 / (total as f64 / 100.0);
    const SECOND: i128 = 1_000_000_000;
    let mut frame = format!(" {current} / {total}  {percent:6.2}%");
    if finished {
        frame.push(' ');
        frame.push_str(&go_duration(Duration::from_secs(elapsed.as_secs())));
    } else if let (true, Some((from_change, since_change))) = (current > 0, eta) {
        // pb's integer nanosecond arithmetic, truncated to whole seconds.
        let per_entry = from_change.as_nanos() as i128 / i128::from(current);
        let left = i128::from(total - current) * per_entry - since_change.as_nanos() as i128;
        let left = left / SECOND * SECOND;
        if left > 0 {
            frame.push(' ');
            frame.push_str(&pb_duration(left));
        }
    }
    frame
}

/// pb's `formatDuration`: `[Nd][Nh]MMmSSs`.
fn pb_duration(nanos: i128) -> String {
    const SECOND: i128 = 1_000_000_000;
    const MINUTE: i128 = 60 * SECOND;
    const HOUR: i128 = 60 * MINUTE;
    const DAY: i128 = 24 * HOUR;
    let mut d = nanos;
    let mut out = String::new();
    if d > DAY {
        out.push_str(&format!("{}d", d / DAY));
        d %= DAY;
    }
    if d > HOUR {
        out.push_str(&format!("{}h", d / HOUR));
        d %= HOUR;
    }
    out.push_str(&format!("{:02}m{:02}s", d / MINUTE, d % MINUTE / SECOND));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_models_and_aliases() {
        assert_eq!(perf_load("s").unwrap(), PerfLoad { limit: 150, clients: 50, duration: 60 });
        assert_eq!(perf_load("medium").unwrap(), PerfLoad { limit: 1000, clients: 200, duration: 60 });
        assert_eq!(perf_load("large").unwrap().limit, 8000);
        assert_eq!(perf_load("xLarge").unwrap(), PerfLoad { limit: 15000, clients: 1000, duration: 60 });
        assert_eq!(datascale_load("xl").unwrap(), DatascaleLoad { limit: 3_000_000, kv_size: 1024, clients: 1000 });
        assert_eq!(datascale_load("small").unwrap().limit, 10_000);
        // Case matters, as in etcdctl's map.
        for bad in ["xlarge", "S", ""] {
            let Err(Failure::Exit { code, message }) = perf_load(bad) else { panic!("{bad:?} accepted") };
            assert_eq!((code, message), (exit::BAD_FEATURE, format!("unknown load option {bad}")));
        }
    }

    // Captured from etcdctl 3.4.23 (exit code 3).
    #[test]
    fn a_used_prefix_is_refused_as_in_etcdctl() {
        let Failure::Exit { code, message } = prefix_has_keys("/p/") else { panic!() };
        assert_eq!(code, exit::INVALID_INPUT);
        assert_eq!(message, "prefix \"/p/\" has keys. Delete with etcdctl del --prefix /p/ first");
        let Failure::Exit { message, .. } = prefix_has_keys("") else { panic!() };
        assert_eq!(message, "prefix \"\" has keys. Delete with etcdctl del --prefix  first");
    }

    #[test]
    fn the_limiter_spaces_writes_and_stops_at_the_deadline() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(60);
        let mut limiter = Limiter::new(150);
        let mut now = t0;
        let mut writes = 0;
        while let Some(at) = limiter.reserve(now, until) {
            assert!(at >= now);
            now = at;
            writes += 1;
        }
        // One at once, then 150 a second for 60 s.
        assert_eq!(writes, 9001);

        // Falling behind earns one write at once, not a backlog.
        let mut limiter = Limiter::new(10);
        let far = t0 + Duration::from_secs(3600);
        assert_eq!(limiter.reserve(t0, far), Some(t0));
        let late = t0 + Duration::from_secs(5);
        assert_eq!(limiter.reserve(late, far), Some(late));
        assert_eq!(limiter.reserve(late, far), Some(late + Duration::from_millis(100)));
        assert_eq!(limiter.reserve(late, late), None);
    }

    fn report(latencies_ms: &[u64], total: Duration) -> Report {
        let mut report = Report { total, ..Report::default() };
        for ms in latencies_ms {
            report.record(Duration::from_millis(*ms), None);
        }
        report
    }

    #[test]
    fn stats_are_etcds_report() {
        let stats = report(&[10, 20, 30, 40], Duration::from_secs(2)).stats();
        assert_eq!(stats.rps, 2.0);
        assert!((stats.slowest - 0.04).abs() < 1e-12);
        assert!((stats.stddev - 0.0125f64.sqrt() / 10.0).abs() < 1e-12);
        let empty = report(&[], Duration::from_secs(60)).stats();
        assert_eq!((empty.rps, empty.slowest), (0.0, 0.0));
        assert!(empty.stddev.is_nan());
    }

    #[test]
    fn perf_verdicts() {
        let none = BTreeMap::new();
        let good = Stats { rps: 150.0183, slowest: 0.031349, stddev: 0.001022 };
        // etcdctl 3.4.23 against etcd 3.4.23.
        assert_eq!(
            perf_verdict(&good, &none, 150),
            (
                "PASS: Throughput is 151 writes/s\nPASS: Slowest request took 0.031349s\nPASS: Stddev is 0.001022s\nPASS\n"
                    .to_owned(),
                true
            )
        );
        // 90% of the limit is too low; the bounds themselves pass.
        let edge = Stats { rps: 135.0, slowest: 0.5, stddev: 0.1 };
        let (lines, ok) = perf_verdict(&edge, &none, 150);
        assert!(!ok);
        assert_eq!(lines, "FAIL: Throughput too low: 136 writes/s\nPASS: Slowest request took 0.500000s\nPASS: Stddev is 0.100000s\nFAIL\n");
        let slow = Stats { rps: 149.0, slowest: 0.75, stddev: 0.25 };
        let errors = BTreeMap::from([("etcdserver: request timed out".to_owned(), 3)]);
        let (lines, ok) = perf_verdict(&slow, &errors, 150);
        assert!(!ok);
        assert_eq!(
            lines,
            "FAIL: too many errors\nFAIL: ERROR(etcdserver: request timed out) -> 3\nPASS: Throughput is 150 writes/s\nSlowest request took too long: 0.750000s\nStddev too high: 0.250000s\nFAIL\n"
        );
        let nothing = report(&[], Duration::from_secs(60)).stats();
        assert_eq!(
            perf_verdict(&nothing, &none, 150).0,
            "FAIL: Throughput too low: 1 writes/s\nPASS: Slowest request took 0.000000s\nPASS: Stddev is NaNs\nFAIL\n"
        );
    }

    #[test]
    fn datascale_verdicts() {
        let none = BTreeMap::new();
        assert_eq!(
            datascale_verdict(&none, 27.29 * 1024.0 * 1024.0),
            ("PASS: Approximate system memory used : 27.29 MB.\n".to_owned(), true)
        );
        assert_eq!(
            datascale_verdict(&none, -1.5 * 1024.0 * 1024.0).0,
            "PASS: Approximate system memory used : -1.50 MB.\n"
        );
        let errors = BTreeMap::from([("x".to_owned(), 1)]);
        assert_eq!(datascale_verdict(&errors, 0.0), ("FAIL: too many errors\nFAIL: ERROR(x) -> 1\n".to_owned(), false));
    }

    #[test]
    fn resident_memory_is_read_as_etcdctl_reads_it() {
        let body = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 2.7295744e+07\nprocess_virtual_memory_bytes 1e9\n";
        assert_eq!(resident_memory_in(body), Ok(27_295_744.0));
        assert_eq!(
            resident_memory_in("go_goroutines 8\n"),
            Err("could not find: process_resident_memory_bytes".into())
        );
        assert_eq!(
            resident_memory_in("process_resident_memory_bytes{a=\"b\"} 1\n"),
            Err("parse error: strconv.ParseFloat: parsing \"{a=\\\"b\\\"} 1\": invalid syntax".into())
        );
    }

    #[test]
    fn http_bodies_plain_and_chunked() {
        assert_eq!(http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc").as_deref(), Some("abc"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nproc\r\n3;x=y\r\ness\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).as_deref(), Some("process"));
        assert_eq!(http_body(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn keys_are_the_prefix_and_a_reused_varint_buffer() {
        let mut buf = [0u8; 4];
        assert_eq!(put_varint(&mut buf, 1), 1);
        assert_eq!(buf, [2, 0, 0, 0]);
        assert_eq!(put_varint(&mut buf, 64), 2);
        assert_eq!(buf, [0x80, 0x01, 0, 0]);
        assert_eq!(put_varint(&mut buf, -1), 1);
        assert_eq!(buf, [1, 0x01, 0, 0]);
        let mut keys = Keys::new(b"/p/", 256);
        let (a, b) = (keys.next(), keys.next());
        assert_eq!((a.len(), b.len()), (259, 259));
        assert!(a.starts_with(b"/p/") && a != b);
    }

    // Frames as etcdctl 3.4.23 printed them into a file.
    #[test]
    fn plain_frames_match_pb() {
        let s = Duration::from_secs;
        assert_eq!(frame(60, 0, Duration::ZERO, None, false), " 0 / 60    0.00%");
        assert_eq!(frame(60, 1, s(1), Some((s(1), Duration::ZERO)), false), " 1 / 60    1.67% 00m59s");
        assert_eq!(frame(60, 1, s(2), Some((s(1), Duration::from_millis(800))), false), " 1 / 60    1.67% 00m58s");
        // Less than a second left: no time box.
        assert_eq!(frame(60, 59, s(59), Some((s(59), Duration::from_millis(600))), false), " 59 / 60   98.33%");
        assert_eq!(frame(60, 60, Duration::from_millis(60_400), None, true), " 60 / 60  100.00% 1m0s");
        assert_eq!(frame(10000, 10000, Duration::from_millis(2500), None, true), " 10000 / 10000  100.00% 2s");
        assert_eq!(frame(10000, 9386, s(2), None, false), " 9386 / 10000   93.86%");
        assert_eq!(pb_duration(3_725_000_000_000), "1h02m05s");
        assert_eq!(pb_duration(3_600_000_000_000), "60m00s");
        assert_eq!(pb_duration(90_061_000_000_000), "1d1h01m01s");
    }

    #[test]
    fn a_plain_bar_estimates_from_the_last_change_and_stops_when_finished() {
        let t0 = Instant::now();
        let (mut bar, first) = PlainBar::start(60, t0);
        assert_eq!(first, "\r 0 / 60    0.00%");
        bar.current = 1;
        assert_eq!(bar.update(t0 + Duration::from_millis(1000)).unwrap(), "\r 1 / 60    1.67% 00m59s");
        assert_eq!(bar.update(t0 + Duration::from_millis(1200)).unwrap(), "\r 1 / 60    1.67% 00m58s");
        bar.current = 60;
        assert_eq!(bar.finish(t0 + Duration::from_millis(60_100)), "\r 60 / 60  100.00% 1m0s\n");
        assert_eq!(bar.update(t0 + Duration::from_secs(61)), None);
    }
}
