//! An in-process network between the members of one process. Tests
//! assemble clusters on it; a simulation holds every message and decides
//! when, whether and in which order each arrives.
//!
//! Raft messages travel decoded. A snapshot travels as over gRPC: when its
//! message is delivered, the store is read from the sender's checkpoint
//! into the receiver's spool, chunk by chunk; a lost snapshot is reported to
//! the sender's raft as failed, so it tries again. Calls to the leader are
//! made directly on the other member, unless the link is cut.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use keel_lease_manager::TimeToLive;
use keel_proto::etcdserverpb::Member as EtcdMember;
use keel_raft_node::{Message, MessageType, Transport};
use parking_lot::Mutex;

use super::{error_of, status_of, BoxFuture, Network, PeerLinks};
use crate::snapshots::SnapshotShelf;
use crate::{Member, NodeError};

/// How messages get to their member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Handed over as they are sent (links that are cut drop them).
    Immediate,
    /// Held until [`LocalNetwork::take_held`] and [`LocalNetwork::deliver`].
    Held,
}

/// One raft message in flight.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: u64,
    pub to: u64,
    pub message: Message,
}

#[derive(Clone)]
pub struct LocalNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    delivery: Delivery,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    members: HashMap<u64, Weak<Member>>,
    urls: HashMap<String, u64>,
    held: Vec<Envelope>,
    /// Directed links that carry nothing: (from, to).
    cut: HashSet<(u64, u64)>,
    /// Members a peer told they were removed from the cluster.
    told_removed: HashSet<u64>,
    /// Ended snapshot transfers, by sender: (receiver, delivered).
    snapshot_outcomes: HashMap<u64, Vec<(u64, bool)>>,
    /// Each member's cluster and the checkpoints its snapshots are read from.
    shelves: HashMap<u64, (u64, Arc<SnapshotShelf>)>,
}

impl LocalNetwork {
    pub fn new(delivery: Delivery) -> LocalNetwork {
        LocalNetwork { inner: Arc::new(Inner { delivery, state: Mutex::new(State::default()) }) }
    }

    /// Puts `member` on the network at its peer `url` (again, after a restart).
    pub fn join(&self, member: &Arc<Member>, url: &str) {
        let mut state = self.inner.state.lock();
        state.members.insert(member.member_id(), Arc::downgrade(member));
        state.urls.insert(url.to_owned(), member.member_id());
    }

    /// Takes member `id` off the network (a crash): what is sent to it is lost.
    pub fn leave(&self, id: u64) {
        self.inner.state.lock().members.remove(&id);
    }

    /// Cuts (or heals) the link from `from` to `to`.
    pub fn set_link(&self, from: u64, to: u64, up: bool) {
        let mut state = self.inner.state.lock();
        if up {
            state.cut.remove(&(from, to));
        } else {
            state.cut.insert((from, to));
        }
    }

    /// Heals every link.
    pub fn heal(&self) {
        self.inner.state.lock().cut.clear();
    }

    /// Every message sent since the last call (with [`Delivery::Held`]).
    pub fn take_held(&self) -> Vec<Envelope> {
        std::mem::take(&mut self.inner.state.lock().held)
    }

    /// Hands `envelope` to its member; false (and the message lost) when
    /// the member is not on the network or the link is cut.
    pub fn deliver(&self, envelope: Envelope) -> bool {
        let (target, sender) = {
            let state = self.inner.state.lock();
            if state.cut.contains(&(envelope.from, envelope.to)) {
                (None, None)
            } else {
                let target = state.members.get(&envelope.to).and_then(Weak::upgrade);
                // A sender that is down sends no snapshot.
                let sender = state.members.get(&envelope.from).and_then(|_| state.shelves.get(&envelope.from)).cloned();
                (target, sender)
            }
        };
        let is_snapshot = envelope.message.get_msg_type() == MessageType::MsgSnapshot;
        let from = envelope.from;
        let outcome = match target {
            Some(member) if is_snapshot => Some(hand_over_snapshot(sender, from, &member, envelope.message)),
            Some(member) => Some(member.step_raft(envelope.message)),
            None => None,
        };
        if let Some(Err(NodeError::MemberRemoved)) = outcome {
            self.inner.state.lock().told_removed.insert(from);
        }
        let delivered = matches!(outcome, Some(Ok(())));
        if is_snapshot {
            self.inner.state.lock().snapshot_outcomes.entry(envelope.from).or_default().push((envelope.to, delivered));
        }
        delivered
    }

    /// Drops `envelope` (message loss), telling its sender's raft when it
    /// was a snapshot.
    pub fn drop_message(&self, envelope: Envelope) {
        if envelope.message.get_msg_type() == MessageType::MsgSnapshot {
            self.inner.state.lock().snapshot_outcomes.entry(envelope.from).or_default().push((envelope.to, false));
        }
    }

