//! Exactly-once bookkeeping for watch runs. Every put carries its number in
//! its value ([`PutTag`]); each watcher keeps a [`Ledger`]: a bit per put it
//! has seen, and the last revision it saw. An event is new, a duplicate (its
//! put was seen before), out of order (its revision is not above the last
//! one), or unexpected (not a put this watcher watches, or not ours). At the
//! end the ledgers add up to a [`Delivery`]: anything but "every expected
//! event once, in order, nothing else" fails the run.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::workload::digits;

/// Put number `n` written into the value: zero-padded decimal digits, then
/// filler up to the value size (`0000042vvvv`).
#[derive(Clone, Copy, Debug)]
pub struct PutTag {
    width: usize,
    val_size: usize,
}

impl PutTag {
    /// Tags for puts `0..puts` in `val_size`-byte values.
    pub fn new(puts: usize, val_size: usize) -> Result<Self> {
        let width = digits(puts.saturating_sub(1));
        if val_size < width {
            bail!("--val-size {val_size} cannot hold put numbers up to {puts} (needs {width} bytes)");
        }
        Ok(PutTag { width, val_size })
    }

    pub fn value(&self, n: usize) -> Vec<u8> {
        let mut value = format!("{n:0width$}", width = self.width).into_bytes();
        value.resize(self.val_size, b'v');
        value
    }

    /// The put number in `value`, if it is one of ours.
    pub fn parse(&self, value: &[u8]) -> Option<usize> {
        if value.len() != self.val_size {
            return None;
        }
        value[..self.width].iter().try_fold(0usize, |n, &b| {
            b.is_ascii_digit().then(|| n.checked_mul(10)?.checked_add(usize::from(b - b'0'))).flatten()
        })
    }
}

/// "1 event", "2 events".
fn events(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// What one event was to the watcher that received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An expected put, first time, in order: the only good answer.
    New,
    Duplicate,
    OutOfOrder,
    Unexpected,
}

/// One watcher's record of the puts it has seen.
#[derive(Debug)]
pub struct Ledger {
    puts: usize,
    seen: Vec<u64>,
    expected: usize,
    distinct: usize,
    last_revision: i64,
    duplicates: usize,
    out_of_order: usize,
    unexpected: usize,
    canceled: Option<String>,
}

impl Ledger {
    /// A watcher that should see `expected` of puts `0..puts`.
    pub fn new(puts: usize, expected: usize) -> Self {
        Ledger {
            puts,
            seen: vec![0; puts.div_ceil(64)],
            expected,
            distinct: 0,
            last_revision: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            canceled: None,
        }
    }

    /// One event: `put` is its put number (None when not one of ours),
    /// `wanted` whether this watcher watches that put's key.
    pub fn record(&mut self, put: Option<usize>, wanted: bool, revision: i64) -> Verdict {
        let Some(n) = put.filter(|&n| wanted && n < self.puts) else {
            self.unexpected += 1;
            return Verdict::Unexpected;
        };
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Verdict::Duplicate;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        let in_order = revision > self.last_revision;
        self.last_revision = self.last_revision.max(revision);
        if in_order {
            Verdict::New
        } else {
            self.out_of_order += 1;
            Verdict::OutOfOrder
        }
    }

    /// The server canceled the watch (it will see nothing more).
    pub fn cancel(&mut self, reason: String) {
        self.canceled.get_or_insert(reason);
    }

    /// Every expected put seen, or nothing more to wait for.
    pub fn is_done(&self) -> bool {
        self.distinct >= self.expected || self.canceled.is_some()
    }

    pub fn seen(&self, n: usize) -> bool {
        n < self.puts && self.seen[n / 64] & (1 << (n % 64)) != 0
    }

    /// The first put this watcher wanted and did not see.
    pub fn first_missing(&self, wanted: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.puts).find(|&n| wanted(n) && !self.seen(n))
    }
}

/// All the ledgers of a run, added up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub expected: usize,
    /// Distinct expected events received.
    pub delivered: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub unexpected: usize,
    pub canceled: usize,
    /// The first thing that went wrong, for the report.
    pub first_problem: Option<String>,
}

