//! The auth store's state and etcd's rules for changing and checking it.
//!
//! Every change that succeeds raises the auth revision (as etcd's
//! `commitRevision`), except enabling and disabling; a token carries the
//! revision it was issued at, and a request whose token predates a change
//! is refused with "revision of auth store is old", so a client never acts
//! on permissions that were revoked after it logged in.

use std::collections::{BTreeMap, HashMap};

use keel_proto::authpb::{permission::Type as PermType, Permission, Role, User, UserAddOptions};
use keel_proto::keelpb::AuthStore;

use crate::error::AuthError;
use crate::range::{KeyRange, RangeSet};

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// What a request does to the keys it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A user's permissions merged across its roles, for checking.
#[derive(Clone, Debug, Default)]
struct Merged {
    read: RangeSet,
    write: RangeSet,
}

#[derive(Debug)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Merged permissions by user, rebuilt after every change (as etcd's
    /// `refreshRangePermCache`), so a check takes no lock and builds nothing.
    merged: HashMap<String, Merged>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState::new()
    }
}

impl AuthState {
    /// A fresh store: auth off, revision 1 (etcd starts there, so a token
    /// from a store that never changed is not "old" against revision 0).
    pub fn new() -> AuthState {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            merged: HashMap::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn changed(&mut self) {
        self.revision += 1;
        self.rebuild_merged();
    }

    /// etcd refuses to enable auth before `root` exists and holds the `root`
    /// role; enabling twice is not an error.
    pub fn enable(&mut self) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT_USER).ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.iter().any(|r| r == ROOT_ROLE) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    /// Disabling raises the revision (etcd does), so tokens from before
    /// are stale should auth come back.
    pub fn disable(&mut self) {
        if self.enabled {
            self.enabled = false;
            self.changed();
        }
    }

