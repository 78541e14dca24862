//! The auth store's record (users, roles, whether auth is on) and the
//! cluster's alarms, kept next to the key space and written in the same
//! batch as the applied index, so a restart, or a snapshot, carries exactly
//! the state its index implies. The store only keeps the bytes; `keel-auth`
//! and `keel-node` know what they mean.

use std::sync::atomic::Ordering;

use super::{meta, put_consistent_index, KvStore};
use crate::backend::{Backend as _, Keyspace, WriteBatch};
use crate::error::MvccError;

impl KvStore {
    /// The auth record last applied; `None` before auth was ever touched.
    pub fn auth_record(&self) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.backend.get(Keyspace::Meta, meta::AUTH)?)
    }

    /// Replaces the auth record at raft index `index`.
    pub fn apply_auth(&self, index: u64, record: &[u8]) -> Result<(), MvccError> {
        self.put_meta_record(index, meta::AUTH, record)
    }

    /// The cluster's alarms as last applied (an encoded list the node
    /// keeps); `None` before any alarm was ever raised.
    pub fn alarms_record(&self) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.backend.get(Keyspace::Meta, meta::ALARMS)?)
    }

    /// Replaces the alarms record at raft index `index`.
    pub fn apply_alarms(&self, index: u64, record: &[u8]) -> Result<(), MvccError> {
        self.put_meta_record(index, meta::ALARMS, record)
    }

    fn put_meta_record(&self, index: u64, key: &[u8], record: &[u8]) -> Result<(), MvccError> {
        let _serialised = self.state.upgradable_read();
        let mut batch = WriteBatch::with_capacity(2);
        batch.put(Keyspace::Meta, key, record);
        put_consistent_index(&mut batch, index);
        self.write_batch(batch)?;
        self.consistent_index.store(index, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::KvStore;

    #[test]
    fn the_auth_record_is_kept_with_its_index_and_travels_in_snapshots() {
        let store = KvStore::in_memory();
        assert_eq!(store.auth_record().unwrap(), None);
        store.apply_auth(5, b"record").unwrap();
        assert_eq!(store.consistent_index(), 5);
        assert_eq!(store.auth_record().unwrap().as_deref(), Some(&b"record"[..]));

        let checkpoint = store.checkpoint().unwrap();
        let pieces: Vec<Vec<u8>> = checkpoint.pieces(1 << 20).collect::<Result<_, _>>().unwrap();
        let other = KvStore::in_memory();
        other.install_snapshot(pieces.into_iter().map(Ok)).unwrap();
        assert_eq!(other.auth_record().unwrap().as_deref(), Some(&b"record"[..]));
    }
}
