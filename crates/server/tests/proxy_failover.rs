//! `keel grpc-proxy` and `keel gateway` in front of a 3-member cluster that
//! loses members (issue 18), as real processes on loopback: Maintenance
//! calls aimed at the leader or a named member; endpoints learned from the
//! member list; the TCP gateway moving off a dead member and onto one added
//! later, and finding members in DNS SRV records; and watches through the proxy that see every event exactly once,
//! in order, while members are killed, restarted and the leader moved 20
//! times. The tests here run one at a time: each runs a cluster, and the
//! machines that run them are small.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::{etcdctl, require_etcd};
use common::proxy::ProxyProcess;
use common::{free_port, http_get, wait_for, Cluster};
use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    compare, request_op, Compare, MemberAddRequest, MemberListRequest, MoveLeaderRequest, PutRequest, RangeRequest,
    RequestOp, StatusRequest, StatusResponse, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One test at a time in this file.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn status(endpoint: &str, member: Option<&str>) -> Result<StatusResponse, tonic::Status> {
    let mut client =
        MaintenanceClient::connect(endpoint.to_owned()).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(StatusRequest {});
    if let Some(member) = member {
        request.metadata_mut().insert("keel-member", member.parse().unwrap());
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), client.status(request)).await;
    answer.map_err(|_| tonic::Status::deadline_exceeded("status"))?.map(tonic::Response::into_inner)
}

/// Member names by id, asked of a member directly.
async fn member_ids(endpoint: &str) -> Vec<(String, u64)> {
    let mut client = ClusterClient::connect(endpoint.to_owned()).await.unwrap();
    let members = client.member_list(MemberListRequest::default()).await.unwrap().into_inner().members;
    members.into_iter().map(|m| (m.name, m.id)).collect()
}

/// Maintenance calls through the proxy go to the leader unless the caller
/// names a member (by name or hex id) in `keel-member` metadata; each
/// answer is that member's own. `etcdctl move-leader` and `endpoint
/// status` through the proxy work as against the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_calls_go_to_the_leader_or_the_member_named() {
    require_etcd();
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    cluster.wait_for_quorum(0).await;
    let endpoints: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
    let proxy = ProxyProcess::keel(&endpoints.join(","), &["--auto-sync-interval", "0"]).ready().await;
    // Every member published: the leader's client URL is what the proxy
    // routes a Maintenance call to.
    let ids: Vec<(String, u64)> =
        cluster.member_list_once_published(0).await.into_iter().map(|m| (m.name, m.id)).collect();
    let id_of = |name: &str| ids.iter().find(|(n, _)| n == name).unwrap().1;

    let leader = status(&proxy.endpoint(), None).await.unwrap();
    assert_ne!(leader.leader, 0);
    assert_eq!(leader.header.unwrap().member_id, leader.leader, "without a name: the leader answers");
    for (name, _) in &ids {
        let by_name = status(&proxy.endpoint(), Some(name)).await.unwrap();
        assert_eq!(by_name.header.unwrap().member_id, id_of(name), "{name}");
        let hex = format!("{:x}", id_of(name));
        let by_id = status(&proxy.endpoint(), Some(&hex)).await.unwrap();
        assert_eq!(by_id.header.unwrap().member_id, id_of(name), "{hex}");
    }
    let unknown = status(&proxy.endpoint(), Some("nobody")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // etcdctl finds the leader through the proxy and moves leadership.
    let target = ids.iter().map(|(_, id)| *id).find(|id| *id != leader.leader).unwrap();
    let moved = common::etcd::etcdctl_ok(&proxy.endpoint(), &["move-leader", &format!("{target:x}")]);
    assert_eq!(moved, format!("Leadership transferred from {:x} to {target:x}\n", leader.leader));
    wait_for("the proxy to find the new leader", Duration::from_secs(10), || {
        let endpoint = proxy.endpoint();
        async move {
            let after = status(&endpoint, None).await;
            after.is_ok_and(|after| (after.leader, after.header.unwrap().member_id) == (target, target))
        }
    })
    .await;
    let table = common::etcd::etcdctl_ok(&proxy.endpoint(), &["endpoint", "status"]);
    assert!(table.contains(&format!("{target:x}, ")), "{table}");
}

/// A put applied at most once however often it is retried: only when the
/// key does not exist yet.
fn create_txn(key: &str) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            key: key.as_bytes().to_vec(),
            target: compare::CompareTarget::Create as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    }
}

