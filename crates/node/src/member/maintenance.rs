//! The Maintenance service's requests: status and hashes.

use std::sync::atomic::Ordering;

use super::Member;
use crate::NodeError;

/// What `Status` reports about this member.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub is_learner: bool,
}

impl Member {
    /// What `Status` reports. Reads storage: call it off the async runtime.
    pub fn status(&self) -> MemberStatus {
        let raft = self.raft.status();
        MemberStatus {
            member_id: self.member_id,
            leader: raft.leader(),
            raft_term: raft.term(),
            raft_index: raft.commit_index(),
            raft_applied_index: self.applied.load(Ordering::Acquire),
            db_size: self.kv.db_size(),
            db_size_in_use: self.kv.db_size_in_use(),
            is_learner: self
                .kv
                .members()
                .is_ok_and(|members| members.iter().any(|m| m.id == self.member_id && m.is_learner)),
        }
    }

    /// etcd's HashKV: a CRC-32C of the stored history up to `revision` (0:
    /// the current one), equal on members that applied the same log.
    pub async fn hash_kv(&self, revision: i64) -> Result<keel_mvcc::KvHash, NodeError> {
        let kv = self.kv.clone();
        self.offload.run(move || kv.hash_by_rev(revision)).await?.map_err(NodeError::Mvcc)
    }
}

impl Member {
    /// The read etcd's health checks make: a key-only range of at most one
    /// key, linearizable unless `serializable`, with the rights of root
    /// (auth does not decide whether a member is healthy).
    pub async fn health_read(&self, serializable: bool) -> Result<(), NodeError> {
        if !serializable {
            self.proposals.wait_linearizable().await?;
        }
        let kv = self.kv.clone();
        // One key, as etcd's check: a range would walk (and count) every key.
        let request = keel_proto::etcdserverpb::RangeRequest {
            key: b"health".to_vec(),
            keys_only: true,
            limit: 1,
            serializable,
            ..Default::default()
        };
        self.offload.run(move || kv.range(&request)).await?.map_err(NodeError::Mvcc)?;
        Ok(())
    }

    /// Whether this member is a learner, as applied. No storage read.
    pub fn is_learner(&self) -> bool {
        self.learner.load(Ordering::Acquire)
    }

    /// Whether `id` is a member of the cluster, as applied.
    pub(crate) fn is_current_member(&self, id: u64) -> bool {
        self.current_members.read().contains(&id)
    }

    /// The cluster's active alarms, as this member applied them.
    pub fn alarms(&self) -> Vec<keel_proto::etcdserverpb::AlarmMember> {
        self.alarms.active()
    }

    /// etcd's Alarm: every action goes through raft, so an answer reflects
    /// every alarm raised or cleared before it.
    pub async fn alarm(
        &self,
        who: &keel_auth::AuthInfo,
        request: keel_proto::etcdserverpb::AlarmRequest,
    ) -> Result<keel_proto::etcdserverpb::AlarmResponse, NodeError> {
        self.write(who, keel_proto::keelpb::internal_raft_request::Request::Alarm(request)).await
    }
}
