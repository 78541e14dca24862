//! Leader election over KV, Watch and Lease, as etcd's Go
//! `concurrency.Election`.
//!
//! Campaigners queue like [`super::Mutex`] contenders, under
//! `<prefix>/<lease hex>`, with their value as the key's value. The key
//! created first is the leader; its value is what the leader proclaims.

use std::pin::Pin;
use std::task::{Context, Poll};

use keel_proto::etcdserverpb::ResponseHeader;
use keel_proto::mvccpb::event::EventType;
use keel_proto::mvccpb::KeyValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};

use super::mutex::{lease_lost, owned_revision, queue_prefix, session_key};
use super::wait::{first_created, wait_deletes, DeleteOnDrop};
use super::Session;
use crate::kv::{DeleteOptions, GetOptions, PutOptions};
use crate::txn::{txn_range, Compare, CompareOp, Txn, TxnOp};
use crate::watch::WatchOptions;
use crate::{Client, ClientError};

/// Leader values buffered for a slow observer.
const OBSERVE_BUFFER: usize = 16;

/// One election, seen from one session.
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    lease: i64,
    prefix: Vec<u8>,
    key: Vec<u8>,
    /// Create revision of `key` while campaigning or leading.
    revision: i64,
    leading: bool,
    header: Option<ResponseHeader>,
}

impl Election {
    /// The election named `prefix`, campaigned for with `session`'s lease.
    pub fn new(session: &Session, prefix: impl Into<Vec<u8>>) -> Election {
        let prefix = queue_prefix(prefix);
        let key = session_key(&prefix, session.lease());
        Election {
            client: session.client().clone(),
            lease: session.lease(),
            prefix,
            key,
            revision: 0,
            leading: false,
            header: None,
        }
    }

    /// Waits until this session leads, then publishes `value`. Campaigning
    /// again while leading only proclaims the new value.
    pub async fn campaign(&mut self, value: impl Into<Vec<u8>>) -> Result<(), ClientError> {
        let value = value.into();
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.clone(), value.clone(), PutOptions::new().with_lease(self.lease))])
            .or_else([TxnOp::get(self.key.clone(), GetOptions::new())]);
        let response = self.client.txn(txn).await.map_err(lease_lost)?;
        if response.succeeded {
            self.revision = response.header.as_ref().map_or(0, |h| h.revision);
        } else {
            let existing = txn_range(&response, 0)
                .and_then(|range| range.kvs.first())
                .ok_or(ClientError::UnexpectedResponse("campaign key vanished inside a txn"))?;
            self.revision = existing.create_revision;
            if existing.value != value {
                self.leading = true;
                if let Err(e) = self.proclaim(value).await {
                    let _ = self.resign().await;
                    return Err(e);
                }
            }
        }
        self.leading = true;

        let queued = DeleteOnDrop::new(&self.client, &self.key);
        let waited = wait_deletes(&self.client, &self.prefix, self.revision - 1).await;
        queued.disarm();
        if let Err(e) = waited {
            let _ = self.resign().await;
            return Err(e);
        }
        let current = self.client.get(self.key.clone()).await?;
        if current.kvs.is_empty() {
            self.leading = false;
            return Err(ClientError::SessionExpired);
        }
        self.header = response.header;
        Ok(())
    }

    /// Replaces the published value; `NotLeader` if this session no longer
    /// leads.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), ClientError> {
        if !self.leading {
            return Err(ClientError::NotLeader);
        }
        let txn = Txn::new().when([self.is_leader()]).and_then([TxnOp::put(
            self.key.clone(),
            value,
            PutOptions::new().with_lease(self.lease),
        )]);
        let response = self.client.txn(txn).await.map_err(lease_lost)?;
        if !response.succeeded {
            return Err(ClientError::NotLeader);
        }
        Ok(())
    }

    /// Gives up leadership (or leaves the queue), so the next campaigner
    /// wins. Does nothing if not campaigning.
    pub async fn resign(&mut self) -> Result<(), ClientError> {
        if !self.leading {
            return Ok(());
        }
        let txn = Txn::new().when([self.is_leader()]).and_then([TxnOp::delete(self.key.clone(), DeleteOptions::new())]);
        let result = self.client.txn(txn).await;
        self.leading = false;
        self.revision = 0;
        result.map(|_| ())
    }

    /// The current leader's key and value; `NoLeader` if nobody campaigns.
    pub async fn leader(&self) -> Result<KeyValue, ClientError> {
        let response = self.client.get_with(self.prefix.clone(), first_created()).await?;
        response.kvs.into_iter().next().ok_or(ClientError::NoLeader)
    }

    /// Streams the leader's key-value each time leadership changes or the
    /// leader proclaims, starting with the current leader (or the first one
    /// to come). Dropping the stream stops it.
    pub fn observe(&self) -> Observer {
        let (out, rx) = mpsc::channel(OBSERVE_BUFFER);
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = observe(&client, &prefix, &out).await {
                let _ = out.send(Err(e)).await;
            }
        });
        Observer { rx, task }
    }

    /// This session's key in the election: `<prefix>/<lease hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The create revision of [`Self::key`] while leading: a fencing token
    /// that grows with every new leader. 0 when not campaigning.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Whether this session has won (and not resigned). Leadership also ends
    /// when the session's lease does; guard writes with [`Self::is_leader`].
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// The header of the response that won the campaign.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// A compare that holds only while this session still leads.
    pub fn is_leader(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, owned_revision(self.revision))
    }
}

/// Follows the leader: the key created first under `prefix`, until it is
/// deleted, then the next one.
async fn observe(
    client: &Client,
    prefix: &[u8],
    out: &mpsc::Sender<Result<KeyValue, ClientError>>,
) -> Result<(), ClientError> {
    loop {
        let response = client.get_with(prefix, first_created()).await?;
        let read_at = response.header.as_ref().map_or(0, |h| h.revision);
        let (leader, since) = match response.kvs.into_iter().next() {
            Some(leader) => (leader, read_at),
            None => {
                let leader = first_put(client, prefix, read_at + 1).await?;
                let since = leader.mod_revision;
                (leader, since)
            }
        };
        let key = leader.key.clone();
        if out.send(Ok(leader)).await.is_err() {
            return Ok(());
        }
        let mut changes = client.watch(key, WatchOptions::new().with_start_revision(since + 1)).await?;
        'leader: loop {
            let response = changes.next().await.ok_or(ClientError::UnexpectedResponse("watch ended"))??;
            for event in response.events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                if let Some(kv) = event.kv {
                    if out.send(Ok(kv)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The first key put under `prefix` from `revision` on: with no key there
/// before, it is the one created first.
async fn first_put(client: &Client, prefix: &[u8], revision: i64) -> Result<KeyValue, ClientError> {
    let options = WatchOptions::new().with_prefix().with_start_revision(revision).with_no_delete();
    let mut puts = client.watch(prefix, options).await?;
    loop {
        let response = puts.next().await.ok_or(ClientError::UnexpectedResponse("watch ended"))??;
        if let Some(kv) = response.events.into_iter().find_map(|event| event.kv) {
            return Ok(kv);
        }
    }
}

/// Leader changes from [`Election::observe`]; ends with an error if
/// following the leader fails.
#[derive(Debug)]
pub struct Observer {
    rx: mpsc::Receiver<Result<KeyValue, ClientError>>,
    task: JoinHandle<()>,
}

impl Stream for Observer {
    type Item = Result<KeyValue, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
