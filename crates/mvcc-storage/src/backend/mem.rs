//! In-memory engine: one `BTreeMap` per keyspace behind a single lock, so a
//! batch is atomic across keyspaces simply by holding the write lock.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{Backend, BackendError, BatchOp, Frozen, Keyspace, ScanVisitor, WriteBatch};

type Space = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Default)]
struct Inner {
    spaces: [Space; Keyspace::ALL.len()],
    /// Sum of key and value lengths over all keyspaces.
    bytes: u64,
}

/// A volatile engine for tests and single-process experiments.
#[derive(Default)]
pub struct MemBackend {
    inner: RwLock<Inner>,
    /// What the last `sync` made durable, when power loss is modelled.
    durable: Option<parking_lot::Mutex<Inner>>,
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine that remembers what each `sync` made durable, so a
    /// simulation can model a power loss ([`MemBackend::after_power_loss`]).
    pub fn with_power_loss() -> Self {
        MemBackend { inner: RwLock::default(), durable: Some(parking_lot::Mutex::default()) }
    }

    /// The engine as a power loss leaves it: as of its last `sync` (every
    /// write since is lost). Without the model, everything survives.
    pub fn after_power_loss(&self) -> MemBackend {
        let kept = match &self.durable {
            Some(durable) => durable.lock().clone(),
            None => self.inner.read().clone(),
        };
        MemBackend { inner: RwLock::new(kept.clone()), durable: self.durable.as_ref().map(|_| kept.into()) }
    }
}

impl Backend for MemBackend {
    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.inner.read().spaces[space.slot()].get(key).cloned())
    }

    fn multi_get(&self, space: Keyspace, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let inner = self.inner.read();
        let map = &inner.spaces[space.slot()];
        Ok(keys.iter().map(|k| map.get(*k).cloned()).collect())
    }

    fn multi_get_in_memory(
        &self,
        space: Keyspace,
        keys: &[&[u8]],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
        self.multi_get(space, keys).map(Some)
    }

    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError> {
        if matches!(end, Some(e) if e <= start) {
            return Ok(());
        }
        let inner = self.inner.read();
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (k, v) in inner.spaces[space.slot()].range::<[u8], _>((Bound::Included(start), upper)) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut inner = self.inner.write();
        let Inner { spaces, bytes } = &mut *inner;
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { space, key, value } => {
                    let added = (key.len() + value.len()) as u64;
                    let klen = key.len() as u64;
                    if let Some(old) = spaces[space.slot()].insert(key, value) {
                        *bytes -= klen + old.len() as u64;
                    }
                    *bytes += added;
                }
                BatchOp::Delete { space, key } => {
                    if let Some(old) = spaces[space.slot()].remove(&key) {
                        *bytes -= (key.len() + old.len()) as u64;
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), BackendError> {
        if let Some(durable) = &self.durable {
            *durable.lock() = self.inner.read().clone();
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.inner.read().bytes
    }

    fn size_in_use(&self) -> u64 {
        self.size()
    }

    fn checkpoint(&self) -> Result<Box<dyn Frozen>, BackendError> {
        let copy = MemBackend { inner: RwLock::new(self.inner.read().clone()), durable: None };
        Ok(Box::new(FrozenMem(copy)))
    }
}

/// A copy of the maps: memory is all an in-memory engine has.
struct FrozenMem(MemBackend);

impl Frozen for FrozenMem {
    fn scan(
        &self,
        space: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut ScanVisitor<'_>,
    ) -> Result<(), BackendError> {
        self.0.scan(space, start, end, visit)
    }
}
