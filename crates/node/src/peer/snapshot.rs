//! A leader's snapshot on the wire: split into chunks on the sending member,
//! put together again on the receiving one.
//!
//! A snapshot holds the whole store, so it never travels as one gRPC
//! message: the first chunk carries the raft message with its data left
//! empty, and the data follows in pieces of [`CHUNK_BYTES`]. The receiver
//! checks that every announced byte arrived before raft sees the message.

use keel_proto::keelpb::SnapshotChunk;
use keel_raft_node::Message;

use crate::NodeError;

/// Data bytes per chunk: far below gRPC's message limits, large enough that
/// the per-message cost does not matter.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// How much of an announced size a receiver reserves up front; a larger
/// snapshot grows as its chunks arrive.
const MAX_RESERVE: usize = 64 << 20;

/// The chunks that carry `message` (a MsgSnapshot), `chunk_bytes` of data
/// each, made one by one as they are taken: only one chunk's copy of the
/// data exists besides the snapshot itself.
pub(crate) fn chunks(
    cluster_id: u64,
    from: u64,
    mut message: Message,
    chunk_bytes: usize,
) -> impl Iterator<Item = SnapshotChunk> + Send + 'static {
    let data = message.mut_snapshot().take_data();
    let header = protobuf::Message::write_to_bytes(&message).unwrap_or_default();
    let chunk_bytes = chunk_bytes.max(1);
    let count = data.len().div_ceil(chunk_bytes).max(1);
    let mut header = Some(header);
    (0..count).map(move |i| {
        let piece = data[(i * chunk_bytes).min(data.len())..((i + 1) * chunk_bytes).min(data.len())].to_vec();
        match header.take() {
            Some(message) => SnapshotChunk { cluster_id, from, message, data_size: data.len() as u64, data: piece },
            None => SnapshotChunk { data: piece, ..SnapshotChunk::default() },
        }
    })
}

/// A snapshot arriving chunk by chunk.
pub struct SnapshotAssembly {
    from: u64,
    message: Message,
    data_size: usize,
    data: Vec<u8>,
}

impl SnapshotAssembly {
    /// Starts from the stream's first chunk; refuses a sender of another
    /// cluster and a header that is not a snapshot message.
    pub(crate) fn start(our_cluster: u64, first: SnapshotChunk) -> Result<SnapshotAssembly, NodeError> {
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
        let data_size = usize::try_from(first.data_size)
            .map_err(|_| NodeError::Corrupt(format!("snapshot of {} bytes", first.data_size)))?;
        let mut assembly = SnapshotAssembly {
            from: first.from,
            message,
            data_size,
            data: Vec::with_capacity(data_size.min(MAX_RESERVE)),
        };
        assembly.push(first.data)?;
        Ok(assembly)
    }

    /// The member that sends the snapshot.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// Appends the data of the next chunk.
    pub fn push(&mut self, data: Vec<u8>) -> Result<(), NodeError> {
        if self.data.len() + data.len() > self.data_size {
            return Err(NodeError::Corrupt(format!(
                "snapshot from {:x} carries more than the {} bytes announced",
                self.from, self.data_size
            )));
        }
        if self.data.is_empty() {
            self.data = data;
            self.data.reserve(self.data_size.min(MAX_RESERVE).saturating_sub(self.data.len()));
        } else {
            self.data.extend_from_slice(&data);
        }
        Ok(())
    }

    /// The whole raft message, once every announced byte is there.
    pub(crate) fn finish(mut self) -> Result<Message, NodeError> {
        if self.data.len() != self.data_size {
            return Err(NodeError::Corrupt(format!(
                "snapshot from {:x} ended after {} of {} bytes",
                self.from,
                self.data.len(),
                self.data_size
            )));
        }
        self.message.mut_snapshot().set_data(self.data.into());
        Ok(self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft_node::MessageType;

    fn snapshot_message(data: Vec<u8>) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.to = 2;
        message.mut_snapshot().mut_metadata().index = 42;
        message.mut_snapshot().set_data(data.into());
        message
    }

    fn reassemble(chunks: impl IntoIterator<Item = SnapshotChunk>) -> Result<Message, NodeError> {
        let mut chunks = chunks.into_iter();
        let mut assembly = SnapshotAssembly::start(7, chunks.next().unwrap())?;
        for chunk in chunks {
            assembly.push(chunk.data)?;
        }
        assembly.finish()
    }

    #[test]
    fn a_snapshot_survives_the_trip_in_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|n| n as u8).collect();
        let chunks: Vec<_> = chunks(7, 1, snapshot_message(data.clone()), 4096).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.data.len() <= 4096));
        let message = reassemble(chunks).unwrap();
        assert_eq!(message.get_snapshot().get_data(), data.as_slice());
        assert_eq!(message.get_snapshot().get_metadata().index, 42);
        assert_eq!(message.to, 2);
    }

    #[test]
    fn an_empty_snapshot_is_one_chunk() {
        let chunks: Vec<_> = chunks(7, 1, snapshot_message(Vec::new()), 4096).collect();
        assert_eq!(chunks.len(), 1);
        assert!(reassemble(chunks).unwrap().get_snapshot().get_data().is_empty());
    }

    #[test]
    fn a_cut_or_padded_stream_never_reaches_raft() {
        let mut cut: Vec<_> = chunks(7, 1, snapshot_message(vec![1; 9000]), 4096).collect();
        cut.pop();
        assert!(matches!(reassemble(cut), Err(NodeError::Corrupt(m)) if m.contains("ended after 8192 of 9000")));

        let mut padded: Vec<_> = chunks(7, 1, snapshot_message(vec![1; 9000]), 4096).collect();
        padded.push(SnapshotChunk { data: vec![0], ..SnapshotChunk::default() });
        assert!(matches!(reassemble(padded), Err(NodeError::Corrupt(m)) if m.contains("more than the 9000 bytes")));
    }

    #[test]
    fn another_clusters_snapshot_is_refused() {
        let mut chunks = chunks(8, 1, snapshot_message(vec![1; 10]), 4096);
        assert!(matches!(
            SnapshotAssembly::start(7, chunks.next().unwrap()),
            Err(NodeError::ClusterMismatch { ours: 7, theirs: 8 })
        ));
    }
}
