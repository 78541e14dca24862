//! `watch`: a key, a range or a prefix; `-i` reads watch commands from
//! stdin; `watch … -- command args` runs the command for every event.
//!
//! etcdctl reads its raw `os.Args` (to find the `--` that cobra drops) and
//! `ETCDCTL_WATCH_KEY` / `ETCDCTL_WATCH_RANGE_END` from the process, so
//! this does too. `-i` reads the process's stdin on a thread of its own,
//! beside the event stream: events print while a read blocks.

use std::io::{BufRead, Write};

use keel_client::{ClientError, WatchOptions, Watcher};
use keel_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use keel_proto::mvccpb::{event::EventType, KeyValue};
use prost::Message;
use tokio_stream::{StreamExt, StreamMap};

use super::lease::{take_stdout, FOREVER};
use super::{key_bytes, Command};
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;
use crate::gostr;
use crate::printer::{fields_kv, json_header_fields, Format, Printer};

pub const WATCH: Command = Command {
    name: "watch",
    short: "Watches events stream on keys or prefixes",
    usage: "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
    long: "",
    flags: FLAGS,
    run,
};

const FLAGS: &[FlagSpec] = &[
    FlagSpec::new("interactive", Kind::Bool, "false", "Interactive mode").short('i'),
    FlagSpec::new("prefix", Kind::Bool, "false", "Watch on a prefix if prefix is set"),
    FlagSpec::new("prev-kv", Kind::Bool, "false", "get the previous key-value pair before the event happens"),
    FlagSpec::new("rev", Kind::Int64, "0", "Revision to start watching"),
];

const BAD_ARGS_NUM: &str = "bad number of arguments";
const BAD_ARGS_NUM_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const BAD_ARGS_NUM_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";
const BAD_ARGS_INTERACTIVE_WATCH: &str = "args[0] must be 'watch' for interactive calls";

/// `ExitInterrupted`: the server ended the watch.
const EXIT_INTERRUPTED: i32 = 5;

fn bad_args(message: impl Into<String>) -> Failure {
    Failure::exit(exit::BAD_ARGS, message)
}

/// What one watch asks for: etcdctl's `getWatchChan`.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    key: Vec<u8>,
    options: WatchOptions,
}

/// The flags `getWatchChan` reads.
#[derive(Debug, Clone, Copy, Default)]
struct WatchFlags {
    prefix: bool,
    prev_kv: bool,
    rev: i64,
}

impl WatchFlags {
    fn from(parsed: &Parsed) -> WatchFlags {
        WatchFlags { prefix: parsed.bool("prefix"), prev_kv: parsed.bool("prev-kv"), rev: parsed.int64("rev") }
    }
}

/// etcdctl's `getWatchChan`; arguments past a range end are ignored.
fn spec(args: &[String], flags: WatchFlags) -> Result<Spec, String> {
    let Some(key) = args.first() else { return Err(BAD_ARGS_NUM.to_owned()) };
    let mut options = WatchOptions::new();
    if flags.rev != 0 {
        options = options.with_start_revision(flags.rev);
    }
    if args.len() == 2 {
        if flags.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".to_owned());
        }
        options = options.with_range(key_bytes(&args[1]));
    }
    if flags.prefix {
        options = options.with_prefix();
    }
    if flags.prev_kv {
        options = options.with_prev_kv();
    }
    Ok(Spec { key: key_bytes(key), options })
}

