//! etcd's storage series, under etcd 3.6's names, help texts and buckets, so
//! its dashboards and alerts read a Keel member unchanged: the backend's
//! (`server/storage/backend/metrics.go`) and the MVCC store's
//! (`server/storage/mvcc/metrics.go`), except the watch series, which
//! `keel-watch-hub` measures where watchers live.
//!
//! What the store keeps anyway (revisions, live keys, the engine's size) is
//! read when scraped ([`Computed`]), so writes pay nothing for it. The
//! request counters cost one atomic add per counter a request touches,
//! added once when its transaction ends (see [`TxOps`]).
//!
//! etcd 3.6 no longer exports `etcd_debugging_mvcc_db_total_size_in_bytes`
//! (3.5 deprecated it for `etcd_mvcc_db_total_size_in_bytes`), nor the
//! `etcd_debugging_namespacequota_*` series of later versions, so neither is
//! here.

use std::sync::Weak;
use std::time::Duration;

use keel_metrics::prometheus::core::Collector;
use keel_metrics::prometheus::{Histogram, HistogramTimer, IntCounter, IntGauge};
use keel_metrics::{exponential_buckets, histogram, int_counter, int_gauge, Computed, Measures};
use parking_lot::RwLock;

use crate::backend::Backend;
use crate::store::State;

/// The storage series of one [`KvStore`](crate::KvStore); see
/// [`KvStore::metrics`](crate::KvStore::metrics). Clones share the series.
#[derive(Clone)]
pub struct MvccMetrics {
    backend_commit: Histogram,
    // bbolt's three commit phases have no counterpart in RocksDB's write of
    // a batch; registered so dashboards that chart them find the series.
    commit_rebalance: Histogram,
    commit_spill: Histogram,
    commit_write: Histogram,
    defrag: Histogram,
    snapshot: Histogram,
    defrag_inflight: IntGauge,
    range: IntCounter,
    put: IntCounter,
    delete: IntCounter,
    txn: IntCounter,
    // A gauge in etcd, though it only grows.
    total_put_size: IntGauge,
    index_compaction_pause: Histogram,
    db_compaction_pause: Histogram,
    db_compaction_total: Histogram,
    db_compaction_last: IntGauge,
    db_compaction_keys: IntCounter,
    hash: Histogram,
    hash_rev: Histogram,
    open_read_txns: IntGauge,
    /// Read at scrape time. Weak, so a registry that outlives the store
    /// neither keeps its engine open nor its index in memory.
    state: Weak<RwLock<State>>,
    backend: Weak<dyn Backend>,
}

impl std::fmt::Debug for MvccMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccMetrics").finish_non_exhaustive()
    }
}

/// etcd's buckets for the backend commit and its bbolt phases: 1 ms to 8.192 s.
fn commit_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 14)
}

/// etcd's buckets for the store hashes: 10 ms to 163.84 s.
fn hash_buckets() -> Vec<f64> {
    exponential_buckets(0.01, 2.0, 15)
}

