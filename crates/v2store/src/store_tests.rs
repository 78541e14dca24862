//! The store against the transcripts of `docs/etcd-v2-reference.md`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tokio::sync::mpsc::error::TryRecvError;

use super::*;
use crate::WATCHER_BUFFER;

const SECOND: Nanos = 1_000_000_000;
/// Expirations seen in the transcripts.
const TTLKEY_100: Nanos = 1_796_568_654_813_674_453;
const TTLKEY_200: Nanos = 1_796_568_754_891_086_563;
const TTLKEY_300: Nanos = 1_796_568_854_906_935_416;
const TTLDIR_100: Nanos = 1_796_568_655_050_784_397;
const TTLDIR_200: Nanos = 1_796_568_755_067_858_230;
const CAS_50: Nanos = 1_796_568_612_009_048_188;
const JOB2_100: Nanos = 1_796_568_664_886_829_352;

fn set(key: &str, value: &str) -> Write {
    Write::Set { key: key.into(), value: value.into(), dir: false, expire: None, refresh: false }
}

fn set_ttl(key: &str, value: &str, expire: Nanos) -> Write {
    Write::Set { key: key.into(), value: value.into(), dir: false, expire: Some(expire), refresh: false }
}

fn set_dir(key: &str) -> Write {
    Write::Set { key: key.into(), value: String::new(), dir: true, expire: None, refresh: false }
}

fn create(key: &str, value: &str) -> Write {
    Write::Create { key: key.into(), value: value.into(), dir: false, unique: false, expire: None }
}

fn post(key: &str, value: &str) -> Write {
    Write::Create { key: key.into(), value: value.into(), dir: false, unique: true, expire: None }
}

fn update(key: &str, value: &str, expire: Option<Nanos>, refresh: bool) -> Write {
    Write::Update { key: key.into(), value: value.into(), expire, refresh }
}

fn cas(key: &str, prev_value: &str, prev_index: u64, value: &str) -> Write {
    Write::CompareAndSwap {
        key: key.into(),
        prev_value: prev_value.into(),
        prev_index,
        value: value.into(),
        expire: None,
        refresh: false,
    }
}

fn delete(key: &str, dir: bool, recursive: bool) -> Write {
    Write::Delete { key: key.into(), dir, recursive }
}

fn cad(key: &str, prev_value: &str, prev_index: u64) -> Write {
    Write::CompareAndDelete { key: key.into(), prev_value: prev_value.into(), prev_index }
}

/// A store as a fresh etcd member leaves it: index 3 from its own bootstrap.
fn bootstrapped() -> Store {
    let mut store = Store::new();
    ok(&mut store, &Write::Internal { steps: 3 });
    store
}

#[track_caller]
fn ok(store: &mut Store, write: &Write) -> Event {
    let (result, changes) = store.apply(write);
    match result {
        Ok(event) => {
            assert!(!changes.is_empty(), "a successful write leaves records");
            event
        }
        Err(err) => panic!("{write:?} refused: {err}"),
    }
}

/// The body etcd answers with, at `now`.
#[track_caller]
fn ok_json(store: &mut Store, write: &Write, now: Nanos) -> String {
    ok(store, write).to_json(now, false)
}

/// A refused write: its error body; it must leave no trace.
#[track_caller]
fn err_json(store: &mut Store, write: &Write) -> String {
    let before = (store.root.clone(), store.index, store.history.clone(), store.expirations.clone());
    let (result, changes) = store.apply(write);
    assert!(changes.is_empty(), "a refused write leaves no records");
    assert_eq!(before, (store.root.clone(), store.index, store.history.clone(), store.expirations.clone()));
    match result {
        Ok(event) => panic!("{write:?} succeeded: {event:?}"),
        Err(err) => err.to_json(),
    }
}

fn get_json(store: &Store, key: &str, recursive: bool, now: Nanos) -> String {
    match store.get(key, recursive, true) {
        Ok(event) => event.to_json(now, false),
        Err(err) => err.to_json(),
    }
}