/// etcdctl 3.4.23's `parseWatchArgs`, quirks included. `os_args` is the
/// whole process command line; `command_args` are cobra's positional
/// arguments (or, interactive, the line's words). Interactive, the line's
/// own flags are returned too: nothing carries over from the command line
/// or an earlier line.
fn parse_watch_args(
    os_args: &[String],
    command_args: &[String],
    env_key: &str,
    env_range: &str,
    interactive: bool,
) -> Result<(Vec<String>, Vec<String>, WatchFlags), String> {
    let raw_args = match os_args.iter().position(|a| a == "watch") {
        Some(at) => &os_args[at + 1..],
        None => os_args,
    };
    let mut watch_args: Vec<String> = command_args.to_vec();
    if interactive {
        if watch_args.first().map(String::as_str) != Some("watch") {
            return Err(BAD_ARGS_INTERACTIVE_WATCH.to_owned());
        }
        watch_args.remove(0);
    }
    if !interactive {
        let exec_idx = raw_args.iter().position(|a| a == "--");
        if exec_idx.is_some_and(|i| i == raw_args.len() - 1) {
            return Err(BAD_ARGS_NUM_SEPARATOR.to_owned());
        }
        if exec_idx.is_none() && raw_args.is_empty() && env_key.is_empty() {
            return Err(BAD_ARGS_NUM.to_owned());
        }
        if let (Some(exec_idx), false) = (exec_idx, env_key.is_empty()) {
            // Walks back over the exec args; a word left before `--` that
            // is not in the raw args is a key given besides the env one.
            let mut ridx = raw_args.len() as isize - 1;
            for w in watch_args.iter().rev() {
                if ridx >= 0 && *w == raw_args[ridx as usize] {
                    ridx -= 1;
                    continue;
                }
                if ridx == exec_idx as isize {
                    return Err(BAD_ARGS_NUM_CONFLICT_ENV.to_owned());
                }
            }
        }
        if exec_idx.is_none() && !watch_args.is_empty() && !env_key.is_empty() {
            return Err(BAD_ARGS_NUM_CONFLICT_ENV.to_owned());
        }
    } else {
        let exec_idx = watch_args.iter().position(|a| a == "--");
        if exec_idx.is_some_and(|i| i == watch_args.len() - 1) {
            return Err(BAD_ARGS_NUM_SEPARATOR.to_owned());
        }
        let mut parsed = Parsed::new(FLAGS);
        parsed.parse(&watch_args).map_err(|e| e.to_string())?;
        let positional = parsed.positional.len();
        if exec_idx.is_none() && env_key.is_empty() && positional < 1 {
            return Err(BAD_ARGS_NUM.to_owned());
        }
        if exec_idx.is_none() && positional > 0 && !env_key.is_empty() {
            return Err(BAD_ARGS_NUM_CONFLICT_ENV.to_owned());
        }
    }
    let args_with_sep: Vec<String> = if interactive { watch_args.clone() } else { raw_args.to_vec() };
    let sep = args_with_sep.iter().position(|a| a == "--");
    let exec_args = sep.map_or_else(Vec::new, |sep| args_with_sep[sep + 1..].to_vec());
    let mut flags = WatchFlags::default();
    if interactive {
        let mut parsed = Parsed::new(FLAGS);
        parsed.parse(&args_with_sep).map_err(|e| e.to_string())?;
        watch_args = parsed.positional.clone();
        flags = WatchFlags::from(&parsed);
    }
    if !env_key.is_empty() {
        let mut with_env = vec![env_key.to_owned()];
        if !env_range.is_empty() {
            with_env.push(env_range.to_owned());
        }
        with_env.extend(watch_args);
        watch_args = with_env;
    }
    let Some(sep) = sep else { return Ok((watch_args, exec_args, flags)) };
    // The positional arguments end with the exec args: cut from the last
    // occurrence of the first of them.
    let end = watch_args.iter().rposition(|a| *a == args_with_sep[sep + 1]).unwrap_or(0);
    watch_args.truncate(end);
    Ok((watch_args, exec_args, flags))
}

fn os_args() -> Vec<String> {
    use std::os::unix::ffi::OsStringExt;
    std::env::args_os()
        .map(|a| String::from_utf8(a.into_vec()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        .collect()
}

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let env_key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
    let env_range = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            gostr::quote(env_range.as_bytes())
        )));
    }
    let os_args = os_args();
    if ctx.flags.bool("interactive") {
        return interactive(ctx, os_args, env_key, env_range);
    }
    let (watch_args, exec_args, _) = parse_watch_args(&os_args, args, &env_key, &env_range, false).map_err(bad_args)?;
    let printer = ctx.setup()?;
    let spec = spec(&watch_args, WatchFlags::from(&ctx.flags)).map_err(bad_args)?;
    // A watch runs until the server ends it: no command timeout.
    let _ = ctx.flags.set("command-timeout", FOREVER);
    let stdout = take_stdout(ctx);
    let mut out = Out { stdout, stderr: take_stderr(ctx), printer, exec_args, client: None };
    let out_ref = &mut out;
    let watched = ctx.call(|client| async move {
        out_ref.client = Some(client.clone());
        let mut watcher = match client.watch(spec.key, spec.options).await {
            Ok(watcher) => watcher,
            Err(e) => {
                return Ok(match out_ref.ended(e).await {
                    Failure::Quiet(0) => Ok(()),
                    failure => Err(failure),
                })
            }
        };
        while let Some(item) = watcher.next().await {
            if let Err(failure) = out_ref.item(item).await {
                return Ok(Err(failure));
            }
        }
        Ok(Ok(()))
    });
    out.restore(ctx);
    watched??;
    Err(Failure::exit(EXIT_INTERRUPTED, "watch is canceled by the server"))
}

