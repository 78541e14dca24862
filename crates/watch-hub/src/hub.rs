//! The hub: synced watchers fed by `notify`, unsynced ones caught up from
//! history by a background thread.
//!
//! One mutex guards all state. `notify`, creating and cancelling watches and
//! each catch-up delivery run under it, which is what orders a watch's
//! `Created` before its first event and its `Canceled` after its last. The
//! catch-up thread reads history *outside* the lock, so a long replay never
//! holds up `notify` (and so the applier).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use keel_proto::mvccpb::Event;
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::history::{History, HistoryError};
use crate::metrics::{Counters, WatchMetrics};
use crate::{Delivery, Filters, KeyRange, WatchError, WatchSpec, STREAM_PROGRESS_ID};

/// How often unsynced watchers are retried when nothing wakes the catch-up
/// thread earlier (etcd: 100 ms).
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Watches one stream may hold at once. etcd sets no limit; this one only
/// stops a single client from growing a member's memory without bound (a
/// Kubernetes API server holds a few thousand on a stream).
pub const MAX_WATCHES_PER_STREAM: usize = 100_000;

/// At most this many revisions are replayed per catch-up round, which bounds
/// the memory of one round and the size of one delivery.
const SYNC_CHUNK_REVISIONS: i64 = 1000;

type StreamId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WatcherKey {
    stream: StreamId,
    id: i64,
}

pub(crate) struct Watcher {
    range: KeyRange,
    filters: Filters,
    /// Unsynced: the first revision not yet delivered. Synced: deliveries
    /// start at this revision (later than the current one for a watch that
    /// starts in the future); older values mean nothing.
    next_rev: i64,
    synced: bool,
    sender: mpsc::Sender<Delivery>,
    /// Events put on the stream's channel for this watcher (for the
    /// pending-events series when its stream closes). A plain add: the
    /// watcher is in hand wherever it is fed, under the hub lock.
    queued: u64,
}

pub(crate) struct StreamState {
    sender: mpsc::Sender<Delivery>,
    ids: HashSet<i64>,
    next_auto_id: i64,
    unsynced: usize,
    /// A stream-wide progress request waits for every watcher to sync.
    progress_pending: bool,
    /// Events queued for this stream's watchers that are gone (the live
    /// ones keep their own count, [`Watcher::queued`]).
    queued_by_removed: u64,
}

/// Synced watchers by the keys they cover. Watchers with the same range share
/// one group, so matching an event costs one lookup per distinct range, not
/// one per watcher (10,000 watchers on one prefix are one group).
#[derive(Default)]
struct SyncedIndex {
    /// Every key of every revision is looked up here: with a fast (still
    /// seeded) hash, a 100,000-key delete costs a few milliseconds.
    singles: HashMap<Vec<u8>, HashSet<WatcherKey>, foldhash::fast::RandomState>,
    ranges: HashMap<KeyRange, HashSet<WatcherKey>>,
}

impl SyncedIndex {
    fn insert(&mut self, key: WatcherKey, range: &KeyRange) {
        match range {
            KeyRange::Single(k) => self.singles.entry(k.clone()).or_default().insert(key),
            _ => self.ranges.entry(range.clone()).or_default().insert(key),
        };
    }

    fn remove(&mut self, key: WatcherKey, range: &KeyRange) {
        fn take<K: std::hash::Hash + Eq, S: std::hash::BuildHasher>(
            map: &mut HashMap<K, HashSet<WatcherKey>, S>,
            k: &K,
            key: WatcherKey,
        ) {
            if let Some(group) = map.get_mut(k) {
                group.remove(&key);
                if group.is_empty() {
                    map.remove(k);
                }
            }
        }
        match range {
            KeyRange::Single(k) => take(&mut self.singles, k, key),
            _ => take(&mut self.ranges, range, key),
        }
    }

    fn is_empty(&self) -> bool {
        self.singles.is_empty() && self.ranges.is_empty()
    }
}

pub(crate) struct HubState {
    /// The last revision passed to `notify`.
    revision: i64,
    next_stream: StreamId,
    streams: HashMap<StreamId, StreamState>,
    watchers: HashMap<WatcherKey, Watcher>,
    synced: SyncedIndex,
    unsynced: HashSet<WatcherKey>,
    stopped: bool,
}