/// Sections 4.2 to 4.8 replayed in their order, which is the order of the
/// indexes in the transcripts (4 to 44).
#[test]
fn transcripts_of_section_4_in_index_order() {
    let mut s = bootstrapped();
    assert_eq!(s.index(), 3);

    // 4.3: set.
    assert_eq!(
        ok_json(&mut s, &set("/message", "hello"), 0),
        r#"{"action":"set","node":{"key":"/message","value":"hello","modifiedIndex":4,"createdIndex":4}}"#.to_owned()
            + "\n"
    );
    let replaced = ok(&mut s, &set("/message", "world"));
    assert_eq!(
        replaced.to_json(0, false),
        r#"{"action":"set","node":{"key":"/message","value":"world","modifiedIndex":5,"createdIndex":5},"prevNode":{"key":"/message","value":"hello","modifiedIndex":4,"createdIndex":4}}"#.to_owned() + "\n"
    );
    assert_eq!(replaced.index, 5);
    ok(&mut s, &set("/empty", ""));
    ok(&mut s, &set("/novalue", ""));
    ok(&mut s, &set("/qs", "fromquery"));
    assert!(ok_json(&mut s, &set("/qs", "frombody"), 0)
        .contains(r#""prevNode":{"key":"/qs","value":"fromquery","modifiedIndex":8,"createdIndex":8}"#));
    assert_eq!(
        ok_json(&mut s, &set("/html", "<a>&"), 0),
        r#"{"action":"set","node":{"key":"/html","value":"\u003ca\u003e\u0026","modifiedIndex":10,"createdIndex":10}}"#
            .to_owned()
            + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &set_dir("/dir1"), 0),
        r#"{"action":"set","node":{"key":"/dir1","dir":true,"modifiedIndex":11,"createdIndex":11}}"#.to_owned() + "\n"
    );
    let not_a_file = r#"{"errorCode":102,"message":"Not a file","cause":"/dir1","index":11}"#.to_owned() + "\n";
    assert_eq!(err_json(&mut s, &set_dir("/dir1")), not_a_file);
    assert_eq!(err_json(&mut s, &set("/dir1", "x")), not_a_file);
    assert_eq!(
        err_json(&mut s, &set("/message/child", "x")),
        r#"{"errorCode":104,"message":"Not a directory","cause":"/message","index":11}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &set("/dir1/a/b", "deep"), 0),
        r#"{"action":"set","node":{"key":"/dir1/a/b","value":"deep","modifiedIndex":12,"createdIndex":12}}"#.to_owned()
            + "\n"
    );
    ok(&mut s, &set("/dir1/z", "zz"));
    ok(&mut s, &set("/dir1/c", "cc"));

    // 4.2: get.
    assert_eq!(
        get_json(&s, "/message", false, 0),
        r#"{"action":"get","node":{"key":"/message","value":"world","modifiedIndex":5,"createdIndex":5}}"#.to_owned()
            + "\n"
    );
    assert_eq!(
        get_json(&s, "/missing", false, 0),
        r#"{"errorCode":100,"message":"Key not found","cause":"/missing","index":14}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/message/child", false, 0),
        r#"{"errorCode":104,"message":"Not a directory","cause":"/message","index":14}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/dir1", false, 0),
        r#"{"action":"get","node":{"key":"/dir1","dir":true,"nodes":[{"key":"/dir1/a","dir":true,"modifiedIndex":12,"createdIndex":12},{"key":"/dir1/c","value":"cc","modifiedIndex":14,"createdIndex":14},{"key":"/dir1/z","value":"zz","modifiedIndex":13,"createdIndex":13}],"modifiedIndex":11,"createdIndex":11}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/dir1", true, 0),
        r#"{"action":"get","node":{"key":"/dir1","dir":true,"nodes":[{"key":"/dir1/a","dir":true,"nodes":[{"key":"/dir1/a/b","value":"deep","modifiedIndex":12,"createdIndex":12}],"modifiedIndex":12,"createdIndex":12},{"key":"/dir1/c","value":"cc","modifiedIndex":14,"createdIndex":14},{"key":"/dir1/z","value":"zz","modifiedIndex":13,"createdIndex":13}],"modifiedIndex":11,"createdIndex":11}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/", true, 0),
        r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/dir1","dir":true,"nodes":[{"key":"/dir1/a","dir":true,"nodes":[{"key":"/dir1/a/b","value":"deep","modifiedIndex":12,"createdIndex":12}],"modifiedIndex":12,"createdIndex":12},{"key":"/dir1/c","value":"cc","modifiedIndex":14,"createdIndex":14},{"key":"/dir1/z","value":"zz","modifiedIndex":13,"createdIndex":13}],"modifiedIndex":11,"createdIndex":11},{"key":"/empty","value":"","modifiedIndex":6,"createdIndex":6},{"key":"/html","value":"\u003ca\u003e\u0026","modifiedIndex":10,"createdIndex":10},{"key":"/message","value":"world","modifiedIndex":5,"createdIndex":5},{"key":"/novalue","value":"","modifiedIndex":7,"createdIndex":7},{"key":"/qs","value":"frombody","modifiedIndex":9,"createdIndex":9}]}}"#.to_owned() + "\n"
    );
    assert_eq!(s.get("/", false, false).map(|event| event.index), Ok(14), "a get reports the current index");

    // 4.7: delete.
    assert_eq!(
        ok_json(&mut s, &delete("/dir1/z", false, false), 0),
        r#"{"action":"delete","node":{"key":"/dir1/z","modifiedIndex":15,"createdIndex":13},"prevNode":{"key":"/dir1/z","value":"zz","modifiedIndex":13,"createdIndex":13}}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &delete("/dir1/z", false, false)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/dir1/z","index":15}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &delete("/dir1", false, false)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/dir1","index":15}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &delete("/dir1", true, false)),
        r#"{"errorCode":108,"message":"Directory not empty","cause":"/dir1","index":15}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &delete("/dir1/a/b", true, false), 0),
        r#"{"action":"delete","node":{"key":"/dir1/a/b","modifiedIndex":16,"createdIndex":12},"prevNode":{"key":"/dir1/a/b","value":"deep","modifiedIndex":12,"createdIndex":12}}"#.to_owned() + "\n"
    );
    ok(&mut s, &set_dir("/emptydir"));
    assert_eq!(
        ok_json(&mut s, &delete("/emptydir", true, false), 0),
        r#"{"action":"delete","node":{"key":"/emptydir","dir":true,"modifiedIndex":18,"createdIndex":17},"prevNode":{"key":"/emptydir","dir":true,"modifiedIndex":17,"createdIndex":17}}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &delete("/dir1", false, true), 0),
        r#"{"action":"delete","node":{"key":"/dir1","dir":true,"modifiedIndex":19,"createdIndex":11},"prevNode":{"key":"/dir1","dir":true,"modifiedIndex":11,"createdIndex":11}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/dir1/a", false, 0),
        r#"{"errorCode":100,"message":"Key not found","cause":"/dir1","index":19}"#.to_owned() + "\n"
    );

    // 4.8: the root.
    let read_only = r#"{"errorCode":107,"message":"Root is read only","cause":"/","index":19}"#.to_owned() + "\n";
    assert_eq!(err_json(&mut s, &delete("/", false, false)), read_only);
    assert_eq!(err_json(&mut s, &delete("/", false, true)), read_only);
    assert_eq!(err_json(&mut s, &set("/", "x")), read_only);
    assert_eq!(err_json(&mut s, &set_dir("/")), read_only);
    assert_eq!(err_json(&mut s, &create("/", "x")), read_only);
    assert_eq!(err_json(&mut s, &update("/", "x", None, false)), read_only);
    assert_eq!(err_json(&mut s, &cas("/", "a", 0, "x")), read_only);
    assert_eq!(
        err_json(&mut s, &cad("/", "a", 0)),
        r#"{"errorCode":102,"message":"Not a file","index":19}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &post("/", "x"), 0),
        r#"{"action":"create","node":{"key":"/00000000000000000020","value":"x","modifiedIndex":20,"createdIndex":20}}"#
            .to_owned() + "\n"
    );

    // 4.5: TTLs and refresh.
    assert_eq!(
        ok_json(&mut s, &set_ttl("/ttlkey", "v", TTLKEY_100), TTLKEY_100 - 100 * SECOND),
        r#"{"action":"set","node":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:50:54.813674453Z","ttl":100,"modifiedIndex":21,"createdIndex":21}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/ttlkey", false, TTLKEY_100 - 89 * SECOND - SECOND / 2),
        r#"{"action":"get","node":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:50:54.813674453Z","ttl":90,"modifiedIndex":21,"createdIndex":21}}"#.to_owned() + "\n"
    );
    let refreshed = ok(&mut s, &update("/ttlkey", "", Some(TTLKEY_200), true));
    assert!(refreshed.refresh);
    assert_eq!(
        refreshed.to_json(TTLKEY_200 - 200 * SECOND, false),
        r#"{"action":"update","node":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:52:34.891086563Z","ttl":200,"modifiedIndex":22,"createdIndex":21},"prevNode":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:50:54.813674453Z","ttl":100,"modifiedIndex":21,"createdIndex":21}}"#.to_owned() + "\n"
    );
    let write =
        Write::Set { key: "/ttlkey".into(), value: String::new(), dir: false, expire: Some(TTLKEY_300), refresh: true };
    assert_eq!(
        ok_json(&mut s, &write, TTLKEY_300 - 300 * SECOND),
        r#"{"action":"set","node":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:54:14.906935416Z","ttl":300,"modifiedIndex":23,"createdIndex":23},"prevNode":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:52:34.891086563Z","ttl":200,"modifiedIndex":22,"createdIndex":21}}"#.to_owned() + "\n"
    );
    let not_found = r#"{"errorCode":100,"message":"Key not found","cause":"/nokey","index":23}"#.to_owned() + "\n";
    assert_eq!(err_json(&mut s, &update("/nokey", "", Some(TTLKEY_300), true)), not_found);
    let write =
        Write::Set { key: "/nokey".into(), value: String::new(), dir: false, expire: Some(TTLKEY_300), refresh: true };
    assert_eq!(err_json(&mut s, &write), not_found);
    assert_eq!(
        ok_json(&mut s, &update("/ttlkey", "v2", None, false), TTLKEY_300 - 300 * SECOND),
        r#"{"action":"update","node":{"key":"/ttlkey","value":"v2","modifiedIndex":24,"createdIndex":23},"prevNode":{"key":"/ttlkey","value":"v","expiration":"2026-12-06T14:54:14.906935416Z","ttl":300,"modifiedIndex":23,"createdIndex":23}}"#.to_owned() + "\n"
    );
    assert_eq!(s.next_expiration(), None, "the TTL was removed");
    let write =
        Write::Set { key: "/ttldir".into(), value: String::new(), dir: true, expire: Some(TTLDIR_100), refresh: false };
    assert_eq!(
        ok_json(&mut s, &write, TTLDIR_100 - 100 * SECOND),
        r#"{"action":"set","node":{"key":"/ttldir","dir":true,"expiration":"2026-12-06T14:50:55.050784397Z","ttl":100,"modifiedIndex":25,"createdIndex":25}}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &update("/ttldir", "", Some(TTLDIR_200), false), TTLDIR_200 - 200 * SECOND),
        r#"{"action":"update","node":{"key":"/ttldir","dir":true,"expiration":"2026-12-06T14:52:35.06785823Z","ttl":200,"modifiedIndex":26,"createdIndex":25},"prevNode":{"key":"/ttldir","dir":true,"expiration":"2026-12-06T14:50:55.050784397Z","ttl":100,"modifiedIndex":25,"createdIndex":25}}"#.to_owned() + "\n"
    );
    // The stored directory kept modifiedIndex 25.
    assert_eq!(
        ok_json(&mut s, &update("/ttldir", "", None, false), TTLDIR_200 - 200 * SECOND),
        r#"{"action":"update","node":{"key":"/ttldir","dir":true,"modifiedIndex":27,"createdIndex":25},"prevNode":{"key":"/ttldir","dir":true,"expiration":"2026-12-06T14:52:35.06785823Z","ttl":200,"modifiedIndex":25,"createdIndex":25}}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &update("/ttldir", "x", None, false)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/ttldir","index":27}"#.to_owned() + "\n"
    );

    // 4.4: create, update, compareAndSwap.
    assert_eq!(
        err_json(&mut s, &update("/cas", "one", None, false)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/cas","index":27}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &create("/cas", "one"), 0),
        r#"{"action":"create","node":{"key":"/cas","value":"one","modifiedIndex":28,"createdIndex":28}}"#.to_owned()
            + "\n"
    );
    assert_eq!(
        err_json(&mut s, &create("/cas", "two")),
        r#"{"errorCode":105,"message":"Key already exists","cause":"/cas","index":28}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &update("/cas", "two", None, false), 0),
        r#"{"action":"update","node":{"key":"/cas","value":"two","modifiedIndex":29,"createdIndex":28},"prevNode":{"key":"/cas","value":"one","modifiedIndex":28,"createdIndex":28}}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &cas("/cas", "two", 0, "three"), 0),
        r#"{"action":"compareAndSwap","node":{"key":"/cas","value":"three","modifiedIndex":30,"createdIndex":28},"prevNode":{"key":"/cas","value":"two","modifiedIndex":29,"createdIndex":28}}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cas("/cas", "nope", 0, "four")),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[nope != three]","index":30}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cas("/cas", "", 1, "four")),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[1 != 30]","index":30}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cas("/cas", "nope", 1, "four")),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[nope != three] [1 != 30]","index":30}"#.to_owned()
            + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &cas("/cas", "three", 30, "four"), 0),
        r#"{"action":"compareAndSwap","node":{"key":"/cas","value":"four","modifiedIndex":31,"createdIndex":28},"prevNode":{"key":"/cas","value":"three","modifiedIndex":30,"createdIndex":28}}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &set("/cas", "five"), 0),
        r#"{"action":"set","node":{"key":"/cas","value":"five","modifiedIndex":32,"createdIndex":32},"prevNode":{"key":"/cas","value":"four","modifiedIndex":31,"createdIndex":28}}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &create("/cas", "six")),
        r#"{"errorCode":105,"message":"Key already exists","cause":"/cas","index":32}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cas("/cas", "nope", 0, "six")),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[nope != five]","index":32}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cas("/nokey2", "x", 0, "six")),
        r#"{"errorCode":100,"message":"Key not found","cause":"/nokey2","index":32}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cas("/ttldir", "x", 0, "six")),
        r#"{"errorCode":102,"message":"Not a file","cause":"/ttldir","index":32}"#.to_owned() + "\n"
    );
    let write = Write::CompareAndSwap {
        key: "/cas".into(),
        prev_value: "five".into(),
        prev_index: 0,
        value: "seven".into(),
        expire: Some(CAS_50),
        refresh: false,
    };
    assert_eq!(
        ok_json(&mut s, &write, CAS_50 - 50 * SECOND),
        r#"{"action":"compareAndSwap","node":{"key":"/cas","value":"seven","expiration":"2026-12-06T14:50:12.009048188Z","ttl":50,"modifiedIndex":33,"createdIndex":32},"prevNode":{"key":"/cas","value":"five","modifiedIndex":32,"createdIndex":32}}"#.to_owned() + "\n"
    );
    let write = Write::Create { key: "/newdir".into(), value: String::new(), dir: true, unique: false, expire: None };
    assert_eq!(
        ok_json(&mut s, &write, 0),
        r#"{"action":"create","node":{"key":"/newdir","dir":true,"modifiedIndex":34,"createdIndex":34}}"#.to_owned()
            + "\n"
    );
    assert_eq!(
        err_json(&mut s, &write),
        r#"{"errorCode":105,"message":"Key already exists","cause":"/newdir","index":34}"#.to_owned() + "\n"
    );

    // 4.7: compareAndDelete.
    assert_eq!(
        err_json(&mut s, &cad("/cas", "nope", 0)),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[nope != seven]","index":34}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cad("/cas", "", 3)),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[3 != 33]","index":34}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cad("/cas", "seven", 34)),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[34 != 33]","index":34}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cad("/newdir", "", 35)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/newdir","index":34}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &cad("/gone", "", 35)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/gone","index":34}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &cad("/cas", "seven", 0), CAS_50 - 50 * SECOND),
        r#"{"action":"compareAndDelete","node":{"key":"/cas","modifiedIndex":35,"createdIndex":32},"prevNode":{"key":"/cas","value":"seven","expiration":"2026-12-06T14:50:12.009048188Z","ttl":50,"modifiedIndex":33,"createdIndex":32}}"#.to_owned() + "\n"
    );
    assert_eq!(s.next_expiration(), None, "a deleted node leaves the expiry index");

    // 4.6: POST.
    assert_eq!(
        ok_json(&mut s, &post("/queue", "job1"), 0),
        r#"{"action":"create","node":{"key":"/queue/00000000000000000036","value":"job1","modifiedIndex":36,"createdIndex":36}}"#.to_owned() + "\n"
    );
    let write =
        Write::Create { key: "/queue".into(), value: "job2".into(), dir: false, unique: true, expire: Some(JOB2_100) };
    assert_eq!(
        ok_json(&mut s, &write, JOB2_100 - 100 * SECOND),
        r#"{"action":"create","node":{"key":"/queue/00000000000000000037","value":"job2","expiration":"2026-12-06T14:51:04.886829352Z","ttl":100,"modifiedIndex":37,"createdIndex":37}}"#.to_owned() + "\n"
    );
    let write = Write::Create { key: "/queue".into(), value: String::new(), dir: true, unique: true, expire: None };
    assert_eq!(
        ok_json(&mut s, &write, 0),
        r#"{"action":"create","node":{"key":"/queue/00000000000000000038","dir":true,"modifiedIndex":38,"createdIndex":38}}"#.to_owned() + "\n"
    );
    assert_eq!(
        ok_json(&mut s, &post("/queue", ""), 0),
        r#"{"action":"create","node":{"key":"/queue/00000000000000000039","value":"","modifiedIndex":39,"createdIndex":39}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/queue", true, JOB2_100 - 100 * SECOND),
        r#"{"action":"get","node":{"key":"/queue","dir":true,"nodes":[{"key":"/queue/00000000000000000036","value":"job1","modifiedIndex":36,"createdIndex":36},{"key":"/queue/00000000000000000037","value":"job2","expiration":"2026-12-06T14:51:04.886829352Z","ttl":100,"modifiedIndex":37,"createdIndex":37},{"key":"/queue/00000000000000000038","dir":true,"modifiedIndex":38,"createdIndex":38},{"key":"/queue/00000000000000000039","value":"","modifiedIndex":39,"createdIndex":39}],"modifiedIndex":36,"createdIndex":36}}"#.to_owned() + "\n"
    );
    assert_eq!(
        err_json(&mut s, &post("/message", "x")),
        r#"{"errorCode":104,"message":"Not a directory","cause":"/message","index":39}"#.to_owned() + "\n"
    );
    ok(&mut s, &post("/queue", "y"));

    // 4.8: hidden keys.
    assert_eq!(
        ok_json(&mut s, &set("/_hidden", "secret"), 0),
        r#"{"action":"set","node":{"key":"/_hidden","value":"secret","modifiedIndex":41,"createdIndex":41}}"#
            .to_owned()
            + "\n"
    );
    ok(&mut s, &set("/hdir/_h", "secret"));
    ok(&mut s, &set("/hdir/v", "visible"));
    ok(&mut s, &set("/_hdir/x", "inside"));
    assert_eq!(
        get_json(&s, "/", true, JOB2_100 - 100 * SECOND),
        r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/00000000000000000020","value":"x","modifiedIndex":20,"createdIndex":20},{"key":"/empty","value":"","modifiedIndex":6,"createdIndex":6},{"key":"/hdir","dir":true,"nodes":[{"key":"/hdir/v","value":"visible","modifiedIndex":43,"createdIndex":43}],"modifiedIndex":42,"createdIndex":42},{"key":"/html","value":"\u003ca\u003e\u0026","modifiedIndex":10,"createdIndex":10},{"key":"/message","value":"world","modifiedIndex":5,"createdIndex":5},{"key":"/newdir","dir":true,"modifiedIndex":34,"createdIndex":34},{"key":"/novalue","value":"","modifiedIndex":7,"createdIndex":7},{"key":"/qs","value":"frombody","modifiedIndex":9,"createdIndex":9},{"key":"/queue","dir":true,"nodes":[{"key":"/queue/00000000000000000036","value":"job1","modifiedIndex":36,"createdIndex":36},{"key":"/queue/00000000000000000037","value":"job2","expiration":"2026-12-06T14:51:04.886829352Z","ttl":100,"modifiedIndex":37,"createdIndex":37},{"key":"/queue/00000000000000000038","dir":true,"modifiedIndex":38,"createdIndex":38},{"key":"/queue/00000000000000000039","value":"","modifiedIndex":39,"createdIndex":39},{"key":"/queue/00000000000000000040","value":"y","modifiedIndex":40,"createdIndex":40}],"modifiedIndex":36,"createdIndex":36},{"key":"/ttldir","dir":true,"modifiedIndex":25,"createdIndex":25},{"key":"/ttlkey","value":"v2","modifiedIndex":24,"createdIndex":23}]}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/_hidden", false, 0),
        r#"{"action":"get","node":{"key":"/_hidden","value":"secret","modifiedIndex":41,"createdIndex":41}}"#
            .to_owned()
            + "\n"
    );
    assert_eq!(
        get_json(&s, "/_hdir", false, 0),
        r#"{"action":"get","node":{"key":"/_hdir","dir":true,"nodes":[{"key":"/_hdir/x","value":"inside","modifiedIndex":44,"createdIndex":44}],"modifiedIndex":44,"createdIndex":44}}"#.to_owned() + "\n"
    );
    assert_eq!(
        get_json(&s, "/hdir", true, 0),
        r#"{"action":"get","node":{"key":"/hdir","dir":true,"nodes":[{"key":"/hdir/v","value":"visible","modifiedIndex":43,"createdIndex":43}],"modifiedIndex":42,"createdIndex":42}}"#.to_owned() + "\n"
    );

    // 7.4: job2 expires at the first pass at or after its expiration.
    assert_eq!(s.next_expiration(), Some(JOB2_100));
    let (nothing, changes) = s.apply(&Write::Expire { now: JOB2_100 - 1 });
    assert!(changes.is_empty());
    assert_eq!(nothing.map(|event| event.index), Ok(44), "an empty pass takes no index");
    let expired = ok(&mut s, &Write::Expire { now: JOB2_100 + SECOND / 2 });
    assert_eq!(
        expired.to_json(JOB2_100 + 600 * SECOND, false),
        r#"{"action":"expire","node":{"key":"/queue/00000000000000000037","modifiedIndex":45,"createdIndex":37},"prevNode":{"key":"/queue/00000000000000000037","value":"job2","expiration":"2026-12-06T14:51:04.886829352Z","modifiedIndex":37,"createdIndex":37}}"#.to_owned() + "\n"
    );
    assert_eq!(s.next_expiration(), None);

    let stats = s.stats();
    assert_eq!(
        (stats.sets_success, stats.sets_fail, stats.create_success, stats.create_fail),
        (20, 7, 8, 5),
        "{stats:?}"
    );
    assert_eq!(
        (stats.update_success, stats.update_fail, stats.compare_and_swap_success, stats.compare_and_swap_fail),
        (5, 4, 3, 7)
    );
    assert_eq!((stats.delete_success, stats.delete_fail), (4, 5));
    assert_eq!((stats.compare_and_delete_success, stats.compare_and_delete_fail), (1, 6));
    assert_eq!(stats.expire_count, 1);
}

