//! `data-dir status DIR`: what a Keel data dir holds, read offline (and
//! read-only, so a running member's dir can be inspected too, as of its
//! store's last flush, which the applied index shown tells): who it
//! belongs to, the members it knows, its revision, keys and size. etcd has
//! no such command; `etcdutl`'s closest is `snapshot status` on a copy of
//! `member/snap/db`.

use std::path::Path;
use std::sync::Arc;

use keel_mvcc::{KvStore, RocksBackend};
use keel_proto::etcdserverpb::Member;

use super::endpoint::{humanize_bytes, table, unsupported};
use super::{Command, Group};
use crate::error::{exit, Failure};
use crate::global::Context;
use crate::gostr;
use crate::printer::Format;

pub const DATA_DIR: Group = Group {
    name: "data-dir",
    short: "Inspects a Keel data directory offline",
    usage: "data-dir <subcommand>",
    long: "",
    flags: &[],
    subcommands: &[&STATUS],
};

const STATUS: Command = Command {
    name: "status",
    short: "Prints the member, cluster, revision, key count and size of a data directory",
    usage: "status <data-dir>",
    long: "Reads the data directory read-only, so a running member's can be inspected too.\n\
           When --write-out is set to simple, this command prints one field per line.\n",
    flags: &[],
    run: status,
};

/// What a data dir holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirStatus {
    pub member_id: Option<u64>,
    pub cluster_id: Option<u64>,
    pub members: Vec<Member>,
    pub revision: i64,
    pub compact_revision: i64,
    pub keys: i64,
    pub applied_index: u64,
    /// Bytes of every file under the data dir (store, raft log, snapshots).
    pub size: u64,
    /// Bytes of the store alone.
    pub store_size: u64,
}

/// Reads `data_dir`'s store read-only. Blocking.
pub fn dir_status(data_dir: &Path) -> Result<DirStatus, String> {
    let store_dir = data_dir.join("member").join("kv");
    if !store_dir.is_dir() {
        if data_dir.join("member").join("snap").join("db").is_file() {
            return Err(format!(
                "{} holds etcd's data, not Keel's: keel imports it when started on it (docs/migrate-from-etcd.md)",
                data_dir.display()
            ));
        }
        return Err(format!("{}: no Keel store here (no member/kv)", data_dir.display()));
    }
    let backend = RocksBackend::open_read_only(&store_dir).map_err(|e| e.to_string())?;
    let store = KvStore::open(Arc::new(backend)).map_err(|e| format!("{}: {e}", store_dir.display()))?;
    let identity = store.identity().map_err(|e| e.to_string())?;
    Ok(DirStatus {
        member_id: identity.map(|i| i.member_id),
        cluster_id: identity.map(|i| i.cluster_id),
        members: store.members().map_err(|e| e.to_string())?,
        revision: store.current_revision(),
        compact_revision: store.compact_revision(),
        keys: store.live_keys(),
        applied_index: store.consistent_index(),
        size: tree_size(data_dir),
        store_size: tree_size(&store_dir),
    })
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => tree_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn status(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(Failure::exit(exit::BAD_ARGS, "data-dir status requires exactly one argument"));
    }
    let printer = ctx.setup()?;
    let status = dir_status(Path::new(&args[0])).map_err(|e| Failure::exit(exit::ERROR, e))?;
    let out = print(printer.format, &status)?;
    let _ = ctx.io.stdout.write_all(out.as_bytes());
    Ok(())
}

fn hex_or_none(id: Option<u64>) -> String {
    id.map_or_else(|| "none".to_string(), |id| format!("{id:x}"))
}

fn member_line(m: &Member) -> String {
    let list = |urls: &[String]| if urls.is_empty() { "none".to_string() } else { urls.join(",") };
    format!(
        "member {:x}: name {}, peer URLs {}, client URLs {}{}",
        m.id,
        if m.name.is_empty() { "(not started yet)" } else { &m.name },
        list(&m.peer_ur_ls),
        list(&m.client_ur_ls),
        if m.is_learner { ", learner" } else { "" }
    )
}

