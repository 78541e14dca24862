//! The v2 keys API's records (`keel-v2store`), kept in their own keyspace
//! and written in the same batch as the raft index of the write that made
//! them, so a restart finds exactly the v2 state its applied index implies.

use std::sync::atomic::Ordering;

use super::{put_consistent_index, KvStore};
use crate::backend::{Backend as _, Keyspace, WriteBatch};
use crate::error::MvccError;

/// A stored v2 record: its key and value.
pub type V2Pair = (Vec<u8>, Vec<u8>);

/// One record change of the v2 store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Record {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// v2 records riding in another write's batch: etcd's membership lives in
/// its v2 store, so membership changes take v2 indexes too.
pub(super) fn put_v2_records(batch: &mut WriteBatch, records: Vec<V2Record>) {
    for record in records {
        match record {
            V2Record::Put { key, value } => batch.put(Keyspace::V2, key, value),
            V2Record::Delete { key } => batch.delete(Keyspace::V2, key),
        }
    }
}

impl KvStore {
    /// Persists a v2 write applied at raft index `index` (a refused one has
    /// no records and only moves the index).
    pub fn apply_v2(&self, index: u64, records: Vec<V2Record>) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(records.len() + 1);
        put_v2_records(&mut batch, records);
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Every v2 record, in key order: what the v2 store reloads from.
    pub fn v2_records(&self) -> Result<Vec<V2Pair>, MvccError> {
        let mut records = Vec::new();
        self.backend.scan(Keyspace::V2, &[], None, &mut |k, v| {
            records.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_records_persist_with_the_applied_index() {
        let store = KvStore::in_memory();
        store
            .apply_v2(
                7,
                vec![
                    V2Record::Put { key: b"n/a".to_vec(), value: b"1".to_vec() },
                    V2Record::Put { key: b"n/b".to_vec(), value: b"2".to_vec() },
                ],
            )
            .unwrap();
        store.apply_v2(8, vec![V2Record::Delete { key: b"n/a".to_vec() }]).unwrap();
        assert_eq!(store.v2_records().unwrap(), vec![(b"n/b".to_vec(), b"2".to_vec())]);
        assert_eq!(store.consistent_index(), 8);
    }
}