fn persist(records: &mut BTreeMap<Vec<u8>, Vec<u8>>, changes: Vec<Change>) {
    for change in changes {
        match change {
            Change::Put { key, value } => {
                records.insert(key, value);
            }
            Change::Delete { key } => {
                records.remove(&key);
            }
        }
    }
}

/// Applies `writes` to a new store, persisting every change.
fn persisted(writes: &[Write]) -> (Store, BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut store = Store::new();
    let mut records = BTreeMap::new();
    for write in writes {
        let (_, changes) = store.apply(write);
        persist(&mut records, changes);
    }
    (store, records)
}

#[track_caller]
fn assert_reloads_identically(store: &Store, records: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let loaded = match Store::load(records.iter().rev().map(|(key, value)| (key.clone(), value.clone()))) {
        Ok(loaded) => loaded,
        Err(err) => panic!("load failed: {err}"),
    };
    assert_eq!(loaded.root, store.root);
    assert_eq!(loaded.index, store.index);
    assert_eq!(loaded.history, store.history);
    assert_eq!(loaded.expirations, store.expirations);
    assert_eq!(get_json(&loaded, "/", true, 0), get_json(store, "/", true, 0));
}

#[test]
fn set_new_and_existing() {
    let mut s = Store::new();
    let first = ok(&mut s, &set("/a", "1"));
    assert_eq!((first.action, first.prev_node.is_none(), first.index), (Action::Set, true, 1));
    let second = ok(&mut s, &set("/a", "2"));
    assert_eq!(second.prev_node.map(|prev| prev.value), Some(Some("1".to_owned())));
    assert_eq!((second.node.created_index, second.node.modified_index), (2, 2));
}

