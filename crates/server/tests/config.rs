//! Keel started the ways etcd is started: the command lines of etcd's
//! `Procfile`, Debian's systemd unit (environment only, `Type=notify`), a
//! YAML config file, kubeadm's secured command line (refused, since TLS does
//! not exist yet), and bad input answered as real etcd answers it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, keel_command as keel, without_etcd_env};
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};

/// A `keel` child that is killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Splits a command line as a shell (or goreman) would, for the simple
/// quoting etcd's Procfile uses.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Rewrites etcd's fixed ports to free ones, so the command lines stay as
/// written but tests can run side by side. Placeholders first, so a new
/// port that happens to equal an old one is not rewritten twice.
fn with_ports(line: &str, ports: &[(u16, u16)]) -> String {
    let mut line = line.to_string();
    for (i, (from, _)) in ports.iter().enumerate() {
        line = line.replace(&format!(":{from}"), &format!(":<port{i}>"));
    }
    for (i, (_, to)) in ports.iter().enumerate() {
        line = line.replace(&format!(":<port{i}>"), &format!(":{to}"));
    }
    line
}

async fn wait_serving(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut kv) = keel_proto::etcdserverpb::kv_client::KvClient::connect(endpoint.to_string()).await {
            let request = RangeRequest { key: b"probe".to_vec(), ..Default::default() };
            if kv.range(request).await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{endpoint} did not serve linearizable reads in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(endpoint: &str, key: &str, value: &str) {
    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::connect(endpoint.to_string()).await.unwrap();
    let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
    kv.put(request).await.expect("put");
}

async fn get(endpoint: &str, key: &str) -> Option<Vec<u8>> {
    let mut kv = keel_proto::etcdserverpb::kv_client::KvClient::connect(endpoint.to_string()).await.unwrap();
    let response = kv.range(RangeRequest { key: key.into(), ..Default::default() }).await.expect("range").into_inner();
    response.kvs.into_iter().next().map(|kv| kv.value)
}

/// etcd's repository `Procfile` (goreman), member lines verbatim but for
/// the ports: three members with no --data-dir (so `infraN.etcd` in the
/// working directory) and `--enable-pprof`, which Keel accepts and reports.
const PROCFILE: &str = "\
etcd1: bin/etcd --name infra1 --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster-token etcd-cluster-1 --initial-cluster 'infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380' --initial-cluster-state new --enable-pprof --logger=zap --log-outputs=stderr
etcd2: bin/etcd --name infra2 --listen-client-urls http://127.0.0.1:22379 --advertise-client-urls http://127.0.0.1:22379 --listen-peer-urls http://127.0.0.1:22380 --initial-advertise-peer-urls http://127.0.0.1:22380 --initial-cluster-token etcd-cluster-1 --initial-cluster 'infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380' --initial-cluster-state new --enable-pprof --logger=zap --log-outputs=stderr
etcd3: bin/etcd --name infra3 --listen-client-urls http://127.0.0.1:32379 --advertise-client-urls http://127.0.0.1:32379 --listen-peer-urls http://127.0.0.1:32380 --initial-advertise-peer-urls http://127.0.0.1:32380 --initial-cluster-token etcd-cluster-1 --initial-cluster 'infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380' --initial-cluster-state new --enable-pprof --logger=zap --log-outputs=stderr";

#[tokio::test]
async fn etcds_procfile_starts_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> =
        [2379, 12380, 22379, 22380, 32379, 32380].into_iter().map(|port| (port, free_port())).collect();
    let mut members = Vec::new();
    let mut endpoints = Vec::new();
    for line in PROCFILE.lines() {
        let (_, command) = line.split_once(": bin/etcd ").unwrap();
        let args = words(&with_ports(command, &ports));
        let client = args[args.iter().position(|arg| arg == "--advertise-client-urls").unwrap() + 1].clone();
        endpoints.push(client);
        members.push(Child(keel().current_dir(dir.path()).args(args).spawn().unwrap()));
    }
    for endpoint in &endpoints {
        wait_serving(endpoint).await;
    }
    put(&endpoints[0], "/procfile", "works").await;
    assert_eq!(get(&endpoints[2], "/procfile").await.as_deref(), Some(&b"works"[..]));
    for name in ["infra1", "infra2", "infra3"] {
        assert!(dir.path().join(format!("{name}.etcd/member")).is_dir(), "{name}'s data dir is ${{name}}.etcd");
    }
    // The accepted-but-ignored flag is visible to an operator.
    let mut maintenance = MaintenanceClient::connect(endpoints[1].clone()).await.unwrap();
    let status = maintenance.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        status.errors,
        ["--enable-pprof=true is accepted but not implemented by Keel (it would serve profiling data); ignored"]
    );
}

