//! `lease grant|revoke|timetolive|list|keep-alive`.
//!
//! etcdctl prints clientv3's lease types, not the protobuf ones, and that
//! shows: their JSON has the response header's fields flattened into the
//! object (clientv3 embeds `*pb.ResponseHeader`), `-w protobuf` marshals
//! only that embedded header, and `revoke -w protobuf` fails.

use std::io::Write;

use keel_client::ClientError;
use keel_proto::etcdserverpb::{
    LeaseGrantResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, ResponseHeader,
};
use prost::Message;
use tokio_stream::StreamExt;

use super::{Command, Group};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;
use crate::gostr;
use crate::printer::{json_header_fields, Format};

pub const LEASE: Group = Group {
    name: "lease",
    short: "Lease related commands",
    usage: "lease <subcommand>",
    long: "",
    flags: &[],
    subcommands: &[&GRANT, &KEEP_ALIVE, &LIST, &REVOKE, &TIME_TO_LIVE],
};

const GRANT: Command =
    Command { name: "grant", short: "Creates leases", usage: "grant <ttl>", long: "", flags: &[], run: grant };

const REVOKE: Command =
    Command { name: "revoke", short: "Revokes leases", usage: "revoke <leaseID>", long: "", flags: &[], run: revoke };

const TIME_TO_LIVE: Command = Command {
    name: "timetolive",
    short: "Get lease information",
    usage: "timetolive <leaseID> [options]",
    long: "",
    flags: &[FlagSpec::new("keys", Kind::Bool, "false", "Get keys attached to this lease")],
    run: time_to_live,
};

const LIST: Command =
    Command { name: "list", short: "List all active leases", usage: "list", long: "", flags: &[], run: list };

const KEEP_ALIVE: Command = Command {
    name: "keep-alive",
    short: "Keeps leases alive (renew)",
    usage: "keep-alive [options] <leaseID>",
    long: "",
    flags: &[FlagSpec::new(
        "once",
        Kind::Bool,
        "false",
        "Resets the keep-alive time to its original value and exits immediately",
    )],
    run: keep_alive,
};

fn bad_args(message: impl Into<String>) -> Failure {
    Failure::exit(exit::BAD_ARGS, message)
}

/// etcdctl's `leaseFromArgs`: lease ids are hex on the command line.
fn lease_from_arg(arg: &str) -> Result<i64, Failure> {
    gostr::parse_int(arg, 16).map_err(|e| bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

/// Prefixes the error etcdctl prints for a failed call, keeping the
/// clientv3 log line before it.
fn failed_to(what: &str, failure: Failure) -> Failure {
    match failure {
        Failure::Rpc { mut rpc, target } => {
            rpc.printed = format!("failed to {what} ({})", rpc.printed);
            Failure::Rpc { rpc, target }
        }
        Failure::Exit { code, message } => Failure::Exit { code, message: format!("failed to {what} ({message})") },
        other => other,
    }
}

fn grant(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(bad_args("lease grant command needs TTL argument"));
    }
    let ttl = gostr::parse_int(&args[0], 10).map_err(|e| bad_args(format!("bad TTL ({e})")))?;
    let printer = ctx.setup()?;
    let response =
        ctx.call(|client| async move { client.lease_grant(ttl, 0).await }).map_err(|f| failed_to("grant lease", f))?;
    let out = match printer.format {
        Format::Simple => format!("lease {} granted with TTL({}s)\n", hex_id(response.id), response.ttl).into_bytes(),
        Format::Json => json_grant(&response).into_bytes(),
        Format::Fields => {
            let mut s = fields_header(&response.header);
            s.push_str(&format!("\"ID\" : {}\n\"TTL\" : {}\n", response.id, response.ttl));
            s.into_bytes()
        }
        Format::Protobuf => embedded_header_pb(&response.header),
        Format::Table => return Err(table_unsupported()),
    };
    emit(ctx.io.stdout, &out);
    Ok(())
}

fn revoke(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(bad_args("lease revoke command needs 1 argument"));
    }
    let id = lease_from_arg(&args[0])?;
    let printer = ctx.setup()?;
    let response =
        ctx.call(|client| async move { client.lease_revoke(id).await }).map_err(|f| failed_to("revoke lease", f))?;
    let out = match printer.format {
        Format::Simple => format!("lease {} revoked\n", hex_id(id)).into_bytes(),
        Format::Json => format!("{{\"header\":{}}}\n", json_header_object(&response.header)).into_bytes(),
        Format::Fields => fields_header(&response.header).into_bytes(),
        Format::Protobuf => return Err(revoke_pb_unsupported(&response)),
        Format::Table => return Err(table_unsupported()),
    };
    emit(ctx.io.stdout, &out);
    Ok(())
}

