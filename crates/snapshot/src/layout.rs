//! etcd's buckets and their encodings, next to Keel's keyspaces.
//!
//! | etcd bucket        | etcd value                          | Keel                                   |
//! |--------------------|-------------------------------------|----------------------------------------|
//! | `key`              | revision key -> `mvccpb.KeyValue`    | revisions keyspace, byte for byte      |
//! | `lease`            | id (8 bytes BE) -> `leasepb.Lease`   | leases keyspace ([`LeaseRecord`])      |
//! | `meta`             | `consistent_index`, compaction revs | meta keyspace, same names and bytes    |
//! | `alarm`            | `AlarmMember` -> empty              | meta `alarm` (an `AlarmResponse`)      |
//! | `auth`             | `authEnabled`, `authRevision`       | meta `auth` (a `keelpb.AuthStore`)     |
//! | `authUsers`/`Roles`| name -> `authpb.User` / `Role`      | inside meta `auth`                     |
//! | `members`          | hex id -> JSON of the member        | members keyspace (`etcdserverpb.Member`) |
//! | `members_removed`  | hex id -> `removed`                 | members keyspace, `/removed` keys      |
//! | `cluster`          | `clusterVersion`                    | (left empty: etcd sets its own)        |
//!
//! The raft position (`consistent_index`, `term`) only means something to
//! the cluster that wrote it: an import starts a new raft log, as
//! `etcdctl snapshot restore` does, and so does membership, which comes from
//! the new cluster's flags.

use keel_mvcc::LeaseRecord;
use keel_proto::authpb::{Role, User};
use keel_proto::etcdserverpb::Member;
use keel_proto::keelpb::AuthStore;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::SnapshotError;

pub const KEY: &[u8] = b"key";
pub const META: &[u8] = b"meta";
pub const LEASE: &[u8] = b"lease";
pub const ALARM: &[u8] = b"alarm";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const AUTH_ROLES: &[u8] = b"authRoles";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const CLUSTER: &[u8] = b"cluster";

/// Every bucket etcd creates, in bbolt's (byte) order.
pub const BUCKETS: [&[u8]; 10] =
    [ALARM, AUTH, AUTH_ROLES, AUTH_USERS, CLUSTER, KEY, LEASE, MEMBERS, MEMBERS_REMOVED, META];

/// Keys of etcd's `auth` bucket.
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
pub const AUTH_REVISION: &[u8] = b"authRevision";

/// Keys of etcd's `meta` bucket that carry the store's own state (the
/// others belong to the raft log or the storage version).
pub const KEPT_META: [&[u8]; 2] = [keel_mvcc::meta::FINISHED_COMPACT, keel_mvcc::meta::SCHEDULED_COMPACT];

/// etcd's `leasepb.Lease`, as its lessor persists a lease.
#[derive(Clone, PartialEq, Message)]
pub struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// A lease record in etcd's encoding.
pub fn lease_to_etcd(record: &LeaseRecord) -> Vec<u8> {
    EtcdLease { id: record.id, ttl: record.ttl, remaining_ttl: record.remaining_ttl }.encode_to_vec()
}

/// An etcd lease entry as a Keel record; the key and the record's id must agree.
pub fn lease_from_etcd(key: &[u8], value: &[u8]) -> Result<LeaseRecord, SnapshotError> {
    let lease = EtcdLease::decode(value).map_err(|e| SnapshotError::malformed(LEASE, format!("lease value: {e}")))?;
    let id = <[u8; 8]>::try_from(key)
        .map(i64::from_be_bytes)
        .map_err(|_| SnapshotError::malformed(LEASE, format!("lease key of {} bytes, not 8", key.len())))?;
    if id != lease.id {
        return Err(SnapshotError::malformed(LEASE, format!("lease {:x} stored under key {id:x}", lease.id)));
    }
    Ok(LeaseRecord { id, ttl: lease.ttl, remaining_ttl: lease.remaining_ttl.max(0) })
}

/// etcd's `membership.Member` as its backend stores it (JSON).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct EtcdMember {
    pub id: u64,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "clientURLs", default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A member's key (etcd's `types.ID` string: hex, unpadded) and JSON value.
pub fn member_to_etcd(member: &Member) -> (String, Vec<u8>) {
    let json = EtcdMember {
        id: member.id,
        peer_urls: member.peer_ur_ls.clone(),
        is_learner: member.is_learner,
        name: member.name.clone(),
        client_urls: member.client_ur_ls.clone(),
    };
    (format!("{:x}", member.id), serde_json::to_vec(&json).expect("a member always serialises"))
}

/// The `auth`, `authRoles` and `authUsers` buckets of an auth record, sorted.
pub struct EtcdAuth {
    pub auth: Vec<(Vec<u8>, Vec<u8>)>,
    pub roles: Vec<(Vec<u8>, Vec<u8>)>,
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
}

/// etcd's auth buckets for Keel's auth record; `None` (never enabled):
/// what a fresh etcd writes, revision 1 and no flag.
pub fn auth_to_etcd(record: Option<&AuthStore>) -> EtcdAuth {
    let Some(record) = record else {
        return EtcdAuth {
            auth: vec![(AUTH_REVISION.to_vec(), 1u64.to_be_bytes().to_vec())],
            roles: vec![],
            users: vec![],
        };
    };
    let auth = vec![
        (AUTH_ENABLED.to_vec(), vec![u8::from(record.enabled)]),
        (AUTH_REVISION.to_vec(), record.revision.to_be_bytes().to_vec()),
    ];
    let mut roles: Vec<_> = record.roles.iter().map(|r| (r.name.clone(), r.encode_to_vec())).collect();
    let mut users: Vec<_> = record.users.iter().map(|u| (u.name.clone(), u.encode_to_vec())).collect();
    roles.sort();
    users.sort();
    EtcdAuth { auth, roles, users }
}

/// Builds Keel's auth record from etcd's three auth buckets, entry by entry.
#[derive(Default)]
pub struct AuthFromEtcd {
    record: AuthStore,
    seen: bool,
}

impl AuthFromEtcd {
    pub fn add(&mut self, bucket: &[u8], key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        match bucket {
            AUTH if key == AUTH_ENABLED => {
                self.record.enabled = value == [1];
                self.seen = true;
            }
            AUTH if key == AUTH_REVISION => {
                let bytes = <[u8; 8]>::try_from(value)
                    .map_err(|_| SnapshotError::malformed(AUTH, "authRevision is not 8 bytes"))?;
                self.record.revision = u64::from_be_bytes(bytes);
            }
            AUTH_USERS => {
                let user = User::decode(value).map_err(|e| SnapshotError::malformed(bucket, e.to_string()))?;
                self.record.users.push(user);
                self.seen = true;
            }
            AUTH_ROLES => {
                let role = Role::decode(value).map_err(|e| SnapshotError::malformed(bucket, e.to_string()))?;
                self.record.roles.push(role);
                self.seen = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// The record; `None` when auth was never set up (nothing but etcd's
    /// initial revision), so the imported store starts as a fresh one.
    pub fn finish(self) -> Option<AuthStore> {
        self.seen.then_some(self.record)
    }
}
