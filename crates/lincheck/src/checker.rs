//! The generic search: histories, models and the checker itself.

use std::collections::HashSet;
use std::fmt::{self, Debug, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

/// One client operation as the client saw it: when it was invoked, and how
/// (or whether) it completed.
///
/// Times are any monotonic clock shared by all clients (a simulation's
/// logical time, a log's line numbers). Two operations whose intervals touch
/// (one returns at the very time the other is called) count as concurrent:
/// the checker never relies on an order the clock cannot show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who issued it; only used in explanations.
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// Invocation time.
    pub call: u64,
    /// How it completed.
    pub outcome: Outcome<O>,
}

/// How an operation completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The client got an answer at `time`.
    Returned {
        /// Return time; one earlier than the call counts as the call time.
        time: u64,
        /// The answer.
        output: O,
    },
    /// No answer (timeout, crash, lost connection): the operation may have
    /// taken effect at any point after its call, or never. It is checked as
    /// an operation that returns at +infinity with an output the model must
    /// accept whatever the operation did; an effect that never happened is
    /// the same as one placed after every other operation.
    ///
    /// A read-only operation without an answer had no effect and constrains
    /// nothing: drop it from the history rather than make the search carry it.
    Unknown,
}

impl<I, O> Operation<I, O> {
    /// An operation that got an answer.
    pub fn returned(client: u64, call: u64, input: I, ret: u64, output: O) -> Self {
        Operation { client, input, call, outcome: Outcome::Returned { time: ret, output } }
    }

    /// An operation whose outcome is unknown (see [`Outcome::Unknown`]).
    pub fn unknown(client: u64, call: u64, input: I) -> Self {
        Operation { client, input, call, outcome: Outcome::Unknown }
    }

    /// The answer, or `None` when the outcome is unknown.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }

    /// The return time, or `None` (+infinity) when the outcome is unknown.
    pub fn return_time(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Returned { time, .. } => Some(time.max(self.call)),
            Outcome::Unknown => None,
        }
    }
}

/// A sequential specification of the object the history was recorded on.
///
/// The model must be deterministic: from a state, an input and (when known)
/// an output there is at most one next state.
pub trait Model {
    /// The object's state. Hashed and compared to memoise the search, so it
    /// should be small and canonical (equal objects, equal states).
    type State: Clone + Eq + Hash + Debug;
    /// What a client asks.
    type Input: Debug;
    /// What a client is answered.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. `output` is the answer the client got, or
    /// `None` when the outcome is unknown, in which case any answer is
    /// acceptable. Returns the next state, or `None` when the answer is
    /// impossible from `state`.
    ///
    /// With `output` `None`, it must return `Some` from every state (an
    /// operation can always have happened somehow): the checker relies on it
    /// to leave operations with unknown outcome at the end when they are not
    /// needed.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;

    /// Splits a history into independent parts, as indices into `history`,
    /// each checked on its own from [`Model::init`]: a history is
    /// linearizable if and only if every part is (P-compositionality). Valid
    /// only when no operation of one part can affect or observe another's,
    /// e.g. a per-key split for single-key operations. Every operation must be
    /// in exactly one part. The default keeps the history whole.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects both real time and the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable(Counterexample),
    /// The time limit ran out first.
    Unknown,
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Why a history is not linearizable: the deepest point the search reached.
///
/// Indices are into the history given to [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The longest valid linearization found of the failing part of the
    /// history (see [`Model::partition`]), in order.
    pub linearized: Vec<usize>,
    /// The operation whose return was reached with no way to linearize it
    /// (nor anything else that could go before it) after `linearized`.
    pub unplaceable: usize,
    /// A readable account of the above with the operations and the model's
    /// state spelled out.
    pub explanation: String,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// Checks whether `history` is linearizable with respect to `model`, giving
/// up with [`Verdict::Unknown`] after `timeout`.
///
/// The search is deterministic: without a timeout, the same history always
/// gets the same verdict and the same counterexample.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], timeout: Option<Duration>) -> Verdict {
    let deadline = timeout.map(|t| Instant::now() + t);
    for part in model.partition(history) {
        // An index outside the history is the model's bug, not the history's;
        // it cannot name an operation, so it is left out.
        let part: Vec<usize> = part.into_iter().filter(|&i| i < history.len()).collect();
        match check_part(model, history, &part, deadline) {
            PartResult::Linearizable => {}
            PartResult::TimedOut => return Verdict::Unknown,
            PartResult::NotLinearizable(c) => return Verdict::NotLinearizable(c),
        }
    }
    Verdict::Linearizable
}

