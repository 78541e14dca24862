//! keelctl's long-running tools against real `keel` processes, beside the
//! real etcdctl doing the same: `make-mirror` between two members, and the
//! `check perf` / `check datascale` load checks with their refusals.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::etcd::require_etcd;
use common::{keelctl_command, wait_for, Keel};
use keel_proto::etcdserverpb::request_op::Request;
use keel_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// A mirror process, killed when dropped (it runs until killed); its
/// stdout lines arrive on `lines`.
struct Mirror {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Mirror {
    fn start(mut command: Command) -> Mirror {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the mirror");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Mirror { child, lines }
    }

    /// Kills it, after checking that it was still running and had written
    /// nothing on stderr.
    fn stop(mut self, name: &str) {
        assert!(self.child.try_wait().unwrap().is_none(), "{name} stopped by itself");
        self.child.kill().unwrap();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert_eq!(stderr, "", "{name}'s stderr");
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keelctl_mirror(source: &Keel, dest: &Keel, flags: &[&str]) -> Mirror {
    let mut command = keelctl_command();
    command.args(["--endpoints", &source.endpoint(), "make-mirror"]).args(flags).arg(dest.endpoint());
    Mirror::start(command)
}

fn etcdctl_mirror(source: &Keel, dest: &Keel, flags: &[&str]) -> Mirror {
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").stdin(Stdio::null());
    command.args(["--endpoints", &source.endpoint(), "make-mirror"]).args(flags).arg(dest.endpoint());
    Mirror::start(command)
}

async fn put(keel: &Keel, key: &str, value: &str) {
    let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
    keel.kv().await.put(request).await.unwrap();
}

/// Every key and value of `keel`.
async fn dump(keel: &Keel) -> BTreeMap<String, String> {
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let kvs = keel.kv().await.range(all).await.unwrap().into_inner().kvs;
    kvs.into_iter().map(|kv| (String::from_utf8(kv.key).unwrap(), String::from_utf8(kv.value).unwrap())).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Waits until `keel` holds exactly `expected`.
async fn wait_for_contents(keel: &Keel, expected: &BTreeMap<String, String>) {
    let limit = Duration::from_secs(20);
    let what = format!("the destination to hold {expected:?}");
    wait_for(&what, limit, || async { dump(keel).await == *expected }).await;
}

/// The mirrors' first count line (printed 30 s after they start).
fn first_count(mirror: &Mirror, name: &str) -> String {
    mirror.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{name} printed no count: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn make_mirror_copies_then_follows_as_etcdctl_does() {
    require_etcd();
    let (source_dir, dest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = Keel::start(source_dir.path()).await;
    let dest = Keel::start(dest_dir.path()).await;
    put(&source, "/p/a", "1").await;
    put(&source, "/p/b", "2").await;
    put(&source, "/q/x", "outside the prefix").await;

    let renamed = keelctl_mirror(&source, &dest, &["--prefix", "/p/", "--dest-prefix", "/m/"]);
    let rooted = keelctl_mirror(&source, &dest, &["--prefix", "/p/", "--no-dest-prefix"]);
    let etcdctl = etcdctl_mirror(&source, &dest, &["--prefix", "/p/", "--dest-prefix", "/e/"]);
    let copied = map(&[("/e/a", "1"), ("/e/b", "2"), ("/m/a", "1"), ("/m/b", "2"), ("a", "1"), ("b", "2")]);
    wait_for_contents(&dest, &copied).await;

    // A put, a delete, and a transaction of two puts: each revision is
    // applied as one transaction on the destination.
    put(&source, "/p/c", "3").await;
    let delete = DeleteRangeRequest { key: "/p/a".into(), ..Default::default() };
    source.kv().await.delete_range(delete).await.unwrap();
    let op = |key: &str, value: &str| RequestOp {
        request: Some(Request::RequestPut(PutRequest { key: key.into(), value: value.into(), ..Default::default() })),
    };
    let txn = TxnRequest { success: vec![op("/p/d", "4"), op("/p/e", "5")], ..Default::default() };
    source.kv().await.txn(txn).await.unwrap();
    put(&source, "/q/y", "outside again").await;
    let mut followed = BTreeMap::new();
    for root in ["/e/", "/m/", ""] {
        for (key, value) in [("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
            followed.insert(format!("{root}{key}"), value.to_string());
        }
    }
    wait_for_contents(&dest, &followed).await;

    // Two copied, then a put, a delete and two puts: 6, as etcdctl counts.
    let counts = [
        first_count(&renamed, "keelctl --dest-prefix"),
        first_count(&rooted, "keelctl --no-dest-prefix"),
        first_count(&etcdctl, "etcdctl"),
    ];
    assert_eq!(counts, ["6", "6", "6"]);
    renamed.stop("keelctl --dest-prefix");
    rooted.stop("keelctl --no-dest-prefix");
    etcdctl.stop("etcdctl");
}

#[tokio::test(flavor = "multi_thread")]
async fn make_mirror_without_a_prefix_copies_every_key() {
    let (source_dir, dest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = Keel::start(source_dir.path()).await;
    let dest = Keel::start(dest_dir.path()).await;
    // More than one page of clientv3/mirror's 1000 keys.
    let mut kv = source.kv().await;
    for i in 0..1100 {
        let request = PutRequest { key: format!("k{i:04}").into(), value: i.to_string().into(), ..Default::default() };
        kv.put(request).await.unwrap();
    }
    let mirror = keelctl_mirror(&source, &dest, &[]);
    let mut expected = dump(&source).await;
    assert_eq!(expected.len(), 1100);
    wait_for_contents(&dest, &expected).await;
    put(&source, "new", "y").await;
    expected.insert("new".into(), "y".into());
    wait_for_contents(&dest, &expected).await;
    mirror.stop("keelctl make-mirror");
}

fn run(program: Command) -> Output {
    let mut program = program;
    program.stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("run the check")
}

fn keelctl(keel: &Keel, args: &[&str]) -> Output {
    let mut command = keelctl_command();
    command.args(["--endpoints", &keel.endpoint()]).args(args);
    run(command)
}

fn etcdctl(keel: &Keel, args: &[&str]) -> Output {
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3").stdin(Stdio::null()).args(["--endpoints", &keel.endpoint()]).args(args);
    run(command)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What follows the progress frames (each after a `\r`): the last frame
/// and the lines after it.
fn after_frames(stdout: &str) -> &str {
    stdout.rsplit('\r').next().unwrap_or_default()
}

/// `check perf --load s` paces its writes at 150 a second, prints etcdctl's
/// frames and verdict, exits by the verdict and deletes its keys. Whether
/// the latency lines pass is not asserted: that is the machine's speed (a
/// debug member beside the other tests can take 0.6 s for one write), and
/// speed lives in benchmarks (`xtask bench ctl --check-perf`).
#[tokio::test(flavor = "multi_thread")]
async fn check_perf_runs_on_keel_and_leaves_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let out = keelctl(&keel, &["check", "perf", "--load", "s"]);
    let stdout = text(&out.stdout);
    assert_eq!(text(&out.stderr), "");
    // No terminal: etcdctl's bar is its bare frames, the first at once.
    assert!(stdout.starts_with("\r 0 / 60    0.00%\r"), "{stdout:?}");
    let frames = stdout.matches('\r').count();
    assert!((250..=320).contains(&frames), "{frames} frames in 60 s, one each 200 ms: {stdout:?}");
    let tail = after_frames(&stdout);
    // The last frame, finished or not, then the verdict.
    let verdict = match tail.split_once('\n') {
        Some((last, rest)) if last.starts_with(" 60 / 60  100.00% ") => rest,
        _ => &tail[tail.find("PASS").unwrap_or(0)..],
    };
    let lines: Vec<&str> = verdict.lines().collect();
    assert_eq!(lines.len(), 4, "{tail:?}");
    let throughput: u32 = lines[0]
        .strip_prefix("PASS: Throughput is ")
        .and_then(|rest| rest.strip_suffix(" writes/s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{tail:?}"));
    assert!((136..=152).contains(&throughput), "{throughput} writes/s at 150 a second");
    let slowest = lines[1].starts_with("PASS: Slowest request took 0.");
    assert!(slowest || lines[1].starts_with("Slowest request took too long: "), "{tail:?}");
    let stddev = lines[2].starts_with("PASS: Stddev is 0.");
    assert!(stddev || lines[2].contains("Stddev too high: "), "{tail:?}");
    assert!(lines[1].ends_with('s') && lines[2].ends_with('s'), "{tail:?}");
    let passed = slowest && stddev;
    assert_eq!(lines[3], if passed { "PASS" } else { "FAIL" }, "{tail:?}");
    assert_eq!(out.status.code(), Some(if passed { 0 } else { 1 }), "{stdout}");
    assert_eq!(dump(&keel).await, BTreeMap::new(), "the check deletes its keys");
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_refuse_a_prefix_with_keys_as_etcdctl_does() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    put(&keel, "/etcdctl-check-perf/x", "1").await;
    put(&keel, "/etcdctl-check-datascale/x", "1").await;
    put(&keel, "/mine/x", "1").await;
    let cases: [&[&str]; 4] = [
        &["check", "perf"],
        &["check", "datascale"],
        &["check", "perf", "--prefix", "/mine/", "--load", "xl"],
        &["check", "datascale", "--load=medium", "--prefix=/mine/"],
    ];
    for args in cases {
        let (ours, theirs) = (keelctl(&keel, args), etcdctl(&keel, args));
        assert_eq!(ours.status.code(), Some(3), "{args:?}");
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(text(&ours.stdout), text(&theirs.stdout), "{args:?}");
        assert_eq!(text(&ours.stderr), text(&theirs.stderr), "{args:?}");
    }
    let refused = keelctl(&keel, &["check", "perf"]);
    assert_eq!(
        text(&refused.stderr),
        "Error: prefix \"/etcdctl-check-perf/\" has keys. Delete with etcdctl del --prefix /etcdctl-check-perf/ first\n"
    );
    let unknown = keelctl(&keel, &["check", "datascale", "--load", "huge"]);
    assert_eq!((unknown.status.code(), text(&unknown.stderr)), (Some(4), "Error: unknown load option huge\n".into()));
    assert_eq!(dump(&keel).await.len(), 3, "a refusal writes nothing");
}

/// Numbers vary from run to run; the shape must not.
fn shape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn check_datascale_reads_keels_metrics_as_etcdctl_does() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let args = ["check", "datascale", "--auto-compact", "--auto-defrag"];
    let ours = keelctl(&keel, &args);
    let stdout = text(&ours.stdout);
    assert_eq!(ours.status.code(), Some(0), "{stdout}{}", text(&ours.stderr));
    assert!(
        stdout.starts_with("Start data scale check for work load [10000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients].\n\r 0 / 10000    0.00%"),
        "{stdout:?}"
    );
    let tail = after_frames(&stdout);
    let endpoint = keel.endpoint();
    let expected = format!(
        " 10000 / 10000  100.00% #s\nCompacting with revision #\nCompacted with revision #\nDefragmenting \"{endpoint}\"\nDefragmented \"{endpoint}\"\nPASS: Approximate system memory used : # MB.\n"
    );
    assert_eq!(shape(tail), shape(&expected));
    assert_eq!(dump(&keel).await, BTreeMap::new(), "the check deletes its keys");

    let theirs = etcdctl(&keel, &args);
    assert_eq!(theirs.status.code(), Some(0), "{}", text(&theirs.stderr));
    assert_eq!(shape(after_frames(&text(&theirs.stdout))), shape(tail));
    assert_eq!(text(&ours.stderr), text(&theirs.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn argument_errors_and_help_match_etcdctl() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(dir.path()).await;
    let endpoint = keel.endpoint();
    let cases: Vec<Vec<&str>> = vec![
        vec!["make-mirror"],
        vec!["make-mirror", "a", "b"],
        vec!["make-mirror", "--dest-cert", "/nonexistent", &endpoint],
        vec!["make-mirror", "--dest-key=/nonexistent", &endpoint],
        vec!["make-mirror", "--dest-cacert", "/nonexistent", &endpoint],
        // Refused after the first read of the source.
        vec!["make-mirror", "--dest-prefix", "/x/", "--no-dest-prefix", &endpoint],
        vec!["make-mirror", "--dest-insecure-transport=maybe", &endpoint],
        vec!["make-mirror", "--help"],
        vec!["check"],
        vec!["check", "--help"],
        vec!["check", "perf", "--help"],
        vec!["check", "datascale", "--help"],
        vec!["help", "check", "datascale"],
        vec!["check", "perf", "--load", "foo"],
        vec!["check", "datascale", "--load=XL"],
    ];
    for args in cases {
        let (ours, theirs) = (keelctl(&keel, &args), etcdctl(&keel, &args));
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}: {}", text(&ours.stderr));
        assert_eq!(text(&ours.stdout), text(&theirs.stdout), "{args:?}");
        assert_eq!(text(&ours.stderr), text(&theirs.stderr), "{args:?}");
    }
}
