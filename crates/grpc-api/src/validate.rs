//! Request checks etcd makes before a request reaches raft (`v3rpc/key.go`):
//! a bad request is refused here and writes nothing.

use keel_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keel_proto::etcdserverpb::request_op::Request;
use keel_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use std::collections::HashSet;
use tonic::Status;

use crate::errors::{
    status, DUPLICATE_KEY, EMPTY_KEY, INVALID_SORT_OPTION, KEY_NOT_FOUND, LEASE_PROVIDED, TOO_MANY_OPS, VALUE_PROVIDED,
};

pub(crate) fn check_range(request: &RangeRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(status(EMPTY_KEY));
    }
    if SortOrder::try_from(request.sort_order).is_err() || SortTarget::try_from(request.sort_target).is_err() {
        return Err(status(INVALID_SORT_OPTION));
    }
    Ok(())
}

pub(crate) fn check_put(request: &PutRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(status(EMPTY_KEY));
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(status(VALUE_PROVIDED));
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(status(LEASE_PROVIDED));
    }
    Ok(())
}

pub(crate) fn check_delete(request: &DeleteRangeRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(status(EMPTY_KEY));
    }
    Ok(())
}

/// etcd's `checkTxnRequest` followed by its duplicate-key check.
pub(crate) fn check_txn(request: &TxnRequest, max_txn_ops: usize) -> Result<(), Status> {
    check_txn_shape(request, max_txn_ops)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    Ok(())
}

