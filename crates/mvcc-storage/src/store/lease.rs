//! Lease records next to the key space: a grant is remembered across
//! restarts, and a revoke deletes the lease's keys and its record in one
//! revision, as etcd's lessor does through its backend.

use std::sync::atomic::Ordering;

use super::{put_consistent_index, KvStore, Tx};
use crate::backend::{Backend as _, Keyspace, WriteBatch};
use crate::error::MvccError;
use crate::index::KeyRange;
use keel_proto::mvccpb::Event;

/// A persisted lease: its id, granted TTL and last checkpointed remaining
/// TTL (0: none), in seconds. Stored as 8 or 16 bytes: ttl, then remaining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: i64,
    pub ttl: i64,
    pub remaining_ttl: i64,
}

impl LeaseRecord {
    /// The record as the leases keyspace stores it.
    pub fn encode(&self) -> Vec<u8> {
        if self.remaining_ttl > 0 {
            [self.ttl.to_be_bytes(), self.remaining_ttl.to_be_bytes()].concat()
        } else {
            self.ttl.to_be_bytes().to_vec()
        }
    }

    /// A record from its key (the id) and stored value; `None` when either
    /// is not what [`LeaseRecord::encode`] writes.
    pub fn decode(id: &[u8], value: &[u8]) -> Option<LeaseRecord> {
        let id = i64::from_be_bytes(id.try_into().ok()?);
        let ttl = i64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let remaining_ttl = match value.len() {
            8 => 0,
            16 => i64::from_be_bytes(value[8..].try_into().ok()?),
            _ => return None,
        };
        Some(LeaseRecord { id, ttl, remaining_ttl })
    }
}

/// What a revoke changed in the key space.
#[derive(Debug)]
pub struct RevokeOutcome {
    /// The store revision after the revoke (bumped only if keys were deleted).
    pub revision: i64,
    pub events: Vec<Event>,
}

impl KvStore {
    /// Records lease `id` granted with `ttl`, at raft index `index`.
    pub fn apply_lease_grant(&self, index: u64, record: LeaseRecord) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(2);
        batch.put(Keyspace::Leases, record.id.to_be_bytes(), record.encode());
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Records the leader's checkpoints `(id, remaining_ttl)` at raft index
    /// `index`, so leases resume from their remaining TTL after a restart of
    /// the whole cluster (etcd's checkpoint persistence). Unknown ids (revoked
    /// since) are skipped.
    pub fn apply_lease_checkpoints(&self, index: u64, checkpoints: &[(i64, i64)]) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(checkpoints.len() + 1);
        for &(id, remaining_ttl) in checkpoints {
            let Some(stored) = self.backend.get(Keyspace::Leases, &id.to_be_bytes())? else { continue };
            let mut record = LeaseRecord::decode(&id.to_be_bytes(), &stored)
                .ok_or_else(|| MvccError::Corrupt(format!("lease record {id:x}")))?;
            record.remaining_ttl = remaining_ttl;
            batch.put(Keyspace::Leases, id.to_be_bytes(), record.encode());
        }
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Deletes every key in `keys` (those attached to lease `id`) in one
    /// revision and forgets the lease, at raft index `index`.
    pub fn apply_lease_revoke(&self, index: u64, id: i64, keys: &[Vec<u8>]) -> Result<RevokeOutcome, MvccError> {
        let guard = self.state.upgradable_read();
        let (changes, mut batch) = {
            let mut tx = Tx::new(&guard, &*self.backend, &self.metrics);
            for key in keys {
                tx.delete_range(KeyRange::Single(key));
            }
            tx.into_parts()
        };
        batch.delete(Keyspace::Leases, id.to_be_bytes());
        let (revision, events) = self.commit(guard, index, changes, batch)?;
        Ok(RevokeOutcome { revision, events })
    }

    /// Every persisted lease, for rebuilding the lease manager on open.
    pub fn lease_records(&self) -> Result<Vec<LeaseRecord>, MvccError> {
        let mut records = Vec::new();
        let mut failure = None;
        self.backend.scan(Keyspace::Leases, &[], None, &mut |k, v| {
            match LeaseRecord::decode(k, v) {
                Some(record) => records.push(record),
                None => {
                    failure = Some(MvccError::Corrupt("lease record is not 8 + 8 or 16 bytes".into()));
                    return false;
                }
            }
            true
        })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(records),
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::{PutRequest, RangeRequest};

    use super::*;
    use crate::{LeaseLookup, WriteRequest};

    struct AllLeases;
    impl LeaseLookup for AllLeases {
        fn exists(&self, _id: i64) -> bool {
            true
        }
    }

    #[test]
    fn revoke_deletes_the_keys_in_one_revision_and_forgets_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = KvStore::open_rocksdb(dir.path()).unwrap();
            store.apply_lease_grant(1, LeaseRecord { id: 7, ttl: 30, remaining_ttl: 0 }).unwrap();
            store.apply_lease_grant(2, LeaseRecord { id: 8, ttl: 60, remaining_ttl: 0 }).unwrap();
            for (i, key) in ["a", "b"].iter().enumerate() {
                let put = PutRequest { key: key.as_bytes().to_vec(), lease: 7, ..Default::default() };
                store.apply(3 + i as u64, WriteRequest::Put(&put), &AllLeases).unwrap();
            }
            assert_eq!(store.current_revision(), 3);
            let outcome = store.apply_lease_revoke(5, 7, &[b"a".to_vec(), b"b".to_vec()]).unwrap();
            assert_eq!(outcome.revision, 4, "both keys go in one revision");
            assert_eq!(outcome.events.len(), 2);
            assert_eq!(store.consistent_index(), 5);
        }
        let store = KvStore::open_rocksdb(dir.path()).unwrap();
        assert_eq!(store.lease_records().unwrap(), vec![LeaseRecord { id: 8, ttl: 60, remaining_ttl: 0 }]);
        let all = store.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap();
        assert!(all.kvs.is_empty());
        assert_eq!(store.consistent_index(), 5);
    }

    #[test]
    fn revoke_without_keys_keeps_the_revision() {
        let store = KvStore::in_memory();
        store.apply_lease_grant(1, LeaseRecord { id: 7, ttl: 30, remaining_ttl: 0 }).unwrap();
        let outcome = store.apply_lease_revoke(2, 7, &[]).unwrap();
        assert_eq!(outcome.revision, 1);
        assert!(store.lease_records().unwrap().is_empty());
    }

    #[test]
    fn checkpoints_persist_the_remaining_ttl_and_skip_revoked_leases() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = KvStore::open_rocksdb(dir.path()).unwrap();
            store.apply_lease_grant(1, LeaseRecord { id: 7, ttl: 30, remaining_ttl: 0 }).unwrap();
            store.apply_lease_grant(2, LeaseRecord { id: 8, ttl: 60, remaining_ttl: 0 }).unwrap();
            store.apply_lease_checkpoints(3, &[(7, 12), (9, 5)]).unwrap();
            assert_eq!(store.consistent_index(), 3);
        }
        let store = KvStore::open_rocksdb(dir.path()).unwrap();
        assert_eq!(
            store.lease_records().unwrap(),
            vec![LeaseRecord { id: 7, ttl: 30, remaining_ttl: 12 }, LeaseRecord { id: 8, ttl: 60, remaining_ttl: 0 }]
        );
        store.apply_lease_checkpoints(4, &[(7, 0)]).unwrap();
        assert_eq!(store.lease_records().unwrap()[0].remaining_ttl, 0, "a renewed lease's checkpoint is cleared");
    }
}
