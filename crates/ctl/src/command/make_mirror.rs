//! `make-mirror <destination>`: copies the keys under `--prefix` to another
//! cluster as they were at one revision, then applies every later change
//! there, one transaction per source revision, until killed. Every 30 s it
//! prints how many puts and deletes it has applied.
//!
//! As etcdctl's, its calls wait without a deadline: a cluster that cannot
//! be reached is waited for, not reported. Keys keep their values only:
//! leases are not mirrored.

use std::cell::Cell;
use std::io::Write;
use std::time::{Duration, Instant};

use keel_client::proto::mvccpb::event::EventType;
use keel_client::{
    prefix_end, Client, ClientError, ClientOptions, DeleteOptions, GetOptions, PutOptions, TlsOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::time::sleep_until;
use tokio_stream::StreamExt;

use super::lease::FOREVER;
use super::lock::{connect, take_stdout, Failed};
use super::Command;
use crate::error::{exit, Failure, RpcError};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::global::Context;

pub const MAKE_MIRROR: Command = Command {
    name: "make-mirror",
    short: "Makes a mirror at the destination etcd cluster",
    usage: "make-mirror [options] <destination>",
    long: "",
    flags: &[
        FlagSpec::new(
            "dest-cacert",
            Kind::String,
            "",
            "Verify certificates of TLS enabled secure servers using this CA bundle",
        ),
        FlagSpec::new(
            "dest-cert",
            Kind::String,
            "",
            "Identify secure client using this TLS certificate file for the destination cluster",
        ),
        FlagSpec::new(
            "dest-insecure-transport",
            Kind::Bool,
            "true",
            "Disable transport security for client connections",
        ),
        FlagSpec::new("dest-key", Kind::String, "", "Identify secure client using this TLS key file"),
        FlagSpec::new(
            "dest-prefix",
            Kind::String,
            "",
            "destination prefix to mirror a prefix to a different prefix in the destination cluster",
        ),
        FlagSpec::new(
            "no-dest-prefix",
            Kind::Bool,
            "false",
            "mirror key-values to the root of the destination cluster",
        ),
        FlagSpec::new("prefix", Kind::String, "", "Key-value prefix to mirror"),
    ],
    run,
};

/// How often the count is printed.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// clientv3/mirror's `batchLimit`: keys per read while copying.
const BATCH: i64 = 1000;
/// Between attempts to reach a destination that is down.
const REDIAL: Duration = Duration::from_millis(500);

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let [destination] = args else {
        return Err(Failure::exit(exit::BAD_ARGS, "make-mirror takes one destination argument"));
    };
    // etcdctl makes the destination's client first, then the source's.
    let options = dest_options(&ctx.flags)?;
    ctx.setup()?;
    let mut dest = Dest::start(destination, options, ctx)?;
    let names = Names {
        prefix: ctx.flags.string("prefix").as_bytes().to_vec(),
        dest_prefix: ctx.flags.string("dest-prefix").as_bytes().to_vec(),
        no_dest_prefix: ctx.flags.bool("no-dest-prefix"),
    };
    let _ = ctx.flags.set("command-timeout", FOREVER);
    let failed = Failed::new(&ctx.flags);
    let source = connect(ctx)?;
    let out = take_stdout(ctx);
    let failure = ctx.block_on(mirror(&source, &mut dest, &names, &failed, &mut *out));
    ctx.io.stdout = out;
    Err(failure?)
}

