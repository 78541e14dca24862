//! The Lock service (`v3lockpb`): etcd's Mutex recipe run by the member.

use std::sync::Arc;

use keel_node::Member;
use keel_proto::v3lockpb::lock_server::Lock;
use keel_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::errors::recipe_error;
use crate::recipes::Recipes;

pub struct LockService {
    recipes: Recipes,
}

impl LockService {
    /// Its KV requests are checked as the KV service checks clients' (`max_txn_ops`).
    pub fn new(member: Arc<Member>, max_txn_ops: usize) -> Self {
        LockService { recipes: Recipes::new(member, max_txn_ops) }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    /// Waits for the lock; if the client cancels meanwhile, its queued key is
    /// deleted.
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        let request = request.into_inner();
        let (header, key) = recipes.lock(request.name, request.lease).await.map_err(recipe_error)?;
        Ok(Response::new(LockResponse { header: Some(header), key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        let deleted = recipes.delete(request.into_inner().key).await.map_err(recipe_error)?;
        Ok(Response::new(UnlockResponse { header: deleted.header }))
    }
}
