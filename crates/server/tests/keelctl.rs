//! `keelctl` against real `keel` processes: the README's walk-through run
//! as written, the progress bar on a terminal (and only there), and the
//! offline tools (`snapshot restore` of Keel's and etcd's snapshots into
//! data dirs that members then start on, `data-dir status`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::etcd::{etcdctl_ok, require_etcd, start_etcd_cluster, Plan};
use common::{free_port, keelctl_command, Keel};

fn keelctl(endpoint: &str, args: &[&str]) -> Output {
    keelctl_command()
        .args(["--endpoints", endpoint])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run keelctl")
}

fn keelctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = keelctl(endpoint, args);
    assert!(
        out.status.success(),
        "keelctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `$` command of a transcript and the stdout lines it must print.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The ```console blocks of the README's keelctl section: `$ ` starts a
/// command, `>` continues it, other lines are its output.
fn walkthrough(readme: &str) -> Vec<Step> {
    let start = readme.find("## A first session with keelctl").expect("the README has a keelctl walk-through");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step { command: command.to_string(), expected: Vec::new() });
        } else if let Some(more) = line.strip_prefix('>') {
            let step = steps.last_mut().expect("a continuation follows a command");
            step.command.push('\n');
            step.command.push_str(more.strip_prefix(' ').unwrap_or(more));
        } else {
            steps.last_mut().expect("output follows a command").expected.push(line.to_string());
        }
    }
    steps
}

/// `line` matches `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("...").collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) || line.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

