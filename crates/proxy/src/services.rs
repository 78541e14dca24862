//! The unary and server-streaming RPCs: each is sent to the current
//! upstream member with the caller's metadata, and its answer (or etcd's
//! gRPC error, code and message unchanged) handed back. Keys pass through
//! the namespace both ways. Watch and LeaseKeepAlive, which the proxy
//! coalesces, live in `watch/` and `lease.rs`.

use std::sync::Arc;

use futures::StreamExt;
use keel_proto::etcdserverpb::auth_client::AuthClient;
use keel_proto::etcdserverpb::auth_server::Auth;
use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::cluster_server::Cluster;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::kv_server::Kv;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::maintenance_server::Maintenance;
use keel_proto::etcdserverpb::*;
use keel_proto::v3electionpb::election_client::ElectionClient;
use keel_proto::v3electionpb::election_server::Election;
use keel_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};
use keel_proto::v3lockpb::lock_client::LockClient;
use keel_proto::v3lockpb::lock_server::Lock;
use keel_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::codegen::BoxStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::policy::{Effect, Policy, Refusal};
use crate::upstream::{as_unavailable, endpoint_failed, forwarded};
use crate::Shared;

/// Upstream answers are as large as the cluster makes them (a big range
/// may exceed tonic's 4 MiB default); the proxy imposes no limit of its own.
const UNLIMITED: usize = usize::MAX;

/// Every service but Watch and the keep-alive stream, on one shared state.
#[derive(Clone)]
pub(crate) struct Forward(pub(crate) Arc<Shared>);

/// One unary RPC passed through: `$idempotent` says whether it may be
/// repeated on another member after that member failed mid-call.
macro_rules! pass {
    ($method:ident, $client:ident, $req:ty, $resp:ty, $idempotent:expr, $effect:expr) => {
        // Spelled as `#[async_trait]` expands an `async fn`: the attribute
        // cannot see into a macro's output.
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            request: Request<$req>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                self.0.check(self.0.policy.effect($effect))?;
                let answer = self
                    .0
                    .upstream
                    .unary(request, $idempotent, |channel, request| async move {
                        $client::new(channel).max_decoding_message_size(UNLIMITED).$method(request).await
                    })
                    .await;
                // Auth and membership changes: the cache's identities are
                // proven again from scratch.
                if matches!($effect, Effect::ClusterWide { changes: true }) {
                    if let Some(cache) = &self.0.cache {
                        cache.clear();
                    }
                }
                answer
            })
        }
    };
}

/// One Maintenance call, sent to the member the caller named under
/// `keel-member` metadata, else to the leader (see `upstream.rs`).
macro_rules! targeted {
    ($method:ident, $req:ty, $resp:ty, $idempotent:expr, $effect:expr) => {
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            request: Request<$req>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let effect = $effect(request.get_ref());
                self.0.check(self.0.policy.effect(effect))?;
                self.targeted(request, $idempotent, |channel, request| async move {
                    MaintenanceClient::new(channel).max_decoding_message_size(UNLIMITED).$method(request).await
                })
                .await
            })
        }
    };
}