enum PartResult {
    Linearizable,
    NotLinearizable(Counterexample),
    TimedOut,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// The call and return events of one part, in time order, as a doubly linked
/// list whose nodes can be taken out and put back in LIFO order ("dancing
/// links"): linearizing an operation removes both its events, and
/// backtracking restores them in O(1).
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation (index into the part) of each node.
    op: Vec<usize>,
    /// For a call node, its return node; NIL for return nodes and the head.
    ret_of: Vec<usize>,
}

impl Events {
    fn new(ret_times: &[(u64, Option<u64>)]) -> Self {
        // (time, is_return, op): calls sort before returns at the same time,
        // so operations that merely touch are concurrent. An unknown outcome
        // returns after everything.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ret_times.len());
        for (op, &(call, ret)) in ret_times.iter().enumerate() {
            events.push((call, false, op));
            events.push((ret.unwrap_or(u64::MAX), true, op));
        }
        events.sort_unstable();
        let len = events.len() + 1;
        let mut list = Events {
            next: (1..=len).map(|n| if n == len { NIL } else { n }).collect(),
            prev: (0..len).map(|n| if n == 0 { NIL } else { n - 1 }).collect(),
            op: vec![NIL; len],
            ret_of: vec![NIL; len],
        };
        let mut call_node = vec![NIL; ret_times.len()];
        for (i, &(_, is_return, op)) in events.iter().enumerate() {
            let node = i + 1;
            list.op[node] = op;
            if is_return {
                list.ret_of[call_node[op]] = node;
            } else {
                call_node[op] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret_of[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.ret_of[call]);
        self.relink(call);
    }
}

struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Bitset(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    /// The set as the memo stores it: the words from the first that is not
    /// full to the last that is not empty. Operations are numbered in call
    /// order and mostly linearized in it, so that is a word or two where
    /// the whole set would take one bit per operation of the part: a
    /// 30-minute run's part holds about 100,000, and the memo one entry per
    /// step. Canonical: equal sets give equal keys.
    fn memo_key(&self) -> MemoKey {
        let full = self.0.iter().position(|&w| w != u64::MAX).unwrap_or(self.0.len());
        let end = self.0.iter().rposition(|&w| w != 0).map_or(full, |last| (last + 1).max(full));
        MemoKey { full: full as u32, rest: self.0[full..end].into() }
    }
}

/// See [`Bitset::memo_key`]: `full` words of ones, then `rest`, then zeros.
#[derive(Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    full: u32,
    rest: Box<[u64]>,
}

/// FxHash (rustc's hasher): the memo table is hashed on every step, and
/// SipHash's resistance to chosen keys buys nothing here.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The deepest dead end met so far, kept to explain a failure.
struct DeadEnd<S> {
    linearized: Vec<usize>,
    state: S,
    unplaceable: usize,
    /// Operations whose call preceded the unplaceable one's return: every
    /// one was tried next and none led anywhere.
    candidates: Vec<usize>,
}

/// Lowe's version of the Wing & Gong search, as Porcupine does it: walk the
/// events in time order; at a call, try to linearize that operation now
/// (model step, then lift its events out); at a return, the operation
/// returning was not linearized in time, so undo the latest choice and try
/// the next candidate. Configurations (operations linearized, state) already
/// explored are skipped, since the rest of the search depends on nothing else.
///
/// The search succeeds as soon as every operation with a known outcome is
/// placed: the unknown ones left can all go at the end, where nothing
/// observes them.
fn check_part<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    part: &[usize],
    deadline: Option<Instant>,
) -> PartResult {
    // Numbered in call order, which keeps the memo's keys small (see
    // Bitset::memo_key); ties keep the history's order, so the search stays
    // deterministic.
    let mut part = part.to_vec();
    part.sort_by_key(|&i| (history[i].call, i));
    let part = part.as_slice();
    let ops: Vec<&Operation<M::Input, M::Output>> = part.iter().map(|&i| &history[i]).collect();
    let mut known_left = ops.iter().filter(|op| op.return_time().is_some()).count();
    if known_left == 0 {
        return PartResult::Linearizable;
    }
    let mut events = Events::new(&ops.iter().map(|op| (op.call, op.return_time())).collect::<Vec<_>>());
    let mut linearized = Bitset::new(ops.len());
    let mut seen: HashSet<(MemoKey, M::State), BuildHasherDefault<FxHasher>> = HashSet::default();
    // The choices made, each with the state before it, to backtrack.
    let mut choices: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut dead_end: Option<DeadEnd<M::State>> = None;
    // How much of the dead end's `linearized` still matches `choices`: the
    // stack's lowest point since the dead end was recorded. A deeper one
    // then copies only what changed above it, which keeps recording linear
    // in the steps taken rather than in depth times dead ends (quadratic
    // on a part of tens of thousands of operations).
    let mut unchanged_below = 0;
    let mut node = events.next[HEAD];
    let mut steps: u64 = 0;

    // While known operations are left, so are their return events, which
    // every walk from the head reaches before the end of the list.
    loop {
        if steps % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return PartResult::TimedOut;
        }
        steps += 1;
        let op = events.op[node];
        if events.ret_of[node] != NIL {
            if let Some(next_state) = model.step(&state, &ops[op].input, ops[op].output()) {
                linearized.set(op);
                let fresh = seen.insert((linearized.memo_key(), next_state.clone()));
                linearized.clear(op);
                if fresh {
                    if ops[op].return_time().is_some() {
                        known_left -= 1;
                        if known_left == 0 {
                            return PartResult::Linearizable;
                        }
                    }
                    choices.push((node, std::mem::replace(&mut state, next_state)));
                    linearized.set(op);
                    events.lift(node);
                    node = events.next[HEAD];
                    continue;
                }
            }
            node = events.next[node];
        } else {
            if dead_end.as_ref().is_none_or(|d| choices.len() > d.linearized.len()) {
                let mut candidates = Vec::new();
                let mut n = events.next[HEAD];
                while n != node {
                    if events.ret_of[n] != NIL {
                        candidates.push(events.op[n]);
                    }
                    n = events.next[n];
                }
                let mut linearized = dead_end.take().map(|d| d.linearized).unwrap_or_default();
                linearized.truncate(unchanged_below);
                linearized.extend(choices[unchanged_below..].iter().map(|&(call, _)| events.op[call]));
                unchanged_below = choices.len();
                dead_end = Some(DeadEnd { linearized, state: state.clone(), unplaceable: op, candidates });
            }
            let Some((call, previous)) = choices.pop() else {
                let Some(dead_end) = dead_end else {
                    // Unreachable: this very return recorded a dead end.
                    return PartResult::NotLinearizable(Counterexample {
                        linearized: Vec::new(),
                        unplaceable: part[op],
                        explanation: format!("operation #{} cannot be linearized", part[op]),
                    });
                };
                return PartResult::NotLinearizable(explain(&ops, part, dead_end));
            };
            unchanged_below = unchanged_below.min(choices.len());
            state = previous;
            let undone = events.op[call];
            linearized.clear(undone);
            if ops[undone].return_time().is_some() {
                known_left += 1;
            }
            events.unlift(call);
            node = events.next[call];
        }
    }
}

