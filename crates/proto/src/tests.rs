//! Wire-level checks: each field must land on the tag etcd uses, because
//! etcdctl and the etcd clients decode by tag, not by name.

use prost::Message;

use crate::etcdserverpb::{
    compare, request_op, watch_request, Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    StatusResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::keelpb::{internal_raft_request, InternalRaftRequest};
use crate::{etcdserverpb, mvccpb};

/// Field numbers present at the top level of an encoded message, in wire order.
fn tags(mut buf: &[u8]) -> Vec<u32> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
        }
        panic!("varint too long");
    }

    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let skip = match key & 0x7 {
            0 => {
                varint(&mut buf);
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut buf)).unwrap(),
            5 => 4,
            other => panic!("unexpected wire type {other}"),
        };
        buf = &buf[skip..];
        out.push(u32::try_from(key >> 3).unwrap());
    }
    out
}

fn sorted_tags<M: Message>(msg: &M) -> Vec<u32> {
    let mut t = tags(&msg.encode_to_vec());
    t.sort_unstable();
    t
}

#[test]
fn put_request_field_numbers() {
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 7,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    assert_eq!(sorted_tags(&put), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn decodes_bytes_as_etcd_encodes_them() {
    // PutRequest{key:"foo", value:"bar", lease:7} as etcd's Go client marshals it.
    let wire = [0x0a, 0x03, b'f', b'o', b'o', 0x12, 0x03, b'b', b'a', b'r', 0x18, 0x07];
    let put = PutRequest::decode(&wire[..]).unwrap();
    assert_eq!(put.key, b"foo");
    assert_eq!(put.value, b"bar");
    assert_eq!(put.lease, 7);
    assert_eq!(put.encode_to_vec(), wire);
}

#[test]
fn range_request_field_numbers() {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 1,
        revision: 1,
        sort_order: etcdserverpb::range_request::SortOrder::Descend as i32,
        sort_target: etcdserverpb::range_request::SortTarget::Value as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 1,
        min_create_revision: 1,
        max_create_revision: 1,
    };
    assert_eq!(sorted_tags(&range), (1..=13).collect::<Vec<_>>());
}

#[test]
fn compare_target_union_and_range_end() {
    let arms = [
        (compare::TargetUnion::Version(1), 4),
        (compare::TargetUnion::CreateRevision(1), 5),
        (compare::TargetUnion::ModRevision(1), 6),
        (compare::TargetUnion::Value(b"v".to_vec()), 7),
        (compare::TargetUnion::Lease(1), 8),
    ];
    for (arm, tag) in arms {
        let cmp = Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(arm),
        };
        assert_eq!(sorted_tags(&cmp), [1, 2, 3, tag, 64]);
    }
}

#[test]
fn request_op_arms() {
    let arms = [
        (request_op::Request::RequestRange(RangeRequest::default()), 1),
        (request_op::Request::RequestPut(PutRequest::default()), 2),
        (request_op::Request::RequestDeleteRange(etcdserverpb::DeleteRangeRequest::default()), 3),
        (request_op::Request::RequestTxn(etcdserverpb::TxnRequest::default()), 4),
    ];
    for (arm, tag) in arms {
        let op = RequestOp { request: Some(arm) };
        assert_eq!(tags(&op.encode_to_vec()), [tag]);
    }
}

#[test]
fn watch_field_numbers() {
    let create = WatchCreateRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        start_revision: 1,
        progress_notify: true,
        filters: vec![etcdserverpb::watch_create_request::FilterType::Nodelete as i32],
        prev_kv: true,
        watch_id: 1,
        fragment: true,
    };
    assert_eq!(sorted_tags(&create), (1..=8).collect::<Vec<_>>());

    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(etcdserverpb::WatchProgressRequest {})),
    };
    assert_eq!(tags(&req.encode_to_vec()), [3]);

    let resp = WatchResponse {
        header: Some(etcdserverpb::ResponseHeader::default()),
        watch_id: 1,
        created: true,
        canceled: true,
        compact_revision: 1,
        cancel_reason: "x".into(),
        fragment: true,
        events: vec![mvccpb::Event { r#type: mvccpb::event::EventType::Delete as i32, kv: None, prev_kv: None }],
    };
    assert_eq!(sorted_tags(&resp), [1, 2, 3, 4, 5, 6, 7, 11]);
}

#[test]
fn lease_grant_field_numbers() {
    let grant = LeaseGrantRequest { ttl: 5, id: 9 };
    assert_eq!(sorted_tags(&grant), [1, 2]);
}

#[test]
fn status_response_has_all_3_6_fields() {
    let status = StatusResponse {
        header: Some(Default::default()),
        version: "3.6.0".into(),
        db_size: 1,
        leader: 1,
        raft_index: 1,
        raft_term: 1,
        raft_applied_index: 1,
        errors: vec!["e".into()],
        db_size_in_use: 1,
        is_learner: true,
        storage_version: "3.6.0".into(),
        db_size_quota: 1,
        downgrade_info: Some(etcdserverpb::DowngradeInfo { enabled: true, target_version: "3.5.0".into() }),
    };
    assert_eq!(sorted_tags(&status), (1..=13).collect::<Vec<_>>());
}

#[test]
fn internal_raft_request_round_trips() {
    let req = InternalRaftRequest {
        id: 42,
        auth: None,
        request: Some(internal_raft_request::Request::Put(PutRequest { key: b"k".to_vec(), ..Default::default() })),
    };
    let wire = req.encode_to_vec();
    assert_eq!(tags(&wire), [1, 3]);
    assert_eq!(InternalRaftRequest::decode(&wire[..]).unwrap(), req);
}
