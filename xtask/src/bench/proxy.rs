//! `compare --proxy`: the clients talk to a gRPC proxy in front of the
//! cluster (`etcd grpc-proxy start` for etcd, `keel grpc-proxy start` for
//! Keel), and what the proxy saves the members is read off their own
//! `/metrics` while the workload runs: how many watch and keep-alive
//! streams they were opened, and the most watchers they held at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::task::JoinHandle;

use super::http::Conn;
use super::server::Server;

/// How often the members' metrics are read during a run.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A proxy process for `system`'s cluster at `endpoints`, on a free loopback
/// port (both proxies take `grpc-proxy start --endpoints --listen-addr`);
/// with `cache_everything`, Keel's caches every range.
pub(super) fn start(
    bin: &Path,
    root: &Path,
    system: &str,
    endpoints: &[String],
    cache_everything: bool,
) -> Result<Server> {
    let hosts: Vec<&str> = endpoints
        .iter()
        .map(|url| url.strip_prefix("http://").context("--proxy runs without --tls: the proxy dials plain members"))
        .collect::<Result<_>>()?;
    let mut args = vec!["grpc-proxy".to_owned(), "start".to_owned(), format!("--endpoints={}", hosts.join(","))];
    if cache_everything {
        args.push("--cache-prefix=".to_owned());
    }
    Server::start_proxy(bin, root, &format!("{system}-proxy"), &args)
}

/// What the members saw of a run's streams, summed over the members.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Upstream {
    /// Watch streams opened during the run.
    pub watch_streams: f64,
    /// LeaseKeepAlive streams opened during the run.
    pub keepalive_streams: f64,
    /// The most watchers the members held at once (sampled every 100 ms).
    pub max_watchers: f64,
}

impl Upstream {
    pub(super) fn render(&self) -> String {
        format!(
            "upstream {:.0} watch streams, max {:.0} watchers, {:.0} keep-alive streams",
            self.watch_streams, self.max_watchers, self.keepalive_streams
        )
    }
}

/// The counters and gauge [`Upstream`] is made of, in one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Scrape {
    watch_started: f64,
    keepalive_started: f64,
    watchers: f64,
}

impl Scrape {
    /// Reads a Prometheus text page: `grpc_server_started_total` of the Watch
    /// and LeaseKeepAlive methods and `etcd_debugging_mvcc_watcher_total`.
    fn parse(page: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
            if line.starts_with("grpc_server_started_total{") {
                if line.contains("grpc_method=\"Watch\"") {
                    scrape.watch_started += value;
                } else if line.contains("grpc_method=\"LeaseKeepAlive\"") {
                    scrape.keepalive_started += value;
                }
            } else if line.starts_with("etcd_debugging_mvcc_watcher_total ") {
                scrape.watchers += value;
            }
        }
        scrape
    }

    fn add(self, other: Scrape) -> Scrape {
        Scrape {
            watch_started: self.watch_started + other.watch_started,
            keepalive_started: self.keepalive_started + other.keepalive_started,
            watchers: self.watchers + other.watchers,
        }
    }
}

/// Reads the members' metrics until stopped.
pub(super) struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Upstream>>,
}

impl Probe {
    /// Starts reading `members`' `/metrics` (their client URLs) now.
    pub(super) async fn start(members: &[String]) -> Result<Probe> {
        let mut conns = Vec::with_capacity(members.len());
        for member in members {
            conns.push(Conn::open(member).await?);
        }
        let first = scrape_all(&mut conns).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut max_watchers = first.watchers;
            loop {
                let done = stopped.load(Ordering::Acquire);
                let now = scrape_all(&mut conns).await?;
                max_watchers = max_watchers.max(now.watchers);
                if done {
                    return Ok(Upstream {
                        watch_streams: now.watch_started - first.watch_started,
                        keepalive_streams: now.keepalive_started - first.keepalive_started,
                        max_watchers,
                    });
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
        Ok(Probe { stop, task })
    }

    /// Stops after one last reading; what the members saw since the start.
    pub(super) async fn finish(self) -> Result<Upstream> {
        self.stop.store(true, Ordering::Release);
        self.task.await.context("the metrics probe panicked")?
    }
}

async fn scrape_all(conns: &mut [Conn]) -> Result<Scrape> {
    let mut total = Scrape::default();
    for conn in conns {
        let (status, body) = conn.request("GET", "/metrics", None, &[]).await.context("reading a member's /metrics")?;
        if status != 200 {
            bail!("a member's /metrics answered HTTP {status}");
        }
        total = total.add(Scrape::parse(&String::from_utf8_lossy(&body)));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_sums_the_watch_and_keep_alive_starts_and_reads_the_watchers() {
        let page = "# HELP grpc_server_started_total Total number of RPCs started on the server.\n\
# TYPE grpc_server_started_total counter\n\
grpc_server_started_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"} 3\n\
grpc_server_started_total{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1000\n\
grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 2\n\
etcd_debugging_mvcc_watch_stream_total 2\n\
etcd_debugging_mvcc_watcher_total 7\n";
        let scrape = Scrape::parse(page);
        assert_eq!(scrape, Scrape { watch_started: 2.0, keepalive_started: 3.0, watchers: 7.0 });
        assert_eq!(scrape.add(scrape).watchers, 14.0);
    }

    #[test]
    fn floats_in_exponent_form_are_read() {
        let scrape = Scrape::parse("etcd_debugging_mvcc_watcher_total 1e+04\n");
        assert_eq!(scrape.watchers, 10_000.0);
    }
}
