//! The member's auth store: etcd's [`AuthState`] in memory, changed only by
//! applying committed auth requests (so every member holds the same state
//! at the same index), recorded in the MVCC backend with the applied index
//! (so it survives restarts and travels in snapshots), and the tokens this
//! member hands out and accepts.
//!
//! Checking a token or a permission reads memory only. Writes are checked
//! when applied, on every member, against the auth revision they were
//! proposed at (the request's `AuthHeader`); reads are checked on the
//! member serving them.
//!
//! Lock order: `state` before `tokens`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_auth::{AuthError, AuthInfo, AuthState, JwtTokens, SimpleTokens};
use keel_mvcc::KvStore;
use keel_proto::authpb::Permission;
use keel_proto::keelpb::internal_raft_request::Request;
use keel_proto::keelpb::{AuthHeader, AuthStore as AuthRecord};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use prost::Message as _;

use crate::proposals::Applied;
use crate::NodeError;

/// etcd's auth flags.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// What a login hands out (--auth-token).
    pub tokens: TokenProvider,
    /// How long a simple token lives after its last use (--auth-token-ttl).
    pub token_ttl: Duration,
    /// bcrypt's cost for new passwords (--bcrypt-cost).
    pub bcrypt_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: TokenProvider::Simple,
            token_ttl: keel_auth::DEFAULT_TOKEN_TTL,
            bcrypt_cost: keel_auth::DEFAULT_BCRYPT_COST,
        }
    }
}

/// etcd's token providers.
#[derive(Clone, Debug)]
pub enum TokenProvider {
    /// Opaque tokens every member records when it applies the login.
    Simple,
    /// Signed tokens any member verifies with the public key (keys loaded
    /// at start).
    Jwt(Arc<JwtTokens>),
    /// `--auth-token ""`: no token is ever valid.
    None,
}

/// Expired tokens are swept at most this often (a login in a busy cluster
/// must not walk every token each time).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct AuthStore {
    state: RwLock<AuthState>,
    tokens: Mutex<Tokens>,
    config: AuthConfig,
    /// The raft index of the newest applied login: a token from a later one
    /// is not known here yet (this member lags), rather than invalid.
    newest_login: AtomicU64,
}

struct Tokens {
    simple: SimpleTokens,
    swept_at: Option<Instant>,
}

impl AuthStore {
    /// The auth state the store last recorded (a fresh one if none).
    pub(crate) fn restore(kv: &KvStore, config: AuthConfig) -> Result<AuthStore, NodeError> {
        let store = AuthStore {
            state: RwLock::new(AuthState::new()),
            tokens: Mutex::new(Tokens { simple: SimpleTokens::new(config.token_ttl), swept_at: None }),
            config,
            newest_login: AtomicU64::new(0),
        };
        store.reload(kv)?;
        Ok(store)
    }

    /// Reads the state again after the store was replaced by a snapshot.
    /// Tokens handed out before are dropped (etcd's are memory-only too):
    /// their clients log in again.
    pub(crate) fn reload(&self, kv: &KvStore) -> Result<(), NodeError> {
        let state = match kv.auth_record().map_err(NodeError::Mvcc)? {
            Some(bytes) => AuthState::from_record(
                AuthRecord::decode(bytes.as_slice()).map_err(|e| NodeError::Corrupt(format!("auth record: {e}")))?,
            ),
            None => AuthState::new(),
        };
        *self.state.write() = state;
        self.tokens.lock().simple.clear();
        Ok(())
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The state, to read from; never held across an await.
    pub fn state(&self) -> RwLockReadGuard<'_, AuthState> {
        self.state.read()
    }

    pub fn is_enabled(&self) -> bool {
        self.state.read().is_enabled()
    }

    /// Who a request with `token` runs as. With auth off a token is
    /// ignored (etcd 3.5.10 on). `Ok(None)`: the token is not known here
    /// yet, because it comes from a login this member has not applied.
    pub fn info_from_token(&self, token: &str, now: Instant, now_unix: u64) -> Result<Option<AuthInfo>, AuthError> {
        let state = self.state.read();
        if !state.is_enabled() {
            return Ok(Some(AuthInfo::default()));
        }
        match &self.config.tokens {
            TokenProvider::Simple => {}
            // The revision is the one the token was issued at: a change of
            // the auth state since makes it "old".
            TokenProvider::Jwt(jwt) => {
                let (user, revision) = jwt.verify_at(token, now_unix)?;
                return Ok(Some(AuthInfo::new(user, revision)));
            }
            TokenProvider::None => return Err(AuthError::InvalidAuthToken),
        }
        match self.tokens.lock().simple.user_of(token, now) {
            Ok(user) => Ok(Some(AuthInfo::new(user, state.revision()))),
            Err(err) => match token_index(token) {
                Some(index) if index > self.newest_login.load(Ordering::Acquire) => Ok(None),
                _ => Err(err),
            },
        }
    }

