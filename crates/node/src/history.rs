//! The MVCC store as the watch hub's history: where watchers that fell
//! behind, or that start in the past, read the revisions they missed.

use std::sync::Arc;

use keel_mvcc::{KvStore, MvccError};
use keel_proto::mvccpb::Event;
use keel_watch_hub::{History, HistoryError};

pub(crate) struct StoreHistory(pub(crate) Arc<KvStore>);

impl History for StoreHistory {
    fn events(&self, start_rev: i64, end_rev: i64) -> Result<Vec<Event>, HistoryError> {
        match self.0.events_between(start_rev, end_rev, usize::MAX) {
            Ok(events) => Ok(events),
            Err(MvccError::Compacted) => Err(HistoryError::Compacted(self.0.compact_revision())),
            Err(err) => Err(HistoryError::Storage(err.to_string())),
        }
    }

    fn compact_revision(&self) -> i64 {
        self.0.compact_revision()
    }
}
