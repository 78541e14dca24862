//! An etcd-like key/value store, checked key by key.

use std::collections::BTreeMap;
use std::fmt;

use crate::checker::{Model, Operation};

/// What a client asks of the store. Every operation touches one key, which
/// is what lets [`KvModel`] check each key on its own.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Set a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// A transaction that sets `key` to `new` if its value is `expected`
    /// (`None`: if the key does not exist).
    CompareAndSwap {
        /// The key.
        key: Vec<u8>,
        /// The value the key must hold, or `None` for "absent".
        expected: Option<Vec<u8>>,
        /// The value to set.
        new: Vec<u8>,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Delete { key }
            | KvInput::CompareAndSwap { key, .. } => key,
        }
    }
}

/// What a client is answered; the variant must match the input's, or the
/// answer is impossible.
///
/// Revisions are optional: a client that reports them gets them checked too
/// (per key: writes take strictly increasing revisions, reads see the
/// revision of the write they read), one that leaves them `None` gets only
/// values checked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value read, `None` if the key did not exist.
    Get {
        /// The value.
        value: Option<Vec<u8>>,
        /// The key's `mod_revision`, if reported.
        mod_revision: Option<u64>,
    },
    /// The put took effect.
    Put {
        /// The revision of the write (the response header's), if reported.
        revision: Option<u64>,
    },
    /// The delete was applied.
    Delete {
        /// Whether the key existed (etcd's `deleted` count was 1).
        deleted: bool,
        /// The response header's revision, if reported.
        revision: Option<u64>,
    },
    /// The transaction was applied.
    CompareAndSwap {
        /// Whether the comparison held and the value was set.
        succeeded: bool,
        /// The response header's revision, if reported.
        revision: Option<u64>,
    },
}

impl KvOutput {
    /// A read of `value` without a revision.
    pub fn get(value: Option<&[u8]>) -> Self {
        KvOutput::Get { value: value.map(<[u8]>::to_vec), mod_revision: None }
    }

    /// An acknowledged put without a revision.
    pub fn put() -> Self {
        KvOutput::Put { revision: None }
    }

    /// An acknowledged delete without a revision.
    pub fn delete(deleted: bool) -> Self {
        KvOutput::Delete { deleted, revision: None }
    }

    /// An acknowledged compare-and-swap without a revision.
    pub fn compare_and_swap(succeeded: bool) -> Self {
        KvOutput::CompareAndSwap { succeeded, revision: None }
    }
}

/// A key/value operation with its answer.
pub type KvOperation = Operation<KvInput, KvOutput>;

/// What the model knows of one key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyState {
    /// The value, `None` if absent.
    pub value: Option<Vec<u8>>,
    /// The revision of the last write that changed the key (a put, a
    /// successful swap, a delete that removed it).
    pub revision: Revision,
}

/// What the model knows of a key's last write's revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Revision {
    /// Reported by the write or by a read.
    Exact(u64),
    /// Greater than this (0: nothing known): a write whose revision was not
    /// reported came after one whose revision was. Deliberately not bumped
    /// by each such write, so that histories that report no revisions keep
    /// one state per value and the search stays small.
    After(u64),
}

impl Default for Revision {
    fn default() -> Self {
        Revision::After(0)
    }
}

impl Revision {
    /// A bound the last write's revision is at least.
    fn floor(self) -> u64 {
        match self {
            Revision::Exact(r) | Revision::After(r) => r,
        }
    }
}

/// The store's contents. Keys with neither a value nor a known revision
/// are left out, so that equal contents are equal states.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KvState(BTreeMap<Vec<u8>, KeyState>);

impl KvState {
    /// What is known of `key`.
    pub fn key(&self, key: &[u8]) -> Option<&KeyState> {
        self.0.get(key)
    }

    fn with(&self, key: &[u8], state: KeyState) -> Self {
        let mut next = self.clone();
        if state == KeyState::default() {
            next.0.remove(key);
        } else {
            next.0.insert(key.to_vec(), state);
        }
        next
    }
}