    /// A user named by a verified client certificate: it needs no token
    /// and gets the current revision (a certificate cannot go stale).
    pub fn info_from_certificate(&self, common_name: &str) -> AuthInfo {
        AuthInfo::new(common_name, self.state.read().revision())
    }

    /// The auth header a client's write carries through raft.
    pub(crate) fn header_of(who: &AuthInfo) -> AuthHeader {
        AuthHeader { username: who.user.clone(), revision: who.revision }
    }

    /// etcd's apply-time checks of a client's write, with the user and auth
    /// revision it was proposed with. The member's own requests carry no
    /// header and are not checked. Compaction is not checked (neither is it
    /// in etcd); auth requests check admin rights as they apply.
    pub(crate) fn check_write(
        &self,
        header: Option<&AuthHeader>,
        request: &Request,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        let Some(header) = header else { return Ok(()) };
        let state = self.state.read();
        if !state.is_enabled() {
            return Ok(());
        }
        let who = AuthInfo::new(header.username.clone(), header.revision);
        match request {
            Request::Put(put) => state.check_put(&who, put, lease_keys),
            Request::DeleteRange(delete) => state.check_delete_range(&who, delete),
            Request::Txn(txn) => state.check_txn(&who, txn, lease_keys),
            Request::LeaseRevoke(revoke) => state.check_lease_keys(&who, &lease_keys(revoke.id)),
            _ => Ok(()),
        }
    }

    /// Applies a committed auth request at raft index `index` and records
    /// the new state with it; `None` when `request` is not about auth.
    pub(crate) fn apply(
        &self,
        kv: &KvStore,
        index: u64,
        header: Option<&AuthHeader>,
        request: &Request,
        now: Instant,
        now_unix: u64,
    ) -> Option<Result<Applied, NodeError>> {
        let who = header.map(|h| AuthInfo::new(h.username.clone(), h.revision)).unwrap_or_default();
        let mut state = self.state.write();
        let outcome = match request {
            Request::Authenticate(login) => {
                let answer = state.authenticate(&login.name, |_| true).and_then(|revision| match &self.config.tokens {
                    TokenProvider::Simple => {
                        let mut tokens = self.tokens.lock();
                        if tokens.swept_at.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
                            tokens.simple.expire(now);
                            tokens.swept_at = Some(now);
                        }
                        Ok(tokens.simple.assign(&login.name, &login.simple_token, index, now))
                    }
                    // Signed by each member alike; the proposer's answers the client.
                    TokenProvider::Jwt(jwt) => jwt.assign(&login.name, revision, now_unix),
                    TokenProvider::None => Err(AuthError::AuthFailed),
                });
                self.newest_login.fetch_max(index, Ordering::AcqRel);
                // A login changes no state: nothing to record.
                return Some(answer.map(|token| Applied::Auth(Some(token))).map_err(NodeError::Auth));
            }
            Request::AuthEnable(_) => state.check_admin_info(&who).and_then(|()| state.enable()),
            Request::AuthDisable(_) => state.check_admin_info(&who).map(|()| {
                state.disable();
                self.tokens.lock().simple.clear();
            }),
            Request::AuthUserAdd(add) => state.check_admin_info(&who).and_then(|()| {
                let no_password = add.options.as_ref().is_some_and(|o| o.no_password);
                state.user_add(&add.name, add.hashed_password.clone().into_bytes(), no_password)
            }),
            Request::AuthUserDelete(delete) => state.check_admin_info(&who).and_then(|()| {
                state.user_delete(&delete.name)?;
                self.tokens.lock().simple.invalidate_user(&delete.name);
                Ok(())
            }),
            Request::AuthUserChangePassword(change) => state.check_admin_info(&who).and_then(|()| {
                state.user_change_password(&change.name, change.hashed_password.clone().into_bytes())?;
                self.tokens.lock().simple.invalidate_user(&change.name);
                Ok(())
            }),
            Request::AuthUserGrantRole(grant) => {
                state.check_admin_info(&who).and_then(|()| state.user_grant_role(&grant.user, &grant.role))
            }
            Request::AuthUserRevokeRole(revoke) => {
                state.check_admin_info(&who).and_then(|()| state.user_revoke_role(&revoke.name, &revoke.role))
            }
            Request::AuthRoleAdd(add) => state.check_admin_info(&who).and_then(|()| state.role_add(&add.name)),
            Request::AuthRoleDelete(delete) => {
                state.check_admin_info(&who).and_then(|()| state.role_delete(&delete.role))
            }
            Request::AuthRoleGrantPermission(grant) => state.check_admin_info(&who).and_then(|()| {
                let permission = grant.perm.clone().ok_or(AuthError::PermissionNotGiven)?;
                check_permission_range(&permission)?;
                state.role_grant_permission(&grant.name, permission)
            }),
            Request::AuthRoleRevokePermission(revoke) => state
                .check_admin_info(&who)
                .and_then(|()| state.role_revoke_permission(&revoke.role, &revoke.key, &revoke.range_end)),
            _ => return None,
        };
        Some(match outcome {
            Ok(()) => kv
                .apply_auth(index, &state.to_record().encode_to_vec())
                .map(|()| Applied::Auth(None))
                .map_err(NodeError::Mvcc),
            Err(err) => Err(NodeError::Auth(err)),
        })
    }
}

