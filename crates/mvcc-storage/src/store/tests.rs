//! Semantics of `KvStore`, case by case against what etcd answers.

use std::collections::HashSet;

use keel_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use keel_proto::mvccpb::{event::EventType, KeyValue};

use super::*;

struct Leases(HashSet<i64>);

impl LeaseLookup for Leases {
    fn exists(&self, id: i64) -> bool {
        self.0.contains(&id)
    }
}

/// A store plus a raft index counter, so each helper call is one entry.
struct T {
    s: KvStore,
    index: u64,
}

impl T {
    fn new() -> Self {
        T { s: KvStore::in_memory(), index: 0 }
    }

    fn apply(&mut self, req: WriteRequest<'_>) -> Result<WriteOutcome, MvccError> {
        self.apply_with(req, &NoLeases)
    }

    fn apply_with(&mut self, req: WriteRequest<'_>, leases: &dyn LeaseLookup) -> Result<WriteOutcome, MvccError> {
        self.index += 1;
        self.s.apply(self.index, req, leases)
    }

    fn put(&mut self, k: &str, v: &str) -> PutResponse {
        self.put_req(PutRequest { key: k.into(), value: v.into(), ..Default::default() }).unwrap()
    }

    fn put_req(&mut self, p: PutRequest) -> Result<PutResponse, MvccError> {
        match self.apply(WriteRequest::Put(&p))?.response {
            WriteResponse::Put(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn delete(&mut self, k: &str, end: &str) -> DeleteRangeResponse {
        self.delete_req(DeleteRangeRequest { key: k.into(), range_end: end.into(), ..Default::default() })
    }

    fn delete_req(&mut self, d: DeleteRangeRequest) -> DeleteRangeResponse {
        match self.apply(WriteRequest::DeleteRange(&d)).unwrap().response {
            WriteResponse::DeleteRange(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn txn(&mut self, t: TxnRequest) -> Result<TxnResponse, MvccError> {
        match self.apply(WriteRequest::Txn(&t))?.response {
            WriteResponse::Txn(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn compact(&mut self, rev: i64) -> Result<WriteOutcome, MvccError> {
        self.apply(WriteRequest::Compact(&CompactionRequest { revision: rev, physical: false }))
    }

    fn get(&self, k: &str) -> Option<KeyValue> {
        self.range(RangeRequest { key: k.into(), ..Default::default() }).unwrap().kvs.into_iter().next()
    }

    fn range(&self, r: RangeRequest) -> Result<RangeResponse, MvccError> {
        self.s.range(&r)
    }

    fn keys(&self, r: RangeRequest) -> Vec<String> {
        self.range(r).unwrap().kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
    }
}

fn rr(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue { key: key.into(), value: value.into(), create_revision: create, mod_revision: modr, version, lease: 0 }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn op_range(r: RangeRequest) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(r)) }
}

fn op_delete(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            ..Default::default()
        })),
    }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestTxn(t)) }
}

fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    value: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(value),
        range_end: Vec::new(),
    }
}

fn hdr(r: &Option<keel_proto::etcdserverpb::ResponseHeader>) -> i64 {
    r.as_ref().expect("header set").revision
}

#[test]
fn empty_store() {
    let t = T::new();
    assert_eq!(t.s.current_revision(), 1);
    assert_eq!(t.s.compact_revision(), -1);
    assert_eq!(t.s.consistent_index(), 0);
    let resp = t.range(rr("a", "")).unwrap();
    assert_eq!(hdr(&resp.header), 1);
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 0, false));
}

#[test]
fn put_bumps_revision_and_version() {
    let mut t = T::new();
    assert_eq!(hdr(&t.put("foo", "bar").header), 2);
    assert_eq!(t.get("foo"), Some(kv("foo", "bar", 2, 2, 1)));
    assert_eq!(hdr(&t.put("foo", "baz").header), 3);
    assert_eq!(t.get("foo"), Some(kv("foo", "baz", 2, 3, 2)));
    assert_eq!(t.s.current_revision(), 3);
    assert_eq!(t.s.consistent_index(), 2);
}

#[test]
fn put_after_delete_starts_a_new_generation() {
    let mut t = T::new();
    t.put("k", "1");
    t.put("k", "2");
    let d = t.delete("k", "");
    assert_eq!((d.deleted, hdr(&d.header)), (1, 4));
    assert_eq!(t.get("k"), None);
    t.put("k", "3");
    assert_eq!(t.get("k"), Some(kv("k", "3", 5, 5, 1)));
    // History is still readable.
    let old = t.range(RangeRequest { key: "k".into(), revision: 3, ..Default::default() }).unwrap();
    assert_eq!(old.kvs, vec![kv("k", "2", 2, 3, 2)]);
    assert_eq!(hdr(&old.header), 5, "header carries the current revision, not the read one");
    let gone = t.range(RangeRequest { key: "k".into(), revision: 4, ..Default::default() }).unwrap();
    assert!(gone.kvs.is_empty());
}

#[test]
fn delete_of_nothing_does_not_bump_revision() {
    let mut t = T::new();
    t.put("a", "1");
    let out =
        t.apply(WriteRequest::DeleteRange(&DeleteRangeRequest { key: "zz".into(), ..Default::default() })).unwrap();
    assert_eq!(out.revision, 2);
    assert!(out.events.is_empty());
    match out.response {
        WriteResponse::DeleteRange(d) => assert_eq!((d.deleted, hdr(&d.header)), (0, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.s.current_revision(), 2);
    assert_eq!(t.s.consistent_index(), 2, "a no-op write is still applied");
}

#[test]
fn delete_range_with_prev_kv_and_events() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("b", "2");
    t.put("c", "3");
    let d = DeleteRangeRequest { key: "a".into(), range_end: "c".into(), prev_kv: true };
    let out = t.apply(WriteRequest::DeleteRange(&d)).unwrap();
    let WriteResponse::DeleteRange(resp) = out.response else { panic!() };
    assert_eq!(resp.deleted, 2);
    assert_eq!(resp.prev_kvs, vec![kv("a", "1", 2, 2, 1), kv("b", "2", 3, 3, 1)]);
    assert_eq!(hdr(&resp.header), 5);
    assert_eq!(out.revision, 5);
    let evs: Vec<_> = out.events.iter().map(|e| (e.r#type, e.kv.clone().unwrap())).collect();
    assert_eq!(
        evs,
        vec![
            (EventType::Delete as i32, KeyValue { key: "a".into(), mod_revision: 5, ..Default::default() }),
            (EventType::Delete as i32, KeyValue { key: "b".into(), mod_revision: 5, ..Default::default() }),
        ]
    );
    assert_eq!(t.keys(rr("a", "\0")), ["c"]);
}

#[test]
fn put_events_carry_the_full_kv() {
    let mut t = T::new();
    let p = PutRequest { key: "k".into(), value: "v".into(), ..Default::default() };
    let out = t.apply(WriteRequest::Put(&p)).unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].r#type, EventType::Put as i32);
    assert_eq!(out.events[0].kv, Some(kv("k", "v", 2, 2, 1)));
    assert_eq!(out.events[0].prev_kv, None);
}

fn abc(t: &mut T) {
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "1")] {
        t.put(k, v);
    }
    t.put("b", "4"); // b: version 2, mod 6
}