impl Delivery {
    /// Adds one watcher; `missing` names its first missing put, asked only when
    /// one is missing (`who` names the watcher).
    pub fn add(&mut self, ledger: &Ledger, who: impl Fn() -> String, missing: impl FnOnce() -> Option<usize>) {
        self.expected += ledger.expected;
        self.delivered += ledger.distinct.min(ledger.expected);
        self.duplicates += ledger.duplicates;
        self.out_of_order += ledger.out_of_order;
        self.unexpected += ledger.unexpected;
        if self.first_problem.is_some() {
            self.canceled += usize::from(ledger.canceled.is_some());
            return;
        }
        let problem = if let Some(reason) = &ledger.canceled {
            Some(format!("{} canceled by the server: {reason}", who()))
        } else if ledger.duplicates > 0 {
            Some(format!("{} received {} twice", who(), events(ledger.duplicates, "event")))
        } else if ledger.out_of_order > 0 {
            Some(format!("{} received {} out of revision order", who(), events(ledger.out_of_order, "event")))
        } else if ledger.unexpected > 0 {
            Some(format!("{} received {} it does not watch", who(), events(ledger.unexpected, "event")))
        } else if ledger.distinct < ledger.expected {
            let first = missing().map_or(String::new(), |n| format!(", first put {n}"));
            Some(format!(
                "{} missed {} of {}{first}",
                who(),
                ledger.expected - ledger.distinct,
                events(ledger.expected, "event")
            ))
        } else {
            None
        };
        self.canceled += usize::from(ledger.canceled.is_some());
        self.first_problem = problem;
    }

    /// Records a problem outside any ledger (a broken stream, a failed put).
    pub fn note(&mut self, problem: String) {
        self.first_problem.get_or_insert(problem);
    }

    pub fn missing(&self) -> usize {
        self.expected - self.delivered
    }

    /// Every expected event exactly once, in order, nothing else, nothing wrong.
    pub fn is_exact(&self) -> bool {
        self.missing() == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.unexpected == 0
            && self.canceled == 0
            && self.first_problem.is_none()
    }

    /// Events that were wrong: missing, repeated, out of order or foreign.
    pub fn problems(&self) -> usize {
        self.missing() + self.duplicates + self.out_of_order + self.unexpected
    }

