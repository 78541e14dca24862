//! Data from etcd, before a member starts: an etcd snapshot file named by
//! `--import-etcd-snapshot`, or an etcd data dir (what `etcdctl snapshot
//! restore` makes) found where Keel's store belongs. Only etcd's backend
//! (`member/snap/db`) is read: entries of etcd's WAL past its applied index
//! are not, which is exactly right for a restored dir (its WAL holds only
//! the new membership) and loses a stopped member's last unflushed writes,
//! so the way in for a live cluster is a snapshot (docs/migrate-from-etcd.md). Either is loaded into a new Keel store; the member then
//! bootstraps a new cluster from its flags, as etcd does after a restore.
//! etcd's own files are left as they were, so the way back stays open.

use std::path::{Path, PathBuf};

use keel_snapshot::{import_file, ImportOptions, ImportSummary, SnapshotError};

use crate::NodeError;

/// Where a member keeps its MVCC store under `data_dir`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("kv")
}

/// etcd's backend file under `data_dir`.
pub fn etcd_backend(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

/// What [`prepare_data_dir`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The data dir already holds a Keel store, or nothing at all.
    Nothing,
    /// The snapshot file was imported.
    Snapshot { from: PathBuf, summary: ImportSummary },
    /// The etcd data dir's backend was imported.
    EtcdDataDir { from: PathBuf, summary: ImportSummary },
}

/// Imports `snapshot` into the empty `data_dir`, or the etcd backend found
/// in `data_dir` when Keel has no store there yet. Blocking. A snapshot
/// into a data dir that holds data (Keel's or etcd's) is refused, as
/// `etcdctl snapshot restore` refuses an existing data dir; a failed
/// import leaves no store behind.
/// `new_cluster` (`--initial-cluster-state new`): an etcd data dir is
/// imported only then, as each member of a cluster restored from one
/// snapshot; a member joining an existing cluster with etcd's data in its
/// dir is refused rather than started empty or on another history.
pub fn prepare_data_dir(data_dir: &Path, snapshot: Option<&Path>, new_cluster: bool) -> Result<Prepared, NodeError> {
    let store = store_dir(data_dir);
    let etcd = etcd_backend(data_dir);
    let has_store = store.is_dir() && std::fs::read_dir(&store).is_ok_and(|mut d| d.next().is_some());
    if let Some(snapshot) = snapshot {
        if has_store || etcd.exists() {
            return Err(import_error(SnapshotError::TargetExists(data_dir.to_path_buf())));
        }
        create_parent(&store)?;
        let summary = import_file(snapshot, &store, ImportOptions::default()).map_err(import_error)?;
        log_import(snapshot, &summary, "imported etcd snapshot");
        return Ok(Prepared::Snapshot { from: snapshot.to_path_buf(), summary });
    }
    if has_store || !etcd.is_file() {
        return Ok(Prepared::Nothing);
    }
    if !new_cluster {
        return Err(NodeError::Config(format!(
            "{} holds etcd's data; Keel imports it only to start a new cluster (--initial-cluster-state new)",
            data_dir.display()
        )));
    }
    create_parent(&store)?;
    // etcd's own backend carries no trailer: bbolt's checksums are the check.
    let summary = import_file(&etcd, &store, ImportOptions { skip_hash_check: true, ..ImportOptions::default() })
        .map_err(import_error)?;
    log_import(&etcd, &summary, "imported etcd data dir");
    Ok(Prepared::EtcdDataDir { from: etcd, summary })
}

fn log_import(from: &Path, summary: &ImportSummary, what: &str) {
    tracing::info!(
        path = %from.display(),
        revision = summary.revision,
        compact_revision = summary.compact_revision,
        revisions = summary.revisions,
        leases = summary.leases,
        hash_checked = summary.hash_checked,
        "{what}"
    );
}

fn create_parent(store: &Path) -> Result<(), NodeError> {
    let parent = store.parent().unwrap_or(store);
    std::fs::create_dir_all(parent).map_err(|e| NodeError::Storage(format!("{}: {e}", parent.display())))
}

fn import_error(err: SnapshotError) -> NodeError {
    match err {
        SnapshotError::Store(err) => NodeError::Mvcc(err),
        other => NodeError::Config(format!("cannot import etcd data: {other}")),
    }
}