#[test]
fn range_key_forms() {
    let mut t = T::new();
    abc(&mut t);
    t.put("e\0x", "0");
    assert_eq!(t.keys(rr("b", "")), ["b"]);
    assert_eq!(t.keys(rr("b", "d")), ["b", "c"]);
    assert_eq!(t.keys(rr("b", "\0")), ["b", "c", "d", "e\0x"]);
    assert_eq!(t.keys(rr("\0", "\0")), ["a", "b", "c", "d", "e\0x"]);
    assert_eq!(t.keys(rr("d", "b")), Vec::<String>::new());
    assert_eq!(t.keys(rr("zz", "")), Vec::<String>::new());
}

#[test]
fn point_reads_from_memory_answer_as_range_does() {
    let mut t = T::new();
    abc(&mut t);
    let old = RangeRequest { revision: 2, ..rr("b", "") };
    let count = RangeRequest { count_only: true, ..rr("b", "") };
    let compacted = RangeRequest { revision: 1, ..rr("b", "") };
    t.compact(2).unwrap();
    for req in [rr("a", ""), rr("b", ""), rr("zz", ""), old, count] {
        assert_eq!(t.s.range_in_memory(&req).unwrap().unwrap(), t.s.range(&req).unwrap(), "{req:?}");
    }
    assert!(t.s.range_in_memory(&compacted).unwrap().is_err());
    assert!(t.s.range_in_memory(&rr("a", "c")).is_none(), "a range of many keys is never tried");
}

#[test]
fn range_limit_more_count() {
    let mut t = T::new();
    abc(&mut t);
    let resp = t.range(RangeRequest { limit: 2, ..rr("a", "\0") }).unwrap();
    assert_eq!(resp.kvs.len(), 2);
    assert!(resp.more);
    assert_eq!(resp.count, 4, "count ignores the limit");
    let resp = t.range(RangeRequest { limit: 4, ..rr("a", "\0") }).unwrap();
    assert!(!resp.more);
    let resp = t.range(RangeRequest { count_only: true, limit: 1, ..rr("a", "\0") }).unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 4, false));
    let resp = t.range(RangeRequest { keys_only: true, ..rr("a", "") }).unwrap();
    assert_eq!(resp.kvs, vec![kv("a", "", 2, 2, 1)]);
}

#[test]
fn range_filters_do_not_change_count() {
    let mut t = T::new();
    abc(&mut t);
    let resp = t.range(RangeRequest { min_mod_revision: 4, ..rr("a", "\0") }).unwrap();
    let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    assert_eq!(resp.count, 4);
    let resp = t.range(RangeRequest { max_mod_revision: 4, limit: 1, ..rr("a", "\0") }).unwrap();
    assert_eq!(resp.kvs, vec![kv("a", "3", 2, 2, 1)]);
    assert!(resp.more, "more counts filtered results beyond the limit");
    let resp = t.range(RangeRequest { min_create_revision: 3, max_create_revision: 4, ..rr("a", "\0") }).unwrap();
    assert_eq!(resp.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"b".to_vec(), b"c".to_vec()]);
}

#[test]
fn range_sorting() {
    use range_request::{SortOrder, SortTarget};
    let mut t = T::new();
    abc(&mut t);
    let sorted = |t: &T, order: SortOrder, target: SortTarget, limit: i64| {
        t.keys(RangeRequest { sort_order: order as i32, sort_target: target as i32, limit, ..rr("a", "\0") })
    };
    assert_eq!(sorted(&t, SortOrder::None, SortTarget::Key, 0), ["a", "b", "c", "d"]);
    assert_eq!(sorted(&t, SortOrder::Ascend, SortTarget::Key, 0), ["a", "b", "c", "d"]);
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Key, 0), ["d", "c", "b", "a"]);
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Key, 2), ["d", "c"]);
    // Values: a=3 b=4 c=2 d=1.
    assert_eq!(sorted(&t, SortOrder::Ascend, SortTarget::Value, 0), ["d", "c", "a", "b"]);
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Value, 0), ["b", "a", "c", "d"]);
    // Mod revisions: a=2 c=4 d=5 b=6; create: a=2 b=3 c=4 d=5.
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Mod, 0), ["b", "d", "c", "a"]);
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Create, 0), ["d", "c", "b", "a"]);
    // Versions: b=2, the rest 1; ties keep key order (Go's insertion sort).
    assert_eq!(sorted(&t, SortOrder::Ascend, SortTarget::Version, 0), ["a", "c", "d", "b"]);
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Version, 0), ["b", "a", "c", "d"]);
    // Order NONE with a non-key target sorts ascending, but etcd then fetched
    // only limit+1 keys in key order first: [a, b] sorted by version -> [a, b],
    // truncated to [a].
    assert_eq!(sorted(&t, SortOrder::None, SortTarget::Version, 1), ["a"]);
    // With an explicit order everything is fetched before the limit applies.
    assert_eq!(sorted(&t, SortOrder::Descend, SortTarget::Version, 1), ["b"]);
    let resp = t
        .range(RangeRequest {
            sort_order: SortOrder::None as i32,
            sort_target: SortTarget::Version as i32,
            limit: 2,
            ..rr("a", "\0")
        })
        .unwrap();
    // Fetched [a, b, c], sorted by version [a, c, b], cut to [a, c].
    assert_eq!(resp.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"c".to_vec()]);
    assert!(resp.more);
}

#[test]
fn range_revision_bounds() {
    let mut t = T::new();
    abc(&mut t);
    let at = |t: &T, rev: i64| t.range(RangeRequest { revision: rev, ..rr("a", "\0") });
    assert!(matches!(at(&t, 7), Err(MvccError::FutureRevision)));
    assert_eq!(at(&t, 6).unwrap().count, 4);
    assert_eq!(at(&t, 3).unwrap().count, 2);
    assert_eq!(at(&t, 1).unwrap().count, 0);
    assert_eq!(at(&t, -3).unwrap().count, 4, "a negative revision reads the current one");
    t.compact(4).unwrap();
    assert!(matches!(at(&t, 3), Err(MvccError::Compacted)));
    assert_eq!(at(&t, 4).unwrap().count, 3, "the compaction revision itself stays readable");
    assert_eq!(at(&t, 0).unwrap().count, 4);
}