/// How many operations of the linearized prefix an explanation shows: the
/// last ones are those that led into the dead end.
const SHOWN_PREFIX: usize = 10;
const SHOWN_CANDIDATES: usize = 10;

fn explain<I: Debug, O: Debug, S: Debug>(
    ops: &[&Operation<I, O>],
    part: &[usize],
    dead_end: DeadEnd<S>,
) -> Counterexample {
    let describe = |op: usize| describe_operation(part[op], ops[op]);
    let mut text = format!(
        "not linearizable: operation {} cannot be linearized.\nThe longest linearization found covers {} of the {} \
         operations in its part of the history",
        describe(dead_end.unplaceable),
        dead_end.linearized.len(),
        ops.len()
    );
    if dead_end.linearized.is_empty() {
        text.push_str(" (none could go first)");
    } else {
        let skipped = dead_end.linearized.len().saturating_sub(SHOWN_PREFIX);
        if skipped > 0 {
            let _ = write!(text, "; its last {SHOWN_PREFIX}:");
        } else {
            text.push(':');
        }
        for &op in &dead_end.linearized[skipped..] {
            let _ = write!(text, "\n  {}", describe(op));
        }
    }
    let _ = write!(text, "\nleaving the state {:?}, from which none of these could go next:", dead_end.state);
    for &op in dead_end.candidates.iter().take(SHOWN_CANDIDATES) {
        let _ = write!(text, "\n  {}", describe(op));
    }
    if dead_end.candidates.len() > SHOWN_CANDIDATES {
        let _ = write!(text, "\n  ... and {} more", dead_end.candidates.len() - SHOWN_CANDIDATES);
    }
    Counterexample {
        linearized: dead_end.linearized.iter().map(|&op| part[op]).collect(),
        unplaceable: part[dead_end.unplaceable],
        explanation: text,
    }
}

