//! Request-level semantics on top of a [`Tx`], following etcd 3.4's
//! `etcdserver/apply.go` (the reference etcd; 3.5 and 3.6 agree except where
//! noted) — Range options, Put flags, DeleteRange, Txn compares and branches,
//! and the response header revisions.
//!
//! Header revisions follow etcd exactly:
//! - Range: the transaction's revision (the store revision for a plain Range;
//!   inside a Txn, the Txn's own revision once it has written).
//! - Put: the new revision.
//! - DeleteRange: the new revision if anything was deleted (or the enclosing
//!   Txn already wrote), else the current one.
//! - Txn: the revision after the Txn. Nested TxnResponses carry an empty
//!   header (revision 0), as etcd never fills them.

use keel_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use keel_proto::mvccpb::KeyValue;

use super::tx::{self, RangeOptions, RangeResult, Tx};
use super::LeaseLookup;
use crate::error::MvccError;
use crate::gosort::go_sort;
use crate::index::KeyRange;

pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// The `RangeOptions` etcd derives from a RangeRequest: fetch everything when
/// results will be sorted or filtered, else one more than the limit so
/// `more` can be told.
pub(crate) fn range_options(r: &RangeRequest) -> RangeOptions {
    let mut limit = r.limit;
    if r.sort_order != range_request::SortOrder::None as i32
        || r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
    {
        limit = 0;
    }
    if limit > 0 {
        limit += 1;
    }
    RangeOptions { limit, rev: r.revision, count: r.count_only }
}

/// etcd's `executeRange` after the mvcc read: filters, sort, limit, keys_only.
pub(crate) fn finish_range(r: &RangeRequest, mut rr: RangeResult) -> RangeResponse {
    if r.max_mod_revision != 0 {
        rr.kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        rr.kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        rr.kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        rr.kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }

    use range_request::{SortOrder, SortTarget};
    let target = r.sort_target;
    let mut order = r.sort_order;
    if target != SortTarget::Key as i32 && order == SortOrder::None as i32 {
        // Results come in key order; any other target sorts ascending by default.
        order = SortOrder::Ascend as i32;
    } else if target == SortTarget::Key as i32 && order == SortOrder::Ascend as i32 {
        // Already in ascending key order.
        order = SortOrder::None as i32;
    }
    if order == SortOrder::Ascend as i32 || order == SortOrder::Descend as i32 {
        let less: fn(&KeyValue, &KeyValue) -> bool = match SortTarget::try_from(target) {
            Ok(SortTarget::Key) => |a, b| a.key < b.key,
            Ok(SortTarget::Version) => |a, b| a.version < b.version,
            Ok(SortTarget::Create) => |a, b| a.create_revision < b.create_revision,
            Ok(SortTarget::Mod) => |a, b| a.mod_revision < b.mod_revision,
            Ok(SortTarget::Value) => |a, b| a.value < b.value,
            // etcd panics on an unknown target; leave the key order instead.
            Err(_) => |_, _| false,
        };
        if order == SortOrder::Ascend as i32 {
            go_sort(&mut rr.kvs, less);
        } else {
            go_sort(&mut rr.kvs, |a, b| less(b, a));
        }
    }

    let mut more = false;
    if r.limit > 0 && rr.kvs.len() as i64 > r.limit {
        rr.kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut rr.kvs {
            kv.value = Vec::new();
        }
    }
    RangeResponse { header: header(rr.rev), kvs: rr.kvs, more, count: rr.count }
}

/// A Range inside a transaction.
pub(crate) fn range(tx: &Tx<'_>, r: &RangeRequest) -> Result<RangeResponse, MvccError> {
    let rr = tx.range(KeyRange::new(&r.key, &r.range_end), range_options(r))?;
    Ok(finish_range(r, rr))
}

/// etcd's `put`: the flags that need the previous kv, then the write.
pub(crate) fn put(tx: &mut Tx<'_>, p: &PutRequest) -> Result<PutResponse, MvccError> {
    let mut prev = None;
    if p.ignore_value || p.ignore_lease || p.prev_kv {
        let rr = tx.range(KeyRange::Single(&p.key), RangeOptions::default())?;
        prev = rr.kvs.into_iter().next();
    }
    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
        return Err(MvccError::KeyNotFound);
    }
    let value = match (&prev, p.ignore_value) {
        (Some(prev), true) => prev.value.clone(),
        _ => p.value.clone(),
    };
    let lease = match (&prev, p.ignore_lease) {
        (Some(prev), true) => prev.lease,
        _ => p.lease,
    };
    let rev = tx.put(&p.key, value, lease);
    Ok(PutResponse { header: header(rev), prev_kv: if p.prev_kv { prev } else { None } })
}

