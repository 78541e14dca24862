//! The whole store as one value, for a follower that fell behind the
//! compacted raft log: the leader dumps it at an applied index, the follower
//! installs it in place of its own state.

use std::sync::atomic::Ordering;

use keel_proto::keelpb::{SnapshotData, SnapshotEntry};
use prost::Message;

use super::{meta, restore, KvStore};
use crate::backend::{Keyspace, WriteBatch};
use crate::error::MvccError;

/// Meta keys that belong to the member, not to the replicated state.
fn is_local(space: Keyspace, key: &[u8]) -> bool {
    space == Keyspace::Meta && (key == meta::MEMBER_ID || key == meta::CLUSTER_ID)
}

impl KvStore {
    /// Every replicated key of every keyspace, encoded, and the raft index
    /// they reflect. Holds off writes while it reads, so the two agree.
    pub fn snapshot(&self) -> Result<(u64, Vec<u8>), MvccError> {
        let _no_writes = self.state.upgradable_read();
        let _values_stay = self.compaction.read();
        let mut entries = Vec::new();
        for space in Keyspace::ALL {
            self.backend.scan(space, &[], None, &mut |k, v| {
                if !is_local(space, k) {
                    entries.push(SnapshotEntry {
                        keyspace: space.name().to_owned(),
                        key: k.to_vec(),
                        value: v.to_vec(),
                    });
                }
                true
            })?;
        }
        Ok((self.consistent_index(), SnapshotData { entries }.encode_to_vec()))
    }

    /// Replaces the whole replicated state with a leader's [`snapshot`]
    /// (this member's identity stays), durably, and rebuilds the index.
    /// Readers wait meanwhile.
    ///
    /// [`snapshot`]: KvStore::snapshot
    pub fn install_snapshot(&self, data: &[u8]) -> Result<(), MvccError> {
        let snapshot = SnapshotData::decode(data)?;
        let mut state = self.state.write();
        let _values = self.compaction.write();
        let mut batch = WriteBatch::default();
        for space in Keyspace::ALL {
            self.backend.scan(space, &[], None, &mut |k, _| {
                if !is_local(space, k) {
                    batch.delete(space, k.to_vec());
                }
                true
            })?;
        }
        for entry in snapshot.entries {
            let space = Keyspace::ALL
                .into_iter()
                .find(|s| s.name() == entry.keyspace)
                .ok_or_else(|| MvccError::Corrupt(format!("snapshot names keyspace {:?}", entry.keyspace)))?;
            if !is_local(space, &entry.key) {
                batch.put(space, entry.key, entry.value);
            }
        }
        self.backend.write(batch)?;
        self.backend.sync()?;
        let fresh = restore::open(self.backend.clone())?;
        self.consistent_index.store(fresh.consistent_index(), Ordering::Release);
        *state = fresh.state.into_inner();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::{PutRequest, RangeRequest};

    use super::*;
    use crate::store::members::Identity;
    use crate::{LeaseRecord, NoLeases, WriteRequest};

    fn put(store: &KvStore, index: u64, key: &str, value: &str) {
        let put = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        store.apply(index, WriteRequest::Put(&put), &NoLeases).unwrap();
    }

    #[test]
    fn a_snapshot_installs_the_leaders_state_and_keeps_the_followers_identity() {
        let leader = KvStore::in_memory();
        leader.bootstrap(Identity { member_id: 1, cluster_id: 9 }, &[]).unwrap();
        put(&leader, 1, "a", "1");
        put(&leader, 2, "b", "2");
        put(&leader, 3, "a", "3");
        leader.apply_lease_grant(4, LeaseRecord { id: 7, ttl: 60, remaining_ttl: 0 }).unwrap();
        let (index, data) = leader.snapshot().unwrap();
        assert_eq!(index, 4);

        let dir = tempfile::tempdir().unwrap();
        {
            let follower = KvStore::open_rocksdb(dir.path()).unwrap();
            follower.bootstrap(Identity { member_id: 2, cluster_id: 9 }, &[]).unwrap();
            put(&follower, 1, "stale", "x");
            follower.install_snapshot(&data).unwrap();
            assert_eq!(follower.consistent_index(), 4);
            assert_eq!(follower.current_revision(), 4);
            let all = follower.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap();
            let kvs: Vec<_> = all.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision)).collect();
            assert_eq!(kvs, vec![(b"a".to_vec(), b"3".to_vec(), 4), (b"b".to_vec(), b"2".to_vec(), 3)]);
            let old = follower.range(&RangeRequest { key: b"a".to_vec(), revision: 2, ..Default::default() }).unwrap();
            assert_eq!(old.kvs[0].value, b"1", "history comes along");
        }
        let reopened = KvStore::open_rocksdb(dir.path()).unwrap();
        assert_eq!(reopened.identity().unwrap(), Some(Identity { member_id: 2, cluster_id: 9 }));
        assert_eq!(reopened.lease_records().unwrap().len(), 1);
        assert_eq!(reopened.consistent_index(), 4);
    }
}
