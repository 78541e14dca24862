//! Which cases the doubled script runs with keelctl: those whose commands keelctl has (issue
//! 17 brings them in turn). The others run with etcdctl on keelctl's Keel too, so its store
//! stays in step with the candidate's.

use super::cases::Case;

/// keelctl's top-level commands so far (`compact` is `compaction`: etcdctl takes any unique
/// prefix of a command, and the script spells it so).
const COMMANDS: &[&str] = &[
    // etcdctl v2's verbs (the `ETCDCTL_API=2` script).
    "set",
    "mk",
    "mkdir",
    "setdir",
    "update",
    "updatedir",
    "rm",
    "rmdir",
    "ls",
    "exec-watch",
    "-o",
    // etcdctl v3's.
    "alarm",
    "auth",
    "compaction",
    "compact",
    "defrag",
    "del",
    "elect",
    "endpoint",
    "get",
    "lease",
    "lock",
    "member",
    "move-leader",
    "put",
    "role",
    "snapshot",
    "txn",
    "user",
    "version",
    "watch",
];

/// What the report names as still to come.
pub const COMMANDS_MISSING: &str = "make-mirror, check";

/// Subcommands of those that keelctl does not have yet.
const SUBCOMMANDS_MISSING: &[[&str; 2]] = &[];

/// Whether keelctl runs `case`: its command, and the one it runs in the background, if any.
pub fn implements(case: &Case) -> bool {
    let has = |args: &[&str]| {
        // Global flags may come first (`--user=alice:pw get a`).
        let args = &args[args.iter().take_while(|arg| arg.starts_with("--") && arg.contains('=')).count()..];
        args.first().is_some_and(|command| COMMANDS.contains(command))
            && !SUBCOMMANDS_MISSING.iter().any(|missing| args.starts_with(missing))
    };
    // A case may be only its background watch, with no command of its own.
    (case.args.is_empty() || has(case.args)) && case.watching.as_ref().is_none_or(|watching| has(watching.args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::cases::{CASES, V2_CASES};

    #[test]
    fn every_case_runs_with_keelctl() {
        let left: Vec<&str> = CASES.iter().filter(|case| !implements(case)).map(|case| case.id).collect();
        assert!(left.is_empty(), "left to etcdctl: {left:?}");
        assert!(V2_CASES.iter().all(implements), "every v2 case runs with keelctl");
    }

    #[test]
    fn the_script_has_cases_for_every_keelctl_command() {
        // The script spells `compaction` as `compact`, and has no case of these yet.
        let without_cases = ["compaction", "move-leader", "version"];
        for command in COMMANDS {
            let runs = CASES.iter().chain(V2_CASES).any(|case| {
                case.args.first() == Some(command)
                    || case.watching.as_ref().is_some_and(|watching| watching.args.first() == Some(command))
            });
            assert_eq!(runs, !without_cases.contains(command), "`{command}`: cases in the script or not");
        }
    }
}
