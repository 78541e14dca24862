//! Fuzzing the request path: whatever bytes a client sends, decoding,
//! etcd's validation and applying to a store answer with a value or an
//! error, never a panic. Inputs are random bytes and valid requests with
//! random bytes flipped (which reach deeper than random bytes do). A few
//! thousand cases run with every `cargo test`; `PROPTEST_CASES` runs more.

use keel_mvcc::{KvStore, NoLeases, WriteRequest};
use keel_proto::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proptest::prelude::*;
use prost::Message;

use crate::validate;

/// A txn of every kind of op, nested once: the seed the mutations start from.
fn sample_txn() -> TxnRequest {
    let put = PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), prev_kv: true, ..Default::default() };
    let range = RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), limit: 3, ..Default::default() };
    let delete = DeleteRangeRequest { key: b"b".to_vec(), range_end: b"c".to_vec(), prev_kv: true };
    let nested = TxnRequest {
        compare: vec![Compare {
            key: b"a".to_vec(),
            target: compare::CompareTarget::Mod as i32,
            result: compare::CompareResult::Greater as i32,
            target_union: Some(compare::TargetUnion::ModRevision(1)),
            ..Default::default()
        }],
        success: vec![RequestOp { request: Some(request_op::Request::RequestRange(range.clone())) }],
        failure: vec![RequestOp { request: Some(request_op::Request::RequestPut(put.clone())) }],
    };
    TxnRequest {
        compare: vec![Compare {
            key: b"a".to_vec(),
            target: compare::CompareTarget::Value as i32,
            target_union: Some(compare::TargetUnion::Value(b"1".to_vec())),
            ..Default::default()
        }],
        success: vec![
            RequestOp { request: Some(request_op::Request::RequestPut(put)) },
            RequestOp { request: Some(request_op::Request::RequestDeleteRange(delete)) },
            RequestOp { request: Some(request_op::Request::RequestTxn(nested)) },
        ],
        failure: vec![RequestOp { request: Some(request_op::Request::RequestRange(range)) }],
    }
}

/// Decodes `bytes` as each request kind; every one that passes validation
/// is applied (or read) on `store`. Errors are fine; panics are not.
fn exercise(store: &KvStore, index: &mut u64, bytes: &[u8]) {
    let mut next = || {
        *index += 1;
        *index
    };
    if let Ok(request) = RangeRequest::decode(bytes) {
        if validate::check_range(&request).is_ok() {
            let _ = store.range(&request);
        }
    }
    if let Ok(request) = PutRequest::decode(bytes) {
        if validate::check_put(&request).is_ok() {
            let _ = store.apply(next(), WriteRequest::Put(&request), &NoLeases);
        }
    }
    if let Ok(request) = DeleteRangeRequest::decode(bytes) {
        if validate::check_delete(&request).is_ok() {
            let _ = store.apply(next(), WriteRequest::DeleteRange(&request), &NoLeases);
        }
    }
    if let Ok(request) = TxnRequest::decode(bytes) {
        if validate::check_txn(&request, crate::DEFAULT_MAX_TXN_OPS).is_ok() {
            match store.read_txn(&request) {
                Some(_) => {}
                None => {
                    let _ = store.apply(next(), WriteRequest::Txn(&request), &NoLeases);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let store = KvStore::in_memory();
        exercise(&store, &mut 0, &bytes);
    }

    #[test]
    fn mutated_requests_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let store = KvStore::in_memory();
        let mut index = 0;
        let mut bytes = sample_txn().encode_to_vec();
        // Applied as is first, so the store has keys and history to hit.
        exercise(&store, &mut index, &bytes);
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        exercise(&store, &mut index, &bytes);
    }
}