#[test]
fn put_flags() {
    let mut t = T::new();
    let p = PutRequest { key: "k".into(), value: "v".into(), ignore_value: true, ..Default::default() };
    assert!(matches!(t.put_req(p), Err(MvccError::KeyNotFound)));
    let p = PutRequest { key: "k".into(), ignore_lease: true, ..Default::default() };
    assert!(matches!(t.put_req(p), Err(MvccError::KeyNotFound)));
    assert_eq!(t.s.current_revision(), 1);
    assert_eq!(t.s.consistent_index(), 0, "failed applies write nothing");

    let leases = Leases([7].into());
    let p = PutRequest { key: "k".into(), value: "v1".into(), lease: 7, ..Default::default() };
    t.apply_with(WriteRequest::Put(&p), &leases).unwrap();
    let p = PutRequest { key: "k".into(), value: "v2".into(), lease: 8, ..Default::default() };
    assert!(matches!(t.apply_with(WriteRequest::Put(&p), &leases), Err(MvccError::LeaseNotFound)));

    let p = PutRequest { key: "k".into(), value: "v2".into(), ignore_lease: true, prev_kv: true, ..Default::default() };
    let resp = t.put_req(p).unwrap();
    assert_eq!(resp.prev_kv, Some(KeyValue { lease: 7, ..kv("k", "v1", 2, 2, 1) }));
    assert_eq!(t.get("k"), Some(KeyValue { lease: 7, ..kv("k", "v2", 2, 3, 2) }));

    let p = PutRequest { key: "k".into(), value: "ignored".into(), ignore_value: true, ..Default::default() };
    let resp = t.put_req(p).unwrap();
    assert_eq!(resp.prev_kv, None);
    assert_eq!(t.get("k"), Some(kv("k", "v2", 2, 4, 3)), "lease dropped: ignore_lease not set");

    let p = PutRequest { key: "new".into(), value: "v".into(), prev_kv: true, ..Default::default() };
    assert_eq!(t.put_req(p).unwrap().prev_kv, None);
}

#[test]
fn txn_compares() {
    use compare::{CompareResult as R, CompareTarget as Tg, TargetUnion as U};
    let mut t = T::new();
    t.put("k", "v"); // create 2, mod 2, version 1
    t.put("k", "w"); // mod 3, version 2
    let cases: Vec<(Compare, bool)> = vec![
        (cmp("k", Tg::Value, R::Equal, U::Value("w".into())), true),
        (cmp("k", Tg::Value, R::Greater, U::Value("v".into())), true),
        (cmp("k", Tg::Value, R::Less, U::Value("v".into())), false),
        (cmp("k", Tg::Value, R::NotEqual, U::Value("w".into())), false),
        (cmp("k", Tg::Version, R::Equal, U::Version(2)), true),
        (cmp("k", Tg::Version, R::Greater, U::Version(1)), true),
        (cmp("k", Tg::Create, R::Equal, U::CreateRevision(2)), true),
        (cmp("k", Tg::Mod, R::Less, U::ModRevision(4)), true),
        (cmp("k", Tg::Mod, R::Equal, U::ModRevision(2)), false),
        (cmp("k", Tg::Lease, R::Equal, U::Lease(0)), true),
        // A missing key compares as an all-zero kv, except on VALUE.
        (cmp("nope", Tg::Version, R::Equal, U::Version(0)), true),
        (cmp("nope", Tg::Create, R::Equal, U::CreateRevision(0)), true),
        (cmp("nope", Tg::Value, R::Equal, U::Value(Vec::new())), false),
        (cmp("nope", Tg::Value, R::NotEqual, U::Value("x".into())), false),
        // Target and union disagree: the union counts as 0.
        (cmp("k", Tg::Version, R::Greater, U::ModRevision(100)), true),
    ];
    for (c, want) in cases {
        let resp = t.txn(TxnRequest { compare: vec![c.clone()], ..Default::default() }).unwrap();
        assert_eq!(resp.succeeded, want, "{c:?}");
        assert_eq!(hdr(&resp.header), 3, "read-only txn keeps the revision");
    }
    assert_eq!(t.s.current_revision(), 3);
}

#[test]
fn txn_compare_over_a_range() {
    use compare::{CompareResult as R, CompareTarget as Tg, TargetUnion as U};
    let mut t = T::new();
    t.put("a1", "x");
    t.put("a2", "x");
    t.put("a2", "y");
    let mut c = cmp("a", Tg::Version, R::Equal, U::Version(1));
    c.range_end = "b".into();
    let ok = |t: &mut T, c: &Compare| {
        t.txn(TxnRequest { compare: vec![c.clone()], ..Default::default() }).unwrap().succeeded
    };
    assert!(!ok(&mut t, &c), "every key in range must match");
    c.result = R::Greater as i32;
    c.target_union = Some(U::Version(0));
    assert!(ok(&mut t, &c));
    c.key = "x".into();
    c.range_end = "y".into();
    c.result = R::Equal as i32;
    assert!(ok(&mut t, &c), "an empty range compares a zero kv");
}

