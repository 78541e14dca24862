//! The key/value model on small hand-made histories, and on generated ones.

use std::collections::BTreeMap;

use keel_lincheck::{check, KvInput, KvModel, KvOperation, KvOutput, Operation, Verdict};
use proptest::prelude::*;

fn get(client: u64, call: u64, ret: u64, key: &str, value: Option<&str>) -> KvOperation {
    Operation::returned(client, call, KvInput::Get { key: key.into() }, ret, KvOutput::get(value.map(str::as_bytes)))
}

fn put_input(key: &str, value: &str) -> KvInput {
    KvInput::Put { key: key.into(), value: value.into() }
}

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str) -> KvOperation {
    Operation::returned(client, call, put_input(key, value), ret, KvOutput::put())
}

fn put_at(client: u64, call: u64, ret: u64, key: &str, value: &str, revision: u64) -> KvOperation {
    Operation::returned(client, call, put_input(key, value), ret, KvOutput::Put { revision: Some(revision) })
}

fn delete(client: u64, call: u64, ret: u64, key: &str, deleted: bool) -> KvOperation {
    Operation::returned(client, call, KvInput::Delete { key: key.into() }, ret, KvOutput::delete(deleted))
}

fn cas(client: u64, call: u64, ret: u64, key: &str, expected: Option<&str>, new: &str, ok: bool) -> KvOperation {
    let input = KvInput::CompareAndSwap { key: key.into(), expected: expected.map(Into::into), new: new.into() };
    Operation::returned(client, call, input, ret, KvOutput::compare_and_swap(ok))
}

fn linearizable(history: &[KvOperation]) -> bool {
    match check(&KvModel, history, None) {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable(c) => {
            assert!(c.explanation.contains(&format!("#{} ", c.unplaceable)), "{}", c.explanation);
            false
        }
        Verdict::Unknown => panic!("no timeout was set"),
    }
}

#[test]
fn sequential_history_is_linearizable() {
    assert!(linearizable(&[
        get(0, 0, 1, "a", None),
        put(0, 2, 3, "a", "1"),
        get(1, 4, 5, "a", Some("1")),
        cas(1, 6, 7, "a", Some("1"), "2", true),
        cas(0, 8, 9, "a", Some("1"), "3", false),
        get(0, 10, 11, "a", Some("2")),
        delete(1, 12, 13, "a", true),
        delete(1, 14, 15, "a", false),
        cas(0, 16, 17, "a", None, "4", true),
        get(0, 18, 19, "a", Some("4")),
    ]));
}

#[test]
fn stale_read_after_acknowledged_write_is_caught() {
    let history = [put(0, 0, 1, "a", "1"), put(0, 2, 3, "a", "2"), get(1, 4, 5, "a", Some("1"))];
    let Verdict::NotLinearizable(c) = check(&KvModel, &history, None) else { panic!("stale read accepted") };
    eprintln!("{c}");
    assert_eq!(c.unplaceable, 2);
    assert!(c.explanation.contains(r#"get("a") -> "1""#), "{c}");
    assert!(c.explanation.contains(r#"{"a": "2"}"#), "{c}");
}

#[test]
fn lost_write_is_caught() {
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), get(1, 2, 3, "a", None)]));
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), put(1, 2, 3, "b", "1"), get(2, 4, 5, "a", None)]));
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // A read concurrent with a put sees either value.
    assert!(linearizable(&[put(0, 0, 10, "a", "1"), get(1, 1, 2, "a", None)]));
    assert!(linearizable(&[put(0, 0, 10, "a", "1"), get(1, 1, 2, "a", Some("1"))]));
    // Two concurrent puts: either may win...
    for winner in ["1", "2"] {
        assert!(linearizable(&[put(0, 0, 10, "a", "1"), put(1, 0, 10, "a", "2"), get(2, 11, 12, "a", Some(winner))]));
    }
    // ...but once the value is seen to change it cannot change back.
    assert!(linearizable(&[
        put(0, 0, 10, "a", "1"),
        put(1, 0, 10, "a", "2"),
        get(2, 1, 2, "a", Some("2")),
        get(2, 3, 4, "a", Some("1")),
    ]));
    assert!(!linearizable(&[
        put(0, 0, 10, "a", "1"),
        put(1, 0, 10, "a", "2"),
        get(2, 1, 2, "a", Some("1")),
        get(2, 3, 4, "a", Some("2")),
        get(2, 5, 6, "a", Some("1")),
    ]));
    // Two swaps from the same value cannot both succeed.
    assert!(linearizable(&[cas(0, 0, 10, "a", None, "1", true), cas(1, 0, 10, "a", None, "2", false)]));
    assert!(!linearizable(&[cas(0, 0, 10, "a", None, "1", true), cas(1, 0, 10, "a", None, "2", true)]));
}