/// The destination client's options: the global dial timeout, the
/// `--dest-*` TLS files, which etcdctl reads before anything else and
/// reports with exit code 128.
fn dest_options(flags: &Parsed) -> Result<ClientOptions, Failure> {
    let bad = |message: String| Failure::exit(exit::BAD_ARGS, message);
    let (cert, key, ca) = (flags.string("dest-cert"), flags.string("dest-key"), flags.string("dest-cacert"));
    let read = |path: &str| std::fs::read(path).map(drop).map_err(|e| bad(open_error(path, &e)));
    let mut tls = None;
    if !cert.is_empty() || !key.is_empty() {
        if cert.is_empty() || key.is_empty() {
            return Err(bad(format!("KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")));
        }
        read(cert)?;
        read(key)?;
        tls = Some(TlsOptions::new().with_client_cert(cert, key));
    }
    if !ca.is_empty() {
        read(ca)?;
        tls = Some(tls.unwrap_or_default().with_ca(ca));
    }
    if tls.is_none() && !flags.bool("dest-insecure-transport") {
        tls = Some(TlsOptions::new());
    }
    Ok(ClientOptions {
        connect_timeout: flags.duration("dial-timeout").max(Duration::from_millis(1)),
        request_timeout: None,
        keep_alive: None,
        tls,
        credentials: None,
        ..ClientOptions::default()
    })
}

/// Go's `*PathError` text for a file that cannot be opened.
fn open_error(path: &str, error: &std::io::Error) -> String {
    let cause = match error.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    };
    format!("open {path}: {cause}")
}

/// The destination, connected when first needed: clientv3 dials in the
/// background and a call waits for the connection, so a destination that
/// is down holds the mirror up rather than failing it.
struct Dest {
    endpoint: String,
    options: ClientOptions,
    client: Option<Client>,
}

impl Dest {
    /// Tries once now, so that a destination that can never work
    /// (unusable TLS material, a malformed endpoint) fails at once, as in
    /// etcdctl; one that is down is tried again when needed.
    fn start(endpoint: &str, options: ClientOptions, ctx: &mut Context<'_>) -> Result<Dest, Failure> {
        let mut dest = Dest { endpoint: endpoint.to_owned(), options, client: None };
        match ctx.block_on(Client::connect([dest.endpoint.clone()], dest.options.clone()))? {
            Ok(client) => dest.client = Some(client),
            Err(ClientError::Transport { .. } | ClientError::Connection { .. }) => {}
            Err(e @ ClientError::Tls(_)) => return Err(Failure::exit(exit::BAD_ARGS, e.to_string())),
            Err(e) => return Err(Failure::exit(exit::ERROR, e.to_string())),
        }
        Ok(dest)
    }

