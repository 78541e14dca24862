//! The tree, the global index and the write operations (etcd's
//! `v2store/store.go`).
//!
//! API CONTRACT (fixed; other crates code against it):
//! - keys given to the store are user keys as the URL names them after
//!   `/v2/keys`, already cleaned: `/` is the root, `/a/b` a node; no trailing
//!   slash except the root. Causes in errors are user keys too.
//! - every successful write (and every expired node, and every
//!   [`Write::Internal`] step) takes exactly one index; refused writes take
//!   none and return `Err` with the store index at the time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::ErrorCode;
use crate::history::{Cleared, History, HistoryEntry};
use crate::record::{self, Record};
use crate::watch::Hub;
use crate::{Nanos, V2Error, HISTORY_LEN};

/// What a client sees of a node (etcd's `NodeExtern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Empty for the root.
    pub key: String,
    /// `None` for directories, and for the node of delete, compareAndDelete
    /// and expire events.
    pub value: Option<String>,
    pub dir: bool,
    pub expiration: Option<Nanos>,
    /// Children, for directory reads with at least one visible child.
    pub nodes: Option<Vec<NodeView>>,
    pub modified_index: u64,
    pub created_index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Get,
    Set,
    Create,
    Update,
    CompareAndSwap,
    Delete,
    CompareAndDelete,
    Expire,
}

impl Action {
    /// The `action` string of the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }
}

/// One result of a read or a write, and one entry of the watch history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: Action,
    pub node: NodeView,
    pub prev_node: Option<NodeView>,
    /// The store index the event was produced at (`X-Etcd-Index` of a write;
    /// the current index for a get).
    pub index: u64,
    /// A TTL refresh: recorded in the history, never sent to watchers.
    pub refresh: bool,
}

/// A write, as replicated through raft. Expirations are absolute (the
/// receiving member's `now + ttl`), so every member applies the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// PUT without conditions. `dir` replaces a file by an empty directory.
    Set {
        key: String,
        value: String,
        dir: bool,
        expire: Option<Nanos>,
        refresh: bool,
    },
    /// PUT `prevExist=false` (`unique: false`), or POST (`unique: true`: a new
    /// in-order key `<key>/<20-digit index>` is created under `key`).
    Create {
        key: String,
        value: String,
        dir: bool,
        unique: bool,
        expire: Option<Nanos>,
    },
    /// PUT `prevExist=true` without compare.
    Update {
        key: String,
        value: String,
        expire: Option<Nanos>,
        refresh: bool,
    },
    /// PUT with `prevValue` (empty = no value compare) and/or `prevIndex`
    /// (0 = no index compare).
    CompareAndSwap {
        key: String,
        prev_value: String,
        prev_index: u64,
        value: String,
        expire: Option<Nanos>,
        refresh: bool,
    },
    /// DELETE; `recursive` implies `dir`.
    Delete {
        key: String,
        dir: bool,
        recursive: bool,
    },
    CompareAndDelete {
        key: String,
        prev_value: String,
        prev_index: u64,
    },
    /// The leader's clock: every node whose expiration is `<= now` expires,
    /// in expiration order, one index and one `expire` event each.
    Expire {
        now: Nanos,
    },
    /// Cluster bookkeeping etcd keeps in the v2 store under `/0` (member
    /// added: 1, attributes published: 1, peer URLs updated: 1, removed: 2,
    /// cluster version set: 1). Each step takes an index and a history
    /// slot no user watch can match, so `X-Etcd-Index` moves as etcd's.
    Internal {
        steps: u32,
    },
}

/// A record to make durable, in the caller's own keyspace. Applied in order,
/// in the same atomic batch as the raft index of the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// The counters of `/v2/stats/store`, in its JSON order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub gets_success: u64,
    pub gets_fail: u64,
    pub sets_success: u64,
    pub sets_fail: u64,
    pub delete_success: u64,
    pub delete_fail: u64,
    pub update_success: u64,
    pub update_fail: u64,
    pub create_success: u64,
    pub create_fail: u64,
    pub compare_and_swap_success: u64,
    pub compare_and_swap_fail: u64,
    pub compare_and_delete_success: u64,
    pub compare_and_delete_fail: u64,
    pub expire_count: u64,
    pub watchers: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("v2 store record {key:?}: {reason}")]
