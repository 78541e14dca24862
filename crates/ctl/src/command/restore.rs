//! `snapshot restore`: an etcd (or Keel) snapshot file made into a Keel
//! data dir for one member of a new cluster, offline, as `etcdctl snapshot
//! restore` (etcdutl's since 3.5) makes an etcd one. The flags are checked
//! as etcd checks them and refused with its messages; etcd's log lines are
//! printed on stderr, naming Keel's own directories.
//!
//! What lands in the data dir is the store (`member/kv`) with the
//! snapshot's keys, leases, auth and alarms, and the new membership in it:
//! the member then starts as etcd's restored member does, its identity
//! taken from the data dir. No raft log is written; the member starts one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_config::goflag;
use keel_proto::etcdserverpb::Member;
use keel_snapshot::{import_file, ImportOptions, ImportSummary};

use super::snapshot::zap_log;
use crate::error::{exit, Failure};
use crate::global::Context;
use crate::gostr;
use crate::progress::{Progress, Unit};

/// Where a Keel member keeps its store and its raft log under its data dir.
fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("kv")
}

fn default_wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("raft")
}

/// The checked flags of one restore.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Names in order, each with its URLs sorted.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub token: String,
}

/// etcd's `types.NewURLs`: each URL checked, the list sorted (duplicates
/// kept: the duplicate check comes later, with its own message).
fn new_urls(text: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for one in text.split(',') {
        urls.push(goflag::parse_url(one.trim())?.to_string());
    }
    urls.sort();
    Ok(urls)
}

/// etcd's `types.NewURLsMap`: `name=url` pairs split on commas (empty
/// pairs skipped, a pair without `=` a name with an empty URL), the URLs
/// of one name grouped. Sorted by name, as `URLsMap.String` lists them.
fn new_urls_map(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut raw: Vec<(String, Vec<String>)> = Vec::new();
    for pair in text.split(',').filter(|pair| !pair.is_empty()) {
        let (name, url) = pair.split_once('=').unwrap_or((pair, ""));
        match raw.iter_mut().find(|(known, _)| known == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => raw.push((name.to_string(), vec![url.to_string()])),
        }
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    raw.into_iter().map(|(name, urls)| Ok((name, new_urls(&urls.join(","))?))).collect()
}

/// `URLsMap.String`: `name=url` for every URL, names in order.
fn urls_map_string(map: &[(String, Vec<String>)]) -> String {
    let pairs: Vec<String> =
        map.iter().flat_map(|(name, urls)| urls.iter().map(move |url| format!("{name}={url}"))).collect();
    pairs.join(",")
}

/// Go's `%q` of a `[]string`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| gostr::quote(s.as_bytes())).collect();
    format!("[{}]", quoted.join(" "))
}

/// Whether two URLs name the same address: the same text, or hosts that
/// resolve to the same address (etcd's `netutil.URLStringsEqual`).
fn same_address(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let resolve = |url: &str| -> Option<std::net::SocketAddr> {
        let parsed = goflag::parse_url(url).ok()?;
        let port: u16 = parsed.port().parse().ok()?;
        std::net::ToSocketAddrs::to_socket_addrs(&(parsed.host(), port)).ok()?.next()
    };
    let (ga, gb) = (goflag::parse_url(a), goflag::parse_url(b));
    match (ga, gb, resolve(a), resolve(b)) {
        (Ok(ga), Ok(gb), Some(ra), Some(rb)) => ga.scheme == gb.scheme && ra == rb,
        _ => false,
    }
}

