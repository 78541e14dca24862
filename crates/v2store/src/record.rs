//! The durable form of the store, as records in the caller's ordered
//! keyspace:
//!
//! - `n` + node path (`/a/b`) → [`NodeRecord`]: one per node except the root,
//!   implicitly created directories included. Children are found by path.
//! - `e` + index (big-endian u64) → [`EventRecord`]: the watch history, so it
//!   survives restarts as etcd's does. Only the last [`HISTORY_LEN`] are kept.
//! - `i` → the current index (big-endian u64).
//!
//! Values are protobuf (prost derive, no `.proto`): fields can be added later
//! without breaking records already written.

use crate::history::HistoryEntry;
use crate::store::Change;
use crate::{Action, Event, NodeView, HISTORY_LEN};

const NODE_PREFIX: u8 = b'n';
const EVENT_PREFIX: u8 = b'e';
const INDEX_KEY: &[u8] = b"i";

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NodeRecord {
    #[prost(uint64, tag = "1")]
    pub(crate) created_index: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) modified_index: u64,
    #[prost(int64, optional, tag = "3")]
    pub(crate) expiration: Option<i64>,
    #[prost(bool, tag = "4")]
    pub(crate) dir: bool,
    #[prost(string, tag = "5")]
    pub(crate) value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ViewRecord {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
    #[prost(bool, tag = "3")]
    dir: bool,
    #[prost(int64, optional, tag = "4")]
    expiration: Option<i64>,
    #[prost(uint64, tag = "5")]
    modified_index: u64,
    #[prost(uint64, tag = "6")]
    created_index: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventRecord {
    /// A [`crate::Write::Internal`] step: nothing but its index is kept.
    #[prost(bool, tag = "1")]
    internal: bool,
    #[prost(uint32, tag = "2")]
    action: u32,
    #[prost(message, optional, tag = "3")]
    node: Option<ViewRecord>,
    #[prost(message, optional, tag = "4")]
    prev_node: Option<ViewRecord>,
    #[prost(bool, tag = "5")]
    refresh: bool,
}

/// A record as [`load`](crate::Store::load) understands it.
pub(crate) enum Record {
    Node { path: String, node: NodeRecord },
    Event(HistoryEntry),
    Index(u64),
}

pub(crate) fn node_key(path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + path.len());
    key.push(NODE_PREFIX);
    key.extend_from_slice(path.as_bytes());
    key
}

