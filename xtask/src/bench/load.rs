//! The load generator: `clients` tasks over `conns` shared gRPC connections,
//! taking request numbers from one counter until `total` are sent, each timing
//! its own requests. Connections are made, and keys generated, before the clock
//! starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keel_proto::etcdserverpb::kv_client::KvClient;

use super::dial::Conn;
use super::summary::Summary;
use super::workload::{Class, Generator, Plan, Reported, Request, Rng, Workload};

/// What a run measured: reads and writes apart, as etcd's txn-mixed reports them.
pub struct Outcome {
    pub reported: Reported,
    pub reads: Summary,
    pub writes: Summary,
    pub first_error: Option<String>,
}

impl Outcome {
    /// Every request of the run as one summary.
    pub fn combined(&self) -> Summary {
        Summary::merged(&self.reads, &self.writes)
    }

    /// etcd's output: one summary, or for txn-mixed a read and a write summary.
    pub fn render(&self) -> String {
        let mut out = match self.reported {
            Reported::Both => format!(
                "Total Read Ops: {}\nDetails:{}\nTotal Write Ops: {}\nDetails:{}",
                self.reads.requests() + self.reads.errors,
                self.reads.render(),
                self.writes.requests() + self.writes.errors,
                self.writes.render()
            ),
            Reported::Reads => self.reads.render(),
            Reported::Writes => self.writes.render(),
        };
        if let Some(error) = &self.first_error {
            out.push_str(&format!("\nFirst error: {error}\n"));
        }
        let combined = self.combined();
        out.push_str(&format!(
            "\nLoad generator CPU: {:.2} s over {:.2} s wall\n",
            combined.generator_cpu.as_secs_f64(),
            combined.total.as_secs_f64()
        ));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self.reported {
            Reported::Both => serde_json::json!({ "read": self.reads.to_json(), "write": self.writes.to_json() }),
            Reported::Reads => self.reads.to_json(),
            Reported::Writes => self.writes.to_json(),
        }
    }
}

/// Runs `plan` against `endpoints` (connections are spread over them in turn).
pub async fn run(endpoints: &[String], plan: &Plan) -> Result<Outcome> {
    let conns = connect(endpoints, plan.conns).await?;
    let clients = (0..plan.clients).map(|client| conns[client % conns.len()].clone()).collect();
    drive(plan, clients, |kv: &mut KvClient<Conn>, request| {
        Box::pin(async move {
            match request {
                Request::Put(r) => kv.put(r).await.map(drop),
                Request::Range(r) => kv.range(r).await.map(drop),
                Request::Txn(r) => kv.txn(r).await.map(drop),
            }
        })
    })
    .await
}

/// What a client does with one request: send it and wait for the answer.
pub(super) type Send<C> =
    fn(
        &mut C,
        Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::Status>> + std::marker::Send + '_>>;

/// `plan`'s requests, numbered from one counter, sent by one task per
/// client (each with its own connection handle) until `total` are sent,
/// each task timing its own; the clock starts once every client exists.
pub(super) async fn drive<C: std::marker::Send + 'static>(
    plan: &Plan,
    clients: Vec<C>,
    send: Send<C>,
) -> Result<Outcome> {
    let generator = Arc::new(Generator::new(plan)?);
    let next = Arc::new(AtomicUsize::new(0));
    let expected_per_client = plan.total / plan.clients + 1;
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, mut conn) in clients.into_iter().enumerate() {
        let mut tally = Tally::with_capacity(expected_per_client);
        let (generator, next, total) = (generator.clone(), next.clone(), plan.total);
        tasks.spawn(async move {
            let mut rng = Rng::new(client as u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let (class, request) = generator.request(n, &mut rng);
                let sent = Instant::now();
                let result = send(&mut conn, request).await;
                tally.record(class, sent.elapsed(), result);
            }
            tally
        });
    }
    let mut all = Tally::with_capacity(0);
    while let Some(tally) = tasks.join_next().await {
        all.absorb(tally?);
    }
    let wall = started.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    Ok(all.into_outcome(plan.workload.reported(), wall, cpu))
}

