//! A small builder for etcd transactions: compares, then ops on success or
//! failure.
//!
//! ```
//! use keel_client::{Compare, CompareOp, PutOptions, GetOptions, Txn, TxnOp};
//! // Create "k" only if it does not exist yet; otherwise read it.
//! let txn = Txn::new()
//!     .when([Compare::create_revision("k", CompareOp::Equal, 0)])
//!     .and_then([TxnOp::put("k", "v", PutOptions::new().with_lease(0x1234))])
//!     .or_else([TxnOp::get("k", GetOptions::new())]);
//! # let _ = txn;
//! ```

use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::request_op::Request;
use keel_proto::etcdserverpb::response_op::Response;
use keel_proto::etcdserverpb::{self as pb, DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse};

use crate::keys::KeyRange;
use crate::kv::{DeleteOptions, GetOptions, PutOptions};

/// How a compare relates the key's field to the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

impl CompareOp {
    fn wire(self) -> CompareResult {
        match self {
            CompareOp::Equal => CompareResult::Equal,
            CompareOp::NotEqual => CompareResult::NotEqual,
            CompareOp::Greater => CompareResult::Greater,
            CompareOp::Less => CompareResult::Less,
        }
    }
}

/// One condition of a transaction. An absent key has version, create and
/// mod revision 0 and lease 0, so `create_revision(k, Equal, 0)` means "k
/// does not exist".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget, operand: TargetUnion) -> Self {
        Compare(pb::Compare {
            result: op.wire() as i32,
            target: target as i32,
            key: key.into(),
            range_end: Vec::new(),
            target_union: Some(operand),
        })
    }

    /// Compares the number of writes since the key was created.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(key, op, CompareTarget::Version, TargetUnion::Version(version))
    }

    /// Compares the revision that created the key.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::Create, TargetUnion::CreateRevision(revision))
    }

    /// Compares the revision of the key's last write.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::Mod, TargetUnion::ModRevision(revision))
    }

    /// Compares the key's value bytewise.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, op, CompareTarget::Value, TargetUnion::Value(value.into()))
    }

    /// Compares the key's lease id.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Self::new(key, op, CompareTarget::Lease, TargetUnion::Lease(lease))
    }

    /// Applies the compare to every key starting with the key.
    pub fn with_prefix(self) -> Self {
        self.with_key_range(KeyRange::Prefix)
    }

    /// Applies the compare to every key in `[key, end)`.
    pub fn with_range(self, end: impl Into<Vec<u8>>) -> Self {
        self.with_key_range(KeyRange::End(end.into()))
    }

    fn with_key_range(mut self, range: KeyRange) -> Self {
        let (key, end) = range.resolve(std::mem::take(&mut self.0.key));
        self.0.key = key;
        self.0.range_end = end;
        self
    }

    /// The wire message.
    pub fn into_proto(self) -> pb::Compare {
        self.0
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnOp(Request);

impl TxnOp {
    /// A read, as `Client::get_with`.
    pub fn get(key: impl Into<Vec<u8>>, options: GetOptions) -> Self {
        TxnOp(Request::RequestRange(options.build(key.into())))
    }

    /// A write, as `Client::put_with`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, options: PutOptions) -> Self {
        TxnOp(Request::RequestPut(options.build(key.into(), value.into())))
    }

    /// A delete, as `Client::delete_with`.
    pub fn delete(key: impl Into<Vec<u8>>, options: DeleteOptions) -> Self {
        TxnOp(Request::RequestDeleteRange(options.build(key.into())))
    }

    /// A nested transaction.
    pub fn txn(txn: Txn) -> Self {
        TxnOp(Request::RequestTxn(txn.into_request()))
    }

    fn is_read_only(&self) -> bool {
        match &self.0 {
            Request::RequestRange(_) => true,
            Request::RequestPut(_) | Request::RequestDeleteRange(_) => false,
            Request::RequestTxn(txn) => txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
                Some(request) => TxnOp(request.clone()).is_read_only(),
                None => true,
            }),
        }
    }
}

