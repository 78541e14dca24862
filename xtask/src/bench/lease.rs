//! `bench lease-keepalive` (etcd's) and `bench lease-grant-revoke`.
//!
//! lease-keepalive: before the clock starts, each client grants a lease and
//! opens a LeaseKeepAlive stream (its first keep-alive answered, so the
//! stream is up); then clients take request numbers from one counter and send
//! keep-alives on their stream, each waiting for its response (etcd's tool
//! calls `KeepAliveOnce`, a stream per request; one long stream per client is
//! what clientv3's `KeepAlive` does). lease-grant-revoke: each client grants
//! a lease and revokes it, over and over; `total` counts leases and both calls
//! are timed requests, so a run makes 2 × `total` requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::dial::Conn;
use super::load::{self, Outcome, Tally};
use super::workload::{Class, Reported};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseWorkload {
    KeepAlive,
    GrantRevoke,
}

#[derive(Clone, Debug)]
pub struct LeasePlan {
    pub workload: LeaseWorkload,
    /// Keep-alives, or leases granted and revoked.
    pub total: usize,
    pub clients: usize,
    pub conns: usize,
    /// TTL of every lease granted, in seconds.
    pub ttl: i64,
    /// Leases granted (untimed) before the run and left alive, so keep-alives
    /// are measured against a server holding that many (issue 6's 1 M).
    pub live_leases: usize,
}

impl LeasePlan {
    pub fn validate(&self) -> Result<()> {
        if self.clients == 0 || self.conns == 0 {
            bail!("--clients and --conns must be positive");
        }
        if self.total == 0 {
            bail!("--total must be positive");
        }
        if self.ttl <= 0 {
            bail!("--ttl must be positive, got {}", self.ttl);
        }
        Ok(())
    }

    /// Requests the run makes.
    pub fn requests(&self) -> usize {
        match self.workload {
            LeaseWorkload::KeepAlive => self.total,
            LeaseWorkload::GrantRevoke => 2 * self.total,
        }
    }
}

