//! `role add|delete|get|list|grant-permission|revoke-permission`.

use keel_client::prefix_end;
use keel_proto::authpb::permission::Type as PermissionType;
use keel_proto::etcdserverpb::AuthRoleGetResponse;
use prost::Message;

use super::auth::{fields_strings, json_strings, show, Shown};
use super::{Command, Group};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;
use crate::gostr;

pub const ROLE: Group = Group {
    name: "role",
    short: "Role related commands",
    usage: "role <subcommand>",
    long: "",
    flags: &[],
    subcommands: &[&ADD, &DELETE, &GET, &GRANT_PERMISSION, &LIST, &REVOKE_PERMISSION],
};

const ADD: Command =
    Command { name: "add", short: "Adds a new role", usage: "add <role name>", long: "", flags: &[], run: add };

const DELETE: Command =
    Command { name: "delete", short: "Deletes a role", usage: "delete <role name>", long: "", flags: &[], run: delete };

const GET: Command = Command {
    name: "get",
    short: "Gets detailed information of a role",
    usage: "get <role name>",
    long: "",
    flags: &[],
    run: get,
};

const LIST: Command =
    Command { name: "list", short: "Lists all roles", usage: "list", long: "", flags: &[], run: list };

const GRANT_PERMISSION: Command = Command {
    name: "grant-permission",
    short: "Grants a key to a role",
    usage: "grant-permission [options] <role name> <permission type> <key> [endkey]",
    long: "",
    flags: &[
        FlagSpec::new(
            "from-key",
            Kind::Bool,
            "false",
            "grant a permission of keys that are greater than or equal to the given key using byte compare",
        ),
        FlagSpec::new("prefix", Kind::Bool, "false", "grant a prefix permission"),
    ],
    run: grant_permission,
};

const REVOKE_PERMISSION: Command = Command {
    name: "revoke-permission",
    short: "Revokes a key from a role",
    usage: "revoke-permission <role name> <key> [endkey]",
    long: "",
    flags: &[
        FlagSpec::new(
            "from-key",
            Kind::Bool,
            "false",
            "revoke a permission of keys that are greater than or equal to the given key using byte compare",
        ),
        FlagSpec::new("prefix", Kind::Bool, "false", "revoke a prefix permission"),
    ],
    run: revoke_permission,
};

fn bad_args(message: impl Into<String>) -> Failure {
    Failure::exit(exit::BAD_ARGS, message)
}

fn add(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [role] = args else {
        return Err(bad_args("role add command requires role name as its argument"));
    };
    let printer = ctx.setup()?;
    let name = role.clone();
    let response = ctx.call(|client| async move { client.role_add(name).await })?;
    let shown = Shown::header_only(response.header, format!("Role {role} created\n"), response.encode_to_vec());
    show(&printer, ctx.io.stdout, shown)
}

fn delete(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [role] = args else {
        return Err(bad_args("role delete command requires role name as its argument"));
    };
    let printer = ctx.setup()?;
    let name = role.clone();
    let response = ctx.call(|client| async move { client.role_delete(name).await })?;
    let shown = Shown::header_only(response.header, format!("Role {role} deleted\n"), response.encode_to_vec());
    show(&printer, ctx.io.stdout, shown)
}

fn get(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [role] = args else {
        return Err(bad_args("role get command requires role name as its argument"));
    };
    let printer = ctx.setup()?;
    let name = role.clone();
    let response = ctx.call(|client| async move { client.role_get(name).await })?;
    show(&printer, ctx.io.stdout, role_get_shown(role, &response))
}

fn list(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(bad_args("role list command requires no arguments"));
    }
    let printer = ctx.setup()?;
    let response = ctx.call(|client| async move { client.role_list().await })?;
    let simple: String = response.roles.iter().map(|r| format!("{r}\n")).collect();
    let shown = Shown {
        header: response.header,
        simple: simple.into_bytes(),
        json: json_strings("roles", &response.roles).into_iter().collect(),
        fields: Some(fields_strings("Roles", &response.roles)),
        protobuf: response.encode_to_vec(),
    };
    show(&printer, ctx.io.stdout, shown)
}

fn grant_permission(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() < 3 {
        return Err(bad_args(
            "role grant command requires role name, permission type, and key [endkey] as its argument",
        ));
    }
    let kind = match args[1].to_uppercase().as_str() {
        "READ" => PermissionType::Read,
        "WRITE" => PermissionType::Write,
        "READWRITE" => PermissionType::Readwrite,
        _ => return Err(bad_args(format!("invalid permission type: {}", args[1]))),
    };
    let (key, end) = perm_range(&ctx.flags, &args[2..])?;
    let printer = ctx.setup()?;
    let role = args[0].clone();
    let response = ctx.call(|client| async move { client.role_grant_permission(role, key, end, kind).await })?;
    let simple = format!("Role {} updated\n", args[0]);
    show(&printer, ctx.io.stdout, Shown::header_only(response.header, simple, response.encode_to_vec()))
}

