//! Managing authentication: turning it on and off, users and roles (the
//! Auth service's calls other than `Authenticate`, which [`crate::auth`]
//! makes when connecting).

use keel_proto::authpb::{permission::Type as PermissionType, Permission, UserAddOptions};
use keel_proto::etcdserverpb::auth_client::AuthClient;
use keel_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse, AuthRoleAddRequest,
    AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse, AuthUserListRequest,
    AuthUserListResponse, AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse,
};

use crate::client::{Deadline, Retry};
use crate::{Client, ClientError};

/// One Auth call: `$method` of the stub with `$request`, retried as `$retry`.
macro_rules! auth_call {
    ($self:ident, $retry:expr, $method:ident, $request:expr) => {{
        let request = $request;
        $self
            .call($retry, Deadline::Request, |channel| {
                let request = request.clone();
                async move { AuthClient::new(channel).$method(request).await.map(tonic::Response::into_inner) }
            })
            .await
    }};
}

impl Client {
    /// Whether the client holds a token: false without credentials, and
    /// with credentials when the server had authentication off at login
    /// (etcdctl then warns that it "is not enabled").
    pub fn has_token(&self) -> bool {
        self.inner.token.is_set()
    }

    /// Turns authentication on; the server refuses while user `root` lacks
    /// role `root`.
    pub async fn auth_enable(&self) -> Result<AuthEnableResponse, ClientError> {
        auth_call!(self, Retry::IfNotSent, auth_enable, AuthEnableRequest {})
    }

    pub async fn auth_disable(&self) -> Result<AuthDisableResponse, ClientError> {
        auth_call!(self, Retry::IfNotSent, auth_disable, AuthDisableRequest {})
    }

    /// Adds a user; with `no_password` the user can only be authenticated
    /// by other means (TLS common name), and `password` is ignored.
    pub async fn user_add(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
        no_password: bool,
    ) -> Result<AuthUserAddResponse, ClientError> {
        let request = AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: Some(UserAddOptions { no_password }),
            hashed_password: String::new(),
        };
        auth_call!(self, Retry::IfNotSent, user_add, request)
    }

    pub async fn user_delete(&self, name: impl Into<String>) -> Result<AuthUserDeleteResponse, ClientError> {
        auth_call!(self, Retry::IfNotSent, user_delete, AuthUserDeleteRequest { name: name.into() })
    }

    /// The user's roles.
    pub async fn user_get(&self, name: impl Into<String>) -> Result<AuthUserGetResponse, ClientError> {
        auth_call!(self, Retry::Always, user_get, AuthUserGetRequest { name: name.into() })
    }

    pub async fn user_list(&self) -> Result<AuthUserListResponse, ClientError> {
        auth_call!(self, Retry::Always, user_list, AuthUserListRequest {})
    }

    pub async fn user_change_password(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<AuthUserChangePasswordResponse, ClientError> {
        let request = AuthUserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
            hashed_password: String::new(),
        };
        auth_call!(self, Retry::IfNotSent, user_change_password, request)
    }

    pub async fn user_grant_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<AuthUserGrantRoleResponse, ClientError> {
        auth_call!(
            self,
            Retry::IfNotSent,
            user_grant_role,
            AuthUserGrantRoleRequest { user: user.into(), role: role.into() }
        )
    }

    pub async fn user_revoke_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<AuthUserRevokeRoleResponse, ClientError> {
        auth_call!(
            self,
            Retry::IfNotSent,
            user_revoke_role,
            AuthUserRevokeRoleRequest { name: user.into(), role: role.into() }
        )
    }

    pub async fn role_add(&self, name: impl Into<String>) -> Result<AuthRoleAddResponse, ClientError> {
        auth_call!(self, Retry::IfNotSent, role_add, AuthRoleAddRequest { name: name.into() })
    }

    pub async fn role_delete(&self, name: impl Into<String>) -> Result<AuthRoleDeleteResponse, ClientError> {
        auth_call!(self, Retry::IfNotSent, role_delete, AuthRoleDeleteRequest { role: name.into() })
    }

    /// The role's key permissions.
    pub async fn role_get(&self, name: impl Into<String>) -> Result<AuthRoleGetResponse, ClientError> {
        auth_call!(self, Retry::Always, role_get, AuthRoleGetRequest { role: name.into() })
    }

    pub async fn role_list(&self) -> Result<AuthRoleListResponse, ClientError> {
        auth_call!(self, Retry::Always, role_list, AuthRoleListRequest {})
    }

    /// Grants `kind` access to `key` (a single key when `range_end` is
    /// empty, else `[key, range_end)`; `range_end` `"\0"` means every key
    /// from `key` on).
    pub async fn role_grant_permission(
        &self,
        name: impl Into<String>,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
        kind: PermissionType,
    ) -> Result<AuthRoleGrantPermissionResponse, ClientError> {
        let perm = Permission { perm_type: kind as i32, key: key.into(), range_end: range_end.into() };
        let request = AuthRoleGrantPermissionRequest { name: name.into(), perm: Some(perm) };
        auth_call!(self, Retry::IfNotSent, role_grant_permission, request)
    }

    /// Revokes the permission granted on exactly `[key, range_end)`.
    pub async fn role_revoke_permission(
        &self,
        name: impl Into<String>,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
    ) -> Result<AuthRoleRevokePermissionResponse, ClientError> {
        let request =
            AuthRoleRevokePermissionRequest { role: name.into(), key: key.into(), range_end: range_end.into() };
        auth_call!(self, Retry::IfNotSent, role_revoke_permission, request)
    }
}
