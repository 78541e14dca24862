//! The Lease service's requests. Grants and revokes go through raft; keep-
//! alives and time-to-live are answered by the leader's lease manager (the
//! primary), to which any other member forwards them.

use keel_auth::AuthInfo;
use keel_lease_manager::{LeaseError, Lessor, TimeToLive};
use keel_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse};
use keel_proto::keelpb::internal_raft_request::Request;

use super::Member;
use crate::proposals::RETRY_AFTER_NO_LEADER;
use crate::NodeError;

impl Member {
    /// Grants a lease through raft; id 0 asks the member to choose one.
    /// As etcd since its 2026 security releases, only an authenticated
    /// caller may grant a lease while auth is on.
    pub async fn lease_grant(
        &self,
        who: &AuthInfo,
        mut request: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, NodeError> {
        self.check_authenticated(who)?;
        if request.id == 0 {
            // etcd draws lease ids from its request id generator, kept positive.
            request.id = (self.proposals.next_tag() & i64::MAX as u64) as i64;
        }
        self.write(who, Request::LeaseGrant(request)).await
    }

    /// Checked when applied: write permission on every key attached.
    pub async fn lease_revoke(
        &self,
        who: &AuthInfo,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, NodeError> {
        self.check_authenticated(who)?;
        self.write(who, Request::LeaseRevoke(request)).await
    }

    /// A keep-alive: the lease's deadline moves to now + TTL; returns the TTL.
    /// Only the leader's lease manager keeps time, so on any other member (or
    /// on a leader still applying earlier terms) it is forwarded to the
    /// leader, and retried until the request timeout, as etcd does. The
    /// primary acknowledges only once a read index confirms it still leads
    /// (etcd#15247): a leader cut off from the others goes on believing it
    /// leads until check-quorum demotes it, while a new leader may already
    /// have expired the lease.
    /// With auth on, the caller must be able to write every key attached
    /// (etcd's `checkLeaseRenew`): keeping a lease alive keeps them.
    pub async fn lease_renew(&self, who: &AuthInfo, id: i64) -> Result<i64, NodeError> {
        self.check_lease_keys(who, id, keel_auth::Access::Write)?;
        self.at_lease_primary(
            |lessor, member| lessor.renew(id, member.now()),
            |leader| self.links.lease_renew(leader, id),
            true,
        )
        .await
    }

    /// A lease's remaining and granted TTL, from the primary after a read
    /// index: the leader may apply the log later than the member that
    /// acknowledged a revoke, and must not report the lease alive after it.
    /// With auth on, listing the keys needs reading each of them.
    pub async fn lease_time_to_live(&self, who: &AuthInfo, id: i64, keys: bool) -> Result<TimeToLive, NodeError> {
        if keys {
            self.check_lease_keys(who, id, keel_auth::Access::Read)?;
        } else {
            self.check_authenticated(who)?;
        }
        self.at_lease_primary(
            |lessor, member| lessor.time_to_live(id, member.now(), keys),
            |leader| self.links.lease_time_to_live(leader, id, keys),
            true,
        )
        .await
    }

    /// Whether `who` may `access` every key attached to lease `id` (this
    /// member's lease manager knows them all: attaching is applied
    /// everywhere). Root may always.
    fn check_lease_keys(&self, who: &AuthInfo, id: i64, access: keel_auth::Access) -> Result<(), NodeError> {
        let state = self.auth.state();
        if !state.is_enabled() {
            return Ok(());
        }
        if state.check_admin_info(who).is_ok() {
            return Ok(());
        }
        self.check_authenticated(who)?;
        let keys = self.lessor.lock().keys(id).unwrap_or_default();
        for key in keys {
            state.check(&who.user, who.revision, &key, &[], access).map_err(NodeError::Auth)?;
        }
        Ok(())
    }

    /// Listing leases: root, or a caller who may read every leased key
    /// (etcd's `checkLeaseLeases`).
    pub fn check_lease_listing(&self, who: &AuthInfo) -> Result<(), NodeError> {
        let state = self.auth.state();
        if !state.is_enabled() || state.check_admin_info(who).is_ok() {
            return Ok(());
        }
        self.check_authenticated(who)?;
        let lessor = self.lessor.lock();
        for id in lessor.leases() {
            for key in lessor.keys(id).unwrap_or_default() {
                state.check(&who.user, who.revision, &key, &[], keel_auth::Access::Read).map_err(NodeError::Auth)?;
            }
        }
        Ok(())
    }

    /// A keep-alive forwarded by another member: answered here or refused
    /// with `NotPrimary`, never forwarded again.
    pub async fn lease_renew_here(&self, cluster_id: u64, id: i64) -> Result<i64, NodeError> {
        self.forwarded_to_primary(cluster_id).await?;
        self.lessor_in_step().renew(id, self.now()).map_err(NodeError::Lease)
    }

    /// A time-to-live question forwarded by another member: answered here
    /// (after a read index, see [`Member::lease_time_to_live`]) or refused
    /// with `NotPrimary`.
    pub async fn lease_time_to_live_here(&self, cluster_id: u64, id: i64, keys: bool) -> Result<TimeToLive, NodeError> {
        self.forwarded_to_primary(cluster_id).await?;
        self.lessor_in_step().time_to_live(id, self.now(), keys).map_err(NodeError::Lease)
    }

    /// A lease call forwarded by another member of this cluster: when this
    /// member's lease manager is primary, a read index first confirms it
    /// still leads (a demoted one then refuses with `NotPrimary`).
    async fn forwarded_to_primary(&self, cluster_id: u64) -> Result<(), NodeError> {
        self.check_cluster(cluster_id)?;
        if self.lessor_in_step().is_primary() {
            self.confirm_leadership().await?;
        }
        Ok(())
    }

    pub fn leases(&self) -> Vec<i64> {
        self.lessor.lock().leases()
    }

    /// Waits for a read index, then checks this member still leads.
    async fn confirm_leadership(&self) -> Result<(), NodeError> {
        self.proposals.wait_linearizable().await?;
        if self.raft.status().is_leader() {
            Ok(())
        } else {
            Err(NodeError::Lease(LeaseError::NotPrimary))
        }
    }

    /// Runs `here` on this member's lease manager if it is the primary (after
    /// a read index confirms it still leads, when `confirm`), else `forward`
    /// to the leader; retries while there is no primary yet.
    async fn at_lease_primary<T, F>(
        &self,
        here: impl Fn(&mut Lessor, &Member) -> Result<T, LeaseError>,
        forward: impl Fn(u64) -> F,
        confirm: bool,
    ) -> Result<T, NodeError>
    where
        F: std::future::Future<Output = Result<T, NodeError>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        loop {
            if confirm && self.lessor_in_step().is_primary() {
                match self.confirm_leadership().await {
                    // Demoted meanwhile: `here` refuses and the leader is asked.
                    Ok(()) | Err(NodeError::Lease(LeaseError::NotPrimary) | NodeError::NoLeader) => {}
                    Err(err) => return Err(err),
                }
            }
            match here(&mut self.lessor_in_step(), self) {
                Err(LeaseError::NotPrimary) => {}
                answer => return answer.map_err(NodeError::Lease),
            }
            let leader = self.raft.status().leader();
            if leader != 0 && leader != self.member_id {
                match forward(leader).await {
                    Err(NodeError::NotLeader) => {}
                    Err(err @ NodeError::Lease(_)) => return Err(err),
                    Err(err) => tracing::debug!(%err, leader = %format!("{leader:x}"), "forwarding a lease call"),
                    Ok(answer) => return Ok(answer),
                }
            }
            if tokio::time::Instant::now() + RETRY_AFTER_NO_LEADER >= deadline {
                return Err(if self.raft.status().leader() == 0 { NodeError::NoLeader } else { NodeError::Timeout });
            }
            tokio::time::sleep(RETRY_AFTER_NO_LEADER).await;
        }
    }

    /// The lease manager, in step with raft right now (the expiry loop
    /// would only notice a change on its next tick).
    fn lessor_in_step(&self) -> parking_lot::MutexGuard<'_, Lessor> {
        let mut lessor = self.lessor.lock();
        self.lease_clock.align(&mut lessor);
        lessor
    }
}