fn revoke_permission(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() < 2 {
        return Err(bad_args("role revoke-permission command requires role name and key [endkey] as its argument"));
    }
    let (key, end) = perm_range(&ctx.flags, &args[1..])?;
    let printer = ctx.setup()?;
    let role = args[0].clone();
    let range_end = end.clone();
    let response = ctx.call(|client| async move { client.role_revoke_permission(role, key, range_end).await })?;
    // etcdctl shows the key as given and the range end it sent.
    let mut simple = Vec::new();
    let (given, role) = (args[1].as_bytes(), args[0].as_bytes());
    if end.is_empty() {
        simple.extend_from_slice(b"Permission of key ");
        simple.extend_from_slice(given);
    } else {
        simple.extend_from_slice(b"Permission of range [");
        simple.extend_from_slice(given);
        if end == b"\0" {
            simple.extend_from_slice(b", <open ended>");
        } else {
            simple.extend_from_slice(b", ");
            simple.extend_from_slice(&end);
            simple.push(b')');
        }
    }
    simple.extend_from_slice(b" is revoked from role ");
    simple.extend_from_slice(role);
    simple.push(b'\n');
    let mut shown = Shown::header_only(response.header, String::new(), response.encode_to_vec());
    shown.simple = simple;
    show(&printer, ctx.io.stdout, shown)
}

/// etcdctl's `permRange`: the key and range end a permission command
/// sends. An empty key is sent as "\0", the smallest key, since etcd keeps
/// permissions as intervals.
fn perm_range(flags: &Parsed, args: &[String]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let (prefix, from_key) = (flags.bool("prefix"), flags.bool("from-key"));
    let key = args[0].as_bytes().to_vec();
    if key.is_empty() {
        if prefix && from_key {
            return Err(bad_args("--from-key and --prefix flags are mutually exclusive"));
        }
        // "\0" as range end means every key from the start on.
        let end = if prefix || from_key { vec![0] } else { Vec::new() };
        return Ok((vec![0], end));
    }
    let end = match (args.get(1), prefix, from_key) {
        (None, true, true) => return Err(bad_args("--from-key and --prefix flags are mutually exclusive")),
        (None, true, false) => prefix_end(&key),
        (None, false, true) => vec![0],
        (None, false, false) => Vec::new(),
        (Some(_), true, _) => return Err(bad_args("unexpected endkey argument with --prefix flag")),
        (Some(_), false, true) => return Err(bad_args("unexpected endkey argument with --from-key flag")),
        (Some(end), false, false) => end.as_bytes().to_vec(),
    };
    Ok((key, end))
}

/// etcdctl's `RoleGet` printers for role `name`.
pub(super) fn role_get_shown(name: &str, r: &AuthRoleGetResponse) -> Shown {
    Shown {
        header: r.header,
        simple: simple_role_get(name, r),
        json: if r.perm.is_empty() {
            Vec::new()
        } else {
            let perms: Vec<String> = r
                .perm
                .iter()
                .map(|p| {
                    let mut members = Vec::new();
                    if p.perm_type != 0 {
                        members.push(format!("\"permType\":{}", p.perm_type));
                    }
                    if !p.key.is_empty() {
                        members.push(format!("\"key\":\"{}\"", gostr::base64(&p.key)));
                    }
                    if !p.range_end.is_empty() {
                        members.push(format!("\"range_end\":\"{}\"", gostr::base64(&p.range_end)));
                    }
                    format!("{{{}}}", members.join(","))
                })
                .collect();
            vec![format!("\"perm\":[{}]", perms.join(","))]
        },
        fields: Some(
            r.perm
                .iter()
                .map(|p| {
                    format!(
                        "\"PermType\" :  {}\n\"Key\" : {}\n\"RangeEnd\" : {}\n",
                        type_name(p.perm_type),
                        gostr::quote(&p.key),
                        gostr::quote(&p.range_end)
                    )
                })
                .collect(),
        ),
        protobuf: r.encode_to_vec(),
    }
}

fn type_name(kind: i32) -> String {
    match PermissionType::try_from(kind) {
        Ok(PermissionType::Read) => "READ".to_owned(),
        Ok(PermissionType::Write) => "WRITE".to_owned(),
        Ok(PermissionType::Readwrite) => "READWRITE".to_owned(),
        // gogo's String() of an unknown enum value.
        Err(_) => kind.to_string(),
    }
}

