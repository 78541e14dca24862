//! etcd's corruption checks: members that applied the same log must hold
//! the same history, so their HashKV at one revision must agree.
//!
//! - Initial (`--experimental-initial-corrupt-check`): a restarting member
//!   compares its hash with its peers' at its own revision before it
//!   serves, and refuses to start when one with the same compaction point
//!   disagrees.
//! - Periodic (`--experimental-corrupt-check-time`): the leader compares
//!   its followers' hashes at its revision and raises the CORRUPT alarm for
//!   a member that disagrees (or claims a newer revision or compaction than
//!   the leader's), which stops the cluster serving data until an operator
//!   steps in.

use std::sync::Weak;
use std::time::Duration;

use keel_proto::etcdserverpb::AlarmType;

use super::Member;
use crate::peer::PeerHash;
use crate::NodeError;

/// How long a peer may take to answer (etcd: its request timeout).
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

impl Member {
    /// Every other member's HashKV at `revision`, or why it could not be had.
    async fn peer_hashes(&self, revision: i64) -> Vec<(u64, Result<PeerHash, NodeError>)> {
        let peers: Vec<u64> = self.current_members.read().iter().copied().filter(|&id| id != self.member_id).collect();
        let asks = peers.into_iter().map(|peer| async move {
            let answer = match tokio::time::timeout(PEER_TIMEOUT, self.links.hash_kv(peer, revision)).await {
                Ok(answer) => answer,
                Err(_) => Err(NodeError::Timeout),
            };
            (peer, answer)
        });
        futures::future::join_all(asks).await
    }

    /// etcd's `CheckInitialHashKV`: an error when a peer with the same
    /// compaction point holds another history at this member's revision.
    /// Peers that cannot answer (down, behind, compacted past it) are
    /// skipped with a warning.
    pub async fn initial_corruption_check(&self) -> Result<(), NodeError> {
        let id = format!("{:x}", self.member_id);
        tracing::info!(local_member_id = %id, "starting initial corruption check");
        let local = self.hash_kv(0).await?;
        let mut mismatches = 0;
        for (peer, answer) in self.peer_hashes(local.current_revision).await {
            let peer = format!("{peer:x}");
            match answer {
                Ok(theirs) if theirs.hash == local.hash => {}
                Ok(theirs) if theirs.compact_revision == local.compact_revision => {
                    tracing::warn!(
                        local_member_id = %id,
                        local_member_revision = local.current_revision,
                        local_member_compact_revision = local.compact_revision,
                        local_member_hash = local.hash,
                        remote_peer_id = %peer,
                        remote_peer_revision = theirs.revision,
                        remote_peer_compact_revision = theirs.compact_revision,
                        remote_peer_hash = theirs.hash,
                        "found different hash values from remote peer"
                    );
                    mismatches += 1;
                }
                Ok(theirs) => tracing::warn!(
                    local_member_id = %id,
                    remote_peer_id = %peer,
                    local_member_compact_revision = local.compact_revision,
                    remote_peer_compact_revision = theirs.compact_revision,
                    "found different compact revision values from remote peer"
                ),
                Err(err) => {
                    tracing::warn!(local_member_id = %id, remote_peer_id = %peer, %err, "cannot fetch hash from remote peer")
                }
            }
        }
        if mismatches > 0 {
            return Err(NodeError::Corrupt(format!("{id} found data inconsistency with peers")));
        }
        tracing::info!(local_member_id = %id, "initial corruption checking passed; no corruption");
        Ok(())
    }

    /// etcd's leader-side `checkHashKV`: which members (at most one is
    /// reported, as etcd raises one alarm per check) hold a history that
    /// cannot be the leader's. Only meaningful on the leader.
    pub async fn corrupted_member(&self) -> Result<Option<u64>, NodeError> {
        let first = self.hash_kv(0).await?;
        let peers = self.peer_hashes(first.current_revision).await;
        // As etcd: caught up with everything committed before comparing, so
        // a follower that applied further than this leader is not taken for
        // one with a newer history than the leader's.
        self.proposals.wait_linearizable().await?;
        let again = self.hash_kv(0).await?;
        if again.hash != first.hash
            && again.current_revision == first.current_revision
            && again.compact_revision == first.compact_revision
        {
            tracing::warn!(revision = first.current_revision, "found hash mismatch on the leader itself");
            return Ok(Some(self.member_id));
        }
        for (peer, answer) in peers {
            let Ok(theirs) = answer else { continue };
            let reason = if theirs.revision > again.current_revision {
                "revision from follower must be less than or equal to leader's"
            } else if theirs.compact_revision > again.compact_revision {
                "compact revision from follower must be less than or equal to leader's"
            } else if theirs.compact_revision == first.compact_revision && theirs.hash != first.hash {
                "same compact revision then hashes must match"
            } else {
                continue;
            };
            tracing::warn!(
                leader_revision = first.current_revision,
                leader_compact_revision = first.compact_revision,
                leader_hash = first.hash,
                follower_member_id = %format!("{peer:x}"),
                follower_revision = theirs.revision,
                follower_compact_revision = theirs.compact_revision,
                follower_hash = theirs.hash,
                "{reason}"
            );
            return Ok(Some(peer));
        }
        Ok(None)
    }

    /// Runs the periodic check every `interval` while this member leads,
    /// until the member is stopped or dropped; raises CORRUPT through raft
    /// for the member found corrupt.
    pub async fn run_corruption_checks(member: Weak<Member>, interval: Duration) {
        if let Some(member) = member.upgrade() {
            tracing::info!(local_member_id = %format!("{:x}", member.member_id), ?interval, "enabled corruption checking");
        }
        loop {
            let member = match Member::leader_turn(&member, interval).await {
                super::Turn::Lead(member) => member,
                super::Turn::Follow => continue,
                super::Turn::Gone => return,
            };
            match member.corrupted_member().await {
                Ok(Some(corrupt)) => {
                    if let Err(err) = member.raise_alarm(corrupt, AlarmType::Corrupt).await {
                        tracing::warn!(%err, "cannot raise the CORRUPT alarm");
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "corruption check failed"),
            }
        }
    }
}
