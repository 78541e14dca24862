//! etcd's server and peer-network series of one member.
//!
//! Values the member keeps anyway (applied index, pending proposals,
//! learner or not) are read when scraped; counters are single atomic adds
//! where things happen. Per-peer series are labelled with the peer's id in
//! hex, as etcd's `To`/`From` labels; their children are resolved once per
//! peer (sending) or per stream (receiving), and only for members, so a
//! stranger on the peer port cannot add series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_metrics::prometheus::core::Collector;
use keel_metrics::prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use keel_metrics::{Computed, Measures};

use crate::proposals::Waiters;

/// The series a member writes as it runs.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub(crate) proposals_failed: IntCounter,
    pub(crate) slow_apply: IntCounter,
    pub(crate) read_indexes_failed: IntCounter,
    pub(crate) slow_read_indexes: IntCounter,
    pub(crate) snapshot_apply_in_progress: IntGauge,
    pub(crate) quota_backend_bytes: IntGauge,
    pub(crate) learner_promote_successes: IntCounter,
    pub(crate) learner_promote_failures: IntCounterVec,
    pub(crate) health_success: IntCounter,
    pub(crate) health_failures: IntCounter,
    pub(crate) healthcheck: IntGaugeVec,
    pub(crate) healthchecks_total: IntCounterVec,
    pub(crate) apply_duration: HistogramVec,
    pub(crate) server_id: IntGaugeVec,
    pub(crate) server_version: IntGaugeVec,
    pub(crate) cluster_version: IntGaugeVec,
    pub(crate) peer: PeerMetrics,
}

/// etcd's rafthttp series.
#[derive(Clone, Debug)]
pub struct PeerMetrics {
    /// Heartbeats the leader could not queue for a peer.
    pub(crate) heartbeat_send_failures: IntCounter,
    pub(crate) sent_bytes: IntCounterVec,
    pub(crate) received_bytes: IntCounterVec,
    pub(crate) sent_failures: IntCounterVec,
    pub(crate) received_failures: IntCounterVec,
    pub(crate) round_trip_time: HistogramVec,
    pub(crate) active_peers: IntGaugeVec,
    pub(crate) disconnected_peers: IntCounterVec,
    pub(crate) snapshot_send_success: IntCounterVec,
    pub(crate) snapshot_send_failures: IntCounterVec,
    pub(crate) snapshot_send_seconds: HistogramVec,
    pub(crate) snapshot_send_inflights: IntGaugeVec,
    pub(crate) snapshot_receive_success: IntCounterVec,
    pub(crate) snapshot_receive_failures: IntCounterVec,
    pub(crate) snapshot_receive_seconds: HistogramVec,
    pub(crate) snapshot_receive_inflights: IntGaugeVec,
    pub(crate) known_peers: IntGaugeVec,
    /// Receiving a leader's snapshot: spooled, then installed.
    pub(crate) snap_db_save_seconds: Histogram,
    /// etcd's raft `.snap` files and their fsyncs: Keel's snapshots are
    /// store checkpoints with no such file, so these never move.
    snap_db_fsync_seconds: Histogram,
    snap_save_seconds: Histogram,
    snap_save_marshalling_seconds: Histogram,
    snap_fsync_seconds: Histogram,
}

/// The `From` of refused traffic from something that is not a member.
const UNKNOWN_SENDER: &str = "unknown";
/// etcd's `From` of a snapshot from a sender it does not know.
const UNKNOWN_SNAPSHOT_SENDER: &str = "UNKNOWN_SNAPSHOT_SENDER";

/// One peer's children of the per-peer series, resolved when it is added.
#[derive(Clone, Debug)]
pub(crate) struct PeerLinkMetrics {
    pub(crate) sent_bytes: IntCounter,
    pub(crate) sent_failures: IntCounter,
    pub(crate) round_trip_time: Histogram,
    pub(crate) active: IntGauge,
    pub(crate) disconnected: IntCounter,
    /// 1 while the peer is a member this one talks to.
    pub(crate) known: IntGauge,
}