#[test]
fn txn_writes_share_one_revision_and_see_each_other() {
    use compare::{CompareResult as R, CompareTarget as Tg, TargetUnion as U};
    let mut t = T::new();
    t.put("x", "old");
    t.put("gone", "1");
    let out = t
        .apply(WriteRequest::Txn(&TxnRequest {
            compare: vec![cmp("x", Tg::Value, R::Equal, U::Value("old".into()))],
            success: vec![
                op_range(rr("x", "")),
                op_put("x", "new"),
                op_range(rr("x", "")),
                op_put("y", "1"),
                op_range(RangeRequest { count_only: true, ..rr("\0", "\0") }),
                op_delete("gone", ""),
                op_delete("missing", ""),
                op_range(rr("\0", "\0")),
            ],
            failure: vec![op_put("never", "1")],
        }))
        .unwrap();
    assert_eq!(out.revision, 4);
    let WriteResponse::Txn(resp) = out.response else { panic!() };
    assert!(resp.succeeded);
    assert_eq!(hdr(&resp.header), 4);
    let r = &resp.responses;
    let Some(response_op::Response::ResponseRange(before)) = &r[0].response else { panic!() };
    assert_eq!(before.kvs, vec![kv("x", "old", 2, 2, 1)]);
    assert_eq!(hdr(&before.header), 3, "a range before any write reports the old revision");
    let Some(response_op::Response::ResponsePut(p)) = &r[1].response else { panic!() };
    assert_eq!(hdr(&p.header), 4);
    let Some(response_op::Response::ResponseRange(after)) = &r[2].response else { panic!() };
    assert_eq!(after.kvs, vec![kv("x", "new", 2, 4, 2)]);
    assert_eq!(hdr(&after.header), 4);
    let Some(response_op::Response::ResponseRange(count)) = &r[4].response else { panic!() };
    assert_eq!(count.count, 3, "x, gone and the pending y");
    let Some(response_op::Response::ResponseDeleteRange(d)) = &r[5].response else { panic!() };
    assert_eq!((d.deleted, hdr(&d.header)), (1, 4));
    let Some(response_op::Response::ResponseDeleteRange(d)) = &r[6].response else { panic!() };
    assert_eq!((d.deleted, hdr(&d.header)), (0, 4), "a no-op delete after writes reports the txn revision");
    let Some(response_op::Response::ResponseRange(all)) = &r[7].response else { panic!() };
    assert_eq!(all.kvs, vec![kv("x", "new", 2, 4, 2), kv("y", "1", 4, 4, 1)]);
    assert_eq!(all.count, 2);

    // Sub revisions order the events.
    let evs: Vec<_> = out.events.iter().map(|e| (e.r#type, e.kv.as_ref().unwrap().key.clone())).collect();
    assert_eq!(
        evs,
        vec![
            (EventType::Put as i32, b"x".to_vec()),
            (EventType::Put as i32, b"y".to_vec()),
            (EventType::Delete as i32, b"gone".to_vec()),
        ]
    );
    assert_eq!(t.get("x"), Some(kv("x", "new", 2, 4, 2)));
    assert_eq!(t.get("gone"), None);
    // History at the txn's predecessor is intact.
    let old = t.range(RangeRequest { revision: 3, ..rr("\0", "\0") }).unwrap();
    assert_eq!(old.count, 2);
}

#[test]
fn txn_delete_first_then_put_in_range() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("b", "1");
    let resp = t
        .txn(TxnRequest {
            success: vec![op_delete("a", "c"), op_put("b", "2"), op_range(rr("a", "c"))],
            ..Default::default()
        })
        .unwrap();
    let Some(response_op::Response::ResponseRange(r)) = &resp.responses[2].response else { panic!() };
    assert_eq!(r.kvs, vec![kv("b", "2", 4, 4, 1)], "re-created after the delete: new generation");
    assert_eq!(t.get("b"), Some(kv("b", "2", 4, 4, 1)));
    assert_eq!(t.get("a"), None);
}

#[test]
fn nested_txns_follow_the_precomputed_path() {
    use compare::{CompareResult as R, CompareTarget as Tg, TargetUnion as U};
    let mut t = T::new();
    t.put("flag", "on");
    let inner_true = TxnRequest {
        compare: vec![cmp("flag", Tg::Value, R::Equal, U::Value("on".into()))],
        success: vec![op_put("inner1", "s")],
        failure: vec![op_put("inner1", "f")],
    };
    // Compares are all evaluated before anything runs: this nested compare
    // sees flag=on although the outer txn turns it off first.
    let inner_sees_old = TxnRequest {
        compare: vec![cmp("flag", Tg::Value, R::Equal, U::Value("on".into()))],
        success: vec![
            op_put("inner2", "s"),
            op_txn(TxnRequest { success: vec![op_put("deep", "1")], ..Default::default() }),
        ],
        failure: vec![op_put("inner2", "f")],
    };
    let resp = t
        .txn(TxnRequest {
            success: vec![op_put("flag", "off"), op_txn(inner_true), op_txn(inner_sees_old), op_range(rr("\0", "\0"))],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(hdr(&resp.header), 3);
    let Some(response_op::Response::ResponseTxn(n1)) = &resp.responses[1].response else { panic!() };
    assert!(n1.succeeded);
    assert_eq!(n1.header, Some(Default::default()), "nested txn headers stay empty, as in etcd");
    let Some(response_op::Response::ResponsePut(p)) = &n1.responses[0].response else { panic!() };
    assert_eq!(hdr(&p.header), 3);
    let Some(response_op::Response::ResponseTxn(n2)) = &resp.responses[2].response else { panic!() };
    assert!(n2.succeeded);
    let Some(response_op::Response::ResponseTxn(deep)) = &n2.responses[1].response else { panic!() };
    assert!(deep.succeeded);
    assert_eq!(t.get("inner1").unwrap().value, b"s");
    assert_eq!(t.get("inner2").unwrap().value, b"s");
    assert_eq!(t.get("deep").unwrap().mod_revision, 3);
    assert_eq!(t.s.current_revision(), 3);
}

#[test]
fn txn_checks_fail_before_any_write() {
    let mut t = T::new();
    t.put("a", "1");
    let bad_put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: "missing".into(),
            ignore_value: true,
            ..Default::default()
        })),
    };
    let err = t.txn(TxnRequest { success: vec![op_put("a", "2"), bad_put], ..Default::default() });
    assert!(matches!(err, Err(MvccError::KeyNotFound)));
    let leased = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest { key: "a".into(), lease: 9, ..Default::default() })),
    };
    let err = t.txn(TxnRequest { success: vec![op_put("a", "2"), leased], ..Default::default() });
    assert!(matches!(err, Err(MvccError::LeaseNotFound)));
    let future = op_range(RangeRequest { revision: 5, ..rr("a", "") });
    let err = t.txn(TxnRequest { success: vec![op_put("a", "2"), future], ..Default::default() });
    assert!(matches!(err, Err(MvccError::FutureRevision)));
    // Puts are checked before ranges, wherever they sit (etcd 3.4 order).
    let future = op_range(RangeRequest { revision: 5, ..rr("a", "") });
    let leased = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest { key: "a".into(), lease: 9, ..Default::default() })),
    };
    let err = t.txn(TxnRequest {
        success: vec![future, op_txn(TxnRequest { success: vec![leased], ..Default::default() })],
        ..Default::default()
    });
    assert!(matches!(err, Err(MvccError::LeaseNotFound)));
    // A failing branch that is not taken is not checked.
    let not_taken = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: "zz".into(),
            ignore_value: true,
            ..Default::default()
        })),
    };
    t.txn(TxnRequest { success: vec![op_put("b", "1")], failure: vec![not_taken], ..Default::default() }).unwrap();
    assert_eq!(t.get("a").unwrap().value, b"1");
    assert_eq!(t.s.current_revision(), 3);
}

#[test]
fn txn_range_revision_checks_match_etcd() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("a", "2");
    t.compact(2).unwrap();
    // checkRange rejects a negative revision as compacted once compacted.
    let neg = op_range(RangeRequest { revision: -1, ..rr("a", "") });
    assert!(matches!(t.txn(TxnRequest { success: vec![neg], ..Default::default() }), Err(MvccError::Compacted)));
    let at_compact = op_range(RangeRequest { revision: 2, ..rr("a", "") });
    let resp = t.txn(TxnRequest { success: vec![at_compact], ..Default::default() }).unwrap();
    let Some(response_op::Response::ResponseRange(r)) = &resp.responses[0].response else { panic!() };
    assert_eq!(r.kvs, vec![kv("a", "1", 2, 2, 1)]);
}