#[test]
fn set_dir_replaces_a_file_and_implicit_dirs_take_the_write_index() {
    let mut s = Store::new();
    ok(&mut s, &set("/f", "x"));
    let dir = ok(&mut s, &set_dir("/f"));
    assert!(dir.node.dir);
    assert_eq!(dir.prev_node.map(|prev| prev.dir), Some(false));
    ok(&mut s, &set("/p/q/r", "deep"));
    let listing = s.get("/p", true, true).map(|event| event.node);
    let Ok(listing) = listing else { panic!("missing /p") };
    assert_eq!((listing.created_index, listing.modified_index), (3, 3));
    let q = &listing.nodes.unwrap_or_default()[0];
    assert_eq!((q.key.as_str(), q.created_index), ("/p/q", 3));
    // A child's change leaves the directory's modifiedIndex alone.
    ok(&mut s, &set("/p/other", "x"));
    assert_eq!(s.get("/p", false, false).map(|event| event.node.modified_index), Ok(3));
}

#[test]
fn create_under_a_file_counts_as_a_failed_set_too() {
    let mut s = Store::new();
    ok(&mut s, &set("/f", "x"));
    assert!(err_json(&mut s, &create("/f/g", "x")).contains("\"errorCode\":104"));
    let stats = s.stats();
    assert_eq!((stats.create_fail, stats.sets_fail), (1, 1));
}

