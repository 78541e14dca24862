//! KV calls: range, put, delete, txn, compact.

use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnResponse,
};

pub use keel_proto::etcdserverpb::range_request::{SortOrder, SortTarget};

use crate::client::{Deadline, Retry};
use crate::keys::KeyRange;
use crate::txn::Txn;
use crate::{Client, ClientError};

/// How to read: which keys, at which revision, and how much of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    range: KeyRange,
    limit: i64,
    revision: i64,
    serializable: bool,
    keys_only: bool,
    count_only: bool,
    sort: Option<(SortTarget, SortOrder)>,
    min_mod_revision: i64,
    max_mod_revision: i64,
    min_create_revision: i64,
    max_create_revision: i64,
}

impl GetOptions {
    /// A read of the single key at the current revision.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key that starts with the key (every key if the key is empty).
    pub fn with_prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }

    /// Every key greater than or equal to the key.
    pub fn with_from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }

    /// The keys in `[key, end)`.
    pub fn with_range(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range = KeyRange::End(end.into());
        self
    }

    /// At most `limit` keys; `more` in the response tells if some were left.
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Read as of `revision` (fails with `Compacted` if that is compacted).
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Answer from the member's local state, skipping the linearizable read
    /// barrier: faster, may be stale.
    pub fn with_serializable(mut self) -> Self {
        self.serializable = true;
        self
    }

    /// Keys and metadata without values.
    pub fn with_keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Only the number of keys in the range.
    pub fn with_count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// Sort by `target` in `order`.
    pub fn with_sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort = Some((target, order));
        self
    }

    /// Only keys last modified at or after `revision`.
    pub fn with_min_mod_revision(mut self, revision: i64) -> Self {
        self.min_mod_revision = revision;
        self
    }

    /// Only keys last modified at or before `revision`.
    pub fn with_max_mod_revision(mut self, revision: i64) -> Self {
        self.max_mod_revision = revision;
        self
    }

    /// Only keys created at or after `revision`.
    pub fn with_min_create_revision(mut self, revision: i64) -> Self {
        self.min_create_revision = revision;
        self
    }

    /// Only keys created at or before `revision`.
    pub fn with_max_create_revision(mut self, revision: i64) -> Self {
        self.max_create_revision = revision;
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>) -> RangeRequest {
        let (key, range_end) = self.range.resolve(key);
        let (sort_target, sort_order) = self.sort.unwrap_or((SortTarget::Key, SortOrder::None));
        RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            sort_order: sort_order as i32,
            sort_target: sort_target as i32,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        }
    }
}

/// How to write one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

impl PutOptions {
    /// A plain put without a lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach the key to `lease`: it is deleted when the lease ends.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }

    /// Return the previous key-value in the response.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Keep the current value (the key must exist; pass an empty value).
    pub fn with_ignore_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }

    /// Keep the current lease (the key must exist; set no lease).
    pub fn with_ignore_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>, value: Vec<u8>) -> PutRequest {
        PutRequest {
            key,
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

/// Which keys a delete removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    range: KeyRange,
    prev_kv: bool,
}

impl DeleteOptions {
    /// Delete just the key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key that starts with the key (every key if the key is empty).
    pub fn with_prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }

    /// Every key greater than or equal to the key.
    pub fn with_from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }

    /// The keys in `[key, end)`.
    pub fn with_range(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range = KeyRange::End(end.into());
        self
    }

    /// Return the deleted key-values in the response.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>) -> DeleteRangeRequest {
        let (key, range_end) = self.range.resolve(key);
        DeleteRangeRequest { key, range_end, prev_kv: self.prev_kv }
    }
}

