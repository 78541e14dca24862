//! An async client for the etcd v3 API, for Keel and for etcd itself.
//!
//! [`Client`] wraps the tonic stubs of `keel-proto` with typed calls: KV
//! (`get`, `put`, `delete`, [`Txn`], `compact`), leases (including a
//! background keep-alive), watches, the Lock and Election services, member
//! list and status. Responses are etcd's own messages, re-exported in
//! [`proto`]. [`concurrency`] adds `Session`, `Mutex` and `Election`
//! recipes compatible with etcd's Go client.
//!
//! # Endpoints and failover
//!
//! The client talks to one endpoint at a time. When a call finds it
//! unavailable, the client moves to the next endpoint in the list. Reads and
//! other calls without effect are retried there; writes only when the
//! request certainly never left (the connection was refused), because a
//! write that may have reached a server could otherwise be applied twice.
//! Watches and keep-alives re-open their streams themselves; a watch resumes
//! at the revision after the last one it delivered, so it neither skips nor
//! repeats events.
//!
//! ```no_run
//! # async fn example() -> Result<(), keel_client::ClientError> {
//! use keel_client::{Client, ClientOptions, GetOptions};
//!
//! let client = Client::connect(["127.0.0.1:2379", "127.0.0.1:22379"], ClientOptions::default()).await?;
//! client.put("/config/mode", "fast").await?;
//! let found = client.get_with("/config/", GetOptions::new().with_prefix()).await?;
//! for kv in found.kvs {
//!     println!("{} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! TLS: [`TlsOptions`] in [`ClientOptions::tls`] (etcdctl's `--cacert`,
//! `--cert`, `--key`, `--insecure-skip-tls-verify`).
//!
//! Authentication: [`Credentials`] in [`ClientOptions::credentials`]
//! (etcdctl's `--user`); the client logs in again by itself when its token
//! expires.

mod auth;
mod auth_manage;
mod client;
mod cluster;
pub mod concurrency;
mod election;
mod endpoints;
mod error;
mod keys;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod retry;
mod tls;
mod txn;
mod watch;

pub use auth::Credentials;
pub use client::{Client, ClientOptions};
pub use election::LeaderStream;
pub use endpoints::KeepAlive;
pub use error::ClientError;
pub use keys::prefix_end;
pub use kv::{DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget};
pub use lease::LeaseKeepAlive;
pub use maintenance::SnapshotStream;
pub use tls::TlsOptions;
/// gRPC status codes, as found in [`ClientError::code`].
pub use tonic::Code;
pub use txn::{txn_delete, txn_put, txn_range, Compare, CompareOp, Txn, TxnOp};
pub use watch::{WatchOptions, Watcher};

/// The etcd v3 wire messages this client sends and returns.
pub mod proto {
    pub use keel_proto::{etcdserverpb, mvccpb, v3electionpb, v3lockpb};
}
