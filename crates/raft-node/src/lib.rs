//! A raft member built on raft-rs: the raft log and hard state on disk
//! ([`engine`], [`log_store`]) and the thread that drives the state machine
//! ([`driver`]).
//!
//! This crate knows nothing about keys or etcd: proposals are opaque bytes
//! and committed entries go to whatever implements [`Apply`].

pub mod clock;
pub mod driver;
pub mod engine;
pub mod failpoints;
mod log;
pub mod log_store;
mod metrics;
pub mod segment_log;

pub use clock::{Clock, SystemClock, TokioClock};
pub use driver::{
    Apply, Command, NoPeers, RaftConfig, RaftHandle, RaftNode, RaftStatus, RaftStepper, Transport, INBOX_CAPACITY,
};
pub use engine::{LogEngine, LogEngineKind, MemLogEngine, RocksLogEngine};
pub use log_store::RaftLogStore;
pub use metrics::RaftMetrics;
pub use raft::prelude::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
pub use raft::ReadState;
pub use segment_log::SegmentLogEngine;

#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("raft log storage: {0}")]
    Storage(String),
    #[error("raft log is corrupt: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft node has stopped")]
    Stopped,
    /// The raft thread's inbox is full: try again later.
    #[error("raft node is busy")]
    Busy,
}
