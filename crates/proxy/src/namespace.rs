//! `--namespace`: every key a client names gets the prefix on the way up,
//! and loses it on the way down, so a client sees a cluster of its own.
//! Ranges are kept inside the prefix: "from this key on" (`range_end`
//! `\0`) ends where the prefix ends, as etcd's namespace package does.

use keel_proto::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse, WatchCreateRequest,
};
use keel_proto::mvccpb::{Event, KeyValue};

#[derive(Debug, Clone, Default)]
pub(crate) struct Namespace(Vec<u8>);

impl Namespace {
    pub(crate) fn new(prefix: Vec<u8>) -> Namespace {
        Namespace(prefix)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + key.len());
        out.extend_from_slice(&self.0);
        out.extend_from_slice(key);
        out
    }

    /// A range end: none stays none, "every key from here" ends at the
    /// prefix's end, any other end is prefixed.
    pub(crate) fn range_end(&self, end: &[u8]) -> Vec<u8> {
        match end {
            [] => Vec::new(),
            [0] => prefix_end(&self.0),
            end => self.key(end),
        }
    }

    pub(crate) fn strip(&self, key: &mut Vec<u8>) {
        if key.starts_with(&self.0) {
            key.drain(..self.0.len());
        }
    }

    pub(crate) fn strip_kv(&self, kv: &mut KeyValue) {
        self.strip(&mut kv.key);
    }

    pub(crate) fn strip_event(&self, event: &mut Event) {
        if let Some(kv) = &mut event.kv {
            self.strip_kv(kv);
        }
        if let Some(kv) = &mut event.prev_kv {
            self.strip_kv(kv);
        }
    }

    pub(crate) fn range(&self, request: &mut RangeRequest) {
        request.range_end = self.range_end(&request.range_end);
        request.key = self.key(&request.key);
    }

    pub(crate) fn put(&self, request: &mut PutRequest) {
        request.key = self.key(&request.key);
    }

    pub(crate) fn delete(&self, request: &mut DeleteRangeRequest) {
        request.range_end = self.range_end(&request.range_end);
        request.key = self.key(&request.key);
    }

    pub(crate) fn watch(&self, request: &mut WatchCreateRequest) {
        request.range_end = self.range_end(&request.range_end);
        request.key = self.key(&request.key);
    }

    fn compare(&self, compare: &mut Compare) {
        compare.range_end = self.range_end(&compare.range_end);
        compare.key = self.key(&compare.key);
    }

    pub(crate) fn txn(&self, request: &mut TxnRequest) {
        request.compare.iter_mut().for_each(|c| self.compare(c));
        for op in request.success.iter_mut().chain(request.failure.iter_mut()) {
            self.request_op(op);
        }
    }

    fn request_op(&self, op: &mut RequestOp) {
        match &mut op.request {
            Some(request_op::Request::RequestRange(r)) => self.range(r),
            Some(request_op::Request::RequestPut(r)) => self.put(r),
            Some(request_op::Request::RequestDeleteRange(r)) => self.delete(r),
            Some(request_op::Request::RequestTxn(r)) => self.txn(r),
            None => {}
        }
    }

    pub(crate) fn range_response(&self, response: &mut RangeResponse) {
        response.kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    pub(crate) fn put_response(&self, response: &mut PutResponse) {
        if let Some(kv) = &mut response.prev_kv {
            self.strip_kv(kv);
        }
    }

    pub(crate) fn delete_response(&self, response: &mut DeleteRangeResponse) {
        response.prev_kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    pub(crate) fn txn_response(&self, response: &mut TxnResponse) {
        for op in &mut response.responses {
            self.response_op(op);
        }
    }

    fn response_op(&self, op: &mut ResponseOp) {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => self.range_response(r),
            Some(response_op::Response::ResponsePut(r)) => self.put_response(r),
            Some(response_op::Response::ResponseDeleteRange(r)) => self.delete_response(r),
            Some(response_op::Response::ResponseTxn(r)) => self.txn_response(r),
            None => {}
        }
    }
}

/// The first key after every key starting with `prefix`; `\0` (every key)
/// when there is none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_inside_the_prefix() {
        let ns = Namespace::new(b"/t/".to_vec());
        type Case = (&'static [u8], &'static [u8], &'static [u8], &'static [u8]);
        let cases: [Case; 4] = [
            (b"a", b"", b"/t/a", b""),
            (b"a", b"b", b"/t/a", b"/t/b"),
            (b"a", b"\0", b"/t/a", b"/t0"),
            (b"\0", b"\0", b"/t/\0", b"/t0"),
        ];
        for (key, end, want_key, want_end) in cases {
            let mut request = RangeRequest { key: key.to_vec(), range_end: end.to_vec(), ..Default::default() };
            ns.range(&mut request);
            assert_eq!((request.key.as_slice(), request.range_end.as_slice()), (want_key, want_end));
        }
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn nested_txns_are_prefixed_and_stripped() {
        let ns = Namespace::new(b"p/".to_vec());
        let inner = TxnRequest {
            compare: vec![Compare { key: b"c".to_vec(), ..Default::default() }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest { key: b"k".to_vec(), ..Default::default() })),
            }],
            failure: vec![],
        };
        let mut txn = TxnRequest {
            compare: vec![],
            success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(inner)) }],
            failure: vec![],
        };
        ns.txn(&mut txn);
        let Some(request_op::Request::RequestTxn(inner)) = &txn.success[0].request else { panic!() };
        assert_eq!(inner.compare[0].key, b"p/c");
        let Some(request_op::Request::RequestPut(put)) = &inner.success[0].request else { panic!() };
        assert_eq!(put.key, b"p/k");

        let kv = KeyValue { key: b"p/k".to_vec(), ..Default::default() };
        let mut response = TxnResponse {
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    kvs: vec![kv],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        ns.txn_response(&mut response);
        let Some(response_op::Response::ResponseRange(range)) = &response.responses[0].response else { panic!() };
        assert_eq!(range.kvs[0].key, b"k");
    }
}