pub struct LoadError {
    pub key: Vec<u8>,
    pub reason: String,
}

/// A node of the tree. The root is a directory with both indexes 0, which is
/// why its JSON has neither.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    created_index: u64,
    /// Stays put on a directory when its children change, and when its TTL is
    /// updated (etcd's `Write` refuses directories; the response still shows
    /// the new index).
    modified_index: u64,
    expiration: Option<Nanos>,
    content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    File(String),
    /// Ordered by name, which is also the order by key `sorted=true` asks for.
    Dir(BTreeMap<String, Node>),
}

impl Node {
    fn new(content: Content, index: u64, expiration: Option<Nanos>) -> Node {
        Node { created_index: index, modified_index: index, expiration, content }
    }

    fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }

    /// A directory reads as the empty value (etcd's `node.Value`).
    fn value(&self) -> &str {
        match &self.content {
            Content::File(value) => value,
            Content::Dir(_) => "",
        }
    }

    fn record(&self) -> record::NodeRecord {
        record::NodeRecord {
            created_index: self.created_index,
            modified_index: self.modified_index,
            expiration: self.expiration,
            dir: self.is_dir(),
            value: self.value().to_owned(),
        }
    }

    /// etcd's `Repr`: directories list their children only when recursive.
    fn view(&self, path: &str, recursive: bool) -> NodeView {
        NodeView {
            key: view_key(path),
            value: match &self.content {
                Content::File(value) => Some(value.clone()),
                Content::Dir(_) => None,
            },
            dir: self.is_dir(),
            expiration: self.expiration,
            nodes: if recursive { self.visible_children(path, true) } else { None },
            modified_index: self.modified_index,
            created_index: self.created_index,
        }
    }

    /// The children a listing shows: hidden ones (`_x`) and all below them
    /// left out; `None` when nothing is left, as etcd then omits `nodes`.
    fn visible_children(&self, path: &str, recursive: bool) -> Option<Vec<NodeView>> {
        let Content::Dir(children) = &self.content else { return None };
        let views: Vec<NodeView> = children
            .iter()
            .filter(|(name, _)| !name.starts_with('_'))
            .map(|(name, child)| child.view(&child_path(path, name), recursive))
            .collect();
        (!views.is_empty()).then_some(views)
    }

    /// Calls `visit` with every node of this subtree, children before their
    /// parent (the order etcd's removal callbacks run in).
    fn walk_subtree(&self, path: &str, visit: &mut impl FnMut(&str, &Node)) {
        if let Content::Dir(children) = &self.content {
            for (name, child) in children {
                child.walk_subtree(&child_path(path, name), visit);
            }
        }
        visit(path, self);
    }
}

/// A key as path components, cleaned the way etcd's `path.Clean` does (the
/// caller should already have; this keeps odd input from reaching the tree).
fn split_key(key: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for part in key.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name.to_owned()),
        }
    }
    parts
}

fn join_key(parts: &[String]) -> String {
    if parts.is_empty() {
        return "/".to_owned();
    }
    let mut key = String::new();
    for part in parts {
        key.push('/');
        key.push_str(part);
    }
    key
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The root's key is empty in what clients see (etcd's `/1` trimmed away).
fn view_key(path: &str) -> String {
    if path == "/" {
        String::new()
    } else {
        path.to_owned()
    }
}

/// etcd's `internalGet` walk: 104 at a file on the way (cause: the file),
/// 100 at the first missing component (cause: that key).
fn find<'a>(root: &'a Node, parts: &[String], index: u64) -> Result<&'a Node, V2Error> {
    let mut node = root;
    for (depth, name) in parts.iter().enumerate() {
        let Content::Dir(children) = &node.content else {
            return Err(V2Error::new(ErrorCode::NotDir, join_key(&parts[..depth]), index));
        };
        node = children
            .get(name)
            .ok_or_else(|| V2Error::new(ErrorCode::KeyNotFound, join_key(&parts[..=depth]), index))?;
    }
    Ok(node)
}

