//! `elect <name> <proposal>` campaigns (etcd's `concurrency.Election`) and
//! leads until Ctrl-C (SIGINT) or SIGTERM, then resigns; `elect -l <name>`
//! prints each leader until interrupted.
//!
//! As etcdctl does, the session's lease is never revoked: it expires after
//! its TTL once no longer kept alive.

use std::io::Write;

use keel_client::concurrency::{Election, Session, SessionOptions};
use keel_client::{Client, ClientError, GetOptions, SortOrder, SortTarget, WatchOptions};
use keel_proto::etcdserverpb::RangeResponse;
use keel_proto::mvccpb::event::EventType;
use tokio_stream::StreamExt;

use super::lock::{connect, take_stdout, Failed, Interrupt};
use super::Command;
use crate::error::{exit, Failure};
use crate::flags::{FlagSpec, Kind};
use crate::global::Context;
use crate::printer::Printer;

pub const ELECT: Command = Command {
    name: "elect",
    short: "Observes and participates in leader election",
    usage: "elect <election-name> [proposal]",
    long: "",
    flags: &[FlagSpec::new("listen", Kind::Bool, "false", "observation mode").short('l')],
    run,
};

fn run(ctx: &mut Context<'_>, args: &[String]) -> Result<(), Failure> {
    let bad_args = |message: &str| Failure::exit(exit::BAD_ARGS, message);
    if args.len() != 1 && args.len() != 2 {
        return Err(bad_args("elect takes one election name argument and an optional proposal argument"));
    }
    let listen = ctx.flags.bool("listen");
    if listen && args.len() == 2 {
        return Err(bad_args("proposal given but -l is set"));
    }
    if !listen && args.len() != 2 {
        return Err(bad_args("no proposal argument but -l not set"));
    }
    let printer = ctx.setup()?;
    let failed = Failed::new(&ctx.flags);
    let client = connect(ctx)?;
    let out = take_stdout(ctx);
    // The observer's failed reads are logged as they happen.
    let err = std::mem::replace(&mut ctx.io.stderr, Box::leak(Box::new(std::io::sink())));
    let work = Work { client: &client, name: &args[0], printer, failed: &failed };
    let result = match args.get(1) {
        None => ctx.block_on(work.observe(&mut *out, &mut *err)),
        Some(proposal) => ctx.block_on(work.campaign(proposal, &mut *out)),
    };
    ctx.io.stdout = out;
    ctx.io.stderr = err;
    result.and_then(|r| r)
}

struct Work<'w> {
    client: &'w Client,
    name: &'w str,
    printer: Printer,
    failed: &'w Failed,
}

impl Work<'_> {
    async fn campaign(self, proposal: &str, out: &mut dyn Write) -> Result<(), Failure> {
        let mut interrupt = Interrupt::new()?;
        let session = Session::new(self.client, SessionOptions::default()).await.map_err(|e| self.failed.of(e))?;
        let mut election = Election::new(&session, self.name.as_bytes());
        let result = self.lead(&session, &mut election, proposal, out, &mut interrupt).await;
        // Left to expire, as etcdctl leaves it.
        session.orphan();
        result
    }

    async fn lead(
        &self,
        session: &Session,
        election: &mut Election,
        proposal: &str,
        out: &mut dyn Write,
        interrupt: &mut Interrupt,
    ) -> Result<(), Failure> {
        let interrupted = tokio::select! {
            won = election.campaign(proposal.as_bytes()) => {
                won.map_err(|e| self.failed.of(e))?;
                false
            }
            () = interrupt.recv() => true,
        };
        if interrupted {
            // Leave the queue, as clientv3's Election does when its
            // campaign is cancelled.
            let _ = election.resign().await;
            return Err(Failure::exit(exit::ERROR, "context canceled"));
        }
        let response = self.client.get(election.key().to_vec()).await.map_err(|e| self.failed.of(e))?;
        self.printer.get(out, &response)?;
        tokio::select! {
            () = interrupt.recv() => election.resign().await.map_err(|e| self.failed.of(e)),
            () = session.expired() => Err(Failure::exit(exit::ERROR, "elect: session expired")),
        }
    }

    async fn observe(self, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
        let mut interrupt = Interrupt::new()?;
        // etcdctl makes a session even to observe.
        let session = Session::new(self.client, SessionOptions::default()).await.map_err(|e| self.failed.of(e))?;
        let result = tokio::select! {
            lost = self.follow(out, err) => Err(lost),
            () = interrupt.recv() => Ok(()),
        };
        session.orphan();
        result
    }

    /// clientv3's `Election.observe`, printing each response it would send
    /// (with the same headers, and the first read's count), until it stops;
    /// returns what etcdctl then reports.
    async fn follow(&self, out: &mut dyn Write, err: &mut dyn Write) -> Failure {
        let mut lost = |error: Option<ClientError>| {
            // A failed read is logged by clientv3; the observer then just ends.
            if let Some(Failure::Rpc { rpc, target }) = error.map(|e| self.failed.of(e)) {
                let mut lines = Vec::new();
                Failure::Rpc { rpc, target }.report(&mut std::io::sink(), &mut lines);
                let warning = lines.split_inclusive(|b| *b == b'\n').next().unwrap_or_default();
                let _ = err.write_all(warning);
            }
            Failure::exit(exit::ERROR, "elect: observer lost")
        };
        let mut prefix = self.name.as_bytes().to_vec();
        prefix.push(b'/');
        let first_created =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        loop {
            let mut read = match self.client.get_with(prefix.clone(), first_created.clone()).await {
                Ok(read) => read,
                Err(e) => return lost(Some(e)),
            };
            let (mut header, kv) = match read.kvs.first() {
                Some(kv) => (read.header.unwrap_or_default(), kv.clone()),
                None => {
                    let from = read.header.map_or(0, |h| h.revision);
                    let options = WatchOptions::new().with_prefix().with_start_revision(from);
                    let Ok(mut puts) = self.client.watch(prefix.clone(), options).await else { return lost(None) };
                    loop {
                        let Some(Ok(response)) = puts.next().await else { return lost(None) };
                        let put = response.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
                        if let Some(kv) = put.and_then(|e| e.kv) {
                            // The header of the batch, at the put's revision.
                            let mut header = response.header.unwrap_or_default();
                            header.revision = kv.mod_revision;
                            break (header, kv);
                        }
                    }
                }
            };
            let first = RangeResponse { header: Some(header), kvs: vec![kv.clone()], more: false, count: 0 };
            if let Err(failure) = self.printer.get(out, &first) {
                return failure;
            }
            let options = WatchOptions::new().with_start_revision(header.revision + 1);
            let Ok(mut changes) = self.client.watch(kv.key.clone(), options).await else { return lost(None) };
            'leader: loop {
                let Some(Ok(response)) = changes.next().await else { return lost(None) };
                for event in response.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    // clientv3 reuses the first read's response: its count
                    // and more go along.
                    header = response.header.unwrap_or_default();
                    read.header = Some(header);
                    read.kvs = event.kv.into_iter().collect();
                    if let Err(failure) = self.printer.get(out, &read) {
                        return failure;
                    }
                }
            }
        }
    }
}