    async fn client(&mut self) -> Result<Client, Failure> {
        loop {
            if let Some(client) = &self.client {
                return Ok(client.clone());
            }
            match Client::connect([self.endpoint.clone()], self.options.clone()).await {
                Ok(client) => self.client = Some(client),
                Err(ClientError::Transport { .. } | ClientError::Connection { .. }) => {
                    tokio::time::sleep(REDIAL).await;
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    /// A failed call as etcdctl reports it: clientv3's log line names the
    /// destination.
    fn failed(&self, error: ClientError) -> Failure {
        let target = self.endpoint.split_once("://").map_or(self.endpoint.as_str(), |(_, rest)| rest);
        Failure::Rpc { rpc: RpcError::from_client(&error), target: target.to_owned() }
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Failure> {
        let client = self.client().await?;
        client.put(key, value).await.map(drop).map_err(|e| self.failed(e))
    }

    async fn commit(&mut self, ops: Vec<TxnOp>) -> Result<(), Failure> {
        let client = self.client().await?;
        client.txn(Txn::new().and_then(ops)).await.map(drop).map_err(|e| self.failed(e))
    }
}

/// `--prefix`, `--dest-prefix`, `--no-dest-prefix`.
struct Names {
    prefix: Vec<u8>,
    dest_prefix: Vec<u8>,
    no_dest_prefix: bool,
}

impl Names {
    /// What replaces `--prefix` in the destination's keys: `--dest-prefix`,
    /// nothing with `--no-dest-prefix`, else the prefix itself.
    fn replacement(&self) -> Result<&[u8], Failure> {
        match (self.no_dest_prefix, self.dest_prefix.is_empty()) {
            (true, false) => Err(Failure::exit(
                exit::BAD_ARGS,
                "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
            )),
            (false, true) => Ok(&self.prefix),
            _ => Ok(&self.dest_prefix),
        }
    }
}

/// etcdctl's `modifyPrefix`, Go's `strings.Replace(key, from, to, 1)`: the
/// first occurrence of `from` (the start, for an empty one) becomes `to`.
fn rename(key: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = if from.is_empty() { Some(0) } else { key.windows(from.len()).position(|w| w == from) };
    match at {
        Some(at) => [&key[..at], to, &key[at + from.len()..]].concat(),
        None => key.to_vec(),
    }
}

/// Mirrors until something fails, printing the count every 30 s meanwhile.
async fn mirror(source: &Client, dest: &mut Dest, names: &Names, failed: &Failed, out: &mut dyn Write) -> Failure {
    let total = Cell::new(0u64);
    let work = sync(source, dest, names, failed, &total);
    tokio::pin!(work);
    let mut next = Instant::now() + REPORT_EVERY;
    loop {
        tokio::select! {
            failure = &mut work => return failure,
            () = sleep_until(next.into()) => {
                let _ = writeln!(out, "{}", total.get());
                let _ = out.flush();
                next = Instant::now() + REPORT_EVERY;
            }
        }
    }
}

/// clientv3/mirror's `SyncBase` then `SyncUpdates`, applied as etcdctl's
/// `makeMirror` applies them. Returns why it stopped.
async fn sync(source: &Client, dest: &mut Dest, names: &Names, failed: &Failed, total: &Cell<u64>) -> Failure {
    // The revision to copy at; etcdctl checks its prefix flags only after
    // this first read, whatever its outcome.
    let first = source.get("foo").await;
    let to = match names.replacement() {
        Ok(to) => to,
        Err(failure) => return failure,
    };
    let revision = match first {
        Ok(response) => response.header.map_or(0, |h| h.revision),
        Err(e) => return failed.of(e),
    };
    let from = &names.prefix;
    let (mut key, options) = if from.is_empty() {
        (vec![0], GetOptions::new().with_from_key())
    } else {
        (from.clone(), GetOptions::new().with_range(prefix_end(from)))
    };
    let options = options.with_limit(BATCH).with_revision(revision);
    loop {
        let page = match source.get_with(key.clone(), options.clone()).await {
            Ok(page) => page,
            Err(e) => return failed.of(e),
        };
        for kv in &page.kvs {
            if let Err(failure) = dest.put(rename(&kv.key, from, to), kv.value.clone()).await {
                return failure;
            }
            total.set(total.get() + 1);
        }
        match page.kvs.last() {
            Some(last) if page.more => key = [&last.key[..], &[0]].concat(),
            _ => break,
        }
    }
    let watch = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut watcher = match source.watch(from.clone(), watch).await {
        Ok(watcher) => watcher,
        Err(e) => return watch_ended(e),
    };
    while let Some(item) = watcher.next().await {
        let response = match item {
            Ok(response) => response,
            Err(e) => return watch_ended(e),
        };
        if response.compact_revision != 0 {
            return watch_ended(ClientError::Compacted { compact_revision: Some(response.compact_revision) });
        }
        // One transaction per source revision.
        let mut ops = Vec::new();
        let mut last = 0;
        for event in response.events {
            let kv = event.kv.unwrap_or_default();
            if last != 0 && kv.mod_revision > last {
                if let Err(failure) = dest.commit(std::mem::take(&mut ops)).await {
                    return failure;
                }
            }
            last = kv.mod_revision;
            let renamed = rename(&kv.key, from, to);
            if event.r#type == EventType::Delete as i32 {
                ops.push(TxnOp::delete(renamed, DeleteOptions::new()));
            } else {
                ops.push(TxnOp::put(renamed, kv.value, PutOptions::new()));
            }
            total.set(total.get() + 1);
        }
        if !ops.is_empty() {
            if let Err(failure) = dest.commit(ops).await {
                return failure;
            }
        }
    }
    watch_ended(ClientError::WatchCanceled { reason: String::new() })
}

/// etcdctl returns `ErrCompacted` for a compacted watch; any other end of
/// the watch closes its channel and `makeMirror` returns a nil error,
/// which etcdctl prints as `<nil>`.
fn watch_ended(error: ClientError) -> Failure {
    match error {
        ClientError::Compacted { .. } => {
            Failure::exit(exit::ERROR, "etcdserver: mvcc: required revision has been compacted")
        }
        _ => Failure::exit(exit::ERROR, "<nil>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Parsed {
        let specs: Vec<FlagSpec> = MAKE_MIRROR.flags.iter().chain(crate::global::GLOBAL_FLAGS).copied().collect();
        let mut parsed = Parsed::new(&specs);
        parsed.parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        parsed
    }

    fn refused(args: &[&str]) -> (i32, String) {
        match dest_options(&parse(args)) {
            Err(Failure::Exit { code, message }) => (code, message),
            _ => panic!("{args:?} accepted"),
        }
    }

    // Captured from etcdctl 3.4.23.
    #[test]
    fn unusable_dest_tls_files_fail_as_in_etcdctl() {
        let both = "KeyFile and CertFile must both be present[key: , cert: /nonexistent]";
        assert_eq!(refused(&["--dest-cert", "/nonexistent"]), (128, both.to_owned()));
        let both = "KeyFile and CertFile must both be present[key: /k, cert: ]";
        assert_eq!(refused(&["--dest-key=/k"]), (128, both.to_owned()));
        let missing = "open /nonexistent: no such file or directory".to_owned();
        assert_eq!(refused(&["--dest-cacert", "/nonexistent"]), (128, missing.clone()));
        assert_eq!(refused(&["--dest-cert", "/nonexistent", "--dest-key", "/k"]), (128, missing));
    }

    #[test]
    fn dest_tls_follows_the_flags() {
        let plain = dest_options(&parse(&[])).unwrap();
        assert!(plain.tls.is_none() && plain.credentials.is_none());
        assert_eq!(plain.connect_timeout, Duration::from_secs(2));
        let secure = dest_options(&parse(&["--dest-insecure-transport=false", "--dial-timeout=7s"])).unwrap();
        assert!(secure.tls.is_some());
        assert_eq!(secure.connect_timeout, Duration::from_secs(7));
        // The source's TLS flags are not the destination's.
        assert!(dest_options(&parse(&["--insecure-transport=false"])).unwrap().tls.is_none());
    }

    #[test]
    fn prefixes_are_replaced_as_etcdctl_replaces_them() {
        let names = |prefix: &str, dest: &str, none: bool| Names {
            prefix: prefix.as_bytes().to_vec(),
            dest_prefix: dest.as_bytes().to_vec(),
            no_dest_prefix: none,
        };
        assert_eq!(names("/a/", "", false).replacement().unwrap(), b"/a/");
        assert_eq!(names("/a/", "/b/", false).replacement().unwrap(), b"/b/");
        assert_eq!(names("/a/", "", true).replacement().unwrap(), b"");
        let Err(Failure::Exit { code, message }) = names("/a/", "/b/", true).replacement() else { panic!() };
        assert_eq!(code, exit::BAD_ARGS);
        assert_eq!(message, "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one");

        assert_eq!(rename(b"/a/k", b"/a/", b"/b/"), b"/b/k");
        assert_eq!(rename(b"/a/k", b"/a/", b""), b"k");
        assert_eq!(rename(b"k", b"", b"/d/"), b"/d/k");
        assert_eq!(rename(b"k", b"", b""), b"k");
        // The first occurrence, as strings.Replace; only that one.
        assert_eq!(rename(b"/a//a/", b"/a/", b"/b/"), b"/b//a/");
        assert_eq!(rename(b"xyz", b"/a/", b"/b/"), b"xyz");
    }

    #[test]
    fn a_watch_ends_as_etcdctl_reports_it() {
        let compacted = watch_ended(ClientError::Compacted { compact_revision: Some(3) });
        assert!(
            matches!(compacted, Failure::Exit { code: 1, ref message } if message == "etcdserver: mvcc: required revision has been compacted")
        );
        let canceled = watch_ended(ClientError::WatchCanceled { reason: "etcdserver: permission denied".into() });
        assert!(matches!(canceled, Failure::Exit { code: 1, ref message } if message == "<nil>"));
    }
}
