//! `--read-only` and `--allow-prefix`: what a proxy lets its clients do,
//! checked before a request leaves the proxy.
//!
//! Keys are checked as the client names them, before `--namespace` is
//! applied, so the allowed prefixes live in the client's key space. A
//! range is allowed when every key it can touch lies under one allowed
//! prefix; a txn when each of its compares and operations is, nested txns
//! included. Calls that act on the whole cluster rather than on keys
//! (compaction, snapshots, defragmentation, membership and auth changes,
//! leader moves, alarm changes) are writes to a read-only proxy, and
//! outside any prefix list. A refusal is gRPC PermissionDenied with a
//! message naming the rule, counted in `keel_grpc_proxy_refused_total`.

use keel_proto::etcdserverpb::{request_op, Compare, RequestOp, TxnRequest};
use tonic::Status;

/// Why a request was refused: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ReadOnly,
    Prefix,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "read-only",
            Refusal::Prefix => "prefix",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "keel-proxy: read-only proxy: writes are refused",
            Refusal::Prefix => "keel-proxy: key range outside the proxy's allowed prefixes",
        }
    }

    pub(crate) fn status(self) -> Status {
        Status::permission_denied(self.message())
    }
}

/// What a call does, for the calls that name no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Reads cluster state that holds no keys (status, member list, auth
    /// status, lease lists): always allowed.
    Read,
    /// Changes no key but the cluster (leases: they carry no keys of their
    /// own until a put attaches one): refused by `--read-only` only.
    Write,
    /// Reads or changes every key at once, or administers the cluster
    /// (compaction, snapshot, defragment, membership, auth, move-leader):
    /// refused by `--read-only` when it changes something, and by any
    /// `--allow-prefix`.
    ClusterWide { changes: bool },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub read_only: bool,
    /// Empty: every key is allowed.
    pub allow_prefixes: Vec<Vec<u8>>,
}