pub fn print(format: Format, s: &DirStatus) -> Result<String, Failure> {
    Ok(match format {
        Format::Simple => {
            let mut out =
                format!("member id: {}\ncluster id: {}\n", hex_or_none(s.member_id), hex_or_none(s.cluster_id));
            for m in &s.members {
                out.push_str(&member_line(m));
                out.push('\n');
            }
            out.push_str(&format!(
                "revision: {}\ncompact revision: {}\nkeys: {}\napplied index: {}\nsize: {} (store {})\n",
                s.revision,
                s.compact_revision,
                s.keys,
                s.applied_index,
                humanize_bytes(s.size),
                humanize_bytes(s.store_size)
            ));
            out
        }
        Format::Table => {
            let mut out = table(
                &["member id", "cluster id", "revision", "compact revision", "keys", "applied index", "size"],
                &[vec![
                    hex_or_none(s.member_id),
                    hex_or_none(s.cluster_id),
                    s.revision.to_string(),
                    s.compact_revision.to_string(),
                    s.keys.to_string(),
                    s.applied_index.to_string(),
                    humanize_bytes(s.size),
                ]],
            );
            let rows: Vec<Vec<String>> = s
                .members
                .iter()
                .map(|m| {
                    vec![
                        format!("{:x}", m.id),
                        m.name.clone(),
                        m.peer_ur_ls.join(", "),
                        m.client_ur_ls.join(", "),
                        m.is_learner.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(&["id", "name", "peer addrs", "client addrs", "is learner"], &rows));
            out
        }
        Format::Json => {
            let strings = |items: &[String]| {
                let quoted: Vec<String> = items.iter().map(|s| gostr::json_string(s.as_bytes())).collect();
                format!("[{}]", quoted.join(","))
            };
            let members: Vec<String> = s
                .members
                .iter()
                .map(|m| {
                    format!(
                        "{{\"ID\":{},\"name\":{},\"peerURLs\":{},\"clientURLs\":{},\"isLearner\":{}}}",
                        m.id,
                        gostr::json_string(m.name.as_bytes()),
                        strings(&m.peer_ur_ls),
                        strings(&m.client_ur_ls),
                        m.is_learner
                    )
                })
                .collect();
            format!(
                "{{\"member_id\":{},\"cluster_id\":{},\"members\":[{}],\"revision\":{},\"compact_revision\":{},\"keys\":{},\"applied_index\":{},\"size\":{},\"store_size\":{}}}\n",
                s.member_id.unwrap_or(0),
                s.cluster_id.unwrap_or(0),
                members.join(","),
                s.revision,
                s.compact_revision,
                s.keys,
                s.applied_index,
                s.size,
                s.store_size
            )
        }
        Format::Fields => {
            let mut out =
                format!("\"MemberID\" : {}\n\"ClusterID\" : {}\n", s.member_id.unwrap_or(0), s.cluster_id.unwrap_or(0));
            for m in &s.members {
                out.push_str(&format!("\"Member\" : {}\n", gostr::quote(member_line(m).as_bytes())));
            }
            out.push_str(&format!(
                "\"Revision\" : {}\n\"CompactRevision\" : {}\n\"Keys\" : {}\n\"AppliedIndex\" : {}\n\"Size\" : {}\n\"StoreSize\" : {}\n",
                s.revision, s.compact_revision, s.keys, s.applied_index, s.size, s.store_size
            ));
            out
        }
        Format::Protobuf => return Err(unsupported("protobuf")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DirStatus {
        DirStatus {
            member_id: Some(0x8e9e05c52164694d),
            cluster_id: Some(0xcdf818194e3a8c32),
            members: vec![Member {
                id: 0x8e9e05c52164694d,
                name: "default".into(),
                peer_ur_ls: vec!["http://localhost:2380".into()],
                client_ur_ls: vec!["http://localhost:2379".into()],
                ..Default::default()
            }],
            revision: 12,
            compact_revision: -1,
            keys: 3,
            applied_index: 14,
            size: 1_234_567,
            store_size: 1_000_000,
        }
    }

    #[test]
    fn simple_prints_a_field_a_line() {
        assert_eq!(
            print(Format::Simple, &sample()).unwrap(),
            "member id: 8e9e05c52164694d\ncluster id: cdf818194e3a8c32\n\
             member 8e9e05c52164694d: name default, peer URLs http://localhost:2380, client URLs http://localhost:2379\n\
             revision: 12\ncompact revision: -1\nkeys: 3\napplied index: 14\nsize: 1.2 MB (store 1.0 MB)\n"
        );
    }

    #[test]
    fn json_is_one_parsable_line() {
        let out = print(Format::Json, &sample()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["revision"], 12);
        assert_eq!(value["members"][0]["name"], "default");
        assert_eq!(value["member_id"].as_u64(), Some(0x8e9e05c52164694d));
    }

    #[test]
    fn a_dir_without_a_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = dir_status(dir.path()).unwrap_err();
        assert!(err.ends_with("no Keel store here (no member/kv)"), "{err}");
        std::fs::create_dir_all(dir.path().join("member/snap")).unwrap();
        std::fs::write(dir.path().join("member/snap/db"), b"").unwrap();
        assert!(dir_status(dir.path()).unwrap_err().contains("holds etcd's data"));
    }
}
