//! A linearizability checker for client histories.
//!
//! A history is what clients saw: each [`Operation`] has an invocation
//! time, an input, and either a return time with an output or an unknown
//! outcome (the client timed out or crashed, so the operation may or may not
//! have taken effect). It is linearizable with respect to a sequential
//! [`Model`] if some total order of the operations respects real time (an
//! operation that returned before another was invoked comes first) and, run
//! through the model one at a time, gives every client the answer it got.
//! Operations with unknown outcome may take effect anywhere after their call,
//! or not at all.
//!
//! [`check`] searches for such an order as Porcupine does (Lowe's
//! refinement of Wing & Gong's algorithm): depth-first over the events in
//! time order, trying at each point every pending operation as the next
//! one, memoising (set of operations linearized, model state) pairs already
//! explored so that no configuration is searched twice. Models whose
//! operations fall into independent groups split the history first
//! ([`Model::partition`]; P-compositionality), which is what makes histories
//! of thousands of operations over tens of keys cheap: the search is
//! exponential only in the concurrency within one group. A failure comes
//! with a [`Counterexample`]: the longest linearization found and the
//! operation that could not follow it.
//!
//! Cost: operations with unknown outcome stay candidates from their call to
//! the end of the history, so each one can double the configurations a
//! failing search must rule out. A few lost writes per key are cheap; many
//! (tens per key, with reads between them) can make a non-linearizable
//! history exhaust the timeout, which then yields [`Verdict::Unknown`].
//! Linearizable histories are found quickly either way. Read-only operations
//! with unknown outcome should be left out of the history: they constrain
//! nothing. Where the store's own history is at hand, resolve them first
//! ([`persisted::resolve_unknown`]): every write of unknown outcome, deletes
//! included, becomes one with a known effect and a return time, or goes.
//! Operations are numbered in call order within a part, and the memo keeps
//! the set of those linearized as the few words past its full prefix, so a
//! part of 100,000 operations costs bytes per configuration, not 12 KiB.

//! Models provided:
//! - [`RegisterModel`]: one integer register with read, write and
//!   compare-and-set, as in Jepsen's etcd test, with [`parse_register_history`]
//!   to read Jepsen's logs.
//! - [`KvModel`]: an etcd-like key/value store (get, put, delete,
//!   compare-and-swap, optionally checking revisions), split by key.
//!
//! Checkers for runs of a real cluster (`cargo xtask robustness`), against
//! the store's own history as a watch from revision 1 reports it
//! ([`events`]): unknown writes resolved and acknowledged writes found
//! ([`persisted`]), etcd's watch guarantees ([`watch`]), lease safety
//! ([`lease`]) and lock safety with fencing revisions ([`lock`]).

mod checker;
pub mod events;
mod jepsen;
mod kv;
pub mod lease;
pub mod lock;
pub mod persisted;
mod register;
pub mod watch;

pub use checker::{check, Counterexample, Model, Operation, Outcome, Verdict};
pub use jepsen::{parse_register_history, ParseError, RegisterOperation};
pub use kv::{KeyState, KvInput, KvModel, KvOperation, KvOutput, KvState, Revision};
pub use register::{RegisterInput, RegisterModel, RegisterOutput};