impl HubState {
    /// Publishes the stream, watcher and slow-watcher counts for the series,
    /// which read them without this lock. Called, still under the lock,
    /// after anything that adds, removes, unsyncs or syncs a watcher or
    /// opens or closes a stream; never per delivery.
    fn publish_counts(&self, counters: &Counters) {
        counters.set_counts(self.streams.len(), self.watchers.len(), self.unsynced.len());
    }

    fn unsync(&mut self, key: WatcherKey, next_rev: i64) {
        let Some(w) = self.watchers.get_mut(&key) else { return };
        if !w.synced {
            return;
        }
        w.synced = false;
        w.next_rev = next_rev;
        self.synced.remove(key, &w.range);
        self.unsynced.insert(key);
        if let Some(stream) = self.streams.get_mut(&key.stream) {
            stream.unsynced += 1;
        }
    }

    fn mark_synced(&mut self, key: WatcherKey) {
        let Some(w) = self.watchers.get_mut(&key) else { return };
        w.synced = true;
        self.synced.insert(key, &w.range);
        self.unsynced.remove(&key);
        if let Some(stream) = self.streams.get_mut(&key.stream) {
            stream.unsynced -= 1;
        }
    }

    fn remove(&mut self, key: WatcherKey) -> bool {
        let Some(w) = self.watchers.remove(&key) else { return false };
        if let Some(stream) = self.streams.get_mut(&key.stream) {
            stream.queued_by_removed += w.queued;
        }
        if w.synced {
            self.synced.remove(key, &w.range);
        } else {
            self.unsynced.remove(&key);
            if let Some(stream) = self.streams.get_mut(&key.stream) {
                stream.unsynced -= 1;
            }
        }
        if let Some(stream) = self.streams.get_mut(&key.stream) {
            stream.ids.remove(&key.id);
        }
        true
    }

    /// Sends the stream-wide progress notifications that were waiting for
    /// their stream's watchers to catch up.
    fn flush_pending_progress(&mut self) {
        let revision = self.revision;
        for stream in self.streams.values_mut() {
            if stream.progress_pending && stream.unsynced == 0 {
                let progress = Delivery::Progress { watch_id: STREAM_PROGRESS_ID, revision };
                match stream.sender.try_send(progress) {
                    Ok(()) | Err(TrySendError::Closed(_)) => stream.progress_pending = false,
                    Err(TrySendError::Full(_)) => {}
                }
            }
        }
    }
}

/// The watchable store. Create with [`WatchHub::new`]; feed with
/// [`WatchHub::notify`]; stop its catch-up thread with [`WatchHub::stop`].
pub struct WatchHub {
    state: Mutex<HubState>,
    history: Arc<dyn History>,
    wake: Condvar,
    /// What the series read; shared with [`WatchHub::metrics`], outside the
    /// lock so that a scrape never takes it.
    counters: Arc<Counters>,
    metrics: WatchMetrics,
}

impl WatchHub {
    /// A hub over `history` whose last revision is `revision`, with its
    /// catch-up thread running.
    pub fn new(history: Arc<dyn History>, revision: i64) -> Arc<WatchHub> {
        let hub = WatchHub::without_thread(history, revision);
        let weak = Arc::downgrade(&hub);
        std::thread::Builder::new()
            .name("watch-sync".into())
            .spawn(move || catch_up_loop(weak))
            .expect("spawning the watch catch-up thread");
        hub
    }

    /// A hub whose unsynced watchers catch up only when its owner calls
    /// [`WatchHub::catch_up_round`] (a simulation steps it).
    pub fn without_thread(history: Arc<dyn History>, revision: i64) -> Arc<WatchHub> {
        let counters = Arc::new(Counters::default());
        Arc::new(WatchHub {
            state: Mutex::new(HubState {
                revision,
                next_stream: 0,
                streams: HashMap::new(),
                watchers: HashMap::new(),
                synced: SyncedIndex::default(),
                unsynced: HashSet::new(),
                stopped: false,
            }),
            history,
            wake: Condvar::new(),
            metrics: WatchMetrics::new(counters.clone()),
            counters,
        })
    }