#[test]
fn delete_counts_hidden_children_and_recursive_removes_everything() {
    let mut s = Store::new();
    ok(&mut s, &set("/d/_h", "x"));
    assert!(err_json(&mut s, &delete("/d", true, false)).contains("\"errorCode\":108"));
    ok(&mut s, &set_ttl("/d/e/f", "x", 50));
    ok(&mut s, &set_ttl("/keep", "x", 60));
    let (_, changes) = s.apply(&delete("/d", false, true));
    let deleted: Vec<_> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Delete { key } if key.starts_with(b"n") => Some(String::from_utf8_lossy(&key[1..]).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["/d/_h", "/d/e/f", "/d/e", "/d"]);
    assert_eq!(s.next_expiration(), Some(60));
    assert_eq!(s.get("/", true, true).map(|event| event.node.nodes.map(|nodes| nodes.len())), Ok(Some(1)));
}

#[test]
fn update_and_cas_keep_created_index_and_set_replaces_it() {
    let mut s = Store::new();
    ok(&mut s, &set("/k", "a"));
    let updated = ok(&mut s, &update("/k", "b", None, false));
    assert_eq!((updated.node.created_index, updated.node.modified_index), (1, 2));
    let swapped = ok(&mut s, &cas("/k", "", 2, "c"));
    assert_eq!((swapped.node.created_index, swapped.node.modified_index), (1, 3));
    let refreshed = ok(
        &mut s,
        &Write::CompareAndSwap {
            key: "/k".into(),
            prev_value: "c".into(),
            prev_index: 0,
            value: String::new(),
            expire: Some(99),
            refresh: true,
        },
    );
    assert_eq!(refreshed.node.value.as_deref(), Some("c"), "a refresh keeps the value");
    assert!(refreshed.refresh);
    assert_eq!(s.next_expiration(), Some(99));
}

