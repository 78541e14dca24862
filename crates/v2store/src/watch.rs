//! Long-poll watchers (etcd's `watcher_hub.go`).
//!
//! The hub sits behind one mutex shared by the store (which notifies while
//! applying) and by every registered [`Watcher`] (which unregisters itself
//! when dropped). Nothing else is locked while it is held, and sends never
//! block: a watcher whose buffer is full is dropped instead.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{Event, WATCHER_BUFFER};

/// A registered watch. Dropping it unregisters it.
pub struct Watcher {
    /// The store index when the watch was registered (`X-Etcd-Index` of the
    /// watch response).
    pub start_index: u64,
    events: mpsc::Receiver<Event>,
    registration: Option<Registration>,
    /// A stream answered from the history is not registered, and etcd keeps
    /// its response open after that one event: holding the sender keeps the
    /// channel from reporting the end.
    _hold_open: Option<mpsc::Sender<Event>>,
}

struct Registration {
    /// Weak, so the watcher does not keep a dropped store's hub (and so its
    /// own sender) alive: `next` then ends.
    hub: Weak<Mutex<Hub>>,
    path: String,
    id: u64,
}

impl Watcher {
    /// The next event; `None` once the watcher was dropped by the store
    /// (its buffer overflowed) or the store is gone. A non-stream watcher
    /// yields at most one event.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one is waiting, without a runtime.
    #[cfg(test)]
    pub(crate) fn try_next(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        self.events.try_recv()
    }

    /// A watch answered at once from the history.
    pub(crate) fn answered(start_index: u64, event: Event, stream: bool) -> Watcher {
        let (sender, events) = mpsc::channel(1);
        // The channel is new and has room for one: this cannot fail.
        let _ = sender.try_send(event);
        Watcher { start_index, events, registration: None, _hold_open: stream.then_some(sender) }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(registration) = &self.registration {
            if let Some(hub) = registration.hub.upgrade() {
                hub.lock().remove(&registration.path, registration.id);
            }
        }
    }
}

struct Entry {
    id: u64,
    recursive: bool,
    stream: bool,
    since_index: u64,
    sender: mpsc::Sender<Event>,
}

#[derive(Default)]
pub(crate) struct Hub {
    next_id: u64,
    /// By watched path (`/` for the root).
    watchers: HashMap<String, Vec<Entry>>,
    count: usize,
}

impl Hub {
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Registers a watch of `path` for events from `since_index` on.
    pub(crate) fn register(
        hub: &Arc<Mutex<Hub>>,
        path: String,
        recursive: bool,
        stream: bool,
        since_index: u64,
        start_index: u64,
    ) -> Watcher {
        let (sender, events) = mpsc::channel(WATCHER_BUFFER);
        let mut locked = hub.lock();
        locked.next_id += 1;
        let id = locked.next_id;
        locked.watchers.entry(path.clone()).or_default().push(Entry { id, recursive, stream, since_index, sender });
        locked.count += 1;
        drop(locked);
        Watcher {
            start_index,
            events,
            registration: Some(Registration { hub: Arc::downgrade(hub), path, id }),
            _hold_open: None,
        }
    }

    fn remove(&mut self, path: &str, id: u64) {
        let Some(list) = self.watchers.get_mut(path) else { return };
        let before = list.len();
        list.retain(|entry| entry.id != id);
        self.count -= before - list.len();
        if list.is_empty() {
            self.watchers.remove(path);
        }
    }

    /// Live notification of one event: first the watchers of every removed
    /// node (`removed`, a directory delete or expiry), then those of every
    /// ancestor of the event's key, the key included. A stream watcher on a
    /// removed directory is therefore told twice, as etcd's is.
    pub(crate) fn notify(&mut self, event: &Event, removed: &[String]) {
        if self.watchers.is_empty() {
            return;
        }
        for path in removed {
            self.notify_path(event, path, true);
        }
        let key = &event.node.key;
        self.notify_path(event, "/", false);
        for (position, _) in key.match_indices('/').skip(1) {
            self.notify_path(event, &key[..position], false);
        }
        if key != "/" && !key.is_empty() {
            self.notify_path(event, key, false);
        }
    }

    fn notify_path(&mut self, event: &Event, path: &str, removed: bool) {
        let Some(list) = self.watchers.get_mut(path) else { return };
        let at_key = event.node.key == path;
        if !at_key && is_hidden_below(path, &event.node.key) {
            return;
        }
        let before = list.len();
        list.retain(|entry| {
            if !(entry.recursive || at_key || removed) || event.index < entry.since_index {
                return true;
            }
            // A full buffer means the client fell behind: etcd drops the
            // watcher rather than block the apply loop.
            entry.sender.try_send(event.clone()).is_ok() && entry.stream
        });
        self.count -= before - list.len();
        if list.is_empty() {
            self.watchers.remove(path);
        }
    }
}

/// etcd's `isHidden`: whether the part of `key` below the watched `path`
/// passes through a component starting with `_`.
fn is_hidden_below(path: &str, key: &str) -> bool {
    // A removed directory notifies watchers deeper than its own key.
    if path.len() > key.len() {
        return false;
    }
    let below = key.get(path.len()..).unwrap_or_default();
    let below = if below.starts_with('/') { below.to_owned() } else { format!("/{below}") };
    below.contains("/_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_means_below_the_watch_path() {
        assert!(is_hidden_below("/", "/_hidden"));
        assert!(is_hidden_below("/hdir", "/hdir/_h"));
        assert!(is_hidden_below("/", "/_hdir/x"));
        assert!(!is_hidden_below("/_hdir", "/_hdir/x"));
        assert!(!is_hidden_below("/a", "/a/b"));
        assert!(!is_hidden_below("/a/_b", "/a"));
        assert!(!is_hidden_below("/", "/a_b"));
    }
}