const MARK: &str = "@@keelctl-walkthrough-step";

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let readme = include_str!("../../../README.md");
    let steps = walkthrough(readme);
    assert!(steps.len() >= 20, "the walk-through has its steps: {steps:#?}");

    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("data")).await;
    keel.wait_for_quorum().await;
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // One shell for the whole session, so variables carry over; each step
    // ends with a marker and its exit status.
    let mut script = String::from("set -u\n");
    for step in &steps {
        script.push_str(&step.command);
        script.push_str(&format!("\necho \"{MARK} $?\"\n"));
    }
    let keelctl = keelctl_command();
    let bin_dir = Path::new(keelctl.get_program()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = Command::new("bash");
    common::without_etcd_env(&mut shell);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            shell.env_remove(key);
        }
    }
    let out = shell
        .args(["-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        .env("ETCDCTL_ENDPOINTS", format!("127.0.0.1:{}", keel.port))
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mark = format!("{MARK} ");
    let mut outputs = stdout.split(&mark);
    let mut previous = outputs.next().unwrap_or_default();
    for (i, step) in steps.iter().enumerate() {
        let next = outputs.next().unwrap_or_else(|| panic!("step {i} `{}` never finished\n{stderr}", step.command));
        let (status, rest) = next.split_once('\n').unwrap_or((next, ""));
        assert_eq!(status, "0", "step {i} `{}` failed; it printed:\n{previous}\nstderr:\n{stderr}", step.command);
        let printed: Vec<&str> = previous.strip_suffix('\n').map(|p| p.split('\n').collect()).unwrap_or_default();
        let same = printed.len() == step.expected.len()
            && step.expected.iter().zip(&printed).all(|(pattern, line)| matches(pattern, line));
        assert!(
            same,
            "step {i} `{}` printed\n{}\ninstead of\n{}",
            step.command,
            printed.join("\n"),
            step.expected.join("\n")
        );
        previous = rest;
    }
}

#[test]
fn transcript_patterns() {
    assert!(matches("lease ... revoked", "lease 694d7c1b2e3f revoked"));
    assert!(matches("..., 6, ..., ...", "c0ffee, 6, 12, 20 kB"));
    assert!(!matches("..., 6, ..., ...", "c0ffee, 7, 12, 20 kB"));
    assert!(matches("OK", "OK"));
    assert!(!matches("OK", "OK "));
    assert!(!matches("a...a", "a"));
}

/// Puts enough data that a snapshot takes more than one piece.
async fn fill(keel: &Keel, keys: usize) {
    let mut kv = keel.kv().await;
    let value = vec![b'x'; 4096];
    for i in 0..keys {
        kv.put(keel_proto::etcdserverpb::PutRequest {
            key: format!("fill/{i:05}").into_bytes(),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_progress_bar_shows_on_a_terminal_and_only_there() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("data")).await;
    keel.wait_for_quorum().await;
    fill(&keel, 600).await;
    let endpoint = format!("127.0.0.1:{}", keel.port);

    // A script: etcdctl's output, no bar.
    let plain = dir.path().join("plain.db");
    let out = keelctl(&endpoint, &["snapshot", "save", plain.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\r') && !stderr.contains("snapshot save ["), "{stderr}");

    // A terminal (util-linux `script` runs the command on a pseudo-terminal).
    let keelctl = keelctl_command();
    let bin = keelctl.get_program().to_string_lossy().into_owned();
    let on_tty = |args: &str| {
        let mut script = Command::new("script");
        common::without_etcd_env(&mut script);
        let out = script
            .args(["-qfec", &format!("{bin} {args}"), "/dev/null"])
            .env("ETCDCTL_ENDPOINTS", &endpoint)
            .stdin(Stdio::null())
            .output()
            .expect("run script (util-linux)");
        assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let saved = dir.path().join("tty.db");
    let session = on_tty(&format!("snapshot save {}", saved.display()));
    assert!(session.contains("\rsnapshot save ["), "{session:?}");
    assert!(session.contains("] 100% "), "{session:?}");
    assert!(session.contains("MiB"), "the bar counts bytes: {session:?}");
    assert!(session.contains(&format!("Snapshot saved at {}", saved.display())), "{session:?}");

    let restored = dir.path().join("restored");
    let session = on_tty(&format!("snapshot restore {} --data-dir {}", saved.display(), restored.display()));
    assert!(session.contains("\rsnapshot restore ["), "{session:?}");
    assert!(session.contains("] 100% "), "{session:?}");
    assert!(restored.join("member").join("kv").is_dir());
}

#[tokio::test]
async fn a_restored_keel_snapshot_starts_a_new_cluster_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("data")).await;
    keel.wait_for_quorum().await;
    let endpoint = format!("127.0.0.1:{}", keel.port);
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        keelctl_ok(&endpoint, &["put", k, v]);
    }
    let snap = dir.path().join("snap.db");
    keelctl_ok(&endpoint, &["snapshot", "save", snap.to_str().unwrap()]);
    drop(keel);

    // Restored for a member named n1 with its own peer URL, the revision
    // moved a thousand ahead.
    let peer = format!("http://127.0.0.1:{}", free_port());
    let restored = dir.path().join("n1");
    let args = [
        "snapshot",
        "restore",
        snap.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--name",
        "n1",
        "--initial-cluster",
        &format!("n1={peer}"),
        "--initial-advertise-peer-urls",
        &peer,
        "--bump-revision",
        "1000",
        "--mark-compacted",
    ];
    let out = keelctl("127.0.0.1:1", &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("\"msg\":\"restoring snapshot\"") && log.contains("\"msg\":\"restored snapshot\""), "{log}");
    assert!(log.contains("\"msg\":\"added member\""), "{log}");

    // The same again is refused: the data dir exists.
    let again = keelctl("127.0.0.1:1", &args);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr).lines().last().unwrap(),
        format!("Error: data-dir \"{}\" exists", restored.display())
    );

    let status = keelctl_ok("127.0.0.1:1", &["data-dir", "status", restored.to_str().unwrap(), "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["revision"], 1004);
    assert_eq!(status["compact_revision"], 1004);
    assert_eq!(status["keys"], 2);
    assert_eq!(status["members"][0]["name"], "n1");

    // A stopped member's store defragments offline, silently as etcdctl.
    let defrag = keelctl("127.0.0.1:1", &["defrag", "--data-dir", restored.to_str().unwrap()]);
    assert!(defrag.status.success() && defrag.stdout.is_empty(), "{}", String::from_utf8_lossy(&defrag.stderr));
    let nowhere = dir.path().join("nowhere");
    let defrag = keelctl("127.0.0.1:1", &["defrag", "--data-dir", nowhere.to_str().unwrap()]);
    assert_eq!(defrag.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&defrag.stderr),
        format!(
            "Failed to defragment etcd data[{}] (no Keel store at {})\n",
            nowhere.display(),
            nowhere.join("member/kv").display()
        )
    );

    // A member started on it is n1 (its id and cluster from the data dir,
    // its name published from --name, as etcd's), with the data.
    let port = free_port();
    let flags = ["--name", "n1", "--listen-peer-urls", &peer].map(String::from);
    let member = Keel::spawn(&restored, port, &flags);
    member.wait_ready().await;
    member.wait_for_quorum().await;
    let endpoint = format!("127.0.0.1:{port}");
    assert_eq!(keelctl_ok(&endpoint, &["get", "a", "--print-value-only"]), "3\n");
    let list = keelctl_ok(&endpoint, &["member", "list"]);
    let id = status["member_id"].as_u64().unwrap();
    assert!(list.starts_with(&format!("{id:x}, started, n1, {peer}, ")), "{list}");
    let old = keelctl(&endpoint, &["get", "a", "--rev=3"]);
    assert!(String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"));
    let put = keelctl_ok(&endpoint, &["put", "c", "4", "-w", "json"]);
    assert!(put.contains("\"revision\":1005"), "the next write follows the bump: {put}");

    // A running member's data dir can be inspected: read-only, beside it,
    // as of the store's last flush (the put of c may be only in the raft
    // log and the member's memory yet: the store keeps no WAL).
    let live = keelctl_ok("127.0.0.1:1", &["data-dir", "status", restored.to_str().unwrap()]);
    assert!(live.contains(&format!("member id: {id:x}\n")), "{live}");
    assert!(live.contains("\nkeys: 2\n") || live.contains("\nkeys: 3\n"), "{live}");
    assert_eq!(keelctl_ok(&endpoint, &["get", "c", "--print-value-only"]), "4\n");
}

#[tokio::test]
async fn an_etcd_snapshot_restores_into_a_keel_data_dir() {
    require_etcd();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(1, "etcd-restore");
    let etcd = start_etcd_cluster(&plan, &[dir.path().join("etcd")], dir.path());
    let endpoints = plan.endpoints();
    for (k, v) in [("x", "1"), ("y", "2"), ("x", "3")] {
        etcdctl_ok(&endpoints, &["put", k, v]);
    }
    etcdctl_ok(&endpoints, &["del", "y"]);
    let revision = etcdctl_ok(&endpoints, &["get", "x", "-w", "json"]);
    let snap = dir.path().join("etcd.db");
    etcdctl_ok(&endpoints, &["snapshot", "save", snap.to_str().unwrap()]);
    drop(etcd);

    let restored = dir.path().join("keel");
    let out = keelctl(
        "127.0.0.1:1",
        &["snapshot", "restore", snap.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let keel = Keel::spawn(&restored, port, &[]);
    keel.wait_for_quorum().await;
    let endpoint = format!("127.0.0.1:{port}");
    assert_eq!(keelctl_ok(&endpoint, &["get", "x", "--print-value-only"]), "3\n");
    assert_eq!(keelctl_ok(&endpoint, &["get", "y"]), "");
    // etcd's revisions are kept: x was last written at the same revision.
    let mod_revision = |json: &str| {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["kvs"][0]["mod_revision"].clone()
    };
    assert_eq!(mod_revision(&keelctl_ok(&endpoint, &["get", "x", "-w", "json"])), mod_revision(&revision));
}

#[test]
fn bad_restores_are_refused_with_etcdctls_messages_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let run = |args: &[&str]| {
        let out = keelctl("127.0.0.1:1", args);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string())
    };
    let missing = dir.path().join("missing.db");
    assert_eq!(
        run(&["snapshot", "restore", missing.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]),
        (Some(1), format!("Error: open {}: no such file or directory", missing.display()))
    );
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 100]).unwrap();
    assert_eq!(
        run(&["snapshot", "restore", garbage.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]),
        (Some(1), "Error: snapshot missing hash but --skip-hash-check=false".to_string())
    );
    assert!(!target.exists(), "a failed restore leaves no data dir behind");
    assert_eq!(
        run(&["snapshot", "restore", "a", "b"]),
        (Some(128), "Error: snapshot restore requires exactly one argument".to_string())
    );
    assert_eq!(
        run(&["snapshot", "restore", "a", "--bump-revision", "5"]),
        (Some(128), "Error: --mark-compacted required if --revision-bump > 0".to_string())
    );
    assert_eq!(
        run(&["snapshot", "restore", "a", "--name", "x"]),
        (Some(1), "Error: couldn't find local name \"x\" in the initial cluster configuration".to_string())
    );
}

/// A DNS server on 127.0.0.1:53 that knows one SRV record,
/// `_etcd-client._tcp.keel.test` → `m1.keel.test.:port`, the address of
/// `m1.keel.test` (127.0.0.1), and no other name.
fn fake_dns(port: u16) -> std::net::UdpSocket {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    let socket = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 (the tests run as root)");
    let serving = socket.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = serving.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            let mut known = false;
            for q in query.queries() {
                answer.add_query(q.clone());
                let name = q.name().to_ascii();
                if q.query_type() == RecordType::SRV && name == "_etcd-client._tcp.keel.test." {
                    let target = Name::from_ascii("m1.keel.test.").unwrap();
                    let srv = RData::SRV(SRV::new(0, 0, port, target));
                    answer.add_answer(Record::from_rdata(q.name().clone(), 30, srv));
                    known = true;
                } else if name == "m1.keel.test." {
                    if q.query_type() == RecordType::A {
                        let a = RData::A(A::new(127, 0, 0, 1));
                        answer.add_answer(Record::from_rdata(q.name().clone(), 30, a));
                    }
                    known = true;
                }
            }
            answer.set_response_code(if known { ResponseCode::NoError } else { ResponseCode::NXDomain });
            let _ = serving.send_to(&answer.to_vec().unwrap(), from);
        }
    });
    socket
}