    /// Adds `name` with an already hashed password (empty with `no_password`:
    /// such a user can only be authenticated by a client certificate).
    pub fn user_add(&mut self, name: &str, password_hash: Vec<u8>, no_password: bool) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let password = if no_password { Vec::new() } else { password_hash };
        let user = User {
            name: name.as_bytes().to_vec(),
            password,
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password }),
        };
        self.users.insert(name.to_owned(), user);
        self.changed();
        Ok(())
    }

    pub fn user_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_USER {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.changed();
        Ok(())
    }

    pub fn user_change_password(&mut self, name: &str, password_hash: Vec<u8>) -> Result<(), AuthError> {
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        user.password = password_hash;
        self.changed();
        Ok(())
    }

    /// Grants `role` to `user`. The `root` role need not have been added;
    /// granting a role the user has is not an error (and changes nothing).
    pub fn user_grant_role(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        if !self.users.contains_key(user) {
            return Err(AuthError::UserNotFound);
        }
        if role != ROOT_ROLE && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let roles = &mut self.users.get_mut(user).ok_or(AuthError::UserNotFound)?.roles;
        match roles.binary_search_by(|r| r.as_str().cmp(role)) {
            Ok(_) => return Ok(()),
            Err(at) => roles.insert(at, role.to_owned()),
        }
        self.changed();
        Ok(())
    }

    pub fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let roles = &mut self.users.get_mut(user).ok_or(AuthError::UserNotFound)?.roles;
        let at = roles.iter().position(|r| r == role).ok_or(AuthError::RoleNotGranted)?;
        roles.remove(at);
        self.changed();
        Ok(())
    }

    /// The user's roles, in name order.
    pub fn user_get(&self, name: &str) -> Result<&[String], AuthError> {
        Ok(&self.users.get(name).ok_or(AuthError::UserNotFound)?.roles)
    }

    /// Every user's name, in order.
    pub fn user_list(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role_add(&mut self, name: &str) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_owned(), Role { name: name.as_bytes().to_vec(), key_permission: Vec::new() });
        self.changed();
        Ok(())
    }

    /// Deletes `name` and takes it from every user that had it.
    pub fn role_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|r| r != name);
        }
        self.changed();
        Ok(())
    }

    /// Grants a permission; one on the same key and range end is replaced
    /// (its type changes). Permissions stay in key order.
    pub fn role_grant_permission(&mut self, role: &str, permission: Permission) -> Result<(), AuthError> {
        let perms = &mut self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?.key_permission;
        let order = |p: &Permission| (p.key.clone(), p.range_end.clone());
        match perms.binary_search_by(|p| order(p).cmp(&order(&permission))) {
            Ok(at) => perms[at].perm_type = permission.perm_type,
            Err(at) => perms.insert(at, permission),
        }
        self.changed();
        Ok(())
    }

    pub fn role_revoke_permission(&mut self, role: &str, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        let perms = &mut self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?.key_permission;
        let at = perms
            .iter()
            .position(|p| p.key == key && p.range_end == range_end)
            .ok_or(AuthError::PermissionNotGranted)?;
        perms.remove(at);
        self.changed();
        Ok(())
    }

    /// The role's permissions, in key order.
    pub fn role_get(&self, name: &str) -> Result<&[Permission], AuthError> {
        Ok(&self.roles.get(name).ok_or(AuthError::RoleNotFound)?.key_permission)
    }

    /// Every role's name, in order.
    pub fn role_list(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Checks a login: `password_matches` is given the stored hash. Returns
    /// the auth revision the token will carry.
    pub fn authenticate(&self, name: &str, password_matches: impl FnOnce(&[u8]) -> bool) -> Result<u64, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(AuthError::NoPasswordUser);
        }
        if !password_matches(&user.password) {
            return Err(AuthError::AuthFailed);
        }
        Ok(self.revision)
    }

    /// The whole state as the backend keeps it.
    pub fn to_record(&self) -> AuthStore {
        AuthStore {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
    }

    /// The state a record describes (names that are not UTF-8 cannot come
    /// from etcd's API and are skipped).
    pub fn from_record(record: AuthStore) -> AuthState {
        let name = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).ok();
        let mut state = AuthState {
            enabled: record.enabled,
            revision: record.revision,
            users: record.users.into_iter().filter_map(|u| Some((name(&u.name)?, u))).collect(),
            roles: record.roles.into_iter().filter_map(|r| Some((name(&r.name)?, r))).collect(),
            merged: HashMap::new(),
        };
        state.rebuild_merged();
        state
    }

    /// The stored password hash of a user who may log in with a password,
    /// and the auth revision it was read at: the caller checks the password
    /// without holding the state (bcrypt is slow on purpose).
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), AuthError> {
        let mut hash = Vec::new();
        let revision = self.authenticate(name, |stored| {
            hash = stored.to_vec();
            true
        })?;
        Ok((hash, revision))
    }

    fn has_root_role(user: &User) -> bool {
        user.roles.iter().any(|r| r == ROOT_ROLE)
    }

    /// The checks every request starts with; `None` once nothing is left to
    /// check (auth off, or a root user).
    fn user_to_check(&self, user: &str, revision: u64) -> Result<Option<&User>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let found = self.users.get(user).ok_or(AuthError::PermissionDenied)?;
        Ok((!Self::has_root_role(found)).then_some(found))
    }

    /// May `user` (authenticated at auth revision `revision`; a user named
    /// by a client certificate gets the current one) read or write
    /// `[key, range_end)`?
    pub fn check(
        &self,
        user: &str,
        revision: u64,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        let Some(found) = self.user_to_check(user, revision)? else { return Ok(()) };
        let range = KeyRange::of(key, range_end);
        let built;
        let perms = match self.merged.get(user) {
            Some(perms) => perms,
            None => {
                built = self.merge(found);
                &built
            }
        };
        let granted = match access {
            Access::Read => &perms.read,
            Access::Write => &perms.write,
        };
        if granted.covers(&range) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// May `user` manage the cluster (root only)? As etcd's
    /// `IsAdminPermitted`, the token's revision is not compared: a root
    /// user stays root.
    pub fn check_admin(&self, user: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let found = self.users.get(user).ok_or(AuthError::UserNotFound)?;
        if Self::has_root_role(found) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    fn rebuild_merged(&mut self) {
        let merged = self.users.iter().map(|(name, user)| (name.clone(), self.merge(user))).collect();
        self.merged = merged;
    }

    fn merge(&self, user: &User) -> Merged {
        let perms = || user.roles.iter().filter_map(|r| self.roles.get(r)).flat_map(|r| r.key_permission.iter());
        let of = |wanted: PermType| {
            RangeSet::new(
                perms()
                    .filter(|p| p.perm_type == wanted as i32 || p.perm_type == PermType::Readwrite as i32)
                    .map(|p| KeyRange::of(&p.key, &p.range_end)),
            )
        };
        Merged { read: of(PermType::Read), write: of(PermType::Write) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermType, key: &str, range_end: &str) -> Permission {
        Permission { perm_type: kind as i32, key: key.into(), range_end: range_end.into() }
    }

    /// Auth enabled with root, and `alice` holding role `app`: read-write on
    /// prefix `app/`, read on key `shared`.
    fn with_alice() -> AuthState {
        let mut auth = AuthState::new();
        auth.user_add(ROOT_USER, b"hash".to_vec(), false).unwrap();
        auth.user_grant_role(ROOT_USER, ROOT_ROLE).unwrap();
        auth.user_add("alice", b"alice-hash".to_vec(), false).unwrap();
        auth.role_add("app").unwrap();
        auth.role_grant_permission("app", perm(PermType::Readwrite, "app/", "app0")).unwrap();
        auth.role_grant_permission("app", perm(PermType::Read, "shared", "")).unwrap();
        auth.user_grant_role("alice", "app").unwrap();
        auth.enable().unwrap();
        auth
    }

    #[test]
    fn enabling_needs_root_with_the_root_role() {
        let mut auth = AuthState::new();
        assert_eq!(auth.enable(), Err(AuthError::RootUserNotExist));
        auth.user_add(ROOT_USER, b"h".to_vec(), false).unwrap();
        assert_eq!(auth.enable(), Err(AuthError::RootRoleNotExist));
        auth.user_grant_role(ROOT_USER, ROOT_ROLE).unwrap();
        auth.enable().unwrap();
        auth.enable().unwrap();
        assert!(auth.is_enabled());
        assert_eq!(auth.user_delete(ROOT_USER), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(auth.user_revoke_role(ROOT_USER, ROOT_ROLE), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(auth.role_delete(ROOT_ROLE), Err(AuthError::InvalidAuthMgmt));
    }

    #[test]
    fn management_refusals_use_etcds_errors() {
        let mut auth = AuthState::new();
        assert_eq!(auth.user_add("", vec![], false), Err(AuthError::UserEmpty));
        auth.user_add("u", vec![], false).unwrap();
        assert_eq!(auth.user_add("u", vec![], false), Err(AuthError::UserAlreadyExist));
        assert_eq!(auth.role_add(""), Err(AuthError::RoleEmpty));
        auth.role_add("r").unwrap();
        assert_eq!(auth.role_add("r"), Err(AuthError::RoleAlreadyExist));
        assert_eq!(auth.user_grant_role("nobody", "r"), Err(AuthError::UserNotFound));
        assert_eq!(auth.user_grant_role("u", "nothing"), Err(AuthError::RoleNotFound));
        assert_eq!(auth.user_revoke_role("u", "r"), Err(AuthError::RoleNotGranted));
        assert_eq!(auth.role_revoke_permission("r", b"k", b""), Err(AuthError::PermissionNotGranted));
        assert_eq!(auth.role_get("nothing"), Err(AuthError::RoleNotFound));
        assert_eq!(auth.user_delete("nobody"), Err(AuthError::UserNotFound));
        assert_eq!(auth.role_delete("nothing"), Err(AuthError::RoleNotFound));
    }

    #[test]
    fn each_change_raises_the_revision_and_old_tokens_are_refused() {
        let mut auth = with_alice();
        let issued = auth.authenticate("alice", |hash| hash == b"alice-hash").unwrap();
        auth.check("alice", issued, b"app/x", b"", Access::Write).unwrap();
        let before = auth.revision();
        // Granting what is already granted changes nothing.
        auth.user_grant_role("alice", "app").unwrap();
        assert_eq!(auth.revision(), before);
        auth.role_add("other").unwrap();
        assert_eq!(auth.revision(), before + 1);
        assert_eq!(auth.check("alice", issued, b"app/x", b"", Access::Write), Err(AuthError::AuthOldRevision));
        auth.check("alice", auth.revision(), b"app/x", b"", Access::Write).unwrap();
    }

    #[test]
    fn permissions_follow_key_ranges_and_access() {
        let auth = with_alice();
        let rev = auth.revision();
        let check = |key: &str, end: &str, access| auth.check("alice", rev, key.as_bytes(), end.as_bytes(), access);
        check("app/a", "", Access::Write).unwrap();
        check("app/", "app0", Access::Read).unwrap();
        check("shared", "", Access::Read).unwrap();
        assert_eq!(check("shared", "", Access::Write), Err(AuthError::PermissionDenied));
        assert_eq!(check("app/", "\0", Access::Read), Err(AuthError::PermissionDenied), "from-key runs past app0");
        assert_eq!(check("other", "", Access::Read), Err(AuthError::PermissionDenied));
        assert_eq!(auth.check("", rev, b"app/a", b"", Access::Read), Err(AuthError::UserEmpty));
        assert_eq!(auth.check("mallory", rev, b"app/a", b"", Access::Read), Err(AuthError::PermissionDenied));
        auth.check(ROOT_USER, rev, b"anything", b"\0", Access::Write).unwrap();
        assert_eq!(auth.check_admin("alice"), Err(AuthError::PermissionDenied));
        auth.check_admin(ROOT_USER).unwrap();
    }

    #[test]
    fn revoking_a_permission_or_a_role_takes_effect_at_once() {
        let mut auth = with_alice();
        auth.role_revoke_permission("app", b"shared", b"").unwrap();
        let rev = auth.revision();
        assert_eq!(auth.check("alice", rev, b"shared", b"", Access::Read), Err(AuthError::PermissionDenied));
        auth.check("alice", rev, b"app/a", b"", Access::Read).unwrap();
        auth.role_delete("app").unwrap();
        let rev = auth.revision();
        assert_eq!(auth.user_get("alice").unwrap(), &[] as &[String]);
        assert_eq!(auth.check("alice", rev, b"app/a", b"", Access::Read), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn logins_fail_alike_for_unknown_users_and_wrong_passwords() {
        let mut auth = with_alice();
        auth.user_add("cert-only", b"ignored".to_vec(), true).unwrap();
        assert_eq!(auth.authenticate("nobody", |_| true), Err(AuthError::AuthFailed));
        assert_eq!(auth.authenticate("alice", |_| false), Err(AuthError::AuthFailed));
        assert_eq!(auth.authenticate("cert-only", |_| true), Err(AuthError::NoPasswordUser));
        let before = auth.revision();
        auth.disable();
        assert_eq!(auth.revision(), before + 1, "disabling makes earlier tokens stale");
        assert_eq!(auth.authenticate("alice", |_| true), Err(AuthError::AuthNotEnabled));
        auth.check("nobody", 0, b"k", b"", Access::Write).unwrap();
    }

    #[test]
    fn a_record_brings_back_the_same_state() {
        let auth = with_alice();
        let back = AuthState::from_record(auth.to_record());
        assert!(back.is_enabled());
        assert_eq!(back.revision(), auth.revision());
        assert_eq!(back.user_list(), auth.user_list());
        assert_eq!(back.role_get("app").unwrap(), auth.role_get("app").unwrap());
        back.check("alice", back.revision(), b"app/x", b"", Access::Write).unwrap();
        assert_eq!(back.authenticate("alice", |hash| hash == b"alice-hash"), Ok(back.revision()));
    }

    #[test]
    fn granting_the_same_range_again_changes_its_type() {
        let mut auth = with_alice();
        auth.role_grant_permission("app", perm(PermType::Write, "shared", "")).unwrap();
        let perms = auth.role_get("app").unwrap();
        assert_eq!(perms.len(), 2);
        assert_eq!(perms[1].perm_type, PermType::Write as i32);
        let rev = auth.revision();
        assert_eq!(auth.check("alice", rev, b"shared", b"", Access::Read), Err(AuthError::PermissionDenied));
        auth.check("alice", rev, b"shared", b"", Access::Write).unwrap();
    }
}