impl Forward {
    /// A Maintenance call for one member (named, or the leader): no
    /// failover to another member, whose answer would be about itself;
    /// a call without effect is tried once more after a failure, on the
    /// member it then resolves to (the leader may have moved).
    async fn targeted<Req: Clone, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        idempotent: bool,
        mut call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnMut(Channel, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let metadata = forwarded(request.metadata());
        let incoming = request.metadata().clone();
        let message = request.into_inner();
        let attempts = if idempotent { 2 } else { 1 };
        let mut last = Status::unavailable("no upstream endpoint");
        for _ in 0..attempts {
            let channel = self.0.upstream.member_channel(&incoming).await?;
            let mut outgoing = Request::new(message.clone());
            *outgoing.metadata_mut() = metadata.clone();
            match call(channel, outgoing).await {
                Ok(response) => return Ok(Response::new(response.into_inner())),
                Err(status) if endpoint_failed(&status) => last = as_unavailable(status),
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }

    /// A unary call whose request and response go through the namespace.
    async fn mapped<Req: Clone, Resp, F, Fut>(
        &self,
        mut request: Request<Req>,
        idempotent: bool,
        up: impl FnOnce(&crate::namespace::Namespace, &mut Req),
        down: impl FnOnce(&crate::namespace::Namespace, &mut Resp),
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnMut(Channel, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let namespace = &self.0.namespace;
        if !namespace.is_empty() {
            up(namespace, request.get_mut());
        }
        let mut response = self.0.upstream.unary(request, idempotent, call).await?;
        if !namespace.is_empty() {
            down(namespace, response.get_mut());
        }
        Ok(response)
    }

    /// Opens a server stream upstream; its messages and its end (etcd's
    /// error included) are relayed as they come.
    async fn stream<Req, Resp, F, Fut>(&self, request: Request<Req>, open: F) -> Result<Streaming<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Streaming<Resp>>, Status>>,
    {
        let metadata = forwarded(request.metadata());
        let mut outgoing = Request::new(request.into_inner());
        *outgoing.metadata_mut() = metadata;
        let picked = self.0.upstream.pick();
        match open(picked.channel.clone(), outgoing).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if endpoint_failed(&status) => {
                self.0.upstream.failed(&picked);
                Err(as_unavailable(status))
            }
            Err(status) => Err(status),
        }
    }
}

impl Forward {
    /// Opens a server stream on the member a Maintenance call is for.
    async fn targeted_stream<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        open: F,
    ) -> Result<Streaming<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Streaming<Resp>>, Status>>,
    {
        let channel = self.0.upstream.member_channel(request.metadata()).await?;
        let metadata = forwarded(request.metadata());
        let mut outgoing = Request::new(request.into_inner());
        *outgoing.metadata_mut() = metadata;
        open(channel, outgoing).await.map(Response::into_inner).map_err(|status| {
            if endpoint_failed(&status) {
                as_unavailable(status)
            } else {
                status
            }
        })
    }
}

fn relay<T: Send + 'static>(stream: Streaming<T>, map: impl Fn(&mut T) + Send + 'static) -> BoxStream<T> {
    Box::pin(stream.map(move |item| {
        item.map(|mut message| {
            map(&mut message);
            message
        })
        .map_err(|status| if endpoint_failed(&status) { as_unavailable(status) } else { status })
    }))
}

#[tonic::async_trait]
impl Kv for Forward {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.0.check(self.0.policy.read(&request.get_ref().key, &request.get_ref().range_end))?;
        crate::cache::range(self, request).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.0.check(self.0.policy.write(&request.get_ref().key, &[]))?;
        let key = self.0.cache.as_ref().map(|_| request.get_ref().key.clone());
        let response = self
            .mapped(
                request,
                false,
                |ns, r| ns.put(r),
                |ns, r| ns.put_response(r),
                |channel, request| async move {
                    KvClient::new(channel).max_decoding_message_size(UNLIMITED).put(request).await
                },
            )
            .await?;
        if let (Some(cache), Some(key)) = (&self.0.cache, key) {
            cache.written(&self.0.namespace, &key, &[], revision(&response.get_ref().header));
        }
        Ok(response)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.0.check(self.0.policy.write(&request.get_ref().key, &request.get_ref().range_end))?;
        let range = self.0.cache.as_ref().map(|_| (request.get_ref().key.clone(), request.get_ref().range_end.clone()));
        let response = self
            .mapped(
                request,
                false,
                |ns, r| ns.delete(r),
                |ns, r| ns.delete_response(r),
                |channel, request| async move {
                    KvClient::new(channel).max_decoding_message_size(UNLIMITED).delete_range(request).await
                },
            )
            .await?;
        if let (Some(cache), Some((key, end))) = (&self.0.cache, range) {
            cache.written(&self.0.namespace, &key, &end, revision(&response.get_ref().header));
        }
        Ok(response)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.0.check(self.0.policy.txn(request.get_ref()))?;
        // Read-only txns are forwarded uncached; writes hold back hits on
        // the prefixes they touch until the cache's watch has them.
        let txn = self.0.cache.as_ref().map(|_| request.get_ref().clone());
        let response = self
            .mapped(
                request,
                false,
                |ns, r| ns.txn(r),
                |ns, r| ns.txn_response(r),
                |channel, request| async move {
                    KvClient::new(channel).max_decoding_message_size(UNLIMITED).txn(request).await
                },
            )
            .await?;
        if let (Some(cache), Some(txn)) = (&self.0.cache, txn) {
            cache.written_txn(&self.0.namespace, &txn, revision(&response.get_ref().header));
        }
        Ok(response)
    }

    pass!(compact, KvClient, CompactionRequest, CompactionResponse, false, Effect::ClusterWide { changes: true });
}

