//! bbolt database files as etcd writes them (its backend `member/snap/db` and
//! the files `etcdctl snapshot save` makes): a [`Db`] reader that walks pages
//! through seeks in bounded memory and never trusts an offset, and a
//! streaming [`Writer`] whose files real bbolt and etcd open.
//!
//! Only what etcd uses: top-level buckets of key/value pairs (etcd's are
//! `key`, `meta`, `lease`, `members`, `members_removed`, `alarm`, `auth`,
//! `authUsers`, `authRoles`, `cluster`), format version 2, files with or
//! without a saved freelist (the writer never saves one, as etcd since 3.3).
//! The layout is described in [`format`].

mod error;
pub mod format;
mod reader;
mod writer;

pub use error::{Error, Result};
pub use format::Meta;
pub use reader::{Bucket, Db, Entries};
pub use writer::{Options, Writer};

#[cfg(test)]
mod tests;