#[test]
fn unknown_outcome_put_may_appear_later_or_never() {
    let lost = || Operation::unknown(0, 0, put_input("a", "1"));
    // Never seen.
    assert!(linearizable(&[lost(), get(1, 5, 6, "a", None)]));
    // Seen only long after the client gave up on it.
    assert!(linearizable(&[lost(), get(1, 5, 6, "a", None), get(1, 100, 101, "a", Some("1"))]));
    // But once seen, it stays.
    assert!(!linearizable(&[lost(), get(1, 5, 6, "a", Some("1")), get(1, 7, 8, "a", None)]));
    // And it cannot be seen before it was sent.
    let late = Operation::unknown(0, 10, put_input("a", "1"));
    assert!(!linearizable(&[get(1, 0, 1, "a", Some("1")), late]));
}

#[test]
fn compare_and_swap_answers_are_checked() {
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), cas(0, 2, 3, "a", Some("2"), "3", true)]));
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), cas(0, 2, 3, "a", Some("1"), "3", false)]));
    assert!(!linearizable(&[cas(0, 0, 1, "a", Some("1"), "3", true)]));
    // An unknown swap takes effect only if it could succeed.
    let swap = KvInput::CompareAndSwap { key: "a".into(), expected: Some("9".into()), new: "3".into() };
    assert!(!linearizable(&[
        put(0, 0, 1, "a", "1"),
        Operation::unknown(1, 2, swap.clone()),
        get(0, 5, 6, "a", Some("3"))
    ]));
    assert!(linearizable(&[put(0, 0, 1, "a", "9"), Operation::unknown(1, 2, swap), get(0, 5, 6, "a", Some("3"))]));
}

#[test]
fn delete_answers_are_checked() {
    assert!(!linearizable(&[delete(0, 0, 1, "a", true)]));
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), delete(0, 2, 3, "a", false)]));
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), delete(0, 2, 3, "a", true), get(0, 4, 5, "a", Some("1"))]));
}

#[test]
fn keys_are_independent() {
    assert!(linearizable(&[
        put(0, 0, 1, "a", "1"),
        put(0, 2, 3, "b", "2"),
        get(1, 4, 5, "b", Some("2")),
        get(1, 6, 7, "a", Some("1")),
    ]));
    assert!(!linearizable(&[put(0, 0, 1, "a", "1"), get(1, 2, 3, "b", Some("1"))]));
}

