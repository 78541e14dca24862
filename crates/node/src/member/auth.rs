//! The Auth service's requests, and who a client is. Changes go through
//! raft (checked for admin rights when applied, on every member); reads of
//! the auth state are served here after a read index, so they see every
//! change acknowledged before them.

use std::time::Duration;

use keel_auth::{AuthError, AuthInfo};
use keel_proto::authpb::Permission;
use keel_proto::etcdserverpb::{AuthUserAddRequest, AuthUserChangePasswordRequest, ResponseHeader};
use keel_proto::keelpb::internal_raft_request::Request;
use keel_proto::keelpb::InternalAuthenticateRequest;
use rand::Rng as _;

use super::Member;
use crate::auth::AuthStore;
use crate::proposals::Applied;
use crate::NodeError;

/// A login is tried again when the auth state changed between checking its
/// password and applying it (a new password may have made it wrong); etcd
/// retries without bound, Keel a few times.
const LOGIN_ATTEMPTS: usize = 5;

/// How long a request with a token from a login this member has not
/// applied yet waits for it.
const TOKEN_WAIT: Duration = Duration::from_millis(50);
const TOKEN_WAITS: usize = 40;

impl Member {
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// Who a client request runs as: the user of its token; without one,
    /// the common name of its verified client certificate (when the
    /// listener asks for them, etcd's --client-cert-auth); else nobody.
    pub async fn auth_info(&self, token: Option<&str>, certificate_name: Option<&str>) -> Result<AuthInfo, NodeError> {
        let Some(token) = token else {
            return Ok(match certificate_name {
                Some(name) if self.auth.is_enabled() => self.auth.info_from_certificate(name),
                _ => AuthInfo::default(),
            });
        };
        for _ in 0..TOKEN_WAITS {
            match self
                .auth
                .info_from_token(token, self.now(), self.clock.unix_millis() / 1000)
                .map_err(NodeError::Auth)?
            {
                Some(info) => return Ok(info),
                // From a login this member has not applied yet.
                None => tokio::time::sleep(TOKEN_WAIT).await,
            }
        }
        Err(NodeError::Auth(AuthError::InvalidAuthToken))
    }

    /// Refuses a caller that names no user while auth is on.
    pub fn check_authenticated(&self, who: &AuthInfo) -> Result<(), NodeError> {
        if who.user.is_empty() && self.auth.is_enabled() {
            return Err(NodeError::Auth(AuthError::UserEmpty));
        }
        Ok(())
    }

    /// Refuses a caller without the root role while auth is on.
    pub fn check_admin(&self, who: &AuthInfo) -> Result<(), NodeError> {
        self.auth.state().check_admin_info(who).map_err(NodeError::Auth)
    }

    /// Checks `name`'s password here (bcrypt, off the runtime), then logs
    /// it in through raft, which hands every member the same token.
    pub async fn authenticate(&self, name: String, password: String) -> Result<String, NodeError> {
        self.proposals.wait_linearizable().await?;
        for _ in 0..LOGIN_ATTEMPTS {
            let (hash, checked_at) = self.auth.state().password_hash(&name).map_err(NodeError::Auth)?;
            let password = password.clone();
            let matches = self.offload.run(move || keel_auth::password_matches(&password, &hash)).await?;
            if !matches {
                return Err(NodeError::Auth(AuthError::AuthFailed));
            }
            let simple_token = {
                let mut rng = rand::thread_rng();
                keel_auth::SimpleTokens::random_part(|| rng.gen_range(0..52))
            };
            let login = InternalAuthenticateRequest { name: name.clone(), simple_token };
            let token = match self.proposals.propose(Request::Authenticate(login), None).await? {
                Applied::Auth(Some(token)) => token,
                _ => return Err(NodeError::Corrupt("a login was answered without a token".into())),
            };
            if self.auth.state().revision() == checked_at {
                return Ok(token);
            }
            tracing::info!(user = %name, "the auth state changed while logging in; checking the password again");
        }
        Err(NodeError::Auth(AuthError::AuthOldRevision))
    }

