//! The Election service (`v3electionpb`): etcd's Election recipe run by the
//! member.

use std::sync::Arc;

use keel_node::Member;
use keel_proto::v3electionpb::election_server::Election;
use keel_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest,
    ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::errors::recipe_error;
use crate::recipes::{RecipeError, Recipes};

/// Leader changes waiting for a slow observer; beyond this the observing
/// watch falls back to catching up from storage.
const OBSERVE_BUFFER: usize = 16;

pub struct ElectionService {
    recipes: Recipes,
}

impl ElectionService {
    /// Its KV requests are checked as the KV service checks clients' (`max_txn_ops`).
    pub fn new(member: Arc<Member>, max_txn_ops: usize) -> Self {
        ElectionService { recipes: Recipes::new(member, max_txn_ops) }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    /// Waits for leadership; if the client cancels meanwhile, its queued key
    /// is resigned.
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        let request = request.into_inner();
        let (header, leader) =
            recipes.campaign(request.name, request.lease, request.value).await.map_err(recipe_error)?;
        Ok(Response::new(CampaignResponse { header: Some(header), leader: Some(leader) }))
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        let request = request.into_inner();
        let leader = request.leader.ok_or_else(|| recipe_error(RecipeError::MissingLeaderKey))?;
        let header = recipes.proclaim_as(leader, request.value).await.map_err(recipe_error)?;
        Ok(Response::new(ProclaimResponse { header: Some(header) }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        recipes.leader(request.into_inner().name).await.map(Response::new).map_err(recipe_error)
    }

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        let name = request.into_inner().name;
        let (out, mut leaders) = mpsc::channel(OBSERVE_BUFFER);
        let recipes = recipes.clone();
        // Ends when the client goes (the receiver below is dropped) or the
        // observation fails.
        tokio::spawn(async move {
            tokio::select! {
                () = out.closed() => {}
                () = recipes.observe(name, &out) => {}
            }
        });
        // etcd sends nothing, not even response headers, until there is a
        // leader; an observation that fails before ends the call with OK.
        let Some(first) = leaders.recv().await else {
            return Ok(Response::new(Box::pin(tokio_stream::empty())));
        };
        let leaders = tokio_stream::once(first).chain(ReceiverStream::new(leaders)).map(Ok);
        Ok(Response::new(Box::pin(leaders)))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let recipes = self.recipes.as_caller_of(&request).await?;
        let leader = request.into_inner().leader.ok_or_else(|| recipe_error(RecipeError::MissingLeaderKey))?;
        let header = recipes.resign_as(leader).await.map_err(recipe_error)?;
        Ok(Response::new(ResignResponse { header: Some(header) }))
    }
}
