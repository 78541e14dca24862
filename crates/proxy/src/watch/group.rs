//! Coalescing: client watches from "now" on the same [`Spec`] share one
//! upstream watch, a group. Whoever joins a group that is already running
//! is told it was created at the last revision the group delivered, and
//! gets everything after it.
//!
//! A listener whose stream does not keep up is never cut off and never
//! holds the others back: when its queue is full it leaves the group and
//! continues on an upstream watch of its own from the first revision it
//! missed, which the cluster replays from its history.
//!
//! Lock order: `Groups::map`, then a group's `state`. `GroupSink` takes the
//! map only after releasing the state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::upstream::{self, Note, Sink, Spec};
use crate::Shared;

/// A listener's queue: notes tagged with the proxy-internal watch number.
pub(crate) type Queue = mpsc::Sender<(u64, Note)>;

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
    /// Everything up to this revision went to every listener.
    last: i64,
    listeners: Vec<Listener>,
    /// Listeners that left for watches of their own, by watch number.
    detached: HashMap<u64, AbortHandle>,
    task: Option<AbortHandle>,
    /// The upstream watch ended; joiners start a new group.
    closed: bool,
}

struct Listener {
    id: u64,
    queue: Queue,
    created_sent: bool,
}

/// Sends notes straight to one listener, waiting for room: for watches of
/// their own.
pub(crate) struct DirectSink {
    pub(crate) id: u64,
    pub(crate) queue: Queue,
}

impl Sink for DirectSink {
    async fn deliver(&mut self, note: Note) -> bool {
        self.queue.send((self.id, note)).await.is_ok()
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
                let mut listener = Listener { id, queue, created_sent: false };
                if let Some(header) = &state.created {
                    let mut header = *header;
                    header.revision = state.last;
                    listener.created_sent = listener.queue.try_send((id, Note::Created { header })).is_ok();
                    if !listener.created_sent {
                        let start = state.last + 1;
                        detach(shared, &group.spec, &mut state, listener, start);
                        return group.clone();
                    }
                }
                if !state.listeners.is_empty() {
                    shared.metrics.watchers_coalescing.inc();
                }
                state.listeners.push(listener);
                return group.clone();
            }
        }
        let group = Arc::new(Group { spec: spec.clone(), state: Mutex::new(State::default()) });
        group.state.lock().listeners.push(Listener { id, queue, created_sent: false });
        let sink = GroupSink { shared: shared.clone(), group: group.clone() };
        let task = tokio::spawn(upstream::run(shared.clone(), spec.clone(), 0, false, sink));
        group.state.lock().task = Some(task.abort_handle());
        map.insert(spec, group.clone());
        group
    }

    /// Watch `id` leaves; the last listener out stops the upstream watch.
    pub(crate) fn leave(&self, shared: &Shared, group: &Arc<Group>, id: u64) {
        let mut map = self.map.lock();
        let mut state = group.state.lock();
        if let Some(task) = state.detached.remove(&id) {
            task.abort();
            return;
        }
        let before = state.listeners.len();
        state.listeners.retain(|listener| listener.id != id);
        if state.listeners.len() < before && !state.listeners.is_empty() {
            shared.metrics.watchers_coalescing.dec();
        }
        if state.listeners.is_empty() && !state.closed {
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

/// Moves a listener that fell behind onto an upstream watch of its own,
/// from `start`, the first revision it has not been given.
fn detach(shared: &Arc<Shared>, spec: &Arc<Spec>, state: &mut State, listener: Listener, start: i64) {
    tracing::debug!(watch = listener.id, start, "slow watcher continues on its own upstream watch");
    shared.metrics.watch_detached.inc();
    let sink = DirectSink { id: listener.id, queue: listener.queue };
    let task = tokio::spawn(upstream::run(shared.clone(), spec.clone(), start, listener.created_sent, sink));
    state.detached.insert(listener.id, task.abort_handle());
}

struct GroupSink {
    shared: Arc<Shared>,
    group: Arc<Group>,
}

impl Sink for GroupSink {
    async fn deliver(&mut self, note: Note) -> bool {
        let mut finished = Vec::new();
        let open = {
            let mut state = self.group.state.lock();
            if state.closed {
                return false;
            }
            let resume_at = state.last + 1;
            if let Note::Created { header } = &note {
                state.created = Some(*header);
            }
            if let Some(revision) = note.revision() {
                state.last = state.last.max(revision);
            }
            if let Note::Canceled { .. } = note {
                state.closed = true;
                state.task = None;
                finished = std::mem::take(&mut state.listeners);
            } else {
                if let Note::Events { events, .. } = &note {
                    let copies = state.listeners.len().saturating_sub(1) as u64;
                    self.shared.metrics.events_coalescing.inc_by(events.len() as u64 * copies);
                }
                let listeners = std::mem::take(&mut state.listeners);
                for mut listener in listeners {
                    match listener.queue.try_send((listener.id, note.clone())) {
                        Ok(()) => {
                            listener.created_sent |= matches!(note, Note::Created { .. });
                            state.listeners.push(listener);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            let start = if listener.created_sent { resume_at } else { 0 };
                            detach(&self.shared, &self.group.spec, &mut state, listener, start);
                        }
                        // The client stream is gone; its leave() is coming.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                if state.listeners.is_empty() {
                    state.closed = true;
                    state.task = None;
                }
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
                let _ = listener.queue.send((listener.id, note)).await;
            });
        }
        open
    }
}