fn find_mut<'a>(root: &'a mut Node, parts: &[String], index: u64) -> Result<&'a mut Node, V2Error> {
    let mut node = root;
    for (depth, name) in parts.iter().enumerate() {
        let Content::Dir(children) = &mut node.content else {
            return Err(V2Error::new(ErrorCode::NotDir, join_key(&parts[..depth]), index));
        };
        node = children
            .get_mut(name)
            .ok_or_else(|| V2Error::new(ErrorCode::KeyNotFound, join_key(&parts[..=depth]), index))?;
    }
    Ok(node)
}

/// etcd's `getCompareFailCause`.
fn compare(node: &Node, prev_value: &str, prev_index: u64, index: u64) -> Result<(), V2Error> {
    let value_matches = prev_value.is_empty() || node.value() == prev_value;
    let index_matches = prev_index == 0 || node.modified_index == prev_index;
    let value_cause = || format!("[{prev_value} != {}]", node.value());
    let index_cause = || format!("[{prev_index} != {}]", node.modified_index);
    let cause = match (value_matches, index_matches) {
        (true, true) => return Ok(()),
        (false, true) => value_cause(),
        (true, false) => index_cause(),
        (false, false) => format!("{} {}", value_cause(), index_cause()),
    };
    Err(V2Error::new(ErrorCode::TestFailed, cause, index))
}

fn event(action: Action, node: NodeView, prev_node: Option<NodeView>) -> Event {
    Event { action, index: node.modified_index, node, prev_node, refresh: false }
}

/// A removal's `node`: key, `dir`, the removal's index, the old createdIndex.
fn removal_view(path: &str, node: &Node, index: u64) -> NodeView {
    NodeView {
        key: view_key(path),
        value: None,
        dir: node.is_dir(),
        expiration: None,
        nodes: None,
        modified_index: index,
        created_index: node.created_index,
    }
}

fn tally<T, E>(result: &Result<T, E>, success: &mut u64, fail: &mut u64) {
    match result {
        Ok(_) => *success += 1,
        Err(_) => *fail += 1,
    }
}

/// The write counters of `/v2/stats/store`.
#[derive(Debug, Default)]
struct WriteCounters {
    sets_success: u64,
    sets_fail: u64,
    delete_success: u64,
    delete_fail: u64,
    update_success: u64,
    update_fail: u64,
    create_success: u64,
    create_fail: u64,
    compare_and_swap_success: u64,
    compare_and_swap_fail: u64,
    compare_and_delete_success: u64,
    compare_and_delete_fail: u64,
    expire_count: u64,
}

/// The v2 store. Not internally synchronised except for its watchers: the
/// caller serialises `apply` (raft order) and reads behind one lock.
pub struct Store {
    root: Node,
    index: u64,
    history: History,
    /// Every node with a TTL, by (expiration, path): the expiry order, ties
    /// broken by key so every member removes the same nodes in the same order.
    expirations: BTreeSet<(Nanos, String)>,
    writes: WriteCounters,
    gets_success: AtomicU64,
    gets_fail: AtomicU64,
    hub: Arc<Mutex<Hub>>,
}

impl Store {
    /// An empty store at index 0 (the root directory only).
    pub fn new() -> Store {
        Store {
            root: Node::new(Content::Dir(BTreeMap::new()), 0, None),
            index: 0,
            history: History::default(),
            expirations: BTreeSet::new(),
            writes: WriteCounters::default(),
            gets_success: AtomicU64::new(0),
            gets_fail: AtomicU64::new(0),
            hub: Arc::default(),
        }
    }

