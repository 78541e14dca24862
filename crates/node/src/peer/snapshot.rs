//! A leader's snapshot on the wire: its raft message, then the store read
//! from the leader's checkpoint a piece at a time, then an end mark; the
//! receiving member spools the pieces and hands raft the message only once
//! the end mark arrived (see `crate::snapshots`).

use std::sync::Arc;

use keel_mvcc::StoreCheckpoint;
use keel_proto::keelpb::SnapshotChunk;
use keel_raft_node::Message;

use crate::snapshots::{SnapshotSpool, SpoolWriter, PIECE_BYTES};
use crate::NodeError;

/// The chunks that carry `message` (a MsgSnapshot with empty data) and the
/// store at its index from `checkpoint`, read as they are taken: the first
/// holds the message, one more per piece, the last one is the end mark.
pub(crate) fn chunks(
    cluster_id: u64,
    from: u64,
    message: &Message,
    checkpoint: Arc<StoreCheckpoint>,
) -> impl Iterator<Item = Result<SnapshotChunk, NodeError>> + Send + 'static {
    let header = protobuf::Message::write_to_bytes(message).unwrap_or_default();
    let first = SnapshotChunk { cluster_id, from, message: header, ..SnapshotChunk::default() };
    let pieces = checkpoint
        .pieces(PIECE_BYTES)
        .map(|piece| piece.map(|data| SnapshotChunk { data, ..SnapshotChunk::default() }).map_err(NodeError::Mvcc));
    let last = SnapshotChunk { last: true, ..SnapshotChunk::default() };
    std::iter::once(Ok(first)).chain(pieces).chain(std::iter::once(Ok(last)))
}

/// A snapshot arriving chunk by chunk, spooled as it comes.
pub struct SnapshotReceipt {
    from: u64,
    message: Message,
    writer: Box<dyn SpoolWriter>,
    ended: bool,
}

impl SnapshotReceipt {
    /// Starts from the stream's first chunk; refuses a sender of another
    /// cluster and a header that is not a snapshot message.
    /// `admit` sees the raft message before anything is spooled.
    pub(crate) fn start(
        our_cluster: u64,
        first: SnapshotChunk,
        spool: &dyn SnapshotSpool,
        admit: impl FnOnce(&Message) -> Result<(), NodeError>,
    ) -> Result<SnapshotReceipt, NodeError> {
        if first.cluster_id != our_cluster {
            return Err(NodeError::ClusterMismatch { ours: our_cluster, theirs: first.cluster_id });
        }
        let message: Message = protobuf::Message::parse_from_bytes(&first.message)
            .map_err(|e| NodeError::Corrupt(format!("snapshot header from {:x}: {e}", first.from)))?;
        if message.get_msg_type() != keel_raft_node::MessageType::MsgSnapshot {
            return Err(NodeError::Corrupt(format!(
                "snapshot stream from {:x} carries a {:?}",
                first.from,
                message.get_msg_type()
            )));
        }
        admit(&message)?;
        let writer = spool.create(message.get_snapshot().get_metadata().index)?;
        let mut receipt = SnapshotReceipt { from: first.from, message, writer, ended: false };
        receipt.push(first)?;
        Ok(receipt)
    }

    /// The member that sends the snapshot.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// Takes in the next chunk. Blocking: it writes to the spool.
    pub fn push(&mut self, chunk: SnapshotChunk) -> Result<(), NodeError> {
        if self.ended {
            return Err(NodeError::Corrupt(format!("snapshot from {:x} goes on after its end", self.from)));
        }
        if !chunk.data.is_empty() {
            self.writer.push(&chunk.data)?;
        }
        self.ended = chunk.last;
        Ok(())
    }

    /// The raft message, once the whole snapshot is durable in the spool.
    /// Blocking.
    pub(crate) fn finish(self) -> Result<Message, NodeError> {
        if !self.ended {
            return Err(NodeError::Corrupt(format!("snapshot from {:x} was cut off before its end", self.from)));
        }
        self.writer.finish()?;
        Ok(self.message)
    }
}

#[cfg(test)]
mod tests {
    use keel_mvcc::{Identity, KvStore, NoLeases, WriteRequest};
    use keel_proto::etcdserverpb::PutRequest;
    use keel_raft_node::MessageType;

    use super::*;
    use crate::snapshots::MemSpool;

    fn snapshot_message(index: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.to = 2;
        message.mut_snapshot().mut_metadata().index = index;
        message
    }

    fn checkpoint(keys: usize) -> Arc<StoreCheckpoint> {
        let store = KvStore::in_memory();
        store.bootstrap(Identity { member_id: 1, cluster_id: 7 }, &[]).unwrap();
        for index in 1..=keys as u64 {
            let put = PutRequest { key: format!("k{index}").into(), value: vec![1; 100_000], ..Default::default() };
            store.apply(index, WriteRequest::Put(&put), &NoLeases).unwrap();
        }
        store.checkpoint().unwrap()
    }

    fn receive(spool: &MemSpool, chunks: impl IntoIterator<Item = SnapshotChunk>) -> Result<Message, NodeError> {
        let mut chunks = chunks.into_iter();
        let mut receipt = SnapshotReceipt::start(7, chunks.next().unwrap(), spool, |_| Ok(()))?;
        for chunk in chunks {
            receipt.push(chunk)?;
        }
        receipt.finish()
    }

    #[test]
    fn a_snapshot_survives_the_trip_in_pieces_of_bounded_size() {
        let checkpoint = checkpoint(30);
        let index = checkpoint.index();
        let sent: Vec<_> = chunks(7, 1, &snapshot_message(index), checkpoint.clone()).map(Result::unwrap).collect();
        assert!(sent.len() >= 4, "{} chunks", sent.len());
        assert!(sent.iter().all(|c| c.data.len() <= PIECE_BYTES + 200_000));
        let spool = MemSpool::default();
        let message = receive(&spool, sent).unwrap();
        assert_eq!(message.get_snapshot().get_metadata().index, index);
        assert_eq!(message.to, 2);
        let spooled: Vec<_> = spool.pieces(index).unwrap().map(Result::unwrap).collect();
        let original: Vec<_> = checkpoint.pieces(PIECE_BYTES).map(Result::unwrap).collect();
        assert_eq!(spooled, original);
    }

    #[test]
    fn a_cut_or_overlong_stream_never_reaches_raft() {
        let checkpoint = checkpoint(3);
        let index = checkpoint.index();
        let mut cut: Vec<_> = chunks(7, 1, &snapshot_message(index), checkpoint.clone()).map(Result::unwrap).collect();
        cut.pop();
        let spool = MemSpool::default();
        assert!(matches!(receive(&spool, cut), Err(NodeError::Corrupt(m)) if m.contains("cut off")));
        assert_eq!(spool.newest(), None, "nothing spooled");

        let mut overlong: Vec<_> = chunks(7, 1, &snapshot_message(index), checkpoint).map(Result::unwrap).collect();
        overlong.push(SnapshotChunk { data: vec![0], ..SnapshotChunk::default() });
        assert!(matches!(receive(&spool, overlong), Err(NodeError::Corrupt(m)) if m.contains("after its end")));
    }

    #[test]
    fn another_clusters_snapshot_is_refused() {
        let mut chunks = chunks(8, 1, &snapshot_message(1), checkpoint(1));
        assert!(matches!(
            SnapshotReceipt::start(7, chunks.next().unwrap().unwrap(), &MemSpool::default(), |_| Ok(())),
            Err(NodeError::ClusterMismatch { ours: 7, theirs: 8 })
        ));
    }
}
