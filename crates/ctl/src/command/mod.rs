//! The commands, one file per etcdctl command group, and cobra's way of
//! finding the command an argument list names.
//!
//! Adding a command: a leaf (`get`) is a [`Command`]; a group (`lease`)
//! is a [`Group`] of leaf `Command`s whose `name` and `usage` are relative
//! to the group (`name: "grant"`, `usage: "grant <ttl>"`). Either way, add
//! one `mod` line and one entry to [`COMMANDS`]; help text, `--help`,
//! prefix matching and `etcdctl help lease grant` then follow.

use crate::error::Failure;
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;

mod alarm;
mod auth;
mod check;
mod compaction;
pub mod completion;
mod data_dir;
mod defrag;
mod del;
mod elect;
mod endpoint;
mod get;
mod lease;
mod lock;
mod make_mirror;
mod member;
mod move_leader;
mod put;
mod restore;
mod role;
mod snapshot;
mod txn;
pub(crate) mod user;
pub mod version;
mod watch;

/// One leaf command, described as etcdctl's cobra command is.
pub struct Command {
    /// The name within its parent: `get`, or `grant` in the `lease` group.
    pub name: &'static str,
    pub short: &'static str,
    /// cobra's `Use`.
    pub usage: &'static str,
    pub long: &'static str,
    /// Local flags, without `--help`.
    pub flags: &'static [FlagSpec],
    pub run: fn(&mut Context<'_>, &[String]) -> Result<(), Failure>,
}

/// A command group (`lease`, `member`, ...): cobra's command with
/// subcommands and no action of its own. Run without a known subcommand
/// (`etcdctl lease`, `etcdctl lease foo`) it prints its help and exits 0.
pub struct Group {
    pub name: &'static str,
    pub short: &'static str,
    /// cobra's `Use`: `lease <subcommand>`.
    pub usage: &'static str,
    pub long: &'static str,
    /// Persistent flags (`endpoint --cluster`): listed as the group's own
    /// options and inherited by every subcommand.
    pub flags: &'static [FlagSpec],
    /// Sorted by name, as cobra lists them.
    pub subcommands: &'static [&'static Command],
}

impl Group {
    /// The subcommand `word` names, prefix matching as cobra does with
    /// etcdctl's `EnablePrefixMatching` (`etcdctl lease gra 60` grants).
    pub fn find(&self, word: &str) -> Option<&'static Command> {
        let names: Vec<&str> = self.subcommands.iter().map(|c| c.name).collect();
        let name = find_next(&names, word)?;
        self.subcommands.iter().find(|c| c.name == name).copied()
    }
}

/// A top-level command.
#[derive(Clone, Copy)]
pub enum Entry {
    Leaf(&'static Command),
    Group(&'static Group),
}

impl Entry {
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Leaf(c) => c.name,
            Entry::Group(g) => g.name,
        }
    }
}

/// The top-level commands keelctl implements.
pub const COMMANDS: &[Entry] = &[
    Entry::Group(&alarm::ALARM),
    Entry::Group(&auth::AUTH),
    Entry::Group(&check::CHECK),
    Entry::Leaf(&compaction::COMPACTION),
    Entry::Group(&completion::COMPLETION),
    Entry::Group(&data_dir::DATA_DIR),
    Entry::Leaf(&defrag::DEFRAG),
    Entry::Leaf(&del::DEL),
    Entry::Leaf(&elect::ELECT),
    Entry::Group(&endpoint::ENDPOINT),
    Entry::Leaf(&get::GET),
    Entry::Group(&lease::LEASE),
    Entry::Leaf(&lock::LOCK),
    Entry::Leaf(&make_mirror::MAKE_MIRROR),
    Entry::Group(&member::MEMBER),
    Entry::Leaf(&move_leader::MOVE_LEADER),
    Entry::Leaf(&put::PUT),
    Entry::Group(&role::ROLE),
    Entry::Group(&snapshot::SNAPSHOT),
    Entry::Leaf(&txn::TXN),
    Entry::Group(&user::USER),
    Entry::Leaf(&version::VERSION),
    Entry::Leaf(&watch::WATCH),
];

/// The top-level names of every etcdctl 3.4 command, sorted as cobra sorts
/// them: unknown-command suggestions and prefix matching range over all of
/// them, implemented here or not.
pub const ETCDCTL_COMMANDS: &[&str] = &[
    "alarm",
    "auth",
    "check",
    "compaction",
    "completion",
    "defrag",
    "del",
    "elect",
    "endpoint",
    "get",
    "help",
    "lease",
    "lock",
    "make-mirror",
    "member",
    "migrate",
    "move-leader",
    "put",
    "role",
    "snapshot",
    "txn",
    "user",
    "version",
    "watch",
];

/// Commands etcdctl does not have (etcdutl's kind of tools). Named in
/// full only: a prefix keeps meaning what it means to etcdctl.
pub const KEELCTL_ONLY: &[&str] = &["data-dir"];

