//! The server-side Lock service (`v3lockpb`). The client-side recipe that
//! needs only KV, Watch and Lease is [`crate::concurrency::Mutex`].

use keel_proto::v3lockpb::lock_client::LockClient;
use keel_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

use crate::client::{Deadline, Retry};
use crate::{Client, ClientError};

impl Client {
    /// Waits until the lock `name` is held with `lease` and returns the key
    /// that stands for the ownership; the lock is released by `unlock` or
    /// when the lease ends.
    pub async fn lock(&self, name: impl Into<Vec<u8>>, lease: i64) -> Result<LockResponse, ClientError> {
        let request = LockRequest { name: name.into(), lease };
        // Waits for other holders by design, so no request deadline.
        self.call(Retry::IfNotSent, Deadline::None, |channel| {
            let request = request.clone();
            async move { LockClient::new(channel).lock(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Releases the lock whose ownership key `lock` returned.
    pub async fn unlock(&self, key: impl Into<Vec<u8>>) -> Result<UnlockResponse, ClientError> {
        let request = UnlockRequest { key: key.into() };
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move { LockClient::new(channel).unlock(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }
}