impl MvccMetrics {
    pub(crate) fn new(state: Weak<RwLock<State>>, backend: Weak<dyn Backend>) -> MvccMetrics {
        MvccMetrics {
            backend_commit: histogram(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                commit_buckets(),
            ),
            commit_rebalance: histogram(
                "etcd_debugging_disk_backend_commit_rebalance_duration_seconds",
                "The latency distributions of commit.rebalance called by bboltdb backend.",
                commit_buckets(),
            ),
            commit_spill: histogram(
                "etcd_debugging_disk_backend_commit_spill_duration_seconds",
                "The latency distributions of commit.spill called by bboltdb backend.",
                commit_buckets(),
            ),
            commit_write: histogram(
                "etcd_debugging_disk_backend_commit_write_duration_seconds",
                "The latency distributions of commit.write called by bboltdb backend.",
                commit_buckets(),
            ),
            defrag: histogram(
                "etcd_disk_backend_defrag_duration_seconds",
                "The latency distribution of backend defragmentation.",
                exponential_buckets(0.1, 2.0, 13),
            ),
            snapshot: histogram(
                "etcd_disk_backend_snapshot_duration_seconds",
                "The latency distribution of backend snapshots.",
                exponential_buckets(0.01, 2.0, 17),
            ),
            defrag_inflight: int_gauge(
                "etcd_disk_defrag_inflight",
                "Whether or not defrag is active on the member. 1 means active, 0 means not.",
            ),
            range: int_counter("etcd_mvcc_range_total", "Total number of ranges seen by this member."),
            put: int_counter("etcd_mvcc_put_total", "Total number of puts seen by this member."),
            delete: int_counter("etcd_mvcc_delete_total", "Total number of deletes seen by this member."),
            txn: int_counter("etcd_mvcc_txn_total", "Total number of txns seen by this member."),
            total_put_size: int_gauge(
                "etcd_debugging_mvcc_total_put_size_in_bytes",
                "The total size of put kv pairs seen by this member.",
            ),
            index_compaction_pause: histogram(
                "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds",
                "Bucketed histogram of index compaction pause duration.",
                exponential_buckets(0.5, 2.0, 14),
            ),
            db_compaction_pause: histogram(
                "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
                "Bucketed histogram of db compaction pause duration.",
                exponential_buckets(1.0, 2.0, 13),
            ),
            db_compaction_total: histogram(
                "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
                "Bucketed histogram of db compaction total duration.",
                exponential_buckets(100.0, 2.0, 14),
            ),
            db_compaction_last: int_gauge(
                "etcd_debugging_mvcc_db_compaction_last",
                "The unix time of the last db compaction. Resets to 0 on start.",
            ),
            db_compaction_keys: int_counter(
                "etcd_debugging_mvcc_db_compaction_keys_total",
                "Total number of db keys compacted.",
            ),
            hash: histogram(
                "etcd_mvcc_hash_duration_seconds",
                "The latency distribution of storage hash operation.",
                hash_buckets(),
            ),
            hash_rev: histogram(
                "etcd_mvcc_hash_rev_duration_seconds",
                "The latency distribution of storage hash by revision operation.",
                hash_buckets(),
            ),
            open_read_txns: int_gauge(
                "etcd_mvcc_db_open_read_transactions",
                "The number of currently open read transactions",
            ),
            state,
            backend,
        }
    }

    /// Times one batch written to the engine: what etcd's backend commit
    /// is (Keel writes a batch per applied entry instead of every 100 ms).
    pub(crate) fn commit_timer(&self) -> HistogramTimer {
        self.backend_commit.start_timer()
    }

    /// Adds up what one transaction did, as etcd's `metricsTxnWrite.End`
    /// does: one more txn when it did more than one operation.
    pub(crate) fn txn_ended(&self, ops: &TxOps) {
        if ops.ranges + ops.puts + ops.deletes > 1 {
            self.txn.inc();
        }
        if ops.ranges > 0 {
            self.range.inc_by(ops.ranges);
        }
        if ops.puts > 0 {
            self.put.inc_by(ops.puts);
            self.total_put_size.add(i64::try_from(ops.put_bytes).unwrap_or(i64::MAX));
        }
        if ops.deletes > 0 {
            self.delete.inc_by(ops.deletes);
        }
    }

    /// How long readers were held off while the index forgot compacted
    /// revisions. In whole milliseconds, as etcd observes it.
    pub(crate) fn index_compacted(&self, paused: Duration) {
        self.index_compaction_pause.observe(whole_millis(paused));
    }

    /// One batch of compacted revisions deleted; `paused` is how long it
    /// took to gather and write it.
    pub(crate) fn compaction_batch_written(&self, paused: Duration) {
        self.db_compaction_pause.observe(whole_millis(paused));
    }

    /// A compaction finished deleting `keys` revisions after `took`.
    pub(crate) fn db_compacted(&self, keys: usize, took: Duration) {
        self.db_compaction_total.observe(whole_millis(took));
        self.db_compaction_keys.inc_by(keys as u64);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.db_compaction_last.set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    }

    pub(crate) fn hashed_by_rev(&self, took: Duration) {
        self.hash_rev.observe(took.as_secs_f64());
    }

    /// A hash of the whole engine (etcd's Maintenance.Hash, computed by
    /// `keel-snapshot` over etcd's layout) took `took`.
    pub fn observe_hash(&self, took: Duration) {
        self.hash.observe(took.as_secs_f64());
    }