impl Policy {
    pub(crate) fn effect(&self, effect: Effect) -> Result<(), Refusal> {
        match effect {
            Effect::Read => Ok(()),
            Effect::Write if self.read_only => Err(Refusal::ReadOnly),
            Effect::Write => Ok(()),
            Effect::ClusterWide { changes } => {
                if changes && self.read_only {
                    Err(Refusal::ReadOnly)
                } else if !self.allow_prefixes.is_empty() {
                    Err(Refusal::Prefix)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// A read of `[key, range_end)` (etcd's encoding: empty end one key,
    /// `\0` every key from `key` on).
    pub(crate) fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), Refusal> {
        if self.allow_prefixes.is_empty() || self.allow_prefixes.iter().any(|p| within(p, key, range_end)) {
            Ok(())
        } else {
            Err(Refusal::Prefix)
        }
    }

    /// A write of `[key, range_end)`.
    pub(crate) fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), Refusal> {
        if self.read_only {
            return Err(Refusal::ReadOnly);
        }
        self.read(key, range_end)
    }

    /// Every compare and operation of a txn, both branches, nested txns
    /// included: a txn is refused if any branch could do what the proxy
    /// refuses, whichever branch the cluster would take.
    pub(crate) fn txn(&self, txn: &TxnRequest) -> Result<(), Refusal> {
        txn.compare.iter().try_for_each(|c: &Compare| self.read(&c.key, &c.range_end))?;
        txn.success.iter().chain(&txn.failure).try_for_each(|op| self.op(op))
    }

    fn op(&self, op: &RequestOp) -> Result<(), Refusal> {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => self.read(&r.key, &r.range_end),
            Some(request_op::Request::RequestPut(r)) => self.write(&r.key, &[]),
            Some(request_op::Request::RequestDeleteRange(r)) => self.write(&r.key, &r.range_end),
            Some(request_op::Request::RequestTxn(r)) => self.txn(r),
            None => Ok(()),
        }
    }

    /// A name whose keys are `name` and everything under it (Lock and
    /// Election names: `name/<lease>` keys, read with a prefix range).
    pub(crate) fn name(&self, name: &[u8], writes: bool) -> Result<(), Refusal> {
        let end = prefix_end(name);
        if writes {
            self.write(name, &end)
        } else {
            self.read(name, &end)
        }
    }
}

/// Whether every key of `[key, range_end)` starts with `prefix`.
fn within(prefix: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if !key.starts_with(prefix) {
        return false;
    }
    match range_end {
        [] => true,
        // Every key from `key` on: only an empty prefix (or one of all
        // 0xff bytes, whose range is unbounded too) holds them all.
        [0] => prefix_end(prefix) == [0],
        end => {
            let limit = prefix_end(prefix);
            limit == [0] || end <= limit.as_slice()
        }
    }
}

/// The first key after every key with this prefix; `\0` when there is
/// none (etcd's `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `--allow-prefix` values: repeatable, each comma separated.
pub(crate) fn parse_prefixes(value: &str) -> Vec<Vec<u8>> {
    value.split(',').filter(|p| !p.is_empty()).map(|p| p.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

    use super::*;

    fn allow(prefixes: &[&str]) -> Policy {
        Policy { read_only: false, allow_prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect() }
    }

    #[test]
    fn ranges_must_lie_under_one_prefix() {
        let policy = allow(&["/app/", "/shared"]);
        let cases: &[(&str, &str, bool)] = &[
            ("/app/x", "", true),
            ("/app/", "/app0", true),
            ("/app/a", "/app/b", true),
            ("/app/", "/app1", false),
            ("/ap", "/app0", false),
            ("/other", "", false),
            ("/app/x", "\0", false),
            ("/sharedX", "", true),
            ("", "\0", false),
        ];
        for (key, end, ok) in cases {
            assert_eq!(policy.read(key.as_bytes(), end.as_bytes()).is_ok(), *ok, "{key:?}..{end:?}");
        }
        assert!(Policy::default().read(b"", b"\0").is_ok());
        assert!(allow(&[""]).read(b"", b"\0").is_ok());
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert!(allow(&["\u{7f}"]).read(b"\x7f\x01", b"\x80").is_ok());
    }

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest { key: key.into(), ..Default::default() })),
        }
    }
    fn get(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest { key: key.into(), ..Default::default() })),
        }
    }
    fn nested(txn: TxnRequest) -> RequestOp {
        RequestOp { request: Some(request_op::Request::RequestTxn(txn)) }
    }

    #[test]
    fn txns_are_inspected_in_both_branches_and_nested() {
        let read_only = Policy { read_only: true, allow_prefixes: Vec::new() };
        let reads = TxnRequest { success: vec![get("/a")], failure: vec![get("/b")], ..Default::default() };
        assert_eq!(read_only.txn(&reads), Ok(()));
        let deep_write = TxnRequest {
            success: vec![get("/a")],
            failure: vec![nested(TxnRequest { failure: vec![put("/b")], ..Default::default() })],
            ..Default::default()
        };
        assert_eq!(read_only.txn(&deep_write), Err(Refusal::ReadOnly));

        let policy = allow(&["/app/"]);
        let compare_outside = TxnRequest {
            compare: vec![Compare { key: b"/secret".to_vec(), ..Default::default() }],
            success: vec![put("/app/x")],
            ..Default::default()
        };
        assert_eq!(policy.txn(&compare_outside), Err(Refusal::Prefix));
        let nested_outside = TxnRequest {
            success: vec![nested(TxnRequest { success: vec![get("/other")], ..Default::default() })],
            ..Default::default()
        };
        assert_eq!(policy.txn(&nested_outside), Err(Refusal::Prefix));
        let delete_all = RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: b"/app/".to_vec(),
                range_end: b"\0".to_vec(),
                ..Default::default()
            })),
        };
        assert_eq!(policy.txn(&TxnRequest { success: vec![delete_all], ..Default::default() }), Err(Refusal::Prefix));
        let inside = TxnRequest {
            success: vec![put("/app/x"), get("/app/y")],
            failure: vec![put("/app/z")],
            ..Default::default()
        };
        assert_eq!(policy.txn(&inside), Ok(()));
    }

    #[test]
    fn calls_without_keys_by_effect() {
        let read_only = Policy { read_only: true, allow_prefixes: Vec::new() };
        let prefixed = allow(&["/app/"]);
        assert_eq!(read_only.effect(Effect::Read), Ok(()));
        assert_eq!(read_only.effect(Effect::Write), Err(Refusal::ReadOnly));
        assert_eq!(read_only.effect(Effect::ClusterWide { changes: false }), Ok(()));
        assert_eq!(read_only.effect(Effect::ClusterWide { changes: true }), Err(Refusal::ReadOnly));
        assert_eq!(prefixed.effect(Effect::Write), Ok(()));
        assert_eq!(prefixed.effect(Effect::ClusterWide { changes: false }), Err(Refusal::Prefix));
        assert_eq!(prefixed.name(b"/app/lock", true), Ok(()));
        assert_eq!(prefixed.name(b"/app", false), Err(Refusal::Prefix));
        assert_eq!(read_only.name(b"/app/lock", true), Err(Refusal::ReadOnly));
        assert_eq!(parse_prefixes("/a/,/b/,,"), vec![b"/a/".to_vec(), b"/b/".to_vec()]);
    }
}