fn take_stderr<'a>(ctx: &mut Context<'a>) -> &'a mut dyn Write {
    let sink: &'a mut dyn Write = Box::leak(Box::new(std::io::sink()));
    std::mem::replace(&mut ctx.io.stderr, sink)
}

/// Where one command's watches print, and what they run per event.
struct Out<'a> {
    stdout: &'a mut dyn Write,
    stderr: &'a mut dyn Write,
    printer: Printer,
    exec_args: Vec<String>,
    /// For the header of a canceled watch's response.
    client: Option<keel_client::Client>,
}

impl<'a> Out<'a> {
    /// Gives the streams back, for reporting a failure.
    fn restore(self, ctx: &mut Context<'a>) {
        ctx.io.stdout = self.stdout;
        ctx.io.stderr = self.stderr;
    }

    /// etcdctl's `printWatchCh` for one response.
    async fn item(&mut self, item: Result<WatchResponse, ClientError>) -> Result<(), Failure> {
        let response = match item {
            Ok(response) => response,
            Err(e) => {
                let failure = self.ended(e).await;
                return match failure {
                    Failure::Quiet(0) => Ok(()),
                    other => Err(other),
                };
            }
        };
        let bytes = watch_output(self.printer, &response)?;
        let _ = self.stdout.write_all(&bytes);
        let _ = self.stdout.flush();
        for event in &response.events {
            if self.exec_args.is_empty() {
                break;
            }
            let revision = response.header.as_ref().map_or(0, |h| h.revision);
            let kv = event.kv.clone().unwrap_or_default();
            let event_type = if event.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" };
            let env = [
                ("ETCD_WATCH_REVISION", revision.to_string()),
                ("ETCD_WATCH_EVENT_TYPE", gostr::quote(event_type.as_bytes())),
                ("ETCD_WATCH_KEY", gostr::quote(&kv.key)),
                ("ETCD_WATCH_VALUE", gostr::quote(&kv.value)),
            ];
            let args = self.exec_args.clone();
            // The child waits off the runtime; it writes to the process's
            // own stdout and stderr, after what was printed so far.
            let status = tokio::task::spawn_blocking(move || {
                std::process::Command::new(&args[0])
                    .args(&args[1..])
                    .envs(env)
                    .stdin(std::process::Stdio::null())
                    .status()
            })
            .await;
            let error = match status {
                Ok(Ok(status)) if status.success() => continue,
                Ok(Ok(status)) => go_exit_error(status),
                Ok(Err(e)) => go_exec_error(&self.exec_args[0], &e),
                Err(e) => e.to_string(),
            };
            let quoted: Vec<String> = self.exec_args.iter().map(|a| gostr::quote(a.as_bytes())).collect();
            let _ = writeln!(self.stderr, "command [{}] error ({error})", quoted.join(" "));
            return Err(Failure::Quiet(exit::ERROR));
        }
        Ok(())
    }

    /// The watch ended with `error`: etcdctl got a canceled response. The
    /// returned `Quiet(0)` means "the stream ends normally".
    async fn ended(&mut self, error: ClientError) -> Failure {
        let (reason, compact_revision) = match &error {
            ClientError::Compacted { compact_revision } => (
                "etcdserver: mvcc: required revision has been compacted".to_owned(),
                compact_revision.unwrap_or_default(),
            ),
            ClientError::WatchCanceled { reason } => (reason.clone(), 0),
            other => (crate::error::RpcError::from_client(other).printed, 0),
        };
        let _ = writeln!(self.stderr, "watch was canceled ({reason})");
        // etcd's canceling response has the member's header at revision 0;
        // keel-client keeps only the reason, so another call supplies it.
        let mut header = None;
        if let (Some(client), false) = (&self.client, self.printer.format == Format::Simple) {
            let options = keel_client::GetOptions::new().with_limit(1).with_keys_only();
            if let Ok(r) = client.get_with(b"\0".to_vec(), options).await {
                header = r.header.map(|h| ResponseHeader { revision: 0, ..h });
            }
        }
        let response = WatchResponse { header, canceled: true, compact_revision, ..Default::default() };
        match watch_output(self.printer, &response) {
            Ok(bytes) => {
                let _ = self.stdout.write_all(&bytes);
                let _ = self.stdout.flush();
                Failure::Quiet(0)
            }
            Err(failure) => failure,
        }
    }
}

