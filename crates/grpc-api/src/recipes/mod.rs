//! etcd's concurrency recipes (`client/v3/concurrency`: Session, Mutex,
//! Election) run inside the member, as etcd's Lock and Election services run
//! them over an embedded client. The services in `lock.rs` and `election.rs`
//! only decode and encode around these.
//!
//! Both recipes queue contenders under `<name>/`: each puts
//! `<name>/<lease id in hex>` with its lease, only if that key does not exist
//! yet. Create revisions order the queue: the key created first holds the
//! lock or leads the election; every other contender waits until no key
//! created before its own is left ([`Recipes::wait_deletes`]). A holder's
//! create revision only grows from one holder to the next, which makes it a
//! fencing token.
//!
//! Every read and write goes through the member exactly as a client's KV
//! request would (validated as the KV service validates, linearizable
//! reads), and waiting uses the member's watch hub: nothing polls.

mod election;
mod mutex;
mod wait;

use std::sync::Arc;

use keel_auth::AuthInfo;
use keel_node::{Member, NodeError};
use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keel_proto::etcdserverpb::request_op::Request;
use keel_proto::etcdserverpb::response_op::Response;
use keel_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use tonic::Status;

use crate::validate;

/// etcd's `concurrency` default session TTL: a Lock or Campaign with lease 0
/// gets a lease of this many seconds, which nobody keeps alive.
const SESSION_TTL: i64 = 60;

/// Why a recipe failed. `errors.rs` turns these into etcd's statuses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecipeError {
    /// A request the recipe made was refused by the KV checks.
    #[error("{}", .0.message())]
    Refused(Status),
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A proclaim from a campaigner whose key is gone or was re-created.
    #[error("the campaigner no longer leads")]
    NotLeader,
    /// Nobody campaigns in the election.
    #[error("the election has no leader")]
    NoLeader,
    /// Proclaim or Resign without a `leader`.
    #[error("no leader key given")]
    MissingLeaderKey,
    /// The watch that waited for a deletion ended without one.
    #[error("the watch ended before the deletion")]
    WatchLost,
}

/// The member and the limits its KV requests are checked against.
#[derive(Clone)]
pub(crate) struct Recipes {
    member: Arc<Member>,
    max_txn_ops: usize,
    /// Whose requests these are: every KV request a recipe makes is checked
    /// as that caller's own, as etcd's embedded client passes the caller's
    /// token along.
    who: AuthInfo,
}

impl Recipes {
    pub(crate) fn new(member: Arc<Member>, max_txn_ops: usize) -> Self {
        Recipes { member, max_txn_ops, who: AuthInfo::default() }
    }

    /// These recipes run as the caller of `request`.
    pub(crate) async fn as_caller_of<T>(&self, request: &tonic::Request<T>) -> Result<Recipes, Status> {
        let who = crate::identity::caller(&self.member, request).await?;
        Ok(Recipes { who, ..self.clone() })
    }

    /// etcd's `concurrency.NewSession(WithLease(lease))` as its services use
    /// it: lease 0 grants a new lease of [`SESSION_TTL`]; any other id is
    /// taken as it is (an unknown one fails at the first put that uses it).
    async fn session_lease(&self, lease: i64) -> Result<i64, RecipeError> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self.member.lease_grant(&self.who, LeaseGrantRequest { ttl: SESSION_TTL, id: 0 }).await?;
        Ok(granted.id)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, RecipeError> {
        validate::check_range(&request).map_err(RecipeError::Refused)?;
        Ok(self.member.range(&self.who, request).await?)
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, RecipeError> {
        validate::check_txn(&request, self.max_txn_ops).map_err(RecipeError::Refused)?;
        Ok(self.member.txn(&self.who, request).await?)
    }

    pub(crate) async fn delete(&self, key: Vec<u8>) -> Result<DeleteRangeResponse, RecipeError> {
        let request = DeleteRangeRequest { key, ..Default::default() };
        validate::check_delete(&request).map_err(RecipeError::Refused)?;
        Ok(self.member.delete_range(&self.who, request).await?)
    }
}

/// `<name>/`: etcd's recipes append the slash, so "/lock" and "/lock2" never
/// share keys.
fn queue_prefix(mut name: Vec<u8>) -> Vec<u8> {
    name.push(b'/');
    name
}

/// `<prefix><lease>` with the lease as Go's `%x` prints an int64: lowercase
/// hex without padding, and a minus sign before a negative id.
fn queue_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    let mut key = prefix.to_vec();
    key.extend_from_slice(hex.as_bytes());
    key
}

/// The end of the range of every key starting with `prefix` (clientv3's
/// `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

/// The key under `prefix` created first: the lock holder, the election
/// leader (clientv3's `WithFirstCreate`).
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The key under `prefix` created last at or below `max_create_revision`
/// (clientv3's `WithLastCreate` and `WithMaxCreateRev`).
fn last_created_up_to(prefix: &[u8], max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

fn key_only(key: &[u8]) -> RangeRequest {
    RangeRequest { key: key.to_vec(), ..Default::default() }
}

fn create_revision_is(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
    }
}

fn put_op(key: &[u8], value: Vec<u8>, lease: i64) -> RequestOp {
    let put = PutRequest { key: key.to_vec(), value, lease, ..Default::default() };
    RequestOp { request: Some(Request::RequestPut(put)) }
}

fn range_op(request: RangeRequest) -> RequestOp {
    RequestOp { request: Some(Request::RequestRange(request)) }
}

fn delete_op(key: &[u8]) -> RequestOp {
    let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
    RequestOp { request: Some(Request::RequestDeleteRange(delete)) }
}

/// The range response at `index` of a txn's answers.
fn range_at(response: &TxnResponse, index: usize) -> Option<&RangeResponse> {
    match response.responses.get(index)?.response.as_ref()? {
        Response::ResponseRange(range) => Some(range),
        _ => None,
    }
}

/// The create revision of the key a failed `create_revision == 0` compare
/// found, read by the txn's failure branch at `index`.
fn existing_create_revision(response: &TxnResponse, index: usize) -> Result<i64, RecipeError> {
    range_at(response, index)
        .and_then(|range| range.kvs.first())
        .map(|kv| kv.create_revision)
        .ok_or_else(|| NodeError::Corrupt("a key that failed create_revision == 0 is missing in the same txn".into()))
        .map_err(RecipeError::from)
}

fn revision_of(response: &TxnResponse) -> i64 {
    response.header.as_ref().map_or(0, |h| h.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_name_slash_lease_as_go_prints_it() {
        let prefix = queue_prefix(b"/locks/db".to_vec());
        assert_eq!(prefix, b"/locks/db/");
        assert_eq!(queue_key(&prefix, 0x694d_7a3b_21c0_0f05), b"/locks/db/694d7a3b21c00f05");
        assert_eq!(queue_key(&prefix, 255), b"/locks/db/ff");
        assert_eq!(queue_key(&prefix, -31), b"/locks/db/-1f");
        assert_eq!(queue_key(&queue_prefix(Vec::new()), 1), b"/1");
    }

    #[test]
    fn prefix_ends_as_clientv3_computes_them() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
    }
}
