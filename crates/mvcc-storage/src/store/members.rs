//! The cluster's membership and this member's identity, next to the key
//! space: written in the same batches as the changes that cause them, so a
//! restart finds exactly the membership its applied index implies.

use std::sync::atomic::Ordering;

use keel_proto::etcdserverpb::Member;
use prost::Message;

use super::v2::put_v2_records;
use super::{meta, put_consistent_index, KvStore, V2Record};
use crate::backend::{Backend as _, Keyspace, WriteBatch};
use crate::error::MvccError;

/// Who this data directory belongs to, fixed when it was first bootstrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

impl KvStore {
    /// The identity recorded at bootstrap; `None` for a fresh data dir.
    pub fn identity(&self) -> Result<Option<Identity>, MvccError> {
        let read = |key: &[u8]| -> Result<Option<u64>, MvccError> {
            match self.backend.get(Keyspace::Meta, key)? {
                None => Ok(None),
                Some(v) => Ok(Some(u64::from_be_bytes(
                    v.as_slice().try_into().map_err(|_| MvccError::Corrupt("identity is not 8 bytes".into()))?,
                ))),
            }
        };
        match (read(meta::MEMBER_ID)?, read(meta::CLUSTER_ID)?) {
            (Some(member_id), Some(cluster_id)) => Ok(Some(Identity { member_id, cluster_id })),
            _ => Ok(None),
        }
    }

    /// Records this member's identity and the cluster's first members, once,
    /// before anything is applied (no raft index yet). Synced: a member must
    /// never come back with another identity.
    pub fn bootstrap(&self, identity: Identity, members: &[Member]) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(2 + members.len());
        batch.put(Keyspace::Meta, meta::MEMBER_ID, identity.member_id.to_be_bytes());
        batch.put(Keyspace::Meta, meta::CLUSTER_ID, identity.cluster_id.to_be_bytes());
        for member in members {
            batch.put(Keyspace::Members, member.id.to_be_bytes(), member.encode_to_vec());
        }
        self.write_batch(batch)?;
        self.backend.sync()?;
        Ok(())
    }

    /// Every member, by id (etcd lists them in this order).
    pub fn members(&self) -> Result<Vec<Member>, MvccError> {
        let mut members = Vec::new();
        let mut failure = None;
        self.backend.scan(Keyspace::Members, &[], None, &mut |k, v| {
            if k.len() != 8 {
                return true; // a removed member's record
            }
            match Member::decode(v) {
                Ok(member) => members.push(member),
                Err(err) => {
                    failure = Some(MvccError::from(err));
                    return false;
                }
            }
            true
        })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(members),
        }
    }

    /// Sets a member's name and client URLs (its "publish"), at raft index
    /// `index`. An unknown member (removed meanwhile) changes nothing.
    pub fn apply_member_attributes(
        &self,
        index: u64,
        member_id: u64,
        name: &str,
        client_urls: &[String],
        v2: Vec<V2Record>,
    ) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(2);
        if let Some(bytes) = self.backend.get(Keyspace::Members, &member_id.to_be_bytes())? {
            let mut member = Member::decode(bytes.as_slice())?;
            member.name = name.to_owned();
            member.client_ur_ls = client_urls.to_vec();
            batch.put(Keyspace::Members, member_id.to_be_bytes(), member.encode_to_vec());
        }
        put_v2_records(&mut batch, v2);
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }

    /// A configuration change at raft index `index`: `added` members are
    /// written (an existing one keeps the name and client URLs it
    /// published unless `added` has them), `removed` ids deleted.
    pub fn apply_membership(
        &self,
        index: u64,
        added: &[Member],
        removed: &[u64],
        v2: Vec<V2Record>,
    ) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(added.len() + removed.len() + 1);
        for member in added {
            let mut member = member.clone();
            if let Some(bytes) = self.backend.get(Keyspace::Members, &member.id.to_be_bytes())? {
                let stored = Member::decode(bytes.as_slice())?;
                if member.name.is_empty() {
                    member.name = stored.name;
                }
                if member.client_ur_ls.is_empty() {
                    member.client_ur_ls = stored.client_ur_ls;
                }
            }
            batch.put(Keyspace::Members, member.id.to_be_bytes(), member.encode_to_vec());
        }
        for id in removed {
            batch.delete(Keyspace::Members, id.to_be_bytes());
            batch.put(Keyspace::Members, removed_key(*id), Vec::new());
        }
        put_v2_records(&mut batch, v2);
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }

    /// The ids of every member ever removed (etcd's `members_removed`
    /// bucket): their raft messages are refused for good.
    pub fn removed_members(&self) -> Result<Vec<u64>, MvccError> {
        let mut ids = Vec::new();
        self.backend.scan(Keyspace::Members, &[], None, &mut |k, _| {
            if let Some(id) = k.strip_suffix(REMOVED_SUFFIX).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
                ids.push(u64::from_be_bytes(id));
            }
            true
        })?;
        Ok(ids)
    }

    /// Sets a member's peer URLs (MemberUpdate), at raft index `index`.
    pub fn apply_member_peer_urls(
        &self,
        index: u64,
        member_id: u64,
        peer_urls: &[String],
        v2: Vec<V2Record>,
    ) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(2);
        if let Some(bytes) = self.backend.get(Keyspace::Members, &member_id.to_be_bytes())? {
            let mut member = Member::decode(bytes.as_slice())?;
            member.peer_ur_ls = peer_urls.to_vec();
            batch.put(Keyspace::Members, member_id.to_be_bytes(), member.encode_to_vec());
        }
        put_v2_records(&mut batch, v2);
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }
}

/// A removed member's record sits beside the members, under its id and
/// this suffix (members' own keys are the bare 8-byte id).
const REMOVED_SUFFIX: &[u8] = b"/removed";

fn removed_key(id: u64) -> Vec<u8> {
    let mut key = id.to_be_bytes().to_vec();
    key.extend_from_slice(REMOVED_SUFFIX);
    key
}
