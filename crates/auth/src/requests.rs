//! Which keys each etcd request reads and writes, and the checks etcd makes
//! of them (its `authApplierV3` and `checkTxnAuth`): a request passes when
//! the caller may read everything it reads and write everything it writes.
//!
//! The rules are written once, here; the server calls them where etcd does:
//! reads on the member serving them, writes when their raft entry is
//! applied (on every member, with the auth revision the request was
//! proposed with, so a permission revoked meanwhile still refuses it).

use keel_proto::etcdserverpb::request_op::Request as Op;
use keel_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::error::AuthError;
use crate::state::{Access, AuthState};

/// Who a request runs as: the user its token or client certificate names
/// (empty when it had neither) and the auth revision the token was issued
/// at (0 for a certificate: it has no revision to go stale).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

impl AuthInfo {
    pub fn new(user: impl Into<String>, revision: u64) -> AuthInfo {
        AuthInfo { user: user.into(), revision }
    }
}

impl AuthState {
    fn allowed(&self, who: &AuthInfo, key: &[u8], range_end: &[u8], access: Access) -> Result<(), AuthError> {
        self.check(&who.user, who.revision, key, range_end, access)
    }

    pub fn check_range(&self, who: &AuthInfo, request: &RangeRequest) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.allowed(who, &request.key, &request.range_end, Access::Read)
    }

    /// Watching a range needs reading it.
    pub fn check_watch(&self, who: &AuthInfo, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.allowed(who, key, range_end, Access::Read)
    }

    /// A Put writes its key and reads it for `prev_kv`. Attaching a lease
    /// needs write permission on every key already attached to it (etcd's
    /// `checkLeasePuts`): whoever holds the lease can delete them all by
    /// revoking it. `lease_keys` lists a lease's keys.
    pub fn check_put(
        &self,
        who: &AuthInfo,
        request: &PutRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.allowed(who, &request.key, &[], Access::Write)?;
        if request.lease != 0 {
            self.check_lease_keys(who, &lease_keys(request.lease))?;
        }
        if request.prev_kv {
            self.allowed(who, &request.key, &[], Access::Read)?;
        }
        Ok(())
    }

    pub fn check_delete_range(&self, who: &AuthInfo, request: &DeleteRangeRequest) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        if request.prev_kv {
            self.allowed(who, &request.key, &request.range_end, Access::Read)?;
        }
        self.allowed(who, &request.key, &request.range_end, Access::Write)
    }

    /// Every compare reads its range; every operation of both branches is
    /// checked, nested txns included, whichever branch will run (the caller
    /// must not learn which one it may run by trying).
    pub fn check_txn(
        &self,
        who: &AuthInfo,
        request: &TxnRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        for compare in &request.compare {
            self.allowed(who, &compare.key, &compare.range_end, Access::Read)?;
        }
        self.check_ops(who, &request.success, lease_keys)?;
        self.check_ops(who, &request.failure, lease_keys)
    }

    fn check_ops(
        &self,
        who: &AuthInfo,
        ops: &[RequestOp],
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(range)) => self.check_range(who, range)?,
                Some(Op::RequestPut(put)) => self.check_put(who, put, lease_keys)?,
                Some(Op::RequestDeleteRange(delete)) => self.check_delete_range(who, delete)?,
                Some(Op::RequestTxn(txn)) => self.check_txn(who, txn, lease_keys)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Revoking a lease deletes its keys: it needs write permission on each.
    pub fn check_lease_keys(&self, who: &AuthInfo, keys: &[Vec<u8>]) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        for key in keys {
            self.allowed(who, key, &[], Access::Write)?;
        }
        Ok(())
    }

    /// Cluster and maintenance operations, and managing auth: root only.
    pub fn check_admin_info(&self, who: &AuthInfo) -> Result<(), AuthError> {
        self.check_admin(&who.user)
    }
}

#[cfg(test)]
mod tests {
    use keel_proto::authpb::{permission::Type as PermType, Permission};
    use keel_proto::etcdserverpb::{compare, Compare};

    use super::*;
    use crate::{ROOT_ROLE, ROOT_USER};