/// A transaction under construction; run it with `Client::txn`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl Txn {
    /// A transaction with no compares (which therefore succeeds) and no ops.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds compares; all of them must hold for `and_then` to run.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds ops run, in order, when every compare holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds ops run, in order, when some compare fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// True when no branch writes, so running it twice is harmless.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(TxnOp::is_read_only)
    }

    /// The wire message.
    pub fn into_request(self) -> pb::TxnRequest {
        let ops = |ops: Vec<TxnOp>| ops.into_iter().map(|op| pb::RequestOp { request: Some(op.0) }).collect();
        pb::TxnRequest {
            compare: self.compares.into_iter().map(Compare::into_proto).collect(),
            success: ops(self.success),
            failure: ops(self.failure),
        }
    }
}

/// The `i`-th op result of a txn response as a range response.
pub fn txn_range(response: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match response.responses.get(i)?.response.as_ref()? {
        Response::ResponseRange(range) => Some(range),
        _ => None,
    }
}

/// The `i`-th op result of a txn response as a put response.
pub fn txn_put(response: &TxnResponse, i: usize) -> Option<&PutResponse> {
    match response.responses.get(i)?.response.as_ref()? {
        Response::ResponsePut(put) => Some(put),
        _ => None,
    }
}

/// The `i`-th op result of a txn response as a delete response.
pub fn txn_delete(response: &TxnResponse, i: usize) -> Option<&DeleteRangeResponse> {
    match response.responses.get(i)?.response.as_ref()? {
        Response::ResponseDeleteRange(delete) => Some(delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_produces_the_wire_request() {
        let request = Txn::new()
            .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("lock", "me", PutOptions::new().with_lease(5))])
            .or_else([TxnOp::get("lock", GetOptions::new())])
            .into_request();

        assert_eq!(request.compare.len(), 1);
        let compare = &request.compare[0];
        assert_eq!(compare.key, b"lock");
        assert_eq!(compare.result, CompareResult::Equal as i32);
        assert_eq!(compare.target, CompareTarget::Create as i32);
        assert_eq!(compare.target_union, Some(TargetUnion::CreateRevision(0)));

        match &request.success[..] {
            [pb::RequestOp { request: Some(Request::RequestPut(put)) }] => {
                assert_eq!((put.key.as_slice(), put.value.as_slice(), put.lease), (&b"lock"[..], &b"me"[..], 5));
            }
            other => panic!("unexpected success ops {other:?}"),
        }
        match &request.failure[..] {
            [pb::RequestOp { request: Some(Request::RequestRange(range)) }] => assert_eq!(range.key, b"lock"),
            other => panic!("unexpected failure ops {other:?}"),
        }
    }

    #[test]
    fn each_compare_sets_its_target_and_operand() {
        let cases = [
            (Compare::version("k", CompareOp::Greater, 1), CompareTarget::Version, TargetUnion::Version(1)),
            (Compare::mod_revision("k", CompareOp::Less, 2), CompareTarget::Mod, TargetUnion::ModRevision(2)),
            (Compare::value("k", CompareOp::NotEqual, "v"), CompareTarget::Value, TargetUnion::Value(b"v".to_vec())),
            (Compare::lease("k", CompareOp::Equal, 3), CompareTarget::Lease, TargetUnion::Lease(3)),
        ];
        for (compare, target, operand) in cases {
            let wire = compare.into_proto();
            assert_eq!(wire.target, target as i32);
            assert_eq!(wire.target_union, Some(operand));
        }
    }

    #[test]
    fn compare_over_a_prefix_sets_range_end() {
        let wire = Compare::version("dir/", CompareOp::Equal, 0).with_prefix().into_proto();
        assert_eq!((wire.key, wire.range_end), (b"dir/".to_vec(), b"dir0".to_vec()));
    }

    #[test]
    fn read_only_detection_looks_into_nested_txns() {
        let reads = Txn::new().and_then([TxnOp::get("a", GetOptions::new())]);
        assert!(reads.is_read_only());
        assert!(Txn::new().is_read_only());

        let nested_read = Txn::new().or_else([TxnOp::txn(reads.clone())]);
        assert!(nested_read.is_read_only());

        let nested_write =
            Txn::new().and_then([TxnOp::txn(Txn::new().or_else([TxnOp::delete("a", DeleteOptions::new())]))]);
        assert!(!nested_write.is_read_only());
        assert!(!reads.or_else([TxnOp::put("a", "b", PutOptions::new())]).is_read_only());
    }
}
