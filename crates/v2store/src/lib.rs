//! etcd's v2 keys store, as etcd 3.4 serves it with `--enable-v2`: a tree of
//! directories and string values under one global index, with TTLs,
//! in-order keys, compare-and-swap, and long-poll watches over a history of
//! the last 1000 events. See `docs/etcd-v2-reference.md` for the observed
//! behaviour this crate reproduces.
//!
//! The store is a deterministic state machine: every member applies the same
//! [`Write`]s in raft order and reaches the same state. It holds the tree in
//! memory for reads and hands back, with every applied write, the
//! [`Change`]s that make it durable; the caller writes those in the same
//! atomic batch as its raft applied index, and [`Store::load`] rebuilds the
//! store from them after a restart. Time never comes from a clock in here:
//! expirations are absolute times fixed by the member that received the
//! request, and [`Write::Expire`] carries the leader's clock.

mod error;
mod history;
mod json;
mod record;
mod store;
mod watch;

pub use error::{ErrorCode, V2Error};
pub use json::{render_time, write_json_string};
pub use store::{Action, Change, Event, LoadError, NodeView, Stats, Store, Write};
pub use watch::Watcher;

/// Unix time in nanoseconds. v2 expirations are absolute times.
pub type Nanos = i64;

/// How many events the watch history holds (etcd's `newWatchHub(1000)`).
pub const HISTORY_LEN: usize = 1000;

/// How many undelivered events a watcher may hold before it is dropped
/// (etcd's per-watcher channel of 100).
pub const WATCHER_BUFFER: usize = 100;