/// [`create_txn`] tried on each endpoint in turn for up to 30 s.
async fn create(endpoints: &[String], key: &str) {
    let txn = create_txn(key);
    let deadline = Instant::now() + Duration::from_secs(30);
    for endpoint in endpoints.iter().cycle() {
        assert!(Instant::now() < deadline, "could not write {key}");
        let Ok(Ok(mut kv)) = tokio::time::timeout(Duration::from_secs(1), KvClient::connect(endpoint.clone())).await
        else {
            continue;
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), kv.txn(txn.clone())).await {
            return;
        }
    }
}

/// The proxy starts knowing one member and learns the others from the
/// member list, so it outlives that member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_learns_its_endpoints_from_the_member_list() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_quorum(0).await;
    let proxy = ProxyProcess::keel(&cluster.member(0).endpoint(), &["--auto-sync-interval", "200ms"]).ready().await;
    let port = proxy.port;
    wait_for("an endpoint sync", Duration::from_secs(10), || async move {
        let (_, body) = http_get(port, "/metrics").await.unwrap();
        body.lines()
            .any(|line| line.strip_prefix("keel_grpc_proxy_endpoint_syncs_total ").is_some_and(|count| count != "0"))
    })
    .await;
    cluster.kill9(0);
    cluster.wait_for_quorum(1).await;
    let started = Instant::now();
    create(&[proxy.endpoint()], "/synced").await;
    let mut kv = KvClient::connect(proxy.endpoint()).await.unwrap();
    let read = kv.range(RangeRequest { key: b"/synced".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(read.into_inner().count, 1);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// `keel gateway start` told of one member forwards etcdctl's connections
/// and learns the other members from the member list; when the member it
/// was told of dies it moves on, and it learns a member added later (the
/// only one left alive at the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_moves_off_dead_members_and_learns_new_ones() {
    require_etcd();
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_quorum(0).await;
    let first = cluster.member(0).endpoint();
    let gateway = ProxyProcess::gateway(&first, &["--retry-delay", "1m", "--auto-sync-interval", "200ms"]);
    let through = gateway.endpoint();
    let port = gateway.port;
    wait_for("the gateway to listen", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    common::etcd::etcdctl_ok(&through, &["put", "/g/a", "1"]);
    // Told of one member, it learns the others from the member list:
    // connections go round-robin, so one soon reaches another member.
    let first_id = status(&first, None).await.unwrap().header.unwrap().member_id;
    wait_for("a connection through the gateway to reach another member", Duration::from_secs(20), || {
        let out = etcdctl(&through, &["endpoint", "status", "-w", "json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let other = text.contains("\"member_id\":") && !text.contains(&format!("\"member_id\":{first_id},"));
        async move { other }
    })
    .await;
    // The member it was told of dies: connections go to the others.
    cluster.kill9(0);
    cluster.wait_for_quorum(1).await;
    let started = Instant::now();
    let got = common::etcd::etcdctl_ok(&through, &["get", "/g/a", "--print-value-only"]);
    assert_eq!(got, "1\n");
    assert!(started.elapsed() < Duration::from_secs(5), "moved on in {:?}", started.elapsed());

    // With the first member back (the cluster refuses to grow while one is
    // down), a fourth joins; the gateway learns it from the member list.
    cluster.restart(0).await;
    cluster.wait_for_quorum(0).await;
    let (new, peer_url) = cluster.add_slot();
    let mut admin = ClusterClient::connect(cluster.member(1).endpoint()).await.unwrap();
    // Refused ("unhealthy cluster") until every member has been connected
    // for a while, as etcd refuses it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let add = MemberAddRequest { peer_ur_ls: vec![peer_url], is_learner: false };
    while let Err(status) = admin.member_add(add.clone()).await {
        assert!(Instant::now() < deadline, "member add: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.join(new).await;
    cluster.wait_for_quorum(new).await;
    let new_id = status(&cluster.member(new).endpoint(), None).await.unwrap().header.unwrap().member_id;
    let needle = format!("\"member_id\":{new_id},");
    wait_for("a connection through the gateway to reach the new member", Duration::from_secs(20), || {
        let out = etcdctl(&through, &["endpoint", "status", "-w", "json"]);
        let found = String::from_utf8_lossy(&out.stdout).contains(&needle);
        async move { found }
    })
    .await;
    // Only the new member is left: a serializable read still goes through.
    for i in 0..3 {
        cluster.kill9(i);
    }
    let got = common::etcd::etcdctl_ok(&through, &["get", "/g/a", "--consistency", "s", "--print-value-only"]);
    assert_eq!(got, "1\n");
}

async fn open_watch(
    endpoint: String,
    create: WatchCreateRequest,
) -> (mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>) {
    let (requests, outgoing) = mpsc::channel(4);
    requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.unwrap();
    let mut client = WatchClient::connect(endpoint).await.unwrap();
    let mut stream = client.watch(ReceiverStream::new(outgoing)).await.unwrap().into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created && !created.canceled, "{created:?}");
    (requests, stream)
}

/// Reads until `count` events have come (or fails after 30 s without one).
async fn events(stream: &mut tonic::Streaming<WatchResponse>, count: usize) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let response = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no event after {:?} ({} of {count})", seen.last(), seen.len()))
            .expect("watch stream failed")
            .expect("watch stream ended");
        assert!(!response.canceled, "watch canceled: {response:?}");
        for event in response.events {
            let kv = event.kv.unwrap();
            seen.push((String::from_utf8(kv.key).unwrap(), kv.mod_revision));
        }
    }
    seen
}

/// Waits until `written` passed `from + count`.
async fn writes_after(written: &AtomicUsize, from: usize, count: usize) -> usize {
    wait_for("writes to go through", Duration::from_secs(30), || async move {
        written.load(Ordering::Acquire) >= from + count
    })
    .await;
    written.load(Ordering::Acquire)
}

/// Moves leadership to a follower through the proxy (which sends
/// MoveLeader to the leader), retrying while an election is under way.
async fn move_leader(proxy: &str, live: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "could not move the leader");
        if let Ok(current) = status(proxy, None).await {
            let ids = member_ids(live).await;
            let target = ids.iter().map(|(_, id)| *id).find(|id| *id != current.leader).unwrap();
            let mut client = MaintenanceClient::connect(proxy.to_owned()).await.unwrap();
            let request = MoveLeaderRequest { target_id: target };
            let moved = tokio::time::timeout(Duration::from_secs(5), client.move_leader(request)).await;
            if let Ok(Ok(_)) = moved {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 18's watch test: clients watch through the proxy while members
/// are killed with SIGKILL, restarted, and the leader moved, 20 times in
/// all; every client sees every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_every_event_once_through_twenty_kills_restarts_and_leader_moves() {
    const DISRUPTIONS: usize = 20;
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_quorum(0).await;
    let endpoints: Vec<String> = (0..3).map(|i| cluster.member(i).endpoint()).collect();
    let proxy = ProxyProcess::keel(&endpoints.join(","), &["--auto-sync-interval", "1s"]).ready().await;

    // Two watchers from "now" share one upstream watch; a third replays
    // from revision 1 on one of its own.
    let range = WatchCreateRequest { key: b"/c/".to_vec(), range_end: b"/c0".to_vec(), ..Default::default() };
    let (mut senders, mut streams) = (Vec::new(), Vec::new());
    for start_revision in [0, 0, 1] {
        let (sender, stream) =
            open_watch(proxy.endpoint(), WatchCreateRequest { start_revision, ..range.clone() }).await;
        senders.push(sender);
        streams.push(stream);
    }

    // Two writers: one to the members directly, each on a connection that
    // redials by itself (the next member tried when one fails), one
    // through the proxy itself. Each creates its keys in order, each key
    // once however often a write is retried.
    let stop = Arc::new(AtomicBool::new(false));
    let channel = |url: &str| {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap();
        KvClient::new(endpoint.connect_timeout(Duration::from_secs(1)).connect_lazy())
    };
    let direct: Vec<_> = endpoints.iter().map(|url| channel(url)).collect();
    let writers = [("d", direct), ("p", vec![channel(&proxy.endpoint())])].map(|(name, clients)| {
        let written = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (written, stop) = (written.clone(), stop.clone());
            async move {
                let mut next = 0;
                while !stop.load(Ordering::Acquire) {
                    let i = written.load(Ordering::Acquire);
                    let txn = create_txn(&format!("/c/{name}{i:05}"));
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        assert!(Instant::now() < deadline, "could not write /c/{name}{i:05}");
                        let mut client = clients[next % clients.len()].clone();
                        match tokio::time::timeout(Duration::from_secs(3), client.txn(txn.clone())).await {
                            Ok(Ok(_)) => break,
                            _ => {
                                next += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    written.store(i + 1, Ordering::Release);
                }
            }
        });
        (name, written, task)
    });
    let (written, through_proxy) = (writers[0].1.clone(), writers[1].1.clone());

    let mut done = 0;
    let mut seen = writes_after(&written, 0, 3).await;
    let mut proxied = writes_after(&through_proxy, 0, 1).await;
    let mut round = 0;
    'chaos: loop {
        let victim = round % 3;
        let survivor = (victim + 1) % 3;
        for step in 0..3 {
            match step {
                0 => cluster.kill9(victim),
                1 => {
                    cluster.restart(victim).await;
                    cluster.wait_for_quorum(victim).await;
                }
                _ => move_leader(&proxy.endpoint(), &cluster.member(survivor).endpoint()).await,
            }
            done += 1;
            // Events flow between disruptions, through each of them.
            seen = writes_after(&written, seen, 3).await;
            proxied = writes_after(&through_proxy, proxied, 1).await;
            if done == DISRUPTIONS {
                break 'chaos;
            }
        }
        round += 1;
    }
    stop.store(true, Ordering::Release);
    let mut wanted = Vec::new();
    for (name, written, task) in writers {
        task.await.unwrap();
        let count = written.load(Ordering::Acquire);
        wanted.push((name, (0..count).map(|i| format!("/c/{name}{i:05}")).collect::<Vec<_>>()));
    }
    let total: usize = wanted.iter().map(|(_, keys)| keys.len()).sum();
    for (n, stream) in streams.iter_mut().enumerate() {
        let got = events(stream, total).await;
        assert_eq!(got.len(), total, "watcher {n}: no event beyond those written");
        for (name, want) in &wanted {
            let keys: Vec<String> =
                got.iter().map(|(key, _)| key.clone()).filter(|key| key.starts_with(&format!("/c/{name}"))).collect();
            assert_eq!(&keys, want, "watcher {n}: every event of writer {name} once, in order");
        }
        assert!(got.windows(2).all(|pair| pair[0].1 < pair[1].1), "watcher {n}: revisions increase");
        let extra = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(extra.is_err(), "watcher {n}: unexpected response after the last event: {extra:?}");
    }
    let (_, metrics) = http_get(proxy.port, "/metrics").await.unwrap();
    let resumes = metrics
        .lines()
        .find_map(|line| line.strip_prefix("keel_grpc_proxy_watch_resumes_total "))
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap();
    assert!(resumes >= 1.0, "the upstream watches moved: {metrics}");
    eprintln!(
        "{DISRUPTIONS} disruptions, {total} events ({} through the proxy) to each of 3 watchers, {resumes} upstream \
         watch resumes, {:?}",
        wanted[1].1.len(),
        began.elapsed()
    );
}

/// A DNS server on 127.0.0.1:53 that knows `_etcd-client._tcp.keel.test`
/// → `m1.keel.test.:port` and `m1.keel.test` → 127.0.0.1 (as keelctl's
/// `--discovery-srv` test serves them). One server per test process (its
/// thread keeps the port), answering with the latest `port` given.
fn fake_dns(port: u16) {
    static TARGET: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU16>> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let target = Arc::new(std::sync::atomic::AtomicU16::new(0));
        serve_fake_dns(target.clone());
        target
    });
    target.store(port, Ordering::SeqCst);
}