    /// "Events delivered: 10 of 10 expected, each exactly once, in order."
    pub fn render(&self) -> String {
        let mut out = format!("Events delivered: {} of {} expected", self.delivered, self.expected);
        if self.is_exact() {
            out.push_str(", each exactly once, in order.");
            return out;
        }
        let mut wrong = Vec::new();
        for (count, what) in [
            (self.missing(), "missing"),
            (self.duplicates, "duplicated"),
            (self.out_of_order, "out of order"),
            (self.unexpected, "unexpected"),
            (self.canceled, "watches canceled"),
        ] {
            if count > 0 {
                wrong.push(format!("{count} {what}"));
            }
        }
        let _ = write!(out, "; FAILED: {}", if wrong.is_empty() { "see below".to_owned() } else { wrong.join(", ") });
        if let Some(problem) = &self.first_problem {
            let _ = write!(out, " (first: {problem})");
        }
        out.push('.');
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "expected": self.expected,
            "delivered": self.delivered,
            "missing": self.missing(),
            "duplicated": self.duplicates,
            "out_of_order": self.out_of_order,
            "unexpected": self.unexpected,
            "canceled": self.canceled,
            "exactly_once": self.is_exact(),
            "first_problem": self.first_problem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_reject_foreign_values() {
        let tag = PutTag::new(1000, 8).unwrap();
        assert_eq!(tag.value(42), b"042vvvvv");
        assert_eq!(tag.parse(&tag.value(42)), Some(42));
        assert_eq!(tag.parse(&tag.value(999)), Some(999));
        assert_eq!(tag.parse(b"042vvvv"), None, "wrong size");
        assert_eq!(tag.parse(b"0x2vvvvv"), None, "not digits");
        assert_eq!(PutTag::new(1, 1).unwrap().value(0), b"0");
        assert!(PutTag::new(1001, 3).is_err());
        assert!(PutTag::new(1000, 3).is_ok());
    }

    #[test]
    fn a_ledger_counts_each_put_once_in_order() {
        let mut ledger = Ledger::new(100, 3);
        assert_eq!(ledger.record(Some(0), true, 5), Verdict::New);
        assert_eq!(ledger.record(Some(0), true, 5), Verdict::Duplicate);
        assert_eq!(ledger.record(Some(0), true, 9), Verdict::Duplicate, "same put, another revision: applied twice");
        assert_eq!(ledger.record(Some(2), true, 7), Verdict::New);
        assert_eq!(ledger.record(Some(1), true, 6), Verdict::OutOfOrder);
        assert_eq!(ledger.record(Some(3), false, 8), Verdict::Unexpected, "a key it does not watch");
        assert_eq!(ledger.record(None, true, 8), Verdict::Unexpected, "not one of ours");
        assert_eq!(ledger.record(Some(100), true, 10), Verdict::Unexpected, "beyond the run's puts");
        assert!(ledger.is_done());
        assert_eq!((ledger.distinct, ledger.duplicates, ledger.out_of_order, ledger.unexpected), (3, 2, 1, 3));
    }

    #[test]
    fn bits_beyond_the_first_word() {
        let mut ledger = Ledger::new(130, 130);
        for n in (0..130).rev().step_by(2) {
            ledger.record(Some(n), true, 1000 - n as i64);
        }
        assert!(ledger.seen(129) && !ledger.seen(128) && ledger.seen(65) && !ledger.seen(64));
        assert_eq!(ledger.first_missing(|_| true), Some(0));
        assert_eq!(ledger.first_missing(|n| n % 2 == 1), None);
        assert!(!ledger.is_done());
    }

    #[test]
    fn an_exact_run_adds_up() {
        let mut delivery = Delivery::default();
        for _ in 0..3 {
            let mut ledger = Ledger::new(4, 2);
            ledger.record(Some(1), true, 2);
            ledger.record(Some(3), true, 4);
            delivery.add(&ledger, || unreachable!(), || unreachable!());
        }
        assert_eq!((delivery.expected, delivery.delivered), (6, 6));
        assert!(delivery.is_exact());
        assert_eq!(delivery.render(), "Events delivered: 6 of 6 expected, each exactly once, in order.");
        assert_eq!(delivery.to_json()["exactly_once"], true);
    }

    #[test]
    fn a_missing_event_fails_and_is_named() {
        let mut delivery = Delivery::default();
        let mut ledger = Ledger::new(4, 4);
        for n in [0, 1, 3] {
            ledger.record(Some(n), true, n as i64 + 2);
        }
        let missing = ledger.first_missing(|_| true);
        delivery.add(&ledger, || "watcher 7 of stream 1".to_owned(), || missing);
        assert!(!delivery.is_exact());
        assert_eq!((delivery.missing(), delivery.problems()), (1, 1));
        assert_eq!(
            delivery.render(),
            "Events delivered: 3 of 4 expected; FAILED: 1 missing (first: watcher 7 of stream 1 missed 1 of 4 events, first put 2)."
        );
    }

    #[test]
    fn a_duplicate_fails_even_when_everything_arrived() {
        let mut delivery = Delivery::default();
        let mut ledger = Ledger::new(2, 2);
        for n in [0, 1, 1] {
            ledger.record(Some(n), true, n as i64 + 2);
        }
        delivery.add(&ledger, || "w".to_owned(), || None);
        assert_eq!(delivery.missing(), 0);
        assert!(!delivery.is_exact());
        assert!(delivery.render().contains("1 duplicated (first: w received 1 event twice)"), "{}", delivery.render());
    }

    #[test]
    fn cancellations_and_notes_fail() {
        let mut canceled = Ledger::new(2, 2);
        canceled.cancel("compacted".to_owned());
        assert!(canceled.is_done());
        let mut delivery = Delivery::default();
        delivery.add(&canceled, || "w".to_owned(), || None);
        assert_eq!((delivery.canceled, delivery.missing()), (1, 2));
        assert!(delivery.render().contains("w canceled by the server: compacted"), "{}", delivery.render());
        let mut noted = Delivery::default();
        noted.note("stream 3 ended".to_owned());
        assert!(!noted.is_exact());
        assert!(noted.render().ends_with("FAILED: see below (first: stream 3 ended)."), "{}", noted.render());
    }
}