#[test]
fn post_keys_are_twenty_digit_indexes() {
    let mut s = Store::new();
    ok(&mut s, &Write::Internal { steps: 1233 });
    let event = ok(&mut s, &post("/q", "x"));
    assert_eq!(event.node.key, "/q/00000000000000001234");
    // A hand-made key in the way is an ordinary conflict.
    ok(&mut s, &set("/q/00000000000000001236", "mine"));
    assert!(err_json(&mut s, &post("/q", "x")).contains("\"cause\":\"/q/00000000000000001236\""));
}

#[test]
fn expiry_goes_in_expiration_order_one_index_each() {
    let mut s = Store::new();
    ok(&mut s, &set_ttl("/b", "x", 20)); // 1
    ok(&mut s, &set_ttl("/a", "x", 20)); // 2
    ok(&mut s, &set_ttl("/c", "x", 10)); // 3
    let write = Write::Set { key: "/dir".into(), value: String::new(), dir: true, expire: Some(15), refresh: false };
    ok(&mut s, &write); // 4
    ok(&mut s, &set_ttl("/dir/child", "x", 5)); // 5, expires first
    ok(&mut s, &set_ttl("/dir/later", "x", 100)); // 6, goes with its directory
    ok(&mut s, &set_ttl("/late", "x", 30)); // 7
    let watcher = s.watch("/", true, true, 0);
    let Ok(mut watcher) = watcher else { panic!("watch refused") };
    let last = ok(&mut s, &Write::Expire { now: 20 });
    assert_eq!(last.index, 12);
    let mut seen = Vec::new();
    while let Ok(event) = watcher.try_next() {
        assert_eq!(event.action, Action::Expire);
        seen.push((event.node.key, event.index));
    }
    assert_eq!(
        seen,
        [("/dir/child".into(), 8), ("/c".into(), 9), ("/dir".into(), 10), ("/a".into(), 11), ("/b".into(), 12)]
    );
    assert_eq!(s.next_expiration(), Some(30));
    assert_eq!(s.stats().expire_count, 5);
    assert!(s.get("/dir", false, false).is_err());
}