/// The flags as etcd's `Restore` takes them: URLs parsed, then its
/// `VerifyBootstrap` (local member present, advertised URLs matching the
/// cluster's, no URL twice, a cluster at all).
pub fn plan(name: &str, peer_urls: &str, initial_cluster: &str, token: &str) -> Result<Plan, String> {
    let peer_urls = new_urls(peer_urls)?;
    let cluster = new_urls_map(initial_cluster)?;
    let Some((_, cluster_urls)) = cluster.iter().find(|(member, _)| member == name) else {
        return Err(format!(
            "couldn't find local name {} in the initial cluster configuration",
            gostr::quote(name.as_bytes())
        ));
    };
    advertise_matches_cluster(name, &peer_urls, cluster_urls)?;
    let mut all: Vec<&String> = cluster.iter().flat_map(|(_, urls)| urls).collect();
    all.sort();
    if all.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(format!("initial cluster {} has duplicate url", urls_map_string(&cluster)));
    }
    if urls_map_string(&cluster).is_empty() {
        return Err("initial cluster unset and no discovery URL found".into());
    }
    Ok(Plan { name: name.to_string(), peer_urls, initial_cluster: cluster, token: token.to_string() })
}

/// etcd's `advertiseMatchesCluster`, with its messages.
fn advertise_matches_cluster(name: &str, advertised: &[String], in_cluster: &[String]) -> Result<(), String> {
    let mismatch =
        if advertised.len() != in_cluster.len() {
            Some(format!("len({}) != len({})", go_quoted_list(advertised), go_quoted_list(in_cluster)))
        } else {
            advertised.iter().zip(in_cluster).find(|(a, b)| !same_address(a, b)).map(|(a, b)| {
                format!("resolved urls: {} != {}", gostr::quote(a.as_bytes()), gostr::quote(b.as_bytes()))
            })
        };
    let Some(why) = mismatch else {
        return Ok(());
    };
    let own = urls_map_string(&[(name.to_string(), advertised.to_vec())]);
    let missing: Vec<String> =
        in_cluster.iter().filter(|url| !advertised.contains(url)).map(|url| format!("{name}={url}")).collect();
    if !missing.is_empty() {
        return Err(format!(
            "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} ({why})",
            missing.join(","),
            advertised.join(",")
        ));
    }
    let extra: Vec<&String> = advertised.iter().filter(|url| !in_cluster.contains(url)).collect();
    if !extra.is_empty() {
        let extra: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "--initial-advertise-peer-urls has {} but missing from --initial-cluster={own}",
            extra.join(",")
        ));
    }
    Err(format!("failed to resolve {} to match --initial-cluster={own} ({why})", advertised.join(",")))
}

