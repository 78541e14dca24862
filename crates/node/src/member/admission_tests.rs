//! Who may speak raft to a member: only current members, only to it, and
//! snapshots only from a leader of its current term or later.

use std::sync::Arc;

use keel_mvcc::KvStore;
use keel_proto::keelpb::SnapshotChunk;
use keel_raft_node::{MemLogEngine, Message, MessageType, SystemClock};

use super::Member;
use crate::config::MemberConfig;
use crate::peer::NoNetwork;
use crate::{ids, MemberStepper, NodeError, Parts};

const URLS: [&str; 3] = ["http://10.0.0.1:2380", "http://10.0.0.2:2380", "http://10.0.0.3:2380"];

/// The first of a 3-member cluster, stepped by hand, and the ids of all three.
fn first_of_three() -> (Member, MemberStepper, Vec<u64>) {
    let initial: Vec<(String, Vec<String>)> =
        URLS.iter().enumerate().map(|(i, url)| (format!("m{i}"), vec![url.to_string()])).collect();
    let mut config = MemberConfig::new("m0", "/nonexistent");
    config.peer_urls = vec![URLS[0].to_string()];
    config.initial_cluster = initial;
    let ids = URLS.iter().map(|url| ids::member_id(&[url.to_string()], &config.cluster_token)).collect();
    let parts = Parts::in_memory(
        Arc::new(KvStore::in_memory()),
        MemLogEngine::default(),
        Arc::new(NoNetwork),
        Arc::new(SystemClock),
    );
    let (member, stepper) = Member::assemble_stepped(config, parts).unwrap();
    (member, stepper, ids)
}

fn heartbeat(from: u64, to: u64, term: u64) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.from = from;
    message.to = to;
    message.term = term;
    message
}

fn encoded(message: &Message) -> Vec<u8> {
    protobuf::Message::write_to_bytes(message).unwrap()
}

#[test]
fn raft_messages_come_only_from_members_and_only_to_this_member() {
    let (member, _stepper, ids) = first_of_three();
    let cluster = member.cluster_id();
    member.receive_raft(cluster, vec![encoded(&heartbeat(ids[1], ids[0], 1))]).unwrap();
    match member.receive_raft(cluster, vec![encoded(&heartbeat(0xdead, ids[0], 1))]) {
        Err(NodeError::NotAPeer { from: 0xdead, .. }) => {}
        other => panic!("a stranger's message must be refused, got {other:?}"),
    }
    match member.receive_raft(cluster, vec![encoded(&heartbeat(ids[1], ids[2], 1))]) {
        Err(NodeError::NotAPeer { to, .. }) if to == ids[2] => {}
        other => panic!("a message for another member must be refused, got {other:?}"),
    }
    match member.receive_raft(cluster + 1, vec![encoded(&heartbeat(ids[1], ids[0], 1))]) {
        Err(NodeError::ClusterMismatch { .. }) => {}
        other => panic!("another cluster's message must be refused, got {other:?}"),
    }
}

#[test]
fn snapshots_come_only_from_the_current_term_and_from_members() {
    let (member, mut stepper, ids) = first_of_three();
    let cluster = member.cluster_id();
    // A leader of term 5 makes itself heard.
    member.receive_raft(cluster, vec![encoded(&heartbeat(ids[1], ids[0], 5))]).unwrap();
    for _ in 0..10 {
        stepper.step();
    }
    let snapshot = |from: u64, term: u64| {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.from = from;
        message.to = ids[0];
        message.term = term;
        message.mut_snapshot().mut_metadata().index = 100;
        SnapshotChunk { cluster_id: cluster, from, message: encoded(&message), ..Default::default() }
    };
    match member.snapshot_receipt(snapshot(ids[2], 4)) {
        Err(NodeError::StaleSnapshot { theirs: 4, ours: 5 }) => {}
        other => panic!("a deposed leader's snapshot must be refused, got {:?}", other.err()),
    }
    match member.snapshot_receipt(snapshot(0xdead, 9)) {
        Err(NodeError::NotAPeer { .. }) => {}
        other => panic!("a stranger's snapshot must be refused, got {:?}", other.err()),
    }
    assert!(member.snapshot_receipt(snapshot(ids[1], 5)).is_ok(), "the leader of this term may send one");
}