#[test]
fn ttl_zero_expires_at_the_next_pass() {
    let mut s = Store::new();
    let now = 1_796_570_626_173_899_361;
    let event = ok(&mut s, &set_ttl("/z0", "v", now));
    assert_eq!(
        event.to_json(now, false),
        r#"{"action":"set","node":{"key":"/z0","value":"v","expiration":"2026-12-06T15:23:46.173899361Z","modifiedIndex":1,"createdIndex":1}}"#.to_owned() + "\n"
    );
    ok(&mut s, &Write::Expire { now: now + SECOND / 2 });
    assert!(get_json(&s, "/z0", false, 0).starts_with(r#"{"errorCode":100"#));
}

#[test]
fn internal_steps_take_indexes_that_no_watch_matches() {
    let mut s = Store::new();
    let (result, changes) = s.apply(&Write::Internal { steps: 2 });
    assert_eq!(result.map(|event| event.index), Ok(2));
    assert_eq!(changes.len(), 4, "an event and the index for each step");
    assert_eq!(s.index(), 2);
    let Ok(mut watcher) = s.watch("/", true, false, 1) else { panic!("watch refused") };
    assert!(matches!(watcher.try_next(), Err(TryRecvError::Empty)));
    assert_eq!(s.stats().watchers, 1);
    ok(&mut s, &Write::Internal { steps: 1 });
    assert!(matches!(watcher.try_next(), Err(TryRecvError::Empty)));
}

#[test]
fn history_keeps_the_last_thousand_and_answers_401_before() {
    let mut s = Store::new();
    ok(&mut s, &set("/message", "hello"));
    for n in 0..1070 {
        ok(&mut s, &set(&format!("/bulk/k{}", n % 10), &n.to_string()));
    }
    assert_eq!(s.index(), 1071);
    let Err(err) = s.watch("/message", false, false, 5) else { panic!("history not cleared") };
    assert_eq!(
        err.to_json(),
        r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [72/5]","index":1071}"#.to_owned() + "\n"
    );
    assert_eq!(err.code.http_status(), 400);
    let Err(err) = s.watch("/bulk", true, false, 71) else { panic!("history not cleared") };
    assert_eq!(err.cause, "the requested history has been cleared [72/71]");
    let Ok(mut hit) = s.watch("/bulk", true, false, 72) else { panic!("refused") };
    assert_eq!(hit.start_index, 1071);
    assert_eq!(hit.try_next().map(|event| event.index), Ok(72));
    assert!(matches!(hit.try_next(), Err(TryRecvError::Disconnected)), "a non-stream hit ends after its event");
    // No event of /message in 72..=1071: not an error, a registered watch.
    let Ok(mut waiting) = s.watch("/message", false, false, 72) else { panic!("refused") };
    assert!(matches!(waiting.try_next(), Err(TryRecvError::Empty)));
    assert_eq!(s.stats().watchers, 1);
}

#[test]
fn history_scan_sees_hidden_keys_and_ancestor_directory_deletes() {
    let mut s = Store::new();
    ok(&mut s, &set("/_h", "x")); // 1
    ok(&mut s, &set("/a/b/c", "x")); // 2
    ok(&mut s, &delete("/a", false, true)); // 3
    let scan = |key: &str, recursive: bool, since: u64| match s.watch(key, recursive, false, since) {
        Ok(mut watcher) => watcher.try_next().ok().map(|event| (event.action, event.index)),
        Err(err) => panic!("{err}"),
    };
    assert_eq!(scan("/", true, 1), Some((Action::Set, 1)));
    assert_eq!(scan("/a/b/c", false, 3), Some((Action::Delete, 3)));
    assert_eq!(scan("/a/b", true, 2), Some((Action::Set, 2)));
    assert_eq!(scan("/a/b", false, 2), Some((Action::Delete, 3)));
    assert_eq!(scan("/x", true, 1), None);
}

#[test]
fn live_watchers_follow_etcd_notification_rules() {
    let mut s = Store::new();
    ok(&mut s, &set("/message", "world"));
    let watch = |s: &Store, key: &str, recursive: bool| match s.watch(key, recursive, false, 0) {
        Ok(watcher) => watcher,
        Err(err) => panic!("{err}"),
    };
    let mut on_key = watch(&s, "/message", false);
    let mut on_root = watch(&s, "/", true);
    let mut on_root_flat = watch(&s, "/", false);
    let mut on_hdir = watch(&s, "/hdir", true);
    let mut on_hidden = watch(&s, "/_hidden", false);
    let mut on_ttlkey = watch(&s, "/ttlkey", false);
    let mut in_hidden_dir = watch(&s, "/_hdir", true);
    assert_eq!(on_key.start_index, 1);
    ok(&mut s, &set_ttl("/ttlkey", "v", 100)); // 2
    assert_eq!(on_ttlkey.try_next().map(|event| event.index), Ok(2));
    let mut on_ttlkey = watch(&s, "/ttlkey", false);
    let mut on_root = {
        assert_eq!(on_root.try_next().map(|event| event.index), Ok(2));
        drop(on_root);
        watch(&s, "/", true)
    };
    ok(&mut s, &set("/_hidden", "s2")); // 3
    ok(&mut s, &set("/hdir/_h", "secret")); // 4
    ok(&mut s, &update("/ttlkey", "", Some(200), true)); // 5: a refresh
    ok(&mut s, &set("/_hdir/x", "inside")); // 6
    assert!(matches!(on_root.try_next(), Err(TryRecvError::Empty)), "hidden keys and refreshes stay quiet");
    assert!(matches!(on_hdir.try_next(), Err(TryRecvError::Empty)));
    assert!(matches!(on_ttlkey.try_next(), Err(TryRecvError::Empty)));
    assert_eq!(on_hidden.try_next().map(|event| event.index), Ok(3));
    assert_eq!(in_hidden_dir.try_next().map(|event| event.index), Ok(6));
    ok(&mut s, &set("/message", "watched")); // 7
    assert_eq!(on_key.try_next().map(|event| event.index), Ok(7));
    assert!(matches!(on_key.try_next(), Err(TryRecvError::Disconnected)), "one event, then the end");
    assert_eq!(on_root.try_next().map(|event| event.index), Ok(7));
    assert!(matches!(on_root_flat.try_next(), Err(TryRecvError::Empty)), "an ancestor needs recursive");
    // Still registered: on_root_flat, on_hdir, on_ttlkey.
    assert_eq!(s.stats().watchers, 3);
    drop((on_root_flat, on_hdir, on_ttlkey));
    assert_eq!(s.stats().watchers, 0);
}

#[test]
fn future_wait_index_skips_earlier_events() {
    let mut s = Store::new();
    let Ok(mut watcher) = s.watch("/fut", false, false, 2) else { panic!("refused") };
    ok(&mut s, &set("/fut", "first")); // 1
    assert!(matches!(watcher.try_next(), Err(TryRecvError::Empty)));
    ok(&mut s, &set("/fut", "second")); // 2
    assert_eq!(
        watcher.try_next().map(|event| event.to_json(0, false)),
        Ok(r#"{"action":"set","node":{"key":"/fut","value":"second","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/fut","value":"first","modifiedIndex":1,"createdIndex":1}}"#.to_owned() + "\n")
    );
}

#[test]
fn directory_removal_reaches_watchers_below_and_streams_twice() {
    let mut s = Store::new();
    let watch = |s: &Store, key: &str, recursive: bool, stream: bool| match s.watch(key, recursive, stream, 0) {
        Ok(watcher) => watcher,
        Err(err) => panic!("{err}"),
    };
    let mut stream = watch(&s, "/st", true, true);
    let mut child = watch(&s, "/st/1/deeper", false, false);
    let mut under_hidden = watch(&s, "/st/_h", false, false);
    ok(&mut s, &set("/st/1", "1"));
    ok(&mut s, &set("/st/2", "2"));
    ok(&mut s, &set("/st/_h", "x"));
    ok(&mut s, &delete("/st", false, true));
    let mut seen = Vec::new();
    while let Ok(event) = stream.try_next() {
        seen.push((event.action, event.node.key));
    }
    assert_eq!(
        seen,
        [
            (Action::Set, "/st/1".to_owned()),
            (Action::Set, "/st/2".to_owned()),
            (Action::Delete, "/st".to_owned()),
            (Action::Delete, "/st".to_owned()),
        ]
    );
    assert_eq!(under_hidden.try_next().map(|event| event.action), Ok(Action::Set));
    // /st/1/deeper never existed, so no removal callback reaches it.
    assert!(matches!(child.try_next(), Err(TryRecvError::Empty)));

    let mut par_child = watch(&s, "/par/child", false, false);
    ok(&mut s, &set("/par/child", "x"));
    let mut par_child_again = watch(&s, "/par/child", false, false);
    let removed = ok(&mut s, &delete("/par", true, true));
    assert_eq!(par_child.try_next().map(|event| event.action), Ok(Action::Set));
    assert_eq!(par_child_again.try_next(), Ok(removed));

    let write = Write::Set { key: "/edir".into(), value: String::new(), dir: true, expire: Some(7), refresh: false };
    ok(&mut s, &write);
    ok(&mut s, &set("/edir/k", "x"));
    let mut on_k = watch(&s, "/edir/k", false, false);
    let mut on_edir = watch(&s, "/edir", true, false);
    let expired = ok(&mut s, &Write::Expire { now: 7 });
    assert_eq!(on_k.try_next(), Ok(expired.clone()));
    assert_eq!(on_edir.try_next(), Ok(expired));
}

#[test]
fn a_full_stream_buffer_drops_the_watcher() {
    let mut s = Store::new();
    let Ok(mut stream) = s.watch("/k", false, true, 0) else { panic!("refused") };
    for n in 0..=WATCHER_BUFFER {
        ok(&mut s, &set("/k", &n.to_string()));
    }
    assert_eq!(s.stats().watchers, 0);
    for _ in 0..WATCHER_BUFFER {
        assert!(stream.try_next().is_ok());
    }
    assert!(matches!(stream.try_next(), Err(TryRecvError::Disconnected)));
}

#[test]
fn a_stream_answered_from_history_stays_open() {
    let mut s = Store::new();
    ok(&mut s, &set("/k", "v"));
    let Ok(mut stream) = s.watch("/k", false, true, 1) else { panic!("refused") };
    assert!(stream.try_next().is_ok());
    assert!(matches!(stream.try_next(), Err(TryRecvError::Empty)));
    assert_eq!(s.stats().watchers, 0, "etcd does not register it");
}

#[test]
fn watchers_end_when_the_store_goes() {
    let s = Store::new();
    let Ok(mut watcher) = s.watch("/k", true, true, 0) else { panic!("refused") };
    drop(s);
    assert!(matches!(watcher.try_next(), Err(TryRecvError::Disconnected)));
}

#[tokio::test]
async fn next_waits_for_the_event() {
    let mut s = Store::new();
    let Ok(mut watcher) = s.watch("/k", false, false, 0) else { panic!("refused") };
    let written = ok(&mut s, &set("/k", "v"));
    assert_eq!(watcher.next().await, Some(written));
    assert_eq!(watcher.next().await, None);
}

#[test]
fn store_and_watchers_cross_threads() {
    fn shared<T: Send + Sync>() {}
    fn sent<T: Send>() {}
    shared::<Store>();
    sent::<crate::Watcher>();
}

#[test]
fn gets_are_counted_by_the_caller() {
    let s = Store::new();
    s.count_get(true);
    s.count_get(false);
    s.count_get(false);
    let stats = s.stats();
    assert_eq!((stats.gets_success, stats.gets_fail), (1, 2));
    assert_eq!(get_json(&s, "/", false, 0), "{\"action\":\"get\",\"node\":{\"dir\":true}}\n");
}

#[test]
fn odd_keys_are_cleaned_not_panicked_on() {
    let mut s = Store::new();
    ok(&mut s, &set("//a/./b/", "x"));
    assert!(s.get("/a/b", false, false).is_ok());
    assert!(err_json(&mut s, &set("/..", "x")).contains("\"errorCode\":107"));
    assert!(s.get("", false, false).is_ok());
    assert!(s.watch("", false, false, u64::MAX).is_ok());
}

#[test]
fn load_rejects_damaged_records() {
    let (_, records) = persisted(&[set("/a/b", "x")]);
    let without_parent: Vec<_> = records.clone().into_iter().filter(|(key, _)| key != b"n/a").collect();
    assert!(Store::load(without_parent).is_err());
    let mut unknown = records.clone();
    unknown.insert(b"zzz".to_vec(), Vec::new());
    assert!(Store::load(unknown).is_err());
    let mut behind = records;
    behind.insert(b"i".to_vec(), 0u64.to_be_bytes().to_vec());
    assert!(Store::load(behind).is_err());
}

#[test]
fn reload_keeps_history_and_expirations() {
    let mut writes = vec![Write::Internal { steps: 3 }, set("/r1", "v"), set_ttl("/t", "x", 50)];
    for n in 0..1100 {
        writes.push(set(&format!("/bulk/{}", n % 7), &n.to_string()));
    }
    writes.push(update("/t", "", Some(70), true));
    let (store, records) = persisted(&writes);
    assert_eq!(records.keys().filter(|key| key.starts_with(b"e")).count(), HISTORY_LEN);
    assert_reloads_identically(&store, &records);
    let Ok(loaded) = Store::load(records) else { panic!("load failed") };
    assert_eq!(loaded.next_expiration(), Some(70));
    assert_eq!(loaded.index(), 1106);
}

fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/", "/a", "/a/b", "/a/_h", "/a/b/c", "/b", "/_x/y", "/a/b/c/d"]).prop_map(String::from)
}

fn arb_expire() -> impl Strategy<Value = Option<Nanos>> {
    prop_oneof![Just(None), (1i64..40).prop_map(Some)]
}

fn arb_write() -> impl Strategy<Value = Write> {
    let value = prop::sample::select(vec!["", "v", "w"]).prop_map(String::from);
    prop_oneof![
        (arb_key(), value.clone(), any::<bool>(), arb_expire(), any::<bool>())
            .prop_map(|(key, value, dir, expire, refresh)| Write::Set { key, value, dir, expire, refresh }),
        (arb_key(), value.clone(), any::<bool>(), any::<bool>(), arb_expire())
            .prop_map(|(key, value, dir, unique, expire)| Write::Create { key, value, dir, unique, expire }),
        (arb_key(), value.clone(), arb_expire(), any::<bool>())
            .prop_map(|(key, value, expire, refresh)| Write::Update { key, value, expire, refresh }),
        (arb_key(), value.clone(), 0u64..6, value.clone(), arb_expire(), any::<bool>()).prop_map(
            |(key, prev_value, prev_index, value, expire, refresh)| Write::CompareAndSwap {
                key,
                prev_value,
                prev_index,
                value,
                expire,
                refresh
            }
        ),
        (arb_key(), any::<bool>(), any::<bool>()).prop_map(|(key, dir, recursive)| Write::Delete {
            key,
            dir,
            recursive
        }),
        (arb_key(), value, 0u64..6).prop_map(|(key, prev_value, prev_index)| Write::CompareAndDelete {
            key,
            prev_value,
            prev_index
        }),
        (0i64..45).prop_map(|now| Write::Expire { now }),
        (0u32..3).prop_map(|steps| Write::Internal { steps }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn persisted_changes_reload_into_the_same_store(
        writes in prop::collection::vec(arb_write(), 0..80),
        more in prop::collection::vec(arb_write(), 0..10),
    ) {
        let mut store = Store::new();
        let mut records = BTreeMap::new();
        for write in &writes {
            let index_before = store.index();
            let tree_before = store.root.clone();
            let (result, changes) = store.apply(write);
            match &result {
                Ok(event) if !matches!(write, Write::Expire { .. }) => prop_assert_eq!(event.index, store.index()),
                Ok(_) => {}
                Err(err) => {
                    prop_assert!(changes.is_empty());
                    prop_assert_eq!(err.index, index_before);
                    prop_assert_eq!(store.index(), index_before);
                    prop_assert_eq!(&store.root, &tree_before);
                }
            }
            persist(&mut records, changes);
        }
        assert_reloads_identically(&store, &records);
        let Ok(mut loaded) = Store::load(records.clone()) else { panic!("load failed") };
        // The reloaded store goes on exactly as the original does.
        for write in &more {
            let (original, original_changes) = store.apply(write);
            let (reloaded, reloaded_changes) = loaded.apply(write);
            prop_assert_eq!(original, reloaded);
            prop_assert_eq!(&original_changes, &reloaded_changes);
            persist(&mut records, original_changes);
        }
        assert_reloads_identically(&loaded, &records);
        // Every index left exactly one history entry.
        let held = store.history.oldest_index();
        prop_assert!(held <= 1);
        prop_assert_eq!(records.keys().filter(|key| key.starts_with(b"e")).count() as u64, store.index());
    }
}