fn revision(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

impl Forward {
    /// A Range sent upstream (the cache's misses and checks too).
    pub(crate) async fn forward_range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.mapped(
            request,
            true,
            |ns, r| ns.range(r),
            |ns, r| ns.range_response(r),
            |channel, request| async move {
                KvClient::new(channel).max_decoding_message_size(UNLIMITED).range(request).await
            },
        )
        .await
    }
}

/// The Lease service's unary calls; `lease.rs` adds LeaseKeepAlive.
impl Forward {
    pub(crate) async fn grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.0.check(self.0.policy.effect(Effect::Write))?;
        self.0
            .upstream
            .unary(
                request,
                false,
                |channel, request| async move { LeaseClient::new(channel).lease_grant(request).await },
            )
            .await
    }

    pub(crate) async fn revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        // Revoking twice is harmless (the second finds no lease), but a
        // client must not be told "not found" for its own first revoke.
        self.0.check(self.0.policy.effect(Effect::Write))?;
        let response =
            self.0
                .upstream
                .unary(request, false, |channel, request| async move {
                    LeaseClient::new(channel).lease_revoke(request).await
                })
                .await?;
        // The lease's keys went with it, wherever they were.
        if let Some(cache) = &self.0.cache {
            cache.written_anywhere(revision(&response.get_ref().header));
        }
        Ok(response)
    }

    pub(crate) async fn time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let mut response = self
            .mapped(
                request,
                true,
                |_, _| {},
                |ns, r: &mut LeaseTimeToLiveResponse| r.keys.iter_mut().for_each(|key| ns.strip(key)),
                |channel, request| async move {
                    LeaseClient::new(channel).max_decoding_message_size(UNLIMITED).lease_time_to_live(request).await
                },
            )
            .await?;
        // A lease's key list names keys of any prefix: those outside the
        // allowed ones are left out, as a read of them would be refused.
        if !self.0.policy.allow_prefixes.is_empty() {
            response.get_mut().keys.retain(|key| self.0.policy.read(key, &[]).is_ok());
        }
        Ok(response)
    }

    pub(crate) async fn leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.0
            .upstream
            .unary(request, true, |channel, request| async move {
                LeaseClient::new(channel).max_decoding_message_size(UNLIMITED).lease_leases(request).await
            })
            .await
    }
}

