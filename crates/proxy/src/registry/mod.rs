//! Local service registration (Consul's agent, on etcd): services on the
//! host register with the proxy (`api.rs`, `--service-config-dir`), and
//! the proxy keeps the key `<prefix>/<name>/<host>/<id>` (value
//! `{"address":…,"metadata":{…}}`) in the cluster while the service's
//! check passes (HTTP, TCP, gRPC health or TTL; `check.rs`, `spec.rs`).
//!
//! Invariants:
//! - every key is put under ONE lease of the proxy's own, granted when the
//!   first key is needed, kept alive every third of its TTL, revoked when
//!   the proxy stops (so its services leave at once);
//! - one task (the reconciler, [`Registry::run`]) writes: it compares the
//!   keys wanted (services whose check passes) with the keys it believes
//!   written, puts the missing and deletes the unwanted. Anything that
//!   changes either side wakes it;
//! - a key deleted by someone else is seen by a watch of the prefix
//!   ([`Registry::watch_deletes`]), forgotten, and so put again; a lost
//!   lease (a keep-alive answering TTL 0, or a put refused for its lease)
//!   forgets every key and a new lease is granted, so all are put again.
//!   Each (re)opened watch forgets every key too: deletes may have been
//!   missed while it was down. Puts are idempotent, so forgetting too
//!   much costs one put per key, never a wrong state.

mod api;
mod check;
mod saved;
mod spec;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_create_request::FilterType;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, WatchCreateRequest, WatchRequest,
};
use keel_proto::mvccpb::event::EventType;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::policy::prefix_end;
use crate::upstream::endpoint_failed;
use crate::Shared;

pub(crate) use api::routes;
pub(crate) use saved::Saved;
pub(crate) use spec::{load_dir, Service};

/// The TTL of the proxy's registration lease, in seconds: how long the
/// services of a proxy that died stay listed.
const LEASE_TTL: i64 = 10;
const KEEPALIVE_EVERY: Duration = Duration::from_millis(LEASE_TTL as u64 * 1000 / 3);
const RETRY: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(3600);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a TTL check looks at its deadline.
const TTL_TICK: Duration = Duration::from_millis(100);

pub(crate) struct Registry {
    /// `--service-prefix`, without a trailing `/`.
    prefix: String,
    host: String,
    namespace: crate::namespace::Namespace,
    /// Lock order: `state` alone; never held across an await.
    state: Mutex<State>,
    /// Wakes the reconciler.
    changed: Notify,
    /// The lease the keys are under; 0: none yet (or lost).
    lease: AtomicI64,
    /// Wakes the watch once the first service registers: a proxy nobody
    /// registers with keeps no watch upstream.
    registered: Notify,
    /// Where registrations made through the API are kept across restarts.
    saved: Arc<Saved>,
    checks: crate::metrics::ServiceChecks,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, Entry>,
    /// Keys (namespaced) the reconciler put and has not seen deleted,
    /// with the value put.
    written: BTreeMap<Vec<u8>, String>,
}

struct Entry {
    service: Service,
    passing: bool,
    /// TTL checks: passing until then.
    ttl_deadline: Option<Instant>,
    checker: AbortHandle,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.checker.abort();
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PassError {
    Unknown,
    NotTtl,
}

impl Registry {
    pub(crate) fn new(
        prefix: &str,
        host: &str,
        namespace: crate::namespace::Namespace,
        saved: Arc<Saved>,
        checks: crate::metrics::ServiceChecks,
    ) -> Registry {
        Registry {
            prefix: prefix.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            namespace,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            lease: AtomicI64::new(0),
            registered: Notify::new(),
            saved,
            checks,
        }
    }

    /// The key as clients of the proxy name it (without `--namespace`).
    fn key(&self, service: &Service) -> String {
        format!("{}/{}/{}/{}", self.prefix, service.name, self.host, service.id)
    }