#[test]
fn read_txn_serves_read_only_txns() {
    let mut t = T::new();
    t.put("a", "1");
    let ro = TxnRequest { success: vec![op_range(rr("a", ""))], ..Default::default() };
    let resp = t.s.read_txn(&ro).unwrap().unwrap();
    assert!(resp.succeeded);
    assert_eq!(hdr(&resp.header), 2);
    assert!(t.s.read_txn(&TxnRequest { success: vec![op_put("a", "2")], ..Default::default() }).is_none());
    assert!(is_txn_read_only(&ro));
}

fn stored_revisions(s: &KvStore) -> Vec<(Revision, bool)> {
    let mut out = Vec::new();
    s.backend()
        .scan(Keyspace::Revisions, b"", None, &mut |k, _| {
            out.push(revision::decode_key(k).unwrap());
            true
        })
        .unwrap();
    out
}

#[test]
fn compaction() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    t.put("b", "1"); // 4
    t.delete("b", ""); // 5
    t.put("c", "1"); // 6
    t.delete("c", ""); // 7
    assert!(matches!(t.compact(8), Err(MvccError::FutureRevision)));
    let out = t.compact(5).unwrap();
    let WriteResponse::Compact(resp) = out.response else { panic!() };
    assert_eq!(hdr(&resp.header), 7);
    assert_eq!(out.revision, 7);
    assert!(out.events.is_empty());
    assert_eq!(t.s.compact_revision(), 5);
    assert_eq!(t.s.current_revision(), 7);
    assert!(matches!(t.compact(5), Err(MvccError::Compacted)));
    assert!(matches!(t.compact(4), Err(MvccError::Compacted)));
    // a@3 is the last revision of a at 5; b, deleted at exactly 5, is gone
    // entirely (etcd 3.4); c's history after 5 stays.
    assert_eq!(
        stored_revisions(&t.s),
        vec![(Revision::new(3, 0), false), (Revision::new(6, 0), false), (Revision::new(7, 0), true)]
    );
    assert_eq!(t.get("a"), Some(kv("a", "2", 2, 3, 2)));
    let at5 = t.range(RangeRequest { revision: 5, ..rr("\0", "\0") }).unwrap();
    assert_eq!(at5.kvs, vec![kv("a", "2", 2, 3, 2)]);
    let at6 = t.range(RangeRequest { revision: 6, ..rr("\0", "\0") }).unwrap();
    assert_eq!(at6.kvs, vec![kv("a", "2", 2, 3, 2), kv("c", "1", 6, 6, 1)]);

    t.compact(7).unwrap();
    assert_eq!(stored_revisions(&t.s), vec![(Revision::new(3, 0), false)]);
    assert_eq!(t.s.index_len(), 1);
    t.put("a", "3"); // 8
    t.compact(8).unwrap();
    assert_eq!(stored_revisions(&t.s), vec![(Revision::new(8, 0), false)]);
    assert_eq!(t.get("a"), Some(kv("a", "3", 2, 8, 3)));
    assert_eq!(t.s.consistent_index(), t.index);
}

#[test]
fn events_between_reads_history() {
    let mut t = T::new();
    t.put("a", "1");
    t.txn(TxnRequest { success: vec![op_put("b", "1"), op_delete("a", "")], ..Default::default() }).unwrap();
    let evs = t.s.events_between(2, 0, 100).unwrap();
    let got: Vec<_> = evs
        .iter()
        .map(|e| (e.r#type, e.kv.as_ref().unwrap().key.clone(), e.kv.as_ref().unwrap().mod_revision))
        .collect();
    assert_eq!(
        got,
        vec![
            (EventType::Put as i32, b"a".to_vec(), 2),
            (EventType::Put as i32, b"b".to_vec(), 3),
            (EventType::Delete as i32, b"a".to_vec(), 3),
        ]
    );
    assert_eq!(t.s.events_between(3, 0, 1).unwrap().len(), 1);
    assert_eq!(t.s.events_between(2, 3, 100).unwrap().len(), 1);
    t.compact(3).unwrap();
    assert!(matches!(t.s.events_between(2, 0, 10), Err(MvccError::Compacted)));
    // As in etcd 3.4, compacting at the delete drops the tombstone too.
    assert_eq!(t.s.events_between(3, 0, 10).unwrap().len(), 1);
}

#[test]
fn leased_keys_lists_live_attachments() {
    let mut t = T::new();
    let leases = Leases([5].into());
    let p = PutRequest { key: "l".into(), value: "v".into(), lease: 5, ..Default::default() };
    t.apply_with(WriteRequest::Put(&p), &leases).unwrap();
    t.put("plain", "v");
    assert_eq!(t.s.leased_keys().unwrap(), vec![(b"l".to_vec(), 5)]);
}

/// The attachments are rebuilt with the index, from the history: a key put
/// again without its lease, or deleted, is no longer attached.
#[test]
fn leased_keys_come_back_after_reopen_and_a_snapshot() {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let s = KvStore::open(backend.clone()).unwrap();
    let leases = Leases([5, 6].into());
    let put = |index: u64, key: &str, lease: i64| {
        let p = PutRequest { key: key.into(), value: "v".into(), lease, ..Default::default() };
        s.apply(index, WriteRequest::Put(&p), &leases).unwrap();
    };
    put(1, "kept", 5);
    put(2, "moved", 5);
    put(3, "moved", 6);
    put(4, "released", 5);
    put(5, "released", 0);
    put(6, "deleted", 6);
    let d = DeleteRangeRequest { key: "deleted".into(), ..Default::default() };
    s.apply(7, WriteRequest::DeleteRange(&d), &leases).unwrap();
    let expected = vec![(b"kept".to_vec(), 5), (b"moved".to_vec(), 6)];
    assert_eq!(s.leased_keys().unwrap(), expected);
    let checkpoint = s.checkpoint().unwrap();
    drop(s);
    assert_eq!(KvStore::open(backend).unwrap().leased_keys().unwrap(), expected);
    let follower = KvStore::in_memory();
    follower.install_snapshot(checkpoint.pieces(1 << 20)).unwrap();
    assert_eq!(follower.leased_keys().unwrap(), expected);
}

#[test]
fn advance_consistent_index_persists() {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let s = KvStore::open(backend.clone()).unwrap();
    s.advance_consistent_index(42).unwrap();
    assert_eq!(s.consistent_index(), 42);
    drop(s);
    assert_eq!(KvStore::open(backend).unwrap().consistent_index(), 42);
}

/// Everything observable through the public API, for restart comparisons.
fn snapshot(s: &KvStore) -> (i64, i64, u64, Vec<KeyValue>, Vec<Vec<KeyValue>>) {
    let all = s.range(&rr("\0", "\0")).unwrap().kvs;
    let history = (s.compact_revision().max(1)..=s.current_revision())
        .map(|rev| s.range(&RangeRequest { revision: rev, ..rr("\0", "\0") }).unwrap().kvs)
        .collect();
    (s.current_revision(), s.compact_revision(), s.consistent_index(), all, history)
}

#[test]
fn rocksdb_restart_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s = KvStore::open_rocksdb(dir.path()).unwrap();
        let mut t = T { s, index: 100 };
        abc(&mut t);
        t.delete("c", "");
        t.put("c", "again");
        t.compact(5).unwrap();
        t.put("e", "1");
        t.txn(TxnRequest { success: vec![op_put("f", "1"), op_delete("a", "")], ..Default::default() }).unwrap();
        t.delete("nothing", "");
        snapshot(&t.s)
    };
    let s = KvStore::open_rocksdb(dir.path()).unwrap();
    let after = snapshot(&s);
    assert_eq!(after, before);
    assert_eq!(after.2, 111);
    // The rebuilt index keeps working: versions continue, compaction goes on.
    let mut t = T { s, index: 111 };
    t.put("b", "5");
    assert_eq!(t.get("b").unwrap().version, 3);
    t.compact(t.s.current_revision()).unwrap();
    assert_eq!(snapshot(&t.s).3.len(), 5);
}