fn simple_role_get(name: &str, r: &AuthRoleGetResponse) -> Vec<u8> {
    let mut s = format!("Role {name}\n").into_bytes();
    let section = |s: &mut Vec<u8>, title: &[u8], wanted: PermissionType| {
        s.extend_from_slice(title);
        for p in &r.perm {
            if p.perm_type != wanted as i32 && p.perm_type != PermissionType::Readwrite as i32 {
                continue;
            }
            s.push(b'\t');
            if p.range_end.is_empty() {
                s.extend_from_slice(&p.key);
                s.push(b'\n');
                continue;
            }
            s.push(b'[');
            s.extend_from_slice(&p.key);
            if p.range_end == b"\0" {
                s.extend_from_slice(b", <open ended>");
            } else {
                s.extend_from_slice(b", ");
                s.extend_from_slice(&p.range_end);
                s.push(b')');
            }
            if prefix_end(&p.key) == p.range_end {
                s.extend_from_slice(b" (prefix ");
                s.extend_from_slice(&p.key);
                s.push(b')');
            }
            s.push(b'\n');
        }
    };
    section(&mut s, b"KV Read:\n", PermissionType::Read);
    section(&mut s, b"KV Write:\n", PermissionType::Write);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::authpb::Permission;
    use keel_proto::etcdserverpb::ResponseHeader;

    fn perm(kind: PermissionType, key: &str, end: &[u8]) -> Permission {
        Permission { perm_type: kind as i32, key: key.as_bytes().to_vec(), range_end: end.to_vec() }
    }

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 16535702495563741899,
            member_id: 2757737572816536338,
            revision: 1,
            raft_term: 2,
        })
    }

    // Captured from etcdctl 3.4.23 against etcd 3.4.23.
    #[test]
    fn role_get_simple() {
        let reader = AuthRoleGetResponse {
            header: header(),
            perm: vec![
                perm(PermissionType::Write, "acl/drop", b""),
                perm(PermissionType::Read, "acl/key", b""),
                perm(PermissionType::Read, "acl/r1", b"acl/r5"),
                perm(PermissionType::Readwrite, "acl/up", b""),
            ],
        };
        assert_eq!(
            String::from_utf8(simple_role_get("reader", &reader)).unwrap(),
            "Role reader\nKV Read:\n\tacl/key\n\t[acl/r1, acl/r5)\n\tacl/up\nKV Write:\n\tacl/drop\n\tacl/up\n"
        );
        let writer = AuthRoleGetResponse {
            header: header(),
            perm: vec![
                perm(PermissionType::Readwrite, "acl/w/", b"acl/w0"),
                perm(PermissionType::Readwrite, "zz/", b"\0"),
            ],
        };
        assert_eq!(
            String::from_utf8(simple_role_get("writer", &writer)).unwrap(),
            "Role writer\nKV Read:\n\t[acl/w/, acl/w0) (prefix acl/w/)\n\t[zz/, <open ended>\nKV Write:\n\t[acl/w/, acl/w0) (prefix acl/w/)\n\t[zz/, <open ended>\n"
        );
        let shown = role_get_shown("writer", &writer);
        assert_eq!(
            shown.json,
            ["\"perm\":[{\"permType\":2,\"key\":\"YWNsL3cv\",\"range_end\":\"YWNsL3cw\"},{\"permType\":2,\"key\":\"enov\",\"range_end\":\"AA==\"}]"]
        );
        assert_eq!(
            shown.fields.unwrap(),
            "\"PermType\" :  READWRITE\n\"Key\" : \"acl/w/\"\n\"RangeEnd\" : \"acl/w0\"\n\"PermType\" :  READWRITE\n\"Key\" : \"zz/\"\n\"RangeEnd\" : \"\\x00\"\n"
        );
        let empty = AuthRoleGetResponse { header: header(), perm: vec![] };
        assert_eq!(String::from_utf8(simple_role_get("root", &empty)).unwrap(), "Role root\nKV Read:\nKV Write:\n");
    }

    #[test]
    fn permission_ranges() {
        let flags = |prefix: bool, from_key: bool| {
            let specs = GRANT_PERMISSION.flags;
            let mut parsed = Parsed::new(specs);
            parsed.set("prefix", if prefix { "true" } else { "false" }).unwrap();
            parsed.set("from-key", if from_key { "true" } else { "false" }).unwrap();
            parsed
        };
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(perm_range(&flags(false, false), &args(&["k"])).unwrap(), (b"k".to_vec(), vec![]));
        assert_eq!(
            perm_range(&flags(true, false), &args(&["acl/w/"])).unwrap(),
            (b"acl/w/".to_vec(), b"acl/w0".to_vec())
        );
        assert_eq!(perm_range(&flags(false, true), &args(&["zz/"])).unwrap(), (b"zz/".to_vec(), vec![0]));
        assert_eq!(perm_range(&flags(false, false), &args(&[""])).unwrap(), (vec![0], vec![]));
        assert_eq!(perm_range(&flags(false, false), &args(&["b", "a"])).unwrap(), (b"b".to_vec(), b"a".to_vec()));
        let error = perm_range(&flags(true, false), &args(&["a", "b"])).unwrap_err();
        assert_eq!(error.to_string(), "unexpected endkey argument with --prefix flag");
        let error = perm_range(&flags(true, true), &args(&["a"])).unwrap_err();
        assert_eq!(error.to_string(), "--from-key and --prefix flags are mutually exclusive");
    }
}