    fn member(&self, from: u64, to: u64) -> Result<Arc<Member>, NodeError> {
        let state = self.inner.state.lock();
        if state.cut.contains(&(from, to)) || state.cut.contains(&(to, from)) {
            return Err(NodeError::Storage(format!("link {from:x} -> {to:x} is cut")));
        }
        state.members.get(&to).and_then(Weak::upgrade).ok_or_else(|| NodeError::Storage(format!("{to:x} is down")))
    }
}

impl Network for LocalNetwork {
    fn cluster_info(&self, urls: &[String]) -> Result<(u64, Vec<EtcdMember>), NodeError> {
        let member = {
            let state = self.inner.state.lock();
            urls.iter().filter_map(|url| state.urls.get(url)).find_map(|id| state.members.get(id)?.upgrade())
        };
        member.ok_or_else(|| NodeError::Config(format!("no member at {} answered", urls.join(","))))?.cluster_info()
    }

    fn links(
        &self,
        cluster_id: u64,
        member_id: u64,
        shelf: Arc<SnapshotShelf>,
        _metrics: crate::metrics::PeerMetrics,
    ) -> Arc<dyn PeerLinks> {
        self.inner.state.lock().shelves.insert(member_id, (cluster_id, shelf));
        Arc::new(LocalLinks { network: self.clone(), cluster_id, from: member_id })
    }
}

/// Streams the snapshot `message` announces from the sender's checkpoint
/// into `receiver`'s spool, then hands raft the message, as the gRPC
/// transport and the peer service do between them.
fn hand_over_snapshot(
    sender: Option<(u64, Arc<SnapshotShelf>)>,
    from: u64,
    receiver: &Member,
    message: Message,
) -> Result<(), NodeError> {
    let (cluster_id, shelf) = sender.ok_or_else(|| NodeError::Storage("the sender is down".into()))?;
    let index = message.get_snapshot().get_metadata().index;
    let checkpoint = shelf.at(index).ok_or_else(|| NodeError::Storage(format!("no checkpoint at {index}")))?;
    let mut chunks = super::snapshot::chunks(cluster_id, from, &message, checkpoint);
    let first = chunks.next().ok_or_else(|| NodeError::Storage("no chunks".into()))??;
    let mut receipt = receiver.snapshot_receipt(first)?;
    for chunk in chunks {
        receipt.push(chunk?)?;
    }
    receiver.receive_snapshot(receipt)
}

struct LocalLinks {
    network: LocalNetwork,
    cluster_id: u64,
    from: u64,
}

/// A call answered by another member, its error as the wire would carry it.
fn over_the_wire<T>(answer: Result<T, NodeError>) -> Result<T, NodeError> {
    answer.map_err(|err| error_of(status_of(err)))
}

impl PeerLinks for LocalLinks {
    fn transport(&self) -> Box<dyn Transport> {
        Box::new(LocalTransport { network: self.network.clone(), from: self.from })
    }
    // Every member on the network is reachable by id: nothing to connect.
    fn add(&self, _peer: u64, _url: &str) {}
    fn remove(&self, _peer: u64) {}
    fn retain(&self, _members: &[u64]) {}

    fn lease_renew(&self, leader: u64, id: i64) -> BoxFuture<'_, Result<i64, NodeError>> {
        Box::pin(async move {
            let member = self.network.member(self.from, leader)?;
            over_the_wire(member.lease_renew_here(self.cluster_id, id).await)
        })
    }

    fn lease_time_to_live(&self, leader: u64, id: i64, keys: bool) -> BoxFuture<'_, Result<TimeToLive, NodeError>> {
        Box::pin(async move {
            let member = self.network.member(self.from, leader)?;
            over_the_wire(member.lease_time_to_live_here(self.cluster_id, id, keys).await)
        })
    }

    fn peer_activity(&self, leader: u64) -> BoxFuture<'_, Result<Vec<(u64, Duration)>, NodeError>> {
        Box::pin(async move {
            let member = self.network.member(self.from, leader)?;
            over_the_wire(member.peer_activity_here(self.cluster_id))
        })
    }
}

struct LocalTransport {
    network: LocalNetwork,
    from: u64,
}

impl Transport for LocalTransport {
    fn send(&mut self, messages: Vec<Message>) {
        let envelopes = messages.into_iter().map(|message| Envelope { from: self.from, to: message.to, message });
        match self.network.inner.delivery {
            Delivery::Immediate => {
                for envelope in envelopes {
                    self.network.deliver(envelope);
                }
            }
            Delivery::Held => self.network.inner.state.lock().held.extend(envelopes),
        }
    }

    fn snapshot_outcomes(&mut self) -> Vec<(u64, bool)> {
        self.network.inner.state.lock().snapshot_outcomes.remove(&self.from).unwrap_or_default()
    }

    fn removed_from_cluster(&mut self) -> bool {
        self.network.inner.state.lock().told_removed.contains(&self.from)
    }
}