#[test]
fn restart_after_compaction_at_a_tombstone() {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let mut t = T { s: KvStore::open(backend.clone()).unwrap(), index: 0 };
    t.put("a", "1");
    t.delete("a", "");
    t.compact(3).unwrap();
    let before = snapshot(&t.s);
    let s = KvStore::open(backend).unwrap();
    assert_eq!(snapshot(&s), before);
    let mut t = T { s, index: t.index };
    assert!(stored_revisions(&t.s).is_empty());
    t.put("a", "2");
    assert_eq!(t.get("a"), Some(kv("a", "2", 4, 4, 1)));
    t.compact(4).unwrap();
    assert_eq!(stored_revisions(&t.s), vec![(Revision::new(4, 0), false)]);
}

#[test]
fn open_resumes_a_scheduled_compaction() {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let mut t = T { s: KvStore::open(backend.clone()).unwrap(), index: 0 };
    t.put("a", "1");
    t.put("a", "2");
    t.put("a", "3");
    drop(t);
    // What etcd leaves behind when it crashed between scheduling and finishing.
    let mut wb = WriteBatch::new();
    wb.put(Keyspace::Meta, meta::SCHEDULED_COMPACT, Revision::new(3, 0).to_bytes());
    backend.write(wb).unwrap();
    let s = KvStore::open(backend).unwrap();
    assert_eq!(s.compact_revision(), 3);
    assert_eq!(stored_revisions(&s), vec![(Revision::new(3, 0), false), (Revision::new(4, 0), false)]);
}

#[test]
fn a_bumped_revision_is_compacted_survives_reopen_and_continues() {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let mut t = T { s: KvStore::open(backend.clone()).unwrap(), index: 0 };
    t.put("a", "1");
    t.put("a", "2");
    t.put("b", "1"); // revision 4
    assert_eq!(t.s.bump_revision_compacted(100).unwrap(), 104);
    drop(t);
    let mut t = T { s: KvStore::open(backend).unwrap(), index: 0 };
    assert_eq!((t.s.current_revision(), t.s.compact_revision()), (104, 104));
    // The history before the bump is gone: compacted, physically too.
    let at = |t: &T, revision| t.range(RangeRequest { key: b"a".to_vec(), revision, ..Default::default() });
    assert!(matches!(at(&t, 3), Err(MvccError::Compacted)));
    assert_eq!(stored_revisions(&t.s), vec![(Revision::new(3, 0), false), (Revision::new(4, 0), false)]);
    // The latest values stay, and the next write comes after the bump.
    assert_eq!(t.get("a").unwrap().value, b"2");
    assert_eq!(at(&t, 104).unwrap().kvs.len(), 1);
    assert_eq!(t.put("c", "1").header.unwrap().revision, 105);
}

#[test]
fn corrupt_data_is_reported_not_panicked() {
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let mut wb = WriteBatch::new();
    wb.put(Keyspace::Revisions, Revision::new(2, 0).to_bytes(), vec![0xff, 0xff]);
    backend.write(wb).unwrap();
    assert!(matches!(KvStore::open(backend), Err(MvccError::Corrupt(_))));
}

