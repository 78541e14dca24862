//! Every Jepsen etcd history in testdata/ gets the verdict its README gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_lincheck::{check, parse_register_history, RegisterModel, RegisterOperation, Verdict};

/// Generous: the whole set takes well under a second optimised. A limit
/// turns a search that blows up into a failure instead of a hung test.
const TIMEOUT: Duration = Duration::from_secs(120);

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/jepsen-etcd")
}

fn load(name: &str) -> Vec<RegisterOperation> {
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    parse_register_history(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The README's table: `| etcd_000.log | no |`.
fn expected_verdicts() -> BTreeMap<String, bool> {
    let readme = std::fs::read_to_string(data_dir().join("README.md")).expect("README.md");
    readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", name, verdict, ""] if name.ends_with(".log") => match *verdict {
                    "yes" => Some((name.to_string(), true)),
                    "no" => Some((name.to_string(), false)),
                    other => panic!("{name}: verdict {other:?}"),
                },
                _ => None,
            }
        })
        .collect()
}

#[test]
fn all_histories_get_the_published_verdicts() {
    let expected = expected_verdicts();
    let mut logs: Vec<String> = std::fs::read_dir(data_dir())
        .expect("testdata")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".log"))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 103);
    assert_eq!(expected.len(), 102);
    assert!(!expected.contains_key("etcd_095.log"));

    let started = Instant::now();
    let mut wrong = Vec::new();
    let (mut yes, mut no) = (0, 0);
    for name in &logs {
        let history = load(name);
        let one = Instant::now();
        let verdict = check(&RegisterModel, &history, Some(TIMEOUT));
        let took = one.elapsed();
        if took > Duration::from_millis(500) {
            eprintln!("{name}: {} operations, {took:?}", history.len());
        }
        let got = match &verdict {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(c) => {
                assert!(c.explanation.contains(&format!("#{} ", c.unplaceable)), "{name}: {}", c.explanation);
                false
            }
            Verdict::Unknown => {
                wrong.push(format!("{name}: timed out"));
                continue;
            }
        };
        if got {
            yes += 1;
        } else {
            no += 1;
        }
        match expected.get(name) {
            Some(&want) if want != got => wrong.push(format!("{name}: expected linearizable={want}, got {verdict:?}")),
            _ => {}
        }
    }
    eprintln!("103 histories ({yes} linearizable, {no} not) checked in {:?}", started.elapsed());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_failure_names_the_operation_that_cannot_be_placed() {
    let history = load("etcd_000.log");
    let Verdict::NotLinearizable(c) = check(&RegisterModel, &history, Some(TIMEOUT)) else {
        panic!("etcd_000.log is not linearizable");
    };
    eprintln!("{c}");
    let op = &history[c.unplaceable];
    assert!(c.explanation.contains(&format!("#{} (client {}, {}..", c.unplaceable, op.client, op.call)), "{c}");
    assert!(!c.linearized.contains(&c.unplaceable));
    // The prefix itself is a valid linearization: it replays through the model.
    let mut state = None;
    for &i in &c.linearized {
        state = keel_lincheck::Model::step(&RegisterModel, &state, &history[i].input, history[i].output())
            .unwrap_or_else(|| panic!("#{i} does not follow the prefix before it"));
    }
}

#[test]
fn dropping_a_read_does_not_make_a_linearizable_history_fail() {
    // Fewer constraints can only keep a history linearizable.
    let history = load("etcd_002.log");
    let reads: Vec<usize> =
        (0..history.len()).filter(|&i| history[i].input == keel_lincheck::RegisterInput::Read).collect();
    for &drop in reads.iter().step_by(7) {
        let mut fewer = history.clone();
        fewer.remove(drop);
        assert_eq!(check(&RegisterModel, &fewer, Some(TIMEOUT)), Verdict::Linearizable);
    }
}
