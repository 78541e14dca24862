//! etcd's structured logs from a real `keel`: `--logger=zap` (the default)
//! writes one JSON object a line with etcd's `level`, `ts`, `caller` and
//! `msg` first, to the `--log-outputs` given; an output that cannot be
//! opened stops the start with etcd's error.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{free_port, keel_command as keel, without_etcd_env, Keel};

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// etcd's `ts` (layout `2006-01-02T15:04:05.000000Z0700`) as Unix seconds.
fn parse_ts(ts: &str) -> Option<f64> {
    let bytes = ts.as_bytes();
    let zone = &ts[26.min(ts.len())..];
    let well_formed = ts.len() >= 27
        && [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.')]
            .iter()
            .all(|&(at, byte)| bytes[at] == byte)
        && (zone == "Z" || (zone.len() == 5 && (zone.starts_with('+') || zone.starts_with('-'))));
    if !well_formed {
        return None;
    }
    let number = |from: usize, to: usize| ts[from..to].parse::<i64>().ok();
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second, micros) = (number(11, 13)?, number(14, 16)?, number(17, 19)?, number(20, 26)?);
    let offset = match zone {
        "Z" => 0,
        _ => {
            let minutes = number(27, 29)? * 60 + number(29, 31)?;
            if zone.starts_with('-') {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
    };
    // Days from civil (Howard Hinnant).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds as f64 + micros as f64 / 1e6)
}

/// Checks one line as etcd's zap JSON and returns it parsed.
fn check_line(line: &str, started: f64, ended: f64) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    let object = value.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
    let text = |key: &str| {
        object.get(key).and_then(|value| value.as_str()).unwrap_or_else(|| panic!("no string {key:?}: {line}"))
    };
    let level = text("level");
    assert!(["debug", "info", "warn", "error"].contains(&level), "{line}");
    let ts = parse_ts(text("ts")).unwrap_or_else(|| panic!("ts is not etcd's: {line}"));
    assert!(ts >= started - 1.0 && ts <= ended + 1.0, "ts {ts} outside [{started}, {ended}]: {line}");
    let caller = text("caller");
    let (file, number) = caller.rsplit_once(':').unwrap_or_else(|| panic!("caller without a line: {line}"));
    assert!(number.parse::<u32>().is_ok(), "{line}");
    assert!(file.matches('/').count() <= 1 && file.ends_with(".rs"), "caller is not zap's short form: {line}");
    let msg = text("msg");
    // The keys come in zap's order: level, ts, [logger,] caller, msg.
    let logger = match object.get("logger") {
        Some(logger) => format!(r#""logger":{logger},"#),
        None => String::new(),
    };
    let json = |text: &str| serde_json::to_string(text).unwrap();
    let prefix = format!(
        r#"{{"level":{},"ts":{},{logger}"caller":{},"msg":{}"#,
        json(level),
        json(text("ts")),
        json(caller),
        json(msg)
    );
    assert!(line.starts_with(&prefix), "keys out of zap's order: {line}");
    value
}

#[tokio::test]
async fn json_lines_in_a_log_file_carry_etcds_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("keel.log");
    let started = unix_now();
    let extra: Vec<String> =
        ["--log-level", "info", "--log-outputs", &log.display().to_string()].map(String::from).to_vec();
    let mut keel = Keel::spawn(&dir.path().join("data"), free_port(), &extra);
    keel.wait_ready().await;
    assert!(keel.terminate().success());
    let ended = unix_now();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let lines: Vec<serde_json::Value> = text.lines().map(|line| check_line(line, started, ended)).collect();
    let find =
        |msg: &str| lines.iter().find(|line| line["msg"] == msg).unwrap_or_else(|| panic!("no {msg:?} in {text}"));
    let ready = find("ready to serve client requests");
    assert_eq!(ready["level"], "info");
    assert_eq!(ready["name"], "default");
    assert_eq!(find("listening for clients")["tls"], false);
    assert_eq!(find("shutting down")["signal"], "SIGTERM");
}

#[test]
fn stderr_gets_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = unix_now();
    let mut child = keel()
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--log-outputs", "stderr", "--log-level", "info"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once the client port answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "keel did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let ended = unix_now();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr.lines().map(|line| check_line(line, started, ended)).collect();
    assert!(lines.iter().any(|line| line["msg"] == "listening for clients"), "{stderr}");
    assert!(lines.iter().any(|line| line["msg"] == "shutting down"), "{stderr}");
}

/// A process's "error verifying flags" message (etcd 3.4 prefixes its own
/// log format; 3.5+ logs it as the `error` of "failed to verify flags").
fn verify_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let marker = "error verifying flags, ";
    let line = stderr.lines().find(|line| line.contains(marker)).unwrap_or_else(|| panic!("no error in {stderr:?}"));
    let message = line.split(marker).nth(1).unwrap_or_default();
    message.trim_end_matches(". See 'etcd --help'.").trim_end_matches(". See 'keel --help'.").to_string()
}

fn which(binary: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| format!("{dir}/{binary}"))
        .find(|path| Path::new(path).is_file())
}

#[test]
fn outputs_that_cannot_be_opened_stop_the_start_with_etcds_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/keel.log");
    let is_dir = dir.path().join("a-directory");
    std::fs::create_dir(&is_dir).unwrap();
    let (missing, is_dir) = (missing.display().to_string(), is_dir.display().to_string());
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![format!("--log-outputs={missing}")],
            format!("open sink \"{missing}\": open {missing}: no such file or directory"),
        ),
        (
            // Every failure, in sorted order; stderr beside them changes nothing.
            vec![format!("--log-outputs=stderr,{missing},{is_dir}")],
            format!(
                "open sink \"{is_dir}\": open {is_dir}: is a directory; \
                 open sink \"{missing}\": open {missing}: no such file or directory"
            ),
        ),
        (vec!["--log-outputs=default,stderr".into()], "multi logoutput for \"default\" is not supported yet".into()),
    ];
    for (args, message) in &cases {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        let output = keel()
            .args(args)
            .arg(format!("--data-dir={}", data.display()))
            .current_dir(work.path())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr, format!("keel: error verifying flags, {message}. See 'keel --help'.\n"), "{args:?}");
        assert!(!data.exists(), "{args:?}: nothing may start");
    }

    // Real etcd, where installed, says the same (3.4 needs --logger=zap for file outputs).
    let Some(etcd) = which("etcd") else { return };
    for (args, _) in &cases {
        let run = |binary: &str| {
            let work = tempfile::tempdir().unwrap();
            let mut command = Command::new(binary);
            without_etcd_env(&mut command);
            let mut child = command
                .args(args)
                .args(["--logger=zap", "--data-dir=data"])
                .current_dir(work.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait_with_output().unwrap()
        };
        let (ours, theirs) = (run(env!("CARGO_BIN_EXE_keel")), run(&etcd));
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(verify_error(&ours), verify_error(&theirs), "{args:?}");
    }
}
