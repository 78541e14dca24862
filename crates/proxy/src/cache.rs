//! The range cache (`--cache-prefix`, `--cache-max-bytes`): Range answers
//! on the cached prefixes, kept only while an upstream watch proves them
//! current, so writes made anywhere in the cluster invalidate them (etcd's
//! proxy only sees writes made through itself: etcd#14665).
//!
//! One *view* per (caller identity, cached prefix) holds the answers given
//! to that identity and one upstream watch on the whole prefix, opened with
//! the identity's token (so the cluster checks it may read the prefix, and
//! answers are never shared between callers). An answer is stored under
//! the whole request (every field but `serializable`), so limits, sorts,
//! filters, `keys_only` and `count_only` need no logic of their own: each
//! depends only on the keys of its range. Requests at a past `revision`
//! are not cached.
//!
//! Invariant: a view answers from an entry only when its watch is
//! connected and has delivered every event up to `delivered`, the entry's
//! answer is from a revision `<= delivered`, and no event in between
//! touched the entry's range (any such event removes the entry). The
//! answer is then the state at `delivered`, which is the header revision
//! a hit carries. Consequences, each enforced below:
//! - an answer the cluster gave at revision `r` may only be stored when
//!   the events in `(r, delivered]` are known (`log`) and miss its range;
//!   none may be stored before the watch is created;
//! - a watch that breaks stops every hit of its view and drops its entries
//!   until the resumed watch (gap-free, `watch/upstream.rs`) delivers
//!   again; a cancelled watch (compaction, a refusal) drops the view;
//! - a write through this proxy at revision `w` on a cached prefix holds
//!   that prefix's hits back until its watch has delivered `w`, so a
//!   caller reads its own writes through the proxy.
//!
//! Auth: etcd refuses every request made with a token issued before any
//! auth change (ErrAuthOldRevision), an expired token, and, once auth is
//! on, anonymous requests; so one successful upstream call of an identity
//! proves its token as current as a new one. A hit needs such a call
//! within [`AUTH_RECHECK`] (a miss, or a count-only read made for that
//! purpose); an auth error, or an auth or membership change through the
//! proxy, drops the identity's views (the latter: all views).
//!
//! Lock order: `Cache::store` alone; never held across an await.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{request_op, RangeRequest, RangeResponse, RequestOp, TxnRequest};
use keel_proto::mvccpb::Event;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tonic::{Code, Request, Response, Status};

use crate::namespace::{prefix_end, Namespace};
use crate::services::Forward;
use crate::watch::{Note, Sink, Spec};
use crate::Shared;

/// How long one successful upstream call vouches for an identity's token.
pub(crate) const AUTH_RECHECK: Duration = Duration::from_secs(1);
/// How long a linearizable read waits for the watch to reach the
/// revision the cluster named, before it is forwarded instead.
const LINEARIZABLE_WAIT: Duration = Duration::from_millis(500);
/// A progress request is repeated this often while waiting (the watch's
/// member may be behind the one that answered).
const PROGRESS_RETRY: Duration = Duration::from_millis(50);
/// Events remembered for answers that arrive from before `delivered`.
const LOG_EVENTS: usize = 4096;
/// A view unused this long is closed (its watch with it).
const VIEW_IDLE: Duration = Duration::from_secs(60);
/// At most this many views (identities × prefixes); past it, requests are
/// forwarded uncached.
const MAX_VIEWS: usize = 1024;
/// A prefix whose watch the cluster refused (or compacted away) for an
/// identity is not tried again for this long.
const REFUSAL_COOLDOWN: Duration = Duration::from_secs(10);
/// Bookkeeping counted per entry besides its request and answer.
const ENTRY_OVERHEAD: usize = 128;

/// Who a view is for: the caller's token (`None`: anonymous) and the
/// index of the cached prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ViewKey {
    identity: Option<Vec<u8>>,
    prefix: usize,
}

/// What a view shares with its watch task and with waiting readers.
pub(crate) struct Signals {
    /// The view's `delivered`, for readers waiting for a revision.
    delivered: watch::Sender<i64>,
    /// Asks the watch for a progress response.
    progress: Arc<Notify>,
    task: Mutex<Option<AbortHandle>>,
}

impl Signals {
    fn new() -> Arc<Signals> {
        Arc::new(Signals {
            delivered: watch::Sender::new(0),
            progress: Arc::new(Notify::new()),
            task: Mutex::new(None),
        })
    }

    fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

struct View {
    /// Distinguishes this view from a later one with the same key, whose
    /// watch must not be fed by this one's task.
    id: u64,
    signals: Arc<Signals>,
    /// The watch told its start revision.
    created: bool,
    /// The watch's stream is up (false between a break and the resumed
    /// stream's first news).
    synced: bool,
    /// Every event of the prefix up to here has been applied.
    delivered: i64,
    /// Writes through this proxy: no hit before `delivered` reaches it.
    barrier: i64,
    /// Events after `log_floor`, up to `delivered`: (revision, key).
    log: VecDeque<(i64, Vec<u8>)>,
    log_floor: i64,
    entries: HashMap<Vec<u8>, Entry>,
    /// Single-key entries by key, for invalidation.
    singles: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
    /// Entries of more than one key (few, scanned per event).
    ranges: HashSet<Vec<u8>>,
    auth_checked: Option<Instant>,
    last_used: Instant,
}

struct Entry {
    key: Vec<u8>,
    range_end: Vec<u8>,
    response: Arc<RangeResponse>,
    revision: i64,
    bytes: usize,
    tick: u64,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Valid at this revision (the view's `delivered`), which the
    /// header of the answer given must say.
    Hit(Arc<RangeResponse>, i64),
    /// An entry, but the watch has not delivered far enough yet.
    Behind,
    Miss,
}

/// The cache's state: pure, no I/O, so its invariants are tested without
/// a cluster.
pub(crate) struct Store {
    max_bytes: usize,
    bytes: usize,
    tick: u64,
    views: HashMap<ViewKey, View>,
    /// Least recently used first: (tick) -> entry.
    lru: BTreeMap<u64, (ViewKey, Vec<u8>)>,
    refused: HashMap<ViewKey, Instant>,
    entries: usize,
}

/// Whether every key of `[key, range_end)` starts with `prefix` (etcd's
/// range encoding: empty end one key, `\0` every key from `key` on).
fn within(prefix: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if !key.starts_with(prefix) {
        return false;
    }
    let limit = prefix_end(prefix);
    match range_end {
        [] => true,
        [0] => limit == [0],
        end => limit == [0] || end <= limit.as_slice(),
    }
}

/// Whether `key` lies in `[start, end)`.
fn contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// Whether `[start, end)` shares a key with everything under `prefix`.
fn overlaps(prefix: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        return start.starts_with(prefix);
    }
    let limit = prefix_end(prefix);
    let starts_before_limit = limit == [0] || start < limit.as_slice();
    let ends_after_prefix = end == [0] || end > prefix;
    starts_before_limit && ends_after_prefix
}

impl Store {
    pub(crate) fn new(max_bytes: usize) -> Store {
        Store {
            max_bytes,
            bytes: 0,
            tick: 0,
            views: HashMap::new(),
            lru: BTreeMap::new(),
            refused: HashMap::new(),
            entries: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn view(&mut self, key: &ViewKey, id: u64) -> Option<&mut View> {
        self.views.get_mut(key).filter(|view| view.id == id)
    }

    /// Opens a view; `None` when there are too many, or its watch was
    /// refused lately.
    fn open(&mut self, key: &ViewKey, id: u64, signals: Arc<Signals>, now: Instant) -> bool {
        if self.views.len() >= MAX_VIEWS || self.refused.get(key).is_some_and(|until| now < *until) {
            return false;
        }
        self.views.insert(
            key.clone(),
            View {
                id,
                signals,
                created: false,
                synced: false,
                delivered: 0,
                barrier: 0,
                log: VecDeque::new(),
                log_floor: 0,
                entries: HashMap::new(),
                singles: HashMap::new(),
                ranges: HashSet::new(),
                auth_checked: None,
                last_used: now,
            },
        );
        true
    }

    fn remove_entry(&mut self, key: &ViewKey, request: &[u8]) {
        let Some(view) = self.views.get_mut(key) else { return };
        let Some(entry) = view.entries.remove(request) else { return };
        if entry.range_end.is_empty() {
            if let Some(set) = view.singles.get_mut(&entry.key) {
                set.remove(request);
                if set.is_empty() {
                    view.singles.remove(&entry.key);
                }
            }
        } else {
            view.ranges.remove(request);
        }
        self.lru.remove(&entry.tick);
        self.bytes -= entry.bytes;
        self.entries -= 1;
    }

    fn clear_entries(&mut self, key: &ViewKey) {
        let requests: Vec<Vec<u8>> =
            self.views.get(key).map(|view| view.entries.keys().cloned().collect()).unwrap_or_default();
        for request in requests {
            self.remove_entry(key, &request);
        }
    }

    /// Drops a view and its entries; returns its signals to stop its task.
    fn close(&mut self, key: &ViewKey) -> Option<Arc<Signals>> {
        self.clear_entries(key);
        self.views.remove(key).map(|view| view.signals)
    }

    /// Drops every view of `identity`.
    fn close_identity(&mut self, identity: &Option<Vec<u8>>) -> Vec<Arc<Signals>> {
        let keys: Vec<ViewKey> = self.views.keys().filter(|k| &k.identity == identity).cloned().collect();
        keys.iter().filter_map(|key| self.close(key)).collect()
    }

    fn close_all(&mut self) -> Vec<Arc<Signals>> {
        let keys: Vec<ViewKey> = self.views.keys().cloned().collect();
        keys.iter().filter_map(|key| self.close(key)).collect()
    }

    /// A view's watch is created at `revision`: what it delivers starts
    /// after it.
    fn created(&mut self, key: &ViewKey, id: u64, revision: i64) -> bool {
        let Some(view) = self.view(key, id) else { return false };
        view.created = true;
        view.synced = true;
        view.delivered = revision;
        view.log_floor = revision;
        view.signals.delivered.send_replace(revision);
        true
    }

    /// Events of one or more whole revisions, in order.
    fn events(&mut self, key: &ViewKey, id: u64, events: &[Event]) -> bool {
        let Some(view) = self.view(key, id) else { return false };
        let mut stale = HashSet::new();
        let mut last = view.delivered;
        for kv in events.iter().filter_map(|event| event.kv.as_ref()) {
            if let Some(requests) = view.singles.get(&kv.key) {
                stale.extend(requests.iter().cloned());
            }
            for request in &view.ranges {
                let entry = &view.entries[request];
                if contains(&entry.key, &entry.range_end, &kv.key) {
                    stale.insert(request.clone());
                }
            }
            view.log.push_back((kv.mod_revision, kv.key.clone()));
            last = last.max(kv.mod_revision);
        }
        while view.log.len() > LOG_EVENTS {
            if let Some((revision, _)) = view.log.pop_front() {
                view.log_floor = view.log_floor.max(revision);
            }
        }
        view.delivered = last;
        view.synced = true;
        view.signals.delivered.send_replace(last);
        for request in stale {
            self.remove_entry(key, &request);
        }
        true
    }

    /// Nothing more of the prefix up to `revision`.
    fn progress(&mut self, key: &ViewKey, id: u64, revision: i64) -> bool {
        let Some(view) = self.view(key, id) else { return false };
        view.synced = true;
        if revision > view.delivered {
            view.delivered = revision;
            view.signals.delivered.send_replace(revision);
        }
        true
    }

    /// The watch's stream broke; it resumes from `delivered + 1`.
    fn interrupted(&mut self, key: &ViewKey, id: u64) {
        let Some(view) = self.view(key, id) else { return };
        view.synced = false;
        self.clear_entries(key);
    }

    /// A write through the proxy reached revision `revision`, on
    /// `[start, end)` (upstream keys), or on every key with `None`.
    fn written(&mut self, prefixes: &[Vec<u8>], range: Option<(&[u8], &[u8])>, revision: i64) {
        for (key, view) in self.views.iter_mut() {
            let touched = match range {
                None => true,
                Some((start, end)) => overlaps(&prefixes[key.prefix], start, end),
            };
            if touched {
                view.barrier = view.barrier.max(revision);
            }
        }
    }

    /// A successful upstream call of this view's identity.
    fn auth_checked(&mut self, key: &ViewKey, now: Instant) {
        if let Some(view) = self.views.get_mut(key) {
            view.auth_checked = Some(now);
        }
    }

    fn auth_fresh(&self, key: &ViewKey, now: Instant) -> bool {
        self.views
            .get(key)
            .and_then(|view| view.auth_checked)
            .is_some_and(|checked| now.saturating_duration_since(checked) < AUTH_RECHECK)
    }

    fn has_entry(&self, key: &ViewKey, request: &[u8]) -> bool {
        self.views.get(key).is_some_and(|view| view.entries.contains_key(request))
    }

    /// The answer for `request`, if its view can vouch for it at a
    /// revision of at least `need`.
    pub(crate) fn lookup(&mut self, key: &ViewKey, request: &[u8], need: i64, now: Instant) -> Lookup {
        self.tick += 1;
        let tick = self.tick;
        let Some(view) = self.views.get_mut(key) else { return Lookup::Miss };
        view.last_used = now;
        let delivered = view.delivered;
        let ready = view.synced && delivered >= view.barrier && delivered >= need;
        let Some(entry) = view.entries.get_mut(request) else { return Lookup::Miss };
        if !ready || entry.revision > delivered {
            return Lookup::Behind;
        }
        let old = std::mem::replace(&mut entry.tick, tick);
        let response = entry.response.clone();
        self.lru.remove(&old);
        self.lru.insert(tick, (key.clone(), request.to_vec()));
        Lookup::Hit(response, delivered)
    }

    /// Stores the cluster's answer to `request` on `[start, end)`
    /// (upstream keys), if the view can keep it current. Returns whether
    /// it was stored.
    pub(crate) fn insert(
        &mut self,
        key: &ViewKey,
        request: Vec<u8>,
        start: &[u8],
        end: &[u8],
        response: RangeResponse,
        now: Instant,
    ) -> bool {
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        let bytes = ENTRY_OVERHEAD + request.len() * 2 + response.encoded_len();
        if bytes > self.max_bytes {
            return false;
        }
        let Some(view) = self.views.get_mut(key) else { return false };
        view.last_used = now;
        if !view.created {
            return false;
        }
        if revision < view.delivered {
            // Events after the answer were applied before it came: it may
            // be stored only if none of them touched its range.
            if view.log_floor > revision {
                return false;
            }
            let touched = view.log.iter().any(|(r, k)| *r > revision && contains(start, end, k));
            if touched {
                return false;
            }
        }
        self.remove_entry(key, &request);
        while self.bytes + bytes > self.max_bytes {
            let Some((tick, (victim_view, victim))) = self.lru.first_key_value().map(|(t, e)| (*t, e.clone())) else {
                break;
            };
            self.remove_entry(&victim_view, &victim);
            // Removing the entry removes its tick; an orphan tick goes too.
            self.lru.remove(&tick);
        }
        self.tick += 1;
        let tick = self.tick;
        let Some(view) = self.views.get_mut(key) else { return false };
        if end.is_empty() {
            view.singles.entry(start.to_vec()).or_default().insert(request.clone());
        } else {
            view.ranges.insert(request.clone());
        }
        let entry =
            Entry { key: start.to_vec(), range_end: end.to_vec(), response: Arc::new(response), revision, bytes, tick };
        view.entries.insert(request.clone(), entry);
        self.lru.insert(tick, (key.clone(), request));
        self.bytes += bytes;
        self.entries += 1;
        true
    }

    /// Views unused since `VIEW_IDLE` before `now`; refusals that ran out.
    fn idle(&mut self, now: Instant) -> Vec<Arc<Signals>> {
        self.refused.retain(|_, until| now < *until);
        let keys: Vec<ViewKey> = self
            .views
            .iter()
            .filter(|(_, view)| now.saturating_duration_since(view.last_used) >= VIEW_IDLE)
            .map(|(key, _)| key.clone())
            .collect();
        keys.iter().filter_map(|key| self.close(key)).collect()
    }
}

/// The cache of one proxy: the cached prefixes (upstream keys) and the
/// store.
pub(crate) struct Cache {
    /// `--cache-prefix` values with the namespace applied.
    prefixes: Vec<Vec<u8>>,
    store: Mutex<Store>,
    next_view: AtomicU64,
    hits: prometheus::IntGauge,
    misses: prometheus::IntGauge,
    keys: prometheus::IntGauge,
    bytes: prometheus::IntGauge,
}

/// How a read reached the cache: the parts of its request that matter.
struct Read {
    view: ViewKey,
    /// The request, `serializable` cleared, encoded: the entry's name.
    name: Vec<u8>,
    start: Vec<u8>,
    end: Vec<u8>,
}

impl Cache {
    pub(crate) fn new(
        prefixes: &[Vec<u8>],
        namespace: &Namespace,
        max_bytes: usize,
        metrics: &crate::metrics::Metrics,
    ) -> Cache {
        Cache {
            prefixes: prefixes.iter().map(|p| namespace.key(p)).collect(),
            store: Mutex::new(Store::new(max_bytes)),
            next_view: AtomicU64::new(1),
            hits: metrics.cache_hits.clone(),
            misses: metrics.cache_misses.clone(),
            keys: metrics.cache_keys.clone(),
            bytes: metrics.cache_bytes.clone(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.lock();
        let out = f(&mut store);
        self.keys.set(store.len() as i64);
        self.bytes.set(store.bytes() as i64);
        out
    }

    fn stop_all(stopped: Vec<Arc<Signals>>) {
        stopped.iter().for_each(|signals| signals.stop());
    }

    /// Everything cached goes, every view's watch stopped: after auth or
    /// membership changes made through the proxy, and on shutdown.
    pub(crate) fn clear(&self) {
        Cache::stop_all(self.with(Store::close_all));
    }

    /// Closes views nobody used lately; run every few seconds.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        Cache::stop_all(self.with(|store| store.idle(now)));
    }

    /// A write through the proxy answered at `revision`, on `[key, end)`
    /// as the client named it.
    pub(crate) fn written(&self, namespace: &Namespace, key: &[u8], end: &[u8], revision: i64) {
        let (start, end) = (namespace.key(key), namespace.range_end(end));
        self.with(|store| store.written(&self.prefixes, Some((&start, &end)), revision));
    }

    /// A write through the proxy that may touch any key (a lease revoke
    /// deletes its keys) answered at `revision`.
    pub(crate) fn written_anywhere(&self, revision: i64) {
        self.with(|store| store.written(&self.prefixes, None, revision));
    }

    /// Every write of a txn, both branches and nested txns, at `revision`.
    pub(crate) fn written_txn(&self, namespace: &Namespace, txn: &TxnRequest, revision: i64) {
        fn walk(cache: &Cache, namespace: &Namespace, ops: &[RequestOp], revision: i64) {
            for op in ops {
                match &op.request {
                    Some(request_op::Request::RequestPut(put)) => cache.written(namespace, &put.key, &[], revision),
                    Some(request_op::Request::RequestDeleteRange(delete)) => {
                        cache.written(namespace, &delete.key, &delete.range_end, revision)
                    }
                    Some(request_op::Request::RequestTxn(txn)) => {
                        walk(cache, namespace, &txn.success, revision);
                        walk(cache, namespace, &txn.failure, revision);
                    }
                    Some(request_op::Request::RequestRange(_)) | None => {}
                }
            }
        }
        walk(self, namespace, &txn.success, revision);
        walk(self, namespace, &txn.failure, revision);
    }

    /// The read as the cache knows it, when it lies in a cached prefix
    /// and may be cached at all.
    fn read(&self, shared: &Shared, request: &Request<RangeRequest>) -> Option<Read> {
        let range = request.get_ref();
        if range.revision != 0 {
            return None;
        }
        let metadata = request.metadata();
        let identity = match metadata.get("token") {
            Some(token) => Some(token.as_bytes().to_vec()),
            // A credential the proxy's watches would not carry: uncached.
            None if metadata.contains_key("authorization") => return None,
            None => None,
        };
        let start = shared.namespace.key(&range.key);
        let end = shared.namespace.range_end(&range.range_end);
        let prefix = self.prefixes.iter().position(|p| within(p, &start, &end))?;
        let name = RangeRequest { serializable: false, ..range.clone() }.encode_to_vec();
        Some(Read { view: ViewKey { identity, prefix }, name, start, end })
    }

    /// The view for `key`, opened (its watch started) if needed; false
    /// when none may be opened.
    fn ensure_view(&self, shared: &Arc<Shared>, key: &ViewKey) -> bool {
        if self.store.lock().views.contains_key(key) {
            return true;
        }
        let now = Instant::now();
        let id = self.next_view.fetch_add(1, Ordering::Relaxed);
        let signals = Signals::new();
        // Some(new view?), None: none may be opened.
        let opened = self.with(|store| {
            if store.views.contains_key(key) {
                Some(false)
            } else {
                store.open(key, id, signals.clone(), now).then_some(true)
            }
        });
        match opened {
            None => false,
            Some(false) => true,
            Some(true) => {
                let prefix = &self.prefixes[key.prefix];
                let spec = Spec {
                    // The smallest key stands for "every key" (etcd
                    // refuses an empty one).
                    key: if prefix.is_empty() { vec![0] } else { prefix.clone() },
                    range_end: prefix_end(prefix),
                    filters: Vec::new(),
                    prev_kv: false,
                    identity: key.identity.clone(),
                };
                let sink =
                    CacheSink { shared: shared.clone(), view: key.clone(), id, progress: signals.progress.clone() };
                let task = tokio::spawn(crate::watch::run(shared.clone(), Arc::new(spec), 0, false, sink));
                *signals.task.lock() = Some(task.abort_handle());
                // The view may have been closed before the task was set.
                if self.store.lock().views.get(key).is_none_or(|view| view.id != id) {
                    signals.stop();
                }
                true
            }
        }
    }

    /// An error from the cluster for this identity: an auth error drops
    /// all its views.
    fn failed(&self, identity: &Option<Vec<u8>>, status: &Status) {
        if auth_error(status) {
            Cache::stop_all(self.with(|store| store.close_identity(identity)));
        }
    }

    /// Waits until the view has delivered `revision`, asking its watch
    /// for progress; false after [`LINEARIZABLE_WAIT`].
    async fn reach(&self, key: &ViewKey, revision: i64) -> bool {
        let Some(signals) = self.store.lock().views.get(key).map(|view| view.signals.clone()) else { return false };
        let mut delivered = signals.delivered.subscribe();
        let deadline = tokio::time::Instant::now() + LINEARIZABLE_WAIT;
        loop {
            if *delivered.borrow_and_update() >= revision {
                return true;
            }
            signals.progress.notify_one();
            let wait = PROGRESS_RETRY.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if wait.is_zero() {
                return false;
            }
            // The sender lives as long as `signals`: changed() cannot fail.
            let _ = tokio::time::timeout(wait, delivered.changed()).await;
        }
    }

    fn poke(&self, key: &ViewKey) {
        if let Some(view) = self.store.lock().views.get(key) {
            view.signals.progress.notify_one();
        }
    }
}

/// etcd's auth refusals: permission denied, an invalid or old token, a
/// missing user.
fn auth_error(status: &Status) -> bool {
    matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated)
        || status.message().contains("auth")
        || status.message().contains("user name")
}

/// A Range through the proxy, from the cache when it can vouch for the
/// answer, else forwarded (and its answer cached).
pub(crate) async fn range(
    forward: &Forward,
    request: Request<RangeRequest>,
) -> Result<Response<RangeResponse>, Status> {
    let shared = &forward.0;
    let Some(cache) = shared.cache.as_ref() else { return forward.forward_range(request).await };
    let Some(read) = cache.read(shared, &request) else { return forward.forward_range(request).await };
    if !cache.ensure_view(shared, &read.view) {
        cache.misses.inc();
        return forward.forward_range(request).await;
    }
    let linearizable = !request.get_ref().serializable;
    let has_entry = cache.store.lock().has_entry(&read.view, &read.name);
    if has_entry {
        let auth_fresh = cache.store.lock().auth_fresh(&read.view, Instant::now());
        let need = if linearizable || !auth_fresh {
            // One count-only read tells the revision a linearizable
            // answer must reach, and proves the caller's token current.
            let check = RangeRequest {
                key: request.get_ref().key.clone(),
                range_end: request.get_ref().range_end.clone(),
                limit: 1,
                count_only: true,
                serializable: !linearizable,
                ..Default::default()
            };
            let mut check = Request::new(check);
            *check.metadata_mut() = request.metadata().clone();
            // The token was good when the check was sent, at least.
            let asked = Instant::now();
            let answer = match forward.forward_range(check).await {
                Ok(answer) => answer,
                Err(status) => {
                    cache.failed(&read.view.identity, &status);
                    return Err(status);
                }
            };
            cache.with(|store| store.auth_checked(&read.view, asked));
            let revision = answer.get_ref().header.as_ref().map_or(0, |h| h.revision);
            if linearizable {
                // Past the wait the lookup finds the view behind and the
                // read is forwarded.
                cache.reach(&read.view, revision).await;
                revision
            } else {
                0
            }
        } else {
            0
        };
        let found = cache.with(|store| store.lookup(&read.view, &read.name, need, Instant::now()));
        match found {
            Lookup::Hit(response, revision) => {
                cache.hits.inc();
                // Copied outside the lock: answers may be large.
                let mut response = RangeResponse::clone(&response);
                if let Some(header) = &mut response.header {
                    header.revision = revision;
                }
                return Ok(Response::new(response));
            }
            Lookup::Behind => cache.poke(&read.view),
            Lookup::Miss => {}
        }
    }
    cache.misses.inc();
    let asked = Instant::now();
    let response = match forward.forward_range(request).await {
        Ok(response) => response,
        Err(status) => {
            cache.failed(&read.view.identity, &status);
            return Err(status);
        }
    };
    let now = Instant::now();
    let behind = cache.with(|store| {
        store.auth_checked(&read.view, asked);
        let revision = response.get_ref().header.as_ref().map_or(0, |h| h.revision);
        let stored = store.insert(&read.view, read.name, &read.start, &read.end, response.get_ref().clone(), now);
        stored && store.views.get(&read.view).is_some_and(|view| view.delivered < revision)
    });
    if behind {
        // The watch has not reached this answer yet: ask it to.
        cache.poke(&read.view);
    }
    Ok(response)
}

/// Feeds one view from its upstream watch.
struct CacheSink {
    shared: Arc<Shared>,
    view: ViewKey,
    id: u64,
    progress: Arc<Notify>,
}

impl CacheSink {
    fn cache(&self) -> &Cache {
        self.shared.cache.as_ref().expect("a cache sink exists only with a cache")
    }
}

impl Sink for CacheSink {
    async fn deliver(&mut self, note: Note) -> bool {
        let (key, id) = (&self.view, self.id);
        let cache = self.cache();
        match note {
            Note::Created { header } => cache.with(|store| store.created(key, id, header.revision)),
            Note::Events { events, .. } => cache.with(|store| store.events(key, id, &events)),
            Note::Progress { header } => cache.with(|store| store.progress(key, id, header.revision)),
            Note::Canceled { reason, compact_revision, .. } => {
                tracing::debug!(prefix = key.prefix, %reason, compact_revision, "cache watch ended; view dropped");
                let closed = cache.with(|store| {
                    if store.views.get(key).is_some_and(|view| view.id == id) {
                        store.refused.insert(key.clone(), Instant::now() + REFUSAL_COOLDOWN);
                        store.close(key)
                    } else {
                        None
                    }
                });
                // This task ends by returning false: not aborted here.
                drop(closed);
                false
            }
        }
    }

    fn interrupted(&mut self) {
        let (key, id) = (&self.view, self.id);
        self.cache().with(|store| store.interrupted(key, id));
    }

    fn progress_requests(&self) -> Option<Arc<Notify>> {
        Some(self.progress.clone())
    }
}

#[cfg(test)]
mod tests {
    use keel_proto::etcdserverpb::ResponseHeader;
    use keel_proto::mvccpb::KeyValue;

    use super::*;

    const ID: u64 = 1;

    fn view() -> ViewKey {
        ViewKey { identity: None, prefix: 0 }
    }

    /// A store with one created view, its watch at `revision`.
    fn store(max_bytes: usize, revision: i64) -> Store {
        let mut store = Store::new(max_bytes);
        assert!(store.open(&view(), ID, Signals::new(), Instant::now()));
        assert!(store.created(&view(), ID, revision));
        store
    }

    fn answer(revision: i64, keys: &[&str]) -> RangeResponse {
        RangeResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            kvs: keys
                .iter()
                .map(|k| KeyValue { key: k.as_bytes().to_vec(), value: b"v".to_vec(), ..Default::default() })
                .collect(),
            count: keys.len() as i64,
            ..Default::default()
        }
    }

    fn put(key: &str, revision: i64) -> Event {
        Event {
            kv: Some(KeyValue { key: key.as_bytes().to_vec(), mod_revision: revision, ..Default::default() }),
            ..Default::default()
        }
    }

    /// Caches the answer to `[start, end)` at `revision`, named by its range.
    fn fill(store: &mut Store, start: &str, end: &str, revision: i64) -> bool {
        let name = format!("{start}..{end}").into_bytes();
        store.insert(&view(), name, start.as_bytes(), end.as_bytes(), answer(revision, &[start]), Instant::now())
    }

    fn hit(store: &mut Store, start: &str, end: &str) -> Option<i64> {
        let name = format!("{start}..{end}").into_bytes();
        match store.lookup(&view(), &name, 0, Instant::now()) {
            Lookup::Hit(response, revision) => {
                assert!(response.header.as_ref().unwrap().revision <= revision);
                Some(revision)
            }
            _ => None,
        }
    }

    #[test]
    fn ranges_prefixes_and_from_key() {
        // (prefix, key, end, within)
        let table: &[(&str, &str, &str, bool)] = &[
            ("/a/", "/a/x", "", true),
            ("/a/", "/a/", "/a0", true),
            ("/a/", "/a/", "/a1", false),
            ("/a/", "/a/x", "\0", false),
            ("", "/a/x", "\0", true),
            ("/a/", "/b", "", false),
        ];
        for (prefix, key, end, want) in table {
            assert_eq!(within(prefix.as_bytes(), key.as_bytes(), end.as_bytes()), *want, "{prefix} {key}..{end}");
        }
        assert!(contains(b"a", b"", b"a") && !contains(b"a", b"", b"ab"));
        assert!(contains(b"a", b"\0", b"zzz") && !contains(b"b", b"\0", b"a"));
        assert!(contains(b"a", b"c", b"b") && !contains(b"a", b"c", b"c"));
        assert!(overlaps(b"/a/", b"/a/x", b"") && !overlaps(b"/a/", b"/b", b""));
        assert!(overlaps(b"/a/", b"/", b"\0") && overlaps(b"/a/", b"/", b"/a/0"));
        assert!(!overlaps(b"/a/", b"/", b"/a/") && !overlaps(b"/a/", b"/a0", b"\0"));
    }

    #[test]
    fn events_remove_every_answer_whose_range_holds_their_key() {
        let mut store = store(1 << 20, 10);
        assert!(fill(&mut store, "/a/1", "", 10));
        assert!(fill(&mut store, "/a/2", "", 10));
        assert!(fill(&mut store, "/a/", "/a0", 10));
        assert!(fill(&mut store, "/a/1", "/a/2", 10));
        assert!(fill(&mut store, "/a/3", "\0", 10));
        assert_eq!(hit(&mut store, "/a/1", ""), Some(10));
        assert!(store.events(&view(), ID, &[put("/a/1", 11)]));
        // Everything holding /a/1 went; the rest is valid at 11.
        assert_eq!(hit(&mut store, "/a/1", ""), None);
        assert_eq!(hit(&mut store, "/a/", "/a0"), None);
        assert_eq!(hit(&mut store, "/a/1", "/a/2"), None);
        assert_eq!(hit(&mut store, "/a/2", ""), Some(11));
        assert_eq!(hit(&mut store, "/a/3", "\0"), Some(11));
        assert!(store.events(&view(), ID, &[put("/a/9", 12)]));
        assert_eq!(hit(&mut store, "/a/3", "\0"), None, "a from-key range holds every later key");
        assert_eq!(hit(&mut store, "/a/2", ""), Some(12));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn an_answer_from_before_the_watch_is_kept_only_if_nothing_touched_it_since() {
        let mut store = Store::new(1 << 20);
        assert!(store.open(&view(), ID, Signals::new(), Instant::now()));
        assert!(!fill(&mut store, "/a/1", "", 5), "nothing is stored before the watch is created");
        assert!(store.created(&view(), ID, 10));
        store.events(&view(), ID, &[put("/a/1", 11), put("/a/2", 12)]);
        assert!(!fill(&mut store, "/a/1", "", 10), "/a/1 changed at 11, after the answer");
        assert!(!fill(&mut store, "/a/", "/a0", 11), "/a/2 changed at 12");
        assert!(fill(&mut store, "/a/1", "", 11));
        assert_eq!(hit(&mut store, "/a/1", ""), Some(12), "valid at the revision the watch reached");
        assert!(!fill(&mut store, "/a/3", "", 9), "from before the watch: events unknown");
        // An answer ahead of the watch waits for it.
        assert!(fill(&mut store, "/a/4", "", 20));
        assert_eq!(hit(&mut store, "/a/4", ""), None);
        store.progress(&view(), ID, 20);
        assert_eq!(hit(&mut store, "/a/4", ""), Some(20));
    }

    #[test]
    fn forgotten_events_refuse_old_answers() {
        let mut store = store(1 << 20, 1);
        let events: Vec<Event> = (0..LOG_EVENTS as i64 + 10).map(|i| put("/b/x", 2 + i)).collect();
        store.events(&view(), ID, &events);
        assert!(!fill(&mut store, "/a/1", "", 5), "events after 5 were forgotten");
        assert!(fill(&mut store, "/a/1", "", 20));
    }

    #[test]
    fn a_broken_watch_serves_nothing_until_it_delivers_again() {
        let mut store = store(1 << 20, 10);
        assert!(fill(&mut store, "/a/1", "", 10));
        store.interrupted(&view(), ID);
        assert_eq!(store.len(), 0);
        assert!(fill(&mut store, "/a/1", "", 10));
        assert_eq!(hit(&mut store, "/a/1", ""), None, "the stream is down");
        store.events(&view(), ID, &[put("/a/2", 11)]);
        assert_eq!(hit(&mut store, "/a/1", ""), Some(11));
    }

    #[test]
    fn writes_through_the_proxy_hold_hits_back_until_the_watch_has_them() {
        let prefixes = [b"/a/".to_vec()];
        let mut store = store(1 << 20, 10);
        assert!(fill(&mut store, "/a/1", "", 10));
        store.written(&prefixes, Some((b"/b/x", b"")), 11);
        assert_eq!(hit(&mut store, "/a/1", ""), Some(10), "a write elsewhere changes nothing");
        store.written(&prefixes, Some((b"/a/2", b"")), 12);
        assert_eq!(hit(&mut store, "/a/1", ""), None);
        store.events(&view(), ID, &[put("/a/2", 12)]);
        assert_eq!(hit(&mut store, "/a/1", ""), Some(12));
        store.written(&prefixes, None, 13);
        assert!(matches!(store.lookup(&view(), b"/a/1..", 0, Instant::now()), Lookup::Behind));
        store.progress(&view(), ID, 13);
        assert_eq!(hit(&mut store, "/a/1", ""), Some(13));
        // A linearizable read names the revision it needs.
        assert!(matches!(store.lookup(&view(), b"/a/1..", 14, Instant::now()), Lookup::Behind));
    }

    #[test]
    fn bytes_are_bounded_and_the_least_recently_used_goes_first() {
        let one = ENTRY_OVERHEAD + 2 * "/a/1..".len() + answer(10, &["/a/1"]).encoded_len();
        let mut store = store(one * 3, 10);
        for key in ["/a/1", "/a/2", "/a/3"] {
            assert!(fill(&mut store, key, "", 10));
        }
        assert_eq!((store.len(), store.bytes()), (3, one * 3));
        assert_eq!(hit(&mut store, "/a/1", ""), Some(10));
        assert!(fill(&mut store, "/a/4", "", 10));
        assert_eq!(store.len(), 3);
        assert_eq!(hit(&mut store, "/a/2", ""), None, "least recently used");
        assert_eq!(hit(&mut store, "/a/1", ""), Some(10));
        assert!(store.bytes() <= one * 3);
        let huge = answer(10, &[&"x".repeat(one * 4)]);
        assert!(!store.insert(&view(), b"huge".to_vec(), b"/a/x", b"", huge, Instant::now()));
        // An event on an evicted key finds nothing to do.
        store.events(&view(), ID, &[put("/a/2", 11)]);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn a_closed_views_task_feeds_nothing() {
        let mut store = store(1 << 20, 10);
        assert!(fill(&mut store, "/a/1", "", 10));
        store.close(&view());
        assert!(store.open(&view(), ID + 1, Signals::new(), Instant::now()));
        assert!(!store.created(&view(), ID, 50), "the old task is told to stop");
        assert!(!store.progress(&view(), ID, 50));
        assert!(store.created(&view(), ID + 1, 20));
        assert!(!fill(&mut store, "/a/1", "", 10));
    }

    #[test]
    fn identities_have_views_of_their_own_and_tokens_are_rechecked() {
        let mut store = store(1 << 20, 10);
        let alice = ViewKey { identity: Some(b"alice.1".to_vec()), prefix: 0 };
        assert!(store.open(&alice, 7, Signals::new(), Instant::now()));
        assert!(store.created(&alice, 7, 10));
        assert!(fill(&mut store, "/a/1", "", 10));
        assert!(matches!(store.lookup(&alice, b"/a/1..", 0, Instant::now()), Lookup::Miss));
        let now = Instant::now();
        assert!(!store.auth_fresh(&alice, now));
        store.auth_checked(&alice, now);
        assert!(store.auth_fresh(&alice, now) && !store.auth_fresh(&alice, now + AUTH_RECHECK));
        assert_eq!(store.close_identity(&Some(b"alice.1".to_vec())).len(), 1);
        assert_eq!(hit(&mut store, "/a/1", ""), Some(10), "the anonymous view stays");
    }

    #[tokio::test(start_paused = true)]
    async fn linearizable_reads_wait_for_the_watch_and_ask_it_for_progress() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let cache = Arc::new(Cache::new(&[b"/a/".to_vec()], &Namespace::default(), 1 << 20, &metrics));
        let signals = Signals::new();
        cache.with(|store| {
            assert!(store.open(&view(), ID, signals.clone(), Instant::now()));
            store.created(&view(), ID, 5)
        });
        // The watch answers a progress request with the cluster's revision.
        let watch = {
            let (cache, progress) = (cache.clone(), signals.progress.clone());
            tokio::spawn(async move {
                progress.notified().await;
                cache.with(|store| store.progress(&view(), ID, 12))
            })
        };
        assert!(cache.reach(&view(), 12).await);
        assert!(watch.await.unwrap());
        let started = tokio::time::Instant::now();
        assert!(!cache.reach(&view(), 13).await, "no answer: it gives up");
        assert!(started.elapsed() >= LINEARIZABLE_WAIT);
    }

    #[test]
    fn auth_errors_are_recognised() {
        assert!(auth_error(&Status::permission_denied("etcdserver: permission denied")));
        assert!(auth_error(&Status::unauthenticated("etcdserver: invalid auth token")));
        assert!(auth_error(&Status::invalid_argument("etcdserver: revision of auth store is old")));
        assert!(auth_error(&Status::invalid_argument("etcdserver: user name is empty")));
        assert!(!auth_error(&Status::invalid_argument("etcdserver: key is not provided")));
    }
}