/// The shape of a fill: how many keys, how many clients over how many
/// connections, and the sizes.
pub struct FillShape {
    pub keys: usize,
    pub clients: usize,
    pub clients_per_conn: usize,
    pub key_size: usize,
    pub val_size: usize,
}

/// Puts keys `0..keys` once each, `clients` at a time.
pub async fn fill(endpoints: &[String], shape: FillShape) -> Result<Outcome> {
    let plan = Plan {
        workload: Workload::Fill { keys: shape.keys },
        total: shape.keys,
        clients: shape.clients,
        conns: shape.clients.div_ceil(shape.clients_per_conn.max(1)),
        key_size: shape.key_size,
        val_size: shape.val_size,
    };
    run(endpoints, &plan).await
}

/// Writes keys `0..count` once each (untimed set-up, so ranges find data).
pub async fn prefill(endpoints: &[String], count: usize, key_size: usize, val_size: usize) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let clients = count.min(64);
    let plan = Plan {
        workload: Workload::Put { key_space: count, sequential: true },
        total: count,
        clients,
        conns: clients.div_ceil(8),
        key_size,
        val_size,
    };
    let outcome = run(endpoints, &plan).await.context("prefill")?;
    if let Some(error) = outcome.first_error {
        bail!("prefill: {} of {count} puts failed, first: {error}", outcome.writes.errors);
    }
    Ok(())
}

/// One client's latencies and errors.
pub(super) struct Tally {
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    read_errors: usize,
    write_errors: usize,
    first_error: Option<String>,
}

impl Tally {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Tally {
            reads: Vec::with_capacity(capacity),
            writes: Vec::with_capacity(capacity),
            read_errors: 0,
            write_errors: 0,
            first_error: None,
        }
    }

    pub(super) fn record(&mut self, class: Class, latency: Duration, result: Result<(), tonic::Status>) {
        match (class, result) {
            (Class::Read, Ok(())) => self.reads.push(latency),
            (Class::Write, Ok(())) => self.writes.push(latency),
            (class, Err(status)) => {
                *(if class == Class::Read { &mut self.read_errors } else { &mut self.write_errors }) += 1;
                self.first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }

    /// The run's outcome, once every client's tally is absorbed.
    pub(super) fn into_outcome(self, reported: Reported, wall: Duration, cpu: Duration) -> Outcome {
        Outcome {
            reported,
            reads: Summary::new(self.reads, wall, self.read_errors, cpu),
            writes: Summary::new(self.writes, wall, self.write_errors, cpu),
            first_error: self.first_error,
        }
    }

    pub(super) fn absorb(&mut self, other: Tally) {
        self.reads.extend(other.reads);
        self.writes.extend(other.writes);
        self.read_errors += other.read_errors;
        self.write_errors += other.write_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub(super) async fn connect(endpoints: &[String], conns: usize) -> Result<Vec<KvClient<Conn>>> {
    // As etcd's tool (MaxCallRecvMsgSize(MaxInt32)): large ranges are the point of some runs.
    let channels = channels(endpoints, conns).await?;
    Ok(channels.into_iter().map(|channel| KvClient::new(channel).max_decoding_message_size(usize::MAX)).collect())
}

/// `conns` gRPC connections, spread over `endpoints` in turn, made before any
/// clock starts (sending the `--auth` token, when there is one).
pub(super) async fn channels(endpoints: &[String], conns: usize) -> Result<Vec<Conn>> {
    if endpoints.is_empty() {
        bail!("no endpoints");
    }
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        let url = &endpoints[i % endpoints.len()];
        let channel = super::dial::connect(url).await?;
        channels.push(channel);
    }
    Ok(channels)
}

/// CPU time (user + system) this process has used: the generator's cost.
pub(super) fn process_cpu_time() -> Duration {
    // Fields 14 and 15 of /proc/self/stat, in USER_HZ (100 on every Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(11) + field(12)) * 10)
}
