//! Unary calls between members: lease calls forwarded to the leader, the
//! leader's view of its peers for strict reconfiguration, and the cluster
//! a joining member asks for.

use std::collections::HashMap;
use std::time::Duration;

use keel_lease_manager::TimeToLive;
use keel_proto::keelpb::raft_peer_client::RaftPeerClient;
use keel_proto::keelpb::{LeaseRenewForward, LeaseTimeToLiveForward, PeerActivityRequest};
use keel_tls::Connector;
use parking_lot::Mutex;

use super::error_of;
use super::transport::{peer_endpoint, PeerSet, RECONNECT_AFTER};
use crate::NodeError;

/// Unary calls to other members (lease calls forwarded to the leader), over
/// one lazily connected channel per peer.
pub(crate) struct PeerClients {
    cluster_id: u64,
    peers: PeerSet,
    clients: Mutex<HashMap<(u64, String), RaftPeerClient<tonic::transport::Channel>>>,
}

/// How long a forwarded lease call may take before it is retried.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

impl PeerClients {
    pub(crate) fn new(cluster_id: u64, peers: PeerSet) -> Self {
        PeerClients { cluster_id, peers, clients: Mutex::new(HashMap::new()) }
    }

    fn client(&self, peer: u64) -> Result<RaftPeerClient<tonic::transport::Channel>, NodeError> {
        let url = self.peers.url(peer).ok_or(NodeError::NotLeader)?;
        let key = (peer, url);
        if let Some(client) = self.clients.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = RaftPeerClient::new(lazy_channel(&key.1, self.peers.connector())?);
        self.clients.lock().insert(key, client.clone());
        Ok(client)
    }

    pub(crate) async fn renew(&self, leader: u64, id: i64) -> Result<i64, NodeError> {
        let request = LeaseRenewForward { cluster_id: self.cluster_id, id };
        let answer = self.client(leader)?.lease_renew(request).await.map_err(error_of)?;
        Ok(answer.into_inner().ttl)
    }

    /// The leader's view of how long each member has been in touch.
    pub(crate) async fn peer_activity(&self, leader: u64) -> Result<Vec<(u64, Duration)>, NodeError> {
        let request = PeerActivityRequest { cluster_id: self.cluster_id };
        let answer = self.client(leader)?.peer_activity(request).await.map_err(error_of)?.into_inner();
        Ok(answer.active.into_iter().map(|peer| (peer.id, Duration::from_millis(peer.active_for_ms))).collect())
    }

    /// `peer`'s HashKV at `revision`.
    pub(crate) async fn hash_kv(&self, peer: u64, revision: i64) -> Result<super::PeerHash, NodeError> {
        let request = keel_proto::keelpb::PeerHashKvRequest { cluster_id: self.cluster_id, revision };
        let answer = self.client(peer)?.hash_kv(request).await.map_err(error_of)?.into_inner();
        Ok(super::PeerHash {
            member_id: answer.member_id,
            revision: answer.revision,
            compact_revision: answer.compact_revision,
            hash: answer.hash,
        })
    }

    pub(crate) async fn time_to_live(&self, leader: u64, id: i64, keys: bool) -> Result<TimeToLive, NodeError> {
        let request = LeaseTimeToLiveForward { cluster_id: self.cluster_id, id, keys };
        let answer = self.client(leader)?.lease_time_to_live(request).await.map_err(error_of)?.into_inner();
        Ok(TimeToLive { id, granted_ttl: answer.granted_ttl, ttl: answer.ttl, keys: answer.keys })
    }
}

fn lazy_channel(url: &str, connector: Connector) -> Result<tonic::transport::Channel, NodeError> {
    Ok(peer_endpoint(url)?.timeout(FORWARD_TIMEOUT).connect_with_connector_lazy(connector))
}

/// Asks the members at `urls` which cluster they belong to and who its
/// members are, for a member joining an existing cluster; the first that
/// answers decides.
pub(crate) async fn fetch_cluster_info(
    urls: &[String],
    connector: Connector,
) -> Result<(u64, Vec<keel_proto::etcdserverpb::Member>), NodeError> {
    use keel_proto::keelpb::ClusterInfoRequest;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for url in urls {
            let Ok(channel) = lazy_channel(url, connector.clone()) else { continue };
            match RaftPeerClient::new(channel).cluster_info(ClusterInfoRequest {}).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    return Ok((answer.cluster_id, answer.members));
                }
                Err(status) => tracing::debug!(%url, message = status.message(), "asking for the cluster id"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NodeError::Config(format!(
                "--initial-cluster-state existing: no member at {} answered",
                urls.join(",")
            )));
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}