pub fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(Failure::exit(exit::BAD_ARGS, "snapshot restore requires exactly one argument"));
    }
    let bump = ctx.flags.int64("bump-revision");
    let mark_compacted = ctx.flags.bool("mark-compacted");
    if bump < 0 {
        return Err(Failure::exit(exit::BAD_ARGS, format!("--bump-revision must not be negative ({bump})")));
    }
    if (bump == 0 && mark_compacted) || (bump > 0 && !mark_compacted) {
        return Err(Failure::exit(exit::BAD_ARGS, "--mark-compacted required if --revision-bump > 0"));
    }
    let failed = |message: String| Failure::exit(exit::ERROR, message);
    let name = ctx.flags.string("name").to_string();
    let plan = plan(
        &name,
        ctx.flags.string("initial-advertise-peer-urls"),
        ctx.flags.string("initial-cluster"),
        ctx.flags.string("initial-cluster-token"),
    )
    .map_err(failed)?;
    let data_dir = match ctx.flags.string("data-dir") {
        "" => PathBuf::from(format!("{name}.etcd")),
        dir => PathBuf::from(dir),
    };
    if data_dir.exists() {
        return Err(failed(format!("data-dir {} exists", gostr::quote(data_dir.to_string_lossy().as_bytes()))));
    }
    let wal_dir = match ctx.flags.string("wal-dir") {
        "" => default_wal_dir(&data_dir),
        dir => {
            let dir = PathBuf::from(dir);
            if dir.exists() {
                return Err(failed(format!("wal-dir {} exists", gostr::quote(dir.to_string_lossy().as_bytes()))));
            }
            dir
        }
    };
    let snapshot = PathBuf::from(&args[0]);
    let dirs = format!(
        ",\"path\":{},\"wal-dir\":{},\"data-dir\":{},\"snap-dir\":{}",
        json_path(&snapshot),
        json_path(&wal_dir),
        json_path(&data_dir),
        json_path(&data_dir.join("member").join("snap"))
    );
    log(ctx, "snapshot/v3_snapshot.go:296", "restoring snapshot", &dirs);
    if let Err(e) = std::fs::metadata(&snapshot) {
        return Err(failed(format!("open {}: {}", snapshot.display(), gostr::errno_text(&e))));
    }
    let (identity, members) =
        keel_mvcc::ids::new_cluster(&plan.name, &plan.peer_urls, &plan.initial_cluster, &plan.token);
    let options = ImportOptions {
        skip_hash_check: ctx.flags.bool("skip-hash-check"),
        bump_revision: bump,
        bootstrap: Some((identity, members.clone())),
        read_bytes: Some(Arc::new(AtomicU64::new(0))),
    };
    let restored = restore_into(&snapshot, &data_dir, &wal_dir, ctx.flags.changed("wal-dir"), options);
    let summary = match restored {
        Ok(summary) => summary,
        Err(message) => {
            // Unlike etcd, nothing half-made is left: the directories did not exist.
            let _ = std::fs::remove_dir_all(&data_dir);
            if ctx.flags.changed("wal-dir") {
                let _ = std::fs::remove_dir_all(&wal_dir);
            }
            return Err(failed(message));
        }
    };
    if summary.compact_revision >= 0 {
        // etcd's store says so when it opens a compacted backend.
        let fields = format!(
            ",\"meta-bucket-name\":\"meta\",\"meta-bucket-name-key\":\"finishedCompactRev\",\"restored-compact-revision\":{}",
            summary.compact_revision
        );
        log(ctx, "mvcc/kvstore.go:388", "restored last compact revision", &fields);
    }
    for member in &members {
        log(ctx, "membership/cluster.go:392", "added member", &added_member_fields(identity.cluster_id, member));
    }
    if bump > 0 {
        let fields = format!(",\"revision-bump\":{bump}");
        log(ctx, "snapshot/v3_snapshot.go:300", "bumped latest revision and marked it compacted", &fields);
    }
    log(ctx, "snapshot/v3_snapshot.go:309", "restored snapshot", &dirs);
    Ok(())
}