    /// Adds or replaces (same id) a service and starts its check. Must be
    /// called on a tokio runtime.
    pub(crate) fn register(self: &Arc<Self>, service: Service) {
        let checker = tokio::spawn(self.clone().run_check(service.id.clone(), service.check.clone())).abort_handle();
        tracing::info!(id = %service.id, name = %service.name, "service registered");
        let (name, id) = (service.name.clone(), service.id.clone());
        let entry = Entry { service, passing: false, ttl_deadline: None, checker };
        let replaced = self.state.lock().services.insert(id.clone(), entry);
        if let Some(old) = replaced.filter(|old| old.service.name != name) {
            self.checks.deregistered(&old.service.name, &id);
        }
        self.checks.registered(&name, &id);
        self.changed.notify_one();
        self.registered.notify_one();
    }

    /// Removes a service (its key is deleted); false if unknown.
    pub(crate) fn deregister(&self, id: &str) -> bool {
        let removed = self.state.lock().services.remove(id);
        if let Some(entry) = &removed {
            self.checks.deregistered(&entry.service.name, id);
            tracing::info!(%id, "service deregistered");
            self.changed.notify_one();
        }
        removed.is_some()
    }

    /// A TTL check's pass: `id` is the service id or Consul's check id
    /// `service:<id>`.
    pub(crate) fn pass(&self, id: &str) -> Result<(), PassError> {
        let id = id.strip_prefix("service:").unwrap_or(id);
        let mut state = self.state.lock();
        let entry = state.services.get_mut(id).ok_or(PassError::Unknown)?;
        let spec::Check::Ttl { ttl } = entry.service.check else { return Err(PassError::NotTtl) };
        entry.ttl_deadline = Some(Instant::now() + ttl);
        self.checks.checked(&entry.service.name, id, true, true);
        if !entry.passing {
            entry.passing = true;
            drop(state);
            tracing::info!(%id, "service check passing");
            self.changed.notify_one();
        }
        Ok(())
    }

    /// What `GET /v1/agent/services` answers: each registration by id,
    /// with whether its check passes and its key.
    pub(crate) fn list(&self) -> serde_json::Value {
        let state = self.state.lock();
        let listed = state.services.iter().map(|(id, entry)| {
            let mut json = entry.service.to_json();
            json["passing"] = entry.passing.into();
            json["key"] = self.key(&entry.service).into();
            (id.clone(), json)
        });
        serde_json::Value::Object(listed.collect())
    }

    /// A check's outcome.
    fn set_passing(&self, id: &str, passing: bool) {
        let mut state = self.state.lock();
        let Some(entry) = state.services.get_mut(id) else { return };
        self.checks.checked(&entry.service.name, id, passing, passing);
        if entry.passing != passing {
            entry.passing = passing;
            drop(state);
            tracing::info!(%id, passing, "service check changed");
            self.changed.notify_one();
        }
    }

    async fn run_check(self: Arc<Self>, id: String, check: spec::Check) {
        match check {
            spec::Check::Http { url, tls_skip_verify, interval, timeout } => {
                let tls = match url.tls {
                    true => check::client_tls(tls_skip_verify).await.as_ref().map(check::https),
                    false => None,
                };
                loop {
                    self.set_passing(&id, check::http(&url, tls.as_ref(), timeout).await);
                    tokio::time::sleep(interval).await;
                }
            }
            spec::Check::Tcp { address, interval, timeout } => loop {
                self.set_passing(&id, check::tcp(&address, timeout).await);
                tokio::time::sleep(interval).await;
            },
            spec::Check::Grpc { address, service, tls, tls_skip_verify, interval, timeout } => {
                let tls = match tls {
                    true => match check::client_tls(tls_skip_verify).await {
                        Some(tls) => Some(tls),
                        // Never passes: a plain dial is not what was asked.
                        None => loop {
                            self.set_passing(&id, false);
                            tokio::time::sleep(interval).await;
                        },
                    },
                    false => None,
                };
                loop {
                    self.set_passing(&id, check::grpc(&address, &service, tls.as_ref(), timeout).await);
                    tokio::time::sleep(interval).await;
                }
            }
            spec::Check::Ttl { .. } => loop {
                tokio::time::sleep(TTL_TICK).await;
                let expired = {
                    let state = self.state.lock();
                    let Some(entry) = state.services.get(&id) else { return };
                    entry.passing && entry.ttl_deadline.is_none_or(|deadline| deadline <= Instant::now())
                };
                if expired {
                    self.set_passing(&id, false);
                }
            },
        }
    }

