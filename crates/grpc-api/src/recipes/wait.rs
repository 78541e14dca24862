//! Waiting on the member's watch hub, and cleaning up after a waiter the
//! client abandoned.

use std::sync::Arc;

use keel_mvcc::MvccError;
use keel_node::{Member, NodeError};
use keel_proto::etcdserverpb::ResponseHeader;
use keel_proto::mvccpb::event::EventType;
use keel_proto::mvccpb::Event;
use keel_watch_hub::{Delivery, Filters, WatchSpec, WatchStream};
use tokio::sync::mpsc;

use super::{last_created_up_to, RecipeError, Recipes};

/// Deliveries the hub may queue for one recipe watch before it falls back to
/// catching up from storage.
const WATCH_BUFFER: usize = 16;

/// One watch on the member's hub, read event batch by event batch.
pub(super) struct HubWatch {
    // Dropping the stream cancels the watch; it is also told what was
    // taken, for the watch metrics' pending and sent events.
    stream: WatchStream,
    deliveries: mpsc::Receiver<Delivery>,
}

impl HubWatch {
    pub(super) async fn open(member: &Member, spec: WatchSpec) -> Result<HubWatch, RecipeError> {
        let (stream, deliveries) = member.watches().open_stream(WATCH_BUFFER);
        // The recipes only watch non-empty ranges on a fresh stream, so a
        // refusal means the hub is going away.
        stream.watch(spec).await.map_err(|_| RecipeError::WatchLost)?;
        Ok(HubWatch { stream, deliveries })
    }

    /// The next events, with the revision of the response that carried them
    /// (what a watch response's header says). An error once the watch ends:
    /// compacted away, or the hub stopped.
    pub(super) async fn next(&mut self) -> Result<(i64, Arc<[Event]>), RecipeError> {
        loop {
            match self.deliveries.recv().await.map(|delivery| self.stream.took(delivery)) {
                Some(Delivery::Events { revision, events, .. }) => return Ok((revision, events)),
                Some(Delivery::Created { error: None, .. } | Delivery::Progress { .. }) => {}
                Some(Delivery::Canceled { compact_revision, .. }) if compact_revision > 0 => {
                    return Err(NodeError::Mvcc(MvccError::Compacted).into());
                }
                Some(Delivery::Created { error: Some(_), .. } | Delivery::Canceled { .. }) | None => {
                    return Err(RecipeError::WatchLost);
                }
            }
        }
    }
}

pub(super) fn is_delete(event: &Event) -> bool {
    event.r#type == EventType::Delete as i32
}

impl Recipes {
    /// Returns once no key under `prefix` has a create revision at or below
    /// `max_create_revision` (clientv3's `waitDeletes`), with the header of
    /// the read that found none. It waits on the newest such key only, so a
    /// release wakes one waiter, not all; if that key goes while older ones
    /// remain, the next round picks the next one.
    pub(super) async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<ResponseHeader, RecipeError> {
        loop {
            let newest = self.range(last_created_up_to(prefix, max_create_revision)).await?;
            let header = newest.header.unwrap_or_default();
            let Some(ahead) = newest.kvs.first() else {
                return Ok(header);
            };
            self.wait_delete(&ahead.key, header.revision).await?;
        }
    }

    /// Returns once `key` is deleted at or after `revision`.
    async fn wait_delete(&self, key: &[u8], revision: i64) -> Result<(), RecipeError> {
        let spec = WatchSpec {
            filters: Filters { no_put: true, no_delete: false },
            ..WatchSpec::new(key, Vec::new()).from_revision(revision)
        };
        let mut watch = HubWatch::open(&self.member, spec).await?;
        loop {
            let (_, events) = watch.next().await?;
            if events.iter().any(is_delete) {
                return Ok(());
            }
        }
    }
}

/// What to undo when a waiting Lock or Campaign is abandoned.
pub(super) enum Undo {
    /// Delete the queued key (a Mutex's Unlock).
    Delete(Vec<u8>),
    /// Delete the key only if it still has this create revision (an
    /// Election's Resign).
    Resign { key: Vec<u8>, revision: i64 },
}

/// Undoes a queued key if the call waiting behind it is dropped: tonic drops
/// a handler's future when its client cancels, where etcd's recipes see
/// their context cancelled and clean up. Otherwise the key would hold up
/// every later contender until its lease ends.
pub(super) struct UndoOnDrop {
    recipes: Recipes,
    undo: Option<Undo>,
}

impl UndoOnDrop {
    pub(super) fn new(recipes: &Recipes, undo: Undo) -> Self {
        UndoOnDrop { recipes: recipes.clone(), undo: Some(undo) }
    }

    /// The wait finished: nothing to undo.
    pub(super) fn disarm(mut self) {
        self.undo = None;
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        let Some(undo) = self.undo.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let recipes = self.recipes.clone();
        // Not owned by anything: one write, bounded by the member's request
        // timeout, that must outlive the dropped call. If it is lost (the
        // member stops), the key's lease still removes it.
        runtime.spawn(async move {
            let result = match undo {
                Undo::Delete(key) => recipes.delete(key).await.map(drop),
                Undo::Resign { key, revision } => recipes.resign(&key, revision).await.map(drop),
            };
            if let Err(err) = result {
                tracing::warn!(%err, "cannot remove the key of an abandoned lock or campaign");
            }
        });
    }
}