impl PeerMetrics {
    fn new() -> PeerMetrics {
        use keel_metrics::{exponential_buckets, histogram_vec, int_counter_vec, int_gauge_vec};
        PeerMetrics {
            heartbeat_send_failures: keel_metrics::int_counter(
                "etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            ),
            sent_bytes: int_counter_vec(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                &["To"],
            ),
            received_bytes: int_counter_vec(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                &["From"],
            ),
            sent_failures: int_counter_vec(
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                &["To"],
            ),
            received_failures: int_counter_vec(
                "etcd_network_peer_received_failures_total",
                "The total number of receive failures from peers.",
                &["From"],
            ),
            round_trip_time: histogram_vec(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
                &["To"],
                // etcd: 0.1 ms up to ~3.3 s.
                exponential_buckets(0.0001, 2.0, 16),
            ),
            active_peers: int_gauge_vec(
                "etcd_network_active_peers",
                "The current number of active peer connections.",
                &["Local", "Remote"],
            ),
            disconnected_peers: int_counter_vec(
                "etcd_network_disconnected_peers_total",
                "The total number of disconnected peers.",
                &["Local", "Remote"],
            ),
            snapshot_send_success: int_counter_vec(
                "etcd_network_snapshot_send_success",
                "Total number of successful snapshot sends",
                &["To"],
            ),
            snapshot_send_failures: int_counter_vec(
                "etcd_network_snapshot_send_failures",
                "Total number of snapshot send failures",
                &["To"],
            ),
            snapshot_send_seconds: histogram_vec(
                "etcd_network_snapshot_send_total_duration_seconds",
                "Total latency distributions of v3 snapshot sends",
                &["To"],
                // etcd: 0.1 s up to 51.2 s.
                exponential_buckets(0.1, 2.0, 10),
            ),
            snapshot_send_inflights: int_gauge_vec(
                "etcd_network_snapshot_send_inflights_total",
                "Total number of inflight snapshot sends",
                &["To"],
            ),
            snapshot_receive_success: int_counter_vec(
                "etcd_network_snapshot_receive_success",
                "Total number of successful snapshot receives",
                &["From"],
            ),
            snapshot_receive_failures: int_counter_vec(
                "etcd_network_snapshot_receive_failures",
                "Total number of snapshot receive failures",
                &["From"],
            ),
            snapshot_receive_seconds: histogram_vec(
                "etcd_network_snapshot_receive_total_duration_seconds",
                "Total latency distributions of v3 snapshot receives",
                &["From"],
                exponential_buckets(0.1, 2.0, 10),
            ),
            snapshot_receive_inflights: int_gauge_vec(
                "etcd_network_snapshot_receive_inflights_total",
                "Total number of inflight snapshot receives",
                &["From"],
            ),
            known_peers: int_gauge_vec(
                "etcd_network_known_peers",
                "The current number of known peers.",
                &["Local", "Remote"],
            ),
            snap_db_save_seconds: keel_metrics::histogram(
                "etcd_snap_db_save_total_duration_seconds",
                "The total latency distributions of v3 snapshot save",
                exponential_buckets(0.1, 2.0, 10),
            ),
            snap_db_fsync_seconds: keel_metrics::histogram(
                "etcd_snap_db_fsync_duration_seconds",
                "The latency distributions of fsyncing .snap.db file",
                exponential_buckets(0.001, 2.0, 14),
            ),
            snap_save_seconds: keel_metrics::histogram(
                "etcd_debugging_snap_save_total_duration_seconds",
                "The total latency distributions of save called by snapshot.",
                exponential_buckets(0.001, 2.0, 14),
            ),
            snap_save_marshalling_seconds: keel_metrics::histogram(
                "etcd_debugging_snap_save_marshalling_duration_seconds",
                "The marshalling cost distributions of save called by snapshot.",
                exponential_buckets(0.001, 2.0, 14),
            ),
            snap_fsync_seconds: keel_metrics::histogram(
                "etcd_snap_fsync_duration_seconds",
                "The latency distributions of fsync called by snap.",
                exponential_buckets(0.001, 2.0, 14),
            ),
        }
    }

    /// The children for the link from `local` to `peer`. The byte and
    /// failure counters start at zero, so the series exist from the start.
    pub(crate) fn link(&self, local: u64, peer: u64) -> PeerLinkMetrics {
        let (local, peer) = (format!("{local:x}"), format!("{peer:x}"));
        PeerLinkMetrics {
            sent_bytes: self.sent_bytes.with_label_values(&[&peer]),
            sent_failures: self.sent_failures.with_label_values(&[&peer]),
            round_trip_time: self.round_trip_time.with_label_values(&[&peer]),
            active: self.active_peers.with_label_values(&[&local, &peer]),
            known: self.known_peers.with_label_values(&[&local, &peer]),
            disconnected: self.disconnected_peers.with_label_values(&[&local, &peer]),
        }
    }

    /// The counter of bytes received from member `peer`.
    pub(crate) fn received_from(&self, peer: u64) -> IntCounter {
        self.received_bytes.with_label_values(&[&format!("{peer:x}")])
    }

    /// A batch refused, from a member or (`None`) from someone that is not
    /// one: strangers share one label, so they cannot add series.
    pub(crate) fn receive_failed(&self, peer: Option<u64>) {
        let label = peer.map_or_else(|| UNKNOWN_SENDER.to_string(), |peer| format!("{peer:x}"));
        self.received_failures.with_label_values(&[&label]).inc();
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        use keel_metrics::{int_counter, int_counter_vec, int_gauge, int_gauge_vec};
        NodeMetrics {
            proposals_failed: int_counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            slow_apply: int_counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            read_indexes_failed: int_counter(
                "etcd_server_read_indexes_failed_total",
                "The total number of failed read indexes seen.",
            ),
            slow_read_indexes: int_counter(
                "etcd_server_slow_read_indexes_total",
                "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
            ),
            snapshot_apply_in_progress: int_gauge(
                "etcd_server_snapshot_apply_in_progress_total",
                "1 if the server is applying the incoming snapshot. 0 if none.",
            ),
            quota_backend_bytes: int_gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            learner_promote_successes: int_counter(
                "etcd_server_learner_promote_successes",
                "The total number of successful learner promotions while this member is leader.",
            ),
            learner_promote_failures: int_counter_vec(
                "etcd_server_learner_promote_failures",
                "The total number of failed learner promotions (likely learner not ready) while this member is leader.",
                &["Reason"],
            ),
            health_success: int_counter("etcd_server_health_success", "The total number of successful health checks"),
            health_failures: int_counter("etcd_server_health_failures", "The total number of failed health checks"),
            healthcheck: int_gauge_vec(
                "etcd_server_healthcheck",
                "The result of each kind of healthcheck.",
                &["type", "name"],
            ),
            healthchecks_total: int_counter_vec(
                "etcd_server_healthchecks_total",
                "The total number of each kind of healthcheck.",
                &["type", "name", "status"],
            ),
            apply_duration: keel_metrics::histogram_vec(
                "etcd_server_apply_duration_seconds",
                "The latency distributions of v2 apply called by backend.",
                &["version", "op", "success"],
                keel_metrics::exponential_buckets(0.0001, 2.0, 20),
            ),
            server_id: int_gauge_vec(
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                &["server_id"],
            ),
            server_version: int_gauge_vec(
                "etcd_server_version",
                "Which version is running. 1 for 'server_version' label with current version.",
                &["server_version"],
            ),
            cluster_version: int_gauge_vec(
                "etcd_cluster_version",
                "Which version is running. 1 for 'cluster_version' label with current cluster version",
                &["cluster_version"],
            ),
            peer: PeerMetrics::new(),
        }
    }

    /// A promotion the leader refused, labelled with etcd's error text.
    pub(crate) fn learner_promote_failed(&self, err: &crate::NodeError) {
        self.learner_promote_failures.with_label_values(&[&format!("etcdserver: {err}")]).inc();
    }

    /// One `/livez` or `/readyz` check's outcome (`kind`: livez or readyz).
    pub fn health_check_ran(&self, kind: &str, name: &str, ok: bool) {
        self.healthcheck.with_label_values(&[kind, name]).set(i64::from(ok));
        self.healthchecks_total.with_label_values(&[kind, name, if ok { "success" } else { "error" }]).inc();
    }

    /// A health check's outcome (`/health`).
    pub fn health_checked(&self, healthy: bool) {
        if healthy { &self.health_success } else { &self.health_failures }.inc();
    }
}

/// etcd's `op` label of `etcd_server_apply_duration_seconds`: the request's
/// name in etcd's raft request.
pub(crate) fn apply_op(request: Option<&keel_proto::keelpb::internal_raft_request::Request>) -> &'static str {
    use keel_proto::keelpb::internal_raft_request::Request;
    match request {
        Some(Request::Put(_)) => "Put",
        Some(Request::DeleteRange(_)) => "DeleteRange",
        Some(Request::Txn(_)) => "Txn",
        Some(Request::Compaction(_)) => "Compaction",
        Some(Request::LeaseGrant(_)) => "LeaseGrant",
        Some(Request::LeaseRevoke(_) | Request::LeaseExpiry(_)) => "LeaseRevoke",
        Some(Request::LeaseCheckpoint(_)) => "LeaseCheckpoint",
        Some(Request::MemberAttributes(_)) => "ClusterMemberAttrSet",
        Some(Request::MemberUpdate(_)) => "MemberUpdate",
        Some(Request::Alarm(_)) => "Alarm",
        Some(Request::AuthEnable(_)) => "AuthEnable",
        Some(Request::AuthDisable(_)) => "AuthDisable",
        Some(Request::Authenticate(_)) => "Authenticate",
        Some(Request::AuthUserAdd(_)) => "AuthUserAdd",
        Some(Request::AuthUserDelete(_)) => "AuthUserDelete",
        Some(Request::AuthUserChangePassword(_)) => "AuthUserChangePassword",
        Some(Request::AuthUserGrantRole(_)) => "AuthUserGrantRole",
        Some(Request::AuthUserRevokeRole(_)) => "AuthUserRevokeRole",
        Some(Request::AuthRoleAdd(_)) => "AuthRoleAdd",
        Some(Request::AuthRoleDelete(_)) => "AuthRoleDelete",
        Some(Request::AuthRoleGrantPermission(_)) => "AuthRoleGrantPermission",
        Some(Request::AuthRoleRevokePermission(_)) => "AuthRoleRevokePermission",
        Some(Request::V2Write(_)) => "V2Request",
        None => "unknown",
    }
}