    fn forget(&self, key: &[u8]) {
        if self.state.lock().written.remove(key).is_some() {
            self.changed.notify_one();
        }
    }

    fn forget_all(&self) {
        self.state.lock().written.clear();
        self.changed.notify_one();
    }

    fn lease_lost(&self) {
        self.lease.store(0, Ordering::Release);
        self.forget_all();
    }

    /// The reconciler: keeps the cluster's keys equal to the passing
    /// services, and the lease alive, until aborted.
    pub(crate) async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let mut next_keepalive = Instant::now() + KEEPALIVE_EVERY;
        loop {
            let before = self.lease.load(Ordering::Acquire);
            let reconciled = self.reconcile(&shared).await;
            let lease = self.lease.load(Ordering::Acquire);
            if lease != 0 && lease != before {
                next_keepalive = Instant::now() + KEEPALIVE_EVERY;
            }
            if lease != 0 && Instant::now() >= next_keepalive {
                match keep_alive(&shared, lease).await {
                    Ok(ttl) if ttl <= 0 => {
                        tracing::warn!(lease, "service registration lease lost; registering again");
                        self.lease_lost();
                        continue;
                    }
                    Ok(_) => next_keepalive = Instant::now() + KEEPALIVE_EVERY,
                    Err(status) => {
                        tracing::debug!(%status, "service lease keep-alive failed; retrying");
                        next_keepalive = Instant::now() + RETRY;
                    }
                }
            }
            // Without a lease there is nothing to keep alive: only a change
            // wakes the loop.
            let mut wait = if lease == 0 { IDLE } else { next_keepalive.saturating_duration_since(Instant::now()) };
            if let Err(status) = reconciled {
                tracing::warn!(%status, "service registration failed; retrying");
                wait = wait.min(RETRY);
            }
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn reconcile(&self, shared: &Shared) -> Result<(), Status> {
        let (puts, deletes) = {
            let state = self.state.lock();
            let wanted: BTreeMap<Vec<u8>, String> = state
                .services
                .values()
                .filter(|entry| entry.passing)
                .map(|entry| (self.namespace.key(self.key(&entry.service).as_bytes()), entry.service.value()))
                .collect();
            let puts: Vec<_> =
                wanted.iter().filter(|(key, value)| state.written.get(*key) != Some(value)).collect::<Vec<_>>();
            let puts: Vec<(Vec<u8>, String)> = puts.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let deletes: Vec<Vec<u8>> =
                state.written.keys().filter(|key| !wanted.contains_key(*key)).cloned().collect();
            shared.metrics.services.set(state.services.len() as i64);
            shared.metrics.services_passing.set(wanted.len() as i64);
            (puts, deletes)
        };
        if !puts.is_empty() && self.lease.load(Ordering::Acquire) == 0 {
            let lease = grant(shared).await?;
            self.lease.store(lease, Ordering::Release);
            tracing::info!(lease, ttl = LEASE_TTL, "service registration lease granted");
        }
        let lease = self.lease.load(Ordering::Acquire);
        for (key, value) in puts {
            let request =
                PutRequest { key: key.clone(), value: value.clone().into_bytes(), lease, ..Default::default() };
            let put = shared.upstream.unary(Request::new(request), false, |channel, request| async move {
                KvClient::new(channel).put(request).await
            });
            match timed(put).await {
                Ok(_) => {
                    tracing::info!(key = %String::from_utf8_lossy(&key), "service key put");
                    shared.metrics.service_puts.inc();
                    self.state.lock().written.insert(key, value);
                }
                Err(status) if status.message().contains("lease not found") => {
                    // Revoked or expired: `lease_lost` wakes the next round,
                    // which grants a new one.
                    tracing::warn!(lease, "service registration lease lost; registering again");
                    self.lease_lost();
                    return Ok(());
                }
                Err(status) => return Err(status),
            }
        }
        for key in deletes {
            let request = DeleteRangeRequest { key: key.clone(), ..Default::default() };
            let delete = shared.upstream.unary(Request::new(request), true, |channel, request| async move {
                KvClient::new(channel).delete_range(request).await
            });
            timed(delete).await?;
            tracing::info!(key = %String::from_utf8_lossy(&key), "service key deleted");
            self.state.lock().written.remove(&key);
        }
        Ok(())
    }

    /// Watches the prefix for deletes (the put events filtered out
    /// upstream) and forgets the deleted keys, so they are put again,
    /// until aborted.
    pub(crate) async fn watch_deletes(self: Arc<Self>, shared: Arc<Shared>) {
        let key = self.namespace.key(format!("{}/", self.prefix).as_bytes());
        if self.state.lock().services.is_empty() {
            self.registered.notified().await;
        }
        loop {
            let picked = shared.upstream.pick();
            let (requests, outgoing) = mpsc::channel(1);
            let create = WatchCreateRequest {
                key: key.clone(),
                range_end: prefix_end(&key),
                filters: vec![FilterType::Noput as i32],
                ..Default::default()
            };
            let _ = requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
            let mut request = Request::new(ReceiverStream::new(outgoing));
            // A member without a leader ends the watch rather than stall it.
            request.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
            let ended = match WatchClient::new(picked.channel.clone()).watch(request).await {
                Ok(response) => {
                    let mut events = response.into_inner();
                    loop {
                        match events.message().await {
                            Ok(Some(answer)) => {
                                if answer.created {
                                    self.forget_all();
                                }
                                if answer.canceled {
                                    break Status::unavailable(format!("watch canceled: {}", answer.cancel_reason));
                                }
                                for event in answer.events {
                                    if event.r#type == EventType::Delete as i32 {
                                        if let Some(kv) = event.kv {
                                            self.forget(&kv.key);
                                        }
                                    }
                                }
                            }
                            Ok(None) => break Status::unavailable("watch ended"),
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            drop(requests);
            if endpoint_failed(&ended) {
                shared.upstream.failed(&picked);
            }
            tracing::debug!(status = %ended, "service prefix watch ended; watching again");
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Revokes the lease (best effort, bounded): the services leave with
    /// the proxy.
    pub(crate) async fn revoke(&self, shared: &Shared) {
        shared.upstream.revoke_lease(&self.lease).await;
    }

    /// Stops every check.
    pub(crate) fn stop(&self) {
        self.state.lock().services.clear();
    }
}

async fn timed<T>(call: impl std::future::Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| Err(Status::unavailable("call timed out")))
}

async fn grant(shared: &Shared) -> Result<i64, Status> {
    let grant = shared.upstream.unary(
        Request::new(LeaseGrantRequest { ttl: LEASE_TTL, id: 0 }),
        false,
        |channel, request| async move { LeaseClient::new(channel).lease_grant(request).await },
    );
    Ok(timed(grant).await?.into_inner().id)
}

/// One keep-alive on a stream of its own: the lease's remaining TTL (0:
/// the lease is gone).
async fn keep_alive(shared: &Shared, lease: i64) -> Result<i64, Status> {
    let call =
        shared.upstream.unary(Request::new(LeaseKeepAliveRequest { id: lease }), true, |channel, request| async move {
            let once = tokio_stream::once(request.into_inner());
            let mut answers = LeaseClient::new(channel).lease_keep_alive(once).await?.into_inner();
            match answers.message().await? {
                Some(answer) => Ok(tonic::Response::new(answer)),
                None => Err(Status::unavailable("keep-alive stream ended")),
            }
        });
    Ok(timed(call).await?.into_inner().ttl)
}