fn serve_fake_dns(target: Arc<std::sync::atomic::AtomicU16>) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    let serving = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 (the tests run as root)");
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
                    let name = Name::from_ascii("m1.keel.test.").unwrap();
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        30,
                        RData::SRV(SRV::new(0, 0, target.load(Ordering::SeqCst), name)),
                    ));
                    known = true;
                } else if name == "m1.keel.test." {
                    if q.query_type() == RecordType::A {
                        answer.add_answer(Record::from_rdata(q.name().clone(), 30, RData::A(A::new(127, 0, 0, 1))));
                    }
                    known = true;
                }
            }
            answer.set_response_code(if known { ResponseCode::NoError } else { ResponseCode::NXDomain });
            let _ = serving.send_to(&answer.to_vec().unwrap(), from);
        }
    });
}

/// A member under `dir` that the fake DNS server names, and the
/// resolv.conf (in `dir`) that points at that server.
async fn member_behind_fake_dns(dir: &std::path::Path) -> (common::Keel, std::path::PathBuf) {
    let keel = common::Keel::start(&dir.join("data")).await;
    keel.wait_for_quorum().await;
    fake_dns(keel.port);
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n").unwrap();
    (keel, resolv)
}

/// `keel ARGS` in a mount namespace whose /etc/resolv.conf is `resolv`
/// (naming the fake server), leaving the machine's alone.
fn keel_with_dns(resolv: &std::path::Path, args: &[String]) -> std::process::Child {
    let keel_bin = common::keel_command().get_program().to_string_lossy().into_owned();
    let mut unshare = std::process::Command::new("unshare");
    common::without_etcd_env(&mut unshare);
    unshare
        .args(["--mount", "sh", "-c", "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\""])
        .arg(resolv)
        .arg(keel_bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    unshare.spawn().expect("run unshare (util-linux)")
}

/// `keel <subcommand> start` (gateway or grpc-proxy) finding its members
/// by `--discovery-srv domain`, with only a dead `--endpoints` besides.
fn discovering(resolv: &std::path::Path, subcommand: &str, domain: &str, insecure: bool) -> ProxyProcess {
    let port = free_port();
    let args = [
        subcommand.to_owned(),
        "start".to_owned(),
        "--endpoints=127.0.0.1:1".to_owned(),
        "--auto-sync-interval=0".to_owned(),
        format!("--listen-addr=127.0.0.1:{port}"),
        format!("--discovery-srv={domain}"),
        format!("--insecure-discovery={insecure}"),
    ];
    ProxyProcess { child: keel_with_dns(resolv, &args), port }
}

/// `--discovery-srv`: the gateway forwards to the members DNS SRV records
/// name (here only with `--insecure-discovery`: the record is a plain
/// `_etcd-client` one), resolving their targets as it dials; without
/// `--insecure-discovery` the record is ignored and `--endpoints` used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_finds_members_in_dns_srv_records() {
    require_etcd();
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_keel, resolv) = member_behind_fake_dns(dir.path()).await;
    let gateway = |insecure: bool| discovering(&resolv, "gateway", "keel.test", insecure);
    let listening = |port: u16| async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() };

    let found = gateway(true);
    wait_for("the gateway to listen", Duration::from_secs(10), || listening(found.port)).await;
    let put = etcdctl(&found.endpoint(), &["put", "found", "by-dns"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));

    // Ignored without --insecure-discovery: only the dead --endpoints is left.
    let ignored = gateway(false);
    wait_for("the gateway to listen", Duration::from_secs(10), || listening(ignored.port)).await;
    let get = etcdctl(&ignored.endpoint(), &["--command-timeout", "2s", "get", "found"]);
    assert!(!get.status.success(), "served through an ignored record");
}

