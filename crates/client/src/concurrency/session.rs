//! A lease kept alive for as long as the session lives.

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Duration};
use tokio_stream::StreamExt;

use crate::{Client, ClientError};

/// Default session TTL in seconds, as in etcd's Go client.
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// How to start a [`Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Lease TTL in seconds: how long the session's keys outlive a client
    /// that stopped without closing it.
    pub ttl: i64,
    /// Adopt this existing lease instead of granting a new one.
    pub lease: Option<i64>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { ttl: DEFAULT_SESSION_TTL, lease: None }
    }
}

/// A lease that a background task keeps alive, the basis of [`super::Mutex`]
/// and [`super::Election`]: their keys are attached to it, so they vanish
/// when the session ends, whether closed, dropped, or expired because this
/// process stopped renewing.
///
/// `close` revokes the lease at once. Dropping the session stops the
/// renewals and revokes the lease from a short-lived task on the current
/// tokio runtime (if there is one); if that cannot run, the lease expires
/// after its TTL.
#[derive(Debug)]
pub struct Session {
    client: Client,
    lease: i64,
    ttl: i64,
    alive: watch::Receiver<bool>,
    /// `None` once closed or orphaned.
    keep_alive: Option<JoinHandle<()>>,
}

impl Session {
    /// Grants (or adopts) the lease and starts keeping it alive.
    pub async fn new(client: &Client, options: SessionOptions) -> Result<Session, ClientError> {
        let (lease, ttl) = match options.lease {
            Some(lease) => (lease, options.ttl),
            None => {
                let granted = client.lease_grant(options.ttl, 0).await?;
                (granted.id, granted.ttl)
            }
        };
        let mut renewals = client.lease_keep_alive(lease).await?;
        let (alive_tx, alive) = watch::channel(true);
        let keep_alive = tokio::spawn(async move {
            while let Some(renewal) = renewals.next().await {
                if let Err(e) = renewal {
                    tracing::warn!(lease, error = %e, "session lease lost");
                    break;
                }
            }
            let _ = alive_tx.send(false);
        });
        Ok(Session { client: client.clone(), lease, ttl, alive, keep_alive: Some(keep_alive) })
    }

    /// The client the session runs on.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The session's lease id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The lease TTL in seconds, as granted.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// False once the lease is known to be lost.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves when the lease is lost (expired, revoked elsewhere, or not
    /// renewable for a whole TTL).
    pub async fn expired(&self) {
        let mut alive = self.alive.clone();
        let _ = alive.wait_for(|alive| !alive).await;
    }

    /// Stops renewing and revokes the lease, deleting the session's keys.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stop_keep_alive();
        let revoke = self.client.lease_revoke(self.lease);
        match timeout(Duration::from_secs(self.ttl.max(1) as u64), revoke).await {
            Ok(Ok(_)) | Ok(Err(ClientError::LeaseNotFound)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout(Duration::from_secs(self.ttl.max(1) as u64))),
        }
    }

    /// Stops renewing without revoking: the lease expires after its TTL.
    pub fn orphan(mut self) {
        self.stop_keep_alive();
    }

    fn stop_keep_alive(&mut self) -> bool {
        match self.keep_alive.take() {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.stop_keep_alive() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let lease = self.lease;
        let limit = Duration::from_secs(self.ttl.max(1) as u64);
        // Not owned by anything: bounded by the TTL, after which the lease
        // would be gone anyway.
        runtime.spawn(async move {
            let _ = timeout(limit, client.lease_revoke(lease)).await;
        });
    }
}