    /// An auth change through raft (anything but adding a user or changing
    /// a password, which [`Member::auth_user_add`] and
    /// [`Member::auth_change_password`] hash first).
    pub async fn auth_change(&self, who: &AuthInfo, request: Request) -> Result<ResponseHeader, NodeError> {
        let header = AuthStore::header_of(who);
        match self.proposals.propose(request, Some(header)).await? {
            Applied::Auth(_) => Ok(self.header()),
            _ => Err(NodeError::Corrupt("an auth change was answered with another kind of response".into())),
        }
    }

    /// Adds a user; the password is hashed here, so raft never carries it.
    pub async fn auth_user_add(
        &self,
        who: &AuthInfo,
        mut request: AuthUserAddRequest,
    ) -> Result<ResponseHeader, NodeError> {
        if request.name.is_empty() {
            return Err(NodeError::Auth(AuthError::UserEmpty));
        }
        let no_password = request.options.as_ref().is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut request.password);
        if !no_password && request.hashed_password.is_empty() {
            request.hashed_password = self.hash(password).await?;
        }
        self.auth_change(who, Request::AuthUserAdd(request)).await
    }

    pub async fn auth_change_password(
        &self,
        who: &AuthInfo,
        mut request: AuthUserChangePasswordRequest,
    ) -> Result<ResponseHeader, NodeError> {
        let password = std::mem::take(&mut request.password);
        if request.hashed_password.is_empty() {
            request.hashed_password = self.hash(password).await?;
        }
        self.auth_change(who, Request::AuthUserChangePassword(request)).await
    }

    async fn hash(&self, password: String) -> Result<String, NodeError> {
        let cost = self.auth.config().bcrypt_cost;
        let hash =
            self.offload.run(move || keel_auth::hash_password(&password, cost)).await?.map_err(NodeError::Auth)?;
        String::from_utf8(hash).map_err(|_| NodeError::Corrupt("bcrypt made a hash that is not text".into()))
    }

    /// Whether auth is on, and the auth revision, as of a read index.
    pub async fn auth_status(&self) -> Result<(bool, u64), NodeError> {
        self.proposals.wait_linearizable().await?;
        let state = self.auth.state();
        Ok((state.is_enabled(), state.revision()))
    }

    /// A user's roles: for root, or the user itself.
    pub async fn auth_user_get(&self, who: &AuthInfo, name: &str) -> Result<Vec<String>, NodeError> {
        self.proposals.wait_linearizable().await?;
        let state = self.auth.state();
        if who.user != name || !state.is_enabled() {
            state.check_admin_info(who).map_err(NodeError::Auth)?;
        }
        Ok(state.user_get(name).map_err(NodeError::Auth)?.to_vec())
    }

    pub async fn auth_user_list(&self, who: &AuthInfo) -> Result<Vec<String>, NodeError> {
        self.proposals.wait_linearizable().await?;
        let state = self.auth.state();
        state.check_admin_info(who).map_err(NodeError::Auth)?;
        Ok(state.user_list())
    }

    /// A role's permissions: for root, or a user holding the role.
    pub async fn auth_role_get(&self, who: &AuthInfo, role: &str) -> Result<Vec<Permission>, NodeError> {
        self.proposals.wait_linearizable().await?;
        let state = self.auth.state();
        let holds = state.user_get(&who.user).is_ok_and(|roles| roles.iter().any(|r| r == role));
        if !holds {
            state.check_admin_info(who).map_err(NodeError::Auth)?;
        }
        Ok(state.role_get(role).map_err(NodeError::Auth)?.to_vec())
    }

    pub async fn auth_role_list(&self, who: &AuthInfo) -> Result<Vec<String>, NodeError> {
        self.proposals.wait_linearizable().await?;
        let state = self.auth.state();
        state.check_admin_info(who).map_err(NodeError::Auth)?;
        Ok(state.role_list())
    }
}