/// The store against a model that keeps a full copy of the key space per
/// revision, over random puts, deletes, txns, ranges, compactions and
/// reopens.
mod model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Put(u8, u8),
        Delete(u8, Option<u8>),
        /// A txn deleting a range (maybe empty) and then putting (key, value)
        /// on distinct keys, which may lie in the deleted range.
        Txn(u8, u8, Vec<(u8, u8)>),
        Range {
            start: u8,
            end: Option<u8>,
            back: u8,
            limit: u8,
        },
        Compact(u8),
        Reopen,
    }

    fn key(k: u8) -> Vec<u8> {
        format!("k{k}").into_bytes()
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0..6u8, proptest::option::of(0..7u8)).prop_map(|(k, e)| Op::Delete(k, e)),
            2 => (0..6u8, 0..7u8, proptest::collection::btree_map(0..6u8, any::<u8>(), 1..4))
                .prop_map(|(a, b, m)| Op::Txn(a, b, m.into_iter().collect())),
            4 => (0..6u8, proptest::option::of(0..7u8), 0..6u8, 0..4u8)
                .prop_map(|(start, end, back, limit)| Op::Range { start, end, back, limit }),
            1 => (0..4u8).prop_map(Op::Compact),
            1 => Just(Op::Reopen),
        ]
    }

    struct Model {
        /// `history[rev]` is the key space after revision `rev`.
        history: Vec<BTreeMap<Vec<u8>, KeyValue>>,
        compact: i64,
    }

    impl Model {
        fn cur(&self) -> i64 {
            self.history.len() as i64 - 1
        }

        fn write(&mut self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) {
            let rev = self.cur() + 1;
            let mut next = self.history.last().unwrap().clone();
            for k in deletes {
                next.remove(k);
            }
            for (k, v) in puts {
                let (create, version) = match next.get(k) {
                    Some(old) => (old.create_revision, old.version + 1),
                    None => (rev, 1),
                };
                next.insert(
                    k.clone(),
                    KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                        create_revision: create,
                        mod_revision: rev,
                        version,
                        lease: 0,
                    },
                );
            }
            self.history.push(next);
        }

        fn in_range(start: &[u8], end: &Option<Vec<u8>>, k: &[u8]) -> bool {
            match end {
                None => k == start,
                Some(e) => k >= start && k < e.as_slice(),
            }
        }
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
        let mut s = KvStore::open(backend.clone()).unwrap();
        let mut m = Model { history: vec![BTreeMap::new(), BTreeMap::new()], compact: -1 };
        let mut index = 0u64;
        for op in ops {
            index += 1;
            match op {
                Op::Put(k, v) => {
                    let p = PutRequest { key: key(k), value: vec![v], ..Default::default() };
                    let out = s.apply(index, WriteRequest::Put(&p), &NoLeases).unwrap();
                    m.write(&[(key(k), vec![v])], &[]);
                    prop_assert_eq!(out.revision, m.cur());
                }
                Op::Delete(k, e) => {
                    let end = e.map(key);
                    let d = DeleteRangeRequest {
                        key: key(k),
                        range_end: end.clone().unwrap_or_default(),
                        ..Default::default()
                    };
                    let out = s.apply(index, WriteRequest::DeleteRange(&d), &NoLeases).unwrap();
                    let doomed: Vec<_> = m
                        .history
                        .last()
                        .unwrap()
                        .keys()
                        .filter(|kk| Model::in_range(&key(k), &end, kk))
                        .cloned()
                        .collect();
                    if !doomed.is_empty() {
                        m.write(&[], &doomed);
                    }
                    let WriteResponse::DeleteRange(resp) = out.response else { panic!() };
                    prop_assert_eq!(resp.deleted, doomed.len() as i64);
                    prop_assert_eq!(out.revision, m.cur());
                }
                Op::Txn(del_start, del_end, puts) => {
                    let (start, end) = (key(del_start), Some(key(del_end)));
                    let mut success = vec![RequestOp {
                        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                            key: start.clone(),
                            range_end: key(del_end),
                            ..Default::default()
                        })),
                    }];
                    success.extend(puts.iter().map(|&(k, v)| RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key(k),
                            value: vec![v],
                            ..Default::default()
                        })),
                    }));
                    let t = TxnRequest { success, ..Default::default() };
                    let out = s.apply(index, WriteRequest::Txn(&t), &NoLeases).unwrap();
                    let doomed: Vec<_> = m
                        .history
                        .last()
                        .unwrap()
                        .keys()
                        .filter(|kk| Model::in_range(&start, &end, kk))
                        .cloned()
                        .collect();
                    let values: Vec<_> = puts.iter().map(|&(k, v)| (key(k), vec![v])).collect();
                    m.write(&values, &doomed);
                    prop_assert_eq!(out.events.len(), doomed.len() + puts.len());
                }
                Op::Range { start, end, back, limit } => {
                    let end = end.map(key);
                    let rev = if back == 0 { 0 } else { m.cur() - i64::from(back) + 1 };
                    let req = RangeRequest {
                        key: key(start),
                        range_end: end.clone().unwrap_or_default(),
                        revision: rev,
                        limit: i64::from(limit),
                        ..Default::default()
                    };
                    let got = s.range(&req);
                    let read = if rev <= 0 { m.cur() } else { rev };
                    if read < m.compact {
                        prop_assert!(matches!(got, Err(MvccError::Compacted)), "{:?}", got);
                        continue;
                    }
                    let got = got.unwrap();
                    let want: Vec<KeyValue> = m.history[read as usize]
                        .values()
                        .filter(|kv| Model::in_range(&key(start), &end, &kv.key))
                        .cloned()
                        .collect();
                    prop_assert_eq!(got.count, want.len() as i64);
                    let n = if limit == 0 { want.len() } else { want.len().min(limit as usize) };
                    prop_assert_eq!(&got.kvs, &want[..n].to_vec());
                    prop_assert_eq!(got.more, n < want.len());
                    prop_assert_eq!(hdr(&got.header), m.cur());
                }
                Op::Compact(back) => {
                    let rev = m.cur() - i64::from(back);
                    let got = s.apply(
                        index,
                        WriteRequest::Compact(&CompactionRequest { revision: rev, physical: true }),
                        &NoLeases,
                    );
                    if rev <= m.compact {
                        prop_assert!(matches!(got, Err(MvccError::Compacted)));
                    } else {
                        got.unwrap();
                        m.compact = rev;
                    }
                }
                Op::Reopen => {
                    // Failed applies do not advance the index; mirror the store.
                    index = s.consistent_index();
                    drop(s);
                    s = KvStore::open(backend.clone()).unwrap();
                    prop_assert_eq!(s.consistent_index(), index);
                }
            }
            prop_assert_eq!(s.current_revision(), m.cur());
            prop_assert_eq!(s.compact_revision(), m.compact);
            if s.consistent_index() != index {
                // Only a rejected compaction leaves the index behind.
                index = s.consistent_index();
            }
        }
        // History that is not compacted stays readable, revision by revision.
        for rev in m.compact.max(1)..=m.cur() {
            let got = s
                .range(&RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..Default::default() })
                .unwrap();
            let want: Vec<KeyValue> = m.history[rev as usize].values().cloned().collect();
            prop_assert_eq!(got.kvs, want, "at revision {}", rev);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            run(ops)?;
        }
    }
}

/// Tie order of sorted ranges, as printed by `etcdctl get s --prefix
/// --sort-by=... --order=... --keys-only` against etcd 3.4.23 (Debian, Go
/// 1.19.8) after the same writes. Go's sort is unstable, so this pins the
/// exact algorithm.
#[test]
fn sort_ties_match_etcd_3_4() {
    use range_request::{SortOrder, SortTarget};
    let mut t = T::new();
    for i in 0..40 {
        t.put(&format!("s{i:02}"), &format!("v{}", (i * 7) % 3));
    }
    for i in (0..40).filter(|i| (i * 5) % 4 == 0) {
        t.put(&format!("s{i:02}"), &format!("v{}", (i * 11) % 3));
    }
    for i in (0..40).filter(|i| i % 3 == 0) {
        t.put(&format!("s{i:02}"), &format!("w{}", i % 2));
    }
    let expected = [
        (SortTarget::Version, SortOrder::Ascend, "s10 s17 s02 s38 s37 s05 s35 s22 s19 s01 s07 s11 s29 s13 s14 s26 s25 s31 s23 s34 s20 s33 s39 s18 s03 s16 s15 s27 s28 s04 s30 s09 s32 s21 s08 s06 s36 s12 s24 s00"),
        (SortTarget::Value, SortOrder::Ascend, "s20 s34 s37 s19 s32 s31 s25 s07 s08 s22 s10 s01 s13 s02 s04 s38 s16 s35 s14 s11 s17 s05 s26 s23 s29 s28 s00 s30 s12 s06 s18 s24 s36 s39 s27 s21 s33 s09 s15 s03"),
        (SortTarget::Version, SortOrder::Descend, "s12 s36 s00 s24 s30 s06 s20 s21 s08 s09 s39 s33 s04 s32 s28 s15 s16 s27 s18 s03 s07 s29 s05 s23 s19 s25 s26 s17 s14 s22 s02 s31 s13 s11 s34 s35 s01 s37 s38 s10"),
        (SortTarget::Value, SortOrder::Descend, "s09 s39 s21 s03 s33 s15 s27 s12 s30 s24 s00 s36 s06 s18 s11 s05 s16 s17 s35 s04 s14 s02 s29 s23 s38 s28 s26 s10 s25 s22 s20 s31 s32 s19 s34 s13 s08 s37 s07 s01"),
    ];
    for (target, order, want) in expected {
        let got = t.keys(RangeRequest {
            key: "s".into(),
            range_end: "t".into(),
            sort_target: target as i32,
            sort_order: order as i32,
            keys_only: true,
            ..Default::default()
        });
        assert_eq!(got.join(" "), want, "{target:?} {order:?}");
    }
    // `etcdctl get s --prefix --limit=3 --sort-by=VERSION` sends order NONE:
    // etcd fetches 4 keys in key order, sorts those, and cuts to 3.
    let resp = t
        .range(RangeRequest {
            key: "s".into(),
            range_end: "t".into(),
            sort_target: SortTarget::Version as i32,
            limit: 3,
            ..Default::default()
        })
        .unwrap();
    let keys: Vec<_> = resp.kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect();
    assert_eq!(keys.join(" "), "s01 s02 s03");
    assert!(resp.more);
    assert_eq!(resp.count, 40);
}

