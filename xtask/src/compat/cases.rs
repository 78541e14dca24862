//! The script: etcdctl invocations run in order against a fresh, empty single-member cluster.
//!
//! Cases build on each other's state, so revisions are deterministic: the `--rev` numbers and
//! comments below assume every earlier case ran (a failed write on the server under test
//! shows up as a diff in its own case and shifts later ones). Ids are stable: they are what
//! `docs/compat.md` refers to. Append new cases at the end of a section only when no later
//! `--rev` depends on the revision count, otherwise recheck those numbers with
//! `cargo xtask compat --only etcd --verbose`.
//!
//! etcdctl 3.4 has no `get --count-only` nor `--min-mod-rev`-style filters (3.5 added them);
//! counts are covered by the `count` field of the json cases, `--limit` ones above all.
//! Sorted ranges stay at twelve keys or fewer: etcd sorts with Go's `sort.Sort`, which is an
//! (order-preserving) insertion sort up to twelve elements, so equal keys keep key order in
//! both directions; above that the order of ties is an artefact of pdqsort.

pub use super::runner::StopOrder;

/// How a case's output is normalised; see `normalise.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// `endpoint status`: implementation-specific fields are masked as well.
    EndpointStatus,
    /// `lease timetolive`: a plausible remaining TTL is masked as well.
    LeaseTimeToLive,
    /// `member list`: member ids (derived from the peer URL) are masked as well.
    Members,
    /// Membership output with two members: ids are masked to one `<member-id>` and member rows
    /// sorted, since members are listed in id order and an added member's id is random.
    MembersUnordered,
    /// `etcdctl lock` and `elect` (or a read next to them): the keys `<name>/<lease hex>` of the
    /// sessions they granted become `<name>/<session-N>`, and those leases' decimal ids
    /// `<session-N>`.
    SessionKeys(&'static str),
    /// `watch -i` with two watches: etcdctl prints each watch's events from its own goroutine,
    /// so their lines interleave at random; the watch output's lines are sorted.
    InterleavedWatches,
    /// etcdctl `--debug` dialling a TLS endpoint whose certificate it refuses: gRPC's log, whose
    /// lines (timestamps, retries, local ports) vary from run to run, is reduced to the distinct
    /// reasons the handshake failed, `<handshake failed: REASON>`, one line each.
    HandshakeReasons,
    /// `snapshot save` and `snapshot status`: the file's size, whole-file hash and key count
    /// depend on each server's layout of the same store and are masked; the revision is not.
    Snapshot,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub id: &'static str,
    /// etcdctl arguments after the global `--endpoints` and timeout flags. `{name}` stands for
    /// the value an earlier case captured on the same server (see `session.rs`).
    pub args: &'static [&'static str],
    /// Fed to etcdctl's stdin (`txn` reads its script from there); `{name}` as in `args`.
    pub stdin: Option<&'static str>,
    pub kind: Kind,
    /// For `lease grant`: the variable that receives the granted id (hex, as etcdctl prints
    /// and takes it).
    pub capture: Option<&'static str>,
    /// A `watch` running in the background while `args` runs (`args` may be empty); the
    /// case's output is the command's followed by the watch's.
    pub watching: Option<Watching>,
}

#[derive(Debug, Clone, Copy)]
pub struct Watching {
    pub args: &'static [&'static str],
    /// For `watch -i`: the watch commands, one per line; stdin stays open after them.
    pub stdin: Option<&'static str>,
    /// Stopped with SIGINT instead of SIGKILL (see [`super::runner::Background`]).
    pub interrupt: bool,
    /// The case's own command runs until stopped too, and which is stopped first.
    pub held: Option<StopOrder>,
}

const fn case(id: &'static str, args: &'static [&'static str]) -> Case {
    Case { id, args, stdin: None, kind: Kind::Plain, capture: None, watching: None }
}

const fn snapshot(id: &'static str, args: &'static [&'static str]) -> Case {
    Case { kind: Kind::Snapshot, ..case(id, args) }
}

/// `etcdctl <watch>` in the background while `etcdctl <args>` runs.
const fn watching(id: &'static str, watch: &'static [&'static str], args: &'static [&'static str]) -> Case {
    Case { watching: Some(Watching { args: watch, stdin: None, interrupt: false, held: None }), ..case(id, args) }
}

/// `etcdctl watch -i` fed `script` in the background while `etcdctl <args>` runs.
const fn watching_interactive(id: &'static str, script: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        watching: Some(Watching { args: &["watch", "-i"], stdin: Some(script), interrupt: false, held: None }),
        ..case(id, args)
    }
}

/// `etcdctl <holder>` (a `lock` or `elect` that holds until interrupted) in the background while
/// `etcdctl <args>` runs; then the holder is interrupted and releases. Keys are normalised as
/// [`Kind::SessionKeys`] of `name`.
const fn holding(
    id: &'static str,
    name: &'static str,
    holder: &'static [&'static str],
    args: &'static [&'static str],
) -> Case {
    Case {
        kind: Kind::SessionKeys(name),
        watching: Some(Watching { args: holder, stdin: None, interrupt: true, held: None }),
        ..case(id, args)
    }
}

/// Two commands that run until interrupted (locks, campaigns, observers): `etcdctl <first>` in
/// the background, then `etcdctl <second>`; both are interrupted, in `order`.
const fn both_held(
    id: &'static str,
    name: &'static str,
    first: &'static [&'static str],
    second: &'static [&'static str],
    order: StopOrder,
) -> Case {
    Case {
        kind: Kind::SessionKeys(name),
        watching: Some(Watching { args: first, stdin: None, interrupt: true, held: Some(order) }),
        ..case(id, second)
    }
}

/// `etcdctl <args>` (a `lock` running a command) with keys normalised as
/// [`Kind::SessionKeys`] of `name`.
const fn session(id: &'static str, name: &'static str, args: &'static [&'static str]) -> Case {
    Case { kind: Kind::SessionKeys(name), ..case(id, args) }
}