/// The applier's children of `etcd_server_apply_duration_seconds`, resolved
/// once per (op, success): the applier is one thread, so no lock.
#[derive(Default)]
pub(crate) struct ApplyDurations {
    children: std::collections::HashMap<(&'static str, bool), Histogram>,
}

impl ApplyDurations {
    pub(crate) fn observe(
        &mut self,
        metrics: &NodeMetrics,
        op: &'static str,
        success: bool,
        took: std::time::Duration,
    ) {
        self.children
            .entry((op, success))
            .or_insert_with(|| {
                metrics.apply_duration.with_label_values(&["v3", op, if success { "true" } else { "false" }])
            })
            .observe(took.as_secs_f64());
    }
}

/// What the member's scrape-time series read.
pub(crate) struct Sources {
    pub(crate) applied: Arc<AtomicU64>,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) is_learner: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// The member's series and the state its scrape-time series read.
pub(crate) struct MemberMeasures {
    pub(crate) metrics: NodeMetrics,
    pub(crate) sources: Sources,
}

impl Measures for MemberMeasures {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let m = &self.metrics;
        let applied = self.sources.applied.clone();
        let waiters = self.sources.waiters.clone();
        let is_learner = self.sources.is_learner.clone();
        vec![
            Box::new(m.proposals_failed.clone()),
            Box::new(m.peer.heartbeat_send_failures.clone()),
            Box::new(m.slow_apply.clone()),
            Box::new(m.read_indexes_failed.clone()),
            Box::new(m.slow_read_indexes.clone()),
            Box::new(m.snapshot_apply_in_progress.clone()),
            Box::new(m.quota_backend_bytes.clone()),
            Box::new(m.learner_promote_successes.clone()),
            Box::new(m.learner_promote_failures.clone()),
            Box::new(m.health_success.clone()),
            Box::new(m.health_failures.clone()),
            Box::new(m.healthcheck.clone()),
            Box::new(m.healthchecks_total.clone()),
            Box::new(m.apply_duration.clone()),
            Box::new(m.server_id.clone()),
            Box::new(m.server_version.clone()),
            Box::new(m.cluster_version.clone()),
            Box::new(m.peer.sent_bytes.clone()),
            Box::new(m.peer.received_bytes.clone()),
            Box::new(m.peer.sent_failures.clone()),
            Box::new(m.peer.received_failures.clone()),
            Box::new(m.peer.round_trip_time.clone()),
            Box::new(m.peer.active_peers.clone()),
            Box::new(m.peer.disconnected_peers.clone()),
            Box::new(m.peer.snapshot_send_success.clone()),
            Box::new(m.peer.snapshot_send_failures.clone()),
            Box::new(m.peer.snapshot_send_seconds.clone()),
            Box::new(m.peer.snapshot_send_inflights.clone()),
            Box::new(m.peer.snapshot_receive_success.clone()),
            Box::new(m.peer.snapshot_receive_failures.clone()),
            Box::new(m.peer.snapshot_receive_seconds.clone()),
            Box::new(m.peer.snapshot_receive_inflights.clone()),
            Box::new(m.peer.known_peers.clone()),
            Box::new(m.peer.snap_db_save_seconds.clone()),
            Box::new(m.peer.snap_db_fsync_seconds.clone()),
            Box::new(m.peer.snap_save_seconds.clone()),
            Box::new(m.peer.snap_save_marshalling_seconds.clone()),
            Box::new(m.peer.snap_fsync_seconds.clone()),
            Box::new(Computed::gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
                move || applied.load(Ordering::Acquire) as f64,
            )),
            Box::new(Computed::gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
                move || waiters.pending_writes() as f64,
            )),
            Box::new(Computed::gauge(
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                move || f64::from(u8::from(is_learner())),
            )),
        ]
    }
}