fn event_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(EVENT_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub(crate) fn put_node(path: &str, node: NodeRecord) -> Change {
    Change::Put { key: node_key(path), value: prost::Message::encode_to_vec(&node) }
}

pub(crate) fn delete_node(path: &str) -> Change {
    Change::Delete { key: node_key(path) }
}

/// The records of one history entry taking `entry.index`: the entry, the
/// removal of the one that falls out of the history, and the new index.
pub(crate) fn push_history(changes: &mut Vec<Change>, entry: &HistoryEntry) {
    let record = match &entry.event {
        None => EventRecord { internal: true, ..EventRecord::default() },
        Some(event) => EventRecord {
            internal: false,
            action: action_number(event.action),
            node: Some(view_record(&event.node)),
            prev_node: event.prev_node.as_ref().map(view_record),
            refresh: event.refresh,
        },
    };
    changes.push(Change::Put { key: event_key(entry.index), value: prost::Message::encode_to_vec(&record) });
    if let Some(dropped) = entry.index.checked_sub(HISTORY_LEN as u64).filter(|dropped| *dropped > 0) {
        changes.push(Change::Delete { key: event_key(dropped) });
    }
    changes.push(Change::Put { key: INDEX_KEY.to_vec(), value: entry.index.to_be_bytes().to_vec() });
}

pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Record, String> {
    match key.split_first() {
        Some((&NODE_PREFIX, path)) => {
            let path = std::str::from_utf8(path).map_err(|_| "node path is not utf-8".to_owned())?;
            let node = <NodeRecord as prost::Message>::decode(value).map_err(|err| format!("bad node: {err}"))?;
            Ok(Record::Node { path: path.to_owned(), node })
        }
        Some((&EVENT_PREFIX, index)) => {
            let index = u64::from_be_bytes(index.try_into().map_err(|_| "event key is not 8 bytes".to_owned())?);
            let record = <EventRecord as prost::Message>::decode(value).map_err(|err| format!("bad event: {err}"))?;
            Ok(Record::Event(HistoryEntry { index, event: event_from_record(record, index)? }))
        }
        _ if key == INDEX_KEY => {
            let bytes: [u8; 8] = value.try_into().map_err(|_| "index is not 8 bytes".to_owned())?;
            Ok(Record::Index(u64::from_be_bytes(bytes)))
        }
        _ => Err("unknown record".to_owned()),
    }
}

fn event_from_record(record: EventRecord, index: u64) -> Result<Option<Event>, String> {
    if record.internal {
        return Ok(None);
    }
    let action = action_from_number(record.action).ok_or_else(|| format!("unknown action {}", record.action))?;
    let node = record.node.ok_or_else(|| "event without a node".to_owned())?;
    Ok(Some(Event {
        action,
        node: node_view(node),
        prev_node: record.prev_node.map(node_view),
        index,
        refresh: record.refresh,
    }))
}

fn view_record(view: &NodeView) -> ViewRecord {
    ViewRecord {
        key: view.key.clone(),
        value: view.value.clone(),
        dir: view.dir,
        expiration: view.expiration,
        modified_index: view.modified_index,
        created_index: view.created_index,
    }
}

/// History events never list children, so `nodes` is not kept.
fn node_view(record: ViewRecord) -> NodeView {
    NodeView {
        key: record.key,
        value: record.value,
        dir: record.dir,
        expiration: record.expiration,
        nodes: None,
        modified_index: record.modified_index,
        created_index: record.created_index,
    }
}

// Numbers are part of the durable format: never renumber.
const ACTIONS: [(Action, u32); 8] = [
    (Action::Get, 1),
    (Action::Set, 2),
    (Action::Create, 3),
    (Action::Update, 4),
    (Action::CompareAndSwap, 5),
    (Action::Delete, 6),
    (Action::CompareAndDelete, 7),
    (Action::Expire, 8),
];

fn action_number(action: Action) -> u32 {
    ACTIONS.iter().find(|(known, _)| *known == action).map_or(0, |(_, number)| *number)
}

fn action_from_number(number: u32) -> Option<Action> {
    ACTIONS.iter().find(|(_, known)| *known == number).map(|(action, _)| *action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_number() {
        for (action, number) in ACTIONS {
            assert_eq!(action_number(action), number);
            assert_eq!(action_from_number(number), Some(action));
        }
        assert_eq!(action_from_number(0), None);
    }

    #[test]
    fn history_records_drop_the_entry_falling_out() {
        let mut changes = Vec::new();
        push_history(&mut changes, &HistoryEntry { index: 1000, event: None });
        assert_eq!(changes.len(), 2, "nothing falls out before the history is full");
        changes.clear();
        push_history(&mut changes, &HistoryEntry { index: 1001, event: None });
        assert_eq!(changes[1], Change::Delete { key: event_key(1) });
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(decode(b"x", b"").is_err());
        assert!(decode(b"", b"").is_err());
        assert!(decode(b"e\0\0", b"").is_err());
        assert!(decode(b"i", b"\0").is_err());
        assert!(decode(b"n/a", b"\xff\xff\xff").is_err());
        assert!(decode(b"n\xff", b"").is_err());
        let unknown_action = prost::Message::encode_to_vec(&EventRecord { action: 99, ..EventRecord::default() });
        assert!(decode(&event_key(3), &unknown_action).is_err());
    }
}