/// The root help's command listing, as etcdctl 3.4.23 prints it.
pub const ROOT_LISTING: &[(&str, &str)] = &[
    ("alarm disarm", "Disarms all alarms"),
    ("alarm list", "Lists all alarms"),
    ("auth disable", "Disables authentication"),
    ("auth enable", "Enables authentication"),
    ("check datascale", "Check the memory usage of holding data for different workloads on a given server endpoint."),
    ("check perf", "Check the performance of the etcd cluster"),
    ("compaction", "Compacts the event history in etcd"),
    ("completion bash", "Generate the autocompletion script for bash"),
    ("completion fish", "Generate the autocompletion script for fish"),
    ("completion powershell", "Generate the autocompletion script for powershell"),
    ("completion zsh", "Generate the autocompletion script for zsh"),
    ("defrag", "Defragments the storage of the etcd members with given endpoints"),
    ("del", "Removes the specified key or range of keys [key, range_end)"),
    ("elect", "Observes and participates in leader election"),
    ("endpoint hashkv", "Prints the KV history hash for each endpoint in --endpoints"),
    ("endpoint health", "Checks the healthiness of endpoints specified in `--endpoints` flag"),
    ("endpoint status", "Prints out the status of endpoints specified in `--endpoints` flag"),
    ("get", "Gets the key or a range of keys"),
    ("help", "Help about any command"),
    ("lease grant", "Creates leases"),
    ("lease keep-alive", "Keeps leases alive (renew)"),
    ("lease list", "List all active leases"),
    ("lease revoke", "Revokes leases"),
    ("lease timetolive", "Get lease information"),
    ("lock", "Acquires a named lock"),
    ("make-mirror", "Makes a mirror at the destination etcd cluster"),
    ("member add", "Adds a member into the cluster"),
    ("member list", "Lists all members in the cluster"),
    ("member promote", "Promotes a non-voting member in the cluster"),
    ("member remove", "Removes a member from the cluster"),
    ("member update", "Updates a member in the cluster"),
    ("migrate", "Migrates keys in a v2 store to a mvcc store"),
    ("move-leader", "Transfers leadership to another etcd cluster member."),
    ("put", "Puts the given key into the store"),
    ("role add", "Adds a new role"),
    ("role delete", "Deletes a role"),
    ("role get", "Gets detailed information of a role"),
    ("role grant-permission", "Grants a key to a role"),
    ("role list", "Lists all roles"),
    ("role revoke-permission", "Revokes a key from a role"),
    ("snapshot restore", "Restores an etcd member snapshot to an etcd directory"),
    ("snapshot save", "Stores an etcd node backend snapshot to a given file"),
    ("snapshot status", "Gets backend snapshot status of a given file"),
    ("txn", "Txn processes all the requests in one transaction"),
    ("user add", "Adds a new user"),
    ("user delete", "Deletes a user"),
    ("user get", "Gets detailed information of a user"),
    ("user grant-role", "Grants a role to a user"),
    ("user list", "Lists all users"),
    ("user passwd", "Changes password of user"),
    ("user revoke-role", "Revokes a role from a user"),
    ("version", "Prints the version of etcdctl"),
    ("watch", "Watches events stream on keys or prefixes"),
];

/// cobra's `findNext` with etcdctl's `EnablePrefixMatching`: an exact name,
/// or the one name `word` is a prefix of.
pub fn find_next<'n>(names: &[&'n str], word: &str) -> Option<&'n str> {
    if let Some(exact) = names.iter().find(|name| **name == word) {
        return Some(exact);
    }
    let mut matches = names.iter().filter(|name| !word.is_empty() && name.starts_with(word));
    match (matches.next(), matches.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// cobra's "Did you mean this?" list.
pub fn suggestions(word: &str) -> Vec<&'static str> {
    let lower = word.to_lowercase();
    ETCDCTL_COMMANDS
        .iter()
        // cobra never suggests its own help command.
        .filter(|name| **name != "help")
        .filter(|name| crate::gostr::levenshtein(word, name) <= 2 || name.starts_with(&lower))
        .copied()
        .collect()
}

pub fn lookup(name: &str) -> Option<Entry> {
    COMMANDS.iter().find(|c| c.name() == name).copied()
}

/// The help flag cobra adds to every command.
pub const HELP: FlagSpec = FlagSpec::new("help", Kind::Bool, "false", "").short('h');

/// Arguments as cobra hands them to `Run`: strings are Go strings, so keys
/// are their bytes.
pub fn key_bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_needs_a_unique_prefix() {
        assert_eq!(find_next(ETCDCTL_COMMANDS, "get"), Some("get"));
        assert_eq!(find_next(ETCDCTL_COMMANDS, "compa"), Some("compaction"));
        assert_eq!(find_next(ETCDCTL_COMMANDS, "comp"), None);
        assert_eq!(find_next(ETCDCTL_COMMANDS, "x"), None);
    }

    #[test]
    fn suggestions_match_cobra() {
        // Captured from etcdctl 3.4.23.
        assert_eq!(suggestions("gt"), ["get", "put"]);
        assert_eq!(suggestions("comp"), ["compaction", "completion"]);
        assert_eq!(suggestions("x"), ["txn"]);
    }
}
