//! The delete storm: one DeleteRange of many keys while many watchers watch
//! other keys, and a probe keeps writing. The delete is one revision of
//! 100,000 events; matching them against the watchers must stay linear, and
//! applying them must not hold up anyone else's request for long.
//!
//! `bench delete-storm` loads the keys (128 puts per txn), opens the
//! watchers (on unrelated keys, spread over a few streams), starts the
//! probe (one put at a time, back to back), then times the delete and
//! reports the probe's worst latency while it ran.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct StormOptions {
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub endpoint: String,
    /// Keys deleted by the one DeleteRange.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Watches on unrelated keys while it runs.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
}

/// Watches per stream (a client library multiplexes watches this way).
const WATCHES_PER_STREAM: usize = 100;
const PUTS_PER_TXN: usize = 128;

pub async fn run(options: &StormOptions) -> Result<()> {
    let channel = Channel::from_shared(options.endpoint.clone())?.connect().await.context("connect")?;
    let mut kv = KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    let started = Instant::now();
    for chunk in (0..options.keys).collect::<Vec<_>>().chunks(PUTS_PER_TXN) {
        let success = chunk
            .iter()
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: format!("storm/{i:08}").into_bytes(),
                    value: vec![b'v'; 16],
                    ..Default::default()
                })),
            })
            .collect();
        kv.txn(TxnRequest { success, ..Default::default() }).await.context("load")?;
    }
    let loaded = started.elapsed();

    // The watchers: created, then left open (their streams stay alive).
    let mut streams = Vec::new();
    for s in 0..options.watchers.div_ceil(WATCHES_PER_STREAM) {
        let (tx, rx) = mpsc::channel(WATCHES_PER_STREAM + 1);
        let count = WATCHES_PER_STREAM.min(options.watchers - s * WATCHES_PER_STREAM);
        // Queued before the call: grpc-go (etcd) sends the response headers
        // the call waits for only with its first message.
        for w in 0..count {
            let key = format!("other/{s}/{w}").into_bytes();
            let create = WatchCreateRequest { key, ..Default::default() };
            tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await?;
        }
        let mut client = WatchClient::new(channel.clone());
        let mut responses = client.watch(ReceiverStream::new(rx)).await.context("watch")?.into_inner();
        for _ in 0..count {
            responses.message().await?.context("watch stream ended")?;
        }
        streams.push((tx, responses));
    }

    // The probe: back-to-back puts of one key, each timed.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut probe_kv = KvClient::new(channel.clone());
    let probe = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut count = 0u64;
        loop {
            let sent = Instant::now();
            let put = PutRequest { key: b"probe".to_vec(), value: b"p".to_vec(), ..Default::default() };
            tokio::select! {
                biased;
                _ = &mut stop_rx => return (worst, count),
                answer = probe_kv.put(put) => {
                    if answer.is_ok() {
                        worst = worst.max(sent.elapsed());
                        count += 1;
                    }
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            key: b"storm/".to_vec(),
            range_end: b"storm0".to_vec(),
            ..Default::default()
        })
        .await
        .context("delete")?
        .into_inner()
        .deleted;
    let delete_took = sent.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(());
    let (worst_probe, probes) = probe.await?;
    drop(streams);
    println!(
        "loaded {} keys in {loaded:.1?}; {} watchers; delete of {deleted} keys took {delete_took:.1?}; \
         worst probe put latency {worst_probe:.1?} over {probes} puts",
        options.keys, options.watchers
    );
    Ok(())
}