/// Go's `exec.ExitError` text.
fn go_exit_error(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal: {}", signal_name(signal)),
        _ => status.to_string(),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        9 => "killed".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// Go's `exec.Command(...).Run()` error when the program cannot start.
fn go_exec_error(program: &str, e: &std::io::Error) -> String {
    let quoted = gostr::quote(program.as_bytes());
    if e.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
        format!("exec: {quoted}: executable file not found in $PATH")
    } else if e.kind() == std::io::ErrorKind::NotFound {
        format!("fork/exec {program}: no such file or directory")
    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("fork/exec {program}: permission denied")
    } else {
        format!("fork/exec {program}: {e}")
    }
}

/// `watch -i`: one watch per `watch …` line, all printing as events come.
fn interactive(ctx: &mut Context<'_>, os_args: Vec<String>, env_key: String, env_range: String) -> Result<(), Failure> {
    let printer = ctx.setup()?;
    let _ = ctx.flags.set("command-timeout", FOREVER);
    let stdout = take_stdout(ctx);
    let mut out = Out { stdout, stderr: take_stderr(ctx), printer, exec_args: Vec::new(), client: None };
    let out_ref = &mut out;
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<Result<String, String>>(1);
    // A detached thread, not spawn_blocking: a read blocked at exit must
    // not hold the runtime's shutdown.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let read = stdin.read_until(b'\n', &mut line);
            let item = match read {
                Ok(_) if line.ends_with(b"\n") => Ok(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()),
                Ok(_) => Err("EOF".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            let last = item.is_err();
            if lines_tx.blocking_send(item).is_err() || last {
                return;
            }
        }
    });
    let result = ctx.call(|client| async move {
        let out = out_ref;
        out.client = Some(client.clone());
        let mut watches: StreamMap<usize, Watcher> = StreamMap::new();
        let mut execs: Vec<Vec<String>> = Vec::new();
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let line = match line {
                        Some(Ok(line)) => line,
                        Some(Err(e)) => return Ok(Err(Failure::exit(
                            exit::INVALID_INPUT,
                            format!("Error reading watch request line: {e}"),
                        ))),
                        None => return Ok(Err(Failure::exit(exit::INVALID_INPUT, "Error reading watch request line: EOF"))),
                    };
                    let args = super::txn::argify(&line).unwrap_or_default();
                    match args.first().map(String::as_str) {
                        None => {
                            let _ = writeln!(out.stderr, "Invalid command: {line} (watch and progress supported)");
                            continue;
                        }
                        Some("watch") if args.len() < 2 && env_key.is_empty() => {
                            let _ = writeln!(out.stderr, "Invalid command {line} (command type or key is not provided)");
                            continue;
                        }
                        Some("watch") => {}
                        Some("progress") => {
                            // keel-client cannot send etcd's progress request;
                            // what it brings back is a notification at the
                            // current revision on every open watch.
                            let options = keel_client::GetOptions::new().with_limit(1).with_keys_only();
                            let header = match client.get_with(b"\0".to_vec(), options).await {
                                Ok(r) => r.header,
                                Err(e) => return Ok(Err(Failure::exit(exit::ERROR, crate::error::RpcError::from_client(&e).printed))),
                            };
                            let ids: Vec<usize> = watches.keys().copied().collect();
                            for id in ids {
                                out.exec_args = execs[id].clone();
                                let notify = WatchResponse { header, ..Default::default() };
                                if let Err(failure) = out.item(Ok(notify)).await {
                                    return Ok(Err(failure));
                                }
                            }
                            continue;
                        }
                        Some(_) => {
                            let _ = writeln!(out.stderr, "Invalid command {line} (only support watch)");
                            continue;
                        }
                    }
                    let (watch_args, exec_args, flags) =
                        match parse_watch_args(&os_args, &args, &env_key, &env_range, true) {
                            Ok(parsed) => parsed,
                            Err(e) => return Ok(Err(bad_args(e))),
                        };
                    let spec = match spec(&watch_args, flags) {
                        Ok(spec) => spec,
                        Err(e) => {
                            let _ = writeln!(out.stderr, "Invalid command {line} ({e})");
                            continue;
                        }
                    };
                    match client.watch(spec.key, spec.options).await {
                        Ok(watcher) => {
                            watches.insert(execs.len(), watcher);
                            execs.push(exec_args);
                        }
                        Err(e) => {
                            if let failure @ (Failure::Exit { .. } | Failure::Quiet(1..)) = out.ended(e).await {
                                return Ok(Err(failure));
                            }
                        }
                    }
                }
                Some((id, item)) = watches.next(), if !watches.is_empty() => {
                    out.exec_args = execs[id].clone();
                    if let Err(failure) = out.item(item).await {
                        return Ok(Err(failure));
                    }
                }
            }
        }
    });
    out.restore(ctx);
    result?
}

