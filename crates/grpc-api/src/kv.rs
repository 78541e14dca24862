//! The KV service: validate, hand to the member, map errors. Nothing else.

use std::sync::Arc;

use keel_node::Member;
use keel_proto::etcdserverpb::kv_server::Kv;
use keel_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::errors::node_error;
use crate::identity::caller;
use crate::validate;

pub struct KvService {
    member: Arc<Member>,
    max_txn_ops: usize,
}

impl KvService {
    pub fn new(member: Arc<Member>, max_txn_ops: usize) -> Self {
        KvService { member, max_txn_ops }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        validate::check_range(&request)?;
        self.member.range(&who, request).await.map(Response::new).map_err(node_error)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        validate::check_put(&request)?;
        self.member.put(&who, request).await.map(Response::new).map_err(node_error)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        validate::check_delete(&request)?;
        self.member.delete_range(&who, request).await.map(Response::new).map_err(node_error)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        let request = request.into_inner();
        validate::check_txn(&request, self.max_txn_ops)?;
        self.member.txn(&who, request).await.map(Response::new).map_err(node_error)
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let who = caller(&self.member, &request).await?;
        self.member.compact(&who, request.into_inner()).await.map(Response::new).map_err(node_error)
    }
}
