//! Many watchers on random ranges and start revisions, with slow and fast
//! readers, against writes made while they watch: each watcher's received
//! sequence must be exactly the history's events for its range from its
//! start, each once, in order, never a revision split across deliveries.
//! Prints the seed; set WATCH_SEED to replay one.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
use keel_watch_hub::{Delivery, History, KeyRange, MemHistory, WatchHub, WatchSpec};
use rand::{rngs::StdRng, Rng, SeedableRng};

const KEYS: &[&str] = &["a", "b", "ba", "bb", "c", "d", "e"];
const REVISIONS: i64 = 600;
const WATCHERS: usize = 40;

fn random_event(rng: &mut StdRng, rev: i64, key: &str) -> Event {
    let kind = if rng.gen_bool(0.7) { EventType::Put } else { EventType::Delete };
    Event {
        r#type: kind as i32,
        kv: Some(KeyValue { key: key.into(), mod_revision: rev, value: vec![rng.gen()], ..Default::default() }),
        prev_kv: None,
    }
}

fn random_range(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let key = KEYS[rng.gen_range(0..KEYS.len())].as_bytes().to_vec();
    match rng.gen_range(0..3) {
        0 => (key, Vec::new()),
        1 => (key, vec![0]),
        _ => {
            let end = KEYS[rng.gen_range(0..KEYS.len())].as_bytes().to_vec();
            if key < end {
                (key, end)
            } else {
                (end.clone(), [end, vec![0]].concat())
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_exactly_its_history() {
    let seed: u64 = std::env::var("WATCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("WATCH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let history = Arc::new(MemHistory::new());
    let hub = WatchHub::new(history.clone() as Arc<dyn History>, 1);
    let mut all_events: Vec<Event> = Vec::new();
    let mut readers = Vec::new();
    let mut revision = 1;
    for rev_step in 0..REVISIONS {
        // Watchers join while writes go on, some from the past.
        if rev_step % (REVISIONS / WATCHERS as i64) == 0 {
            let (key, end) = random_range(&mut rng);
            let start = if rng.gen_bool(0.5) { 0 } else { rng.gen_range(1..=revision + 3) };
            let buffer = rng.gen_range(1..4);
            let slow = rng.gen_bool(0.5);
            let (stream, mut rx) = hub.open_stream(buffer);
            let mut spec = WatchSpec::new(key.clone(), end.clone()).from_revision(start);
            spec.filters.no_delete = rng.gen_bool(0.2);
            let no_delete = spec.filters.no_delete;
            stream.watch(spec).await.unwrap();
            let first = if start == 0 { revision + 1 } else { start };
            let range = KeyRange::from_request(&key, &end).unwrap();
            readers.push(tokio::spawn(async move {
                let _stream = stream;
                let mut got: Vec<(i64, Vec<u8>)> = Vec::new();
                let mut last_delivery_rev = 0;
                loop {
                    let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await else { break };
                    if slow {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    if let Delivery::Events { events, .. } = d {
                        let first_rev = events[0].kv.as_ref().unwrap().mod_revision;
                        assert!(first_rev > last_delivery_rev, "a revision split across deliveries or repeated");
                        for e in events.iter() {
                            let kv = e.kv.as_ref().unwrap();
                            got.push((kv.mod_revision, kv.key.clone()));
                            last_delivery_rev = kv.mod_revision;
                        }
                    }
                }
                (range, first, no_delete, got)
            }));
        }
        revision += 1;
        let n = rng.gen_range(1..=3);
        let mut keys: Vec<&str> = Vec::new();
        while keys.len() < n {
            let k = KEYS[rng.gen_range(0..KEYS.len())];
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let events: Vec<Event> = keys.iter().map(|k| random_event(&mut rng, revision, k)).collect();
        all_events.extend(events.iter().cloned());
        history.record(revision, events.clone());
        hub.notify(revision, events);
        if rng.gen_bool(0.05) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for reader in readers {
        let (range, first, no_delete, got) = reader.await.unwrap();
        let want: Vec<(i64, Vec<u8>)> = all_events
            .iter()
            .filter(|e| {
                let kv = e.kv.as_ref().unwrap();
                kv.mod_revision >= first
                    && range.contains(&kv.key)
                    && !(no_delete && e.r#type == EventType::Delete as i32)
            })
            .map(|e| (e.kv.as_ref().unwrap().mod_revision, e.kv.as_ref().unwrap().key.clone()))
            .collect();
        assert_eq!(got, want, "watcher on {range:?} from {first} (seed {seed})");
    }
    hub.stop();
}
