//! etcd's raft and WAL series, measured by the raft thread.
//!
//! The gauges etcd updates on every Ready (`has_leader`, `is_leader`,
//! `proposals_committed_total`) are read from [`RaftStatus`] when scraped, so
//! the raft loop pays for none of them; only the leader-change counter and
//! the log-sync histogram are written as things happen.

use std::sync::Arc;

use keel_metrics::prometheus::core::Collector;
use keel_metrics::prometheus::{Histogram, IntCounter, IntGauge};
use keel_metrics::{Computed, Measures};

use crate::driver::RaftStatus;

/// The series the raft thread writes.
#[derive(Clone, Debug)]
pub struct RaftMetrics {
    /// A leader appearing after another one or after none.
    pub(crate) leader_changes: IntCounter,
    /// Our raft log's durable append: entries, hard state and its fsync
    /// (etcd's WAL fsync).
    pub(crate) wal_fsync: Histogram,
    /// Bytes of entry data appended to the log (a gauge in etcd, despite
    /// its name).
    pub(crate) wal_write_bytes: IntGauge,
    status: Arc<RaftStatus>,
}

impl RaftMetrics {
    pub(crate) fn new(status: Arc<RaftStatus>) -> RaftMetrics {
        RaftMetrics {
            leader_changes: keel_metrics::int_counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            wal_fsync: keel_metrics::histogram(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                // etcd: 1 ms up to ~8 s.
                keel_metrics::exponential_buckets(0.001, 2.0, 14),
            ),
            wal_write_bytes: keel_metrics::int_gauge(
                "etcd_disk_wal_write_bytes_total",
                "Total number of bytes written in WAL.",
            ),
            status,
        }
    }
}

impl Measures for RaftMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let status = |read: fn(&RaftStatus) -> f64| {
            let status = self.status.clone();
            move || read(&status)
        };
        vec![
            Box::new(self.leader_changes.clone()),
            Box::new(self.wal_fsync.clone()),
            Box::new(self.wal_write_bytes.clone()),
            Box::new(Computed::gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
                status(|status| f64::from(u8::from(status.leader() != 0))),
            )),
            Box::new(Computed::gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                status(|status| f64::from(u8::from(status.is_leader()))),
            )),
            Box::new(Computed::gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
                status(|status| status.commit_index() as f64),
            )),
        ]
    }
}
