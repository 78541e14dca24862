//! `--resolver-prefix`: the proxy registers itself as etcd 3.4's proxy does
//! (`proxy/grpcproxy/register.go`), and MemberList through it lists every
//! proxy registered under the same prefix (`cluster.go`).
//!
//! The registration is the key `<prefix>/<advertise-client-url>` (under
//! `--namespace`, as etcd's namespaced client writes it) holding the JSON
//! of grpc-go's old `naming.Update` that etcd's `clientv3/naming`
//! resolver reads: `{"Op":0,"Addr":"<url>","Metadata":"{\"name\":\"<host>\"}"}`,
//! put with a lease of `--resolver-ttl` seconds that the proxy keeps
//! alive. When the keep-alive stream breaks the same lease is kept alive
//! through another member; only a lease that expired is replaced by a new
//! registration (at most one attempt a second, etcd's rate). A stopping
//! proxy revokes its lease, so it leaves the list at once.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::{
    kv_client::KvClient, LeaseGrantRequest, LeaseKeepAliveRequest, Member, PutRequest, RangeRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::policy::prefix_end;
use crate::upstream::{as_unavailable, endpoint_failed};
use crate::Shared;

/// etcd's `registerRetryRate`: one attempt a second.
const RETRY: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// grpc-go's `naming.Update`, as `encoding/json` writes it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Update {
    #[serde(rename = "Op")]
    op: u32,
    #[serde(rename = "Addr")]
    addr: String,
    /// A JSON document of its own, as a string: etcd's `getMeta()`.
    #[serde(rename = "Metadata", default)]
    metadata: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
}

/// The key and value this proxy registers.
fn registration(prefix: &str, addr: &str, host_name: &str) -> (String, String) {
    let meta = serde_json::to_string(&Meta { name: host_name.to_owned() }).unwrap_or_default();
    let update = Update { op: 0, addr: addr.to_owned(), metadata: serde_json::Value::String(meta) };
    (format!("{prefix}/{addr}"), serde_json::to_string(&update).unwrap_or_default())
}

/// A registered proxy as MemberList shows it (etcd's
/// `membersFromUpdates`): its host name and its URL, no id.
fn member(value: &[u8]) -> Option<Member> {
    let update: Update = serde_json::from_slice(value).ok()?;
    let meta = match &update.metadata {
        serde_json::Value::String(text) => serde_json::from_str::<Meta>(text).unwrap_or_default(),
        _ => Meta::default(),
    };
    Some(Member { name: meta.name, client_ur_ls: vec![update.addr], ..Default::default() })
}

/// Every proxy registered under `prefix`: read from the cluster at each
/// call, so expired registrations (their leases gone) are never listed.
pub(crate) async fn registered(shared: &Shared, prefix: &str) -> Result<Vec<Member>, Status> {
    let key = shared.namespace.key(prefix.as_bytes());
    let request = RangeRequest { range_end: prefix_end(&key), key, ..Default::default() };
    let response =
        shared
            .upstream
            .unary(Request::new(request), true, |channel, request| async move {
                KvClient::new(channel).range(request).await
            })
            .await?;
    Ok(response.into_inner().kvs.iter().filter_map(|kv| member(&kv.value)).collect())
}

/// The registration's lease, revoked when the proxy stops.
#[derive(Default)]
pub(crate) struct Registration {
    lease: AtomicI64,
}

impl Registration {
    /// Keeps the proxy registered until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>, shared: Arc<Shared>, prefix: String, ttl: i64) {
        let addr = shared.advertise_client_url.clone();
        let (key, value) = registration(&prefix, &addr, &shared.host_name);
        let key = shared.namespace.key(key.as_bytes());
        loop {
            let lease = match register(&shared, &key, &value, ttl).await {
                Ok(lease) => lease,
                Err(status) => {
                    tracing::warn!(%status, "failed to register under --resolver-prefix; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            self.lease.store(lease, Ordering::Release);
            shared.metrics.registrations.inc();
            tracing::info!(%addr, ttl, "registered with a {ttl}-second lease");
            // Keep it alive, moving to another member when one fails.
            loop {
                match keep_alive(&shared, lease, ttl).await {
                    KeepAlive::Expired => {
                        tracing::warn!("registration lease expired; possible network partition or server restart");
                        break;
                    }
                    KeepAlive::Broken(status) => {
                        tracing::info!(%status, "registration keep-alive stream broke; continuing on another member");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Revokes the lease (best effort, bounded), removing the registration.
    pub(crate) async fn revoke(&self, shared: &Shared) {
        shared.upstream.revoke_lease(&self.lease).await;
    }
}

async fn register(shared: &Shared, key: &[u8], value: &str, ttl: i64) -> Result<i64, Status> {
    let grant =
        shared.upstream.unary(Request::new(LeaseGrantRequest { ttl, id: 0 }), false, |channel, request| async move {
            LeaseClient::new(channel).lease_grant(request).await
        });
    let lease = tokio::time::timeout(CALL_TIMEOUT, grant)
        .await
        .map_err(|_| Status::unavailable("lease grant timed out"))??
        .into_inner()
        .id;
    let put = PutRequest { key: key.to_vec(), value: value.as_bytes().to_vec(), lease, ..Default::default() };
    let put = shared
        .upstream
        .unary(Request::new(put), false, |channel, request| async move { KvClient::new(channel).put(request).await });
    tokio::time::timeout(CALL_TIMEOUT, put).await.map_err(|_| Status::unavailable("put timed out"))??;
    Ok(lease)
}

enum KeepAlive {
    Expired,
    Broken(Status),
}

/// Keeps `lease` alive on one member, a keep-alive every third of the
/// TTL (as clientv3 does), until the lease is gone or the stream breaks.
async fn keep_alive(shared: &Shared, lease: i64, ttl: i64) -> KeepAlive {
    let picked = shared.upstream.pick();
    let (requests, outgoing) = mpsc::channel(1);
    let every = Duration::from_millis((ttl.max(1) as u64 * 1000) / 3);
    let broken = |status: Status| {
        if endpoint_failed(&status) {
            shared.upstream.failed(&picked);
        }
        KeepAlive::Broken(as_unavailable(status))
    };
    let opened = LeaseClient::new(picked.channel.clone()).lease_keep_alive(ReceiverStream::new(outgoing)).await;
    let mut answers = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => return broken(status),
    };
    loop {
        if requests.send(LeaseKeepAliveRequest { id: lease }).await.is_err() {
            return KeepAlive::Broken(Status::unavailable("keep-alive stream closed"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl <= 0 => return KeepAlive::Expired,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return KeepAlive::Broken(Status::unavailable("keep-alive stream ended")),
            Ok(Err(status)) => return broken(status),
            Err(_) => return broken(Status::unavailable("keep-alive answer timed out")),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_etcds_naming_updates() {
        let (key, value) = registration("/proxies", "127.0.0.1:23790", "host1");
        assert_eq!(key, "/proxies/127.0.0.1:23790");
        // What etcd 3.4's grpc-proxy writes (json.Marshal of naming.Update).
        assert_eq!(value, r#"{"Op":0,"Addr":"127.0.0.1:23790","Metadata":"{\"name\":\"host1\"}"}"#);
        let listed = member(value.as_bytes()).unwrap();
        assert_eq!(
            (listed.name.as_str(), listed.client_ur_ls.as_slice()),
            ("host1", &["127.0.0.1:23790".to_owned()][..])
        );
        assert_eq!(listed.id, 0);
        assert!(member(b"not json").is_none());
    }
}