/// One snapshot transfer in flight, for the `etcd_network_snapshot_*`
/// series: counted as failed unless told it succeeded before it is dropped.
pub(crate) struct SnapshotTransfer {
    inflight: IntGauge,
    seconds: Histogram,
    success: IntCounter,
    failures: IntCounter,
    started: std::time::Instant,
    succeeded: bool,
}

impl SnapshotTransfer {
    fn start(
        peer: Option<u64>,
        inflight: &IntGaugeVec,
        seconds: &HistogramVec,
        success: &IntCounterVec,
        failures: &IntCounterVec,
    ) -> SnapshotTransfer {
        let label = peer.map_or_else(|| UNKNOWN_SNAPSHOT_SENDER.to_string(), |peer| format!("{peer:x}"));
        let label = [label.as_str()];
        let inflight = inflight.with_label_values(&label);
        inflight.inc();
        SnapshotTransfer {
            inflight,
            seconds: seconds.with_label_values(&label),
            success: success.with_label_values(&label),
            failures: failures.with_label_values(&label),
            started: std::time::Instant::now(),
            succeeded: false,
        }
    }

    /// How long the transfer has taken so far.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(crate) fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for SnapshotTransfer {
    fn drop(&mut self) {
        self.inflight.dec();
        if self.succeeded {
            self.success.inc();
            self.seconds.observe(self.started.elapsed().as_secs_f64());
        } else {
            self.failures.inc();
        }
    }
}

