//! The last [`HISTORY_LEN`] events (etcd's `event_history.go`). Every index
//! the store takes leaves exactly one entry, so the entries are contiguous.

use std::collections::VecDeque;

use crate::{Action, Event, HISTORY_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryEntry {
    pub(crate) index: u64,
    /// `None` for a [`crate::Write::Internal`] step: etcd's event there is on
    /// its own `/0` keys, which no keys-API watch can match.
    pub(crate) event: Option<Event>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct History {
    entries: VecDeque<HistoryEntry>,
}

/// A scan that starts before the oldest entry still held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cleared {
    pub(crate) oldest: u64,
}

impl History {
    pub(crate) fn push(&mut self, entry: HistoryEntry) {
        if self.entries.len() == HISTORY_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// etcd's `StartIndex`: 0 while empty.
    pub(crate) fn oldest_index(&self) -> u64 {
        self.entries.front().map_or(0, |entry| entry.index)
    }

    /// The first event from `since` on that a watch of `key` matches; `None`
    /// when there is none yet. Refreshes are skipped; hidden keys are not
    /// filtered here (etcd's scan does not, unlike live notification).
    pub(crate) fn scan(&self, key: &str, recursive: bool, since: u64) -> Result<Option<&Event>, Cleared> {
        let oldest = self.oldest_index();
        if since < oldest {
            return Err(Cleared { oldest });
        }
        let prefix = if key.ends_with('/') { key.to_owned() } else { format!("{key}/") };
        let found = self
            .entries
            .iter()
            .filter(|entry| entry.index >= since)
            .filter_map(|entry| entry.event.as_ref())
            .find(|event| !event.refresh && matches(event, key, recursive, &prefix));
        Ok(found)
    }
}

fn matches(event: &Event, key: &str, recursive: bool, prefix: &str) -> bool {
    if event.node.key == key || (recursive && event.node.key.starts_with(prefix)) {
        return true;
    }
    // A removed directory ends every watch below it. etcd compares raw
    // string prefixes, so `/ab` sees the deletion of `/a` too; kept as is.
    matches!(event.action, Action::Delete | Action::Expire)
        && event.prev_node.as_ref().is_some_and(|prev| prev.dir && key.starts_with(&prev.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeView;

    fn event(action: Action, key: &str, index: u64, dir: bool) -> HistoryEntry {
        let node = NodeView {
            key: key.into(),
            value: None,
            dir,
            expiration: None,
            nodes: None,
            modified_index: index,
            created_index: 1,
        };
        let prev_node = matches!(action, Action::Delete | Action::Expire).then(|| node.clone());
        HistoryEntry { index, event: Some(Event { action, node, prev_node, index, refresh: false }) }
    }

    fn found(history: &History, key: &str, recursive: bool, since: u64) -> Option<u64> {
        history.scan(key, recursive, since).ok().flatten().map(|event| event.index)
    }

    #[test]
    fn scan_rules() {
        let mut history = History::default();
        history.push(event(Action::Set, "/a/b", 1, false));
        history.push(HistoryEntry { index: 2, event: None });
        history.push(event(Action::Set, "/a", 3, false));
        let mut refresh = event(Action::Set, "/r", 4, false);
        if let Some(event) = refresh.event.as_mut() {
            event.refresh = true;
        }
        history.push(refresh);
        history.push(event(Action::Delete, "/d", 5, true));
        history.push(event(Action::Set, "/_h", 6, false));

        assert_eq!(found(&history, "/a/b", false, 1), Some(1));
        assert_eq!(found(&history, "/a/b", false, 2), None);
        assert_eq!(found(&history, "/a", false, 1), Some(3));
        assert_eq!(found(&history, "/a", true, 1), Some(1));
        assert_eq!(found(&history, "/", true, 2), Some(3), "placeholders never match");
        assert_eq!(found(&history, "/r", false, 1), None, "refreshes are skipped");
        assert_eq!(found(&history, "/d/x/y", false, 1), Some(5), "a deleted ancestor directory matches");
        assert_eq!(found(&history, "/dx", false, 1), Some(5), "etcd's raw prefix test");
        assert_eq!(found(&history, "/", true, 6), Some(6), "no hidden filter in scans");
        assert_eq!(found(&history, "/a", false, 7), None);
        assert_eq!(found(&history, "/a/", true, 1), Some(1));
    }

    #[test]
    fn oldest_moves_once_full() {
        let mut history = History::default();
        assert_eq!(history.oldest_index(), 0);
        for index in 1..=(HISTORY_LEN as u64 + 71) {
            history.push(HistoryEntry { index, event: None });
        }
        assert_eq!(history.oldest_index(), 72);
        assert_eq!(history.scan("/x", false, 71), Err(Cleared { oldest: 72 }));
        assert_eq!(history.scan("/x", false, 72), Ok(None));
    }
}