#[test]
fn reported_revisions_are_checked() {
    assert!(linearizable(&[put_at(0, 0, 1, "a", "1", 5), put_at(0, 2, 3, "a", "2", 7)]));
    // Revisions go backwards along real time.
    assert!(!linearizable(&[put_at(0, 0, 1, "a", "1", 5), put_at(0, 2, 3, "a", "2", 3)]));
    // Concurrent puts: the revisions decide the order, and the read must agree.
    let concurrent = [put_at(0, 0, 10, "a", "1", 8), put_at(1, 0, 10, "a", "2", 9)];
    assert!(linearizable(&[concurrent[0].clone(), concurrent[1].clone(), get(2, 11, 12, "a", Some("2"))]));
    assert!(!linearizable(&[concurrent[0].clone(), concurrent[1].clone(), get(2, 11, 12, "a", Some("1"))]));
    // A read's mod_revision must be that of the write it read.
    let read_at = |revision| {
        Operation::returned(
            1,
            2,
            KvInput::Get { key: "a".into() },
            3,
            KvOutput::Get { value: Some("1".into()), mod_revision: Some(revision) },
        )
    };
    assert!(linearizable(&[put_at(0, 0, 1, "a", "1", 5), read_at(5)]));
    assert!(!linearizable(&[put_at(0, 0, 1, "a", "1", 5), read_at(4)]));
    // A put whose revision was not reported still comes after the last known one.
    assert!(!linearizable(&[
        put_at(0, 0, 1, "a", "1", 5),
        Operation::unknown(1, 2, put_input("a", "2")),
        put_at(0, 4, 5, "a", "3", 3)
    ]));
    // A lost put's revision is learnt from a read, then holds later writes to it.
    assert!(!linearizable(&[Operation::unknown(0, 0, put_input("a", "1")), read_at(5), put_at(0, 4, 5, "a", "2", 5)]));
}

/// One step of a generated workload on keys "k0".."k3" with values "0".."3".
#[derive(Clone, Debug)]
enum Step {
    Get(u8),
    Put(u8, u8),
    Delete(u8),
    Cas(u8, Option<u8>, u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..4u8).prop_map(Step::Get),
        2 => (0..4u8, 0..4u8).prop_map(|(k, v)| Step::Put(k, v)),
        1 => (0..4u8).prop_map(Step::Delete),
        2 => (0..4u8, proptest::option::of(0..4u8), 0..4u8).prop_map(|(k, e, n)| Step::Cas(k, e, n)),
    ]
}

/// Runs the steps against a real map, one after another, giving each op
/// the linearization point 10*i; `slack` widens op i's interval around it
/// so that ops overlap without contradicting the order they ran in.
fn run(steps: &[Step], slack: &[(u64, u64)]) -> Vec<KvOperation> {
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let bytes = |n: u8| n.to_string().into_bytes();
    let key = |k: u8| format!("k{k}").into_bytes();
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (input, output) = match *s {
                Step::Get(k) => {
                    let value = map.get(&key(k)).cloned();
                    (KvInput::Get { key: key(k) }, KvOutput::Get { value, mod_revision: None })
                }
                Step::Put(k, v) => {
                    map.insert(key(k), bytes(v));
                    (KvInput::Put { key: key(k), value: bytes(v) }, KvOutput::put())
                }
                Step::Delete(k) => {
                    let deleted = map.remove(&key(k)).is_some();
                    (KvInput::Delete { key: key(k) }, KvOutput::delete(deleted))
                }
                Step::Cas(k, e, n) => {
                    let expected = e.map(bytes);
                    let succeeded = map.get(&key(k)) == expected.as_ref();
                    if succeeded {
                        map.insert(key(k), bytes(n));
                    }
                    (
                        KvInput::CompareAndSwap { key: key(k), expected, new: bytes(n) },
                        KvOutput::compare_and_swap(succeeded),
                    )
                }
            };
            let point = 100 + 10 * i as u64;
            let (before, after) = slack.get(i).copied().unwrap_or((0, 0));
            Operation::returned(i as u64 % 5, point - before, input, point + after, output)
        })
        .collect()
}