const fn status(id: &'static str, args: &'static [&'static str]) -> Case {
    Case { kind: Kind::EndpointStatus, ..case(id, args) }
}

const fn unordered(id: &'static str, args: &'static [&'static str]) -> Case {
    Case { kind: Kind::MembersUnordered, ..case(id, args) }
}

/// `lease grant` or `member add`, whose id later cases refer to as `{var}`.
const fn grant(id: &'static str, args: &'static [&'static str], var: &'static str) -> Case {
    Case { capture: Some(var), ..case(id, args) }
}

const fn members(id: &'static str, args: &'static [&'static str]) -> Case {
    Case { kind: Kind::Members, ..case(id, args) }
}

const fn ttl(id: &'static str, args: &'static [&'static str]) -> Case {
    Case { kind: Kind::LeaseTimeToLive, ..case(id, args) }
}

/// `etcdctl txn` reads compares, success ops and failure ops, each block ended by an empty
/// line; `script` is written the same way.
const fn txn(id: &'static str, args: &'static [&'static str], script: &'static str) -> Case {
    Case { stdin: Some(script), ..case(id, args) }
}

/// `etcdctl <args>` with `input` on its stdin (a password for `user add --interactive=false`
/// or `user passwd --interactive=false`), not a txn script.
const fn input(id: &'static str, args: &'static [&'static str], input: &'static str) -> Case {
    Case { stdin: Some(input), ..case(id, args) }
}

/// etcdctl's global `--user` for the auth cases: root, and the limited users `alice` (roles
/// `reader` and `writer`) and `bob` (no role; after `user-passwd`).
const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";
const BOB: &str = "--user=bob:bobpw2";

#[rustfmt::skip]
pub static CASES: &[Case] = &[
    // ---- A fresh member (revision 1).
    case("endpoint-health", &["endpoint", "health"]),
    case("endpoint-health-json", &["endpoint", "health", "-w", "json"]),
    status("endpoint-status-initial", &["endpoint", "status"]),
    status("endpoint-status-initial-json", &["endpoint", "status", "-w", "json"]),
    status("endpoint-status-initial-table", &["endpoint", "status", "-w", "table"]),
    status("endpoint-status-initial-fields", &["endpoint", "status", "-w", "fields"]),
    case("alarm-list-none", &["alarm", "list"]),
    case("alarm-list-none-json", &["alarm", "list", "-w", "json"]),
    case("alarm-disarm-none", &["alarm", "disarm"]),
    case("get-all-empty-store", &["get", "", "--prefix"]),
    case("get-all-empty-store-json", &["get", "", "--prefix", "-w", "json"]),
    case("get-empty-key", &["get", ""]),
    case("get-empty-key-json", &["get", "", "-w", "json"]),
    // ---- put
    case("put-plain", &["put", "foo", "bar"]), // rev 2
    case("put-plain-json", &["put", "bar", "baz", "-w", "json"]), // rev 3
    case("put-overwrite", &["put", "foo", "bar2"]), // rev 4, foo version 2
    case("put-prev-kv", &["put", "foo", "bar3", "--prev-kv"]), // rev 5
    case("put-prev-kv-json", &["put", "foo", "bar4", "--prev-kv", "-w", "json"]), // rev 6
    case("put-prev-kv-new-key", &["put", "fresh", "v1", "--prev-kv"]), // rev 7
    case("put-prev-kv-new-key-json", &["put", "fresh2", "v1", "--prev-kv", "-w", "json"]), // rev 8
    case("put-ignore-value", &["put", "foo", "--ignore-value"]), // rev 9
    case("put-ignore-value-prev-kv-json", &["put", "foo", "--ignore-value", "--prev-kv", "-w", "json"]), // rev 10
    case("put-ignore-value-missing-key", &["put", "missing", "--ignore-value"]),
    case("put-ignore-value-missing-key-json", &["put", "missing", "--ignore-value", "-w", "json"]),
    case("put-ignore-lease", &["put", "foo", "bar5", "--ignore-lease"]), // rev 11
    case("put-ignore-lease-json", &["put", "bar", "baz2", "--ignore-lease", "-w", "json"]), // rev 12
    case("put-ignore-lease-missing-key", &["put", "missing", "v", "--ignore-lease"]),
    case("put-ignore-value-and-lease", &["put", "foo", "--ignore-value", "--ignore-lease"]), // rev 13
    case("put-unknown-lease", &["put", "foo", "v", "--lease=1234"]),
    case("put-unknown-lease-json", &["put", "foo", "v", "--lease=1234", "-w", "json"]),
    case("put-empty-key", &["put", "", "v"]),
    case("put-empty-key-json", &["put", "", "v", "-w", "json"]),
    case("put-empty-value", &["put", "empty", ""]), // rev 14
    case("put-utf8", &["put", "ключ", "значение"]), // rev 15
    case("put-space", &["put", "sp ace", "v v"]), // rev 16
    case("put-multiline-value", &["put", "nl", "line1\nline2"]), // rev 17
    case("get-after-puts-fields", &["get", "foo", "-w", "fields"]),
    case("endpoint-hashkv-after-puts", &["endpoint", "hashkv"]),
    case("get-after-puts-json", &["get", "", "--prefix", "-w", "json"]),
    case("get-utf8-json", &["get", "ключ", "-w", "json"]),
    case("get-space-hex", &["get", "sp ace", "--hex"]),
    case("get-multiline-value", &["get", "nl"]),
    case("get-empty-value-json", &["get", "empty", "-w", "json"]),
    // ---- Keys for ranges and sorting: s/a..s/f, six keys (revs 18..27).
    case("put-seed-s-a", &["put", "s/a", "5"]),
    case("put-seed-s-b", &["put", "s/b", "3"]),
    case("put-seed-s-c", &["put", "s/c", "4"]),
    case("put-seed-s-d", &["put", "s/d", "1"]),
    case("put-seed-s-e", &["put", "s/e", "9"]),
    case("put-seed-s-f", &["put", "s/f", "2", "-w", "json"]),
    case("put-seed-s-b-again", &["put", "s/b", "8"]),
    case("put-seed-s-e-again", &["put", "s/e", "6"]),
    case("put-seed-s-e-third", &["put", "s/e", "0", "--prev-kv"]),
    case("put-seed-s-c-same-value", &["put", "s/c", "4", "--prev-kv", "-w", "json"]),
    // ---- get
    case("get-single", &["get", "foo"]),
    case("get-single-json", &["get", "foo", "-w", "json"]),
    case("get-missing", &["get", "nothere"]),
    case("get-missing-json", &["get", "nothere", "-w", "json"]),
    case("get-prefix", &["get", "s/", "--prefix"]),
    case("get-prefix-json", &["get", "s/", "--prefix", "-w", "json"]),
    case("get-prefix-no-match-json", &["get", "nope/", "--prefix", "-w", "json"]),
    case("get-from-key", &["get", "s/c", "--from-key"]),
    case("get-from-key-json", &["get", "s/c", "--from-key", "-w", "json"]),
    case("get-from-key-keys-only", &["get", "", "--from-key", "--keys-only"]),
    case("get-range", &["get", "s/b", "s/e"]),
    case("get-range-json", &["get", "s/b", "s/e", "-w", "json"]),
    case("get-range-empty-json", &["get", "s/x", "s/z", "-w", "json"]),
    case("get-limit", &["get", "s/", "--prefix", "--limit=2"]),
    case("get-limit-json", &["get", "s/", "--prefix", "--limit=2", "-w", "json"]),
    case("get-limit-above-count-json", &["get", "s/", "--prefix", "--limit=100", "-w", "json"]),
    case("get-sort-key-ascend-json", &["get", "s/", "--prefix", "--sort-by=KEY", "--order=ASCEND", "-w", "json"]),
    case("get-sort-key-descend", &["get", "s/", "--prefix", "--sort-by=KEY", "--order=DESCEND"]),
    case("get-order-descend-only", &["get", "s/", "--prefix", "--order=DESCEND"]),
    case("get-sort-version-ascend", &["get", "s/", "--prefix", "--sort-by=VERSION", "--order=ASCEND"]),
    case("get-sort-version-descend", &["get", "s/", "--prefix", "--sort-by=VERSION", "--order=DESCEND"]),
    case("get-sort-version-descend-json", &["get", "s/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "-w", "json"]),
    case("get-sort-create-ascend", &["get", "s/", "--prefix", "--sort-by=CREATE", "--order=ASCEND"]),
    case("get-sort-create-descend-json", &["get", "s/", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "-w", "json"]),
    case("get-sort-modify-ascend", &["get", "s/", "--prefix", "--sort-by=MODIFY", "--order=ASCEND"]),
    case("get-sort-modify-descend", &["get", "s/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]),
    case("get-sort-value-ascend", &["get", "s/", "--prefix", "--sort-by=VALUE", "--order=ASCEND"]),
    case("get-sort-value-descend", &["get", "s/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"]),
    case("get-sort-value-descend-json", &["get", "s/", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "-w", "json"]),
    case("get-sort-value-no-order", &["get", "s/", "--prefix", "--sort-by=VALUE"]),
    case("get-sort-value-limit-json", &["get", "s/", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "--limit=2", "-w", "json"]),
    case("get-sort-modify-limit-range", &["get", "s/b", "s/f", "--sort-by=MODIFY", "--order=DESCEND", "--limit=2"]),
    case("get-keys-only", &["get", "s/", "--prefix", "--keys-only"]),
    case("get-keys-only-json", &["get", "s/", "--prefix", "--keys-only", "-w", "json"]),
    case("get-keys-only-limit-json", &["get", "s/", "--prefix", "--keys-only", "--limit=1", "-w", "json"]),
    case("get-print-value-only", &["get", "foo", "--print-value-only"]),
    case("get-print-value-only-prefix", &["get", "s/", "--prefix", "--print-value-only"]),
    case("get-consistency-s", &["get", "foo", "--consistency=s"]),
    case("get-consistency-s-json", &["get", "s/", "--prefix", "--consistency=s", "-w", "json"]),
    case("get-consistency-l-json", &["get", "s/", "--prefix", "--consistency=l", "-w", "json"]),
    case("get-prefix-fields", &["get", "s/", "--prefix", "--limit=1", "-w", "fields"]),
    case("get-rev", &["get", "foo", "--rev=2"]),
    case("get-rev-json", &["get", "foo", "--rev=5", "-w", "json"]),
    case("get-rev-before-create", &["get", "fresh", "--rev=2"]),
    case("get-rev-before-create-json", &["get", "fresh", "--rev=2", "-w", "json"]),
    case("get-rev-prefix-json", &["get", "s/", "--prefix", "--rev=22", "-w", "json"]),
    case("get-rev-sort-value", &["get", "s/", "--prefix", "--rev=25", "--sort-by=VALUE", "--order=DESCEND"]),
    case("get-rev-current-json", &["get", "foo", "--rev=27", "-w", "json"]),
    case("get-rev-future", &["get", "foo", "--rev=1000"]),
    case("get-rev-future-json", &["get", "foo", "--rev=1000", "-w", "json"]),
    case("get-rev-next", &["get", "foo", "--rev=28"]),
    // ---- txn (revision 27 before this section)
    case("put-txn-seed", &["put", "t/x", "1"]), // rev 28
    txn(
        "txn-val-eq-success",
        &["txn"],
        "val(\"t/x\") = \"1\"\n\nput t/x 2\nget t/x\n\nput t/x fail\n\n",
    ), // rev 29
    txn(
        "txn-val-eq-failure-json",
        &["txn", "-w", "json"],
        "val(\"t/x\") = \"1\"\n\nput t/x wrong\n\nget t/x\nput t/y y1\n\n",
    ), // rev 30
    txn(
        "txn-val-ne",
        &["txn"],
        "val(\"t/x\") != \"2\"\n\nput t/x wrong\n\nput t/x 3\nget t/x\n\n",
    ), // rev 31
    txn(
        "txn-val-gt-string",
        &["txn", "-w", "json"],
        "val(\"t/x\") > \"22\"\n\nput t/z gt\n\nput t/z not-gt\n\n",
    ), // rev 32
    txn(
        "txn-val-lt-string",
        &["txn"],
        "val(\"t/x\") < \"22\"\n\nput t/z lt\n\nput t/z not-lt\n\n",
    ), // rev 33
    txn(
        "txn-version-gt",
        &["txn"],
        "ver(\"t/x\") > \"2\"\n\nget t/x\n\nget t/y\n\n",
    ),
    txn(
        "txn-version-eq-json",
        &["txn", "-w", "json"],
        "ver(\"t/x\") = \"3\"\n\nget t/x\n\nget t/y\n\n",
    ),
    txn(
        "txn-version-missing-key-is-zero",
        &["txn"],
        "ver(\"t/none\") = \"0\"\n\nput t/created yes\n\nput t/created no\n\n",
    ), // rev 34
    txn(
        "txn-create-missing-key-is-zero-json",
        &["txn", "-w", "json"],
        "create(\"t/none2\") = \"0\"\n\nput t/none2 made --prev-kv\n\n\n",
    ), // rev 35
    txn(
        "txn-create-lt",
        &["txn"],
        "create(\"t/x\") < \"29\"\n\nget t/x --keys-only\n\nget t/y --keys-only\n\n",
    ),
    txn(
        "txn-create-ne",
        &["txn"],
        "create(\"t/x\") != \"28\"\n\nget t/x\n\nget t/z\n\n",
    ),
    txn(
        "txn-mod-eq",
        &["txn", "-w", "json"],
        "mod(\"t/x\") = \"31\"\n\nput t/x 4 --prev-kv\n\n\n",
    ), // rev 36
    txn(
        "txn-mod-gt-failure",
        &["txn"],
        "mod(\"t/x\") > \"1000\"\n\n\nget t/ --prefix\n\n",
    ),
    txn(
        "txn-multi-compare-one-fails",
        &["txn"],
        "val(\"t/x\") = \"4\"\nver(\"t/x\") = \"1\"\n\nput t/x bad\n\nget t/x --print-value-only\n\n",
    ),
    txn(
        "txn-multi-compare-all-hold-json",
        &["txn", "-w", "json"],
        "val(\"t/x\") = \"4\"\nver(\"t/x\") = \"4\"\nmod(\"t/x\") < \"1000\"\n\nput t/a 1\nput t/b 2\ndel t/y --prev-kv\n\n\n",
    ), // rev 37
    txn(
        "txn-get-prefix-options-json",
        &["txn", "-w", "json"],
        "\nget t/ --prefix --keys-only\nget t/ --prefix --limit=2\nget t/ --prefix --sort-by=VALUE --order=DESCEND\nget t/x --rev=29\n\n\n",
    ),
    txn(
        "txn-del-prefix-json",
        &["txn", "-w", "json"],
        "val(\"t/a\") = \"1\"\n\ndel t/ --prefix --prev-kv\n\n\n",
    ), // rev 38
    txn("txn-no-compare", &["txn"], "\nput t/after del\nget t/ --prefix\n\n\n"), // rev 39
    txn("txn-empty", &["txn", "-w", "json"], "\n\n\n"),
    txn(
        "txn-fields",
        &["txn", "-w", "fields"],
        "val(\"t/after\") = \"nope\"\n\n\nget t/after\nget foo\n\n",
    ),
    txn("txn-unknown-lease", &["txn"], "\nput t/l v --lease=1234\n\n\n"),
    txn("txn-empty-key", &["txn", "-w", "json"], "\nput \"\" v\n\n\n"),
    txn("txn-duplicate-put", &["txn"], "\nput t/d 1\nput t/d 2\n\n\n"),
    txn("txn-put-and-del-same-key", &["txn"], "\nput t/d 1\ndel t/d\n\n\n"),
    txn("txn-future-rev-get", &["txn"], "\nget foo --rev=1000\n\n\n"),
    case("get-after-txns-json", &["get", "t/", "--prefix", "-w", "json"]),
    // ---- del (revision 39 before this section)
    case("put-seed-p-1", &["put", "p/1", "a"]), // rev 40
    case("put-seed-p-2", &["put", "p/2", "b"]),
    case("put-seed-p-3", &["put", "p/3", "c"]),
    case("put-seed-pp-1", &["put", "pp/1", "d"]),
    case("put-seed-q-1", &["put", "q/1", "e"]),
    case("put-seed-r-a", &["put", "r/a", "f"]),
    case("put-seed-r-b", &["put", "r/b", "g"]),
    case("put-seed-r-c", &["put", "r/c", "h"]),
    case("put-seed-z-1", &["put", "z/1", "i"]),
    case("put-seed-z-2", &["put", "z/2", "j"]),
    case("put-seed-z-3", &["put", "z/3", "k"]), // rev 50
    case("del-single", &["del", "foo"]), // rev 51
    case("del-single-json", &["del", "bar", "-w", "json"]), // rev 52
    case("del-missing", &["del", "nothere"]),
    case("del-missing-json", &["del", "nothere", "-w", "json"]),
    case("del-already-deleted", &["del", "foo"]),
    case("del-empty-key", &["del", ""]),
    case("del-empty-key-json", &["del", "", "-w", "json"]),
    case("del-prev-kv", &["del", "fresh", "--prev-kv"]), // rev 53
    case("del-prev-kv-json", &["del", "fresh2", "--prev-kv", "-w", "json"]), // rev 54
    case("del-prefix", &["del", "p/", "--prefix"]), // rev 55
    case("del-prefix-prev-kv-json", &["del", "pp/", "--prefix", "--prev-kv", "-w", "json"]), // rev 56
    case("del-prefix-no-match-json", &["del", "nope/", "--prefix", "-w", "json"]),
    case("del-range", &["del", "r/a", "r/c"]), // rev 57
    case("del-range-prev-kv-json", &["del", "r/", "r/z", "--prev-kv", "-w", "json"]), // rev 58
    case("del-from-key", &["del", "z/2", "--from-key"]), // rev 59 (also deletes the utf-8 key)
    case("del-from-key-prev-kv", &["del", "z/", "--from-key", "--prev-kv"]), // rev 60
    case("get-after-dels-keys-only-json", &["get", "", "--from-key", "--keys-only", "-w", "json"]),
    case("get-deleted-key-history", &["get", "foo", "--rev=50"]),
    case("get-deleted-key-at-delete-rev", &["get", "foo", "--rev=51", "-w", "json"]),
    case("put-recreate-deleted-key", &["put", "foo", "reborn", "--prev-kv"]), // rev 61
    case("get-recreated-key-json", &["get", "foo", "-w", "json"]),
    // ---- compaction (revision 61 before this section)
    case("get-rev-before-compaction", &["get", "foo", "--rev=3"]),
    case("endpoint-hashkv-before-compaction", &["endpoint", "hashkv"]),
    case("compact", &["compact", "20"]),
    // HashKV covers every revision key and value, so it matches only while the stored history
    // is etcd's byte for byte: up to here. Later values carry lease ids, which each server
    // chooses itself.
    case("endpoint-hashkv-after-compaction", &["endpoint", "hashkv"]),
    case("endpoint-hashkv-after-compaction-json", &["endpoint", "hashkv", "-w", "json"]),
    // Maintenance on the compacted store: nothing here changes the revision.
    case("defrag", &["defrag"]),
    case("defrag-cluster", &["defrag", "--cluster"]),
    snapshot("snapshot-save", &["snapshot", "save", "{dir}/snap.db"]),
    snapshot("snapshot-status", &["snapshot", "status", "{dir}/snap.db"]),
    snapshot("snapshot-status-json", &["snapshot", "status", "{dir}/snap.db", "-w", "json"]),
    snapshot("snapshot-restore", &[
        "snapshot", "restore", "{dir}/snap.db", "--data-dir", "{dir}/restored", "--name", "restored",
        "--initial-cluster", "restored=http://127.0.0.1:1", "--initial-advertise-peer-urls", "http://127.0.0.1:1",
    ]),
    snapshot("snapshot-restore-existing-dir", &[
        "snapshot", "restore", "{dir}/snap.db", "--data-dir", "{dir}/restored", "--name", "restored",
        "--initial-cluster", "restored=http://127.0.0.1:1", "--initial-advertise-peer-urls", "http://127.0.0.1:1",
    ]),
    snapshot("snapshot-status-missing-file", &["snapshot", "status", "{dir}/missing.db"]),
    case("compact-again", &["compact", "20"]),
    case("compact-lower", &["compact", "10"]),
    case("compact-lower-json", &["compact", "10", "-w", "json"]),
    case("compact-future", &["compact", "1000"]),
    case("get-rev-compacted", &["get", "foo", "--rev=10"]),
    case("get-rev-compacted-json", &["get", "s/", "--prefix", "--rev=19", "-w", "json"]),
    case("get-rev-at-compaction-json", &["get", "s/", "--prefix", "--rev=20", "-w", "json"]),
    case("get-rev-after-compaction", &["get", "s/", "--prefix", "--rev=21"]),
    case("get-foo-rev-at-compaction", &["get", "foo", "--rev=20"]),
    txn("txn-get-compacted-rev", &["txn"], "\nget s/a --rev=5\n\n\n"),
    case("compact-physical", &["compact", "40", "--physical"]),
    case("get-rev-physically-compacted", &["get", "s/", "--prefix", "--rev=39"]),
    case("get-rev-at-physical-compaction-json", &["get", "s/", "--prefix", "--rev=40", "-w", "json"]),
    case("get-all-after-compaction-json", &["get", "", "--prefix", "-w", "json"]),
    case("put-after-compaction-json", &["put", "after", "compaction", "-w", "json"]), // rev 62
    case("compact-current-rev", &["compact", "62"]),
    case("get-after-compacting-everything", &["get", "", "--prefix", "--keys-only"]),
    case("compact-physical-again", &["compact", "62", "--physical"]),
    // ---- Leases that do not exist.
    case("lease-revoke-unknown", &["lease", "revoke", "1234"]),
    case("lease-timetolive-unknown", &["lease", "timetolive", "1234"]),
    case("lease-timetolive-unknown-json", &["lease", "timetolive", "1234", "-w", "json"]),
    case("lease-keep-alive-once-unknown", &["lease", "keep-alive", "--once", "1234"]),
    case("lease-list-empty", &["lease", "list"]),
    case("lease-grant-too-large", &["lease", "grant", "9000000001"]),
    // ---- Leases (revision 62 before this section). Ids are chosen by the server: a `grant`
    // case captures its id into a variable that later cases write as `{name}`, and outputs
    // show the N-th granted id as `<lease-id-N>`. Nothing waits for an expiry (timing is the
    // integration tests' business): short leases are revoked at once.
    grant("lease-grant", &["lease", "grant", "60"], "lease1"),
    grant("lease-grant-json", &["lease", "grant", "60", "-w", "json"], "lease2"),
    // Raised to etcd's minimum, 1.5 election timeouts rounded up to whole seconds (2 s).
    grant("lease-grant-below-minimum", &["lease", "grant", "1"], "short1"),
    case("lease-revoke-no-keys", &["lease", "revoke", "{short1}"]),
    grant("lease-grant-zero-json", &["lease", "grant", "0", "-w", "json"], "short2"),
    case("lease-revoke-no-keys-json", &["lease", "revoke", "{short2}", "-w", "json"]),
    grant("lease-grant-fields", &["lease", "grant", "3", "-w", "fields"], "short3"),
    case("lease-revoke-no-keys-fields", &["lease", "revoke", "{short3}", "-w", "fields"]),
    case("lease-list", &["lease", "list"]),
    case("lease-list-json", &["lease", "list", "-w", "json"]),
    case("lease-list-fields", &["lease", "list", "-w", "fields"]),
    case("put-with-lease", &["put", "l/a", "1", "--lease={lease1}"]), // rev 63
    case("put-with-lease-json", &["put", "l/b", "2", "--lease={lease1}", "-w", "json"]), // rev 64
    case("put-with-lease-prev-kv", &["put", "l/c", "3", "--lease={lease2}", "--prev-kv"]), // rev 65
    case("get-leased-key-json", &["get", "l/a", "-w", "json"]),
    case("get-leased-keys-fields", &["get", "l/", "--prefix", "-w", "fields"]),
    ttl("lease-timetolive", &["lease", "timetolive", "{lease1}"]),
    ttl("lease-timetolive-json", &["lease", "timetolive", "{lease1}", "-w", "json"]),
    ttl("lease-timetolive-keys", &["lease", "timetolive", "{lease1}", "--keys"]),
    ttl("lease-timetolive-keys-json", &["lease", "timetolive", "{lease1}", "--keys", "-w", "json"]),
    ttl("lease-timetolive-keys-fields", &["lease", "timetolive", "{lease2}", "--keys", "-w", "fields"]),
    case("put-ignore-lease-keeps-lease", &["put", "l/a", "1b", "--ignore-lease"]), // rev 66
    case("get-after-ignore-lease-json", &["get", "l/a", "-w", "json"]),
    txn("txn-put-ignore-lease-json", &["txn", "-w", "json"], "\nput l/a 1c --ignore-lease\nget l/a\n\n\n"), // rev 67
    case("put-lease-and-ignore-lease", &["put", "l/a", "1d", "--lease={lease1}", "--ignore-lease"]),
    case("put-moves-key-to-other-lease-json", &["put", "l/b", "2b", "--lease={lease2}", "--prev-kv", "-w", "json"]), // rev 68
    case("put-without-lease-detaches", &["put", "l/c", "3b", "--prev-kv"]), // rev 69
    case("put-with-lease-to-delete", &["put", "l/e", "5", "--lease={lease1}"]), // rev 70
    case("del-leased-key-detaches", &["del", "l/e"]), // rev 71
    ttl("lease-timetolive-keys-after-moves", &["lease", "timetolive", "{lease1}", "--keys"]),
    ttl("lease-timetolive-keys-after-moves-json", &["lease", "timetolive", "{lease2}", "--keys", "-w", "json"]),
    case("lease-keep-alive-once", &["lease", "keep-alive", "--once", "{lease1}"]),
    case("lease-keep-alive-once-json", &["lease", "keep-alive", "--once", "{lease1}", "-w", "json"]),
    case("lease-keep-alive-once-fields", &["lease", "keep-alive", "--once", "{lease1}", "-w", "fields"]),
    // Listed by expiry: lease1, just renewed, now expires after lease2.
    case("lease-list-after-keep-alive", &["lease", "list"]),
    // A lock: a key only one client can create, attached to its owner's lease.
    txn(
        "txn-lock-take",
        &["txn"],
        "create(\"/lock/x\") = \"0\"\n\nput /lock/x alice --lease={lease2}\n\nget /lock/x\n\n",
    ), // rev 72
    txn(
        "txn-lock-held-json",
        &["txn", "-w", "json"],
        "create(\"/lock/x\") = \"0\"\n\nput /lock/x bob --lease={lease1}\n\nget /lock/x\n\n",
    ),
    ttl("lease-timetolive-lock-owner", &["lease", "timetolive", "{lease2}", "--keys"]),
    // Deletes l/b and /lock/x, both in revision 73.
    case("lease-revoke", &["lease", "revoke", "{lease2}"]),
    case("get-after-revoke-json", &["get", "", "--prefix", "-w", "json"]),
    case("get-before-revoke-keys-only", &["get", "", "--prefix", "--rev=72", "--keys-only"]),
    case("get-revoked-key-history-json", &["get", "/lock/x", "--rev=72", "-w", "json"]),
    case("lease-revoke-again", &["lease", "revoke", "{lease2}"]),
    case("lease-revoke-again-json", &["lease", "revoke", "{lease2}", "-w", "json"]),
    ttl("lease-timetolive-revoked", &["lease", "timetolive", "{lease2}"]),
    ttl("lease-timetolive-revoked-keys-json", &["lease", "timetolive", "{lease2}", "--keys", "-w", "json"]),
    case("lease-keep-alive-once-revoked", &["lease", "keep-alive", "--once", "{lease2}"]),
    case("put-revoked-lease", &["put", "l/d", "4", "--lease={lease2}"]),
    txn("txn-put-revoked-lease", &["txn"], "\nput l/d 4 --lease={lease2}\n\n\n"),
    txn(
        "txn-lock-retake-json",
        &["txn", "-w", "json"],
        "create(\"/lock/x\") = \"0\"\n\nput /lock/x bob --lease={lease1}\n\nget /lock/x\n\n",
    ), // rev 74
    case("lease-list-after-revoke-json", &["lease", "list", "-w", "json"]),
    // Deletes l/a and /lock/x in revision 75.
    case("lease-revoke-json", &["lease", "revoke", "{lease1}", "-w", "json"]),
    case("lease-list-all-revoked", &["lease", "list"]),
    case("get-after-all-revoked-json", &["get", "", "--prefix", "-w", "json"]),
    // ---- Final state.
    // ---- watch: etcdctl watch runs in the background while the command writes. The output is
    // the command's, then the watch's; each case's watch starts from now unless --rev is given.
    watching("watch-key-put", &["watch", "w/a"], &["put", "w/a", "1"]),
    watching("watch-key-ignores-others", &["watch", "w/a"], &["put", "w/b", "1"]),
    watching("watch-prefix-delete", &["watch", "--prefix", "w/"], &["del", "w/a"]),
    watching("watch-range", &["watch", "w/a", "w/c"], &["put", "w/b", "2"]),
    watching("watch-prev-kv", &["watch", "w/b", "--prev-kv"], &["put", "w/b", "3"]),
    watching("watch-prev-kv-new-key", &["watch", "w/n", "--prev-kv"], &["put", "w/n", "1"]),
    watching("watch-prev-kv-delete", &["watch", "--prefix", "w/", "--prev-kv"], &["del", "w/n"]),
    watching("watch-json", &["watch", "w/b", "-w", "json"], &["put", "w/b", "4"]),
    watching("watch-fields", &["watch", "w/b", "-w", "fields"], &["put", "w/b", "5"]),
    watching("watch-prefix-delete-range", &["watch", "--prefix", "w/"], &["del", "w/", "--prefix"]),
    Case {
        stdin: Some("\nput w/c 1\nput w/d 2\nput other 3\n\n\n"),
        ..watching("watch-txn-one-revision-json", &["watch", "--prefix", "w/", "-w", "json"], &["txn"])
    },
    Case {
        kind: Kind::InterleavedWatches,
        ..watching_interactive("watch-interactive", "watch w/e\nwatch --prefix w/\n", &["put", "w/e", "5"])
    },
    watching_interactive("watch-interactive-bad-command", "put w/x 1\nwatch\n", &["put", "w/x", "1"]),
    watching("watch-exec", &["watch", "w/f", "--", "sh", "-c", "echo exec $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"], &["put", "w/f", "6"]),
    // History replays from --rev, then the watch goes on live.
    watching("watch-rev-history", &["watch", "--prefix", "", "--rev=21"], &[]),
    watching("watch-rev-history-json", &["watch", "--prefix", "l/", "--rev=63", "--prev-kv", "-w", "json"], &[]),
    watching("watch-rev-then-live", &["watch", "--prefix", "w/", "--rev=21"], &["put", "w/g", "7"]),
    watching("watch-rev-compacted", &["watch", "foo", "--rev=10"], &[]),
    watching("watch-rev-compacted-json", &["watch", "foo", "--rev=10", "-w", "json"], &[]),
    watching("watch-rev-future", &["watch", "w/h", "--rev=100000"], &["put", "w/h", "8"]),
    watching("watch-no-key", &["watch"], &[]),
    // ---- lock and elect: etcdctl's own Mutex and Election recipes (clientv3/concurrency) over
    // KV, Watch and Lease. A lock or campaign that holds runs in the background and is
    // interrupted (Ctrl-C) at the end of its case, so it unlocks or resigns and leaves no key
    // behind. Keys are `<name>/<session lease hex>` (normalised, see `Kind::SessionKeys`).
    case("lock-no-name", &["lock"]),
    case("elect-no-name", &["elect"]),
    case("elect-no-proposal", &["elect", "e1"]),
    case("lock-exec", &["lock", "l1", "--", "echo", "hi"]),
    session("lock-exec-env", "l1", &["lock", "l1", "--", "sh", "-c", "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV"]),
    case("lock-exec-fails", &["lock", "l1", "--", "false"]),
    case("lock-exec-missing-command", &["lock", "l1", "--", "keel-compat-no-such-command"]),
    holding("lock-held-get", "l2", &["lock", "l2"], &["get", "--prefix", "l2"]),
    holding("lock-held-get-fields", "l2", &["lock", "l2"], &["get", "--prefix", "l2", "-w", "fields"]),
    session("lock-released-fields", "l2", &["get", "--prefix", "l2", "-w", "fields"]),
    // The holder runs a command for 1.5 s; the second contender queues behind it, gets the lock
    // when the command ends, and sees the revision of that release as ETCD_LOCK_REV.
    holding(
        "lock-contended",
        "l3",
        &["lock", "l3", "--", "sleep", "1.5"],
        &["lock", "l3", "--", "sh", "-c", "echo second $ETCD_LOCK_KEY $ETCD_LOCK_REV"],
    ),
    // A waiting contender interrupted leaves the queue (its key is deleted); a holder's release
    // hands the lock to the waiting one.
    both_held("lock-waiter-interrupted", "l4", &["lock", "l4"], &["lock", "l4"], StopOrder::ForegroundFirst),
    both_held("lock-handed-over", "l4", &["lock", "l4"], &["lock", "l4"], StopOrder::BackgroundFirst),
    session("lock-all-released-fields", "l4", &["get", "--prefix", "l4", "-w", "fields"]),
    holding("elect-leader-get-fields", "e1", &["elect", "e1", "p1"], &["get", "--prefix", "e1", "-w", "fields"]),
    session("elect-resigned-fields", "e1", &["get", "--prefix", "e1", "-w", "fields"]),
    // An observer (elect -l) sees a campaigner's proposal, or the leader already in place.
    both_held("elect-listen", "e1", &["elect", "-l", "e1"], &["elect", "e1", "p1"], StopOrder::ForegroundFirst),
    both_held("elect-listen-to-leader", "e1", &["elect", "e1", "p1"], &["elect", "-l", "e1"], StopOrder::ForegroundFirst),
    // A second campaigner waits; interrupted it leaves the queue, else it wins when the leader
    // resigns.
    both_held("elect-waiter-interrupted", "e2", &["elect", "e2", "p1"], &["elect", "e2", "p2"], StopOrder::ForegroundFirst),
    both_held("elect-leader-change", "e2", &["elect", "e2", "p1"], &["elect", "e2", "p2"], StopOrder::BackgroundFirst),
    session("elect-all-resigned-fields", "e2", &["get", "--prefix", "e2", "-w", "fields"]),
    // Any key under the election's prefix is a campaigner to etcd's recipe, even one put by hand.
    holding("elect-listen-to-a-put", "e3", &["elect", "-l", "e3"], &["put", "e3/by-hand", "v"]),
    case("elect-by-hand-removed", &["del", "e3/by-hand"]),
    // ---- membership: the single member, refusals, then a learner added (never started, so
    // it cannot be promoted), moved and removed.
    members("member-list", &["member", "list"]),
    members("member-list-json", &["member", "list", "-w", "json"]),
    members("member-list-table", &["member", "list", "-w", "table"]),
    members("member-list-fields", &["member", "list", "-w", "fields"]),
    members("member-add-existing-peer-url", &["member", "add", "again", "--peer-urls=http://{peer}"]),
    members("member-remove-unknown", &["member", "remove", "1234"]),
    members("member-promote-unknown", &["member", "promote", "1234"]),
    members("member-update-unknown", &["member", "update", "1234", "--peer-urls=http://127.0.0.1:9"]),
    Case { kind: Kind::MembersUnordered, ..grant("member-add-learner", &["member", "add", "learner1", "--learner", "--peer-urls=http://127.0.0.1:9"], "learner") },
    unordered("member-list-with-learner", &["member", "list"]),
    unordered("member-list-with-learner-table", &["member", "list", "-w", "table"]),
    members("member-promote-learner-behind", &["member", "promote", "{learner}"]),
    unordered("member-update-learner", &["member", "update", "{learner}", "--peer-urls=http://127.0.0.1:10"]),
    unordered("member-list-learner-moved", &["member", "list"]),
    unordered("member-remove-learner", &["member", "remove", "{learner}"]),
    members("member-list-learner-gone", &["member", "list"]),
    status("endpoint-status-cluster", &["endpoint", "status", "--cluster"]),
    case("endpoint-health-cluster", &["endpoint", "health", "--cluster"]),
    // ---- auth. Off at first: users and roles are managed without credentials, every subcommand
    // and its refusals. Then on (etcdctl's `auth enable` creates role root and grants it to
    // user root): root manages, `alice` (roles reader and writer) is allowed and denied, and
    // every permission form is revoked. The section ends with auth off and every user, role,
    // lease and key it made removed, so the final state below is the store as before.
    // etcdctl 3.4 has no `auth status`.
    case("auth-enable-no-root", &["auth", "enable"]),
    case("auth-disable-not-enabled", &["auth", "disable"]),
    case("user-list-none", &["user", "list"]),
    case("role-list-none-json", &["role", "list", "-w", "json"]),
    case("user-add-root", &["user", "add", "root:rootpw"]),
    case("user-add-existing", &["user", "add", "root:other"]),
    case("user-add-empty-name", &["user", "add", ":pw"]),
    input("user-add-password-stdin", &["user", "add", "alice", "--interactive=false"], "alicepw\n"),
    case("user-add-password-flag-json", &["user", "add", "bob", "--new-user-password=bobpw", "-w", "json"]),
    case("user-add-no-password", &["user", "add", "carol", "--no-password"]),
    case("user-list", &["user", "list"]),
    case("user-list-json", &["user", "list", "-w", "json"]),
    case("user-get", &["user", "get", "alice"]),
    case("user-get-missing", &["user", "get", "nobody"]),
    case("role-add", &["role", "add", "reader"]),
    case("role-add-json", &["role", "add", "writer", "-w", "json"]),
    case("role-add-existing", &["role", "add", "reader"]),
    case("role-add-empty-name", &["role", "add", ""]),
    case("role-grant-key", &["role", "grant-permission", "reader", "read", "acl/key"]),
    case("role-grant-range", &["role", "grant-permission", "reader", "read", "acl/r1", "acl/r5"]),
    case("role-grant-write-only", &["role", "grant-permission", "reader", "write", "acl/drop"]),
    case("role-grant-prefix", &["role", "grant-permission", "writer", "readwrite", "acl/w/", "--prefix"]),
    case("role-grant-from-key-json", &["role", "grant-permission", "writer", "readwrite", "zz/", "--from-key", "-w", "json"]),
    case("role-grant-same-key", &["role", "grant-permission", "reader", "read", "acl/up"]),
    case("role-grant-same-key-widens", &["role", "grant-permission", "reader", "readwrite", "acl/up"]),
    case("role-grant-bad-type", &["role", "grant-permission", "reader", "admin", "acl/key"]),
    case("role-grant-prefix-and-from-key", &["role", "grant-permission", "reader", "read", "acl/", "--prefix", "--from-key"]),
    case("role-grant-prefix-with-end", &["role", "grant-permission", "reader", "read", "acl/a", "acl/b", "--prefix"]),
    case("role-grant-missing-role", &["role", "grant-permission", "nobody", "read", "acl/key"]),
    case("role-get", &["role", "get", "reader"]),
    case("role-get-json", &["role", "get", "writer", "-w", "json"]),
    case("role-get-missing", &["role", "get", "nobody"]),
    case("role-list", &["role", "list"]),
    case("role-revoke-not-granted", &["role", "revoke-permission", "reader", "acl/nothere"]),
    case("role-revoke-range-not-granted", &["role", "revoke-permission", "reader", "acl/r1", "acl/r6"]),
    case("role-revoke-missing-role", &["role", "revoke-permission", "nobody", "acl/key"]),
    case("user-grant-role", &["user", "grant-role", "alice", "reader"]),
    case("user-grant-role-json", &["user", "grant-role", "alice", "writer", "-w", "json"]),
    case("user-grant-role-again", &["user", "grant-role", "alice", "reader"]),
    case("user-grant-role-missing-role", &["user", "grant-role", "alice", "nobody"]),
    case("user-grant-role-missing-user", &["user", "grant-role", "nobody", "reader"]),
    case("user-grant-role-no-password", &["user", "grant-role", "carol", "reader"]),
    case("user-get-detail", &["user", "get", "alice", "--detail"]),
    case("user-get-json", &["user", "get", "alice", "-w", "json"]),
    case("user-revoke-role-not-granted", &["user", "revoke-role", "bob", "reader"]),
    case("user-revoke-role-missing-user", &["user", "revoke-role", "nobody", "reader"]),
    case("user-revoke-role", &["user", "revoke-role", "carol", "reader"]),
    input("user-passwd", &["user", "passwd", "bob", "--interactive=false"], "bobpw2\n"),
    input("user-passwd-missing-user", &["user", "passwd", "nobody", "--interactive=false"], "pw\n"),
    // Permissions etcd 3.5.8+ refuses, on a role of their own.
    case("role-add-odd", &["role", "add", "odd"]),
    // etcdctl 3.4 sends an empty key as "\0", so no empty key reaches the server.
    case("role-grant-empty-key", &["role", "grant-permission", "odd", "read", ""]),
    case("role-grant-end-before-key", &["role", "grant-permission", "odd", "read", "b", "a"]),
    case("role-get-odd", &["role", "get", "odd"]),
    case("role-delete-odd", &["role", "delete", "odd"]),
    // ---- auth on.
    case("auth-enable", &["auth", "enable"]),
    case("auth-enable-again", &[ROOT, "auth", "enable"]),
    case("auth-no-credentials", &["get", "acl/key"]),
    case("auth-no-credentials-put", &["put", "acl/key", "v"]),
    case("auth-wrong-password", &["--user=alice:wrong", "get", "acl/key"]),
    case("auth-unknown-user", &["--user=nobody:pw", "get", "acl/key"]),
    case("auth-user-without-password", &["--user=carol:pw", "get", "acl/key"]),
    case("auth-root-user-get", &[ROOT, "user", "get", "root", "--detail"]),
    case("auth-root-role-get-root", &[ROOT, "role", "get", "root"]),
    case("auth-root-role-list", &[ROOT, "role", "list"]),
    case("auth-root-put", &[ROOT, "put", "acl/key", "v1"]),
    case("auth-root-put-range", &[ROOT, "put", "acl/r2", "v2"]),
    case("auth-root-put-outside", &[ROOT, "put", "acl/secret", "s"]),
    case("auth-root-get-json", &[ROOT, "get", "acl/", "--prefix", "-w", "json"]),
    // alice: read acl/key, read [acl/r1, acl/r5), write acl/drop, readwrite acl/up (reader);
    // readwrite prefix acl/w/ and from zz/ on (writer).
    case("auth-user-get", &[ALICE, "get", "acl/key"]),
    case("auth-user-get-json", &[ALICE, "get", "acl/key", "-w", "json"]),
    case("auth-user-put-read-only", &[ALICE, "put", "acl/key", "v"]),
    case("auth-user-get-denied", &[ALICE, "get", "acl/secret"]),
    case("auth-user-get-range", &[ALICE, "get", "acl/r1", "acl/r5"]),
    case("auth-user-get-range-inside", &[ALICE, "get", "acl/r2", "acl/r3"]),
    case("auth-user-get-range-beyond", &[ALICE, "get", "acl/r1", "acl/r6"]),
    case("auth-user-put-write-only", &[ALICE, "put", "acl/drop", "d"]),
    case("auth-user-get-write-only", &[ALICE, "get", "acl/drop"]),
    case("auth-user-put-prev-kv-write-only", &[ALICE, "put", "acl/drop", "e", "--prev-kv"]),
    case("auth-user-put-widened", &[ALICE, "put", "acl/up", "u"]),
    case("auth-user-put-prefix", &[ALICE, "put", "acl/w/a", "1"]),
    case("auth-user-put-prefix-prev-kv", &[ALICE, "put", "acl/w/a", "2", "--prev-kv"]),
    case("auth-user-get-prefix", &[ALICE, "get", "acl/w/", "--prefix"]),
    case("auth-user-get-prefix-outside", &[ALICE, "get", "acl/", "--prefix"]),
    case("auth-user-put-from-key", &[ALICE, "put", "zz/a", "1"]),
    case("auth-user-get-from-key", &[ALICE, "get", "zz/", "--from-key"]),
    case("auth-user-get-from-key-outside", &[ALICE, "get", "zz", "--from-key"]),
    case("auth-user-get-all", &[ALICE, "get", "", "--prefix"]),
    case("auth-user-del", &[ALICE, "del", "acl/w/a"]),
    case("auth-user-del-denied", &[ALICE, "del", "acl/key"]),
    case("auth-user-del-prefix-outside", &[ALICE, "del", "acl/", "--prefix"]),
    txn("auth-user-txn", &[ALICE, "txn"], "val(\"acl/key\") = \"v1\"\n\nput acl/w/t yes\n\nput acl/w/t no\n\n"),
    // etcd checks every op of both branches, whichever is taken.
    txn("auth-user-txn-denied-branch", &[ALICE, "txn"], "val(\"acl/key\") = \"v1\"\n\nput acl/w/t yes2\n\nput acl/secret no\n\n"),
    txn("auth-user-txn-denied-compare-json", &[ALICE, "txn", "-w", "json"], "val(\"acl/secret\") = \"s\"\n\nget acl/w/t\n\n\n"),
    txn("auth-user-txn-denied-get", &[ALICE, "txn"], "\nget acl/ --prefix\n\n\n"),
    watching("auth-user-watch", &[ALICE, "watch", "acl/w/", "--prefix"], &[ROOT, "put", "acl/w/b", "1"]),
    watching("auth-user-watch-denied", &[ALICE, "watch", "acl/secret"], &[]),
    watching("auth-user-watch-prefix-denied", &[ALICE, "watch", "acl/", "--prefix"], &[]),
    watching("auth-user-watch-range", &[ALICE, "watch", "acl/r1", "acl/r5"], &[ROOT, "put", "acl/r3", "v3"]),
    watching("auth-user-watch-range-beyond", &[ALICE, "watch", "acl/r1", "acl/r6"], &[]),
    watching("auth-no-credentials-watch", &["watch", "acl/key"], &[]),
    grant("auth-lease-grant", &["lease", "grant", "60", ROOT], "authlease"),
    case("auth-user-put-lease", &[ALICE, "put", "acl/w/l", "1", "--lease={authlease}"]),
    case("auth-root-put-lease", &[ROOT, "put", "acl/key", "v2", "--lease={authlease}"]),
    case("auth-root-put-lease-unreadable", &[ROOT, "put", "acl/secret", "s2", "--lease={authlease}"]),
    // A put with a lease needs write permission on every key already attached to it.
    case("auth-user-put-lease-denied", &[ALICE, "put", "acl/w/m", "1", "--lease={authlease}"]),
    // Revoking deletes the attached keys: alice may write acl/w/l, not acl/key nor acl/secret.
    case("auth-user-lease-revoke-denied", &[ALICE, "lease", "revoke", "{authlease}"]),
    ttl("auth-user-lease-timetolive", &[ALICE, "lease", "timetolive", "{authlease}"]),
    ttl("auth-user-lease-timetolive-keys", &[ALICE, "lease", "timetolive", "{authlease}", "--keys"]),
    ttl("auth-no-credentials-lease-timetolive", &["lease", "timetolive", "{authlease}"]),
    case("auth-no-credentials-lease-keep-alive", &["lease", "keep-alive", "--once", "{authlease}"]),
    case("auth-root-lease-revoke", &[ROOT, "lease", "revoke", "{authlease}"]),
    case("auth-user-compact", &[ALICE, "compact", "10"]),
    case("auth-user-hashkv", &[ALICE, "endpoint", "hashkv"]),
    members("auth-user-member-list", &[ALICE, "member", "list"]),
    members("auth-no-credentials-member-list", &["member", "list"]),
    status("auth-user-endpoint-status", &[ALICE, "endpoint", "status"]),
    status("auth-no-credentials-endpoint-status", &["endpoint", "status"]),
    case("auth-user-user-list", &[ALICE, "user", "list"]),
    case("auth-user-user-get-self", &[ALICE, "user", "get", "alice"]),
    case("auth-user-user-get-other", &[ALICE, "user", "get", "bob"]),
    case("auth-user-role-get-own", &[ALICE, "role", "get", "writer"]),
    case("auth-user-role-get-other", &[ALICE, "role", "get", "root"]),
    case("auth-user-role-add", &[ALICE, "role", "add", "mine"]),
    case("auth-user-auth-disable", &[ALICE, "auth", "disable"]),
    case("auth-old-password", &["--user=bob:bobpw", "get", "acl/key"]),
    case("auth-new-password-no-role", &[BOB, "get", "acl/key"]),
    case("auth-delete-root", &[ROOT, "user", "delete", "root"]),
    case("auth-revoke-root-role", &[ROOT, "user", "revoke-role", "root", "root"]),
    case("auth-delete-root-role", &[ROOT, "role", "delete", "root"]),
    // Revocations take effect at once.
    case("auth-user-revoke-role", &[ROOT, "user", "revoke-role", "alice", "writer"]),
    case("auth-user-put-after-revoke-role", &[ALICE, "put", "acl/w/a", "3"]),
    case("role-revoke-key", &[ROOT, "role", "revoke-permission", "reader", "acl/key"]),
    case("auth-user-get-after-revoke-permission", &[ALICE, "get", "acl/key"]),
    case("role-revoke-range", &[ROOT, "role", "revoke-permission", "reader", "acl/r1", "acl/r5"]),
    case("role-revoke-prefix", &[ROOT, "role", "revoke-permission", "writer", "acl/w/", "--prefix"]),
    case("role-revoke-from-key-json", &[ROOT, "role", "revoke-permission", "writer", "zz/", "--from-key", "-w", "json"]),
    case("role-revoke-prefix-again", &[ROOT, "role", "revoke-permission", "writer", "acl/w/", "--prefix"]),
    case("role-get-after-revokes", &[ROOT, "role", "get", "reader"]),
    case("role-get-empty-json", &[ROOT, "role", "get", "writer", "-w", "json"]),
    case("role-delete-granted", &[ROOT, "role", "delete", "reader"]),
    case("user-get-after-role-delete", &[ROOT, "user", "get", "alice", "--detail"]),
    case("role-delete-json", &[ROOT, "role", "delete", "writer", "-w", "json"]),
    case("role-delete-missing", &[ROOT, "role", "delete", "writer"]),
    case("user-delete", &[ROOT, "user", "delete", "alice"]),
    case("user-delete-json", &[ROOT, "user", "delete", "bob", "-w", "json"]),
    case("user-delete-missing", &[ROOT, "user", "delete", "alice"]),
    case("auth-deleted-user", &[ALICE, "get", "acl/key"]),
    // ---- auth off again, and everything the section made removed.
    case("auth-disable-no-credentials", &["auth", "disable"]),
    case("auth-disable", &[ROOT, "auth", "disable"]),
    case("auth-disabled-get", &["get", "acl/", "--prefix"]),
    case("auth-disabled-with-user", &["--user=carol:pw", "get", "acl/", "--prefix"]),
    case("auth-disable-again", &["auth", "disable"]),
    case("user-delete-root", &["user", "delete", "root"]),
    case("user-delete-no-password", &["user", "delete", "carol"]),
    case("role-delete-root", &["role", "delete", "root"]),
    case("user-list-cleaned", &["user", "list"]),
    case("role-list-cleaned", &["role", "list"]),
    case("auth-cleanup-acl", &["del", "acl/", "--prefix"]),
    case("auth-cleanup-zz", &["del", "zz/", "--prefix"]),
    case("get-final-json", &["get", "", "--prefix", "-w", "json"]),
    case("endpoint-health-final", &["endpoint", "health"]),
    status("endpoint-status-final", &["endpoint", "status"]),
    status("endpoint-status-final-json", &["endpoint", "status", "-w", "json"]),
    status("endpoint-status-final-table", &["endpoint", "status", "-w", "table"]),
];

/// The `ETCDCTL_API=2` script, run after [`CASES`] against the same pair (both servers have
/// `--enable-v2`). etcdctl v2 first syncs its endpoints from `GET /v2/members`, then sends one
/// HTTP request to `/v2/keys` per verb.
///
/// Cases build on each other's state, as above, but count v2 indexes (`X-Etcd-Index`, the
/// `[N]` of error lines, the `Index:` line of `-o extended`), not v3 revisions: v2 and v3 writes
/// do not move each other's counters, so nothing here shifts a `--rev` above. The v2 index is
/// not reset between the scripts: a fresh member's bootstrap makes 3 internal writes (its
/// `raftAttributes`, its `attributes`, the cluster version), and the membership section of
/// [`CASES`] 4 more (learner added +1, updated +1, removed +2), so this script starts at index
/// 7; the comments give the index each write takes. Indexes are not masked: Keel counts them as
/// etcd does. Appending is safe; inserting a write shifts every later `[N]`.
///
/// Deterministic output only: listings of directories with more than one child use `--sort`
/// (the server lists children in Go map order otherwise); TTLs are long (3000 s, so nothing
/// expires during the run) and keys with one are never printed in `-o json` (the
/// `expiration` timestamp), and in `-o extended` only by the write that set the TTL (`TTL:`
/// then is the full TTL; later reads count down). Watches run as in the v3 watch cases: the
/// watch in the background, the write in the foreground; a one-shot `watch` exits by itself
/// after its event (`exit 0`), `watch --forever` and `exec-watch` are killed (`still
/// watching`). Expiry and the 1000-event history (401) are timing- or volume-bound and are
/// covered by `crates/server/tests/v2.rs` instead.
#[rustfmt::skip]
pub static V2_CASES: &[Case] = &[
    // ---- A member whose v2 store holds only etcd's own /0 keys (index 7).
    case("v2-get-missing", &["get", "/nokey"]),
    case("v2-get-missing-json", &["-o", "json", "get", "/nokey"]),
    case("v2-ls-root-empty", &["ls"]),
    case("v2-ls-root-empty-json", &["-o", "json", "ls"]),
    // ---- set
    case("v2-set", &["set", "/foo", "bar"]), // 8
    case("v2-set-overwrite-json", &["-o", "json", "set", "/foo", "bar2"]), // 9
    case("v2-set-overwrite-extended", &["-o", "extended", "set", "/foo", "bar3"]), // 10
    case("v2-set-ttl-extended", &["-o", "extended", "set", "/ttl1", "v", "--ttl", "3000"]), // 11
    case("v2-set-ttl-flag-between", &["set", "/p6", "--ttl", "3000", "v"]), // 12
    case("v2-set-ttl-flag-equals", &["-o", "extended", "set", "/p4", "v", "--ttl=3000"]), // 13
    case("v2-set-swap-with-value", &["set", "/foo", "new", "--swap-with-value", "bar3"]), // 14
    case("v2-set-swap-with-value-wrong", &["set", "/foo", "new2", "--swap-with-value", "wrong"]),
    case("v2-set-swap-with-value-wrong-json", &["-o", "json", "set", "/foo", "new2", "--swap-with-value", "wrong"]),
    case("v2-set-swap-with-index-wrong", &["set", "/foo", "new3", "--swap-with-index", "1"]),
    case("v2-set-swap-both-index-wrong", &["set", "/foo", "new3", "--swap-with-index", "9", "--swap-with-value", "new"]),
    case("v2-set-swap-with-index-extended", &["-o", "extended", "set", "/foo", "new4", "--swap-with-index", "14"]), // 15
    case("v2-set-swap-missing-key", &["set", "/nokey", "x", "--swap-with-value", "y"]),
    case("v2-set-empty-value", &["set", "/ev", ""]), // 16
    case("v2-set-value-required", &["set", "/foo"]),
    case("v2-set-key-required", &["set"]),
    case("v2-set-dash-value", &["set", "/p1", "-5"]), // 17
    case("v2-set-dash-value-after-delimiter", &["set", "/p3", "--", "-5"]), // 18
    case("v2-set-extra-args-ignored", &["set", "/p8", "a", "b", "c"]), // 19
    case("v2-set-space-and-ampersand-json", &["-o", "json", "set", "/sp ace", "a b&c<d>"]), // 20
    case("v2-set-under-file", &["set", "/foo/child", "x"]),
    // ---- mkdir, and set on a directory
    case("v2-mkdir", &["mkdir", "/adir"]), // 21
    case("v2-set-on-dir", &["set", "/adir", "v"]),
    case("v2-mkdir-existing", &["mkdir", "/adir"]),
    case("v2-mkdir-on-file", &["mkdir", "/foo"]),
    case("v2-mkdir-json", &["-o", "json", "mkdir", "/d2"]), // 22
    case("v2-mkdir-ttl-extended", &["-o", "extended", "mkdir", "/d2t", "--ttl", "3000"]), // 23
    case("v2-set-in-dir", &["set", "/adir/x", "1"]), // 24
    // ---- get (index 24)
    case("v2-get", &["get", "/foo"]),
    case("v2-get-extended", &["-o", "extended", "get", "/foo"]),
    case("v2-get-json", &["-o", "json", "get", "/foo"]),
    case("v2-get-trailing-slash", &["get", "foo/"]),
    case("v2-get-dir", &["get", "/adir"]),
    case("v2-get-dir-json", &["-o", "json", "get", "/adir"]),
    case("v2-get-sort-quorum", &["get", "--sort", "--quorum", "/foo"]),
    case("v2-get-through-file", &["get", "/foo/child"]),
    case("v2-get-key-required", &["get"]),
    case("v2-get-unsupported-output", &["-o", "bogus", "get", "/p1"]),
    case("v2-get-empty-value-extended", &["-o", "extended", "get", "/ev"]),
    // ---- update
    case("v2-update", &["update", "/foo", "upd"]), // 25
    case("v2-update-ttl-extended", &["-o", "extended", "update", "/foo", "upd2", "--ttl", "3000"]), // 26
    case("v2-update-removes-ttl", &["update", "/foo", "upd3"]), // 27
    case("v2-get-after-update-json", &["-o", "json", "get", "/foo"]),
    case("v2-update-missing", &["update", "/nokey", "upd"]),
    case("v2-update-dir", &["update", "/adir", "upd"]),
    case("v2-update-value-required", &["update", "/foo"]),
    // ---- mk
    case("v2-mk", &["mk", "/newk", "v1"]), // 28
    case("v2-mk-existing", &["mk", "/newk", "v2"]),
    case("v2-mk-existing-json", &["-o", "json", "mk", "/newk", "v2"]),
    case("v2-mk-on-dir", &["mk", "/adir", "v"]),
    case("v2-mk-ttl-extended", &["-o", "extended", "mk", "/newk2", "v", "--ttl", "3000"]), // 29
    case("v2-mk-in-order", &["mk", "--in-order", "/q", "job1"]), // 30
    case("v2-mk-in-order-json", &["-o", "json", "mk", "--in-order", "/q", "job2"]), // 31
    // urfave/cli reordering: the boolean --in-order swallows /q, flag parsing stops there and
    // `--ttl` becomes the value.
    case("v2-mk-in-order-flag-swallowed-json", &["-o", "json", "mk", "--in-order", "/q", "job3", "--ttl", "50"]), // 32
    case("v2-mk-in-order-under-file", &["mk", "--in-order", "/foo", "x"]),
    case("v2-ls-in-order-sorted", &["ls", "--sort", "/q"]),
    // ---- setdir and updatedir
    case("v2-setdir", &["setdir", "/d3"]), // 33
    case("v2-setdir-existing-dir", &["setdir", "/d3"]),
    case("v2-setdir-on-file-json", &["-o", "json", "setdir", "/p1"]), // 34
    case("v2-updatedir-ttl-extended", &["-o", "extended", "updatedir", "/d3", "--ttl", "3000"]), // 35
    case("v2-updatedir-removes-ttl", &["updatedir", "/d3"]), // 36
    // The directory keeps its modifiedIndex (33) through TTL updates.
    case("v2-ls-updated-dir-json", &["-o", "json", "ls", "/d3"]),
    case("v2-updatedir-json", &["-o", "json", "updatedir", "/d3"]), // 37
    case("v2-updatedir-missing", &["updatedir", "/nodir"]),
    // On a file: an update with an empty value.
    case("v2-updatedir-on-file-json", &["-o", "json", "updatedir", "/p8"]), // 38
    // ---- rm and rmdir
    case("v2-rm-seed-k1", &["set", "/r/k1", "v1"]), // 39
    case("v2-rm-seed-k2", &["set", "/r/k2", "v2"]), // 40
    case("v2-rm-seed-sub", &["set", "/r/sub/a", "1"]), // 41
    case("v2-rm-seed-empty", &["mkdir", "/r/empty"]), // 42
    case("v2-rm-seed-k4", &["set", "/r/k4", "v4"]), // 43
    case("v2-rm", &["rm", "/r/k1"]), // 44
    case("v2-rm-missing", &["rm", "/r/k1"]),
    case("v2-rm-missing-json", &["-o", "json", "rm", "/r/k1"]),
    case("v2-rm-extended", &["-o", "extended", "rm", "/r/k2"]), // 45
    case("v2-rm-dir-without-flag", &["rm", "/r/sub"]),
    case("v2-rm-dir-not-empty", &["rm", "--dir", "/r/sub"]),
    case("v2-rm-dir-empty", &["rm", "--dir", "/r/empty"]), // 46
    case("v2-rm-recursive", &["rm", "--recursive", "/r/sub"]), // 47
    case("v2-rm-with-value-wrong", &["rm", "--with-value", "wrong", "/r/k4"]),
    case("v2-rm-with-index-wrong", &["rm", "--with-index", "1", "/r/k4"]),
    case("v2-rm-with-value-json", &["-o", "json", "rm", "--with-value", "v4", "/r/k4"]), // 48
    case("v2-rm-seed-k5", &["set", "/r/k5", "v5"]), // 49
    case("v2-rm-with-both-index-wrong", &["rm", "--with-index", "1", "--with-value", "v5", "/r/k5"]),
    // compareAndDelete prints an empty line in simple output.
    case("v2-rm-with-index", &["rm", "--with-index", "49", "/r/k5"]), // 50
    case("v2-rm-seed-k6", &["set", "/r/k6", "v6"]), // 51
    case("v2-rm-dir-flag-on-file", &["rm", "--dir", "/r/k6"]), // 52
    case("v2-rm-root", &["rm", "/"]),
    case("v2-rm-key-required", &["rm"]),
    case("v2-rmdir-seed", &["mkdir", "/r/e2"]), // 53
    case("v2-rmdir", &["rmdir", "/r/e2"]), // 54
    case("v2-rmdir-missing-parent", &["rmdir", "/nop/k5"]),
    case("v2-rmdir-not-empty", &["rmdir", "/adir"]),
    case("v2-rmdir-missing-json", &["-o", "json", "rmdir", "/r/nothere"]),
    case("v2-rmdir-json", &["-o", "json", "rmdir", "/d2"]), // 55
    case("v2-rm-recursive-extended", &["-o", "extended", "rm", "-r", "/r"]), // 56
    // ---- ls: /ls holds b, a/x, c, e/ and a hidden _h, which no listing shows.
    case("v2-ls-seed-b", &["set", "/ls/b", "1"]), // 57
    case("v2-ls-seed-a-x", &["set", "/ls/a/x", "2"]), // 58
    case("v2-ls-seed-c", &["set", "/ls/c", "3"]), // 59
    case("v2-ls-seed-e", &["mkdir", "/ls/e"]), // 60
    case("v2-ls-seed-hidden", &["set", "/ls/_h", "secret"]), // 61
    case("v2-ls-sort", &["ls", "--sort", "/ls"]),
    case("v2-ls-sort-recursive", &["ls", "--sort", "--recursive", "/ls"]),
    case("v2-ls-sort-recursive-slash", &["ls", "--sort", "-r", "-p", "/ls"]),
    case("v2-ls-slash-sort", &["ls", "-p", "--sort", "/ls"]),
    case("v2-ls-flags-after-key", &["ls", "/ls", "-r", "--sort"]),
    case("v2-ls-file", &["ls", "/ls/b"]),
    case("v2-ls-file-json", &["-o", "json", "ls", "/ls/b"]),
    case("v2-ls-single-child", &["ls", "/ls/a"]),
    case("v2-ls-empty-dir", &["ls", "/ls/e"]),
    case("v2-ls-extended", &["-o", "extended", "ls", "--sort", "/ls"]),
    case("v2-ls-json", &["-o", "json", "ls", "--sort", "/ls"]),
    case("v2-ls-recursive-json", &["-o", "json", "ls", "--sort", "-r", "/ls"]),
    case("v2-ls-quorum", &["ls", "--quorum", "/ls/c"]),
    case("v2-ls-missing", &["ls", "/nokey"]),
    case("v2-get-hidden", &["get", "/ls/_h"]),
    case("v2-ls-root-sorted", &["ls", "--sort", "-p"]),
    case("v2-ls-root-recursive-sorted", &["ls", "--sort", "-r", "/"]),
    // ---- watch: a one-shot watch in the background (it prints its first event and exits), the
    // write in the foreground.
    watching("v2-watch-set", &["watch", "/w1"], &["set", "/w1", "first"]), // 62
    watching("v2-watch-ignores-others", &["watch", "/w1"], &["set", "/w1x", "other"]), // 63
    watching("v2-watch-after-index", &["watch", "--after-index", "61", "/w1"], &[]),
    watching("v2-watch-after-index-json", &["-o", "json", "watch", "--after-index", "61", "/w1"], &[]),
    // Index: the X-Etcd-Index of the watch's response, the index when it was registered.
    watching("v2-watch-after-index-extended", &["-o", "extended", "watch", "--after-index", "61", "/w1"], &[]),
    watching("v2-watch-after-index-from-start", &["watch", "--after-index", "2", "/w1"], &[]),
    watching("v2-watch-recursive", &["watch", "-r", "/w2"], &["set", "/w2/a", "1"]), // 64
    // Directory events are skipped: the watch goes on.
    watching("v2-watch-recursive-skips-dir", &["watch", "-r", "/w2"], &["mkdir", "/w2/d"]), // 65
    watching("v2-watch-update", &["watch", "/w2/a"], &["update", "/w2/a", "2"]), // 66
    watching("v2-watch-delete", &["watch", "/w1"], &["rm", "/w1"]), // 67
    watching("v2-watch-delete-extended", &["-o", "extended", "watch", "/w2/a"], &["rm", "/w2/a"]), // 68
    watching("v2-watch-compare-and-delete", &["watch", "/w1x"], &["rm", "--with-value", "other", "/w1x"]), // 69
    // A watcher on a key inside a directory gets the directory's deletion, an event on a
    // directory, which etcdctl skips: the watch goes on.
    watching("v2-watch-parent-deleted", &["watch", "/w2/d/k"], &["rm", "-r", "/w2"]), // 70
    // Hidden keys below a recursive watch are not reported.
    watching("v2-watch-recursive-hidden", &["watch", "-r", "/ls"], &["set", "/ls/_h", "s2"]), // 71
    watching("v2-watch-hidden-key", &["watch", "/ls/_h"], &["set", "/ls/_h", "s3"]), // 72
    // History from 62 on, then live: the dir create (65) is skipped, and so are the hidden keys
    // only when live.
    watching("v2-watch-forever-history", &["watch", "--forever", "-r", "--after-index", "61", "/"], &[]),
    watching("v2-watch-forever-live", &["watch", "--forever", "/w3"], &["set", "/w3", "x"]), // 73
    case("v2-watch-key-required", &["watch"]),
    // exec-watch takes the key last; the command's output is the background's stdout.
    watching(
        "v2-exec-watch",
        &["exec-watch", "sh", "-c", "echo $ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_MODIFIED_INDEX \"$ETCD_WATCH_VALUE\"", "/w3"],
        &["set", "/w3", "y"],
    ), // 74
    case("v2-exec-watch-missing-command", &["exec-watch", "/w3"]),
    // ---- Final state.
    case("v2-ls-final", &["ls", "--sort", "-r", "-p", "/"]),
    case("v2-get-final-error-index", &["get", "/nokey"]),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_kebab_case() {
        let mut seen = HashSet::new();
        for case in CASES {
            assert!(seen.insert(case.id), "duplicate case id {}", case.id);
            assert!(
                case.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "case id {:?} is not kebab-case",
                case.id
            );
        }
    }

    #[test]
    fn the_script_is_substantial_and_uses_both_output_formats() {
        assert!(CASES.len() >= 80, "only {} cases", CASES.len());
        let json = CASES.iter().filter(|c| c.args.contains(&"json")).count();
        assert!(json >= 30, "only {json} json cases");
    }

    #[test]
    fn variables_are_captured_once_by_grants_before_use() {
        let mut captured: HashSet<&str> = super::super::session::PREDEFINED.iter().copied().collect();
        for case in CASES {
            let text = case.args.join(" ") + case.stdin.unwrap_or("");
            for (start, _) in text.match_indices('{') {
                let name = &text[start + 1..];
                let name = &name[..name.find('}').expect("a closing brace")];
                assert!(captured.contains(name), "{} uses {{{name}}}, not captured by an earlier case", case.id);
            }
            // A grant without a capture must fail: `run_case` checks that on the reference.
            if let Some(var) = case.capture {
                assert!(
                    case.args.starts_with(&["lease", "grant"]) || case.args.starts_with(&["member", "add"]),
                    "{} captures {var} but is neither a lease grant nor a member add",
                    case.id
                );
                assert!(captured.insert(var), "{} captures {var} again", case.id);
            }
        }
    }

    #[test]
    fn v2_ids_are_prefixed_and_unique_across_both_scripts() {
        let mut seen: HashSet<&str> = CASES.iter().map(|c| c.id).collect();
        for case in V2_CASES {
            assert!(case.id.starts_with("v2-"), "v2 case id {:?} lacks the v2- prefix", case.id);
            assert!(
                case.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "case id {:?} is not kebab-case",
                case.id
            );
            assert!(seen.insert(case.id), "duplicate case id {}", case.id);
        }
        assert!(V2_CASES.len() >= 40, "only {} v2 cases", V2_CASES.len());
    }

    #[test]
    fn v2_cases_are_plain_etcdctl_v2_invocations() {
        for case in V2_CASES {
            // Nothing to capture or rewrite: v2 output carries no lease, member or cluster id.
            assert_eq!(case.kind, Kind::Plain, "{}", case.id);
            assert!(case.capture.is_none() && case.stdin.is_none(), "{}", case.id);
            if let Some(watching) = case.watching {
                assert!(
                    watching.stdin.is_none() && !watching.interrupt && watching.held.is_none(),
                    "{}: a v2 watch is one-shot or killed",
                    case.id
                );
            }
            // v3-only global flags: etcdctl v2 would take them for arguments.
            for args in [case.args].into_iter().chain(case.watching.map(|w| w.args)) {
                assert!(
                    !args.iter().any(|a| *a == "-w" || a.starts_with("--write-out") || a.starts_with("--prefix")),
                    "{}: {args:?} is v3 syntax",
                    case.id
                );
            }
        }
    }

    #[test]
    fn v2_listings_without_sort_show_at_most_one_node() {
        // The server lists a directory's children in Go map order unless `sorted=true`; these
        // list a file, a missing key, or a directory of at most one child (checked by hand).
        const AT_MOST_ONE: &[&str] = &[
            "v2-ls-root-empty",
            "v2-ls-root-empty-json",
            "v2-ls-updated-dir-json",
            "v2-ls-file",
            "v2-ls-file-json",
            "v2-ls-single-child",
            "v2-ls-empty-dir",
            "v2-ls-quorum",
            "v2-ls-missing",
        ];
        for case in V2_CASES {
            let Some(verb) = case.args.iter().position(|a| *a == "ls") else { continue };
            if !case.args[verb..].contains(&"--sort") {
                assert!(AT_MOST_ONE.contains(&case.id), "{}: `ls` without --sort lists in random order", case.id);
            }
        }
    }

    #[test]
    fn txn_scripts_have_three_complete_blocks() {
        // Other stdin is a password (`input(..)`).
        for case in CASES.iter().filter(|c| c.stdin.is_some() && c.args.contains(&"txn")) {
            let script = case.stdin.unwrap();
            // etcdctl reads compares, success ops and failure ops, each up to an empty line,
            // and fails with EOF if the input ends first.
            let mut ended_blocks = 0;
            for line in script.split_inclusive('\n') {
                assert!(line.ends_with('\n'), "{}: unterminated line {line:?}", case.id);
                if line == "\n" {
                    ended_blocks += 1;
                }
                if ended_blocks == 3 {
                    break;
                }
            }
            assert_eq!(ended_blocks, 3, "{}: {script:?}", case.id);
        }
    }
}
