//! The watch hub: etcd's watchable store, without gRPC.
//!
//! A client opens a [`WatchStream`] and creates watches on it, each a
//! [`KeyRange`] from a start revision. Everything the stream must tell its
//! client arrives, in order, as [`Delivery`] values on one channel: the
//! creation, the events, progress notifications and the cancellation.
//!
//! Whoever applies writes calls [`WatchHub::notify`] once per revision, in
//! revision order, after the revision is readable from the [`History`].
//! Watchers that are up to date ("synced") get the events straight from
//! `notify`. A watcher whose start revision is in the past, or whose
//! stream's buffer was full when an event arrived, is "unsynced": a
//! background thread replays its missing revisions from the history and
//! moves it back once it has caught up. So a slow client never makes
//! `notify` wait and never makes the hub hold more than its stream's bounded
//! buffer; it only costs history reads.
//!
//! Guarantees, per watcher: events in revision order, each exactly once, no
//! gaps; all events of one revision in one delivery; a progress
//! notification at revision R follows every event at or below R.

mod history;
mod hub;
mod metrics;
mod range;

pub use history::{History, HistoryError, MemHistory};
pub use hub::{WatchHub, WatchStream, MAX_WATCHES_PER_STREAM};
pub use metrics::WatchMetrics;
pub use range::KeyRange;

use std::sync::Arc;

use keel_proto::mvccpb::Event;

/// What a client asks to watch.
#[derive(Clone, Debug, Default)]
pub struct WatchSpec {
    /// The client's own id for the watch, or 0 to have the stream pick one.
    pub watch_id: i64,
    /// The keys, as a WatchCreateRequest gives them (see
    /// [`KeyRange::from_request`]).
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The first revision to deliver; 0 means the next one.
    pub start_revision: i64,
    pub filters: Filters,
    /// Ask for periodic progress notifications (the stream's owner sends
    /// the requests; see [`WatchStream::request_progress`]).
    pub progress_notify: bool,
    /// Carried back in [`Delivery::Created`] for the stream's owner, which
    /// fills previous key-values and splits large responses.
    pub prev_kv: bool,
    pub fragment: bool,
}

impl WatchSpec {
    /// A watch of `key` (and, with a non-empty `range_end`, the range up to
    /// it) from the next revision on.
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        WatchSpec { key: key.into(), range_end: range_end.into(), ..WatchSpec::default() }
    }

    pub fn from_revision(mut self, start_revision: i64) -> Self {
        self.start_revision = start_revision;
        self
    }
}

/// Event kinds a watcher does not want (etcd's NOPUT and NODELETE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub no_put: bool,
    pub no_delete: bool,
}

impl Filters {
    fn keeps(&self, event: &Event) -> bool {
        let put = event.r#type == keel_proto::mvccpb::event::EventType::Put as i32;
        !(put && self.no_put || !put && self.no_delete)
    }

    fn is_empty(&self) -> bool {
        !self.no_put && !self.no_delete
    }
}

/// The watch id of a progress notification for the whole stream
/// (clientv3's `InvalidWatchID`).
pub const STREAM_PROGRESS_ID: i64 = -1;

/// One message for a stream's client, in the order it must be sent.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// The answer to [`WatchStream::watch`]. On failure `watch_id` is -1 and
    /// `error` says why (the watch was never registered).
    Created { watch_id: i64, revision: i64, spec: Arc<WatchSpec>, error: Option<WatchError> },
    /// Events of one or more consecutive revisions; `revision` is the
    /// store revision they bring the watcher to.
    Events { watch_id: i64, revision: i64, events: Arc<[Event]> },
    /// Every event up to `revision` has been delivered to `watch_id`, or, for
    /// [`STREAM_PROGRESS_ID`], to every watcher of the stream.
    Progress { watch_id: i64, revision: i64 },
    /// The watch ended: the client cancelled it, or (with `compact_revision`
    /// set, and `revision` 0 as etcd sends it) the revisions it still needed
    /// were compacted away.
    Canceled { watch_id: i64, revision: i64, compact_revision: i64 },
}

/// Why a watch could not be created; the texts are etcd's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watch stream closed")]
    StreamClosed,
    /// Keel's own limit (etcd has none): see [`MAX_WATCHES_PER_STREAM`].
    #[error("mvcc: too many watches on this stream")]
    TooManyWatches,
}
