//! The Cluster service's requests: membership read from the store, changed
//! through raft configuration changes, with etcd's checks
//! (`--strict-reconfig-check`, learners, peer URLs); leader transfer and the
//! member's published attributes.

use std::time::Duration;

use keel_proto::etcdserverpb::Member as EtcdMember;
use keel_proto::keelpb::{internal_raft_request::Request, MemberAttributes};
use keel_raft_node::ConfChangeType;

use super::Member;
use crate::{ids, NodeError};

impl Member {
    /// The cluster's members, by id; `linearizable` waits for a read index
    /// first, so a member added or removed just before is reflected.
    pub async fn member_list(&self, linearizable: bool) -> Result<Vec<EtcdMember>, NodeError> {
        if linearizable {
            self.proposals.wait_linearizable().await?;
        }
        let kv = self.kv.clone();
        self.offload.run(move || kv.members()).await?.map_err(NodeError::Mvcc)
    }

    /// Adds a member (as a learner if asked), through a raft configuration
    /// change; returns it and the membership after the change. The new
    /// member is then started with `--initial-cluster-state existing`.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(EtcdMember, Vec<EtcdMember>), NodeError> {
        check_peer_urls(&peer_urls)?;
        let members = self.member_list(true).await?;
        // etcd checks quorum before the URL and learner limits.
        self.check_reconfig(Reconfig::Add { is_learner }, &members).await?;
        if members.iter().any(|m| m.peer_ur_ls.iter().any(|url| peer_urls.contains(url))) {
            return Err(NodeError::PeerUrlExists);
        }
        if is_learner && members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(NodeError::TooManyLearners);
        }
        let now = self.clock.unix_millis() / 1000;
        let member = EtcdMember {
            id: ids::added_member_id(&peer_urls, now),
            peer_ur_ls: peer_urls,
            is_learner,
            ..Default::default()
        };
        let kind = if is_learner { ConfChangeType::AddLearnerNode } else { ConfChangeType::AddNode };
        self.proposals.change_membership(kind, member.clone()).await?;
        Ok((member, self.member_list(false).await?))
    }

    /// Removes a member (the leader included) through a configuration change.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<EtcdMember>, NodeError> {
        let members = self.member_list(true).await?;
        self.check_reconfig(Reconfig::Remove(id), &members).await?;
        let member = members.iter().find(|m| m.id == id).cloned().ok_or(NodeError::MemberNotFound)?;
        if id == self.raft.status().leader() {
            self.hand_over_leadership(id, &members).await?;
        }
        self.proposals.change_membership(ConfChangeType::RemoveNode, member).await?;
        self.member_list(false).await
    }

    /// Before the leader is removed, another voter takes over: a leader
    /// stops as soon as it applies its own removal, and until some member
    /// hears from it that the change committed, the members left could wait
    /// for its vote forever (two members left one: the one left never leads).
    async fn hand_over_leadership(&self, leaving: u64, members: &[EtcdMember]) -> Result<(), NodeError> {
        let voters = members.iter().filter(|m| !m.is_learner && m.id != leaving);
        let mut candidates: Vec<u64> = voters.map(|m| m.id).collect();
        // This member first: it is certainly up.
        candidates.sort_by_key(|&id| id != self.member_id);
        let Some(&target) = candidates.first() else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.raft.transfer_leader(target).map_err(crate::proposals::refused)?;
        // Between the old leader stepping down and the new one winning its
        // election no member knows a leader (0); a removal proposed then is
        // refused with "no leader", so wait for the successor itself.
        loop {
            let leader = self.raft.status().leader();
            if leader != 0 && leader != leaving {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::LeaderTransferTimeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Makes a learner a voter, once it has caught up with the leader (etcd:
    /// its log holds at least 90% of the leader's).
    pub async fn member_promote(&self, id: u64) -> Result<Vec<EtcdMember>, NodeError> {
        let members = self.member_list(true).await?;
        let mut member = members.iter().find(|m| m.id == id).cloned().ok_or(NodeError::MemberNotFound)?;
        if !member.is_learner {
            return Err(NodeError::MemberNotLearner);
        }
        let status = self.raft.status();
        if !status.is_leader() {
            // Only the leader knows how far the learner got.
            return Err(NodeError::NotLeader);
        }
        let leader_matched = status.matched(self.member_id).unwrap_or(0);
        let learner_matched = status.matched(id).unwrap_or(0);
        if (learner_matched as f64) < leader_matched as f64 * LEARNER_READY_FRACTION {
            self.metrics.learner_promote_failed(&NodeError::LearnerNotReady);
            return Err(NodeError::LearnerNotReady);
        }
        if let Err(err) = self.check_reconfig(Reconfig::Promote, &members).await {
            self.metrics.learner_promote_failed(&err);
            return Err(err);
        }
        member.is_learner = false;
        self.proposals.change_membership(ConfChangeType::AddNode, member).await?;
        self.metrics.learner_promote_successes.inc();
        self.member_list(false).await
    }

    /// Changes a member's peer URLs (no configuration change in raft: the
    /// member keeps its id and vote).
    pub async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<Vec<EtcdMember>, NodeError> {
        check_peer_urls(&peer_urls)?;
        let members = self.member_list(true).await?;
        if !members.iter().any(|m| m.id == id) {
            return Err(NodeError::MemberNotFound);
        }
        if members.iter().any(|m| m.id != id && m.peer_ur_ls.iter().any(|url| peer_urls.contains(url))) {
            return Err(NodeError::PeerUrlExists);
        }
        let update = keel_proto::etcdserverpb::MemberUpdateRequest { id, peer_ur_ls: peer_urls };
        self.proposals.propose(Request::MemberUpdate(update), None).await?;
        self.member_list(false).await
    }

    /// etcd's --strict-reconfig-check: a change must leave a quorum of
    /// started (published) voting members, and the members the change relies
    /// on must have been in touch for `HEALTH_INTERVAL`. Only the leader hears
    /// from every member, so a follower asks it (etcd's members, a full
    /// mesh, each judge for themselves).
    async fn check_reconfig(&self, change: Reconfig, members: &[EtcdMember]) -> Result<(), NodeError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let voters: Vec<&EtcdMember> = members.iter().filter(|m| !m.is_learner).collect();
        let started = |m: &EtcdMember| !m.name.is_empty();
        let ready = |nmembers: usize, nstarted: usize| nstarted > nmembers / 2;
        match change {
            Reconfig::Add { is_learner } => {
                let (nmembers, nstarted) = (voters.len() + 1, voters.iter().filter(|m| started(m)).count());
                // etcd lets a lone started member take a second (a restore).
                let restoring = nstarted == 1 && nmembers == 2;
                if !(is_learner || restoring || ready(nmembers, nstarted)) {
                    return Err(NodeError::NotEnoughStartedMembers);
                }
                let activity = self.peer_activity().await?;
                if !voters.iter().all(|m| activity.healthy(m.id)) {
                    return Err(NodeError::Unhealthy);
                }
            }
            Reconfig::Promote => {
                let (nmembers, nstarted) = (voters.len() + 1, voters.iter().filter(|m| started(m)).count() + 1);
                if !ready(nmembers, nstarted) {
                    return Err(NodeError::NotEnoughStartedMembers);
                }
            }
            Reconfig::Remove(id) => {
                if !voters.iter().any(|m| m.id == id) {
                    return Ok(()); // a learner, or unknown (refused later)
                }
                let rest: Vec<&&EtcdMember> = voters.iter().filter(|m| m.id != id).collect();
                if !ready(rest.len(), rest.iter().filter(|m| started(m)).count()) {
                    return Err(NodeError::NotEnoughStartedMembers);
                }
                let activity = self.peer_activity().await?;
                // A member that is down is safe to remove: it is not part
                // of the active quorum.
                if activity.silent(id) {
                    return Ok(());
                }
                let in_touch = voters.iter().filter(|m| activity.healthy(m.id)).count();
                if in_touch < 2 + (voters.len() - 1) / 2 {
                    return Err(NodeError::Unhealthy);
                }
            }
        }
        Ok(())
    }

    /// The leader's view of how long each member has been in touch with it.
    async fn peer_activity(&self) -> Result<PeerActivity, NodeError> {
        if self.raft.status().is_leader() {
            return Ok(PeerActivity { leader: self.member_id, active: self.active_peers() });
        }
        match self.raft.status().leader() {
            0 => Err(NodeError::NoLeader),
            // A leader that cannot be asked is no healthy cluster to change.
            leader => {
                let active = self.links.peer_activity(leader).await.map_err(|_| NodeError::Unhealthy)?;
                Ok(PeerActivity { leader, active })
            }
        }
    }

    fn active_peers(&self) -> Vec<(u64, Duration)> {
        let now = self.now();
        self.raft.status().active_peers().into_iter().map(|(id, since)| (id, now.duration_since(since))).collect()
    }

    /// Another member asks the leader's view (`peer_activity`): refused with
    /// `NotLeader` unless this member leads.
    pub fn peer_activity_here(&self, cluster_id: u64) -> Result<Vec<(u64, Duration)>, NodeError> {
        self.check_cluster(cluster_id)?;
        if !self.raft.status().is_leader() {
            return Err(NodeError::NotLeader);
        }
        Ok(self.active_peers())
    }

    /// Hands leadership to `target` (etcd's MoveLeader): only the leader can,
    /// and only to a voting member; waits until `target` leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), NodeError> {
        if !self.raft.status().is_leader() {
            return Err(NodeError::NotLeader);
        }
        let members = self.member_list(false).await?;
        if !members.iter().any(|m| m.id == target && !m.is_learner) {
            return Err(NodeError::BadLeaderTransferee);
        }
        if target == self.member_id {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.raft.transfer_leader(target).map_err(|_| NodeError::Stopped)?;
        while self.raft.status().leader() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::LeaderTransferTimeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Whether [`Member::publish`] has had this start's attributes applied.
    pub fn is_published(&self) -> bool {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once a configuration change has removed this member from
    /// the cluster (etcd then stops the member).
    pub async fn removed(&self) {
        self.removed.notified().await
    }

    /// The cluster id and membership, for a member joining the cluster.
    pub fn cluster_info(&self) -> Result<(u64, Vec<EtcdMember>), NodeError> {
        Ok((self.cluster_id, self.kv.members().map_err(NodeError::Mvcc)?))
    }

    /// Announces this member's name and client URLs through raft (etcd's
    /// "publish"), retrying until it is applied or the member stops.
    pub async fn publish(&self, client_urls: Vec<String>) {
        let attributes = MemberAttributes { member_id: self.member_id, name: self.config.name.clone(), client_urls };
        loop {
            match self.proposals.propose(Request::MemberAttributes(attributes.clone()), None).await {
                Ok(_) => {
                    tracing::info!(name = %attributes.name, client_urls = ?attributes.client_urls, "published member attributes");
                    self.published.store(true, std::sync::atomic::Ordering::Release);
                    return;
                }
                Err(NodeError::Stopped) => return,
                Err(err) => {
                    tracing::debug!(%err, "publishing member attributes; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// etcd's maxLearners.
const MAX_LEARNERS: usize = 1;

/// How long the leader must have been in touch with members before a
/// strict membership change relies on them (etcd's HealthInterval).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// The leader's view of its members, for --strict-reconfig-check: the
/// members in touch with it, and for how long.
struct PeerActivity {
    leader: u64,
    active: Vec<(u64, Duration)>,
}

impl PeerActivity {
    /// In touch for `HEALTH_INTERVAL` (etcd's numConnectedSince); the leader
    /// counts itself.
    fn healthy(&self, id: u64) -> bool {
        id == self.leader || self.active.iter().any(|(peer, since)| *peer == id && *since >= HEALTH_INTERVAL)
    }

    /// Not in touch at all (etcd's zero ActiveSince).
    fn silent(&self, id: u64) -> bool {
        id != self.leader && !self.active.iter().any(|(peer, _)| *peer == id)
    }
}

/// A membership change, for --strict-reconfig-check.
#[derive(Clone, Copy)]
enum Reconfig {
    Add { is_learner: bool },
    Promote,
    Remove(u64),
}

/// etcd's readyPercent: a learner may be promoted once its log holds this
/// much of the leader's.
const LEARNER_READY_FRACTION: f64 = 0.9;

/// Peer URLs must be `http(s)://host:port`, as etcd checks them.
fn check_peer_urls(urls: &[String]) -> Result<(), NodeError> {
    let valid = |url: &str| {
        let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
        let rest = rest.trim_end_matches('/');
        rest.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(|u| valid(u)) {
        return Err(NodeError::BadPeerUrls);
    }
    Ok(())
}