/// etcd's `deleteRange`.
pub(crate) fn delete_range(tx: &mut Tx<'_>, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
    let range = KeyRange::new(&d.key, &d.range_end);
    let mut prev_kvs = Vec::new();
    if d.prev_kv {
        prev_kvs = tx.range(range, RangeOptions::default())?.kvs;
    }
    let (deleted, rev) = tx.delete_range(range);
    Ok(DeleteRangeResponse { header: header(rev), deleted, prev_kvs })
}

/// etcd's `Txn`: evaluate every compare on the state before the txn, check
/// that the chosen branches can run, then run them.
pub(crate) fn txn(tx: &mut Tx<'_>, rt: &TxnRequest, leases: &dyn LeaseLookup) -> Result<TxnResponse, MvccError> {
    let mut path = Vec::new();
    compare_to_path(tx, rt, &mut path);
    check_txn(tx, rt, leases, &path)?;
    let (mut resp, _) = execute_txn(tx, rt, &path)?;
    resp.header = header(tx.end_rev());
    Ok(resp)
}

/// A read-only txn, resolved under the store's lock: the branches taken and,
/// for each range, which revisions to read. Its values are fetched after the
/// lock is released ([`ReadPlan::fetch`]), so a txn reading much never holds
/// up the applier, as a plain Range does not.
pub(crate) struct ReadPlan<'r> {
    succeeded: bool,
    steps: Vec<PlanStep<'r>>,
}

enum PlanStep<'r> {
    Range(&'r RangeRequest, tx::Selection),
    Txn(ReadPlan<'r>),
    Empty,
}

/// Resolves a read-only txn (see [`is_txn_read_only`]) under the lock.
pub(crate) fn plan_read_txn<'r>(tx: &Tx<'_>, rt: &'r TxnRequest) -> Result<ReadPlan<'r>, MvccError> {
    let mut path = Vec::new();
    compare_to_path(tx, rt, &mut path);
    check_txn(tx, rt, &super::NoLeases, &path)?;
    Ok(plan_branch(tx, rt, &path)?.0)
}

fn plan_branch<'r>(tx: &Tx<'_>, rt: &'r TxnRequest, path: &[bool]) -> Result<(ReadPlan<'r>, usize), MvccError> {
    let succeeded = path[0];
    let ops = if succeeded { &rt.success } else { &rt.failure };
    let mut steps = Vec::with_capacity(ops.len());
    let mut consumed = 0;
    for op in ops {
        let step = match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                PlanStep::Range(r, tx.select(KeyRange::new(&r.key, &r.range_end), range_options(r))?)
            }
            Some(request_op::Request::RequestTxn(nested)) => {
                let (plan, n) = plan_branch(tx, nested, &path[1 + consumed..])?;
                consumed += n + 1;
                PlanStep::Txn(plan)
            }
            _ => PlanStep::Empty,
        };
        steps.push(step);
    }
    Ok((ReadPlan { succeeded, steps }, consumed))
}

impl ReadPlan<'_> {
    /// Reads the planned values; the header is left for the caller (a
    /// nested txn's is empty, as etcd sends it).
    pub(crate) fn fetch(self, backend: &dyn crate::backend::Backend) -> Result<TxnResponse, MvccError> {
        let mut responses = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            let response = match step {
                PlanStep::Range(r, sel) => {
                    let kvs = tx::fetch(backend, sel.items)?;
                    let rr = tx::RangeResult { kvs, count: sel.count, rev: sel.rev };
                    Some(response_op::Response::ResponseRange(finish_range(r, rr)))
                }
                PlanStep::Txn(plan) => {
                    let mut nested = plan.fetch(backend)?;
                    nested.header = Some(ResponseHeader::default());
                    Some(response_op::Response::ResponseTxn(nested))
                }
                PlanStep::Empty => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse { header: None, succeeded: self.succeeded, responses })
    }
}

/// True when the txn only reads, whichever branch runs (etcd's `IsTxnReadonly`).
pub fn is_txn_read_only(rt: &TxnRequest) -> bool {
    rt.success.iter().chain(&rt.failure).all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// Pre-order list of the branch taken by this txn and every nested txn on
/// the taken branches.
fn compare_to_path(tx: &Tx<'_>, rt: &TxnRequest, path: &mut Vec<bool>) {
    let ok = rt.compare.iter().all(|c| apply_compare(tx, c));
    path.push(ok);
    let ops = if ok { &rt.success } else { &rt.failure };
    for op in ops {
        if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
            compare_to_path(tx, nested, path);
        }
    }
}

