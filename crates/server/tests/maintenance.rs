//! The Maintenance service's alarms on a real process: NOSPACE refuses the
//! writes that grow the store and nothing else, /health reports it, etcdctl
//! lists and disarms it, and it survives a restart.

mod common;

use std::time::Duration;

use common::{http_get, wait_for, Keel};
use keel_proto::etcdserverpb::alarm_request::AlarmAction;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};

fn alarm(action: AlarmAction, member_id: u64, kind: AlarmType) -> AlarmRequest {
    AlarmRequest { action: action as i32, member_id, alarm: kind as i32 }
}

async fn health(port: u16, query: &str) -> (u16, String) {
    http_get(port, &format!("/health{query}")).await.unwrap()
}

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client) is installed");
    assert!(output.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn nospace_refuses_growth_until_disarmed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    kv.put(PutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() }).await.unwrap();
    let mut maintenance = MaintenanceClient::connect(keel.endpoint()).await.unwrap();
    let member_id = kv
        .range(RangeRequest { key: b"a".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .member_id;

    assert!(maintenance
        .alarm(alarm(AlarmAction::Get, 0, AlarmType::None))
        .await
        .unwrap()
        .into_inner()
        .alarms
        .is_empty());
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), "");
    let raised = maintenance.alarm(alarm(AlarmAction::Activate, member_id, AlarmType::Nospace)).await.unwrap();
    let nospace = AlarmMember { member_id, alarm: AlarmType::Nospace as i32 };
    assert_eq!(raised.into_inner().alarms, [nospace]);

    let refused = kv.put(PutRequest { key: b"b".to_vec(), value: b"2".to_vec(), ..Default::default() }).await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");
    // Reads and deletes go on, so the operator can make room.
    assert_eq!(
        kv.range(RangeRequest { key: b"a".to_vec(), ..Default::default() }).await.unwrap().into_inner().count,
        1
    );
    let txn_read = TxnRequest::default();
    kv.txn(txn_read).await.unwrap();
    kv.delete_range(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() }).await.unwrap();

    assert_eq!(health(keel.port, "").await, (503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n".to_string()));
    assert_eq!(health(keel.port, "?exclude=NOSPACE").await.0, 200);
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), format!("memberID:{member_id} alarm:NOSPACE \n"));
    let status = etcdctl(&keel.endpoint(), &["endpoint", "status", "-w", "json"]);
    assert!(status.contains(&format!("memberID:{member_id} alarm:NOSPACE ")), "{status}");

    // Raft carries it through a restart.
    keel.terminate();
    let keel = Keel::start(dir.path()).await;
    let mut kv = keel.kv().await;
    wait_for("the restarted member to lead", Duration::from_secs(10), || async {
        health(keel.port, "?exclude=NOSPACE").await.0 == 200
    })
    .await;
    assert!(kv.put(PutRequest { key: b"c".to_vec(), ..Default::default() }).await.is_err());
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "disarm"]), format!("memberID:{member_id} alarm:NOSPACE \n"));
    kv.put(PutRequest { key: b"c".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(health(keel.port, "").await.0, 200);
    assert_eq!(etcdctl(&keel.endpoint(), &["alarm", "list"]), "");
}
