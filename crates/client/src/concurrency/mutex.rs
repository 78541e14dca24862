//! A fair distributed lock over KV, Watch and Lease, as etcd's Go
//! `concurrency.Mutex`.
//!
//! Each contender puts `<prefix>/<lease id in hex>` attached to its session
//! lease, only if that key does not exist yet (compare `create_revision ==
//! 0`). The key's create revision orders the contenders: the lowest holds
//! the lock, every other one waits for the deletion of the key created just
//! before its own. The holder's create revision grows with every new
//! holder, so it serves as a fencing token.

use keel_proto::etcdserverpb::ResponseHeader;

use super::wait::{first_created, wait_deletes, DeleteOnDrop};
use super::Session;
use crate::kv::{GetOptions, PutOptions};
use crate::txn::{txn_range, Compare, CompareOp, Txn, TxnOp};
use crate::{Client, ClientError};

/// A lock shared by every [`Mutex`] made with the same prefix.
#[derive(Debug, Clone)]
pub struct Mutex {
    client: Client,
    lease: i64,
    prefix: Vec<u8>,
    key: Vec<u8>,
    revision: i64,
    header: Option<ResponseHeader>,
}

/// `<prefix><lease id in lowercase hex>`, the key that stands for one
/// session in a lock's or an election's queue.
pub(crate) fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The queue prefix for a user-given name: etcd's recipes append "/", so
/// "/lock" and "/lock2" never share keys.
pub(crate) fn queue_prefix(name: impl Into<Vec<u8>>) -> Vec<u8> {
    let mut prefix = name.into();
    prefix.push(b'/');
    prefix
}

impl Mutex {
    /// A mutex named `prefix` held through `session`'s lease. Two sessions
    /// using the same prefix exclude each other.
    pub fn new(session: &Session, prefix: impl Into<Vec<u8>>) -> Mutex {
        let prefix = queue_prefix(prefix);
        let key = session_key(&prefix, session.lease());
        Mutex { client: session.client().clone(), lease: session.lease(), prefix, key, revision: 0, header: None }
    }

    /// Waits until this session holds the lock. Locking again while holding
    /// it returns at once. If the wait is abandoned (the future dropped) the
    /// queued key is deleted in the background.
    pub async fn lock(&mut self) -> Result<(), ClientError> {
        let response = self.try_acquire().await?;
        if self.owns(txn_range(&response, 1)) {
            self.header = response.header;
            return Ok(());
        }
        let queued = DeleteOnDrop::new(&self.client, &self.key);
        if let Err(e) = wait_deletes(&self.client, &self.prefix, self.revision - 1).await {
            queued.disarm();
            let _ = self.unlock().await;
            return Err(e);
        }
        queued.disarm();
        // The lease may have expired while waiting, taking the key along.
        let current = self.client.get(self.key.clone()).await?;
        if current.kvs.is_empty() {
            return Err(ClientError::SessionExpired);
        }
        self.header = current.header;
        Ok(())
    }

    /// Takes the lock if it is free, else fails with `Locked` at once
    /// (leaving nothing queued).
    pub async fn try_lock(&mut self) -> Result<(), ClientError> {
        let response = self.try_acquire().await?;
        if self.owns(txn_range(&response, 1)) {
            self.header = response.header;
            return Ok(());
        }
        self.unlock().await?;
        Err(ClientError::Locked)
    }

    /// Releases the lock (or leaves the queue) by deleting this session's key.
    pub async fn unlock(&mut self) -> Result<(), ClientError> {
        self.client.delete(self.key.clone()).await?;
        self.revision = 0;
        Ok(())
    }

    /// The key that stands for this session: `<prefix>/<lease hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The create revision of [`Self::key`] once locked: the fencing token.
    /// A later holder always has a greater one. 0 when not queued.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The header of the response that confirmed the lock.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// A compare that holds only while this session still owns the lock;
    /// guard writes with it so a holder that lost the lock cannot write.
    /// Before `lock` and after `unlock` it never holds.
    pub fn is_owner(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, owned_revision(self.revision))
    }

    /// Puts our key unless it exists (then this session is already queued
    /// or holding), and reads the current holder in the same round trip.
    async fn try_acquire(&mut self) -> Result<keel_proto::etcdserverpb::TxnResponse, ClientError> {
        let holder = TxnOp::get(self.prefix.clone(), first_created());
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), "", PutOptions::new().with_lease(self.lease)), holder.clone()])
            .or_else([TxnOp::get(self.key.clone(), GetOptions::new()), holder]);
        let response = self.client.txn(txn).await.map_err(lease_lost)?;
        self.revision = if response.succeeded {
            response.header.as_ref().map_or(0, |h| h.revision)
        } else {
            txn_range(&response, 0)
                .and_then(|range| range.kvs.first())
                .map(|kv| kv.create_revision)
                .ok_or(ClientError::UnexpectedResponse("lock key vanished inside a txn"))?
        };
        Ok(response)
    }

    fn owns(&self, holder: Option<&keel_proto::etcdserverpb::RangeResponse>) -> bool {
        holder.and_then(|range| range.kvs.first()).is_none_or(|kv| kv.create_revision == self.revision)
    }
}

/// The create revision a compare expects of an owned key. With nothing
/// owned, -1: no key has it, whereas 0 would match the absent key.
pub(crate) fn owned_revision(revision: i64) -> i64 {
    if revision > 0 {
        revision
    } else {
        -1
    }
}

/// A write with an unknown lease means the session's lease is gone.
pub(crate) fn lease_lost(error: ClientError) -> ClientError {
    match error {
        ClientError::LeaseNotFound => ClientError::SessionExpired,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefix_slash_lease_hex() {
        let prefix = queue_prefix("/locks/db");
        assert_eq!(prefix, b"/locks/db/");
        assert_eq!(session_key(&prefix, 0x694d_7a3b_21c0_0f05), b"/locks/db/694d7a3b21c00f05".to_vec());
        assert_eq!(session_key(&prefix, 255), b"/locks/db/ff".to_vec());
    }
}
