//! The peer port of a real member refuses raft traffic from outside the
//! cluster: a stranger's messages, messages for another member, and
//! oversized messages (before they are read into memory).

mod common;

use common::{free_port, Keel};
use keel_proto::keelpb::raft_peer_client::RaftPeerClient;
use keel_proto::keelpb::RaftBatch;
use keel_raft_node::{Message, MessageType};
use tonic::Code;

fn heartbeat(from: u64, to: u64) -> Vec<u8> {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.from = from;
    message.to = to;
    message.term = 1_000;
    protobuf::Message::write_to_bytes(&message).unwrap()
}

#[tokio::test]
async fn the_peer_port_refuses_strangers_and_oversized_messages() {
    let dir = tempfile::tempdir().unwrap();
    let peer_port = free_port();
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let keel = Keel::spawn(
        dir.path(),
        free_port(),
        &[
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone(),
            "--initial-cluster".into(),
            format!("default={peer_url}"),
        ],
    );
    keel.wait_ready().await;
    let mut kv = keel.kv().await;
    let header = kv
        .range(keel_proto::etcdserverpb::RangeRequest { key: b"k".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap();
    let (cluster_id, member_id) = (header.cluster_id, header.member_id);
    let mut peer = RaftPeerClient::connect(peer_url.clone()).await.unwrap();
    let send = |batch: RaftBatch| {
        let mut peer = peer.clone();
        async move { peer.send(tokio_stream::iter(vec![batch])).await }
    };

    // The cluster id is in every client response: knowing it is not enough.
    let stranger = RaftBatch { cluster_id, from: 0xdead, messages: vec![heartbeat(0xdead, member_id)] };
    let refused = send(stranger).await.expect_err("a stranger's heartbeat");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let misaddressed = RaftBatch { cluster_id, from: member_id, messages: vec![heartbeat(member_id, 0xbeef)] };
    let refused = send(misaddressed).await.expect_err("a message for another member");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let huge = RaftBatch { cluster_id, from: 0xdead, messages: vec![vec![0; 64 << 20]] };
    let refused = peer.send(tokio_stream::iter(vec![huge])).await.expect_err("an oversized message");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");

    // Still leading and serving: no stranger deposed it.
    kv.put(keel_proto::etcdserverpb::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })
        .await
        .unwrap();
}
