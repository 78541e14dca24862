//! The Lock service's recipe: etcd 3.4's `concurrency.Mutex.Lock`.

use keel_proto::etcdserverpb::{ResponseHeader, TxnRequest};

use super::wait::{Undo, UndoOnDrop};
use super::{
    create_revision_is, existing_create_revision, first_created, key_only, put_op, queue_key, queue_prefix, range_at,
    range_op, revision_of, RecipeError, Recipes,
};

impl Recipes {
    /// Waits until `lease` holds lock `name`; returns the header of the
    /// response that established it and the ownership key
    /// `<name>/<lease hex>`. Locking again with the same lease finds the key
    /// already queued and goes on from there.
    ///
    /// As etcd 3.4, the key is not read again once the wait ends: if the
    /// lease expired meanwhile (taking the key along), the lock is still
    /// reported, and any write fenced on the key's create revision fails.
    pub(crate) async fn lock(&self, name: Vec<u8>, lease: i64) -> Result<(ResponseHeader, Vec<u8>), RecipeError> {
        let lease = self.session_lease(lease).await?;
        let prefix = queue_prefix(name);
        let key = queue_key(&prefix, lease);
        // Queue (or find our queued key) and read the holder in one round trip.
        let txn = TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![put_op(&key, Vec::new(), lease), range_op(first_created(&prefix))],
            failure: vec![range_op(key_only(&key)), range_op(first_created(&prefix))],
        };
        let response = self.txn(txn).await?;
        let revision =
            if response.succeeded { revision_of(&response) } else { existing_create_revision(&response, 0)? };
        let holder = range_at(&response, 1).and_then(|range| range.kvs.first());
        if holder.is_none_or(|kv| kv.create_revision == revision) {
            return Ok((response.header.unwrap_or_default(), key));
        }

        let abandoned = UndoOnDrop::new(self, Undo::Delete(key.clone()));
        let waited = self.wait_deletes(&prefix, revision - 1).await;
        abandoned.disarm();
        match waited {
            Ok(header) => Ok((header, key)),
            Err(err) => {
                // etcd leaves the queue when the wait fails.
                if let Err(undo) = self.delete(key).await {
                    tracing::warn!(%undo, "cannot remove the key of a failed lock");
                }
                Err(err)
            }
        }
    }
}
