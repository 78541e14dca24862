//! What a member is configured with: etcd's member flags, already parsed
//! and checked by `keel-config`.

use std::path::PathBuf;
use std::time::Duration;

use crate::NodeError;

/// etcd's default --max-request-bytes (1.5 MiB): proposals above it are refused.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd 3.6's default --snapshot-count.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 10_000;
/// etcd's default --experimental-snapshot-catchup-entries.
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;

/// etcd's version this member speaks for (API level).
pub const ETCD_VERSION: &str = "3.6.0";

/// The cluster version as etcd reports it (its metric label, Downgrade's
/// answer): [`ETCD_VERSION`]'s major and minor only.
pub const CLUSTER_VERSION: &str = "3.6";

/// etcd's quota when --quota-backend-bytes is 0: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: i64 = 2 << 30;

#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the raft log lives when not under `data_dir` (etcd's --wal-dir:
    /// a dedicated disk keeps log syncs away from the store's writes).
    pub wal_dir: Option<PathBuf>,
    /// This member's advertised peer URLs; with the token, they make its id.
    pub peer_urls: Vec<String>,
    /// Every member of a new cluster (name, peer URLs), this one included;
    /// empty for a cluster of this member alone.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub cluster_token: String,
    /// Encoded proposals larger than this are refused ("request is too large").
    pub max_request_bytes: usize,
    /// How long a client waits for its write or read to go through raft.
    pub request_timeout: Duration,
    /// The store's size limit (etcd's --quota-backend-bytes; negative: no
    /// quota), exported as etcd_server_quota_backend_bytes.
    pub quota_backend_bytes: i64,
    /// Raft's tick: the leader's heartbeat period (etcd's --heartbeat-interval).
    pub heartbeat_interval: Duration,
    /// Followers campaign after this long without a heartbeat (etcd's
    /// --election-timeout); a whole number of heartbeats.
    pub election_timeout: Duration,
    /// How often the leader records each long lease's remaining TTL through
    /// raft (etcd's --experimental-lease-checkpoint-interval, 5 min).
    pub lease_checkpoint_interval: Duration,
    /// New: bootstrap a cluster of `initial_cluster`. Existing: join a running
    /// cluster that already added this member (MemberAdd).
    pub initial_cluster_state: ClusterState,
    /// Compact the raft log after this many applied entries (etcd's
    /// --snapshot-count).
    pub snapshot_count: u64,
    /// Entries kept behind the applied index when compacting, so slightly
    /// slow followers catch up without a snapshot (etcd's
    /// --experimental-snapshot-catchup-entries).
    pub snapshot_catchup_entries: u64,
    /// Refuse membership changes that would lose quorum (etcd's
    /// --strict-reconfig-check, on by default).
    pub strict_reconfig_check: bool,
    /// Token lifetime and password hashing cost (etcd's auth flags).
    pub auth: crate::auth::AuthConfig,
}

/// etcd's --initial-cluster-state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl MemberConfig {
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        MemberConfig {
            name: name.into(),
            data_dir: data_dir.into(),
            wal_dir: None,
            peer_urls: vec!["http://localhost:2380".to_string()],
            initial_cluster: Vec::new(),
            cluster_token: "etcd-cluster".to_string(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            // etcd: 5 s plus two election timeouts.
            request_timeout: Duration::from_secs(7),
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            lease_checkpoint_interval: keel_lease_manager::DEFAULT_CHECKPOINT_INTERVAL,
            initial_cluster_state: ClusterState::New,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            strict_reconfig_check: true,
            auth: crate::auth::AuthConfig::default(),
        }
    }

    /// Sets raft's timing as etcd's flags do, with etcd's checks, and the
    /// request timeout that follows from it (5 s plus two election timeouts).
    pub fn with_raft_timing(mut self, heartbeat: Duration, election: Duration) -> Result<Self, NodeError> {
        if heartbeat.is_zero() {
            return Err(NodeError::Config("--heartbeat-interval must be positive".into()));
        }
        if election < heartbeat * 5 {
            return Err(NodeError::Config(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                election.as_millis(),
                heartbeat.as_millis()
            )));
        }
        if election > Duration::from_secs(50) {
            return Err(NodeError::Config(format!(
                "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
                election.as_millis()
            )));
        }
        self.heartbeat_interval = heartbeat;
        self.election_timeout = election;
        self.request_timeout = Duration::from_secs(5) + election * 2;
        Ok(self)
    }

    pub(crate) fn election_ticks(&self) -> usize {
        (self.election_timeout.as_nanos() / self.heartbeat_interval.as_nanos()).max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cluster_version_is_the_etcd_versions_major_and_minor() {
        assert_eq!(
            super::ETCD_VERSION.rsplit_once('.').map(|(major_minor, _)| major_minor),
            Some(super::CLUSTER_VERSION)
        );
    }
}
