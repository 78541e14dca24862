//! The member's v2 keys store (`--enable-v2`): `keel-v2store`'s state
//! machine, loaded from and persisted to the MVCC store's v2 keyspace in the
//! same batches as the raft index of each write.

use keel_mvcc::{KvStore, V2Record};
use keel_proto::keelpb::{v2_write::Op, V2Write};
use keel_v2store::{Change, Event, Store, V2Error, Write};
use parking_lot::RwLock;

use crate::NodeError;

pub(crate) struct V2Keys {
    store: RwLock<Store>,
}

/// The writes etcd makes to its v2 store under `/0` for the cluster's
/// membership: Keel counts them in the v2 index (and the store statistics)
/// as etcd does, so `X-Etcd-Index` reads the same on both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InternalWrites {
    pub(crate) sets: u32,
    pub(crate) creates: u32,
    pub(crate) updates: u32,
    pub(crate) deletes: u32,
}

impl InternalWrites {
    /// Members added: each a create of its raft attributes.
    pub(crate) fn added(members: u32) -> Self {
        InternalWrites { creates: members, ..Self::default() }
    }
    /// Members removed: each its record deleted and a removed-member record created.
    pub(crate) fn removed(members: u32) -> Self {
        InternalWrites { deletes: members, creates: members, ..Self::default() }
    }
    /// A member's peer URLs updated.
    pub(crate) const UPDATED: Self = InternalWrites { sets: 0, creates: 0, updates: 1, deletes: 0 };
    /// A member's attributes published (and, once, the cluster version set).
    pub(crate) fn published(with_cluster_version: bool) -> Self {
        InternalWrites { sets: 1 + u32::from(with_cluster_version), ..Self::default() }
    }

    pub(crate) fn and(self, other: Self) -> Self {
        InternalWrites {
            sets: self.sets + other.sets,
            creates: self.creates + other.creates,
            updates: self.updates + other.updates,
            deletes: self.deletes + other.deletes,
        }
    }

    fn steps(self) -> u32 {
        self.sets + self.creates + self.updates + self.deletes
    }
}

impl V2Keys {
    /// A store no one reads (an applier built without a member).
    pub(crate) fn empty() -> V2Keys {
        V2Keys { store: RwLock::new(Store::new()) }
    }

    pub(crate) fn load(kv: &KvStore) -> Result<V2Keys, NodeError> {
        let records = kv.v2_records().map_err(NodeError::Mvcc)?;
        let store = Store::load(records).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        Ok(V2Keys { store: RwLock::new(store) })
    }

    /// Reloads after the leader's snapshot replaced the keyspace.
    pub(crate) fn reload(&self, kv: &KvStore) -> Result<(), NodeError> {
        let fresh = V2Keys::load(kv)?;
        *self.store.write() = fresh.store.into_inner();
        Ok(())
    }

    /// Applies a replicated write at raft `index` and persists it with the
    /// index (a refusal persists only the index).
    pub(crate) fn apply(&self, kv: &KvStore, index: u64, write: &Write) -> Result<Result<Event, V2Error>, NodeError> {
        let mut store = self.store.write();
        let (outcome, changes) = store.apply(write);
        kv.apply_v2(index, records(changes)).map_err(NodeError::Mvcc)?;
        Ok(outcome)
    }

    /// The records of `steps` internal writes, applied to the in-memory
    /// store now; the caller persists them in its own batch at the same
    /// raft index.
    pub(crate) fn internal(&self, writes: InternalWrites) -> Vec<V2Record> {
        if writes.steps() == 0 {
            return Vec::new();
        }
        let mut store = self.store.write();
        let (_, changes) = store.apply(&Write::Internal { steps: writes.steps() });
        let count = |n: u32| u64::from(n);
        store.count_internal(count(writes.sets), count(writes.creates), count(writes.updates), count(writes.deletes));
        records(changes)
    }

