//! The KV service's requests: reads through the read index (or straight
//! from the store when serializable), writes through raft.

use keel_auth::AuthInfo;
use keel_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use keel_proto::keelpb::internal_raft_request::Request;
use keel_proto::mvccpb::{event::EventType, Event};

use super::{Member, Offload};
use crate::NodeError;

impl Member {
    pub async fn range(&self, who: &AuthInfo, request: RangeRequest) -> Result<RangeResponse, NodeError> {
        self.auth.state().check_range(who, &request).map_err(NodeError::Auth)?;
        if !request.serializable {
            self.proposals.wait_linearizable().await?;
        }
        // A key whose value is in memory is answered here, as etcd answers
        // from its mmap: the blocking pool would add two thread hand-offs
        // (there and back) to every such read's latency.
        let answered = match self.offload {
            Offload::Pool => self.kv.range_in_memory(&request),
            Offload::Inline => None,
        };
        let mut response = match answered {
            Some(answer) => answer,
            None => {
                let kv = self.kv.clone();
                self.offload.run(move || kv.range(&request)).await?
            }
        }
        .map_err(NodeError::Mvcc)?;
        self.stamp(&mut response.header);
        Ok(response)
    }

    pub async fn put(&self, who: &AuthInfo, request: PutRequest) -> Result<PutResponse, NodeError> {
        self.write(who, Request::Put(request)).await
    }

    pub async fn delete_range(
        &self,
        who: &AuthInfo,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, NodeError> {
        self.write(who, Request::DeleteRange(request)).await
    }

    pub async fn txn(&self, who: &AuthInfo, request: TxnRequest) -> Result<TxnResponse, NodeError> {
        if !keel_mvcc::is_txn_read_only(&request) {
            return self.write(who, Request::Txn(request)).await;
        }
        // Served here without the log: checked here, as etcd does.
        self.auth.state().check_txn(who, &request, &|_| Vec::new()).map_err(NodeError::Auth)?;
        // As etcd: a txn that only reads is served like a Range, without a
        // trip through the log.
        if !txn_is_serializable(&request) {
            self.proposals.wait_linearizable().await?;
        }
        let kv = self.kv.clone();
        let (request, answer) = self
            .offload
            .run(move || {
                let answer = kv.read_txn(&request);
                (request, answer)
            })
            .await?;
        // The store has the last word on what only reads; anything else
        // goes through the log.
        match answer {
            Some(answer) => {
                let mut response = answer.map_err(NodeError::Mvcc)?;
                self.stamp(&mut response.header);
                Ok(response)
            }
            None => self.write(who, Request::Txn(request)).await,
        }
    }

    pub async fn compact(&self, who: &AuthInfo, request: CompactionRequest) -> Result<CompactionResponse, NodeError> {
        self.write(who, Request::Compaction(request)).await
    }

    /// `events` with each `prev_kv` filled: the key's value just before the
    /// event, as etcd's watch server reads it (none for a creation, or when
    /// compaction already removed it).
    pub async fn with_prev_kvs(&self, mut events: Vec<Event>) -> Vec<Event> {
        let kv = self.kv.clone();
        let fill = move || {
            for event in &mut events {
                let Some(current) = &event.kv else { continue };
                let created = event.r#type == EventType::Put as i32 && current.create_revision == current.mod_revision;
                if created {
                    continue;
                }
                let request =
                    RangeRequest { key: current.key.clone(), revision: current.mod_revision - 1, ..Default::default() };
                event.prev_kv = kv.range(&request).ok().and_then(|r| r.kvs.into_iter().next());
            }
            events
        };
        self.offload.run(fill).await.unwrap_or_default()
    }
}

/// etcd's `isTxnSerializable`: every range in both branches is serializable.
fn txn_is_serializable(request: &TxnRequest) -> bool {
    use keel_proto::etcdserverpb::request_op::Request as Op;
    request.success.iter().chain(&request.failure).all(|op| match &op.request {
        Some(Op::RequestRange(range)) => range.serializable,
        _ => false,
    })
}