    fn alice() -> (AuthState, AuthInfo) {
        let mut auth = AuthState::new();
        auth.user_add(ROOT_USER, b"h".to_vec(), false).unwrap();
        auth.user_grant_role(ROOT_USER, ROOT_ROLE).unwrap();
        auth.user_add("alice", b"h".to_vec(), false).unwrap();
        auth.role_add("app").unwrap();
        let perm = |kind: PermType, key: &str, end: &str| Permission {
            perm_type: kind as i32,
            key: key.into(),
            range_end: end.into(),
        };
        auth.role_grant_permission("app", perm(PermType::Readwrite, "app/", "app0")).unwrap();
        auth.role_grant_permission("app", perm(PermType::Write, "wo", "")).unwrap();
        auth.role_grant_permission("app", perm(PermType::Read, "ro", "")).unwrap();
        auth.user_grant_role("alice", "app").unwrap();
        auth.enable().unwrap();
        let who = AuthInfo::new("alice", auth.revision());
        (auth, who)
    }

    fn no_leases(_: i64) -> Vec<Vec<u8>> {
        Vec::new()
    }

    fn put(key: &str) -> PutRequest {
        PutRequest { key: key.into(), ..Default::default() }
    }

    #[test]
    fn a_put_needs_read_permission_for_its_previous_value() {
        let (auth, who) = alice();
        auth.check_put(&who, &put("wo"), &no_leases).unwrap();
        let with_prev = PutRequest { prev_kv: true, ..put("wo") };
        assert_eq!(auth.check_put(&who, &with_prev, &no_leases), Err(AuthError::PermissionDenied));
        assert_eq!(auth.check_put(&who, &put("ro"), &no_leases), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn attaching_a_lease_needs_write_permission_on_its_keys() {
        let (auth, who) = alice();
        let leased = PutRequest { lease: 7, ..put("app/a") };
        auth.check_put(&who, &leased, &|_| vec![b"app/b".to_vec()]).unwrap();
        assert_eq!(auth.check_put(&who, &leased, &|_| vec![b"ro".to_vec()]), Err(AuthError::PermissionDenied));
        assert_eq!(
            auth.check_lease_keys(&who, &[b"app/x".to_vec(), b"secret".to_vec()]),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn a_txn_is_checked_in_every_compare_and_both_branches() {
        let (auth, who) = alice();
        let op = |request| RequestOp { request: Some(request) };
        let compare = |key: &str| Compare {
            key: key.into(),
            target: compare::CompareTarget::Version as i32,
            ..Default::default()
        };
        let allowed = TxnRequest {
            compare: vec![compare("app/x")],
            success: vec![op(Op::RequestPut(put("app/x")))],
            failure: vec![op(Op::RequestRange(RangeRequest { key: b"ro".to_vec(), ..Default::default() }))],
        };
        auth.check_txn(&who, &allowed, &no_leases).unwrap();
        let denied_compare = TxnRequest { compare: vec![compare("wo")], ..allowed.clone() };
        assert_eq!(auth.check_txn(&who, &denied_compare, &no_leases), Err(AuthError::PermissionDenied));
        let nested = TxnRequest {
            failure: vec![op(Op::RequestTxn(TxnRequest {
                success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: b"ro".to_vec(),
                    ..Default::default()
                }))],
                ..Default::default()
            }))],
            ..allowed
        };
        assert_eq!(auth.check_txn(&who, &nested, &no_leases), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn nothing_is_checked_while_auth_is_off() {
        let auth = AuthState::new();
        let nobody = AuthInfo::default();
        auth.check_put(&nobody, &put("x"), &no_leases).unwrap();
        auth.check_range(&nobody, &RangeRequest { key: b"x".to_vec(), range_end: vec![0], ..Default::default() })
            .unwrap();
        auth.check_admin_info(&nobody).unwrap();
    }

    #[test]
    fn a_caller_without_a_user_is_told_so() {
        let (auth, _) = alice();
        let nobody = AuthInfo::default();
        assert_eq!(auth.check_put(&nobody, &put("app/x"), &no_leases), Err(AuthError::UserEmpty));
        assert_eq!(auth.check_admin_info(&nobody), Err(AuthError::UserEmpty));
    }
}