    /// This hub's series (etcd's watch metrics), to register in the
    /// member's registry.
    pub fn metrics(&self) -> &WatchMetrics {
        &self.metrics
    }

    /// Stops the catch-up thread; watchers that are synced keep working.
    pub fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }

    /// The last revision notified.
    pub fn revision(&self) -> i64 {
        self.state.lock().revision
    }

    /// How many watches exist, and how many of them are catching up.
    pub fn watcher_counts(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.watchers.len(), st.unsynced.len())
    }

    /// Opens a stream whose deliveries arrive on the returned receiver, which
    /// buffers at most `buffer` of them; a watcher that finds it full falls
    /// back to catching up from history.
    ///
    /// Whoever hands the deliveries on to a client reports each one it takes
    /// with [`WatchStream::took`] (etcd's `ReportEventReceived`), for the
    /// events-sent and pending-events series; events a reader never reports
    /// count as pending until the stream closes, and never as sent.
    pub fn open_stream(self: &Arc<Self>, buffer: usize) -> (WatchStream, mpsc::Receiver<Delivery>) {
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        let mut st = self.state.lock();
        let id = st.next_stream;
        st.next_stream += 1;
        st.streams.insert(
            id,
            StreamState {
                sender: sender.clone(),
                ids: HashSet::new(),
                next_auto_id: 0,
                unsynced: 0,
                progress_pending: false,
                queued_by_removed: 0,
            },
        );
        st.publish_counts(&self.counters);
        drop(st);
        (WatchStream { hub: self.clone(), id, sender, taken: AtomicU64::new(0) }, receiver)
    }

    /// Revision `revision` made `events`. Call once per revision that changed
    /// keys, in revision order, after the revision is readable from the
    /// history. Never blocks on a watcher.
    pub fn notify(&self, revision: i64, events: Vec<Event>) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        debug_assert!(revision > st.revision, "notify({revision}) after {}", st.revision);
        st.revision = revision;
        if st.synced.is_empty() || events.is_empty() {
            return;
        }
        let mut fell_behind = Vec::new();
        // Matching stays linear in the revision's events (a delete of 100,000
        // keys is one revision): positions grouped by key in one pass, and a
        // key-sorted order that each range group searches instead of scans.
        if !st.synced.singles.is_empty() {
            // Only keys someone watches are grouped.
            let mut by_key: HashMap<&[u8], Vec<usize>> = HashMap::new();
            for (i, event) in events.iter().enumerate() {
                let key = event_key(event);
                if st.synced.singles.contains_key(key) {
                    by_key.entry(key).or_default().push(i);
                }
            }
            for (key, subset) in &by_key {
                if let Some(group) = st.synced.singles.get(*key) {
                    let targets = Targets { watchers: &mut st.watchers, queued: &self.counters.queued };
                    deliver(group, &events, None, subset, revision, targets, &mut fell_behind);
                }
            }
        }
        if !st.synced.ranges.is_empty() {
            // Shared whole with the watchers that take every event.
            let all: Arc<[Event]> = events.into();
            // A DeleteRange's events come in key order already.
            let in_order = all.windows(2).all(|pair| event_key(&pair[0]) <= event_key(&pair[1]));
            let mut sorted: Vec<usize> = (0..all.len()).collect();
            if !in_order {
                sorted.sort_by(|&a, &b| event_key(&all[a]).cmp(event_key(&all[b])).then(a.cmp(&b)));
            }
            for (range, group) in &st.synced.ranges {
                let first = sorted.partition_point(|&i| event_key(&all[i]) < range.start());
                let mut subset: Vec<usize> =
                    sorted[first..].iter().copied().take_while(|&i| range.contains(event_key(&all[i]))).collect();
                if !subset.is_empty() {
                    subset.sort_unstable();
                    let targets = Targets { watchers: &mut st.watchers, queued: &self.counters.queued };
                    deliver(group, &all, Some(&all), &subset, revision, targets, &mut fell_behind);
                }
            }
        }
        if !fell_behind.is_empty() {
            for key in fell_behind {
                st.unsync(key, revision);
            }
            st.publish_counts(&self.counters);
            self.wake.notify_one();
        }
    }

    /// The store was replaced wholesale (a snapshot from the leader) and is
    /// now at `revision`: every synced watcher replays what it missed from
    /// the new history, as a watcher that fell behind does.
    pub fn jump_to(&self, revision: i64) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let resume_at = st.revision + 1;
        let synced: Vec<WatcherKey> = st.watchers.iter().filter(|(_, w)| w.synced).map(|(key, _)| *key).collect();
        for key in synced {
            let next_rev = st.watchers[&key].next_rev.max(resume_at);
            st.unsync(key, next_rev);
        }
        st.revision = st.revision.max(revision);
        st.publish_counts(&self.counters);
        drop(guard);
        self.wake.notify_one();
    }

    /// One catch-up round; returns whether it delivered anything, so the
    /// caller knows whether to go on at once or wait. The catch-up thread
    /// runs these; a hub made [`WatchHub::without_thread`] needs its owner to.
    pub fn catch_up_round(&self) -> bool {
        let (from, to) = {
            let st = self.state.lock();
            let Some(from) = st.unsynced.iter().filter_map(|k| st.watchers.get(k)).map(|w| w.next_rev).min() else {
                return false;
            };
            (from, (st.revision + 1).min(from + SYNC_CHUNK_REVISIONS))
        };
        let compacted = self.history.compact_revision();
        let read =
            if from < compacted { Err(HistoryError::Compacted(compacted)) } else { self.history.events(from, to) };

        let mut guard = self.state.lock();
        let st = &mut *guard;
        let mut progressed = false;
        let keys: Vec<WatcherKey> = st.unsynced.iter().copied().collect();
        match read {
            Err(HistoryError::Compacted(compacted)) => {
                // etcd leaves the header revision of a compaction cancel unset.
                let revision = 0;
                for key in keys {
                    let w = &st.watchers[&key];
                    if w.next_rev >= compacted {
                        continue;
                    }
                    let cancel = Delivery::Canceled { watch_id: key.id, revision, compact_revision: compacted };
                    if w.sender.try_send(cancel).is_ok() {
                        st.remove(key);
                        progressed = true;
                    }
                }
            }
            Err(HistoryError::Storage(err)) => {
                tracing::warn!(%err, from, to, "watch catch-up cannot read history; retrying");
            }
            Ok(events) => {
                let mut shared: HashMap<(KeyRange, Filters, i64), Arc<[Event]>> = HashMap::new();
                for key in keys {
                    let w = st.watchers.get_mut(&key).expect("unsynced watchers exist");
                    // Watchers that started below `from` after this round's
                    // read began wait for the next round.
                    if w.next_rev < from {
                        continue;
                    }
                    if w.next_rev < to {
                        // A full buffer would refuse the delivery anyway:
                        // skip building it (with thousands of watchers behind,
                        // that copying is what costs).
                        if w.sender.capacity() == 0 {
                            continue;
                        }
                        // Watchers of one range, filters and position share one
                        // copy of their events (fan-out: thousands of them).
                        let mine = shared
                            .entry((w.range.clone(), w.filters, w.next_rev))
                            .or_insert_with(|| {
                                events
                                    .iter()
                                    .filter(|e| {
                                        event_revision(e) >= w.next_rev
                                            && w.range.contains(event_key(e))
                                            && w.filters.keeps(e)
                                    })
                                    .cloned()
                                    .collect::<Arc<[Event]>>()
                            })
                            .clone();
                        if !mine.is_empty() {
                            let events = mine.len() as u64;
                            let delivery = Delivery::Events { watch_id: key.id, revision: to - 1, events: mine };
                            match w.sender.try_send(delivery) {
                                Ok(()) => {
                                    w.queued += events;
                                    self.counters.queued.fetch_add(events, Ordering::Relaxed);
                                    progressed = true;
                                }
                                Err(TrySendError::Full(_)) => continue,
                                Err(TrySendError::Closed(_)) => continue,
                            }
                        }
                        w.next_rev = to;
                    }
                    if w.next_rev > st.revision {
                        st.mark_synced(key);
                        progressed = true;
                    }
                }
            }
        }
        st.flush_pending_progress();
        st.publish_counts(&self.counters);
        progressed
    }
}