/// `etcdctl endpoint hashkv` values from etcd 3.4.23 after the same writes:
/// equal hashes mean revision keys and KeyValue encodings match etcd's bytes.
#[test]
fn hash_kv_matches_etcd_3_4() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("b", "2");
    t.put("a", "3");
    t.delete("b", "");
    t.put("c", "");
    t.txn(TxnRequest { success: vec![op_put("d", "4"), op_put("e", "5"), op_delete("a", "")], ..Default::default() })
        .unwrap();
    t.put("a", "again");
    let h = |t: &T, rev: i64| t.s.hash_by_rev(rev).unwrap();
    assert_eq!(h(&t, 0), KvHash { hash: 2241923237, current_revision: 8, compact_revision: -1, hash_revision: 8 });
    assert_eq!(h(&t, 4).hash, 2069675932);
    t.compact(5).unwrap();
    assert_eq!(h(&t, 0), KvHash { hash: 1642222955, current_revision: 8, compact_revision: 5, hash_revision: 8 });
    t.put("f", "6");
    assert_eq!(h(&t, 0), KvHash { hash: 1148046857, current_revision: 9, compact_revision: 5, hash_revision: 9 });
    assert_eq!(h(&t, 6).hash, 244968164);
    assert!(matches!(t.s.hash_by_rev(5), Err(MvccError::Compacted)));
    assert!(matches!(t.s.hash_by_rev(10), Err(MvccError::FutureRevision)));
}

/// A memory backend that records the largest batch written and, when
/// armed, holds its next value read at a gate (a read caught mid-flight).
struct Instrumented {
    inner: crate::backend::MemBackend,
    largest: std::sync::atomic::AtomicUsize,
    armed: std::sync::atomic::AtomicBool,
    reached: std::sync::Barrier,
    release: std::sync::Barrier,
}

impl Instrumented {
    fn new() -> Arc<Instrumented> {
        Arc::new(Instrumented {
            inner: crate::backend::MemBackend::new(),
            largest: 0.into(),
            armed: false.into(),
            reached: std::sync::Barrier::new(2),
            release: std::sync::Barrier::new(2),
        })
    }
}

impl Backend for Instrumented {
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, crate::backend::BackendError> {
        self.inner.get(space, key)
    }
    fn multi_get(&self, space: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, crate::backend::BackendError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.reached.wait();
            self.release.wait();
        }
        self.inner.multi_get(space, keys)
    }
    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut crate::backend::ScanVisitor<'_>,
    ) -> Result<(), crate::backend::BackendError> {
        self.inner.scan(space, start, end, visit)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), crate::backend::BackendError> {
        self.largest.fetch_max(batch.len(), std::sync::atomic::Ordering::Relaxed);
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), crate::backend::BackendError> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn size_in_use(&self) -> u64 {
        self.inner.size_in_use()
    }
    fn checkpoint(&self) -> Result<Box<dyn crate::backend::Frozen>, crate::backend::BackendError> {
        self.inner.checkpoint()
    }
}

#[test]
fn a_read_only_txn_reads_values_without_holding_up_writes() {
    let gated = Instrumented::new();
    let store = Arc::new(KvStore::open(gated.clone()).unwrap());
    let put = |index: u64, value: &str| {
        let p = PutRequest { key: b"k".to_vec(), value: value.into(), ..Default::default() };
        store.apply(index, WriteRequest::Put(&p), &NoLeases).unwrap();
    };
    put(1, "before");
    gated.armed.store(true, std::sync::atomic::Ordering::Release);
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let txn = TxnRequest { success: vec![op_range(rr("k", ""))], ..Default::default() };
            store.read_txn(&txn).unwrap().unwrap()
        })
    };
    // The txn is now reading values: a write still goes through.
    gated.reached.wait();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let p = PutRequest { key: b"k".to_vec(), value: b"after".to_vec(), ..Default::default() };
            store.apply(2, WriteRequest::Put(&p), &NoLeases).unwrap();
            let _ = done_tx.send(());
        })
    };
    let applied = done_rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok();
    gated.release.wait();
    writer.join().unwrap();
    let response = reader.join().unwrap();
    assert!(applied, "a write waited for a read-only txn's value reads");
    // The txn still answers as of the revision it was resolved at.
    assert_eq!(hdr(&response.header), 2);
    match &response.responses[0].response {
        Some(response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"before"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn compaction_deletes_in_bounded_batches() {
    let backend = Instrumented::new();
    let store = KvStore::open(backend.clone()).unwrap();
    let total = 2 * compact::COMPACTION_BATCH + 500;
    for i in 0..total {
        let p = PutRequest { key: format!("k{}", i % 3).into(), value: i.to_string().into(), ..Default::default() };
        store.apply(i as u64 + 1, WriteRequest::Put(&p), &NoLeases).unwrap();
    }
    backend.largest.store(0, std::sync::atomic::Ordering::Relaxed);
    let rev = store.current_revision();
    let request = CompactionRequest { revision: rev, physical: false };
    store.apply(total as u64 + 1, WriteRequest::Compact(&request), &NoLeases).unwrap();
    let largest = backend.largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(largest <= compact::COMPACTION_BATCH, "a batch of {largest} writes");
    let mut left = 0;
    backend
        .scan(Keyspace::Revisions, &[], None, &mut |_, _| {
            left += 1;
            true
        })
        .unwrap();
    assert_eq!(left, 3, "one revision per key is left");
    let all = store.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap();
    assert_eq!(all.kvs.len(), 3);
    // Reopened, the store finds the compaction finished.
    let reopened = KvStore::open(backend).unwrap();
    assert_eq!(reopened.compact_revision(), rev);
}