    /// Whether the store has not counted any write yet (a fresh cluster).
    pub(crate) fn is_fresh(&self) -> bool {
        self.store.read().index() == 0
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.read())
    }
}

fn records(changes: Vec<Change>) -> Vec<V2Record> {
    changes
        .into_iter()
        .map(|change| match change {
            Change::Put { key, value } => V2Record::Put { key, value },
            Change::Delete { key } => V2Record::Delete { key },
        })
        .collect()
}

/// The raft form of a write.
pub(crate) fn encode(write: Write) -> V2Write {
    let mut out = V2Write::default();
    match write {
        Write::Set { key, value, dir, expire, refresh } => {
            out.set_op(Op::Set);
            (out.key, out.value, out.dir, out.expire, out.refresh) = (key, value, dir, expire, refresh);
        }
        Write::Create { key, value, dir, unique, expire } => {
            out.set_op(Op::Create);
            (out.key, out.value, out.dir, out.unique, out.expire) = (key, value, dir, unique, expire);
        }
        Write::Update { key, value, expire, refresh } => {
            out.set_op(Op::Update);
            (out.key, out.value, out.expire, out.refresh) = (key, value, expire, refresh);
        }
        Write::CompareAndSwap { key, prev_value, prev_index, value, expire, refresh } => {
            out.set_op(Op::CompareAndSwap);
            (out.key, out.prev_value, out.prev_index, out.value, out.expire, out.refresh) =
                (key, prev_value, prev_index, value, expire, refresh);
        }
        Write::Delete { key, dir, recursive } => {
            out.set_op(Op::Delete);
            (out.key, out.dir, out.recursive) = (key, dir, recursive);
        }
        Write::CompareAndDelete { key, prev_value, prev_index } => {
            out.set_op(Op::CompareAndDelete);
            (out.key, out.prev_value, out.prev_index) = (key, prev_value, prev_index);
        }
        Write::Expire { now } => {
            out.set_op(Op::Expire);
            out.now = now;
        }
        // Internal steps ride on the membership entries that cause them.
        Write::Internal { .. } => {}
    }
    out
}

/// A write from its raft form; `None` for an operation this build does not
/// know (an entry from a newer member).
pub(crate) fn decode(write: V2Write) -> Option<Write> {
    let op = Op::try_from(write.op).ok()?;
    let V2Write { key, value, dir, unique, recursive, refresh, prev_value, prev_index, expire, now, .. } = write;
    Some(match op {
        Op::Set => Write::Set { key, value, dir, expire, refresh },
        Op::Create => Write::Create { key, value, dir, unique, expire },
        Op::Update => Write::Update { key, value, expire, refresh },
        Op::CompareAndSwap => Write::CompareAndSwap { key, prev_value, prev_index, value, expire, refresh },
        Op::Delete => Write::Delete { key, dir, recursive },
        Op::CompareAndDelete => Write::CompareAndDelete { key, prev_value, prev_index },
        Op::Expire => Write::Expire { now },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_survives_its_raft_form() {
        let writes = [
            Write::Set { key: "/a".into(), value: "1".into(), dir: false, expire: Some(5), refresh: true },
            Write::Create { key: "/q".into(), value: "v".into(), dir: true, unique: true, expire: None },
            Write::Update { key: "/a".into(), value: "2".into(), expire: Some(-3), refresh: false },
            Write::CompareAndSwap {
                key: "/a".into(),
                prev_value: "2".into(),
                prev_index: 9,
                value: "3".into(),
                expire: None,
                refresh: false,
            },
            Write::Delete { key: "/d".into(), dir: true, recursive: true },
            Write::CompareAndDelete { key: "/a".into(), prev_value: String::new(), prev_index: 4 },
            Write::Expire { now: 1_796_568_654_813_674_453 },
        ];
        for write in writes {
            assert_eq!(decode(encode(write.clone())), Some(write));
        }
    }
}
