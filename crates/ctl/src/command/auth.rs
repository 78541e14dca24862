//! `auth enable|disable`, and the output shapes `user` and `role` share.
//!
//! etcdctl 3.4 has no `auth status`: `etcdctl auth status` shows the group's
//! help, as for any unknown subcommand.

use std::io::Write;

use keel_proto::etcdserverpb::ResponseHeader;

use super::{Command, Group};
use crate::error::{exit, Failure};
use crate::global::Context;
use crate::gostr;
use crate::printer::{Format, Printer};

pub const AUTH: Group = Group {
    name: "auth",
    short: "Enable or disable authentication",
    usage: "auth <enable or disable>",
    long: "",
    flags: &[],
    subcommands: &[&DISABLE, &ENABLE],
};

const ENABLE: Command =
    Command { name: "enable", short: "Enables authentication", usage: "enable", long: "", flags: &[], run: enable };

const DISABLE: Command =
    Command { name: "disable", short: "Disables authentication", usage: "disable", long: "", flags: &[], run: disable };

/// etcd's refusal to enable auth while user root lacks role root
/// (`rpctypes.ErrRootRoleNotExist`).
const ROOT_ROLE_MISSING: &str = "etcdserver: root user does not have root role";

fn enable(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(Failure::exit(exit::BAD_ARGS, "auth enable command does not accept any arguments"));
    }
    // etcdctl prints a fixed line whatever `--write-out` says, but still
    // refuses an unknown format first.
    ctx.setup()?;
    // etcdctl's loop: a missing root role is created and granted, then
    // enabling is tried again. Each failed attempt is logged by clientv3,
    // so the first one is a warning line even when all ends well.
    loop {
        match ctx.call(|client| async move { client.auth_enable().await }) {
            Ok(_) => break,
            Err(Failure::Rpc { rpc, target }) if rpc.desc == ROOT_ROLE_MISSING => {
                // Only clientv3's warning line shows: etcdctl goes on.
                let mut lines = Vec::new();
                Failure::Rpc { rpc, target }.report(&mut std::io::sink(), &mut lines);
                let warning = lines.split(|b| *b == b'\n').next().unwrap_or_default();
                let _ = ctx.io.stderr.write_all(warning);
                let _ = ctx.io.stderr.write_all(b"\n");
                ctx.call(|client| async move { client.role_add("root").await })?;
                ctx.call(|client| async move { client.user_grant_role("root", "root").await })?;
            }
            Err(other) => return Err(other),
        }
    }
    let _ = writeln!(ctx.io.stdout, "Authentication Enabled");
    Ok(())
}

fn disable(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(Failure::exit(exit::BAD_ARGS, "auth disable command does not accept any arguments"));
    }
    ctx.setup()?;
    ctx.call(|client| async move { client.auth_disable().await })?;
    let _ = writeln!(ctx.io.stdout, "Authentication Disabled");
    Ok(())
}

/// What one of etcdctl's auth printers shows for a response, in each
/// format: simple text, the JSON fields after `header`, the `fields`
/// lines after the header's, the protobuf encoding.
pub(super) struct Shown {
    pub header: Option<ResponseHeader>,
    pub simple: Vec<u8>,
    /// Encoded `"name":value` members, omitempty already applied.
    pub json: Vec<String>,
    /// `None`: etcdctl's fields printer lacks this method.
    pub fields: Option<String>,
    pub protobuf: Vec<u8>,
}

impl Shown {
    /// A response that is only a header.
    pub fn header_only(header: Option<ResponseHeader>, simple: String, protobuf: Vec<u8>) -> Shown {
        Shown { header, simple: simple.into_bytes(), json: Vec::new(), fields: Some(String::new()), protobuf }
    }
}

/// Prints `shown` as `printer`'s format; the table printer (and the fields
/// one for some methods) refuse with etcdctl's `printerUnsupported` error.
pub(super) fn show(printer: &Printer, out: &mut dyn Write, shown: Shown) -> Result<(), Failure> {
    let bytes = match printer.format {
        Format::Simple => shown.simple,
        Format::Json => {
            let mut members = Vec::new();
            if let Some(h) = &shown.header {
                members.push(format!("\"header\":{}", json_header(h)));
            }
            members.extend(shown.json);
            format!("{{{}}}\n", members.join(",")).into_bytes()
        }
        Format::Fields => match shown.fields {
            Some(rest) => (fields_header(&shown.header) + &rest).into_bytes(),
            None => return Err(unsupported("fields")),
        },
        Format::Protobuf => shown.protobuf,
        Format::Table => return Err(unsupported("table")),
    };
    let _ = out.write_all(&bytes);
    let _ = out.flush();
    Ok(())
}

fn unsupported(format: &str) -> Failure {
    Failure::exit(exit::BAD_FEATURE, format!("{format} not supported as output format"))
}

/// `encoding/json` of a gogo `ResponseHeader` (every field `omitempty`).
pub(super) fn json_header(h: &ResponseHeader) -> String {
    let mut members = Vec::new();
    for (name, value) in [
        ("cluster_id", h.cluster_id.to_string()),
        ("member_id", h.member_id.to_string()),
        ("revision", h.revision.to_string()),
        ("raft_term", h.raft_term.to_string()),
    ] {
        if value != "0" {
            members.push(format!("\"{name}\":{value}"));
        }
    }
    format!("{{{}}}", members.join(","))
}

/// A JSON array of Go strings, or nothing when empty (`omitempty`).
pub(super) fn json_strings(name: &str, items: &[String]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let items: Vec<String> = items.iter().map(|s| gostr::json_string(s.as_bytes())).collect();
    Some(format!("\"{name}\":[{}]", items.join(",")))
}

fn fields_header(h: &Option<ResponseHeader>) -> String {
    let h = h.unwrap_or_default();
    format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    )
}

/// `"Name" : "a" "b"` as etcdctl's fields printer lists strings.
pub(super) fn fields_strings(name: &str, items: &[String]) -> String {
    let mut line = format!("\"{name}\" :");
    for item in items {
        line.push(' ');
        line.push_str(&gostr::quote(item.as_bytes()));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 16535702495563741899,
            member_id: 2757737572816536338,
            revision: 1,
            raft_term: 2,
        })
    }

    fn printer(format: Format) -> Printer {
        Printer { format, hex: false, value_only: false }
    }

    // Captured from etcdctl 3.4.23 against etcd 3.4.23.
    #[test]
    fn header_only_formats() {
        let shown = || Shown::header_only(header(), "Role writer created\n".into(), vec![1]);
        let mut out = Vec::new();
        show(&printer(Format::Json), &mut out, shown()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"header\":{\"cluster_id\":16535702495563741899,\"member_id\":2757737572816536338,\"revision\":1,\"raft_term\":2}}\n"
        );
        let mut out = Vec::new();
        show(&printer(Format::Fields), &mut out, shown()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"ClusterID\" : 16535702495563741899\n\"MemberID\" : 2757737572816536338\n\"Revision\" : 1\n\"RaftTerm\" : 2\n"
        );
        let refused = show(&printer(Format::Table), &mut Vec::new(), shown()).unwrap_err();
        assert_eq!(refused.to_string(), "table not supported as output format");
    }

    #[test]
    fn string_lists() {
        let users = ["alice".to_owned(), "bob".to_owned()];
        assert_eq!(json_strings("users", &users).unwrap(), "\"users\":[\"alice\",\"bob\"]");
        assert_eq!(json_strings("users", &[]), None);
        assert_eq!(fields_strings("Roles", &users), "\"Roles\" : \"alice\" \"bob\"\n");
    }
}