fn check_txn_shape(request: &TxnRequest, max_txn_ops: usize) -> Result<(), Status> {
    let ops = request.compare.len().max(request.success.len()).max(request.failure.len());
    if ops > max_txn_ops {
        return Err(status(TOO_MANY_OPS));
    }
    if request.compare.iter().any(|c| c.key.is_empty()) {
        return Err(status(EMPTY_KEY));
    }
    for op in request.success.iter().chain(&request.failure) {
        check_op(op, max_txn_ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), Status> {
    match &op.request {
        Some(Request::RequestRange(range)) => check_range(range),
        Some(Request::RequestPut(put)) => check_put(put),
        Some(Request::RequestDeleteRange(delete)) => check_delete(delete),
        Some(Request::RequestTxn(txn)) => check_txn_shape(txn, max_txn_ops),
        None => Err(status(KEY_NOT_FOUND)),
    }
}

/// The keys a branch deletes, for membership tests in logarithmic time:
/// single keys hashed, ranges `[start, end)` kept merged into disjoint
/// sorted intervals.
#[derive(Default)]
struct DeletedKeys {
    singles: HashSet<Vec<u8>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DeletedKeys {
    /// The deletes among `ops` (a `range_end` at or below the key deletes
    /// nothing, as etcd's interval tree has it).
    fn of(ops: &[RequestOp]) -> Self {
        let mut deleted = DeletedKeys::default();
        for op in ops {
            let Some(Request::RequestDeleteRange(d)) = &op.request else { continue };
            if d.range_end.is_empty() {
                deleted.singles.insert(d.key.clone());
            } else if d.key < d.range_end {
                deleted.ranges.push((d.key.clone(), d.range_end.clone()));
            }
        }
        deleted.ranges.sort();
        deleted.coalesce();
        deleted
    }

    /// Adds `other`'s keys: one merge of two sorted lists.
    fn union(&mut self, other: DeletedKeys) {
        self.singles.extend(other.singles);
        if other.ranges.is_empty() {
            return;
        }
        let mut merged = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        let (mut mine, mut theirs) =
            (std::mem::take(&mut self.ranges).into_iter().peekable(), other.ranges.into_iter().peekable());
        while let (Some(a), Some(b)) = (mine.peek(), theirs.peek()) {
            merged.push(if a <= b { mine.next() } else { theirs.next() }.expect("peeked"));
        }
        merged.extend(mine);
        merged.extend(theirs);
        self.ranges = merged;
        self.coalesce();
    }

    /// Merges overlapping and adjacent ranges of the sorted list.
    fn coalesce(&mut self) {
        let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(self.ranges.len());
        for (start, end) in std::mem::take(&mut self.ranges) {
            match merged.last_mut() {
                Some((_, last_end)) if start <= *last_end => {
                    if end > *last_end {
                        *last_end = end;
                    }
                }
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
    }

    fn contains(&self, key: &[u8]) -> bool {
        if self.singles.contains(key) {
            return true;
        }
        let after = self.ranges.partition_point(|(start, _)| start.as_slice() <= key);
        after > 0 && key < self.ranges[after - 1].1.as_slice()
    }
}

/// etcd's `checkIntervals`: within one branch a key may be put at most once
/// and not also deleted; the two branches of a nested txn exclude each other.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, DeletedKeys), Status> {
    let mut deleted = DeletedKeys::of(ops);
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else { continue };
        let (puts_then, deletes_then) = check_intervals(&txn.success)?;
        let (puts_else, deletes_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted.contains(key) {
                return Err(status(DUPLICATE_KEY));
            }
            puts.insert(key.clone());
        }
        for key in puts_else {
            if (puts.contains(&key) && !puts_then.contains(&key)) || deleted.contains(&key) {
                return Err(status(DUPLICATE_KEY));
            }
            puts.insert(key);
        }
        deleted.union(deletes_then);
        deleted.union(deletes_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else { continue };
        if puts.contains(&put.key) || deleted.contains(&put.key) {
            return Err(status(DUPLICATE_KEY));
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: key.into(), ..Default::default() })) }
    }
    fn delete(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }
    fn message(result: Result<(), Status>) -> String {
        result.err().map(|s| s.message().to_string()).unwrap_or_default()
    }

    #[test]
    fn duplicate_puts_in_one_branch_are_refused() {
        let request = txn(vec![put("a"), put("a")], vec![]);
        assert_eq!(message(check_txn(&request, 128)), DUPLICATE_KEY.1);
    }

    #[test]
    fn put_inside_a_deleted_range_is_refused() {
        let request = txn(vec![delete("a", "c"), put("b")], vec![]);
        assert_eq!(message(check_txn(&request, 128)), DUPLICATE_KEY.1);
        let request = txn(vec![delete("a", "c"), put("c")], vec![]);
        assert!(check_txn(&request, 128).is_ok());
    }

    #[test]
    fn same_key_in_both_branches_is_fine() {
        let request = txn(vec![put("a")], vec![put("a")]);
        assert!(check_txn(&request, 128).is_ok());
        let nested = RequestOp { request: Some(Request::RequestTxn(txn(vec![put("a")], vec![put("a")]))) };
        assert!(check_txn(&txn(vec![nested], vec![]), 128).is_ok());
    }

    #[test]
    fn nested_put_clashing_with_outer_put_is_refused() {
        let nested = RequestOp { request: Some(Request::RequestTxn(txn(vec![put("a")], vec![]))) };
        assert_eq!(message(check_txn(&txn(vec![nested, put("a")], vec![]), 128)), DUPLICATE_KEY.1);
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let request = txn((0..3).map(|i| put(&i.to_string())).collect(), vec![]);
        assert_eq!(message(check_txn(&request, 2)), TOO_MANY_OPS.1);
        assert_eq!(message(check_txn(&txn(vec![put("")], vec![]), 128)), EMPTY_KEY.1);
        assert_eq!(message(check_txn(&txn(vec![RequestOp { request: None }], vec![]), 128)), KEY_NOT_FOUND.1);
    }

    #[test]
    fn put_checks() {
        let mut request =
            PutRequest { key: b"k".to_vec(), ignore_value: true, value: b"v".to_vec(), ..Default::default() };
        assert_eq!(message(check_put(&request)), VALUE_PROVIDED.1);
        request.value.clear();
        request.ignore_lease = true;
        request.lease = 5;
        assert_eq!(message(check_put(&request)), LEASE_PROVIDED.1);
    }

    /// Deleted ranges merged and searched give the answers a scan of every
    /// range gives, for overlapping, nested and adjacent ranges.
    #[test]
    fn deleted_key_lookups_match_a_scan() {
        let pairs = [("b", "d"), ("c", "f"), ("h", "i"), ("i", "k"), ("m", ""), ("p", "p"), ("x", "z")];
        let ops: Vec<RequestOp> = pairs.iter().map(|(key, end)| delete(key, end)).collect();
        let scan = |key: &[u8]| {
            pairs.iter().any(|(start, end)| {
                if end.is_empty() {
                    start.as_bytes() == key
                } else {
                    start.as_bytes() <= key && key < end.as_bytes()
                }
            })
        };
        // Built at once, and as the union of two halves (as nested txns are).
        let whole = DeletedKeys::of(&ops);
        let mut halves = DeletedKeys::of(&ops[..3]);
        halves.union(DeletedKeys::of(&ops[3..]));
        for key in ["a", "b", "bz", "c", "e", "f", "g", "h", "i", "j", "k", "m", "ma", "p", "w", "x", "y", "z", "zz"] {
            assert_eq!(whole.contains(key.as_bytes()), scan(key.as_bytes()), "{key}");
            assert_eq!(halves.contains(key.as_bytes()), scan(key.as_bytes()), "{key} (union)");
        }
    }

    /// Thousands of puts against thousands of deleted ranges: each put is
    /// checked in logarithmic time (it was a scan of every range).
    #[test]
    fn a_large_txn_is_checked() {
        let mut ops: Vec<RequestOp> = (0..20_000).map(|i| put(&format!("p{i:05}"))).collect();
        ops.extend((0..20_000).map(|i| delete(&format!("d{i:05}"), &format!("d{i:05}z"))));
        assert!(check_txn(&txn(ops.clone(), Vec::new()), usize::MAX).is_ok());
        ops.push(put("d12345x"));
        assert_eq!(
            message(check_txn(&txn(ops, Vec::new()), usize::MAX)),
            "etcdserver: duplicate key given in txn request"
        );
    }
}
