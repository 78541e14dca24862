//! Real `keel` processes on loopback for integration tests: free ports, a
//! temp data dir, and a kill on drop so no test leaves a process behind.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Keel {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Keel {
    /// Starts keel on `data_dir` and waits until it answers a read.
    pub async fn start(data_dir: &Path) -> Keel {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn keel");
        let keel = Keel { child: Some(child), port, data_dir: data_dir.to_path_buf() };
        keel.wait_ready().await;
        keel
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::connect(self.endpoint()).await.expect("connect to keel")
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut kv) = KvClient::connect(self.endpoint()).await {
                let request = keel_proto::etcdserverpb::RangeRequest { key: b"health".to_vec(), ..Default::default() };
                if kv.range(request).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "keel did not become ready on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().expect("wait keel")
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        self.kill9();
    }
}