fn time_to_live(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(bad_args("lease timetolive command needs lease ID as argument"));
    }
    let keys = ctx.flags.bool("keys");
    let printer = ctx.setup()?;
    let id = lease_from_arg(&args[0])?;
    let response = ctx
        .call(|client| async move { client.lease_time_to_live(id, keys).await })
        .map_err(|f| f.with_code(exit::BAD_CONNECTION))?;
    let out = match printer.format {
        Format::Simple => simple_time_to_live(&response, keys).into_bytes(),
        Format::Json => json_time_to_live(&response).into_bytes(),
        Format::Fields => {
            let mut s = fields_header(&response.header);
            s.push_str(&format!(
                "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                response.id, response.ttl, response.granted_ttl
            ));
            for key in &response.keys {
                s.push_str(&format!("\"Key\" : {}\n", gostr::quote(key)));
            }
            s.into_bytes()
        }
        Format::Protobuf => embedded_header_pb(&response.header),
        Format::Table => return Err(table_unsupported()),
    };
    emit(ctx.io.stdout, &out);
    Ok(())
}

fn list(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let printer = ctx.setup()?;
    let response =
        ctx.call(|client| async move { client.lease_leases().await }).map_err(|f| f.with_code(exit::BAD_CONNECTION))?;
    let out = match printer.format {
        Format::Simple => simple_leases(&response).into_bytes(),
        Format::Json => json_leases(&response).into_bytes(),
        Format::Fields => {
            let mut s = fields_header(&response.header);
            for lease in &response.leases {
                s.push_str(&format!("\"ID\" : {}\n", lease.id));
            }
            s.into_bytes()
        }
        Format::Protobuf => embedded_header_pb(&response.header),
        Format::Table => return Err(table_unsupported()),
    };
    emit(ctx.io.stdout, &out);
    Ok(())
}

/// One keep-alive response as clientv3 hands it to etcdctl.
struct KeepAliveResponse {
    header: Option<ResponseHeader>,
    id: i64,
    ttl: i64,
}

fn keep_alive(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 {
        return Err(bad_args("lease keep-alive command needs lease ID as argument"));
    }
    let id = lease_from_arg(&args[0])?;
    let printer = ctx.setup()?;
    let format = printer.format;
    if format == Format::Table {
        // etcdctl fails only when printing the first response; for an
        // unknown lease it prints nothing at all.
        let known = ctx.call(|client| async move { client.lease_time_to_live(id, false).await });
        return match known {
            Ok(r) if r.ttl > 0 => Err(table_unsupported()),
            _ => Ok(()),
        };
    }
    // keel-client's keep-alive reports the first renewal's TTL but not its
    // header: a TimeToLive call right after supplies the header etcdctl's
    // JSON and fields formats print (same cluster, member, term and, unless
    // a write lands in between, revision).
    let first = ctx.call(|client| async move {
        let handle = match client.lease_keep_alive(id).await {
            Ok(handle) => handle,
            Err(ClientError::LeaseExpired { .. } | ClientError::LeaseNotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = client.lease_time_to_live(id, false).await?.header;
        Ok(Some((handle, header)))
    });
    // The keep-alive is a stream: clientv3 logs no retry of a unary call.
    let first = first.map_err(|f| match f {
        Failure::Rpc { rpc, .. } => Failure::exit(exit::BAD_CONNECTION, rpc.printed),
        other => other.with_code(exit::BAD_CONNECTION),
    })?;
    let once = ctx.flags.bool("once");
    let Some((mut handle, header)) = first else {
        if once {
            return Err(Failure::exit(exit::BAD_CONNECTION, "etcdserver: requested lease not found"));
        }
        print_expired(ctx.io.stdout, format, id);
        return Ok(());
    };
    let first = KeepAliveResponse { header, id, ttl: handle.ttl() };
    emit(ctx.io.stdout, &keep_alive_output(format, &first)?);
    if once {
        return Ok(());
    }
    // Renewals go on until the lease is lost or the process is killed: the
    // call must outlive --command-timeout, and it writes as it goes.
    let _ = ctx.flags.set("command-timeout", FOREVER);
    let stdout = take_stdout(ctx);
    let renewals = ctx.call(|_client| async move {
        while let Some(Ok(r)) = handle.next().await {
            let response = KeepAliveResponse { header: r.header, id: r.id, ttl: r.ttl };
            if let Ok(bytes) = keep_alive_output(format, &response) {
                emit(&mut *stdout, &bytes);
            }
        }
        Ok(stdout)
    });
    match renewals {
        Ok(stdout) => {
            ctx.io.stdout = stdout;
            print_expired(ctx.io.stdout, format, id);
            Ok(())
        }
        Err(failure) => Err(failure),
    }
}

/// Go's longest `time.Duration`: a deadline that never comes.
pub const FOREVER: &str = "2562047h";

/// Moves stdout out of the context, so a long-running call can write to it
/// while the context drives the call; a sink takes its place meanwhile.
pub fn take_stdout<'a>(ctx: &mut Context<'a>) -> &'a mut dyn Write {
    // A zero-sized sink: leaking it allocates nothing.
    let sink: &'a mut dyn Write = Box::leak(Box::new(std::io::sink()));
    std::mem::replace(&mut ctx.io.stdout, sink)
}

