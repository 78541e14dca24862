//! Waiting for the keys ahead of ours to go, shared by Mutex and Election.

use keel_proto::mvccpb::event::EventType;
use tokio_stream::StreamExt;

use crate::kv::{GetOptions, SortOrder, SortTarget};
use crate::watch::WatchOptions;
use crate::{Client, ClientError};

/// The key of `prefix` created first: the lock holder or election leader.
pub(crate) fn first_created() -> GetOptions {
    GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1)
}

/// Returns once no key under `prefix` has a create revision at or below
/// `max_create_revision`. It waits on the newest such key at a time only:
/// waiting on just the one directly ahead avoids every waiter waking on each
/// release (the thundering herd), and if that key goes while older ones
/// remain, the loop picks the next.
pub(crate) async fn wait_deletes(client: &Client, prefix: &[u8], max_create_revision: i64) -> Result<(), ClientError> {
    let newest_ahead = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1)
        .with_max_create_revision(max_create_revision);
    loop {
        let response = client.get_with(prefix, newest_ahead.clone()).await?;
        let Some(ahead) = response.kvs.first() else {
            return Ok(());
        };
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(client, &ahead.key, revision).await?;
    }
}

/// Returns once `key` is deleted at or after `revision`.
async fn wait_delete(client: &Client, key: &[u8], revision: i64) -> Result<(), ClientError> {
    let mut watcher = client.watch(key, WatchOptions::new().with_start_revision(revision).with_no_put()).await?;
    while let Some(response) = watcher.next().await {
        if response?.events.iter().any(|event| event.r#type == EventType::Delete as i32) {
            return Ok(());
        }
    }
    Err(ClientError::UnexpectedResponse("watch ended before the key was deleted"))
}

/// Deletes a queued key if the wait for it is abandoned (its future
/// dropped), so it does not block later waiters until the session ends.
pub(crate) struct DeleteOnDrop {
    client: Client,
    key: Option<Vec<u8>>,
}

impl DeleteOnDrop {
    pub(crate) fn new(client: &Client, key: &[u8]) -> DeleteOnDrop {
        DeleteOnDrop { client: client.clone(), key: Some(key.to_vec()) }
    }

    pub(crate) fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        // Unowned but short: one delete, bounded by the client's timeouts;
        // the session's lease removes the key in any case.
        runtime.spawn(async move {
            let _ = client.delete(key).await;
        });
    }
}