#[tonic::async_trait]
impl Cluster for Forward {
    pass!(member_add, ClusterClient, MemberAddRequest, MemberAddResponse, false, Effect::ClusterWide { changes: true });
    pass!(
        member_remove,
        ClusterClient,
        MemberRemoveRequest,
        MemberRemoveResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(
        member_update,
        ClusterClient,
        MemberUpdateRequest,
        MemberUpdateResponse,
        false,
        Effect::ClusterWide { changes: true }
    );

    /// As etcd's proxy without `--resolver-prefix`: the proxy lists itself
    /// (no id, no header, its host name and advertised URL), so clients
    /// that sync their endpoints from the member list stay on the proxy.
    ///
    /// With `--resolver-prefix`, every live proxy registered under the
    /// prefix instead (itself among them), as etcd's proxy lists them;
    /// itself alone while none is registered yet.
    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        if let Some(prefix) = &self.0.resolver_prefix {
            let members = crate::register::registered(&self.0, prefix).await?;
            if !members.is_empty() {
                return Ok(Response::new(MemberListResponse { header: None, members }));
            }
        }
        let member = Member {
            name: self.0.host_name.clone(),
            client_ur_ls: vec![self.0.advertise_client_url.clone()],
            ..Default::default()
        };
        Ok(Response::new(MemberListResponse { header: None, members: vec![member] }))
    }
    pass!(
        member_promote,
        ClusterClient,
        MemberPromoteRequest,
        MemberPromoteResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
}

#[tonic::async_trait]
impl Maintenance for Forward {
    targeted!(alarm, AlarmRequest, AlarmResponse, false, |r: &AlarmRequest| Effect::ClusterWide {
        changes: r.action != alarm_request::AlarmAction::Get as i32
    });
    targeted!(status, StatusRequest, StatusResponse, true, |_: &StatusRequest| Effect::Read);
    targeted!(defragment, DefragmentRequest, DefragmentResponse, false, |_: &DefragmentRequest| {
        Effect::ClusterWide { changes: true }
    });
    targeted!(hash, HashRequest, HashResponse, true, |_: &HashRequest| Effect::Read);
    targeted!(hash_kv, HashKvRequest, HashKvResponse, true, |_: &HashKvRequest| Effect::Read);
    targeted!(move_leader, MoveLeaderRequest, MoveLeaderResponse, false, |_: &MoveLeaderRequest| {
        Effect::ClusterWide { changes: true }
    });
    pass!(
        downgrade,
        MaintenanceClient,
        DowngradeRequest,
        DowngradeResponse,
        false,
        Effect::ClusterWide { changes: true }
    );

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        self.0.check(self.0.policy.effect(Effect::ClusterWide { changes: false }))?;
        let stream = self
            .targeted_stream(request, |channel, request| async move {
                MaintenanceClient::new(channel).max_decoding_message_size(UNLIMITED).snapshot(request).await
            })
            .await?;
        Ok(Response::new(relay(stream, |_| {})))
    }
}