fn catch_up_loop(hub: Weak<WatchHub>) {
    loop {
        let Some(hub) = hub.upgrade() else { return };
        if hub.catch_up_round() {
            continue;
        }
        let mut st = hub.state.lock();
        if st.stopped {
            return;
        }
        hub.wake.wait_for(&mut st, SYNC_INTERVAL);
        if st.stopped {
            return;
        }
    }
}

/// Where `notify` delivers: the watchers, and the hub's count of events
/// queued, for the pending-events series.
struct Targets<'s> {
    watchers: &'s mut HashMap<WatcherKey, Watcher>,
    queued: &'s AtomicU64,
}

/// Hands one revision's matching events to each watcher of a group. The
/// events each filter setting keeps are built once and shared; a watcher
/// that takes every event unfiltered shares `whole`, when there is one.
fn deliver(
    group: &HashSet<WatcherKey>,
    all: &[Event],
    whole: Option<&Arc<[Event]>>,
    subset: &[usize],
    revision: i64,
    Targets { watchers, queued }: Targets<'_>,
    fell_behind: &mut Vec<WatcherKey>,
) {
    let mut by_filters: HashMap<Filters, Arc<[Event]>> = HashMap::new();
    for key in group {
        let Some(w) = watchers.get_mut(key) else { continue };
        if w.next_rev > revision {
            continue;
        }
        let events = by_filters
            .entry(w.filters)
            .or_insert_with(|| match whole.filter(|_| subset.len() == all.len() && w.filters.is_empty()) {
                Some(whole) => whole.clone(),
                None => subset.iter().map(|&i| &all[i]).filter(|e| w.filters.keeps(e)).cloned().collect(),
            })
            .clone();
        if events.is_empty() {
            continue;
        }
        let count = events.len() as u64;
        match w.sender.try_send(Delivery::Events { watch_id: key.id, revision, events }) {
            // What the series cost a delivery: a plain add on the watcher
            // in hand, and one relaxed atomic add on a counter only the
            // holder of the hub lock writes (so its cache line stays with
            // the applier's core between scrapes). No lookup, no lock.
            Ok(()) => {
                w.queued += count;
                queued.fetch_add(count, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => fell_behind.push(*key),
            // The stream is closing; dropping its WatchStream removes it.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

fn event_key(event: &Event) -> &[u8] {
    event.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default()
}

fn event_revision(event: &Event) -> i64 {
    event.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or_default()
}

/// One client's stream of watches. Dropping it cancels them all.
pub struct WatchStream {
    hub: Arc<WatchHub>,
    id: StreamId,
    sender: mpsc::Sender<Delivery>,
    /// Events its reader reported taking ([`WatchStream::took`]).
    taken: AtomicU64,
}

impl WatchStream {
    /// Creates a watch; its [`Delivery::Created`] (or the refusal) is queued
    /// before any of its events. Waits while the stream's buffer is full.
    pub async fn watch(&self, spec: WatchSpec) -> Result<i64, WatchError> {
        let permit = self.sender.clone().reserve_owned().await.map_err(|_| WatchError::StreamClosed)?;
        let range = KeyRange::from_request(&spec.key, &spec.range_end);
        let spec = Arc::new(spec);
        let mut guard = self.hub.state.lock();
        let st = &mut *guard;
        let revision = st.revision;
        let stream = st.streams.get_mut(&self.id).ok_or(WatchError::StreamClosed)?;
        let chosen = range.and_then(|range| {
            if stream.ids.len() >= MAX_WATCHES_PER_STREAM {
                return Err(WatchError::TooManyWatches);
            }
            let id = if spec.watch_id != 0 {
                if stream.ids.contains(&spec.watch_id) {
                    return Err(WatchError::DuplicateId);
                }
                spec.watch_id
            } else {
                while stream.ids.contains(&stream.next_auto_id) {
                    stream.next_auto_id += 1;
                }
                stream.next_auto_id += 1;
                stream.next_auto_id - 1
            };
            Ok((id, range))
        });
        let (id, range) = match chosen {
            Ok(chosen) => chosen,
            Err(error) => {
                permit.send(Delivery::Created { watch_id: -1, revision, spec, error: Some(error.clone()) });
                return Err(error);
            }
        };
        stream.ids.insert(id);
        let key = WatcherKey { stream: self.id, id };
        let start = spec.start_revision;
        let synced = start == 0 || start > revision;
        let watcher = Watcher {
            range,
            filters: spec.filters,
            next_rev: if synced { start.max(revision + 1) } else { start },
            synced,
            sender: self.sender.clone(),
            queued: 0,
        };
        if synced {
            st.synced.insert(key, &watcher.range);
        } else {
            stream.unsynced += 1;
            st.unsynced.insert(key);
        }
        st.watchers.insert(key, watcher);
        permit.send(Delivery::Created { watch_id: id, revision, spec, error: None });
        st.publish_counts(&self.hub.counters);
        drop(guard);
        if !synced {
            self.hub.wake.notify_one();
        }
        Ok(id)
    }

    /// Cancels a watch; its [`Delivery::Canceled`] follows its last event.
    /// Returns false (and queues nothing) for an unknown id.
    pub async fn cancel(&self, watch_id: i64) -> bool {
        let Ok(permit) = self.sender.clone().reserve_owned().await else { return false };
        let mut st = self.hub.state.lock();
        let revision = st.revision;
        if !st.remove(WatcherKey { stream: self.id, id: watch_id }) {
            return false;
        }
        permit.send(Delivery::Canceled { watch_id, revision, compact_revision: 0 });
        st.publish_counts(&self.hub.counters);
        true
    }

    /// Queues a progress notification for one watch if it is synced (an
    /// unsynced watch's next events will tell more). Skipped when the buffer
    /// is full: progress is advisory.
    pub fn request_progress(&self, watch_id: i64) {
        let mut guard = self.hub.state.lock();
        let st = &mut *guard;
        if let Some(w) = st.watchers.get(&WatcherKey { stream: self.id, id: watch_id }) {
            if w.synced {
                let _ = w.sender.try_send(Delivery::Progress { watch_id, revision: st.revision });
            }
        }
    }

    /// Queues one stream-wide progress notification ([`STREAM_PROGRESS_ID`])
    /// once every watch of the stream is synced: at once if they are, or as
    /// soon as the last one catches up. Nothing for a stream with no watches.
    pub fn request_progress_all(&self) {
        let mut guard = self.hub.state.lock();
        let st = &mut *guard;
        let Some(stream) = st.streams.get_mut(&self.id) else { return };
        if stream.ids.is_empty() {
            return;
        }
        stream.progress_pending = true;
        st.flush_pending_progress();
    }

    /// The hub's current revision.
    pub fn revision(&self) -> i64 {
        self.hub.revision()
    }

    /// The reader of this stream's deliveries took `delivery` off the
    /// channel to send it (etcd's `ReportEventReceived`): its events count
    /// as sent and stop counting as pending. Returns it, so a reader writes
    /// `deliver(stream.took(delivery))`. Costs the reader two relaxed atomic
    /// adds for a delivery of events, nothing for the others.
    pub fn took(&self, delivery: Delivery) -> Delivery {
        if let Delivery::Events { events, .. } = &delivery {
            let events = events.len() as u64;
            self.taken.fetch_add(events, Ordering::Relaxed);
            self.hub.counters.taken(events);
        }
        delivery
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut guard = self.hub.state.lock();
        let st = &mut *guard;
        let Some(stream) = st.streams.remove(&self.id) else { return };
        // Nothing is queued for the stream from here on, and its reader
        // reports through `self`: what it never took stays unread.
        let mut queued = stream.queued_by_removed;
        for id in stream.ids {
            let key = WatcherKey { stream: self.id, id };
            if let Some(w) = st.watchers.remove(&key) {
                queued += w.queued;
                if w.synced {
                    st.synced.remove(key, &w.range);
                } else {
                    st.unsynced.remove(&key);
                }
            }
        }
        self.hub.counters.closed(queued, *self.taken.get_mut());
        st.publish_counts(&self.hub.counters);
    }
}

#[cfg(test)]
mod tests;