/// What etcdctl's printers write for one watch response.
fn watch_output(printer: Printer, r: &WatchResponse) -> Result<Vec<u8>, Failure> {
    let mut s = Vec::new();
    if is_progress_notify(r) {
        // printWatchCh's own line, before the printer's.
        s.extend(format!("progress notify: {}\n", r.header.unwrap_or_default().revision).into_bytes());
    }
    match printer.format {
        Format::Simple => {
            for event in &r.events {
                s.extend_from_slice(event_type(event.r#type).as_bytes());
                s.push(b'\n');
                if let Some(prev) = &event.prev_kv {
                    simple_kv(&mut s, printer.hex, prev);
                }
                simple_kv(&mut s, printer.hex, &event.kv.clone().unwrap_or_default());
            }
        }
        Format::Json => {
            s.extend(json_watch(r).into_bytes());
        }
        Format::Fields => {
            s.extend(fields_watch(r).into_bytes());
        }
        Format::Protobuf => {
            // clientv3 rebuilds the response from what it keeps.
            let pb = WatchResponse {
                header: Some(r.header.unwrap_or_default()),
                events: r.events.clone(),
                compact_revision: r.compact_revision,
                canceled: r.canceled,
                created: r.created,
                ..Default::default()
            };
            s.extend(pb.encode_to_vec());
        }
        Format::Table => return Err(Failure::exit(exit::BAD_FEATURE, "table not supported as output format")),
    }
    Ok(s)
}

/// clientv3's `IsProgressNotify`.
fn is_progress_notify(r: &WatchResponse) -> bool {
    r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && r.header.is_some_and(|h| h.revision != 0)
}

fn event_type(t: i32) -> &'static str {
    if t == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    }
}

fn simple_kv(s: &mut Vec<u8>, hex: bool, kv: &KeyValue) {
    for bytes in [&kv.key, &kv.value] {
        if hex {
            s.extend(gostr::hex_escaped(bytes).into_bytes());
        } else {
            s.extend_from_slice(bytes);
        }
        s.push(b'\n');
    }
}

fn json_kv(kv: &KeyValue) -> String {
    let mut fields = Vec::new();
    if !kv.key.is_empty() {
        fields.push(format!("\"key\":\"{}\"", gostr::base64(&kv.key)));
    }
    for (name, value) in
        [("create_revision", kv.create_revision), ("mod_revision", kv.mod_revision), ("version", kv.version)]
    {
        if value != 0 {
            fields.push(format!("\"{name}\":{value}"));
        }
    }
    if !kv.value.is_empty() {
        fields.push(format!("\"value\":\"{}\"", gostr::base64(&kv.value)));
    }
    if kv.lease != 0 {
        fields.push(format!("\"lease\":{}", kv.lease));
    }
    format!("{{{}}}", fields.join(","))
}

