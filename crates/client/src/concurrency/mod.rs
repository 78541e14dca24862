//! Coordination recipes built only on KV, Watch and Lease, with the key
//! layout and semantics of etcd's Go `clientv3/concurrency`, so Rust and Go
//! processes can share one lock or election.
//!
//! A [`Session`] owns a lease kept alive in the background; a [`Mutex`] or
//! an [`Election`] made from it attaches its key to that lease, so a process
//! that dies releases what it held once the lease expires.

mod election;
mod mutex;
mod session;
mod wait;

pub use election::{Election, Observer};
pub use mutex::Mutex;
pub use session::{Session, SessionOptions, DEFAULT_SESSION_TTL};
