//! etcd's backend quota (`--quota-backend-bytes`): a request that would
//! grow the store past the quota is refused before it is proposed, and the
//! NOSPACE alarm goes up through raft, so every member then refuses writes
//! until an operator compacts, defragments and disarms.
//!
//! The size is the store's live data (what compaction and defragmentation
//! give back), not the files' size: read from the engine at most every
//! [`REFRESH`], so a burst of writes does not ask RocksDB for its
//! properties on every request.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_mvcc::KvStore;
use keel_proto::etcdserverpb::{request_op, PutRequest, TxnRequest};
use keel_proto::keelpb::internal_raft_request::Request;

/// etcd's estimate of a key's metadata in the store (`kvOverhead`).
const KV_OVERHEAD: u64 = 256;
/// etcd's estimate of a lease's record (`leaseOverhead`).
const LEASE_OVERHEAD: u64 = 64;
/// How stale the measured size may be.
const REFRESH: Duration = Duration::from_millis(100);
/// etcd's MaxQuotaBytes: larger quotas work, with a warning.
pub const MAX_QUOTA_BYTES: i64 = 8 << 30;

pub(crate) struct Quota {
    /// `None`: no quota (a negative --quota-backend-bytes).
    limit: Option<u64>,
    kv: Arc<KvStore>,
    /// The live size last measured, and when (ms since `epoch`; -1 never).
    size: AtomicU64,
    measured_at: AtomicI64,
    epoch: Instant,
}

impl Quota {
    /// A quota of `bytes` (negative: none; 0: etcd's default is the
    /// caller's to apply).
    pub(crate) fn new(bytes: i64, kv: Arc<KvStore>) -> Quota {
        if bytes < 0 {
            tracing::info!(quota_name = "v3-applier", quota_size_bytes = bytes, "disabled backend quota");
        } else {
            if bytes > MAX_QUOTA_BYTES {
                tracing::warn!(
                    quota_name = "v3-applier",
                    quota_size_bytes = bytes,
                    quota_maximum_size_bytes = MAX_QUOTA_BYTES,
                    "quota exceeds the maximum value"
                );
            }
            tracing::info!(quota_name = "v3-applier", quota_size_bytes = bytes, "enabled backend quota");
        }
        Quota {
            limit: u64::try_from(bytes).ok(),
            kv,
            size: AtomicU64::new(0),
            measured_at: AtomicI64::new(-1),
            epoch: Instant::now(),
        }
    }

    /// Whether `request` fits: etcd's `backendQuota.Available`, with the
    /// live size. Requests that add nothing always fit.
    pub(crate) fn available(&self, request: &Request) -> bool {
        let Some(limit) = self.limit else { return true };
        let cost = cost(request);
        cost == 0 || self.live_size().saturating_add(cost) < limit
    }

    /// Forgets the size measured: the next check reads the engine (after a
    /// defragmentation, so the space it gave back counts at once).
    pub(crate) fn invalidate(&self) {
        self.measured_at.store(-1, Ordering::Release);
    }

    fn live_size(&self) -> u64 {
        let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let at = self.measured_at.load(Ordering::Acquire);
        if at < 0 || now - at >= REFRESH.as_millis() as i64 {
            let size = u64::try_from(self.kv.db_size_in_use()).unwrap_or(0);
            // Kept only if nobody measured or invalidated meanwhile: a
            // measurement from before a defragmentation never outlives it.
            if self.measured_at.compare_exchange(at, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.size.store(size, Ordering::Release);
            }
            return size;
        }
        self.size.load(Ordering::Acquire)
    }
}

/// etcd's `backendQuota.Cost`: what a request may add to the store.
fn cost(request: &Request) -> u64 {
    match request {
        Request::Put(put) => cost_put(put),
        Request::Txn(txn) => cost_txn(txn),
        Request::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    }
}

fn cost_put(put: &PutRequest) -> u64 {
    KV_OVERHEAD + put.key.len() as u64 + put.value.len() as u64
}

/// The larger of the branches' puts (nested txns are not counted, as etcd).
fn cost_txn(txn: &TxnRequest) -> u64 {
    let branch = |ops: &[keel_proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(put)) => cost_put(put),
                _ => 0,
            })
            .sum()
    };
    branch(&txn.success).max(branch(&txn.failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::etcdserverpb::{LeaseGrantRequest, RequestOp};

    fn put(key: &str, value: &str) -> PutRequest {
        PutRequest { key: key.into(), value: value.into(), ..Default::default() }
    }

    #[test]
    fn costs_are_etcds() {
        assert_eq!(cost(&Request::Put(put("k", "vv"))), 259);
        assert_eq!(cost(&Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 })), 64);
        let op = |p: PutRequest| RequestOp { request: Some(request_op::Request::RequestPut(p)) };
        let txn = TxnRequest {
            success: vec![op(put("a", "1"))],
            failure: vec![op(put("b", "1")), op(put("c", "1"))],
            ..Default::default()
        };
        assert_eq!(cost(&Request::Txn(txn)), 2 * 258);
        assert_eq!(cost(&Request::Txn(TxnRequest::default())), 0);
    }

    #[test]
    fn a_full_store_refuses_what_grows_it() {
        let kv = Arc::new(KvStore::in_memory());
        let quota = Quota::new(1000, kv.clone());
        assert!(quota.available(&Request::Put(put("k", "v"))));
        assert!(!quota.available(&Request::Put(put("k", &"v".repeat(1000)))));
        assert!(quota.available(&Request::Txn(TxnRequest::default())), "a txn without puts costs nothing");
        assert!(Quota::new(-1, kv).available(&Request::Put(put("k", &"v".repeat(10_000)))), "no quota");
    }
}
