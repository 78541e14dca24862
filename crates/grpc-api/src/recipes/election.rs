//! The Election service's recipes: etcd's `concurrency.Election`.

use keel_proto::etcdserverpb::{ResponseHeader, TxnRequest};
use keel_proto::mvccpb::KeyValue;
use keel_proto::v3electionpb::{LeaderKey, LeaderResponse};
use keel_watch_hub::WatchSpec;
use tokio::sync::mpsc;

use super::wait::{is_delete, HubWatch, Undo, UndoOnDrop};
use super::{
    create_revision_is, delete_op, existing_create_revision, first_created, key_only, prefix_end, put_op, queue_key,
    queue_prefix, range_at, range_op, revision_of, RecipeError, Recipes,
};

impl Recipes {
    /// Waits until `lease` leads election `name` with `value`. The header is
    /// that of the first write (etcd's, even when the campaign then waited).
    /// Campaigning again with the same lease finds the key queued; a new
    /// value is proclaimed on it first.
    pub(crate) async fn campaign(
        &self,
        name: Vec<u8>,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<(ResponseHeader, LeaderKey), RecipeError> {
        let lease = self.session_lease(lease).await?;
        let prefix = queue_prefix(name.clone());
        let key = queue_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![put_op(&key, value.clone(), lease)],
            failure: vec![range_op(key_only(&key))],
        };
        let response = self.txn(txn).await?;
        let mut revision = revision_of(&response);
        if !response.succeeded {
            revision = existing_create_revision(&response, 0)?;
            let queued = range_at(&response, 0).and_then(|range| range.kvs.first());
            if queued.is_some_and(|kv| kv.value != value) {
                if let Err(err) = self.proclaim(&key, revision, lease, value).await {
                    // Best effort, as etcd's: the proclaim's error is the answer.
                    let _ = self.resign(&key, revision).await;
                    return Err(err);
                }
            }
        }

        let abandoned = UndoOnDrop::new(self, Undo::Resign { key: key.clone(), revision });
        let waited = self.wait_deletes(&prefix, revision - 1).await;
        abandoned.disarm();
        // Any other failure keeps the key queued, as etcd does.
        waited?;
        let header = response.header.unwrap_or_default();
        Ok((header, LeaderKey { name, key, rev: revision, lease }))
    }

    /// Replaces the leader's value, if `key` still has create revision
    /// `revision`; else the caller no longer leads.
    pub(crate) async fn proclaim(
        &self,
        key: &[u8],
        revision: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<ResponseHeader, RecipeError> {
        let txn = TxnRequest {
            compare: vec![create_revision_is(key, revision)],
            success: vec![put_op(key, value, lease)],
            failure: Vec::new(),
        };
        let response = self.txn(txn).await?;
        if !response.succeeded {
            return Err(RecipeError::NotLeader);
        }
        Ok(response.header.unwrap_or_default())
    }

    /// Proclaim for a `LeaderKey` as the service receives it: etcd resumes
    /// the election in a session of the key's lease, so lease 0 is granted
    /// a fresh lease, which the new value is then attached to.
    pub(crate) async fn proclaim_as(&self, leader: LeaderKey, value: Vec<u8>) -> Result<ResponseHeader, RecipeError> {
        let lease = self.session_lease(leader.lease).await?;
        self.proclaim(&leader.key, leader.rev, lease, value).await
    }

    /// Deletes `key` if it still has create revision `revision`: leadership
    /// (or a place in the queue) ends. Not leading is no error.
    pub(crate) async fn resign(&self, key: &[u8], revision: i64) -> Result<ResponseHeader, RecipeError> {
        let txn = TxnRequest {
            compare: vec![create_revision_is(key, revision)],
            success: vec![delete_op(key)],
            failure: Vec::new(),
        };
        Ok(self.txn(txn).await?.header.unwrap_or_default())
    }

    /// Resign for a `LeaderKey` as the service receives it (a session of
    /// its lease is made first, as etcd's does, granting one for lease 0).
    pub(crate) async fn resign_as(&self, leader: LeaderKey) -> Result<ResponseHeader, RecipeError> {
        self.session_lease(leader.lease).await?;
        self.resign(&leader.key, leader.rev).await
    }

    /// The current leader of election `name`.
    pub(crate) async fn leader(&self, name: Vec<u8>) -> Result<LeaderResponse, RecipeError> {
        let current = self.range(first_created(&queue_prefix(name))).await?;
        let kv = current.kvs.into_iter().next().ok_or(RecipeError::NoLeader)?;
        Ok(LeaderResponse { header: current.header, kv: Some(kv) })
    }

    /// Sends every leader of election `name` and each value it proclaims to
    /// `out`, in order (etcd's `Election.Observe`): the current leader (once
    /// there is one), then each put on its key until the key is deleted,
    /// then the next leader. Returns when `out` is closed or a read or watch
    /// fails (the stream then just ends, as etcd's does).
    pub(crate) async fn observe(&self, name: Vec<u8>, out: &mpsc::Sender<LeaderResponse>) {
        let prefix = queue_prefix(name);
        loop {
            let Ok((header, leader)) = self.next_leader(&prefix).await else { return };
            let following = WatchSpec::new(leader.key.clone(), Vec::new()).from_revision(header.revision + 1);
            if out.send(LeaderResponse { header: Some(header), kv: Some(leader) }).await.is_err() {
                return;
            }
            let Ok(mut watch) = HubWatch::open(&self.member, following).await else { return };
            'following: loop {
                let Ok((revision, events)) = watch.next().await else { return };
                for event in events.iter() {
                    if is_delete(event) {
                        break 'following;
                    }
                    let update = LeaderResponse { header: Some(self.member.header_at(revision)), kv: event.kv.clone() };
                    if out.send(update).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The current leader under `prefix`, or the first key put there if
    /// there is none (then the header's revision is that put's).
    async fn next_leader(&self, prefix: &[u8]) -> Result<(ResponseHeader, KeyValue), RecipeError> {
        let current = self.range(first_created(prefix)).await?;
        let header = current.header.unwrap_or_default();
        if let Some(leader) = current.kvs.into_iter().next() {
            return Ok((header, leader));
        }
        let spec = WatchSpec::new(prefix.to_vec(), prefix_end(prefix)).from_revision(header.revision);
        let mut watch = HubWatch::open(&self.member, spec).await?;
        loop {
            let (_, events) = watch.next().await?;
            // Only a put makes a leader; a delete here would only make the
            // loop spin (etcd's words).
            if let Some(leader) = events.iter().find(|e| !is_delete(e)).and_then(|e| e.kv.clone()) {
                return Ok((self.member.header_at(leader.mod_revision), leader));
            }
        }
    }
}