/// `encoding/json` of clientv3's `WatchResponse`: its Go field names, the
/// header a struct (always there), events gogo's `omitempty` JSON.
fn json_watch(r: &WatchResponse) -> String {
    // clientv3 always makes the slice: `[]`, never `null`.
    let events = {
        let events: Vec<String> = r
            .events
            .iter()
            .map(|e| {
                let mut fields = Vec::new();
                if e.r#type != 0 {
                    fields.push(format!("\"type\":{}", e.r#type));
                }
                if let Some(kv) = &e.kv {
                    fields.push(format!("\"kv\":{}", json_kv(kv)));
                }
                if let Some(prev) = &e.prev_kv {
                    fields.push(format!("\"prev_kv\":{}", json_kv(prev)));
                }
                format!("{{{}}}", fields.join(","))
            })
            .collect();
        format!("[{}]", events.join(","))
    };
    format!(
        "{{\"Header\":{{{}}},\"Events\":{events},\"CompactRevision\":{},\"Canceled\":{},\"Created\":{}}}\n",
        json_header_fields(r.header.as_ref()).join(","),
        r.compact_revision,
        r.canceled,
        r.created
    )
}

fn fields_watch(r: &WatchResponse) -> String {
    let h = r.header.unwrap_or_default();
    let mut s = format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    );
    for event in &r.events {
        s.push_str(&format!("\"Type\" : {}\n", event_type(event.r#type)));
        if let Some(prev) = &event.prev_kv {
            s.push_str(&fields_kv("Prev", prev));
        }
        s.push_str(&fields_kv("", &event.kv.clone().unwrap_or_default()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::mvccpb::Event;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn parse(os: &[&str], cmd: &[&str], key: &str, interactive: bool) -> Result<(Vec<String>, Vec<String>), String> {
        parse_watch_args(&strings(os), &strings(cmd), key, "", interactive).map(|(w, e, _)| (w, e))
    }

    #[test]
    fn watch_args_as_etcdctl_splits_them() {
        let ok = |w: &[&str], e: &[&str]| Ok((strings(w), strings(e)));
        assert_eq!(parse(&["etcdctl", "watch", "foo"], &["foo"], "", false), ok(&["foo"], &[]));
        assert_eq!(
            parse(&["etcdctl", "watch", "foo", "--", "echo", "hi"], &["foo", "echo", "hi"], "", false),
            ok(&["foo"], &["echo", "hi"])
        );
        assert_eq!(parse(&["etcdctl", "watch", "foo", "--"], &["foo"], "", false), Err(BAD_ARGS_NUM_SEPARATOR.into()));
        assert_eq!(parse(&["etcdctl", "watch", "--", "echo"], &["echo"], "", false), ok(&[], &["echo"]));
        assert_eq!(parse(&["etcdctl", "watch", "--", "echo"], &["echo"], "k", false), ok(&["k"], &["echo"]));
        assert_eq!(parse(&["etcdctl", "watch"], &[], "", false), Err(BAD_ARGS_NUM.into()));
        assert_eq!(
            parse(&["etcdctl", "watch", "-i"], &["watch", "k"], "k", true),
            Err(BAD_ARGS_NUM_CONFLICT_ENV.into())
        );
        assert_eq!(parse(&["etcdctl", "watch", "foo"], &["foo"], "k", false), Err(BAD_ARGS_NUM_CONFLICT_ENV.into()));
        assert_eq!(parse(&["etcdctl", "watch", "-i"], &["watch", "foo", "--prefix"], "", true), ok(&["foo"], &[]));
        assert_eq!(
            parse(&["etcdctl", "watch", "-i"], &["get", "foo"], "", true),
            Err(BAD_ARGS_INTERACTIVE_WATCH.into())
        );
    }

    // Expected strings captured from etcdctl 3.4.23 against etcd 3.4.23.
    #[test]
    fn watch_printers() {
        let header = Some(ResponseHeader {
            cluster_id: 793139849819443020,
            member_id: 10766564812897696932,
            revision: 16,
            raft_term: 2,
        });
        let delete = WatchResponse {
            header,
            events: vec![Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue { key: b"wk".to_vec(), mod_revision: 16, ..Default::default() }),
                prev_kv: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            json_watch(&delete),
            "{\"Header\":{\"cluster_id\":793139849819443020,\"member_id\":10766564812897696932,\"revision\":16,\"raft_term\":2},\"Events\":[{\"type\":1,\"kv\":{\"key\":\"d2s=\",\"mod_revision\":16}}],\"CompactRevision\":0,\"Canceled\":false,\"Created\":false}\n"
        );
        let simple = Printer { format: Format::Simple, hex: false, value_only: false };
        assert_eq!(watch_output(simple, &delete).unwrap(), b"DELETE\nwk\n\n");
        assert!(fields_watch(&delete).ends_with(
            "\"Type\" : DELETE\n\"Key\" : \"wk\"\n\"CreateRevision\" : 0\n\"ModRevision\" : 16\n\"Version\" : 0\n\"Value\" : \"\"\n\"Lease\" : 0\n"
        ));
    }
}