    /// Rebuilds the store from every record its `Change`s left (in any
    /// order, as a key-ordered scan of the caller's keyspace yields them).
    pub fn load(records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Store, LoadError> {
        let mut store = Store::new();
        let mut nodes = Vec::new();
        let mut entries = Vec::new();
        for (key, value) in records {
            match record::decode(&key, &value) {
                Ok(Record::Node { path, node }) => nodes.push((path, node, key)),
                Ok(Record::Event(entry)) => entries.push(entry),
                Ok(Record::Index(index)) => store.index = index,
                Err(reason) => return Err(LoadError { key, reason }),
            }
        }
        // A parent's path is a prefix of its children's, so sorting puts
        // every directory before what it holds.
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, record, key) in nodes {
            store.load_node(&path, record).map_err(|reason| LoadError { key, reason: reason.to_owned() })?;
        }
        entries.sort_by_key(|entry| entry.index);
        if let Some(last) = entries.last().filter(|last| last.index > store.index) {
            return Err(LoadError {
                key: b"i".to_vec(),
                reason: format!("history reaches index {} past the store index {}", last.index, store.index),
            });
        }
        let skip = entries.len().saturating_sub(HISTORY_LEN);
        for entry in entries.into_iter().skip(skip) {
            store.history.push(entry);
        }
        Ok(store)
    }