/// A snapshot this member receives from `peer`.
pub(crate) struct SnapshotReceiving;

impl SnapshotReceiving {
    /// `peer`: `None` when the sender is not a member (etcd's
    /// `UNKNOWN_SNAPSHOT_SENDER`).
    pub(crate) fn start(metrics: &PeerMetrics, peer: Option<u64>) -> SnapshotTransfer {
        SnapshotTransfer::start(
            peer,
            &metrics.snapshot_receive_inflights,
            &metrics.snapshot_receive_seconds,
            &metrics.snapshot_receive_success,
            &metrics.snapshot_receive_failures,
        )
    }
}

impl PeerMetrics {
    /// A snapshot this member sends to `peer`.
    pub(crate) fn snapshot_sending(&self, peer: u64) -> SnapshotTransfer {
        SnapshotTransfer::start(
            Some(peer),
            &self.snapshot_send_inflights,
            &self.snapshot_send_seconds,
            &self.snapshot_send_success,
            &self.snapshot_send_failures,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keel_mvcc::KvStore;
    use keel_raft_node::{MemLogEngine, SystemClock};

    use crate::config::MemberConfig;
    use crate::peer::NoNetwork;
    use crate::{Member, Parts};

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_member_registers_every_crates_series_once_and_they_follow_it() {
        let parts = Parts::in_memory(
            Arc::new(KvStore::in_memory()),
            MemLogEngine::default(),
            Arc::new(NoNetwork),
            Arc::new(SystemClock),
        );
        let (member, mut stepper) = Member::assemble_stepped(MemberConfig::new("m0", "/nonexistent"), parts).unwrap();
        for _ in 0..10 {
            stepper.step();
        }
        let metrics = keel_metrics::Metrics::new().unwrap();
        member.register_metrics(metrics.registry()).unwrap();
        // A second registration of the same member's series is refused.
        assert!(member.register_metrics(metrics.registry()).is_err());
        let text = metrics.text().unwrap();
        assert_eq!(value(&text, "etcd_server_has_leader"), Some(1.0), "{text}");
        assert_eq!(value(&text, "etcd_server_is_leader"), Some(1.0));
        assert_eq!(value(&text, "etcd_server_is_learner"), Some(0.0));
        assert_eq!(value(&text, "etcd_server_leader_changes_seen_total"), Some(1.0));
        assert_eq!(value(&text, "etcd_server_quota_backend_bytes"), Some(2147483648.0));
        let committed = value(&text, "etcd_server_proposals_committed_total").unwrap();
        assert!(committed >= 1.0);
        assert_eq!(value(&text, "etcd_server_proposals_applied_total"), Some(committed));
        assert_eq!(value(&text, "etcd_server_proposals_pending"), Some(0.0));
        let id = format!("etcd_server_id{{server_id=\"{:x}\"}}", member.member_id());
        assert_eq!(value(&text, &id), Some(1.0), "{text}");
        assert_eq!(value(&text, "etcd_cluster_version{cluster_version=\"3.6\"}"), Some(1.0));
        for family in [
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "# TYPE etcd_disk_wal_write_bytes_total gauge",
            "# TYPE etcd_disk_backend_commit_duration_seconds histogram",
            "# TYPE etcd_mvcc_db_total_size_in_bytes gauge",
            "# TYPE etcd_debugging_mvcc_watcher_total gauge",
            "# TYPE etcd_debugging_lease_granted_total counter",
            "# TYPE etcd_server_proposals_failed_total counter",
        ] {
            assert!(text.contains(family), "{family} missing");
        }
        let fsyncs = value(&text, "etcd_disk_wal_fsync_duration_seconds_count").unwrap();
        assert!(fsyncs >= 1.0, "the election's entry was synced");
        member.stop();
    }
}