/// Debian's `etcd.service`: `ExecStart=/usr/bin/etcd $DAEMON_ARGS` with an
/// empty `DAEMON_ARGS`, `ETCD_NAME=%H`, `ETCD_DATA_DIR`, whatever the admin
/// adds to `/etc/default/etcd`, and `Type=notify`.
#[tokio::test]
async fn debians_unit_configures_by_environment_and_waits_for_ready() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("var/lib/etcd/default");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let _member = Child(
        keel()
            .env("ETCD_NAME", "debian-host")
            .env("ETCD_DATA_DIR", &data_dir)
            .env("ETCD_LISTEN_CLIENT_URLS", &endpoint)
            .env("ETCD_ADVERTISE_CLIENT_URLS", &endpoint)
            .env("NOTIFY_SOCKET", &notify_path)
            .spawn()
            .unwrap(),
    );
    let mut message = [0u8; 64];
    let length = notify.recv(&mut message).expect("keel tells systemd it is ready");
    assert_eq!(&message[..length], b"READY=1");
    // Ready means serving.
    put(&endpoint, "/debian", "ok").await;
    assert_eq!(get(&endpoint, "/debian").await.as_deref(), Some(&b"ok"[..]));
    assert!(data_dir.join("member").is_dir());
}

#[tokio::test]
async fn a_config_file_starts_keel_and_replaces_flags() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &file,
        format!(
            "name: from-yaml\ndata-dir: {}\nlisten-client-urls: {endpoint}\nadvertise-client-urls: {endpoint}\n\
             election-timeout: 1000\nexperimental-watch-progress-notify-interval: 5000000000\n\
             client-transport-security:\n  client-cert-auth: false\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // The stray flag is ignored, as etcd ignores flags beside a config file.
    let _member = Child(keel().arg("--config-file").arg(&file).arg("--name=from-flag").spawn().unwrap());
    wait_serving(&endpoint).await;
    let mut cluster = keel_proto::etcdserverpb::cluster_client::ClusterClient::connect(endpoint.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = cluster
            .member_list(keel_proto::etcdserverpb::MemberListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members;
        if members.iter().any(|member| member.name == "from-yaml") {
            break;
        }
        assert!(Instant::now() < deadline, "the member did not publish the name from the file: {members:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kubeadm's etcd manifest turns TLS on everywhere. Its certificates are not
/// there, so the start fails naming the first file, before anything is
/// created.
#[test]
fn kubeadms_secured_command_line_without_its_certificates_fails_before_touching_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("var/lib/etcd");
    let pki = dir.path().join("pki");
    let line = format!(
        "--advertise-client-urls=https://192.168.0.10:2379 --cert-file={pki}/server.crt --client-cert-auth=true \
         --data-dir={data} --experimental-initial-corrupt-check=true --experimental-watch-progress-notify-interval=5s \
         --initial-advertise-peer-urls=https://192.168.0.10:2380 --initial-cluster=node=https://192.168.0.10:2380 \
         --key-file={pki}/server.key --listen-client-urls=https://127.0.0.1:2379,https://192.168.0.10:2379 \
         --listen-metrics-urls=http://127.0.0.1:2381 --listen-peer-urls=https://192.168.0.10:2380 --name=node \
         --peer-cert-file={pki}/peer.crt --peer-client-cert-auth=true --peer-key-file={pki}/peer.key \
         --peer-trusted-ca-file={pki}/ca.crt --snapshot-count=10000 --trusted-ca-file={pki}/ca.crt",
        pki = pki.display(),
        data = data_dir.display()
    );
    let output = keel().args(line.split_whitespace()).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot read {}/server.crt", pki.display())), "{stderr}");
    assert!(!data_dir.exists(), "nothing may be created when a certificate cannot be read");
    assert!(!dir.path().join("node.etcd").exists());
}

/// Runs `binary`, which is expected to refuse its arguments; one that
/// starts instead is stopped after 5 s.
fn run(binary: &str, args: &[&str], dir: &Path) -> Output {
    let mut command = Command::new(binary);
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    without_etcd_env(&mut command);
    let mut child = command.spawn().unwrap_or_else(|err| panic!("run {binary}: {err}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Bad input as real etcd answers it: the same exit code, and for syntax
/// errors the same first line; nothing created in the working directory.
#[test]
fn bad_input_is_answered_as_etcd_answers_it() {
    let cases: &[&[&str]] = &[
        &["--foo"],
        &["--heartbeat-interval=abc"],
        &["--election-timeout", "5m"],
        &["--snapshot-count=-1"],
        &["--enable-v2=maybe"],
        &["--enable-v2", "true"],
        &["--name"],
        &["--listen-client-urls=foo"],
        &["--listen-client-urls=http://localhost"],
        &["--listen-client-urls=http://127.0.0.1:1/path"],
        &["--initial-cluster-state=old"],
        &["--experimental-watch-progress-notify-interval=10"],
        &["--quota-backend-bytes=1G"],
        &["--max-concurrent-streams=abc"],
        &["--heartbeat-interval=1000"],
        &["--listen-client-urls=http://127.0.0.1:1"],
        &["--auto-compaction-mode=foo"],
        &["---name=x"],
        &["--grpc-keepalive-interval=1.2.3s"],
        &["--auto-compaction-retention=-1"],
        &["--initial-cluster=default=http://localhost:2380,,", "--heartbeat-interval=1000"],
        &["--debug", "--log-level=info", "--heartbeat-interval=1000"],
        &["--peer-heartbeat-interval=100", "--heartbeat-interval=1000"],
        &["--snapshot-count=1_000", "--heartbeat-interval=1000"],
        &["--name="],
        &["--listen-metrics-urls=foo"],
        &["--listen-metrics-urls=http://example.com:2381"],
    ];
    let etcd = which("etcd").expect("real etcd is installed (.ci/run installs etcd-server)");
    // The messages compared are etcd 3.4's (Debian's etcd-server), the oracle.
    let version = run(&etcd, &["--version"], Path::new("/"));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("etcd Version: 3.4."), "expected etcd 3.4");
    for args in cases {
        let keel_dir = tempfile::tempdir().unwrap();
        let etcd_dir = tempfile::tempdir().unwrap();
        let keel = run(env!("CARGO_BIN_EXE_keel"), args, keel_dir.path());
        let etcd = run(&etcd, args, etcd_dir.path());
        assert_eq!(keel.status.code(), etcd.status.code(), "{args:?}: exit codes differ");
        let first_line =
            |output: &Output| String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or("").to_string();
        if etcd.status.code() == Some(2) {
            assert_eq!(first_line(&keel), first_line(&etcd), "{args:?}");
        } else {
            // etcd prefixes its log format; the message itself is the same.
            assert_eq!(verify_error(&keel), verify_error(&etcd), "{args:?}");
        }
        assert_eq!(std::fs::read_dir(keel_dir.path()).unwrap().count(), 0, "{args:?} created files");
    }
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let version = run(env!("CARGO_BIN_EXE_keel"), &["--version"], dir.path());
    assert!(version.status.success());
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with(&format!("keel Version: {}\netcd Version: 3.6.0\n", env!("CARGO_PKG_VERSION"))), "{text}");
    let help = run(env!("CARGO_BIN_EXE_keel"), &["--help"], dir.path());
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("\n  --quota-backend-bytes '0'\n"), "{text}");
    assert!(text.contains("[Keel: refused unless left at its default: discovery is not implemented yet"), "{text}");
}

/// The message of an "error verifying flags" (or of etcd's fatal setup
/// error) in a process's stderr.
fn verify_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    for marker in ["error verifying flags, ", " C | etcdmain: "] {
        if let Some(line) = stderr.lines().find(|line| line.contains(marker)) {
            let message = line.split(marker).nth(1).unwrap_or_default();
            // etcd's fatal setup errors have no "See 'etcd --help'." after them.
            let message = message.trim_end_matches(". See 'etcd --help'.").trim_end_matches(". See 'keel --help'.");
            return message.to_string();
        }
    }
    panic!("no error message in {stderr:?}")
}

fn which(binary: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| format!("{dir}/{binary}"))
        .find(|path| Path::new(path).is_file())
}
