//! The v2 keys API's store (`--enable-v2`): writes go through raft into the
//! member's own v2 keyspace, reads and watches are served from the applied
//! state here, and the leader expires TTL nodes with its clock.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use keel_proto::keelpb::internal_raft_request::Request;
use keel_v2store::{Event, Nanos, Stats, V2Error, Watcher, Write};

use super::{Member, Turn};
use crate::proposals::Applied;
use crate::NodeError;

/// How often the leader looks for due TTL nodes (etcd's SYNC interval).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);

/// Where the v2 API's headers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftPosition {
    /// `X-Raft-Index`: the member's applied raft index.
    pub index: u64,
    /// `X-Raft-Term`.
    pub term: u64,
}

impl Member {
    /// A v2 write, replicated through raft and applied in order. The outer
    /// error is raft's (timeout, no leader, stopped: v2's 300 "Raft
    /// Internal Error"); the inner one the store's refusal, decided at
    /// apply time as etcd does.
    pub async fn v2_write(&self, write: Write) -> Result<Result<Event, V2Error>, NodeError> {
        let request = Request::V2Write(crate::v2keys::encode(write));
        match self.proposals.propose(request, None).await? {
            Applied::V2(outcome) => Ok(outcome),
            _ => Err(NodeError::Corrupt("a v2 write was answered with another kind of response".into())),
        }
    }

    /// A GET served from this member's applied store (etcd's plain v2 GET).
    pub fn v2_get(&self, key: &str, recursive: bool, sorted: bool) -> Result<Event, V2Error> {
        self.v2.read(|store| {
            let outcome = store.get(key, recursive, sorted);
            store.count_get(outcome.is_ok());
            outcome
        })
    }

    /// `quorum=true`: a linearizable GET. etcd sends it through the log;
    /// a read index gives the same guarantee without a write.
    pub async fn v2_quorum_get(
        &self,
        key: &str,
        recursive: bool,
        sorted: bool,
    ) -> Result<Result<Event, V2Error>, NodeError> {
        self.proposals.wait_linearizable().await?;
        Ok(self.v2_get(key, recursive, sorted))
    }

    /// `wait=true`: see [`keel_v2store::Store::watch`].
    pub fn v2_watch(&self, key: &str, recursive: bool, stream: bool, wait_index: u64) -> Result<Watcher, V2Error> {
        self.v2.read(|store| store.watch(key, recursive, stream, wait_index))
    }

    /// The v2 store's index (`X-Etcd-Index`).
    pub fn v2_index(&self) -> u64 {
        self.v2.read(|store| store.index())
    }

    /// `/v2/stats/store`.
    pub fn v2_stats(&self) -> Stats {
        self.v2.read(|store| store.stats())
    }

    /// `X-Raft-Index` and `X-Raft-Term`, now.
    pub fn raft_position(&self) -> RaftPosition {
        RaftPosition { index: self.applied.load(Ordering::Acquire), term: self.raft.status().term() }
    }

    /// The leader's expiry of v2 TTL nodes: every half second, if a node is
    /// due by the leader's clock, one entry expires all that are (etcd
    /// proposes its SYNC every half second while any TTL node exists; only
    /// proposing when one is due spares the log).
    pub async fn run_v2_expiry(member: Weak<Member>) {
        loop {
            let member = match Member::leader_turn(&member, EXPIRY_INTERVAL).await {
                Turn::Lead(member) => member,
                Turn::Follow => continue,
                Turn::Gone => return,
            };
            let now = unix_nanos(&member);
            let due = member.v2.read(|store| store.next_expiration()).is_some_and(|at| at <= now);
            if due {
                if let Err(err) = member.v2_write(Write::Expire { now }).await {
                    tracing::debug!(%err, "expiring v2 keys; retrying");
                }
            }
        }
    }
}

fn unix_nanos(member: &Member) -> Nanos {
    i64::try_from(member.clock.unix_millis()).unwrap_or(i64::MAX / 1_000_000) * 1_000_000
}