/// etcd 3.5.8 on refuses permissions on ranges that name no key: an empty
/// key, or an end before the key.
fn check_permission_range(permission: &Permission) -> Result<(), AuthError> {
    let (key, end) = (&permission.key, &permission.range_end);
    let valid = !key.is_empty() && (end.is_empty() || end.as_slice() == [0] || key < end);
    if valid {
        Ok(())
    } else {
        Err(AuthError::InvalidAuthMgmt)
    }
}

/// The raft index a simple token was assigned at (`<letters>.<index>`).
fn token_index(token: &str) -> Option<u64> {
    token.rsplit_once('.')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::{AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest};
    use keel_proto::keelpb::InternalAuthenticateRequest;

    use super::*;

    fn apply(
        store: &AuthStore,
        kv: &KvStore,
        index: u64,
        who: Option<&str>,
        request: Request,
    ) -> Result<Applied, NodeError> {
        let header = who.map(|user| AuthHeader { username: user.into(), revision: 0 });
        store.apply(kv, index, header.as_ref(), &request, Instant::now(), 0).expect("an auth request")
    }

    fn root_enabled(kv: &KvStore) -> AuthStore {
        let store = AuthStore::restore(kv, AuthConfig::default()).unwrap();
        let add = AuthUserAddRequest { name: "root".into(), hashed_password: "hash".into(), ..Default::default() };
        apply(&store, kv, 1, Some(""), Request::AuthUserAdd(add)).unwrap();
        let grant = AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
        apply(&store, kv, 2, Some(""), Request::AuthUserGrantRole(grant)).unwrap();
        apply(&store, kv, 3, Some(""), Request::AuthEnable(AuthEnableRequest {})).unwrap();
        store
    }

    #[test]
    fn auth_state_is_recorded_with_its_index_and_restored() {
        let kv = KvStore::in_memory();
        let store = root_enabled(&kv);
        assert_eq!(kv.consistent_index(), 3);
        let again = AuthStore::restore(&kv, AuthConfig::default()).unwrap();
        assert!(again.is_enabled());
        assert_eq!(again.state().user_list(), store.state().user_list());
    }

    #[test]
    fn once_enabled_only_root_manages_auth() {
        let kv = KvStore::in_memory();
        let store = root_enabled(&kv);
        let add = || Request::AuthRoleAdd(keel_proto::etcdserverpb::AuthRoleAddRequest { name: "r".into() });
        match apply(&store, &kv, 4, Some(""), add()) {
            Err(NodeError::Auth(AuthError::UserEmpty)) => {}
            _ => panic!("an anonymous caller must be refused"),
        }
        apply(&store, &kv, 5, Some("root"), add()).unwrap();
    }

    #[test]
    fn a_login_hands_every_member_the_same_token() {
        let kv = KvStore::in_memory();
        let store = root_enabled(&kv);
        let login = InternalAuthenticateRequest { name: "root".into(), simple_token: "abcdefghijklmnop".into() };
        let Ok(Applied::Auth(Some(token))) = apply(&store, &kv, 9, None, Request::Authenticate(login)) else {
            panic!("a login answers with a token")
        };
        assert_eq!(token, "abcdefghijklmnop.9");
        let now = Instant::now();
        assert_eq!(store.info_from_token(&token, now, 0).unwrap().unwrap().user, "root");
        assert_eq!(store.info_from_token("abcdefghijklmnop.10", now, 0), Ok(None), "a later login, not applied yet");
        assert_eq!(store.info_from_token("abcdefghijklmnop.8", now, 0), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn permissions_on_ranges_without_a_key_are_refused() {
        let perm = |key: &str, end: &str| Permission { perm_type: 0, key: key.into(), range_end: end.into() };
        assert!(check_permission_range(&perm("a", "")).is_ok());
        assert!(check_permission_range(&perm("a", "\0")).is_ok());
        assert!(check_permission_range(&perm("a", "b")).is_ok());
        assert_eq!(check_permission_range(&perm("", "")), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(check_permission_range(&perm("b", "a")), Err(AuthError::InvalidAuthMgmt));
    }
}
