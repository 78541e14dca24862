//! The Maintenance service's requests: status, hashes, defragmentation
//! and snapshots in etcd's format.

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
    /// The backend quota in force (etcd's --quota-backend-bytes, its
    /// default applied; negative: none).
    pub fn quota_backend_bytes(&self) -> i64 {
        self.config.quota_backend_bytes
    }

    /// etcd's Maintenance.Hash: a CRC-32C of the whole store as etcd lays
    /// it out (every bucket but the raft position), and the revision it
    /// was taken at.
    pub async fn backend_hash(&self) -> Result<(u32, i64), NodeError> {
        let kv = self.kv.clone();
        self.offload
            .run(move || {
                let started = std::time::Instant::now();
                let checkpoint = kv.checkpoint().map_err(NodeError::Mvcc)?;
                let hash = keel_snapshot::backend_hash(&checkpoint).map_err(snapshot_error)?;
                kv.metrics().observe_hash(started.elapsed());
                Ok((hash, checkpoint.revision()))
            })
            .await?
    }

    /// etcd's Maintenance.Defragment: the store's engine rewrites its files
    /// without the space compacted revisions held. Reads and writes go on
    /// meanwhile (etcd stops both for the whole defragmentation).
    pub async fn defragment(&self) -> Result<(), NodeError> {
        let kv = self.kv.clone();
        let started = std::time::Instant::now();
        let before = self.kv.db_size();
        self.offload.run(move || kv.defragment()).await?.map_err(NodeError::Mvcc)?;
        self.quota.invalidate();
        tracing::info!(
            took = ?started.elapsed(),
            current_db_size_bytes = before,
            new_db_size_bytes = self.kv.db_size(),
            "finished defragmenting directory"
        );
        Ok(())
    }

    /// The store as etcd's snapshot file (a bbolt database in etcd's
    /// layout), written to an unnamed file beside the store and ready to be
    /// streamed with its sha256 trailer; the store revision it holds.
    pub async fn etcd_snapshot(&self) -> Result<(keel_snapshot::SnapshotFile, i64), NodeError> {
        let kv = self.kv.clone();
        let member_dir = self.config.data_dir.join("member");
        let dir = if member_dir.is_dir() { member_dir } else { std::env::temp_dir() };
        self.offload
            .run(move || {
                let checkpoint = kv.checkpoint().map_err(NodeError::Mvcc)?;
                let file = keel_snapshot::SnapshotFile::create(&checkpoint, &dir).map_err(snapshot_error)?;
                Ok((file, checkpoint.revision()))
            })
            .await?
    }
}

impl Member {
    /// Runs etcd's auto-compaction until the member is stopped or dropped:
    /// only while this member leads, through raft as a client's
    /// Compaction. Holds the member weakly.
    pub async fn run_auto_compaction(member: std::sync::Weak<Member>, mode: crate::compactor::AutoCompaction) {
        Member::run_auto_compaction_every(member, mode, crate::compactor::REVISION_CHECK_INTERVAL).await;
    }

    /// As [`Member::run_auto_compaction`], the revision mode looking every
    /// `revision_interval` (etcd: five minutes; tests: less).
    pub(crate) async fn run_auto_compaction_every(
        member: std::sync::Weak<Member>,
        mode: crate::compactor::AutoCompaction,
        revision_interval: std::time::Duration,
    ) {
        use crate::compactor::{AutoCompaction, PeriodicPlan, RevisionPlan};
        use std::time::Instant;
        let (mut periodic, mut by_revision, interval) = match mode {
            AutoCompaction::Periodic(period) => {
                let plan = PeriodicPlan::new(period, Instant::now());
                let interval = plan.retry_interval().max(std::time::Duration::from_millis(1));
                (Some(plan), None, interval)
            }
            AutoCompaction::Revision(retention) => (None, Some(RevisionPlan::new(retention)), revision_interval),
        };
        loop {
            if let (Some(plan), Some(member)) = (periodic.as_mut(), member.upgrade()) {
                plan.sample(member.kv.current_revision());
            }
            let member = match Member::leader_turn(&member, interval).await {
                super::Turn::Lead(member) => member,
                super::Turn::Follow => continue,
                super::Turn::Gone => return,
            };
            let due = match (periodic.as_mut(), by_revision.as_ref()) {
                (Some(plan), _) => plan.due(Instant::now()),
                (_, Some(plan)) => plan.due(member.kv.current_revision()),
                _ => None,
            };
            let Some(revision) = due else { continue };
            tracing::info!(revision, mode = ?mode, "starting auto compaction");
            let request = keel_proto::etcdserverpb::CompactionRequest { revision, physical: false };
            match member.compact(&keel_auth::AuthInfo::default(), request).await {
                Ok(_) | Err(NodeError::Mvcc(keel_mvcc::MvccError::Compacted)) => {
                    if let Some(plan) = periodic.as_mut() {
                        plan.succeeded(Instant::now());
                    }
                    if let Some(plan) = by_revision.as_mut() {
                        plan.succeeded(revision);
                    }
                    tracing::info!(revision, "completed auto compaction");
                }
                Err(err) => tracing::warn!(revision, %err, "failed auto compaction; retrying"),
            }
        }
    }
}

fn snapshot_error(err: keel_snapshot::SnapshotError) -> NodeError {
    match err {
        keel_snapshot::SnapshotError::Store(err) => NodeError::Mvcc(err),
        other => NodeError::Storage(other.to_string()),
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
        let response = self.write(who, keel_proto::keelpb::internal_raft_request::Request::Alarm(request)).await;
        // A disarmed NOSPACE is checked against the store as it is now.
        self.quota.invalidate();
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use keel_mvcc::KvStore;
    use keel_proto::etcdserverpb::PutRequest;
    use keel_raft_node::{MemLogEngine, SystemClock};

    use crate::compactor::AutoCompaction;
    use crate::config::MemberConfig;
    use crate::peer::NoNetwork;
    use crate::{Member, Parts};

    #[tokio::test(flavor = "multi_thread")]
    async fn revision_auto_compaction_keeps_the_retention_through_raft() {
        let kv = Arc::new(KvStore::in_memory());
        let parts = Parts::in_memory(kv.clone(), MemLogEngine::default(), Arc::new(NoNetwork), Arc::new(SystemClock));
        let member = Arc::new(Member::assemble(MemberConfig::new("m0", "/nonexistent"), parts).unwrap());
        let who = keel_auth::AuthInfo::default();
        let put = |i: u8| PutRequest { key: b"k".to_vec(), value: vec![i], ..Default::default() };
        // The first put waits for the election.
        for i in 0..10 {
            member.put(&who, put(i)).await.unwrap();
        }
        let task = tokio::spawn(Member::run_auto_compaction_every(
            Arc::downgrade(&member),
            AutoCompaction::Revision(4),
            Duration::from_millis(20),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while kv.compact_revision() != 11 - 4 {
            assert!(std::time::Instant::now() < deadline, "compacted at {}", kv.compact_revision());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        member.put(&who, put(10)).await.unwrap();
        while kv.compact_revision() != 12 - 4 {
            assert!(std::time::Instant::now() < deadline, "compacted at {}", kv.compact_revision());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopping = member.clone();
        tokio::task::spawn_blocking(move || stopping.stop()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the compactor ends with the member").unwrap();
    }
}
