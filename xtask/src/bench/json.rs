//! The KV workloads over etcd's JSON gateway instead of gRPC: each client
//! keeps one HTTP/1.1 connection and POSTs the same requests the gRPC runs
//! send (`/v3/kv/put`, `/v3/kv/range`), encoded as the gateway expects.

use anyhow::Result;

use super::http::{judge, Conn};
use super::load::{drive, Outcome};
use super::workload::{Plan, Request};

/// Runs the put or range `plan` through the JSON gateway of `endpoints`
/// (one connection per client, spread over the endpoints in turn).
pub async fn run(endpoints: &[String], plan: &Plan) -> Result<Outcome> {
    let mut conns = Vec::with_capacity(plan.clients);
    for client in 0..plan.clients {
        conns.push(Conn::open(&endpoints[client % endpoints.len()]).await?);
    }
    drive(plan, conns, |conn: &mut Conn, request| {
        Box::pin(async move {
            let (path, body) = match &request {
                Request::Put(r) => ("/v3/kv/put", serde_json::to_vec(r)),
                Request::Range(r) => ("/v3/kv/range", serde_json::to_vec(r)),
                Request::Txn(r) => ("/v3/kv/txn", serde_json::to_vec(r)),
            };
            let body = body.map_err(|e| tonic::Status::internal(e.to_string()))?;
            judge(conn.request("POST", path, Some("application/json"), &body).await, &[200])
        })
    })
    .await
}
