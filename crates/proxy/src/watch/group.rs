//! Coalescing: client watches from "now" on the same [`Spec`] share one
//! upstream watch, a group. Whoever joins a group that is already running
//! is told it was created at the last revision the group delivered, and
//! gets everything after it.
//!
//! A listener whose stream does not keep up is never cut off, and holds
//! the others back for at most [`CATCH_UP_WAIT`] per note: the group waits
//! that long for room in its queue (slowing the upstream watch, which the
//! member then serves from its history, as etcd's proxy does), and then
//! the listener leaves the group and continues on an upstream watch of its
//! own from the first revision it missed. Once that watch has delivered
//! at least what the group has, the listener rejoins (skipping what its
//! own watch already gave it) and its own watch ends, so a burst does not
//! leave one upstream stream per watcher behind. A group lives while it
//! has listeners or detached ones that may rejoin.
//!
//! A listener that is slow but never 50 ms slow slows its whole group for
//! as long as it stays so, as behind etcd's proxy; the member then serves
//! the group's watch from its history, and cancels it with
//! `compact_revision` if that history is compacted away.
//!
//! Lock order: `Groups::map`, then a group's `state`. `GroupSink` takes the
//! map only after releasing the state, and never awaits holding either.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::mvccpb::Event;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{mpsc, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;

use super::upstream::{self, Note, Sink, Spec};
use crate::Shared;

/// How long a group waits for room in a listener's queue before moving it
/// to a watch of its own (etcd's proxy waits 50 ms, then cancels the
/// client's whole stream).
const CATCH_UP_WAIT: Duration = Duration::from_millis(50);

/// What a group keeps of its latest events for watches joining from a
/// past revision (etcd's proxy keeps none: such watches go upstream).
const HISTORY_EVENTS: usize = 1_000;
const HISTORY_BYTES: usize = 1 << 20;

/// One watch's queue. A client stream's watches share one channel, in
/// which each may have at most as many notes waiting as its `room` has
/// permits (the receiver gives a permit back per note it takes): bounded
/// in total, yet one busy watch cannot fill the others' share.
#[derive(Clone)]
pub(crate) struct Queue {
    id: u64,
    notes: mpsc::UnboundedSender<(u64, Note)>,
    room: Arc<Semaphore>,
}

pub(crate) enum Full {
    /// No room now.
    Full,
    /// The watch or its stream ended.
    Closed,
}

impl Queue {
    pub(crate) fn new(id: u64, notes: mpsc::UnboundedSender<(u64, Note)>, room: Arc<Semaphore>) -> Queue {
        Queue { id, notes, room }
    }

    pub(crate) fn try_send(&self, note: Note) -> Result<(), Full> {
        match self.room.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(Full::Full),
            Err(TryAcquireError::Closed) => return Err(Full::Closed),
        }
        self.notes.send((self.id, note)).map_err(|_| Full::Closed)
    }

    /// Waits for room; `false`: the watch or its stream ended.
    pub(crate) async fn send(&self, note: Note) -> bool {
        let Ok(permit) = self.room.acquire().await else { return false };
        permit.forget();
        self.notes.send((self.id, note)).is_ok()
    }
}

#[derive(Default)]
pub(crate) struct Groups {
    map: Mutex<HashMap<Arc<Spec>, Arc<Group>>>,
}

pub(crate) struct Group {
    spec: Arc<Spec>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The upstream watch's Created header, once it came.
    created: Option<keel_proto::etcdserverpb::ResponseHeader>,
    /// The revision of the group's latest note. Every listener has been
    /// given everything up to it, except while `GroupSink::deliver` waits
    /// for listeners that are behind (which are then in its `behind` list,
    /// never detached or rejoining meanwhile).
    last: i64,
    listeners: Vec<Listener>,
    /// Listeners that left for watches of their own, by watch number.
    detached: HashMap<u64, AbortHandle>,
    task: Option<AbortHandle>,
    /// The upstream watch ended; joiners start a new group.
    closed: bool,
    /// The latest events, for watches that join from a past revision.
    history: History,
}

/// A group's latest events: every event of its spec in the revisions
/// after `from`, up to the group's `last`, bounded by [`HISTORY_EVENTS`]
/// and [`HISTORY_BYTES`].
#[derive(Default)]
struct History {
    notes: VecDeque<(Note, usize)>,
    /// Before the group's Created: nothing is covered.
    from: Option<i64>,
    events: usize,
    bytes: usize,
}