    /// A checkpoint was opened: it counts as an open read transaction, and
    /// its life, until the guard is dropped, is a backend snapshot (etcd
    /// times its snapshot from `Snapshot()` to `Close()`, the transfer).
    pub(crate) fn snapshot_opened(&self) -> SnapshotGuard {
        self.open_read_txns.inc();
        SnapshotGuard { _timer: self.snapshot.start_timer(), open: self.open_read_txns.clone() }
    }

    /// Marks a defragmentation as running until the guard is dropped, and
    /// times it.
    pub fn defrag_started(&self) -> DefragGuard {
        self.defrag_inflight.set(1);
        DefragGuard { _timer: self.defrag.start_timer(), inflight: self.defrag_inflight.clone() }
    }
}

/// etcd divides durations by `time.Millisecond`, truncating.
fn whole_millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

fn read_state(state: &Weak<RwLock<State>>, read: impl Fn(&State) -> i64) -> f64 {
    state.upgrade().map_or(0.0, |state| read(&state.read()) as f64)
}

impl Measures for MvccMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let (total, in_use) = (self.backend.clone(), self.backend.clone());
        let (current, compact, keys) = (self.state.clone(), self.state.clone(), self.state.clone());
        vec![
            Box::new(self.backend_commit.clone()),
            Box::new(self.commit_rebalance.clone()),
            Box::new(self.commit_spill.clone()),
            Box::new(self.commit_write.clone()),
            Box::new(self.defrag.clone()),
            Box::new(self.snapshot.clone()),
            Box::new(self.defrag_inflight.clone()),
            Box::new(self.range.clone()),
            Box::new(self.put.clone()),
            Box::new(self.delete.clone()),
            Box::new(self.txn.clone()),
            Box::new(self.total_put_size.clone()),
            Box::new(self.index_compaction_pause.clone()),
            Box::new(self.db_compaction_pause.clone()),
            Box::new(self.db_compaction_total.clone()),
            Box::new(self.db_compaction_last.clone()),
            Box::new(self.db_compaction_keys.clone()),
            Box::new(self.hash.clone()),
            Box::new(self.hash_rev.clone()),
            Box::new(self.open_read_txns.clone()),
            // RocksDB: table files plus memtables, and for "in use" its
            // estimate of live data (what compaction would keep) plus the
            // active memtables; see `RocksBackend::size`.
            Box::new(Computed::gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                move || total.upgrade().map_or(0.0, |backend| backend.size() as f64),
            )),
            Box::new(Computed::gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
                move || in_use.upgrade().map_or(0.0, |backend| backend.size_in_use() as f64),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
                move || read_state(&current, |state| state.current_rev),
            )),
            Box::new(Computed::gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
                move || read_state(&compact, |state| state.compact_rev),
            )),
            Box::new(Computed::gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", move || {
                read_state(&keys, |state| state.live_keys)
            })),
        ]
    }
}

/// What one transaction did, added to the counters when it ends. Ranges
/// count every read etcd makes through its transaction: a Range, each
/// compare of a Txn, and the read of the previous value a Put or
/// DeleteRange asking for it makes.
#[derive(Debug, Default)]
pub(crate) struct TxOps {
    pub ranges: u64,
    pub puts: u64,
    pub deletes: u64,
    /// Key plus value bytes of the puts.
    pub put_bytes: u64,
}

/// An open checkpoint; see [`MvccMetrics::snapshot_opened`].
pub(crate) struct SnapshotGuard {
    _timer: HistogramTimer,
    open: IntGauge,
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A running defragmentation; see [`MvccMetrics::defrag_started`].
pub struct DefragGuard {
    _timer: HistogramTimer,
    inflight: IntGauge,
}

impl std::fmt::Debug for DefragGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefragGuard").finish_non_exhaustive()
    }
}

impl Drop for DefragGuard {
    fn drop(&mut self) {
        self.inflight.set(0);
    }
}

#[cfg(test)]
mod tests {
    use keel_metrics::Metrics;
    use keel_proto::etcdserverpb::{
        compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
        TxnRequest,
    };

    use std::sync::Arc;

