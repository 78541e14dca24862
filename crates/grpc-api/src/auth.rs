//! The Auth service: decode, resolve the caller, call the member, map
//! errors. Changes go through raft and are checked for root rights when
//! applied; reads are answered after a read index.

use std::sync::Arc;

use keel_node::{Member, NodeError};
use keel_proto::etcdserverpb::auth_server::Auth;
use keel_proto::etcdserverpb::*;
use keel_proto::keelpb::internal_raft_request::Request as Raft;
use tonic::{Request, Response, Status};

use crate::errors::node_error;
use crate::identity::caller;

pub struct AuthService {
    member: Arc<Member>,
}

impl AuthService {
    pub fn new(member: Arc<Member>) -> Self {
        AuthService { member }
    }

    /// A change through raft as the caller of `request`, answered with the header.
    async fn change<T>(&self, request: Request<T>, to_raft: impl FnOnce(T) -> Raft) -> Result<ResponseHeader, Status> {
        let who = caller(&self.member, &request).await?;
        self.member.auth_change(&who, to_raft(request.into_inner())).await.map_err(node_error)
    }
}

/// A user or role name Keel will store: etcd takes any string, but a name
/// travels in every token and log entry, so absurd ones are refused.
const MAX_NAME_BYTES: usize = 4096;

fn check_name(name: &str, empty: keel_auth::AuthError) -> Result<(), Status> {
    if name.is_empty() {
        return Err(node_error(NodeError::Auth(empty)));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!("etcdserver: name is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(())
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self.change(request, Raft::AuthEnable).await?;
        Ok(Response::new(AuthEnableResponse { header: Some(header) }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self.change(request, Raft::AuthDisable).await?;
        Ok(Response::new(AuthDisableResponse { header: Some(header) }))
    }

    async fn auth_status(&self, _request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        let (enabled, auth_revision) = self.member.auth_status().await.map_err(node_error)?;
        Ok(Response::new(AuthStatusResponse { header: Some(self.member.header()), enabled, auth_revision }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let request = request.into_inner();
        if request.name.len() > MAX_NAME_BYTES {
            return Err(node_error(NodeError::Auth(keel_auth::AuthError::AuthFailed)));
        }
        let token = self.member.authenticate(request.name, request.password).await.map_err(node_error)?;
        Ok(Response::new(AuthenticateResponse { header: Some(self.member.header()), token }))
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        check_name(&request.name, keel_auth::AuthError::UserEmpty)?;
        let header = self.member.auth_user_add(&who, request).await.map_err(node_error)?;
        Ok(Response::new(AuthUserAddResponse { header: Some(header) }))
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let roles = self.member.auth_user_get(&who, &request.into_inner().name).await.map_err(node_error)?;
        Ok(Response::new(AuthUserGetResponse { header: Some(self.member.header()), roles }))
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let users = self.member.auth_user_list(&who).await.map_err(node_error)?;
        Ok(Response::new(AuthUserListResponse { header: Some(self.member.header()), users }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self.change(request, Raft::AuthUserDelete).await?;
        Ok(Response::new(AuthUserDeleteResponse { header: Some(header) }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let header = self.member.auth_change_password(&who, request.into_inner()).await.map_err(node_error)?;
        Ok(Response::new(AuthUserChangePasswordResponse { header: Some(header) }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self.change(request, Raft::AuthUserGrantRole).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header: Some(header) }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self.change(request, Raft::AuthUserRevokeRole).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header: Some(header) }))
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        check_name(&request.get_ref().name, keel_auth::AuthError::RoleEmpty)?;
        let header = self.change(request, Raft::AuthRoleAdd).await?;
        Ok(Response::new(AuthRoleAddResponse { header: Some(header) }))
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let perm = self.member.auth_role_get(&who, &request.into_inner().role).await.map_err(node_error)?;
        Ok(Response::new(AuthRoleGetResponse { header: Some(self.member.header()), perm }))
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let roles = self.member.auth_role_list(&who).await.map_err(node_error)?;
        Ok(Response::new(AuthRoleListResponse { header: Some(self.member.header()), roles }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self.change(request, Raft::AuthRoleDelete).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header: Some(header) }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let header = self.change(request, Raft::AuthRoleGrantPermission).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header: Some(header) }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let header = self.change(request, Raft::AuthRoleRevokePermission).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header: Some(header) }))
    }
}
