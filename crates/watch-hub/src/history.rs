//! Where unsynced watchers read the revisions they missed.

use std::collections::BTreeMap;

use keel_proto::mvccpb::Event;
use parking_lot::Mutex;

/// The store's past, as watchers catch up on it.
pub trait History: Send + Sync + 'static {
    /// Every event of revisions `start_rev..end_rev`, in revision order (and
    /// within a revision, in the order the revision made them).
    fn events(&self, start_rev: i64, end_rev: i64) -> Result<Vec<Event>, HistoryError>;

    /// The revision compacted up to; watchers needing anything before it are
    /// cancelled. -1 or 0 if never compacted.
    fn compact_revision(&self) -> i64;
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("required revision has been compacted (compacted at {0})")]
    Compacted(i64),
    #[error("reading history: {0}")]
    Storage(String),
}

/// A [`History`] in memory, for tests and simulations.
#[derive(Default)]
pub struct MemHistory {
    inner: Mutex<MemInner>,
}

#[derive(Default)]
struct MemInner {
    revisions: BTreeMap<i64, Vec<Event>>,
    compacted: i64,
}

impl MemHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what revision `revision` changed (before notifying the hub).
    pub fn record(&self, revision: i64, events: Vec<Event>) {
        self.inner.lock().revisions.insert(revision, events);
    }

    /// Forgets every revision below `revision`.
    pub fn compact(&self, revision: i64) {
        let mut inner = self.inner.lock();
        inner.revisions = inner.revisions.split_off(&revision);
        inner.compacted = inner.compacted.max(revision);
    }
}

impl History for MemHistory {
    fn events(&self, start_rev: i64, end_rev: i64) -> Result<Vec<Event>, HistoryError> {
        let inner = self.inner.lock();
        if start_rev < inner.compacted {
            return Err(HistoryError::Compacted(inner.compacted));
        }
        if start_rev >= end_rev {
            return Ok(Vec::new());
        }
        Ok(inner.revisions.range(start_rev..end_rev).flat_map(|(_, evs)| evs.iter().cloned()).collect())
    }

    fn compact_revision(&self) -> i64 {
        self.inner.lock().compacted
    }
}