/// Imports with a progress bar (on a terminal) fed by the bytes read.
fn restore_into(
    snapshot: &Path,
    data_dir: &Path,
    wal_dir: &Path,
    own_wal_dir: bool,
    options: ImportOptions,
) -> Result<ImportSummary, String> {
    let member_dir = data_dir.join("member");
    std::fs::create_dir_all(&member_dir).map_err(|e| format!("mkdir {}: {e}", member_dir.display()))?;
    if own_wal_dir {
        std::fs::create_dir_all(wal_dir).map_err(|e| format!("mkdir {}: {e}", wal_dir.display()))?;
    }
    let total = std::fs::metadata(snapshot).map(|m| m.len()).ok();
    let read = options.read_bytes.clone().unwrap_or_default();
    let (snapshot, store) = (snapshot.to_path_buf(), store_dir(data_dir));
    let worker = std::thread::spawn(move || import_file(&snapshot, &store, options));
    let mut bar = Progress::start("snapshot restore", total, Unit::Bytes);
    while !worker.is_finished() {
        if let Some(bar) = bar.as_mut() {
            bar.set(read.load(Ordering::Relaxed).min(total.unwrap_or(u64::MAX)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let outcome = worker.join().map_err(|_| "the restore stopped unexpectedly".to_string())?;
    if let Some(mut bar) = bar {
        bar.set(total.unwrap_or(0));
        bar.finish();
    }
    outcome.map_err(|e| e.to_string())
}

fn added_member_fields(cluster_id: u64, member: &Member) -> String {
    let urls: Vec<String> = member.peer_ur_ls.iter().map(|url| gostr::json_string(url.as_bytes())).collect();
    format!(
        ",\"cluster-id\":\"{cluster_id:x}\",\"local-member-id\":\"0\",\"added-peer-id\":\"{:x}\",\"added-peer-peer-urls\":[{}]",
        member.id,
        urls.join(",")
    )
}

fn json_path(path: &Path) -> String {
    gostr::json_string(path.to_string_lossy().as_bytes())
}

fn log(ctx: &mut Context<'_>, caller: &str, msg: &str, fields: &str) {
    let _ = ctx.io.stderr.write_all(zap_log(caller, msg, fields).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str, peers: &str, cluster: &str) -> String {
        plan(name, peers, cluster, "etcd-cluster").unwrap_err()
    }

    // The messages are etcdctl 3.4.23's for the same flags.
    #[test]
    fn flags_are_refused_with_etcds_messages() {
        assert_eq!(
            refused("default", "http://localhost:2380", "default=http://localhost:2380,default=http://localhost:2381"),
            "--initial-cluster has default=http://localhost:2381 but missing from \
             --initial-advertise-peer-urls=http://localhost:2380 \
             (len([\"http://localhost:2380\"]) != len([\"http://localhost:2380\" \"http://localhost:2381\"]))"
        );
        assert_eq!(
            refused("default", "http://localhost:2380", "default=http://localhost:2381"),
            "--initial-cluster has default=http://localhost:2381 but missing from \
             --initial-advertise-peer-urls=http://localhost:2380 \
             (resolved urls: \"http://localhost:2380\" != \"http://localhost:2381\")"
        );
        assert_eq!(
            refused("default", "http://localhost:2380", "default=localhost:2381"),
            "URL scheme must be http, https, unix, or unixs: localhost:2381"
        );
        assert_eq!(
            refused("default", "bad", "default=http://localhost:2380"),
            "URL scheme must be http, https, unix, or unixs: bad"
        );
        assert_eq!(
            refused("default", "http://localhost:2380", "default=http://localhost:2380,b=http://localhost:2380"),
            "initial cluster b=http://localhost:2380,default=http://localhost:2380 has duplicate url"
        );
        assert_eq!(
            refused("default", "http://localhost:2380", "garbage"),
            "URL scheme must be http, https, unix, or unixs: "
        );
        assert_eq!(
            refused("x", "http://localhost:2380", "default=http://localhost:2380"),
            "couldn't find local name \"x\" in the initial cluster configuration"
        );
    }

    #[test]
    fn a_good_plan_sorts_members_and_urls() {
        let plan = plan(
            "b",
            "http://10.0.0.2:2380,http://10.0.0.1:2380",
            "c=http://10.0.0.3:2380,b=http://10.0.0.1:2380,b=http://10.0.0.2:2380",
            "tok",
        )
        .unwrap();
        assert_eq!(plan.peer_urls, ["http://10.0.0.1:2380", "http://10.0.0.2:2380"]);
        assert_eq!(
            plan.initial_cluster,
            [
                ("b".to_string(), vec!["http://10.0.0.1:2380".to_string(), "http://10.0.0.2:2380".to_string()]),
                ("c".to_string(), vec!["http://10.0.0.3:2380".to_string()]),
            ]
        );
    }

    #[test]
    fn an_added_member_line_is_etcds() {
        let member =
            Member { id: 0x58a88bf978398f80, peer_ur_ls: vec!["http://127.0.0.1:1".into()], ..Default::default() };
        assert_eq!(
            added_member_fields(0xa2624dd56e655037, &member),
            ",\"cluster-id\":\"a2624dd56e655037\",\"local-member-id\":\"0\",\"added-peer-id\":\"58a88bf978398f80\",\"added-peer-peer-urls\":[\"http://127.0.0.1:1\"]"
        );
    }
}