impl History {
    fn push(&mut self, note: &Note) {
        let Note::Events { events, .. } = note else { return };
        let bytes: usize = events.iter().map(|event| event.encoded_len()).sum();
        self.events += events.len();
        self.bytes += bytes;
        self.notes.push_back((note.clone(), bytes));
        while self.events > HISTORY_EVENTS || self.bytes > HISTORY_BYTES {
            let Some((oldest, bytes)) = self.notes.pop_front() else { break };
            if let Note::Events { events, .. } = &oldest {
                self.events -= events.len();
            }
            self.bytes -= bytes;
            self.from = oldest.revision().or(self.from);
        }
    }

    /// Whether every event from revision `start` on is here.
    fn covers(&self, start: i64) -> bool {
        self.from.is_some_and(|from| start > from)
    }

    /// The notes from revision `start` on, the first trimmed to it.
    fn since(&self, start: i64) -> impl Iterator<Item = Note> + '_ {
        self.notes.iter().filter_map(move |(note, _)| events_from(note, start))
    }
}

fn mod_revision(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// An events note's events from revision `start` on: the note itself when
/// all are, none when none is (and for any other note).
fn events_from(note: &Note, start: i64) -> Option<Note> {
    let Note::Events { header, events } = note else { return None };
    if events.last().is_none_or(|event| mod_revision(event) < start) {
        return None;
    }
    if events.first().is_some_and(|event| mod_revision(event) >= start) {
        return Some(note.clone());
    }
    let kept = events.iter().filter(|event| mod_revision(event) >= start).cloned().collect();
    Some(Note::Events { header: *header, events: Arc::new(kept) })
}

struct Listener {
    id: u64,
    queue: Queue,
    created_sent: bool,
    /// A rejoined listener's own watch delivered up to here, past the
    /// group's `last` then: the group's events up to it are skipped.
    skip_through: i64,
}

impl Listener {
    fn new(id: u64, queue: Queue, created_sent: bool) -> Listener {
        Listener { id, queue, created_sent, skip_through: 0 }
    }

    /// The part of `note` this listener has not had.
    fn unseen(&mut self, note: &Note) -> Option<Note> {
        if self.skip_through == 0 {
            return Some(note.clone());
        }
        let unseen = match note {
            Note::Events { .. } => events_from(note, self.skip_through + 1),
            Note::Progress { header } if header.revision <= self.skip_through => None,
            _ => Some(note.clone()),
        };
        if unseen.is_some() {
            self.skip_through = 0;
        }
        unseen
    }
}

/// Sends notes straight to one listener, waiting for room: for watches of
/// their own.
pub(crate) struct DirectSink {
    pub(crate) queue: Queue,
}

impl Sink for DirectSink {
    async fn deliver(&mut self, note: Note) -> bool {
        self.queue.send(note).await
    }
}

impl Groups {
    /// Adds watch `id` to the group for `spec`, starting one if needed.
    pub(crate) fn join(&self, shared: &Arc<Shared>, spec: Spec, id: u64, queue: Queue) -> Arc<Group> {
        let spec = Arc::new(spec);
        let mut map = self.map.lock();
        if let Some(group) = map.get(&spec) {
            let mut state = group.state.lock();
            if !state.closed {
                let mut listener = Listener::new(id, queue, false);
                if let Some(header) = &state.created {
                    let mut header = *header;
                    header.revision = state.last;
                    listener.created_sent = listener.queue.try_send(Note::Created { header }).is_ok();
                    if !listener.created_sent {
                        let start = state.last + 1;
                        detach(shared, group, &mut state, listener, start);
                        return group.clone();
                    }
                }
                let before = state.listeners.len();
                state.listeners.push(listener);
                coalescing(shared, before, state.listeners.len());
                return group.clone();
            }
        }
        let group = Arc::new(Group { spec: spec.clone(), state: Mutex::new(State::default()) });
        group.state.lock().listeners.push(Listener::new(id, queue, false));
        let sink = GroupSink { shared: shared.clone(), group: group.clone() };
        let task = tokio::spawn(upstream::run(shared.clone(), spec.clone(), 0, false, sink));
        group.state.lock().task = Some(task.abort_handle());
        map.insert(spec, group.clone());
        group
    }

    /// Adds watch `id`, from revision `start`, to the running group for
    /// `spec` if that group's history has every event from `start` on:
    /// the watch is told it was created, given those events and then
    /// everything the group gets (a replay longer than the watch's queue
    /// share continues on an upstream watch of its own). `None`: the watch
    /// needs an upstream watch of its own.
    pub(crate) fn join_from(
        &self,
        shared: &Arc<Shared>,
        spec: &Spec,
        id: u64,
        queue: &Queue,
        start: i64,
    ) -> Option<Arc<Group>> {
        // The replay is done without the map, which every create needs.
        let group = self.map.lock().get(spec)?.clone();
        let group = &group;
        let mut state = group.state.lock();
        // A start past the group's last revision would be given revisions
        // before it.
        let fits = !state.closed && state.history.covers(start) && start <= state.last + 1;
        let mut header = state.created.filter(|_| fits)?;
        // As an upstream watch from `start` reports its creation.
        header.revision = start - 1;
        queue.try_send(Note::Created { header }).ok()?;
        shared.metrics.watch_history_joins.inc();
        let listener = Listener::new(id, queue.clone(), true);
        let mut replay = state.history.since(start);
        while let Some(note) = replay.next() {
            let first = first_unseen(&note, start);
            match listener.queue.try_send(note) {
                Ok(()) => {}
                Err(Full::Full) => {
                    drop(replay);
                    detach(shared, group, &mut state, listener, first);
                    return Some(group.clone());
                }
                // The client stream is gone; its leave() is coming.
                Err(Full::Closed) => return Some(group.clone()),
            }
        }
        drop(replay);
        let before = state.listeners.len();
        state.listeners.push(listener);
        coalescing(shared, before, state.listeners.len());
        Some(group.clone())
    }

    /// Watch `id` leaves; the last listener out stops the upstream watch.
    pub(crate) fn leave(&self, shared: &Shared, group: &Arc<Group>, id: u64) {
        let mut map = self.map.lock();
        let mut state = group.state.lock();
        if let Some(task) = state.detached.remove(&id) {
            task.abort();
        }
        let before = state.listeners.len();
        state.listeners.retain(|listener| listener.id != id);
        coalescing(shared, before, state.listeners.len());
        if state.listeners.is_empty() && state.detached.is_empty() && !state.closed {
            state.closed = true;
            if let Some(task) = state.task.take() {
                task.abort();
            }
            if map.get(&group.spec).is_some_and(|current| Arc::ptr_eq(current, group)) {
                map.remove(&group.spec);
            }
        }
    }
}

/// Keeps `etcd_grpc_proxy_watchers_coalescing_total` true: every listener
/// of a group but the first is one.
fn coalescing(shared: &Shared, before: usize, after: usize) {
    let count = |n: usize| n.saturating_sub(1) as i64;
    shared.metrics.watchers_coalescing.add(count(after) - count(before));
}

/// Moves a listener that fell behind onto an upstream watch of its own,
/// from `start`, the first revision it has not been given.
fn detach(shared: &Arc<Shared>, group: &Arc<Group>, state: &mut State, listener: Listener, start: i64) {
    tracing::debug!(watch = listener.id, start, "slow watcher continues on its own upstream watch");
    shared.metrics.watch_detached.inc();
    let id = listener.id;
    let sink = RejoinSink { shared: shared.clone(), group: group.clone(), id, queue: listener.queue };
    let task = tokio::spawn(upstream::run(shared.clone(), group.spec.clone(), start, listener.created_sent, sink));
    state.detached.insert(id, task.abort_handle());
}

/// A detached listener's own watch: delivers like [`DirectSink`], and ends
/// (returning the listener to its group) once it has delivered exactly up
/// to the revision the group has.
struct RejoinSink {
    shared: Arc<Shared>,
    group: Arc<Group>,
    id: u64,
    queue: Queue,
}

impl Sink for RejoinSink {
    async fn deliver(&mut self, note: Note) -> bool {
        let revision = note.revision();
        if !self.queue.send(note).await {
            return false;
        }
        let Some(revision) = revision else { return true };
        let mut state = self.group.state.lock();
        // Behind the group, it goes on; at or past it, the group gives it
        // what comes after `revision` from now on.
        if state.closed || state.created.is_none() || revision < state.last {
            return true;
        }
        if state.detached.remove(&self.id).is_none() {
            // It left; its watch is being aborted.
            return false;
        }
        tracing::debug!(watch = self.id, revision, "caught-up watcher rejoins its group");
        self.shared.metrics.watch_rejoined.inc();
        let before = state.listeners.len();
        let mut listener = Listener::new(self.id, self.queue.clone(), true);
        if revision > state.last {
            listener.skip_through = revision;
        }
        state.listeners.push(listener);
        coalescing(&self.shared, before, state.listeners.len());
        false
    }
}

/// The first revision a listener misses when `unseen` does not reach it:
/// the note's first event's, or after a progress note's revision (it had
/// every event up to that), else `resume_at`.
fn first_unseen(unseen: &Note, resume_at: i64) -> i64 {
    match unseen {
        Note::Events { events, .. } => {
            events.first().and_then(|e| e.kv.as_ref()).map_or(resume_at, |kv| kv.mod_revision)
        }
        Note::Progress { header } => header.revision + 1,
        _ => resume_at,
    }
}

struct GroupSink {
    shared: Arc<Shared>,
    group: Arc<Group>,
}

impl Sink for GroupSink {
    async fn deliver(&mut self, note: Note) -> bool {
        let created = matches!(note, Note::Created { .. });
        let mut finished = Vec::new();
        let mut behind = Vec::new();
        {
            let mut state = self.group.state.lock();
            if state.closed {
                return false;
            }
            let resume_at = state.last + 1;
            if let Note::Created { header } = &note {
                state.created = Some(*header);
                state.history.from = Some(header.revision);
            }
            if let Some(revision) = note.revision() {
                state.last = state.last.max(revision);
            }
            state.history.push(&note);
            let before = state.listeners.len();
            if let Note::Canceled { .. } = note {
                state.closed = true;
                state.task = None;
                finished = std::mem::take(&mut state.listeners);
            } else {
                if let Note::Events { events, .. } = &note {
                    let copies = state.listeners.len().saturating_sub(1) as u64;
                    self.shared.metrics.events_coalescing.inc_by(events.len() as u64 * copies);
                }
                state.listeners.retain_mut(|listener| {
                    let Some(unseen) = listener.unseen(&note) else { return true };
                    match listener.queue.try_send(unseen.clone()) {
                        Ok(()) => {
                            listener.created_sent |= created;
                            true
                        }
                        Err(Full::Full) => {
                            let resume = first_unseen(&unseen, resume_at);
                            behind.push((listener.id, listener.queue.room.clone(), unseen, resume));
                            true
                        }
                        // The client stream is gone; its leave() is coming.
                        Err(Full::Closed) => false,
                    }
                });
            }
            coalescing(&self.shared, before, state.listeners.len());
        }
        // The listeners that are behind stay in the group while it waits
        // for them (nothing else is delivered meanwhile), so leave() finds
        // them there.
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        for (id, room, unseen, resume) in behind {
            let permit = tokio::time::timeout_at(deadline, room.acquire()).await;
            let mut state = self.group.state.lock();
            let Some(at) = state.listeners.iter().position(|listener| listener.id == id) else { continue };
            let before = state.listeners.len();
            match permit {
                Ok(Ok(permit)) => {
                    permit.forget();
                    let listener = &mut state.listeners[at];
                    if listener.queue.notes.send((id, unseen)).is_ok() {
                        listener.created_sent |= created;
                    }
                }
                Ok(Err(_closed)) => {
                    state.listeners.swap_remove(at);
                }
                Err(_elapsed) => {
                    let listener = state.listeners.swap_remove(at);
                    let start = if listener.created_sent { resume } else { 0 };
                    detach(&self.shared, &self.group, &mut state, listener, start);
                }
            }
            coalescing(&self.shared, before, state.listeners.len());
        }
        let open = {
            let mut state = self.group.state.lock();
            if state.listeners.is_empty() && state.detached.is_empty() && !state.closed {
                state.closed = true;
                state.task = None;
            }
            !state.closed
        };
        if !open {
            let mut map = self.shared.watch_groups.map.lock();
            if map.get(&self.group.spec).is_some_and(|current| Arc::ptr_eq(current, &self.group)) {
                map.remove(&self.group.spec);
            }
        }
        // A cancellation must reach every listener: it ends their watch.
        for listener in finished {
            let note = note.clone();
            tokio::spawn(async move {
                let _ = listener.queue.send(note).await;
            });
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::etcdserverpb::ResponseHeader;
    use keel_proto::mvccpb::KeyValue;

    fn events(revisions: &[i64]) -> Note {
        let events = revisions
            .iter()
            .map(|&mod_revision| Event {
                kv: Some(KeyValue { key: b"k".to_vec(), value: vec![0; 100], mod_revision, ..Default::default() }),
                ..Default::default()
            })
            .collect();
        Note::Events { header: ResponseHeader::default(), events: Arc::new(events) }
    }

    fn revisions(notes: impl Iterator<Item = Note>) -> Vec<Vec<i64>> {
        notes
            .map(|note| match note {
                Note::Events { events, .. } => events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect(),
                _ => panic!("only events are kept"),
            })
            .collect()
    }

    #[test]
    fn a_rejoined_listener_skips_what_its_own_watch_gave_it() {
        let (notes, _receiver) = mpsc::unbounded_channel();
        let mut listener = Listener::new(1, Queue::new(1, notes, Arc::new(Semaphore::new(1))), true);
        listener.skip_through = 12;
        let progress = |revision| Note::Progress { header: ResponseHeader { revision, ..Default::default() } };
        assert!(listener.unseen(&events(&[11, 12])).is_none());
        assert!(listener.unseen(&progress(12)).is_none());
        assert_eq!(revisions(listener.unseen(&events(&[12, 13])).into_iter()), [vec![13]]);
        assert_eq!(listener.skip_through, 0, "past it, everything goes through");
        assert_eq!(revisions(listener.unseen(&events(&[13, 14])).into_iter()), [vec![13, 14]]);

        listener.skip_through = 20;
        assert!(matches!(listener.unseen(&progress(21)), Some(Note::Progress { .. })));
        assert_eq!(listener.skip_through, 0);
        assert_eq!(first_unseen(&events(&[30, 31]), 5), 30);
        assert_eq!(first_unseen(&progress(40), 5), 41);
    }

    #[test]
    fn history_replays_from_a_revision_trimming_the_first_note() {
        let mut history = History::default();
        assert!(!history.covers(1), "nothing before the group's Created");
        history.from = Some(10);
        history.push(&events(&[11, 11, 12]));
        history.push(&Note::Progress { header: ResponseHeader::default() });
        history.push(&events(&[14]));
        assert!(!history.covers(10) && history.covers(11) && history.covers(15));
        assert_eq!(revisions(history.since(11)), [vec![11, 11, 12], vec![14]]);
        assert_eq!(revisions(history.since(12)), [vec![12], vec![14]]);
        assert_eq!(revisions(history.since(13)), [vec![14]]);
        assert!(revisions(history.since(15)).is_empty());
    }

    #[test]
    fn history_drops_its_oldest_whole_notes_past_its_bounds() {
        let mut history = History { from: Some(0), ..Default::default() };
        for revision in 1..=(HISTORY_EVENTS as i64 + 10) {
            history.push(&events(&[revision]));
        }
        assert_eq!(history.events, HISTORY_EVENTS);
        assert!(!history.covers(10) && history.covers(11));
        assert_eq!(revisions(history.since(0)).first(), Some(&vec![11]));

        // Bytes bound it too: one large value pushes out nearly all the rest.
        let big = Note::Events {
            header: ResponseHeader::default(),
            events: Arc::new(vec![Event {
                kv: Some(KeyValue { value: vec![0; HISTORY_BYTES - 2_000], mod_revision: 5_000, ..Default::default() }),
                ..Default::default()
            }]),
        };
        history.push(&big);
        assert!(history.bytes <= HISTORY_BYTES && history.notes.len() < 20, "{} notes", history.notes.len());
        let from = history.from.unwrap();
        assert!(from > 990 && history.covers(from + 1) && !history.covers(from));
        assert_eq!(revisions(history.since(0)).last(), Some(&vec![5_000]));
    }
}