#[tonic::async_trait]
impl Auth for Forward {
    pass!(auth_enable, AuthClient, AuthEnableRequest, AuthEnableResponse, false, Effect::ClusterWide { changes: true });
    pass!(
        auth_disable,
        AuthClient,
        AuthDisableRequest,
        AuthDisableResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(auth_status, AuthClient, AuthStatusRequest, AuthStatusResponse, true, Effect::Read);
    pass!(authenticate, AuthClient, AuthenticateRequest, AuthenticateResponse, true, Effect::Read);
    pass!(user_add, AuthClient, AuthUserAddRequest, AuthUserAddResponse, false, Effect::ClusterWide { changes: true });
    pass!(user_get, AuthClient, AuthUserGetRequest, AuthUserGetResponse, true, Effect::ClusterWide { changes: false });
    pass!(
        user_list,
        AuthClient,
        AuthUserListRequest,
        AuthUserListResponse,
        true,
        Effect::ClusterWide { changes: false }
    );
    pass!(
        user_delete,
        AuthClient,
        AuthUserDeleteRequest,
        AuthUserDeleteResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(
        user_change_password,
        AuthClient,
        AuthUserChangePasswordRequest,
        AuthUserChangePasswordResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(
        user_grant_role,
        AuthClient,
        AuthUserGrantRoleRequest,
        AuthUserGrantRoleResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(
        user_revoke_role,
        AuthClient,
        AuthUserRevokeRoleRequest,
        AuthUserRevokeRoleResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(role_add, AuthClient, AuthRoleAddRequest, AuthRoleAddResponse, false, Effect::ClusterWide { changes: true });
    pass!(role_get, AuthClient, AuthRoleGetRequest, AuthRoleGetResponse, true, Effect::ClusterWide { changes: false });
    pass!(
        role_list,
        AuthClient,
        AuthRoleListRequest,
        AuthRoleListResponse,
        true,
        Effect::ClusterWide { changes: false }
    );
    pass!(
        role_delete,
        AuthClient,
        AuthRoleDeleteRequest,
        AuthRoleDeleteResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(
        role_grant_permission,
        AuthClient,
        AuthRoleGrantPermissionRequest,
        AuthRoleGrantPermissionResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
    pass!(
        role_revoke_permission,
        AuthClient,
        AuthRoleRevokePermissionRequest,
        AuthRoleRevokePermissionResponse,
        false,
        Effect::ClusterWide { changes: true }
    );
}

#[tonic::async_trait]
impl Lock for Forward {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.0.check(self.0.policy.name(&request.get_ref().name, true))?;
        self.mapped(
            request,
            false,
            |ns, r: &mut LockRequest| r.name = ns.key(&r.name),
            |ns, r: &mut LockResponse| ns.strip(&mut r.key),
            |channel, request| async move { LockClient::new(channel).lock(request).await },
        )
        .await
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        self.0.check(self.0.policy.write(&request.get_ref().key, &[]))?;
        self.mapped(
            request,
            false,
            |ns, r: &mut UnlockRequest| r.key = ns.key(&r.key),
            |_, _| {},
            |channel, request| async move { LockClient::new(channel).unlock(request).await },
        )
        .await
    }
}

/// Proclaim and Resign change the leader's key.
fn leader_key(policy: &Policy, leader: &Option<LeaderKey>) -> Result<(), Refusal> {
    match leader {
        Some(leader) => policy.write(&leader.key, &[]),
        None => policy.effect(Effect::Write),
    }
}

fn leader_up(ns: &crate::namespace::Namespace, leader: &mut Option<LeaderKey>) {
    if let Some(leader) = leader {
        leader.name = ns.key(&leader.name);
        leader.key = ns.key(&leader.key);
    }
}

#[tonic::async_trait]
impl Election for Forward {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        self.0.check(self.0.policy.name(&request.get_ref().name, true))?;
        self.mapped(
            request,
            false,
            |ns, r: &mut CampaignRequest| r.name = ns.key(&r.name),
            |ns, r: &mut CampaignResponse| {
                if let Some(leader) = &mut r.leader {
                    ns.strip(&mut leader.name);
                    ns.strip(&mut leader.key);
                }
            },
            |channel, request| async move { ElectionClient::new(channel).campaign(request).await },
        )
        .await
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        self.0.check(leader_key(&self.0.policy, &request.get_ref().leader))?;
        self.mapped(
            request,
            false,
            |ns, r: &mut ProclaimRequest| leader_up(ns, &mut r.leader),
            |_, _| {},
            |channel, request| async move { ElectionClient::new(channel).proclaim(request).await },
        )
        .await
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        self.0.check(self.0.policy.name(&request.get_ref().name, false))?;
        self.mapped(
            request,
            true,
            |ns, r: &mut LeaderRequest| r.name = ns.key(&r.name),
            |ns, r: &mut LeaderResponse| {
                if let Some(kv) = &mut r.kv {
                    ns.strip_kv(kv);
                }
            },
            |channel, request| async move { ElectionClient::new(channel).leader(request).await },
        )
        .await
    }

    async fn observe(
        &self,
        mut request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        self.0.check(self.0.policy.name(&request.get_ref().name, false))?;
        let namespace = self.0.namespace.clone();
        if !namespace.is_empty() {
            let name = namespace.key(&request.get_ref().name);
            request.get_mut().name = name;
        }
        let stream = self
            .stream(request, |channel, request| async move { ElectionClient::new(channel).observe(request).await })
            .await?;
        Ok(Response::new(relay(stream, move |response: &mut LeaderResponse| {
            if let Some(kv) = &mut response.kv {
                namespace.strip_kv(kv);
            }
        })))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        self.0.check(leader_key(&self.0.policy, &request.get_ref().leader))?;
        self.mapped(
            request,
            false,
            |ns, r: &mut ResignRequest| leader_up(ns, &mut r.leader),
            |_, _| {},
            |channel, request| async move { ElectionClient::new(channel).resign(request).await },
        )
        .await
    }
}