    use super::*;
    use crate::{KvStore, NoLeases, WriteRequest};

    fn scrape(store: &KvStore) -> String {
        let metrics = Metrics::new().unwrap();
        store.metrics().register(metrics.registry()).unwrap();
        metrics.text().unwrap()
    }

    /// The value of an unlabelled series (or a histogram's `_count`).
    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("{name} ");
        let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
        line[prefix.len()..].parse().unwrap()
    }

    fn put(key: &str, value: &str) -> PutRequest {
        PutRequest { key: key.into(), value: value.into(), ..Default::default() }
    }

    #[test]
    fn requests_count_as_etcd_counts_them_and_state_is_read_when_scraped() {
        let store = KvStore::in_memory();
        store.apply(1, WriteRequest::Put(&put("a", "1")), &NoLeases).unwrap();
        store.apply(2, WriteRequest::Put(&put("b", "22")), &NoLeases).unwrap();
        // A Put that returns the previous value reads it: a range too, so a txn.
        let with_prev = PutRequest { prev_kv: true, ..put("a", "333") };
        store.apply(3, WriteRequest::Put(&with_prev), &NoLeases).unwrap();
        store.range(&RangeRequest { key: b"a".to_vec(), ..Default::default() }).unwrap();
        // A Txn: one range per compare, then its branch.
        let txn = TxnRequest {
            compare: vec![Compare {
                key: b"b".to_vec(),
                target: compare::CompareTarget::Version as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::Version(1)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b"b".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        store.apply(4, WriteRequest::Txn(&txn), &NoLeases).unwrap();
        let text = scrape(&store);

        for (name, kind) in [
            ("etcd_mvcc_put_total", "counter"),
            ("etcd_mvcc_range_total", "counter"),
            ("etcd_mvcc_txn_total", "counter"),
            ("etcd_mvcc_delete_total", "counter"),
            ("etcd_debugging_mvcc_keys_total", "gauge"),
            ("etcd_debugging_mvcc_current_revision", "gauge"),
            ("etcd_debugging_mvcc_compact_revision", "gauge"),
            ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
            ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge"),
            ("etcd_mvcc_db_open_read_transactions", "gauge"),
            ("etcd_disk_backend_commit_duration_seconds", "histogram"),
            ("etcd_debugging_disk_backend_commit_spill_duration_seconds", "histogram"),
            ("etcd_disk_defrag_inflight", "gauge"),
        ] {
            assert!(text.contains(&format!("\n# TYPE {name} {kind}\n")), "{name} is a {kind}:\n{text}");
        }
        assert_eq!(value(&text, "etcd_mvcc_put_total"), 3.0);
        assert_eq!(value(&text, "etcd_mvcc_range_total"), 3.0, "the prev_kv read, the Range, the compare");
        assert_eq!(value(&text, "etcd_mvcc_txn_total"), 2.0, "the prev_kv Put and the Txn");
        assert_eq!(value(&text, "etcd_mvcc_delete_total"), 1.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_total_put_size_in_bytes"), 2.0 + 3.0 + 4.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_keys_total"), 1.0, "a, b deleted");
        assert_eq!(value(&text, "etcd_debugging_mvcc_current_revision"), 5.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_compact_revision"), -1.0);
        assert_eq!(value(&text, "etcd_disk_backend_commit_duration_seconds_count"), 4.0);
        assert_eq!(value(&text, "etcd_mvcc_db_open_read_transactions"), 0.0);
        assert!(value(&text, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
        assert!(text.contains("etcd_disk_backend_commit_duration_seconds_bucket{le=\"8.192\"} 4\n"), "{text}");
        assert!(text.contains("etcd_disk_backend_defrag_duration_seconds_bucket{le=\"409.6\"} 0\n"), "{text}");
        assert!(text.contains("etcd_mvcc_hash_duration_seconds_bucket{le=\"163.84\"} 0\n"), "{text}");
    }

    #[test]
    fn compaction_hashes_and_snapshots_are_timed() {
        let store = KvStore::in_memory();
        for index in 1..=3 {
            store.apply(index, WriteRequest::Put(&put("k", &index.to_string())), &NoLeases).unwrap();
        }
        store.apply(4, WriteRequest::Compact(&CompactionRequest { revision: 3, physical: false }), &NoLeases).unwrap();
        store.hash_by_rev(0).unwrap();
        let checkpoint = store.checkpoint().unwrap();
        let text = scrape(&store);
        assert_eq!(value(&text, "etcd_debugging_mvcc_compact_revision"), 3.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_db_compaction_keys_total"), 1.0, "k@2; k@3 is kept");
        assert_eq!(value(&text, "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds_count"), 1.0);
        assert_eq!(value(&text, "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds_count"), 1.0);
        assert!(value(&text, "etcd_debugging_mvcc_db_compaction_last") > 1.7e9);
        assert_eq!(value(&text, "etcd_mvcc_hash_rev_duration_seconds_count"), 1.0);
        assert_eq!(value(&text, "etcd_mvcc_db_open_read_transactions"), 1.0, "the checkpoint");
        assert_eq!(value(&text, "etcd_disk_backend_snapshot_duration_seconds_count"), 0.0);
        drop(checkpoint);
        let text = scrape(&store);
        assert_eq!(value(&text, "etcd_mvcc_db_open_read_transactions"), 0.0);
        assert_eq!(value(&text, "etcd_disk_backend_snapshot_duration_seconds_count"), 1.0);
        assert!(text.contains("etcd_disk_backend_snapshot_duration_seconds_bucket{le=\"655.36\"} 1\n"), "{text}");

        let defrag = store.metrics().defrag_started();
        assert_eq!(value(&scrape(&store), "etcd_disk_defrag_inflight"), 1.0);
        drop(defrag);
        let text = scrape(&store);
        assert_eq!(value(&text, "etcd_disk_defrag_inflight"), 0.0);
        assert_eq!(value(&text, "etcd_disk_backend_defrag_duration_seconds_count"), 1.0);
    }

    #[test]
    fn live_keys_are_recounted_on_open_and_on_a_snapshot_install() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open_rocksdb(dir.path()).unwrap();
        for (index, key) in [(1, "a"), (2, "b"), (3, "c")] {
            store.apply(index, WriteRequest::Put(&put(key, "v")), &NoLeases).unwrap();
        }
        let delete = DeleteRangeRequest { key: b"a".to_vec(), range_end: b"c".to_vec(), ..Default::default() };
        store.apply(4, WriteRequest::DeleteRange(&delete), &NoLeases).unwrap();
        store.apply(5, WriteRequest::Put(&put("a", "again")), &NoLeases).unwrap();
        assert_eq!(value(&scrape(&store), "etcd_debugging_mvcc_keys_total"), 2.0, "a and c");
        let pieces: Vec<_> = store.checkpoint().unwrap().pieces(1 << 20).collect();
        drop(store);
        let reopened = KvStore::open_rocksdb(dir.path()).unwrap();
        assert_eq!(value(&scrape(&reopened), "etcd_debugging_mvcc_keys_total"), 2.0);

        let follower = KvStore::in_memory();
        follower.apply(1, WriteRequest::Put(&put("stale", "v")), &NoLeases).unwrap();
        let metrics = Metrics::new().unwrap();
        follower.metrics().register(metrics.registry()).unwrap();
        follower.install_snapshot(pieces).unwrap();
        let text = metrics.text().unwrap();
        assert_eq!(value(&text, "etcd_debugging_mvcc_keys_total"), 2.0, "the series registered before go on");
        assert_eq!(value(&text, "etcd_debugging_mvcc_current_revision"), 6.0);
    }

    #[test]
    fn a_dropped_store_reads_as_zero_and_is_not_kept_alive() {
        let store = KvStore::in_memory();
        store.apply(1, WriteRequest::Put(&put("a", "1")), &NoLeases).unwrap();
        let metrics = Metrics::new().unwrap();
        store.metrics().register(metrics.registry()).unwrap();
        let backend = Arc::downgrade(&store.backend());
        drop(store);
        assert!(backend.upgrade().is_none(), "the registry does not hold the engine");
        let text = metrics.text().unwrap();
        assert_eq!(value(&text, "etcd_debugging_mvcc_current_revision"), 0.0);
        assert_eq!(value(&text, "etcd_mvcc_put_total"), 1.0);
    }
}