fn print_expired(out: &mut dyn Write, format: Format, id: i64) {
    if format == Format::Simple {
        emit(out, format!("lease {} expired or revoked.\n", hex_id(id)).as_bytes());
    }
}

fn keep_alive_output(format: Format, r: &KeepAliveResponse) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => format!("lease {} keepalived with TTL({})\n", hex_id(r.id), r.ttl).into_bytes(),
        Format::Json => {
            let mut fields = json_header_fields(r.header.as_ref());
            fields.push(format!("\"ID\":{}", r.id));
            fields.push(format!("\"TTL\":{}", r.ttl));
            format!("{{{}}}\n", fields.join(",")).into_bytes()
        }
        Format::Fields => {
            let mut s = fields_header(&r.header);
            s.push_str(&format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl));
            s.into_bytes()
        }
        Format::Protobuf => embedded_header_pb(&r.header),
        Format::Table => return Err(table_unsupported()),
    })
}

fn table_unsupported() -> Failure {
    Failure::exit(exit::BAD_FEATURE, "table not supported as output format")
}

fn emit(out: &mut dyn Write, bytes: &[u8]) {
    // etcdctl ignores write errors (a closed pipe) too.
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Go's `%016x` of a lease id.
fn hex_id(id: i64) -> String {
    if id < 0 {
        format!("-{:015x}", id.unsigned_abs())
    } else {
        format!("{id:016x}")
    }
}

fn simple_time_to_live(r: &LeaseTimeToLiveResponse, keys: bool) -> String {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {} already expired\n", hex_id(r.id));
    }
    let mut text = format!("lease {} granted with TTL({}s), remaining({}s)", hex_id(r.id), r.granted_ttl, r.ttl);
    if keys {
        let names: Vec<String> = r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        text.push_str(&format!(", attached keys([{}])", names.join(" ")));
    }
    text + "\n"
}

fn simple_leases(r: &LeaseLeasesResponse) -> String {
    let mut s = format!("found {} leases\n", r.leases.len());
    for lease in &r.leases {
        s.push_str(&format!("{}\n", hex_id(lease.id)));
    }
    s
}

fn json_header_object(h: &Option<ResponseHeader>) -> String {
    match h {
        Some(_) => format!("{{{}}}", json_header_fields(h.as_ref()).join(",")),
        None => "null".to_owned(),
    }
}

fn json_grant(r: &LeaseGrantResponse) -> String {
    let mut fields = json_header_fields(r.header.as_ref());
    fields.push(format!("\"ID\":{}", r.id));
    fields.push(format!("\"TTL\":{}", r.ttl));
    fields.push(format!("\"Error\":{}", gostr::json_string(r.error.as_bytes())));
    format!("{{{}}}\n", fields.join(","))
}

fn json_time_to_live(r: &LeaseTimeToLiveResponse) -> String {
    let mut fields = json_header_fields(r.header.as_ref());
    fields.push(format!("\"id\":{}", r.id));
    fields.push(format!("\"ttl\":{}", r.ttl));
    fields.push(format!("\"granted-ttl\":{}", r.granted_ttl));
    let keys = if r.keys.is_empty() {
        "null".to_owned()
    } else {
        let keys: Vec<String> = r.keys.iter().map(|k| format!("\"{}\"", gostr::base64(k))).collect();
        format!("[{}]", keys.join(","))
    };
    fields.push(format!("\"keys\":{keys}"));
    format!("{{{}}}\n", fields.join(","))
}

fn json_leases(r: &LeaseLeasesResponse) -> String {
    let mut fields = json_header_fields(r.header.as_ref());
    let leases: Vec<String> = r.leases.iter().map(|l| format!("{{\"id\":{}}}", l.id)).collect();
    fields.push(format!("\"leases\":[{}]", leases.join(",")));
    format!("{{{}}}\n", fields.join(","))
}