/// `grpc-proxy start --discovery-srv`, as etcd's: the upstream members are
/// those the SRV records name (plain `_etcd-client` records only with
/// `--insecure-discovery`; ignored without, leaving `--endpoints`), and a
/// domain with no records at all stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_proxy_finds_members_in_dns_srv_records() {
    require_etcd();
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_keel, resolv) = member_behind_fake_dns(dir.path()).await;
    let proxy = |domain: &str, insecure: bool| discovering(&resolv, "grpc-proxy", domain, insecure);

    let found = proxy("keel.test", true);
    let endpoint = found.endpoint();
    wait_for("a put through the proxy", Duration::from_secs(10), || {
        let ok = etcdctl(&endpoint, &["put", "found", "by-dns"]).status.success();
        async move { ok }
    })
    .await;

    let ignored = proxy("keel.test", false);
    let endpoint = ignored.endpoint();
    wait_for("the proxy to listen", Duration::from_secs(10), || {
        let port = ignored.port;
        async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() }
    })
    .await;
    let get = etcdctl(&endpoint, &["--command-timeout", "2s", "get", "found"]);
    assert!(!get.status.success(), "served through an ignored record");

    let mut nowhere = proxy("nowhere.test", true);
    let status = tokio::task::spawn_blocking(move || {
        let status = nowhere.child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(nowhere.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(!status.0.success());
    assert!(status.1.contains("dns lookup errors"), "{}", status.1);
}