fn describe_operation<I: Debug, O: Debug>(index: usize, op: &Operation<I, O>) -> String {
    match &op.outcome {
        Outcome::Returned { output, .. } => format!(
            "#{index} (client {}, {}..{}) {:?} -> {:?}",
            op.client,
            op.call,
            op.return_time().unwrap_or(op.call),
            op.input,
            output
        ),
        Outcome::Unknown => format!("#{index} (client {}, {}.., outcome unknown) {:?}", op.client, op.call, op.input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter: `Some(n)` inputs add n and return nothing, `None` reads.
    struct Counter;

    impl Model for Counter {
        type State = u64;
        type Input = Option<u64>;
        type Output = u64;

        fn init(&self) -> u64 {
            0
        }

        fn step(&self, state: &u64, input: &Option<u64>, output: Option<&u64>) -> Option<u64> {
            match (input, output) {
                (Some(n), _) => Some(state + n),
                (None, Some(seen)) => (seen == state).then_some(*state),
                (None, None) => Some(*state),
            }
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&Counter, &[], None), Verdict::Linearizable);
    }

    #[test]
    fn reads_may_reorder_only_while_concurrent() {
        let concurrent = [
            Operation::returned(0, 0, Some(1), 10, 0),
            Operation::returned(1, 1, None, 2, 1),
            Operation::returned(2, 3, None, 4, 0),
        ];
        // The read of 0 returns after the read of 1 was over: no order works.
        assert!(!check(&Counter, &concurrent, None).is_linearizable());
        let fine = [
            Operation::returned(0, 0, Some(1), 10, 0),
            Operation::returned(1, 1, None, 2, 0),
            Operation::returned(2, 3, None, 4, 1),
        ];
        assert_eq!(check(&Counter, &fine, None), Verdict::Linearizable);
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        let history = [Operation::returned(0, 0, Some(1), 5, 0), Operation::returned(1, 5, None, 6, 0)];
        assert_eq!(check(&Counter, &history, None), Verdict::Linearizable);
    }

    #[test]
    fn counterexample_names_the_stuck_operation() {
        let history = [
            Operation::returned(0, 0, Some(2), 1, 0),
            Operation::returned(0, 2, Some(3), 3, 0),
            Operation::returned(1, 4, None, 5, 2),
        ];
        let Verdict::NotLinearizable(c) = check(&Counter, &history, None) else { panic!("expected a counterexample") };
        assert_eq!(c.unplaceable, 2);
        assert_eq!(c.linearized, vec![0, 1]);
        assert!(c.explanation.contains("#2 (client 1, 4..5) None -> 2"), "{}", c.explanation);
        assert!(c.explanation.contains("state 5"), "{}", c.explanation);
    }

    #[test]
    fn memo_keys_are_canonical_and_short() {
        let key = |bits: &[usize]| {
            let mut set = Bitset::new(1000);
            bits.iter().for_each(|&b| set.set(b));
            set.memo_key()
        };
        let prefix: Vec<usize> = (0..130).collect();
        let with = |extra: &[usize]| [prefix.as_slice(), extra].concat();
        // Two full words, then the third up to the last set bit.
        let k = key(&with(&[200]));
        assert_eq!((k.full, k.rest.len()), (2, 2));
        assert!(key(&with(&[200])) == k);
        assert!(key(&with(&[201])) != k);
        assert!(key(&with(&[])) != k);
        assert!(key(&prefix[..129]) != key(&prefix));
        assert_eq!(key(&[]).rest.len(), 0);
        // Set, then cleared, as the search does: the key is the set's, not
        // the history of its changes.
        let mut set = Bitset::new(1000);
        with(&[200]).iter().for_each(|&b| set.set(b));
        set.set(999);
        set.clear(999);
        assert!(set.memo_key() == k);
        let everything = key(&(0..1000).collect::<Vec<_>>());
        assert_eq!((everything.full, everything.rest.len()), (15, 1));
        let whole_words = {
            let mut set = Bitset::new(128);
            (0..128).for_each(|b| set.set(b));
            set.memo_key()
        };
        assert_eq!((whole_words.full, whole_words.rest.len()), (2, 0));
    }

    #[test]
    fn operations_are_searched_in_call_order_whatever_the_history_order() {
        // Recorded as they completed, not as they were called; the
        // counterexample still names history indices.
        let history = [
            Operation::returned(1, 4, None, 5, 2),
            Operation::returned(0, 2, Some(3), 3, 0),
            Operation::returned(0, 0, Some(2), 1, 0),
        ];
        let Verdict::NotLinearizable(c) = check(&Counter, &history, None) else { panic!("expected a counterexample") };
        assert_eq!(c.unplaceable, 0);
        assert_eq!(c.linearized, vec![2, 1]);
    }

    #[test]
    fn zero_timeout_gives_unknown() {
        let history = [Operation::returned(0, 0, Some(1), 1, 0)];
        assert_eq!(check(&Counter, &history, Some(Duration::ZERO)), Verdict::Unknown);
    }
}
