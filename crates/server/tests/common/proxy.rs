//! Proxy processes for the proxy tests: `keel grpc-proxy start`, `keel
//! gateway start` and etcd's own `grpc-proxy start`, each on a loopback
//! port, killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::RangeRequest;

use super::{free_port, http_get, wait_for};

/// A proxy process (Keel's or etcd's), killed on drop.
pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    /// `keel grpc-proxy start` in front of `endpoints` (comma-separated).
    pub fn keel(endpoints: &str, extra: &[&str]) -> ProxyProcess {
        ProxyProcess::keel_on(free_port(), endpoints, extra)
    }

    pub fn keel_on(port: u16, endpoints: &str, extra: &[&str]) -> ProxyProcess {
        ProxyProcess::keel_subcommand(&["grpc-proxy", "start"], port, endpoints, extra)
    }

    /// `keel gateway start`, etcd's plain TCP forwarder.
    pub fn gateway(endpoints: &str, extra: &[&str]) -> ProxyProcess {
        ProxyProcess::keel_subcommand(&["gateway", "start"], free_port(), endpoints, extra)
    }

    /// Logs at `warn` unless `KEEL_TEST_PROXY_LOG` asks for more.
    fn keel_subcommand(subcommand: &[&str], port: u16, endpoints: &str, extra: &[&str]) -> ProxyProcess {
        let mut command = super::keel_command();
        command
            .args(subcommand)
            .args(["--endpoints", endpoints, "--listen-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", std::env::var("KEEL_TEST_PROXY_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stderr(Stdio::inherit());
        let what = subcommand.join(" ");
        ProxyProcess { child: command.spawn().unwrap_or_else(|err| panic!("spawn keel {what}: {err}")), port }
    }

    /// etcd 3.4's `grpc-proxy start`, its log in `logs`.
    pub fn etcd(endpoints: &str, extra: &[&str], logs: &Path) -> ProxyProcess {
        ProxyProcess::etcd_on(free_port(), endpoints, extra, logs)
    }

    pub fn etcd_on(port: u16, endpoints: &str, extra: &[&str], logs: &Path) -> ProxyProcess {
        let child = Command::new("etcd")
            .args(["grpc-proxy", "start", "--endpoints", endpoints, "--listen-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("etcd-proxy-{port}.log"))).unwrap())
            .spawn()
            .expect("spawn etcd grpc-proxy");
        ProxyProcess { child, port }
    }

    /// The proxy's `/metrics` page.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.port, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        body
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until a read through the proxy succeeds.
    pub async fn ready(self) -> ProxyProcess {
        let endpoint = self.endpoint();
        wait_for("the proxy to answer a read", Duration::from_secs(30), || {
            let endpoint = endpoint.clone();
            async move {
                let Ok(mut kv) = KvClient::connect(endpoint).await else { return false };
                kv.range(RangeRequest { key: b"ready".to_vec(), ..Default::default() }).await.is_ok()
            }
        })
        .await;
        self
    }
}

/// The value of the series `name` (labels included, as printed) in a
/// Prometheus text page.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}