/// Runs `plan` against `endpoints` (connections are spread over them in turn).
pub async fn run(endpoints: &[String], plan: &LeasePlan) -> Result<Outcome> {
    plan.validate()?;
    let channels = load::channels(endpoints, plan.conns).await?;
    let leases: Vec<LeaseClient<Conn>> = channels.into_iter().map(LeaseClient::new).collect();
    let clients: Vec<LeaseClient<Conn>> = (0..plan.clients).map(|c| leases[c % leases.len()].clone()).collect();
    if plan.live_leases > 0 {
        grant_live(&clients, plan.live_leases, plan.ttl).await?;
    }
    let mut streams = Vec::new();
    if plan.workload == LeaseWorkload::KeepAlive {
        let mut opening = tokio::task::JoinSet::new();
        for client in &clients {
            opening.spawn(KeepAlive::open(client.clone(), plan.ttl));
        }
        while let Some(stream) = opening.join_next().await {
            streams.push(stream??);
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let expected_per_client = plan.requests() / plan.clients + 2;
    let cpu_before = load::process_cpu_time();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match plan.workload {
        LeaseWorkload::KeepAlive => {
            for stream in streams {
                let (next, total) = (next.clone(), plan.total);
                tasks.spawn(stream.run(next, total, Tally::with_capacity(expected_per_client)));
            }
        }
        LeaseWorkload::GrantRevoke => {
            for client in clients {
                let (next, total, ttl) = (next.clone(), plan.total, plan.ttl);
                tasks.spawn(grant_revoke(client, next, total, ttl, Tally::with_capacity(expected_per_client)));
            }
        }
    }
    let mut all = Tally::with_capacity(0);
    while let Some(tally) = tasks.join_next().await {
        all.absorb(tally?);
    }
    let wall = started.elapsed();
    let cpu = load::process_cpu_time().saturating_sub(cpu_before);
    Ok(all.into_outcome(Reported::Writes, wall, cpu))
}

/// One client's lease and its keep-alive stream.
struct KeepAlive {
    id: i64,
    /// Kept open for the stream's life.
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    async fn open(mut client: LeaseClient<Conn>, ttl: i64) -> Result<Self> {
        let grant =
            client.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await.context("granting a lease")?.into_inner();
        if !grant.error.is_empty() {
            bail!("granting a lease: {}", grant.error);
        }
        let (requests, outgoing) = mpsc::channel(1);
        // The first keep-alive goes out with the call: the server answers the
        // call's headers with its first response.
        requests.send(LeaseKeepAliveRequest { id: grant.id }).await.map_err(|_| anyhow!("keep-alive stream closed"))?;
        let responses = client
            .lease_keep_alive(ReceiverStream::new(outgoing))
            .await
            .context("opening a keep-alive stream")?
            .into_inner();
        let mut stream = KeepAlive { id: grant.id, requests, responses };
        stream.answer().await.context("first keep-alive")?;
        Ok(stream)
    }

    /// The response to the keep-alive just sent.
    async fn answer(&mut self) -> Result<(), Status> {
        let response =
            self.responses.message().await?.ok_or_else(|| Status::unavailable("keep-alive stream closed"))?;
        if response.id != self.id || response.ttl <= 0 {
            return Err(Status::not_found(format!(
                "lease {:x}: keep-alive answered id {:x} TTL {}",
                self.id, response.id, response.ttl
            )));
        }
        Ok(())
    }

    async fn run(mut self, next: Arc<AtomicUsize>, total: usize, mut tally: Tally) -> Tally {
        while next.fetch_add(1, Ordering::Relaxed) < total {
            let sent = Instant::now();
            let result = match self.requests.send(LeaseKeepAliveRequest { id: self.id }).await {
                Ok(()) => self.answer().await,
                Err(_) => Err(Status::unavailable("keep-alive stream closed")),
            };
            tally.record(Class::Write, sent.elapsed(), result);
        }
        tally
    }
}

/// Grants `count` leases over `clients` and leaves them alive; untimed.
async fn grant_live(clients: &[LeaseClient<Conn>], count: usize, ttl: i64) -> Result<()> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut granting = tokio::task::JoinSet::new();
    for client in clients {
        let (mut client, next) = (client.clone(), next.clone());
        granting.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                client.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await.context("granting a live lease")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = granting.join_next().await {
        done??;
    }
    eprintln!("granted {count} live leases in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn grant_revoke(
    mut client: LeaseClient<Conn>,
    next: Arc<AtomicUsize>,
    total: usize,
    ttl: i64,
    mut tally: Tally,
) -> Tally {
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let sent = Instant::now();
        let granted = match client.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await {
            Ok(response) if response.get_ref().error.is_empty() => Ok(response.into_inner().id),
            Ok(response) => Err(Status::internal(response.into_inner().error)),
            Err(status) => Err(status),
        };
        tally.record(Class::Write, sent.elapsed(), granted.as_ref().map(drop).map_err(Clone::clone));
        let Ok(id) = granted else { continue };
        let sent = Instant::now();
        let revoked = client.lease_revoke(LeaseRevokeRequest { id }).await.map(drop);
        tally.record(Class::Write, sent.elapsed(), revoked);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(workload: LeaseWorkload) -> LeasePlan {
        LeasePlan { workload, total: 10, clients: 2, conns: 1, ttl: 100, live_leases: 0 }
    }

    #[test]
    fn grant_revoke_makes_two_requests_per_lease() {
        assert_eq!(plan(LeaseWorkload::KeepAlive).requests(), 10);
        assert_eq!(plan(LeaseWorkload::GrantRevoke).requests(), 20);
    }

    #[test]
    fn flags_are_checked() {
        let ok = plan(LeaseWorkload::KeepAlive);
        assert!(ok.validate().is_ok());
        for bad in [
            LeasePlan { clients: 0, ..ok.clone() },
            LeasePlan { conns: 0, ..ok.clone() },
            LeasePlan { total: 0, ..ok.clone() },
            LeasePlan { ttl: 0, ..ok.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