fn fields_header(h: &Option<ResponseHeader>) -> String {
    let h = h.unwrap_or_default();
    format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    )
}

/// What `-w protobuf` writes for clientv3's lease responses: the promoted
/// `Marshal` of their embedded header.
fn embedded_header_pb(h: &Option<ResponseHeader>) -> Vec<u8> {
    h.unwrap_or_default().encode_to_vec()
}

/// etcdctl's error for `lease revoke -w protobuf`: `%T (%v)` of the
/// response, whose header prints in protobuf's compact text format.
fn revoke_pb_unsupported(r: &LeaseRevokeResponse) -> Failure {
    let header = match &r.header {
        Some(h) => {
            let mut text = String::new();
            for (name, value) in [("cluster_id", h.cluster_id), ("member_id", h.member_id), ("raft_term", h.raft_term)]
            {
                if value != 0 {
                    text.push_str(&format!("{name}:{value} "));
                }
                if name == "member_id" && h.revision != 0 {
                    text.push_str(&format!("revision:{} ", h.revision));
                }
            }
            text
        }
        None => "<nil>".to_owned(),
    };
    Failure::exit(
        exit::BAD_FEATURE,
        format!("marshal unsupported for type clientv3.LeaseRevokeResponse ({{{header}}})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::etcdserverpb::LeaseStatus;

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 793139849819443020,
            member_id: 10766564812897696932,
            revision: 4,
            raft_term: 2,
        })
    }

    // Expected strings captured from etcdctl 3.4.23 against etcd 3.4.23.
    #[test]
    fn grant_formats() {
        let r = LeaseGrantResponse { header: header(), id: 4369795986798314248, ttl: 60, error: String::new() };
        assert_eq!(
            json_grant(&r),
            "{\"cluster_id\":793139849819443020,\"member_id\":10766564812897696932,\"revision\":4,\"raft_term\":2,\"ID\":4369795986798314248,\"TTL\":60,\"Error\":\"\"}\n"
        );
        assert_eq!(hex_id(r.id), "3ca4a24c3e0a8308");
        assert_eq!(hex_id(0x1234), "0000000000001234");
        assert_eq!(embedded_header_pb(&r.header)[..2], [0x08, 0xcc]);
    }

    #[test]
    fn time_to_live_formats() {
        let r = LeaseTimeToLiveResponse {
            header: header(),
            id: 4369795986798314256,
            ttl: 99,
            granted_ttl: 100,
            keys: vec![b"k2".to_vec(), b"k1".to_vec()],
        };
        assert_eq!(
            simple_time_to_live(&r, true),
            "lease 3ca4a24c3e0a8310 granted with TTL(100s), remaining(99s), attached keys([k2 k1])\n"
        );
        assert_eq!(
            json_time_to_live(&r),
            "{\"cluster_id\":793139849819443020,\"member_id\":10766564812897696932,\"revision\":4,\"raft_term\":2,\"id\":4369795986798314256,\"ttl\":99,\"granted-ttl\":100,\"keys\":[\"azI=\",\"azE=\"]}\n"
        );
        let gone = LeaseTimeToLiveResponse { header: header(), id: 0x1234, ttl: -1, granted_ttl: 0, keys: vec![] };
        assert_eq!(simple_time_to_live(&gone, false), "lease 0000000000001234 already expired\n");
        assert!(json_time_to_live(&gone).ends_with(",\"id\":4660,\"ttl\":-1,\"granted-ttl\":0,\"keys\":null}\n"));
    }

    #[test]
    fn list_and_revoke_formats() {
        let r = LeaseLeasesResponse { header: header(), leases: vec![LeaseStatus { id: 4369795986798314246 }] };
        assert_eq!(simple_leases(&r), "found 1 leases\n3ca4a24c3e0a8306\n");
        assert_eq!(
            json_leases(&r),
            "{\"cluster_id\":793139849819443020,\"member_id\":10766564812897696932,\"revision\":4,\"raft_term\":2,\"leases\":[{\"id\":4369795986798314246}]}\n"
        );
        let revoked = LeaseRevokeResponse { header: header() };
        assert_eq!(
            revoke_pb_unsupported(&revoked).to_string(),
            "marshal unsupported for type clientv3.LeaseRevokeResponse ({cluster_id:793139849819443020 member_id:10766564812897696932 revision:4 raft_term:2 })"
        );
        assert_eq!(
            fields_header(&header()),
            "\"ClusterID\" : 793139849819443020\n\"MemberID\" : 10766564812897696932\n\"Revision\" : 4\n\"RaftTerm\" : 2\n"
        );
    }
}