    fn load_node(&mut self, path: &str, record: record::NodeRecord) -> Result<(), &'static str> {
        let mut parts = split_key(path);
        if join_key(&parts) != path {
            return Err("node path is not a clean key");
        }
        let name = parts.pop().ok_or("a record for the root")?;
        let parent = find_mut(&mut self.root, &parts, 0).map_err(|_| "node without its parent directory")?;
        let Content::Dir(children) = &mut parent.content else { return Err("node under a file") };
        let content = if record.dir { Content::Dir(BTreeMap::new()) } else { Content::File(record.value) };
        let node = Node {
            created_index: record.created_index,
            modified_index: record.modified_index,
            expiration: record.expiration,
            content,
        };
        if children.insert(name, node).is_some() {
            return Err("node recorded twice");
        }
        if let Some(expiration) = record.expiration {
            self.expirations.insert((expiration, path.to_owned()));
        }
        Ok(())
    }

    /// The current index (`X-Etcd-Index`).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// GET: the node at `key` (children listed when a directory; the whole
    /// subtree with `recursive`; sorted by key at every level with `sorted`).
    /// Hidden children (last component starting with `_`) are left out.
    ///
    /// Children always come sorted: Go's map order is random, so sorted is
    /// one of the orders etcd may give.
    pub fn get(&self, key: &str, recursive: bool, sorted: bool) -> Result<Event, V2Error> {
        let _ = sorted;
        let parts = split_key(key);
        let node = find(&self.root, &parts, self.index)?;
        let path = join_key(&parts);
        let mut view = node.view(&path, false);
        view.nodes = node.visible_children(&path, recursive);
        Ok(Event { action: Action::Get, node: view, prev_node: None, index: self.index, refresh: false })
    }

    /// Applies one replicated write: the outcome for the client, and the
    /// records to persist (none when refused). Watchers are notified.
    ///
    /// [`Write::Expire`] answers with its last `expire` event, or, when
    /// nothing was due, an `expire` of the root at the unchanged index.
    /// [`Write::Internal`] answers with a `set` of the internal key `/0` at the
    /// last index it took.
    pub fn apply(&mut self, write: &Write) -> (Result<Event, V2Error>, Vec<Change>) {
        let mut changes = Vec::new();
        let result = match write {
            Write::Set { key, value, dir, expire, refresh } => {
                let result = self.set(key, value, *dir, *expire, *refresh, &mut changes);
                tally(&result, &mut self.writes.sets_success, &mut self.writes.sets_fail);
                result
            }
            Write::Create { key, value, dir, unique, expire } => {
                let result = self.create(key, value, *dir, *unique, *expire, &mut changes);
                tally(&result, &mut self.writes.create_success, &mut self.writes.create_fail);
                result
            }
            Write::Update { key, value, expire, refresh } => {
                let result = self.update(key, value, *expire, *refresh, &mut changes);
                tally(&result, &mut self.writes.update_success, &mut self.writes.update_fail);
                result
            }
            Write::CompareAndSwap { key, prev_value, prev_index, value, expire, refresh } => {
                let result =
                    self.compare_and_swap(key, prev_value, *prev_index, value, *expire, *refresh, &mut changes);
                let counters = &mut self.writes;
                tally(&result, &mut counters.compare_and_swap_success, &mut counters.compare_and_swap_fail);
                result
            }
            Write::Delete { key, dir, recursive } => {
                let result = self.delete(key, *dir, *recursive, &mut changes);
                tally(&result, &mut self.writes.delete_success, &mut self.writes.delete_fail);
                result
            }
            Write::CompareAndDelete { key, prev_value, prev_index } => {
                let result = self.compare_and_delete(key, prev_value, *prev_index, &mut changes);
                let counters = &mut self.writes;
                tally(&result, &mut counters.compare_and_delete_success, &mut counters.compare_and_delete_fail);
                result
            }
            Write::Expire { now } => Ok(self.expire(*now, &mut changes)),
            Write::Internal { steps } => Ok(self.internal(*steps, &mut changes)),
        };
        match result {
            Ok(event) => (Ok(event), changes),
            Err(err) => (Err(err), Vec::new()),
        }
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        expire: Option<Nanos>,
        refresh: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Event, V2Error> {
        let parts = split_key(key);
        let existing = match find(&self.root, &parts, self.index) {
            Ok(node) => Some(node),
            Err(err) if err.code == ErrorCode::KeyNotFound && !refresh => None,
            Err(err) => return Err(err),
        };
        // A refresh keeps the value; the caller made sure none was given.
        let value = match existing {
            Some(node) if refresh => node.value().to_owned(),
            _ => value.to_owned(),
        };
        let mut event = self.create_node(parts, &value, dir, false, true, expire, Action::Set, changes)?;
        event.refresh = refresh;
        self.publish(&event, &[], changes);
        Ok(event)
    }

    fn create(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        unique: bool,
        expire: Option<Nanos>,
        changes: &mut Vec<Change>,
    ) -> Result<Event, V2Error> {
        let result = self.create_node(split_key(key), value, dir, unique, false, expire, Action::Create, changes);
        // etcd's internalCreate also counts a bad path as a failed set.
        if result.as_ref().is_err_and(|err| err.code == ErrorCode::NotDir) {
            self.writes.sets_fail += 1;
        }
        let event = result?;
        self.publish(&event, &[], changes);
        Ok(event)
    }

    /// etcd's `internalCreate`: makes a file or directory at `parts` (or, with
    /// `unique`, at a new in-order key below it), creating missing parent
    /// directories, replacing an existing file if `replace`. Nothing changes
    /// unless it succeeds.
    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &mut self,
        mut parts: Vec<String>,
        value: &str,
        dir: bool,
        unique: bool,
        replace: bool,
        expire: Option<Nanos>,
        action: Action,
        changes: &mut Vec<Change>,
    ) -> Result<Event, V2Error> {
        let (current, next) = (self.index, self.index + 1);
        if unique {
            parts.push(format!("{next:020}"));
        }
        let path = join_key(&parts);
        let Some((name, dir_parts)) = parts.split_last() else {
            return Err(V2Error::new(ErrorCode::RootReadOnly, "/", current));
        };

        // Check everything before touching anything: a refused write leaves
        // no trace, not even the directories it would have created.
        let mut existing_parent = Some(&self.root);
        for (depth, component) in dir_parts.iter().enumerate() {
            let Some(node) = existing_parent else { break };
            let Content::Dir(children) = &node.content else {
                return Err(V2Error::new(ErrorCode::NotDir, join_key(&dir_parts[..depth]), current));
            };
            existing_parent = children.get(component);
        }
        let mut prev_node = None;
        if let Some(parent) = existing_parent {
            let Content::Dir(children) = &parent.content else {
                return Err(V2Error::new(ErrorCode::NotDir, join_key(dir_parts), current));
            };
            if let Some(old) = children.get(name) {
                if !replace {
                    return Err(V2Error::new(ErrorCode::NodeExist, path, current));
                }
                if old.is_dir() {
                    return Err(V2Error::new(ErrorCode::NotFile, path, current));
                }
                prev_node = Some(old.view(&path, false));
            }
        }

        let mut parent = &mut self.root;
        let mut parent_path = "/".to_owned();
        for component in dir_parts {
            parent_path = child_path(&parent_path, component);
            let Content::Dir(children) = &mut parent.content else {
                return Err(V2Error::new(ErrorCode::NotDir, parent_path, current));
            };
            parent = children.entry(component.clone()).or_insert_with(|| {
                let implicit = Node::new(Content::Dir(BTreeMap::new()), next, None);
                changes.push(record::put_node(&parent_path, implicit.record()));
                implicit
            });
        }
        let Content::Dir(children) = &mut parent.content else {
            return Err(V2Error::new(ErrorCode::NotDir, parent_path, current));
        };
        let content = if dir { Content::Dir(BTreeMap::new()) } else { Content::File(value.to_owned()) };
        let node = Node::new(content, next, expire);
        let view = node.view(&path, false);
        changes.push(record::put_node(&path, node.record()));
        if let Some(old) = children.insert(name.clone(), node) {
            if let Some(expiration) = old.expiration {
                self.expirations.remove(&(expiration, path.clone()));
            }
        }
        if let Some(expiration) = expire {
            self.expirations.insert((expiration, path));
        }
        self.index = next;
        Ok(event(action, view, prev_node))
    }

    fn update(
        &mut self,
        key: &str,
        value: &str,
        expire: Option<Nanos>,
        refresh: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Event, V2Error> {
        let parts = split_key(key);
        let (current, next) = (self.index, self.index + 1);
        if parts.is_empty() {
            return Err(V2Error::new(ErrorCode::RootReadOnly, "/", current));
        }
        let path = join_key(&parts);
        let node = find_mut(&mut self.root, &parts, current)?;
        if node.is_dir() && !value.is_empty() {
            return Err(V2Error::new(ErrorCode::NotFile, path, current));
        }
        let prev_node = node.view(&path, false);
        if let Content::File(stored) = &mut node.content {
            if !refresh {
                *stored = value.to_owned();
            }
            node.modified_index = next;
        }
        let old_expiration = std::mem::replace(&mut node.expiration, expire);
        let mut view = node.view(&path, false);
        view.modified_index = next;
        changes.push(record::put_node(&path, node.record()));
        self.move_expiration(&path, old_expiration, expire);
        self.index = next;
        let mut event = event(Action::Update, view, Some(prev_node));
        event.refresh = refresh;
        self.publish(&event, &[], changes);
        Ok(event)
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_and_swap(
        &mut self,
        key: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        expire: Option<Nanos>,
        refresh: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Event, V2Error> {
        let parts = split_key(key);
        let (current, next) = (self.index, self.index + 1);
        if parts.is_empty() {
            return Err(V2Error::new(ErrorCode::RootReadOnly, "/", current));
        }
        let path = join_key(&parts);
        let node = find_mut(&mut self.root, &parts, current)?;
        let Content::File(stored) = &node.content else {
            return Err(V2Error::new(ErrorCode::NotFile, path, current));
        };
        compare(node, prev_value, prev_index, current)?;
        let value = if refresh { stored.clone() } else { value.to_owned() };
        let prev_node = node.view(&path, false);
        node.content = Content::File(value);
        node.modified_index = next;
        let old_expiration = std::mem::replace(&mut node.expiration, expire);
        let view = node.view(&path, false);
        changes.push(record::put_node(&path, node.record()));
        self.move_expiration(&path, old_expiration, expire);
        self.index = next;
        let mut event = event(Action::CompareAndSwap, view, Some(prev_node));
        event.refresh = refresh;
        self.publish(&event, &[], changes);
        Ok(event)
    }

    fn delete(&mut self, key: &str, dir: bool, recursive: bool, changes: &mut Vec<Change>) -> Result<Event, V2Error> {
        let parts = split_key(key);
        let (current, next) = (self.index, self.index + 1);
        if parts.is_empty() {
            return Err(V2Error::new(ErrorCode::RootReadOnly, "/", current));
        }
        let dir = dir || recursive;
        let path = join_key(&parts);
        let node = find(&self.root, &parts, current)?;
        if let Content::Dir(children) = &node.content {
            if !dir {
                return Err(V2Error::new(ErrorCode::NotFile, path, current));
            }
            // Hidden children count: etcd looks at the map, not the listing.
            if !children.is_empty() && !recursive {
                return Err(V2Error::new(ErrorCode::DirNotEmpty, path, current));
            }
        }
        let event = event(Action::Delete, removal_view(&path, node, next), Some(node.view(&path, false)));
        let removed = self.remove_subtree(&parts, changes);
        self.index = next;
        self.publish(&event, &removed, changes);
        Ok(event)
    }

    fn compare_and_delete(
        &mut self,
        key: &str,
        prev_value: &str,
        prev_index: u64,
        changes: &mut Vec<Change>,
    ) -> Result<Event, V2Error> {
        let parts = split_key(key);
        let (current, next) = (self.index, self.index + 1);
        let path = join_key(&parts);
        // No read-only check here in etcd: the root is refused as a directory,
        // with its trimmed (empty) key as the cause.
        let node = find(&self.root, &parts, current)?;
        if node.is_dir() {
            return Err(V2Error::new(ErrorCode::NotFile, view_key(&path), current));
        }
        compare(node, prev_value, prev_index, current)?;
        let event = event(Action::CompareAndDelete, removal_view(&path, node, next), Some(node.view(&path, false)));
        let removed = self.remove_subtree(&parts, changes);
        self.index = next;
        self.publish(&event, &removed, changes);
        Ok(event)
    }

    fn expire(&mut self, now: Nanos, changes: &mut Vec<Change>) -> Event {
        let mut last = None;
        while let Some((expiration, path)) = self.expirations.first().cloned() {
            if expiration > now {
                break;
            }
            let parts = split_key(&path);
            let Ok(node) = find(&self.root, &parts, self.index) else {
                // Unreachable while the index is kept with the tree; never
                // loop on a stale entry.
                self.expirations.remove(&(expiration, path));
                continue;
            };
            let next = self.index + 1;
            let event = event(Action::Expire, removal_view(&path, node, next), Some(node.view(&path, false)));
            let removed = self.remove_subtree(&parts, changes);
            self.index = next;
            self.writes.expire_count += 1;
            self.publish(&event, &removed, changes);
            last = Some(event);
        }
        last.unwrap_or_else(|| {
            let root = removal_view("/", &self.root, self.index);
            Event { action: Action::Expire, node: root, prev_node: None, index: self.index, refresh: false }
        })
    }

    fn internal(&mut self, steps: u32, changes: &mut Vec<Change>) -> Event {
        for _ in 0..steps {
            self.index += 1;
            let entry = HistoryEntry { index: self.index, event: None };
            record::push_history(changes, &entry);
            self.history.push(entry);
        }
        let node = NodeView {
            key: "/0".to_owned(),
            value: None,
            dir: true,
            expiration: None,
            nodes: None,
            modified_index: self.index,
            created_index: self.index,
        };
        Event { action: Action::Set, node, prev_node: None, index: self.index, refresh: false }
    }

    /// Detaches the node at `parts` (not the root) and forgets its subtree:
    /// records, expirations. Returns the removed paths, children first.
    fn remove_subtree(&mut self, parts: &[String], changes: &mut Vec<Change>) -> Vec<String> {
        let Some((name, parent_parts)) = parts.split_last() else { return Vec::new() };
        let detached = match find_mut(&mut self.root, parent_parts, self.index) {
            Ok(Node { content: Content::Dir(children), .. }) => children.remove(name),
            _ => None,
        };
        let mut removed = Vec::new();
        if let Some(node) = detached {
            node.walk_subtree(&join_key(parts), &mut |path, node| {
                if let Some(expiration) = node.expiration {
                    self.expirations.remove(&(expiration, path.to_owned()));
                }
                changes.push(record::delete_node(path));
                removed.push(path.to_owned());
            });
        }
        removed
    }

    fn move_expiration(&mut self, path: &str, old: Option<Nanos>, new: Option<Nanos>) {
        if let Some(old) = old {
            self.expirations.remove(&(old, path.to_owned()));
        }
        if let Some(new) = new {
            self.expirations.insert((new, path.to_owned()));
        }
    }

    /// Records the event in the history (and its records), then tells the
    /// watchers, except for refreshes, which etcd keeps from them.
    fn publish(&mut self, event: &Event, removed: &[String], changes: &mut Vec<Change>) {
        let entry = HistoryEntry { index: event.index, event: Some(event.clone()) };
        record::push_history(changes, &entry);
        self.history.push(entry);
        if !event.refresh {
            self.hub.lock().notify(event, removed);
        }
    }

    /// `wait=true`: the first matching event in the history from
    /// `wait_index` (0 = the next index) or, if none, a watcher for the
    /// next one (`stream`: all later ones). 401 if `wait_index` is older
    /// than the history.
    pub fn watch(&self, key: &str, recursive: bool, stream: bool, wait_index: u64) -> Result<crate::Watcher, V2Error> {
        let path = join_key(&split_key(key));
        let since = if wait_index == 0 { self.index + 1 } else { wait_index };
        match self.history.scan(&path, recursive, since) {
            Err(Cleared { oldest }) => Err(V2Error::new(
                ErrorCode::EventIndexCleared,
                format!("the requested history has been cleared [{oldest}/{since}]"),
                self.index,
            )),
            Ok(Some(event)) => Ok(crate::Watcher::answered(self.index, event.clone(), stream)),
            Ok(None) => Ok(Hub::register(&self.hub, path, recursive, stream, since, self.index)),
        }
    }

    /// The earliest expiration among the nodes with a TTL, if any: the
    /// leader proposes [`Write::Expire`] while there is one.
    pub fn next_expiration(&self) -> Option<Nanos> {
        self.expirations.first().map(|(expiration, _)| *expiration)
    }

    /// Counts etcd's own writes under `/0` in `/v2/stats/store` as etcd's
    /// store counts them ([`Write::Internal`] takes their indexes but does
    /// not say what they were): a member added is a create, its attributes
    /// published and the cluster version are sets, its peer URLs updated an
    /// update, and its removal a delete and a create.
    pub fn count_internal(&mut self, sets: u64, creates: u64, updates: u64, deletes: u64) {
        self.writes.sets_success += sets;
        self.writes.create_success += creates;
        self.writes.update_success += updates;
        self.writes.delete_success += deletes;
    }

    /// Counts a GET for `/v2/stats/store` (reads are not applied through
    /// `apply`, so the caller reports them).
    pub fn count_get(&self, success: bool) {
        let counter = if success { &self.gets_success } else { &self.gets_fail };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        let writes = &self.writes;
        Stats {
            gets_success: self.gets_success.load(Ordering::Relaxed),
            gets_fail: self.gets_fail.load(Ordering::Relaxed),
            sets_success: writes.sets_success,
            sets_fail: writes.sets_fail,
            delete_success: writes.delete_success,
            delete_fail: writes.delete_fail,
            update_success: writes.update_success,
            update_fail: writes.update_fail,
            create_success: writes.create_success,
            create_fail: writes.create_fail,
            compare_and_swap_success: writes.compare_and_swap_success,
            compare_and_swap_fail: writes.compare_and_swap_fail,
            compare_and_delete_success: writes.compare_and_delete_success,
            compare_and_delete_fail: writes.compare_and_delete_fail,
            expire_count: writes.expire_count,
            watchers: self.hub.lock().count() as u64,
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}