/// keelctl with `args`, in a mount namespace whose /etc/resolv.conf names
/// the fake DNS server: the system's resolver configuration, as keelctl
/// reads it, without touching the machine's.
fn keelctl_with_dns(dir: &Path, args: &[&str]) -> Output {
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n").unwrap();
    let keelctl = keelctl_command();
    let bin = keelctl.get_program().to_string_lossy().into_owned();
    let mut unshare = Command::new("unshare");
    common::without_etcd_env(&mut unshare);
    unshare
        .args(["--mount", "sh", "-c", "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\""])
        .arg(&resolv)
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare (util-linux)")
}

#[tokio::test]
async fn discovery_srv_finds_the_endpoints_in_dns() {
    let dir = tempfile::tempdir().unwrap();
    let keel = Keel::start(&dir.path().join("data")).await;
    keel.wait_for_quorum().await;
    let _dns = fake_dns(keel.port);
    let text = |out: &Output| {
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let put = keelctl_with_dns(dir.path(), &["--discovery-srv", "keel.test", "put", "found", "by-dns"]);
    assert!(put.status.success(), "{:?}", text(&put));
    let got = keelctl_with_dns(dir.path(), &["-d", "keel.test", "get", "found", "--print-value-only"]);
    assert_eq!(text(&got).0, "by-dns\n", "{:?}", text(&got));

    // Plain-http endpoints are dropped unless --insecure-discovery; then
    // --endpoints is used, as by etcdctl.
    let endpoint = format!("127.0.0.1:{}", keel.port);
    let secure = keelctl_with_dns(
        dir.path(),
        &["--discovery-srv", "keel.test", "--insecure-discovery=false", "--endpoints", &endpoint, "get", "found"],
    );
    let (stdout, stderr) = text(&secure);
    assert_eq!(stdout, "found\nby-dns\n");
    assert_eq!(stderr, format!("ignoring discovered insecure endpoint \"http://m1.keel.test.:{}\"\n", keel.port));

    let nowhere = keelctl_with_dns(dir.path(), &["--discovery-srv", "nowhere.test", "get", "found"]);
    assert_eq!(nowhere.status.code(), Some(1));
    assert_eq!(
        text(&nowhere).1,
        "Error: dns lookup errors: lookup _etcd-client-ssl._tcp.nowhere.test on 127.0.0.1:53: no such host \
         and lookup _etcd-client._tcp.nowhere.test on 127.0.0.1:53: no such host\n"
    );
}