fn apply_compare(tx: &Tx<'_>, c: &Compare) -> bool {
    let Ok(rr) = tx.range(KeyRange::new(&c.key, &c.range_end), RangeOptions::default()) else {
        return false;
    };
    if rr.kvs.is_empty() {
        if c.target == compare::CompareTarget::Value as i32 {
            // A missing key has no value to compare; nil and "" are the same on the wire.
            return false;
        }
        return compare_kv(c, &KeyValue::default());
    }
    rr.kvs.iter().all(|kv| compare_kv(c, kv))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&match c.target_union {
            Some(TargetUnion::CreateRevision(r)) => r,
            _ => 0,
        }),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&match c.target_union {
            Some(TargetUnion::ModRevision(r)) => r,
            _ => 0,
        }),
        Ok(CompareTarget::Version) => kv.version.cmp(&match c.target_union {
            Some(TargetUnion::Version(r)) => r,
            _ => 0,
        }),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&match c.target_union {
            Some(TargetUnion::Lease(r)) => r,
            _ => 0,
        }),
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => true,
    }
}

/// etcd 3.4's txn checks: errors the taken branches would hit, found before
/// anything is written. Puts are checked first (write txns only), then
/// range revisions, each over the whole tree of taken branches, which fixes
/// which error wins when several apply.
fn check_txn(tx: &Tx<'_>, rt: &TxnRequest, leases: &dyn LeaseLookup, path: &[bool]) -> Result<(), MvccError> {
    if !is_txn_read_only(rt) {
        check_requests(rt, path, &mut |op| match op {
            request_op::Request::RequestPut(p) => check_put(tx, leases, p),
            _ => Ok(()),
        })?;
    }
    check_requests(rt, path, &mut |op| match op {
        request_op::Request::RequestRange(r) if r.revision != 0 => {
            if r.revision > tx.begin_rev() {
                Err(MvccError::FutureRevision)
            } else if r.revision < tx.first_rev() {
                Err(MvccError::Compacted)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    })?;
    Ok(())
}

/// Applies `check` to every op of the branches `path` selects, nested txns
/// included (etcd's `checkRequests`). Returns how many nested txns of `path`
/// it consumed.
fn check_requests(
    rt: &TxnRequest,
    path: &[bool],
    check: &mut dyn FnMut(&request_op::Request) -> Result<(), MvccError>,
) -> Result<usize, MvccError> {
    let ops = if path[0] { &rt.success } else { &rt.failure };
    let mut consumed = 0;
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestTxn(nested)) => {
                let n = check_requests(nested, &path[1 + consumed..], check)?;
                consumed += n + 1;
            }
            Some(other) => check(other)?,
            None => {}
        }
    }
    Ok(consumed)
}

fn check_put(tx: &Tx<'_>, leases: &dyn LeaseLookup, p: &PutRequest) -> Result<(), MvccError> {
    if p.ignore_value || p.ignore_lease {
        let rr = tx.range(KeyRange::Single(&p.key), RangeOptions::default())?;
        if rr.kvs.is_empty() {
            return Err(MvccError::KeyNotFound);
        }
    }
    if p.lease != 0 && !leases.exists(p.lease) {
        return Err(MvccError::LeaseNotFound);
    }
    Ok(())
}

/// Runs the branch `path[0]` selects; returns the response (header left
/// empty) and how many nested txns of `path` it consumed.
fn execute_txn(tx: &mut Tx<'_>, rt: &TxnRequest, path: &[bool]) -> Result<(TxnResponse, usize), MvccError> {
    let succeeded = path[0];
    let ops = if succeeded { &rt.success } else { &rt.failure };
    let mut responses = Vec::with_capacity(ops.len());
    let mut consumed = 0;
    for op in ops {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => Some(response_op::Response::ResponseRange(range(tx, r)?)),
            Some(request_op::Request::RequestPut(p)) => Some(response_op::Response::ResponsePut(put(tx, p)?)),
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(response_op::Response::ResponseDeleteRange(delete_range(tx, d)?))
            }
            Some(request_op::Request::RequestTxn(nested)) => {
                let (mut resp, n) = execute_txn(tx, nested, &path[1 + consumed..])?;
                consumed += n + 1;
                resp.header = Some(ResponseHeader::default());
                Some(response_op::Response::ResponseTxn(resp))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok((TxnResponse { header: None, succeeded, responses }, consumed))
}