/// An etcd-like store of byte-string keys and values, initially empty.
/// Histories are split by key: each key is an independent register.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, state: &KvState, input: &KvInput, output: Option<&KvOutput>) -> Option<KvState> {
        let key = input.key();
        let current = state.key(key).cloned().unwrap_or_default();
        let next = match (input, output) {
            (KvInput::Get { .. }, None) => return Some(state.clone()),
            (KvInput::Get { .. }, Some(KvOutput::Get { value, mod_revision })) => {
                if *value != current.value {
                    return None;
                }
                match (value, mod_revision, current.revision) {
                    (Some(_), Some(seen), Revision::Exact(known)) if *seen != known => return None,
                    (Some(_), Some(seen), Revision::After(floor)) if *seen <= floor => return None,
                    // A read of a value whose write's revision was not reported tells it.
                    (Some(_), Some(seen), Revision::After(_)) => {
                        KeyState { revision: Revision::Exact(*seen), ..current }
                    }
                    _ => return Some(state.clone()),
                }
            }
            (KvInput::Put { value, .. }, None) => write(&current, Some(value.clone()), None)?,
            (KvInput::Put { value, .. }, Some(KvOutput::Put { revision })) => {
                write(&current, Some(value.clone()), *revision)?
            }
            (KvInput::Delete { .. }, output) => {
                let existed = current.value.is_some();
                let revision = match output {
                    None => None,
                    Some(KvOutput::Delete { deleted, revision }) if *deleted == existed => *revision,
                    Some(_) => return None,
                };
                if existed {
                    write(&current, None, revision)?
                } else {
                    // Deleting nothing writes nothing (etcd keeps its revision).
                    unchanged(&current, revision)?;
                    return Some(state.clone());
                }
            }
            (KvInput::CompareAndSwap { expected, new, .. }, output) => {
                let swaps = current.value == *expected;
                let revision = match output {
                    None => None,
                    Some(KvOutput::CompareAndSwap { succeeded, revision }) if *succeeded == swaps => *revision,
                    Some(_) => return None,
                };
                if swaps {
                    write(&current, Some(new.clone()), revision)?
                } else {
                    unchanged(&current, revision)?;
                    return Some(state.clone());
                }
            }
            _ => return None,
        };
        Some(state.with(key, next))
    }

    fn partition(&self, history: &[KvOperation]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
        for (i, op) in history.iter().enumerate() {
            by_key.entry(op.input.key()).or_default().push(i);
        }
        by_key.into_values().collect()
    }
}

/// A write at `revision` (if reported) must come after the key's last one.
fn write(current: &KeyState, value: Option<Vec<u8>>, revision: Option<u64>) -> Option<KeyState> {
    let revision = match revision {
        Some(r) if r <= current.revision.floor() => return None,
        Some(r) => Revision::Exact(r),
        None => Revision::After(current.revision.floor()),
    };
    Some(KeyState { value, revision })
}

/// An operation that wrote nothing reports the store's revision, which is at
/// least the key's last write's.
fn unchanged(current: &KeyState, revision: Option<u64>) -> Option<()> {
    match revision {
        Some(now) if now < current.revision.floor() => None,
        _ => Some(()),
    }
}

/// Shows bytes as a string where they are text, which keys and values in
/// tests and simulations usually are.
struct Bytes<'a>(&'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

struct MaybeBytes<'a>(Option<&'a [u8]>);

impl fmt::Debug for MaybeBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(b) => Bytes(b).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Debug for KvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvInput::Get { key } => write!(f, "get({:?})", Bytes(key)),
            KvInput::Put { key, value } => write!(f, "put({:?}, {:?})", Bytes(key), Bytes(value)),
            KvInput::Delete { key } => write!(f, "delete({:?})", Bytes(key)),
            KvInput::CompareAndSwap { key, expected, new } => write!(
                f,
                "compare_and_swap({:?}, expected {:?}, new {:?})",
                Bytes(key),
                MaybeBytes(expected.as_deref()),
                Bytes(new)
            ),
        }
    }
}

fn fmt_revision(f: &mut fmt::Formatter<'_>, label: &str, revision: Option<u64>) -> fmt::Result {
    match revision {
        Some(r) => write!(f, " @{label}{r}"),
        None => Ok(()),
    }
}

impl fmt::Debug for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOutput::Get { value, mod_revision } => {
                write!(f, "{:?}", MaybeBytes(value.as_deref()))?;
                fmt_revision(f, "mod_revision ", *mod_revision)
            }
            KvOutput::Put { revision } => {
                f.write_str("ok")?;
                fmt_revision(f, "revision ", *revision)
            }
            KvOutput::Delete { deleted, revision } => {
                f.write_str(if *deleted { "deleted" } else { "nothing to delete" })?;
                fmt_revision(f, "revision ", *revision)
            }
            KvOutput::CompareAndSwap { succeeded, revision } => {
                f.write_str(if *succeeded { "swapped" } else { "refused" })?;
                fmt_revision(f, "revision ", *revision)
            }
        }
    }
}

impl fmt::Debug for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", MaybeBytes(self.value.as_deref()))?;
        match self.revision {
            Revision::Exact(r) => write!(f, " @revision {r}"),
            Revision::After(0) => Ok(()),
            Revision::After(r) => write!(f, " @revision > {r}"),
        }
    }
}

impl fmt::Debug for KvState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (Bytes(k), v))).finish()
    }
}