impl Client {
    /// Reads one key. An absent key gives an empty `kvs`, not an error.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<RangeResponse, ClientError> {
        self.get_with(key, GetOptions::new()).await
    }

    /// Reads with `options` (prefix, revision, limit, sort...).
    pub async fn get_with(&self, key: impl Into<Vec<u8>>, options: GetOptions) -> Result<RangeResponse, ClientError> {
        let request = options.build(key.into());
        self.range(request).await
    }

    pub(crate) async fn range(&self, request: RangeRequest) -> Result<RangeResponse, ClientError> {
        let max = self.max_decoding();
        self.call(Retry::Always, Deadline::Request, |channel| {
            let request = request.clone();
            async move {
                let mut kv = KvClient::new(channel).max_decoding_message_size(max);
                kv.range(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Writes `value` under `key`, creating a new revision.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<PutResponse, ClientError> {
        self.put_with(key, value, PutOptions::new()).await
    }

    /// Writes with `options` (lease, prev_kv...).
    pub async fn put_with(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<PutResponse, ClientError> {
        let request = options.build(key.into(), value.into());
        let max = self.max_decoding();
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move {
                let mut kv = KvClient::new(channel).max_decoding_message_size(max);
                kv.put(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Deletes one key; `deleted` is 0 if it did not exist.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteRangeResponse, ClientError> {
        self.delete_with(key, DeleteOptions::new()).await
    }

    /// Deletes with `options` (prefix, range, prev_kv).
    pub async fn delete_with(
        &self,
        key: impl Into<Vec<u8>>,
        options: DeleteOptions,
    ) -> Result<DeleteRangeResponse, ClientError> {
        let request = options.build(key.into());
        let max = self.max_decoding();
        self.call(Retry::IfNotSent, Deadline::Request, |channel| {
            let request = request.clone();
            async move {
                let mut kv = KvClient::new(channel).max_decoding_message_size(max);
                kv.delete_range(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Runs a transaction: if every compare holds, the `and_then` ops, else
    /// the `or_else` ops, atomically in at most one revision. A txn made of
    /// reads only is retried on another endpoint like a get.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, ClientError> {
        let retry = if txn.is_read_only() { Retry::Always } else { Retry::IfNotSent };
        let request = txn.into_request();
        let max = self.max_decoding();
        self.call(retry, Deadline::Request, |channel| {
            let request = request.clone();
            async move {
                let mut kv = KvClient::new(channel).max_decoding_message_size(max);
                kv.txn(request).await.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Drops the history before `revision`. With `physical`, returns only
    /// once the space is reclaimed.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<CompactionResponse, ClientError> {
        let request = CompactionRequest { revision, physical };
        // Compacting twice to the same revision fails the second time, so a
        // possibly-sent compaction is not repeated.
        self.call(Retry::IfNotSent, Deadline::Request, |channel| async move {
            KvClient::new(channel).compact(request).await.map(tonic::Response::into_inner)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_options_fill_the_range_request() {
        let request = GetOptions::new()
            .with_prefix()
            .with_limit(3)
            .with_revision(7)
            .with_serializable()
            .with_keys_only()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(9)
            .build(b"/locks/".to_vec());
        assert_eq!(request.key, b"/locks/");
        assert_eq!(request.range_end, b"/locks0");
        assert_eq!(request.limit, 3);
        assert_eq!(request.revision, 7);
        assert!(request.serializable && request.keys_only && !request.count_only);
        assert_eq!(request.sort_target, SortTarget::Create as i32);
        assert_eq!(request.sort_order, SortOrder::Descend as i32);
        assert_eq!(request.max_create_revision, 9);
    }

    #[test]
    fn plain_get_is_a_single_key_read() {
        let request = GetOptions::new().build(b"k".to_vec());
        assert_eq!(request, RangeRequest { key: b"k".to_vec(), ..Default::default() });
    }

    #[test]
    fn delete_options_fill_the_request() {
        let request = DeleteOptions::new().with_from_key().with_prev_kv().build(b"a".to_vec());
        assert_eq!(request, DeleteRangeRequest { key: b"a".to_vec(), range_end: vec![0], prev_kv: true });
    }
}