/// A value different from the one read.
fn corrupt(output: &KvOutput) -> KvOutput {
    match output {
        KvOutput::Get { value: Some(v), .. } if v.as_slice() == b"0" => KvOutput::get(None),
        KvOutput::Get { .. } => KvOutput::get(Some(b"0")),
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn sequential_history_from_a_real_map_is_linearizable_until_a_read_is_corrupted(
        mut steps in proptest::collection::vec(step(), 1..120),
        pick in any::<prop::sample::Index>(),
    ) {
        steps.push(Step::Get(0));
        let mut history = run(&steps, &[]);
        prop_assert_eq!(check(&KvModel, &history, None), Verdict::Linearizable);

        let reads: Vec<usize> = (0..history.len()).filter(|&i| matches!(history[i].input, KvInput::Get { .. })).collect();
        let victim = reads[pick.index(reads.len())];
        if let keel_lincheck::Outcome::Returned { output, .. } = &mut history[victim].outcome {
            *output = corrupt(output);
        }
        match check(&KvModel, &history, None) {
            Verdict::NotLinearizable(c) => prop_assert!(c.explanation.contains('#')),
            other => prop_assert!(false, "corrupted read #{} accepted: {:?}", victim, other),
        }
    }

    #[test]
    fn overlapping_history_around_real_linearization_points_is_linearizable(
        steps in proptest::collection::vec(step(), 1..200),
        slack in proptest::collection::vec((0..40u64, 0..40u64), 200),
    ) {
        let history = run(&steps, &slack);
        prop_assert_eq!(check(&KvModel, &history, None), Verdict::Linearizable);
    }
}

/// A simulation-sized history: thousands of overlapping operations from many
/// clients over tens of keys, some with lost answers, generated around real
/// linearization points (so linearizable), then with one read corrupted.
#[test]
fn thousands_of_concurrent_operations_over_tens_of_keys() {
    // A fixed xorshift: the test stays deterministic without a rand dependency.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    const KEYS: u64 = 20;
    let mut map: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut history = Vec::new();
    for i in 0..4000u64 {
        let point = 1000 + 10 * i;
        let (call, ret) = (point - next(60), point + next(60));
        let k = next(KEYS);
        let key = format!("key{k}").into_bytes();
        let client = i % 16;
        match next(10) {
            0..=4 => {
                let value = map.get(&k).cloned();
                history.push(Operation::returned(
                    client,
                    call,
                    KvInput::Get { key },
                    ret,
                    KvOutput::Get { value, mod_revision: None },
                ));
            }
            5..=7 => {
                let value = format!("v{i}").into_bytes();
                let input = KvInput::Put { key, value: value.clone() };
                // One put in ten loses its answer; half of those took effect.
                if next(10) == 0 {
                    if next(2) == 0 {
                        map.insert(k, value);
                    }
                    history.push(Operation::unknown(client, call, input));
                } else {
                    map.insert(k, value);
                    history.push(Operation::returned(client, call, input, ret, KvOutput::put()));
                }
            }
            8 => {
                let deleted = map.remove(&k).is_some();
                history.push(Operation::returned(
                    client,
                    call,
                    KvInput::Delete { key },
                    ret,
                    KvOutput::delete(deleted),
                ));
            }
            _ => {
                let expected = map.get(&k).cloned().filter(|_| next(2) == 0);
                let succeeded = map.get(&k) == expected.as_ref();
                let new = format!("c{i}").into_bytes();
                if succeeded {
                    map.insert(k, new.clone());
                }
                let input = KvInput::CompareAndSwap { key, expected, new };
                history.push(Operation::returned(client, call, input, ret, KvOutput::compare_and_swap(succeeded)));
            }
        }
    }
    // A limit so that a regression fails instead of hanging; this takes
    // milliseconds. (Many more lost writes per key make failing searches
    // exponential: see the crate docs.)
    let limit = Some(std::time::Duration::from_secs(60));
    let started = std::time::Instant::now();
    assert_eq!(check(&KvModel, &history, limit), Verdict::Linearizable);
    let linearizable_took = started.elapsed();

    let victim = history.len() / 2
        + (0..).find(|&d| matches!(history[history.len() / 2 + d].input, KvInput::Get { .. })).unwrap_or(0);
    if let keel_lincheck::Outcome::Returned { output, .. } = &mut history[victim].outcome {
        *output = KvOutput::get(Some(b"never written"));
    }
    let started = std::time::Instant::now();
    let Verdict::NotLinearizable(c) = check(&KvModel, &history, limit) else { panic!("corrupted read accepted") };
    eprintln!(
        "{} operations: linearizable in {linearizable_took:?}, corrupted in {:?}",
        history.len(),
        started.elapsed()
    );
    assert_eq!(c.unplaceable, victim, "{c}");
}
