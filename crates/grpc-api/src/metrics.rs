//! etcd's gRPC server series, measured by a tower layer around each client
//! service.
//!
//! etcd registers go-grpc-prometheus's interceptors
//! (`grpc_server_started_total`, `grpc_server_handled_total` by
//! `grpc_code`, `grpc_server_msg_received_total`,
//! `grpc_server_msg_sent_total` and, with `--metrics extensive`,
//! `grpc_server_handling_seconds`) and counts message bytes in its codec
//! (`etcd_network_client_grpc_{sent,received}_bytes_total`). The layer sees
//! the same RPCs as HTTP/2 requests and reads them as a gRPC peer would:
//! a message is one length-prefixed frame of a body (a flag byte and a
//! 4-byte length before the payload, frames split or batched across DATA
//! chunks), and the status is the `grpc-status` of the response headers (a
//! trailers-only answer) or of the trailers. A response dropped before its
//! status (the client reset the stream or went away) is counted Canceled.
//!
//! What etcd counts, and so what is counted here:
//! - A unary call starts when its request message has arrived: grpc-go reads
//!   it before any interceptor runs, so a body that never completes, or a
//!   message over the size limit (tonic refuses it from its prefix, before
//!   the rest of its DATA frames), is not counted at all.
//! - The layer sits inside the `hasleader` check ([`crate::serve`]): etcd's
//!   interceptor runs ahead of go-grpc-prometheus's, so a request refused
//!   for want of a leader is not counted either.
//! - A path outside the method table (tonic answers Unimplemented) is not
//!   counted, as grpc-go answers unknown methods before its interceptors.
//! - Every method of the six `etcdserverpb` services starts with all its
//!   series at 0 (every `grpc_code`), as `grpc_prometheus.Register` does at
//!   the end of etcd's `v3rpc.Server`; Lock and Election are registered
//!   after that call in etcd, so their series appear on first use. (etcd
//!   also pre-initialises `grpc.health.v1.Health`, which Keel does not serve.)
//! - Bytes are message payloads without the 5-byte prefix, as etcd's codec
//!   counts what it marshals and unmarshals (Keel does not compress).
//!
//! Two series of etcd's own (`v3rpc/metrics.go`) are counted here too, as
//! only this layer sees every call and its end:
//! - `etcd_server_client_requests_total{type,client_api_version}`, +1 per
//!   call when go-grpc-prometheus's `started` is (etcd's interceptor runs
//!   just before it): `type` is `unary`, or `stream` for any streaming RPC
//!   (server streams pass etcd's stream interceptor too), and
//!   `client_api_version` the `client-api-version` metadata or `unknown`
//!   (see [`Inner::version`] for the values taken as labels). One
//!   difference: etcd counts before its `hasleader` check, so it also counts
//!   the calls that check refuses; the layer sits inside that check and
//!   does not see them.
//! - `etcd_network_server_stream_failures_total{Type,API}`, for Watch and
//!   LeaseKeepAlive streams that end in a failure: see [`Call::handled`].
//!
//! Hot path: no label lookups or locks. Each method's children are resolved
//! once, at construction for the pre-initialised methods and on first use
//! (a `OnceLock`) for the others, and so are each client version's; a call
//! costs one path lookup, one header lookup and a short scan of the
//! versions seen (one string compare, for a single client version), one
//! small allocation shared by its request and response, and an atomic add
//! per event: about three times the six atomic adds a unary call needs at
//! the least (the ignored `cost_of_measuring_*` tests).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use keel_metrics::prometheus::core::Collector;
use keel_metrics::prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use keel_metrics::Measures;

/// go-grpc-prometheus's `grpc_type`; no etcd RPC is `client_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrpcType {
    Unary,
    ServerStream,
    BidiStream,
}

impl GrpcType {
    fn label(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ServerStream => "server_stream",
            GrpcType::BidiStream => "bidi_stream",
        }
    }

    /// The index in [`REQUEST_TYPES`]: which of etcd's interceptors sees it.
    fn request_type(self) -> usize {
        match self {
            GrpcType::Unary => 0,
            GrpcType::ServerStream | GrpcType::BidiStream => 1,
        }
    }
}

/// `etcd_server_client_requests_total`'s `type`, by [`GrpcType::request_type`].
const REQUEST_TYPES: [&str; 2] = ["unary", "stream"];

/// How many distinct `client-api-version` values get series of their own.
const VERSION_SLOTS: usize = 16;
/// The longest `client-api-version` taken as a label.
const MAX_VERSION_LEN: usize = 16;
/// The version index of a call counted as `unknown`.
const UNKNOWN_VERSION: u8 = VERSION_SLOTS as u8;

/// The metadata key etcd's clients send their API version under.
static CLIENT_API_VERSION: http::HeaderName = http::HeaderName::from_static("client-api-version");

/// A `client-api-version` label and its children, by request type.
struct VersionSlot {
    version: Box<str>,
    requests: [OnceLock<IntCounter>; REQUEST_TYPES.len()],
}

/// `etcd_network_server_stream_failures_total`'s `Type` and `API`.
const FAILURE_TYPES: [&str; 2] = ["receive", "send"];
const RECEIVE: usize = 0;
const SEND: usize = 1;
const STREAM_APIS: [&str; 2] = ["watch", "lease-keepalive"];
const WATCH: usize = 0;
const LEASE_KEEPALIVE: usize = 1;

struct ServiceTable {
    name: &'static str,
    /// Whether etcd pre-initialises its series (see the module docs).
    initialised: bool,
    methods: &'static [(&'static str, GrpcType)],
}

use GrpcType::{BidiStream, ServerStream, Unary};

/// Every client service Keel serves, as in `proto/`.
const SERVICES: &[ServiceTable] = &[
    ServiceTable {
        name: "etcdserverpb.KV",
        initialised: true,
        methods: &[("Range", Unary), ("Put", Unary), ("DeleteRange", Unary), ("Txn", Unary), ("Compact", Unary)],
    },
    ServiceTable { name: "etcdserverpb.Watch", initialised: true, methods: &[("Watch", BidiStream)] },
    ServiceTable {
        name: "etcdserverpb.Lease",
        initialised: true,
        methods: &[
            ("LeaseGrant", Unary),
            ("LeaseRevoke", Unary),
            ("LeaseKeepAlive", BidiStream),
            ("LeaseTimeToLive", Unary),
            ("LeaseLeases", Unary),
        ],
    },
    ServiceTable {
        name: "etcdserverpb.Cluster",
        initialised: true,
        methods: &[
            ("MemberAdd", Unary),
            ("MemberRemove", Unary),
            ("MemberUpdate", Unary),
            ("MemberList", Unary),
            ("MemberPromote", Unary),
        ],
    },
    ServiceTable {
        name: "etcdserverpb.Maintenance",
        initialised: true,
        methods: &[
            ("Alarm", Unary),
            ("Status", Unary),
            ("Defragment", Unary),
            ("Hash", Unary),
            ("HashKV", Unary),
            ("Snapshot", ServerStream),
            ("MoveLeader", Unary),
            ("Downgrade", Unary),
        ],
    },
    ServiceTable {
        name: "etcdserverpb.Auth",
        initialised: true,
        methods: &[
            ("AuthEnable", Unary),
            ("AuthDisable", Unary),
            ("AuthStatus", Unary),
            ("Authenticate", Unary),
            ("UserAdd", Unary),
            ("UserGet", Unary),
            ("UserList", Unary),
            ("UserDelete", Unary),
            ("UserChangePassword", Unary),
            ("UserGrantRole", Unary),
            ("UserRevokeRole", Unary),
            ("RoleAdd", Unary),
            ("RoleGet", Unary),
            ("RoleList", Unary),
            ("RoleDelete", Unary),
            ("RoleGrantPermission", Unary),
            ("RoleRevokePermission", Unary),
        ],
    },
    ServiceTable { name: "v3lockpb.Lock", initialised: false, methods: &[("Lock", Unary), ("Unlock", Unary)] },
    ServiceTable {
        name: "v3electionpb.Election",
        initialised: false,
        methods: &[
            ("Campaign", Unary),
            ("Proclaim", Unary),
            ("Leader", Unary),
            ("Observe", ServerStream),
            ("Resign", Unary),
        ],
    },
];

/// grpc-go's `codes.Code.String()`, indexed by code.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const OK: usize = 0;
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;
const DEADLINE_EXCEEDED: usize = 4;

const LABELS: [&str; 3] = ["grpc_type", "grpc_service", "grpc_method"];

/// etcd's gRPC server series for one or more client servers: clones share
/// them, as every listener of an etcd process counts into go-grpc-prometheus's
/// process-wide series. Register it ([`Measures::register`]) in the member's
/// registry; give each member of an in-process cluster its own.
///
/// It is also the tower [`Layer`](tower_layer::Layer) that measures a
/// service.
#[derive(Clone)]
pub struct GrpcMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    started: IntCounterVec,
    handled: IntCounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    /// Only with `--metrics extensive`, as etcd enables it.
    handling_seconds: Option<HistogramVec>,
    sent_bytes: IntCounter,
    received_bytes: IntCounter,
    methods: Vec<Method>,
    by_path: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    client_requests: IntCounterVec,
    /// The client versions seen, filled in order and never emptied (see
    /// [`Inner::version`]).
    versions: [OnceLock<VersionSlot>; VERSION_SLOTS],
    unknown_version: [OnceLock<IntCounter>; REQUEST_TYPES.len()],
    stream_failures: IntCounterVec,
    /// By index of [`FAILURE_TYPES`], then of [`STREAM_APIS`].
    failures: [[OnceLock<IntCounter>; STREAM_APIS.len()]; FAILURE_TYPES.len()],
}

/// One method's children, resolved once.
struct Method {
    grpc_type: GrpcType,
    service: &'static str,
    name: &'static str,
    /// Its index in [`STREAM_APIS`], for the streams whose failures etcd
    /// counts.
    stream_api: Option<usize>,
    started: OnceLock<IntCounter>,
    received: OnceLock<IntCounter>,
    sent: OnceLock<IntCounter>,
    handled: [OnceLock<IntCounter>; CODES.len()],
    handling_seconds: OnceLock<Histogram>,
}

impl Method {
    fn labels(&self) -> [&'static str; 3] {
        [self.grpc_type.label(), self.service, self.name]
    }
}

impl GrpcMetrics {
    /// The series etcd exports with `--metrics basic`, plus the handling
    /// time histogram when `extensive` (`--metrics extensive`).
    pub fn new(extensive: bool) -> GrpcMetrics {
        use keel_metrics::{histogram_vec, int_counter, int_counter_vec};
        let handling_seconds = extensive.then(|| {
            histogram_vec(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                &LABELS,
                // Go's prometheus.DefBuckets.
                keel_metrics::prometheus::DEFAULT_BUCKETS.to_vec(),
            )
        });
        let mut inner = Inner {
            started: int_counter_vec(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &LABELS,
            ),
            handled: int_counter_vec(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            ),
            received: int_counter_vec(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                &LABELS,
            ),
            sent: int_counter_vec(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                &LABELS,
            ),
            handling_seconds,
            sent_bytes: int_counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            received_bytes: int_counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
            methods: Vec::new(),
            by_path: HashMap::default(),
            client_requests: int_counter_vec(
                "etcd_server_client_requests_total",
                "The total number of client requests per client version.",
                &["type", "client_api_version"],
            ),
            versions: Default::default(),
            unknown_version: Default::default(),
            stream_failures: int_counter_vec(
                "etcd_network_server_stream_failures_total",
                "The total number of stream failures from the local server.",
                &["Type", "API"],
            ),
            failures: Default::default(),
        };
        for service in SERVICES {
            for &(name, grpc_type) in service.methods {
                let method = Method {
                    grpc_type,
                    service: service.name,
                    name,
                    stream_api: match (service.name, name) {
                        ("etcdserverpb.Watch", "Watch") => Some(WATCH),
                        ("etcdserverpb.Lease", "LeaseKeepAlive") => Some(LEASE_KEEPALIVE),
                        _ => None,
                    },
                    started: OnceLock::new(),
                    received: OnceLock::new(),
                    sent: OnceLock::new(),
                    handled: std::array::from_fn(|_| OnceLock::new()),
                    handling_seconds: OnceLock::new(),
                };
                if service.initialised {
                    inner.started(&method);
                    inner.received(&method);
                    inner.sent(&method);
                    for code in 0..CODES.len() {
                        inner.handled(&method, code);
                    }
                    inner.handling_seconds(&method);
                }
                inner.by_path.insert(format!("/{}/{name}", service.name).into(), inner.methods.len());
                inner.methods.push(method);
            }
        }
        GrpcMetrics { inner: Arc::new(inner) }
    }
}

impl Default for GrpcMetrics {
    /// `--metrics basic`.
    fn default() -> GrpcMetrics {
        GrpcMetrics::new(false)
    }
}

impl std::fmt::Debug for GrpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetrics").field("extensive", &self.inner.handling_seconds.is_some()).finish_non_exhaustive()
    }
}

impl Measures for GrpcMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let inner = &self.inner;
        let mut collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(inner.started.clone()),
            Box::new(inner.handled.clone()),
            Box::new(inner.received.clone()),
            Box::new(inner.sent.clone()),
            Box::new(inner.sent_bytes.clone()),
            Box::new(inner.received_bytes.clone()),
            Box::new(inner.client_requests.clone()),
            Box::new(inner.stream_failures.clone()),
        ];
        if let Some(handling_seconds) = &inner.handling_seconds {
            collectors.push(Box::new(handling_seconds.clone()));
        }
        collectors
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetrics {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured { inner, metrics: self.inner.clone() }
    }
}

impl Inner {
    fn started<'m>(&self, method: &'m Method) -> &'m IntCounter {
        method.started.get_or_init(|| self.started.with_label_values(&method.labels()))
    }

    fn received<'m>(&self, method: &'m Method) -> &'m IntCounter {
        method.received.get_or_init(|| self.received.with_label_values(&method.labels()))
    }

    fn sent<'m>(&self, method: &'m Method) -> &'m IntCounter {
        method.sent.get_or_init(|| self.sent.with_label_values(&method.labels()))
    }

    fn handled<'m>(&self, method: &'m Method, code: usize) -> &'m IntCounter {
        method.handled[code].get_or_init(|| {
            let [grpc_type, service, name] = method.labels();
            self.handled.with_label_values(&[grpc_type, service, name, CODES[code]])
        })
    }

    fn handling_seconds<'m>(&self, method: &'m Method) -> Option<&'m Histogram> {
        let vec = self.handling_seconds.as_ref()?;
        Some(method.handling_seconds.get_or_init(|| vec.with_label_values(&method.labels())))
    }

    /// The version index of a call whose `client-api-version` is `value`:
    /// its slot in `versions`, or [`UNKNOWN_VERSION`].
    ///
    /// etcd takes any UTF-8 value as the label, so a client could make it
    /// grow without bound. Here a value becomes a label only if it reads as
    /// an API version, `<digits>.<digits>` (etcd's clients send `3.6`;
    /// etcdctl 3.4 sends `3.4`) of at most [`MAX_VERSION_LEN`] bytes, and
    /// only while one of the [`VERSION_SLOTS`] slots is free for it:
    /// anything else counts as `unknown`. This is the bound on the series.
    ///
    /// Why a fixed array of `OnceLock`s rather than a map behind a lock: a
    /// server sees a handful of versions, so scanning the filled slots in
    /// order (an atomic load and a short compare each) finds the usual
    /// case in the first slot or two, with no lock or hashing. A new
    /// version takes the first free slot through `get_or_init` (threads
    /// racing for a slot agree on one winner; a loser moves on), and a
    /// version has at most one slot: a thread fills a slot only after
    /// finding every earlier one filled with another version, and a filled
    /// slot never changes.
    fn version(&self, value: Option<&http::HeaderValue>) -> u8 {
        let Some(version) = value.and_then(api_version) else { return UNKNOWN_VERSION };
        for (index, slot) in self.versions.iter().enumerate() {
            let slot = slot.get_or_init(|| VersionSlot { version: version.into(), requests: Default::default() });
            if &*slot.version == version {
                return index as u8;
            }
        }
        UNKNOWN_VERSION
    }

    fn client_requests(&self, version: u8, request_type: usize) -> &IntCounter {
        let (label, child) = match self.versions.get(usize::from(version)).and_then(OnceLock::get) {
            Some(slot) => (&*slot.version, &slot.requests[request_type]),
            None => ("unknown", &self.unknown_version[request_type]),
        };
        child.get_or_init(|| self.client_requests.with_label_values(&[REQUEST_TYPES[request_type], label]))
    }

    fn stream_failure(&self, failure_type: usize, api: usize) -> &IntCounter {
        self.failures[failure_type][api]
            .get_or_init(|| self.stream_failures.with_label_values(&[FAILURE_TYPES[failure_type], STREAM_APIS[api]]))
    }

    /// The call to `path` with request `headers`, if it is one of the
    /// measured methods.
    fn begin(self: &Arc<Inner>, path: &str, headers: &http::HeaderMap) -> Option<Arc<Call>> {
        let &index = self.by_path.get(path)?;
        let method = &self.methods[index];
        let version = self.version(headers.get(&CLIENT_API_VERSION));
        // A stream starts at once, a unary call when its message is in.
        let streaming = method.grpc_type != GrpcType::Unary;
        if streaming {
            self.started(method).inc();
            self.client_requests(version, method.grpc_type.request_type()).inc();
        }
        Some(Arc::new(Call {
            metrics: self.clone(),
            method: index,
            started: AtomicBool::new(streaming),
            since: self.handling_seconds.is_some().then(Instant::now),
            version,
            tracks_receive: method.stream_api.is_some(),
            receive_broken: AtomicBool::new(false),
        }))
    }
}

/// `value` if it reads as an API version (see [`Inner::version`]).
fn api_version(value: &http::HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.len() > MAX_VERSION_LEN {
        return None;
    }
    let (major, minor) = bytes.split_at(bytes.iter().position(|&byte| byte == b'.')?);
    let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    if digits(major) && digits(&minor[1..]) {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// One measured call, shared by its request body and its response.
struct Call {
    metrics: Arc<Inner>,
    method: usize,
    started: AtomicBool,
    since: Option<Instant>,
    /// Its index in `versions` (or [`UNKNOWN_VERSION`]): a unary call is
    /// counted in `etcd_server_client_requests_total` when it starts.
    version: u8,
    /// Whether the request body keeps `receive_broken` up to date: only for
    /// the streams whose failures are counted.
    tracks_receive: bool,
    /// The request side stopped short: its body failed, or the last of it
    /// seen ends inside a message (a stream cut mid-message, or a message
    /// the server refused from its prefix, as tonic refuses one over the
    /// size limit without reading on).
    receive_broken: AtomicBool,
}

impl Call {
    fn method(&self) -> &Method {
        &self.metrics.methods[self.method]
    }

    fn received(&self, bytes: u64) {
        let (metrics, method) = (&*self.metrics, self.method());
        // Only the request body receives, so no other thread sets the flag.
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Relaxed);
            metrics.started(method).inc();
            metrics.client_requests(self.version, method.grpc_type.request_type()).inc();
        }
        metrics.received(method).inc();
        metrics.received_bytes.inc_by(bytes);
    }

    fn sent(&self, bytes: u64) {
        let (metrics, method) = (&*self.metrics, self.method());
        metrics.sent(method).inc();
        metrics.sent_bytes.inc_by(bytes);
    }

    /// Records the outcome; each call's is recorded once, by whichever of
    /// its response future or response body holds it then.
    ///
    /// A Watch or LeaseKeepAlive stream that ends in a failure also counts
    /// in `etcd_network_server_stream_failures_total`. etcd counts there
    /// the errors of its handlers' `Recv` (`Type="receive"`) and `Send`
    /// (`"send"`) on the stream, except those `isClientCtxErr` puts down to
    /// the client (the stream's context is done, or the error is Canceled,
    /// DeadlineExceeded or a client disconnect); an error a handler makes
    /// itself (a renewal refused for want of a leader, say) ends the stream
    /// without counting.
    /// The layer sees neither call, only the stream's end, so it counts a
    /// stream that ends with any status but OK, Canceled (the client reset
    /// it or went away, as etcd's stream context ends) and DeadlineExceeded
    /// (the client's deadline). `Type` is `receive` if the request side
    /// stopped short (`receive_broken`: its body failed, or it ends inside
    /// a message, as when tonic refuses one over the size limit), and
    /// `send` otherwise. So Keel counts more than etcd: a LeaseKeepAlive
    /// ended by the handler's own error (no leader, an invalid token)
    /// counts as `send`, as does one ended by a malformed message that
    /// arrived whole (tonic's decode error, a `Recv` error in etcd). And
    /// less: Keel's Watch keeps its stream open when a request fails to
    /// arrive or decode (it stops reading; etcd ends the stream), and a
    /// response h2 could not send ends with the response dropped, counted
    /// Canceled.
    fn handled(&self, code: usize) {
        if !self.started.load(Ordering::Relaxed) {
            return;
        }
        let (metrics, method) = (&*self.metrics, self.method());
        metrics.handled(method, code).inc();
        if let (Some(since), Some(histogram)) = (self.since, metrics.handling_seconds(method)) {
            histogram.observe(since.elapsed().as_secs_f64());
        }
        if let Some(api) = method.stream_api {
            if !matches!(code, OK | CANCELED | DEADLINE_EXCEEDED) {
                let failure_type = if self.receive_broken.load(Ordering::Relaxed) { RECEIVE } else { SEND };
                metrics.stream_failure(failure_type, api).inc();
            }
        }
    }
}

/// The `grpc-status` in `headers`, as an index of [`CODES`]; a code grpc-go
/// would not know is Unknown.
fn status(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok().and_then(|code| code.parse::<usize>().ok());
    Some(code.filter(|&code| code < CODES.len()).unwrap_or(UNKNOWN))
}

/// A service measured by [`GrpcMetrics`].
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<Inner>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Measured<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Measured<S>
where
    S: tower_service::Service<http::Request<MeteredBody<B>>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = http::Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = MeasuredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.metrics.begin(request.uri().path(), request.headers());
        let request = request.map(|body| MeteredBody::new(body, call.clone(), Direction::Received, false));
        MeasuredFuture { inner: self.inner.call(request), call }
    }
}

/// The response of a [`Measured`] service.
pub struct MeasuredFuture<F> {
    inner: F,
    /// Until the response is out: dropped before, the call was canceled.
    call: Option<Arc<Call>>,
}

impl<F, R, E> Future for MeasuredFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = Result<http::Response<MeteredBody<R>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                let awaiting_status = match (&call, status(response.headers())) {
                    // Trailers-only: the status is already here.
                    (Some(call), Some(code)) => {
                        call.handled(code);
                        false
                    }
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                Ok(response.map(|body| MeteredBody::new(body, call, Direction::Sent, awaiting_status)))
            }
            Err(err) => {
                if let Some(call) = call {
                    call.handled(UNKNOWN);
                }
                Err(err)
            }
        })
    }
}

impl<F> Drop for MeasuredFuture<F> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.handled(CANCELED);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Received,
    Sent,
}

/// A request or response body whose messages (and, for a response, final
/// status) are counted as they pass.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Arc<Call>>,
    direction: Direction,
    frames: Frames,
    /// A response whose status is still to come, in its trailers.
    awaiting_status: bool,
}

impl<B> MeteredBody<B> {
    fn new(inner: B, call: Option<Arc<Call>>, direction: Direction, awaiting_status: bool) -> MeteredBody<B> {
        MeteredBody { inner, call, direction, frames: Frames::default(), awaiting_status }
    }

    fn finish(&mut self, code: usize) {
        if std::mem::take(&mut self.awaiting_status) {
            if let Some(call) = &self.call {
                call.handled(code);
            }
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let Some(call) = &this.call else { return Poll::Ready(polled) };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    match this.direction {
                        Direction::Received => {
                            this.frames.feed(data, |bytes| call.received(bytes));
                            if call.tracks_receive {
                                call.receive_broken.store(this.frames.have > 0, Ordering::Relaxed);
                            }
                        }
                        Direction::Sent => this.frames.feed(data, |bytes| call.sent(bytes)),
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.finish(status(trailers).unwrap_or(UNKNOWN));
                }
            }
            Some(Err(_)) if this.direction == Direction::Received => {
                call.receive_broken.store(true, Ordering::Relaxed);
            }
            // A gRPC response ends with a status; without one a client
            // reports an error, and grpc-go's would be Unknown.
            Some(Err(_)) | None => this.finish(UNKNOWN),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

const PREFIX: usize = 5;

/// Finds gRPC's length-prefixed messages in a body's DATA chunks, however
/// the chunks split or batch them.
#[derive(Debug, Default)]
struct Frames {
    prefix: [u8; PREFIX],
    /// Bytes of the current prefix seen; all of them while in a payload.
    have: usize,
    len: u64,
    remaining: u64,
}

impl Frames {
    /// Calls `message` with the payload length of each message `data` ends.
    fn feed(&mut self, mut data: &[u8], mut message: impl FnMut(u64)) {
        loop {
            if self.have < PREFIX {
                let take = (PREFIX - self.have).min(data.len());
                self.prefix[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < PREFIX {
                    return;
                }
                let [_, length @ ..] = self.prefix;
                self.len = u64::from(u32::from_be_bytes(length));
                self.remaining = self.len;
            }
            let take = self.remaining.min(data.len() as u64);
            self.remaining -= take;
            data = &data[take as usize..];
            if self.remaining > 0 {
                return;
            }
            message(self.len);
            self.have = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::future::poll_fn;

    use keel_metrics::Metrics;
    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;

    /// A body of `frames`, then the end, or nothing ever again if `hang`,
    /// or an error (then the end) if `fail`.
    struct TestBody {
        frames: VecDeque<Frame<Bytes>>,
        hang: bool,
        fail: bool,
    }

    /// The error of a body that `fail`s (as h2's when a stream breaks).
    #[derive(Debug)]
    struct Broken;

    impl TestBody {
        fn chunks(chunks: &[&[u8]]) -> TestBody {
            let frames = chunks.iter().map(|chunk| Frame::data(Bytes::copy_from_slice(chunk))).collect();
            TestBody { frames, hang: false, fail: false }
        }

        fn then_status(mut self, code: u8) -> TestBody {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", code.to_string().parse().unwrap());
            self.frames.push_back(Frame::trailers(trailers));
            self
        }

        fn then_hang(mut self) -> TestBody {
            self.hang = true;
            self
        }

        fn then_fail(mut self) -> TestBody {
            self.fail = true;
            self
        }
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = Broken;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
            let this = self.get_mut();
            match this.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None if this.hang => Poll::Pending,
                None if std::mem::take(&mut this.fail) => Poll::Ready(Some(Err(Broken))),
                None => Poll::Ready(None),
            }
        }
    }

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn ok_headers() -> http::Response<()> {
        http::Response::builder().header("content-type", "application/grpc").body(()).unwrap()
    }

    fn trailers_only(code: u8) -> http::Response<TestBody> {
        let response = http::Response::builder().header("content-type", "application/grpc");
        response.header("grpc-status", code.to_string()).body(TestBody::chunks(&[])).unwrap()
    }

    /// A server that reads the whole request, as tonic does, then answers.
    #[derive(Clone)]
    struct Fake(fn() -> http::Response<TestBody>);

    impl Service<http::Request<MeteredBody<TestBody>>> for Fake {
        type Response = http::Response<TestBody>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<TestBody>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<MeteredBody<TestBody>>) -> Self::Future {
            let respond = self.0;
            Box::pin(async move {
                let mut body = request.into_body();
                while poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.is_some() {}
                Ok(respond())
            })
        }
    }

    fn request(path: &str, body: TestBody) -> http::Request<TestBody> {
        http::Request::builder().uri(path).body(body).unwrap()
    }

    /// `request` as sent by a client of API version `version`.
    fn from_version(mut request: http::Request<TestBody>, version: &str) -> http::Request<TestBody> {
        request.headers_mut().insert("client-api-version", version.parse().unwrap());
        request
    }

    /// Calls `path` on a measured `server` and reads the whole response.
    async fn call(metrics: &GrpcMetrics, path: &str, body: TestBody, server: Fake) -> http::Response<()> {
        send(metrics, request(path, body), server).await
    }

    /// Sends `request` to a measured `server` and reads the whole response.
    async fn send(metrics: &GrpcMetrics, request: http::Request<TestBody>, server: Fake) -> http::Response<()> {
        let response = metrics.layer(server).call(request).await.unwrap();
        let (parts, mut body) = response.into_parts();
        while poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.is_some() {}
        http::Response::from_parts(parts, ())
    }

    fn exposition(metrics: &GrpcMetrics) -> String {
        let registry = Metrics::new().unwrap();
        metrics.register(registry.registry()).unwrap();
        registry.text().unwrap()
    }

    /// The value of the series `name` with exactly `labels`.
    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want = labels.to_vec();
        want.sort();
        text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut found: Vec<(&str, &str)> = rest
                .strip_suffix('}')?
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| pair.split_once('=').map(|(k, v)| (k, v.trim_matches('"'))).unwrap())
                .collect();
            found.sort();
            (series_name == name && found == want).then(|| value.parse().unwrap())
        })
    }

    fn method<'a>(grpc_type: &'a str, service: &'a str, name: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![("grpc_type", grpc_type), ("grpc_service", service), ("grpc_method", name)]
    }

    fn with_code<'a>(mut labels: Vec<(&'a str, &'a str)>, code: &'a str) -> Vec<(&'a str, &'a str)> {
        labels.push(("grpc_code", code));
        labels
    }

    /// The labels of `etcd_server_client_requests_total`.
    fn client<'a>(request_type: &'a str, version: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![("type", request_type), ("client_api_version", version)]
    }

    /// The labels of `etcd_network_server_stream_failures_total`.
    fn failure<'a>(failure_type: &'a str, api: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![("Type", failure_type), ("API", api)]
    }

    #[tokio::test]
    async fn unary_calls_count_their_start_messages_bytes_and_code() {
        let metrics = GrpcMetrics::new(false);
        let ok = Fake(|| {
            let body = TestBody::chunks(&[&message(b"1234567")]).then_status(0);
            ok_headers().map(|()| body)
        });
        call(&metrics, "/etcdserverpb.KV/Range", TestBody::chunks(&[&message(b"abc")]), ok).await;
        let not_found = Fake(|| trailers_only(5));
        let response =
            call(&metrics, "/etcdserverpb.Auth/UserGet", TestBody::chunks(&[&message(b"user")]), not_found).await;
        assert_eq!(response.headers()["grpc-status"], "5", "the answer passes through");

        let text = exposition(&metrics);
        let range = method("unary", "etcdserverpb.KV", "Range");
        assert_eq!(value(&text, "grpc_server_started_total", &range), Some(1.0));
        assert_eq!(value(&text, "grpc_server_msg_received_total", &range), Some(1.0));
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &range), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(range.clone(), "OK")), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(range, "Canceled")), Some(0.0));
        let user_get = method("unary", "etcdserverpb.Auth", "UserGet");
        assert_eq!(value(&text, "grpc_server_started_total", &user_get), Some(1.0));
        assert_eq!(value(&text, "grpc_server_msg_received_total", &user_get), Some(1.0));
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &user_get), Some(0.0), "an error sends no message");
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(user_get.clone(), "NotFound")), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(user_get, "OK")), Some(0.0));
        assert_eq!(value(&text, "etcd_network_client_grpc_received_bytes_total", &[]), Some(7.0));
        assert_eq!(value(&text, "etcd_network_client_grpc_sent_bytes_total", &[]), Some(7.0));
    }

    #[tokio::test]
    async fn streams_count_each_message_however_chunked_and_the_status_of_their_trailers() {
        let metrics = GrpcMetrics::new(false);
        // Two requests, the first split inside its prefix, the second empty.
        let hi = message(b"hi");
        let empty = message(b"");
        let requests = TestBody::chunks(&[&hi[..3], &[&hi[3..], &empty[..]].concat()]);
        let server = Fake(|| {
            let (a, b, c) = (message(b"one"), message(b"2"), message(b""));
            let body = TestBody::chunks(&[&[a, b].concat(), &c]).then_status(0);
            ok_headers().map(|()| body)
        });
        call(&metrics, "/etcdserverpb.Watch/Watch", requests, server).await;
        let failing = Fake(|| {
            let body = TestBody::chunks(&[&message(b"keepalive")]).then_status(14);
            ok_headers().map(|()| body)
        });
        call(&metrics, "/etcdserverpb.Lease/LeaseKeepAlive", TestBody::chunks(&[]), failing).await;

        let text = exposition(&metrics);
        let watch = method("bidi_stream", "etcdserverpb.Watch", "Watch");
        assert_eq!(value(&text, "grpc_server_started_total", &watch), Some(1.0));
        assert_eq!(value(&text, "grpc_server_msg_received_total", &watch), Some(2.0));
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &watch), Some(3.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(watch, "OK")), Some(1.0));
        let keepalive = method("bidi_stream", "etcdserverpb.Lease", "LeaseKeepAlive");
        assert_eq!(value(&text, "grpc_server_started_total", &keepalive), Some(1.0), "a stream starts with no message");
        assert_eq!(value(&text, "grpc_server_msg_received_total", &keepalive), Some(0.0));
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &keepalive), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(keepalive, "Unavailable")), Some(1.0));
        assert_eq!(value(&text, "etcd_network_client_grpc_received_bytes_total", &[]), Some(2.0));
        assert_eq!(value(&text, "etcd_network_client_grpc_sent_bytes_total", &[]), Some(4.0 + 9.0));
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_status_is_canceled() {
        let metrics = GrpcMetrics::new(false);
        // The client goes away mid-snapshot: hyper drops the body.
        let snapshot = Fake(|| {
            let body = TestBody::chunks(&[&message(b"chunk")]).then_hang();
            ok_headers().map(|()| body)
        });
        let snapshot_request = request("/etcdserverpb.Maintenance/Snapshot", TestBody::chunks(&[&message(b"")]));
        let response = metrics.layer(snapshot).call(snapshot_request).await.unwrap();
        let mut body = response.into_body();
        assert!(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap().is_data());
        drop(body);
        // ... or resets a unary call while it is handled: the future goes.
        let hanging = Fake(|| unreachable!("the request never ends"));
        let grant_request =
            request("/etcdserverpb.Lease/LeaseGrant", TestBody::chunks(&[&message(b"ttl")]).then_hang());
        let mut future = metrics.layer(hanging).call(grant_request);
        assert!(futures::poll!(&mut future).is_pending());
        drop(future);

        let text = exposition(&metrics);
        let snapshot = method("server_stream", "etcdserverpb.Maintenance", "Snapshot");
        assert_eq!(value(&text, "grpc_server_msg_received_total", &snapshot), Some(1.0));
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &snapshot), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(snapshot.clone(), "Canceled")), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(snapshot, "Unknown")), Some(0.0));
        let grant = method("unary", "etcdserverpb.Lease", "LeaseGrant");
        assert_eq!(value(&text, "grpc_server_started_total", &grant), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(grant, "Canceled")), Some(1.0));
    }

    #[tokio::test]
    async fn a_unary_message_that_never_arrives_or_an_unknown_method_is_not_counted() {
        let metrics = GrpcMetrics::new(false);
        // tonic refuses a message over the limit from its prefix alone.
        let too_large = Fake(|| trailers_only(11));
        let truncated = [0, 0, 0, 0, 10, b'a', b'b'];
        call(&metrics, "/etcdserverpb.KV/Put", TestBody::chunks(&[&truncated]), too_large).await;
        let unimplemented = Fake(|| trailers_only(12));
        let response =
            call(&metrics, "/etcdserverpb.KV/Nope", TestBody::chunks(&[&message(b"x")]), unimplemented).await;
        assert_eq!(response.headers()["grpc-status"], "12");

        let text = exposition(&metrics);
        let put = method("unary", "etcdserverpb.KV", "Put");
        assert_eq!(value(&text, "grpc_server_started_total", &put), Some(0.0));
        assert_eq!(value(&text, "grpc_server_msg_received_total", &put), Some(0.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(put, "OutOfRange")), Some(0.0));
        assert!(!text.contains("Nope"), "{text}");
        assert_eq!(value(&text, "etcd_network_client_grpc_received_bytes_total", &[]), Some(0.0));
    }

    #[tokio::test]
    async fn etcdserverpb_methods_start_at_zero_and_lock_and_election_appear_when_called() {
        let metrics = GrpcMetrics::new(false);
        let text = exposition(&metrics);
        // The encoder sorts labels by name.
        let lines: std::collections::HashSet<&str> = text.lines().collect();
        for service in SERVICES.iter().filter(|service| service.initialised) {
            for &(name, grpc_type) in service.methods {
                let labels = format!(
                    "grpc_method=\"{name}\",grpc_service=\"{}\",grpc_type=\"{}\"",
                    service.name,
                    grpc_type.label()
                );
                for series in
                    ["grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total"]
                {
                    let line = format!("{series}{{{labels}}} 0");
                    assert!(lines.contains(line.as_str()), "{line}");
                }
                for code in CODES {
                    let line = format!("grpc_server_handled_total{{grpc_code=\"{code}\",{labels}}} 0");
                    assert!(lines.contains(line.as_str()), "{line}");
                }
            }
        }
        assert!(!text.contains("v3lockpb") && !text.contains("v3electionpb"), "{text}");
        assert!(!text.contains("grpc_server_handling_seconds"), "only with --metrics extensive");
        assert!(text.contains("# HELP etcd_network_client_grpc_sent_bytes_total The total number of bytes sent to grpc clients.\n# TYPE etcd_network_client_grpc_sent_bytes_total counter\n"));
        assert!(text.contains(
            "# HELP etcd_network_client_grpc_received_bytes_total The total number of bytes received from grpc clients.\n"
        ));

        let locked = Fake(|| {
            let body = TestBody::chunks(&[&message(b"key")]).then_status(0);
            ok_headers().map(|()| body)
        });
        call(&metrics, "/v3lockpb.Lock/Lock", TestBody::chunks(&[&message(b"name")]), locked).await;
        let text = exposition(&metrics);
        let lock = method("unary", "v3lockpb.Lock", "Lock");
        assert_eq!(value(&text, "grpc_server_started_total", &lock), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(lock.clone(), "OK")), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(lock, "Canceled")), None);
        assert_eq!(value(&text, "grpc_server_started_total", &method("unary", "v3lockpb.Lock", "Unlock")), None);
    }

    #[tokio::test]
    async fn extensive_metrics_add_the_handling_time_with_go_default_buckets() {
        let metrics = GrpcMetrics::new(true);
        let range = method("unary", "etcdserverpb.KV", "Range");
        let text = exposition(&metrics);
        assert_eq!(value(&text, "grpc_server_handling_seconds_count", &range), Some(0.0), "pre-initialised");
        let ok = Fake(|| {
            let body = TestBody::chunks(&[&message(b"kvs")]).then_status(0);
            ok_headers().map(|()| body)
        });
        call(&metrics, "/etcdserverpb.KV/Range", TestBody::chunks(&[&message(b"key")]), ok).await;
        let text = exposition(&metrics);
        assert_eq!(value(&text, "grpc_server_handling_seconds_count", &range), Some(1.0));
        let buckets: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("grpc_server_handling_seconds_bucket") && line.contains("\"Range\""))
            .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(buckets, ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]);
    }

    #[tokio::test]
    async fn client_requests_are_counted_by_type_and_client_api_version() {
        let metrics = GrpcMetrics::new(false);
        assert!(!exposition(&metrics).contains("etcd_server_client_requests_total"), "no series before a call");
        let ok = Fake(|| {
            let body = TestBody::chunks(&[&message(b"kvs")]).then_status(0);
            ok_headers().map(|()| body)
        });
        let range = || request("/etcdserverpb.KV/Range", TestBody::chunks(&[&message(b"key")]));
        send(&metrics, from_version(range(), "3.6"), ok.clone()).await;
        send(&metrics, from_version(range(), "3.6"), ok.clone()).await;
        send(&metrics, from_version(range(), "3.4"), ok.clone()).await;
        send(&metrics, range(), ok.clone()).await;
        // Only <digits>.<digits>, and not too long, is taken as a version.
        let junk = ["", "3", "3.", ".6", "v3.6", "3.6.1", "3.6 ", "3.x", "-3.6", "1234567890.1234567"];
        for version in junk {
            send(&metrics, from_version(range(), version), ok.clone()).await;
        }
        // A stream counts when it opens, a server stream too; a unary call
        // whose message never arrives never starts, so is not counted.
        let stream = Fake(|| ok_headers().map(|()| TestBody::chunks(&[]).then_status(0)));
        let watch = request("/etcdserverpb.Watch/Watch", TestBody::chunks(&[]));
        send(&metrics, from_version(watch, "3.6"), stream.clone()).await;
        let snapshot = request("/etcdserverpb.Maintenance/Snapshot", TestBody::chunks(&[&message(b"")]));
        send(&metrics, from_version(snapshot, "3.5"), stream).await;
        let truncated = request("/etcdserverpb.KV/Put", TestBody::chunks(&[&[0, 0, 0, 0, 10, b'a']]));
        send(&metrics, from_version(truncated, "3.3"), Fake(|| trailers_only(13))).await;

        let text = exposition(&metrics);
        assert!(text.contains(
            "# HELP etcd_server_client_requests_total The total number of client requests per client version.\n\
             # TYPE etcd_server_client_requests_total counter\n"
        ));
        let mut lines: Vec<&str> =
            text.lines().filter(|line| line.starts_with("etcd_server_client_requests_total")).collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "etcd_server_client_requests_total{client_api_version=\"3.4\",type=\"unary\"} 1",
                "etcd_server_client_requests_total{client_api_version=\"3.5\",type=\"stream\"} 1",
                "etcd_server_client_requests_total{client_api_version=\"3.6\",type=\"stream\"} 1",
                "etcd_server_client_requests_total{client_api_version=\"3.6\",type=\"unary\"} 2",
                "etcd_server_client_requests_total{client_api_version=\"unknown\",type=\"unary\"} 11",
            ]
        );
    }

    #[tokio::test]
    async fn client_versions_beyond_the_slots_count_as_unknown() {
        let metrics = GrpcMetrics::new(false);
        let ok = Fake(|| trailers_only(0));
        let range = |version: &str| {
            from_version(request("/etcdserverpb.KV/Range", TestBody::chunks(&[&message(b"key")])), version)
        };
        for minor in 0..VERSION_SLOTS + 4 {
            send(&metrics, range(&format!("9.{minor}")), ok.clone()).await;
        }
        send(&metrics, range("9.0"), ok.clone()).await;
        send(&metrics, range(&format!("9.{VERSION_SLOTS}")), ok).await;

        let text = exposition(&metrics);
        let series = text.lines().filter(|line| line.starts_with("etcd_server_client_requests_total{")).count();
        assert_eq!(series, VERSION_SLOTS + 1, "{text}");
        let name = "etcd_server_client_requests_total";
        assert_eq!(value(&text, name, &client("unary", "9.0")), Some(2.0));
        let last = format!("9.{}", VERSION_SLOTS - 1);
        assert_eq!(value(&text, name, &client("unary", &last)), Some(1.0));
        let first_left_out = format!("9.{VERSION_SLOTS}");
        assert_eq!(value(&text, name, &client("unary", &first_left_out)), None);
        assert_eq!(value(&text, name, &client("unary", "unknown")), Some(5.0));
    }

    /// Threads meeting new versions at once give each exactly one slot.
    #[test]
    fn racing_threads_agree_on_the_slot_of_each_version() {
        const THREADS: usize = 4;
        let metrics = GrpcMetrics::new(false);
        let versions: Vec<http::HeaderValue> =
            (0..VERSION_SLOTS).map(|minor| format!("3.{minor}").parse().unwrap()).collect();
        let barrier = std::sync::Barrier::new(THREADS);
        let seen: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (inner, versions, barrier) = (&metrics.inner, &versions, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        // Each thread meets the versions in another order.
                        let mut slots = vec![0; versions.len()];
                        for step in 0..versions.len() {
                            let index = (step + thread * 5) % versions.len();
                            slots[index] = inner.version(Some(&versions[index]));
                        }
                        slots
                    })
                })
                .collect();
            threads.into_iter().map(|thread| thread.join().unwrap()).collect()
        });
        let mut slots = seen[0].clone();
        assert!(seen.iter().all(|other| *other == slots), "{seen:?}");
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), VERSION_SLOTS, "every version has a slot of its own: {seen:?}");
    }

    #[tokio::test]
    async fn watch_and_keepalive_streams_ending_in_failure_are_counted() {
        let metrics = GrpcMetrics::new(false);
        let watch = || request("/etcdserverpb.Watch/Watch", TestBody::chunks(&[&message(b"create")]));
        // Ends that are no failure: OK, and the client's cancel or deadline.
        call(&metrics, "/etcdserverpb.Watch/Watch", TestBody::chunks(&[]), Fake(|| trailers_only(0))).await;
        send(&metrics, watch(), Fake(|| ok_headers().map(|()| TestBody::chunks(&[]).then_status(1)))).await;
        send(&metrics, watch(), Fake(|| trailers_only(4))).await;
        let hanging = Fake(|| ok_headers().map(|()| TestBody::chunks(&[&message(b"event")]).then_hang()));
        let mut body = metrics.layer(hanging).call(watch()).await.unwrap().into_body();
        assert!(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap().is_data());
        drop(body);
        // Only Watch and LeaseKeepAlive streams count.
        let unavailable = Fake(|| trailers_only(14));
        call(&metrics, "/etcdserverpb.Lease/LeaseGrant", TestBody::chunks(&[&message(b"ttl")]), unavailable.clone())
            .await;
        call(&metrics, "/etcdserverpb.Maintenance/Snapshot", TestBody::chunks(&[&message(b"")]), unavailable.clone())
            .await;
        let text = exposition(&metrics);
        assert!(!text.contains("etcd_network_server_stream_failures_total"), "{text}");

        // Ended in error with its requests whole: a failure to send.
        send(&metrics, watch(), Fake(|| ok_headers().map(|()| TestBody::chunks(&[]).then_status(13)))).await;
        // A response that ends without a status (Unknown).
        send(&metrics, watch(), Fake(|| ok_headers().map(|()| TestBody::chunks(&[&message(b"event")])))).await;
        let keepalive = "/etcdserverpb.Lease/LeaseKeepAlive";
        call(&metrics, keepalive, TestBody::chunks(&[&message(b"id")]), unavailable.clone()).await;
        // The request body failed, or was cut inside a message: a failure
        // to receive.
        call(&metrics, keepalive, TestBody::chunks(&[&message(b"id")]).then_fail(), unavailable.clone()).await;
        let cut = [&message(b"id")[..], &[0, 0, 0, 0, 9, b'i']].concat();
        let internal = Fake(|| ok_headers().map(|()| TestBody::chunks(&[]).then_status(13)));
        call(&metrics, keepalive, TestBody::chunks(&[&message(b"id"), &cut]), internal).await;
        // ... or the server refused a message from its prefix, reading no
        // further (tonic's answer to one over the size limit).
        let open = TestBody::chunks(&[&message(b"id"), &[0, 0, 1, 0, 0, 0]]).then_hang();
        let response = metrics.layer(RefusesFromPrefix).call(request(keepalive, open)).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "11");
        // The request body failed but the client canceled: no failure.
        let canceled = Fake(|| trailers_only(1));
        call(&metrics, keepalive, TestBody::chunks(&[]).then_fail(), canceled).await;

        let text = exposition(&metrics);
        assert!(text.contains(
            "# HELP etcd_network_server_stream_failures_total The total number of stream failures from the local \
             server.\n# TYPE etcd_network_server_stream_failures_total counter\n"
        ));
        let mut lines: Vec<&str> =
            text.lines().filter(|line| line.starts_with("etcd_network_server_stream_failures_total")).collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "etcd_network_server_stream_failures_total{API=\"lease-keepalive\",Type=\"receive\"} 3",
                "etcd_network_server_stream_failures_total{API=\"lease-keepalive\",Type=\"send\"} 1",
                "etcd_network_server_stream_failures_total{API=\"watch\",Type=\"send\"} 2",
            ]
        );
        assert_eq!(
            value(&text, "etcd_network_server_stream_failures_total", &failure("receive", "watch")),
            None,
            "a series appears on first use"
        );
    }

    /// A server that answers OutOfRange once it has a message's prefix,
    /// without reading the rest, as tonic refuses a message over its limit.
    struct RefusesFromPrefix;

    impl Service<http::Request<MeteredBody<TestBody>>> for RefusesFromPrefix {
        type Response = http::Response<TestBody>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<TestBody>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<MeteredBody<TestBody>>) -> Self::Future {
            Box::pin(async move {
                // A whole message, then the chunk with the next one's prefix.
                let mut body = request.into_body();
                for _ in 0..2 {
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap();
                }
                Ok(trailers_only(11))
            })
        }
    }

    #[test]
    fn messages_are_found_across_any_chunking() {
        let stream = [message(b"hello"), message(b""), message(&[7; 300]), message(b"!")].concat();
        for size in [1, 2, 4, 5, 6, 7, 300, stream.len()] {
            let (mut frames, mut seen) = (Frames::default(), Vec::new());
            for chunk in stream.chunks(size) {
                frames.feed(chunk, |len| seen.push(len));
            }
            assert_eq!(seen, [5, 0, 300, 1], "chunks of {size}");
        }
    }

    /// The table names every RPC of the protos Keel serves, with its kind.
    #[test]
    fn the_method_table_is_the_protos() {
        let mut from_protos = Vec::new();
        for file in ["etcdserverpb/rpc.proto", "v3lockpb/v3lock.proto", "v3electionpb/v3election.proto"] {
            let path = format!("{}/../../proto/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mut package = "";
            let mut service = String::new();
            for line in text.lines().map(str::trim) {
                if let Some(name) = line.strip_prefix("package ") {
                    package = name.trim_end_matches(';');
                } else if let Some(rest) = line.strip_prefix("service ") {
                    service = format!("{package}.{}", rest.trim_end_matches('{').trim());
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let (name, rest) = rest.split_once('(').unwrap();
                    let (request, response) = rest.split_once("returns").unwrap();
                    let grpc_type = match (request.starts_with("stream "), response.trim().starts_with("(stream ")) {
                        (false, false) => GrpcType::Unary,
                        (true, false) => panic!("{name}: a client stream, unlike every etcd RPC"),
                        (false, true) => GrpcType::ServerStream,
                        (true, true) => GrpcType::BidiStream,
                    };
                    from_protos.push(format!("/{service}/{} {grpc_type:?}", name.trim()));
                }
            }
        }
        let table: Vec<String> = SERVICES
            .iter()
            .flat_map(|service| {
                service.methods.iter().map(move |(name, kind)| format!("/{}/{name} {kind:?}", service.name))
            })
            .collect();
        assert_eq!(table, from_protos);
    }

    /// Real tonic services over HTTP/2, as a client sees them: statuses in
    /// trailers or alone in the headers, a default stub's Unimplemented, a
    /// message over the limit, a stream half-closed or reset by the client.
    #[tokio::test]
    async fn tonic_calls_over_http2_are_counted_as_etcd_counts_them() {
        use futures::StreamExt;
        use keel_proto::etcdserverpb::kv_client::KvClient;
        use keel_proto::etcdserverpb::kv_server::{Kv, KvServer};
        use keel_proto::etcdserverpb::watch_client::WatchClient;
        use keel_proto::etcdserverpb::watch_server::{Watch, WatchServer};
        use keel_proto::etcdserverpb::{
            PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, WatchRequest, WatchResponse,
        };
        use prost::Message;
        use tonic::codegen::BoxStream;

        struct FakeKv;
        #[tonic::async_trait]
        impl Kv for FakeKv {
            async fn range(
                &self,
                _: tonic::Request<RangeRequest>,
            ) -> Result<tonic::Response<RangeResponse>, tonic::Status> {
                Ok(tonic::Response::new(RangeResponse { count: 1, ..Default::default() }))
            }

            async fn put(&self, _: tonic::Request<PutRequest>) -> Result<tonic::Response<PutResponse>, tonic::Status> {
                Err(tonic::Status::not_found("no such key"))
            }
        }
        /// One response per request, the second one ending the stream.
        struct EchoWatch;
        #[tonic::async_trait]
        impl Watch for EchoWatch {
            async fn watch(
                &self,
                request: tonic::Request<tonic::Streaming<WatchRequest>>,
            ) -> Result<tonic::Response<BoxStream<WatchResponse>>, tonic::Status> {
                let responses = request.into_inner().map(|request| request.map(|_| WatchResponse::default()));
                Ok(tonic::Response::new(Box::pin(responses.chain(futures::stream::pending()).take(2))))
            }
        }

        let metrics = GrpcMetrics::new(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(metrics.layer(KvServer::new(FakeKv).max_decoding_message_size(1024)))
            .add_service(metrics.layer(WatchServer::new(EchoWatch)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let server = tokio::spawn(server);
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();

        let mut kv = KvClient::new(channel.clone());
        let range = RangeRequest { key: b"a".to_vec(), ..Default::default() };
        let mut from_3_6 = tonic::Request::new(range.clone());
        from_3_6.metadata_mut().insert("client-api-version", "3.6".parse().unwrap());
        kv.range(from_3_6).await.unwrap();
        let put = PutRequest { key: b"k".to_vec(), ..Default::default() };
        assert_eq!(kv.put(put.clone()).await.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(kv.txn(TxnRequest::default()).await.unwrap_err().code(), tonic::Code::Unimplemented);
        // Refused from its prefix, before the rest of its DATA frames.
        let huge = RangeRequest { key: vec![b'x'; 64 * 1024], ..Default::default() };
        assert_eq!(kv.range(huge).await.unwrap_err().code(), tonic::Code::OutOfRange);

        let mut watch = WatchClient::new(channel);
        let requests = futures::stream::iter([WatchRequest::default(), WatchRequest::default()]);
        let responses = watch.watch(requests).await.unwrap().into_inner();
        assert_eq!(responses.collect::<Vec<_>>().await.len(), 2);
        // The client goes: with both halves of the stream dropped, h2 resets it.
        let (send, requests) = futures::channel::mpsc::unbounded();
        send.unbounded_send(WatchRequest::default()).unwrap();
        let mut responses = watch.watch(requests).await.unwrap().into_inner();
        responses.message().await.unwrap().unwrap();
        drop(responses);
        drop(send);

        let watch = method("bidi_stream", "etcdserverpb.Watch", "Watch");
        let canceled = with_code(watch.clone(), "Canceled");
        for _ in 0..100 {
            if value(&exposition(&metrics), "grpc_server_handled_total", &canceled) == Some(1.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let text = exposition(&metrics);
        let range_labels = method("unary", "etcdserverpb.KV", "Range");
        assert_eq!(value(&text, "grpc_server_started_total", &range_labels), Some(1.0), "the huge one is not");
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &range_labels), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(range_labels.clone(), "OK")), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(range_labels, "OutOfRange")), Some(0.0));
        let put_labels = method("unary", "etcdserverpb.KV", "Put");
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &put_labels), Some(0.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(put_labels, "NotFound")), Some(1.0));
        let txn = with_code(method("unary", "etcdserverpb.KV", "Txn"), "Unimplemented");
        assert_eq!(value(&text, "grpc_server_handled_total", &txn), Some(1.0));
        assert_eq!(value(&text, "grpc_server_started_total", &watch), Some(2.0));
        assert_eq!(value(&text, "grpc_server_msg_received_total", &watch), Some(3.0));
        assert_eq!(value(&text, "grpc_server_msg_sent_total", &watch), Some(3.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &with_code(watch, "OK")), Some(1.0));
        assert_eq!(value(&text, "grpc_server_handled_total", &canceled), Some(1.0));
        let received = range.encoded_len() + put.encoded_len() + TxnRequest::default().encoded_len();
        assert_eq!(value(&text, "etcd_network_client_grpc_received_bytes_total", &[]), Some(received as f64));
        let sent = RangeResponse { count: 1, ..Default::default() }.encoded_len();
        assert_eq!(value(&text, "etcd_network_client_grpc_sent_bytes_total", &[]), Some(sent as f64));
        let requests = "etcd_server_client_requests_total";
        assert_eq!(value(&text, requests, &client("unary", "3.6")), Some(1.0), "the version in the metadata");
        assert_eq!(value(&text, requests, &client("unary", "unknown")), Some(2.0), "Put and Txn, not the huge one");
        assert_eq!(value(&text, requests, &client("stream", "unknown")), Some(2.0));
        assert!(!text.contains("etcd_network_server_stream_failures_total"), "a reset is the client's doing");
        server.abort();
    }

    /// What the layer adds to a unary call: run with
    /// `cargo test --workspace --lib -- --ignored --nocapture cost_of_measuring`.
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn cost_of_measuring_a_unary_call() {
        const CALLS: u32 = 200_000;
        let respond = || {
            let body = TestBody::chunks(&[&message(b"response")]).then_status(0);
            ok_headers().map(|()| body)
        };
        let metrics = GrpcMetrics::new(false);
        let mut measured = metrics.layer(Fake(respond));
        // The bare server sees the same body type, unmetered.
        let mut bare = Fake(respond);
        let body = || TestBody::chunks(&[&message(b"request")]);
        for round in 0..8 {
            let started = Instant::now();
            for _ in 0..CALLS {
                let request = request("/etcdserverpb.KV/Range", body())
                    .map(|b| MeteredBody::new(b, None, Direction::Received, false));
                let mut response = bare.call(request).await.unwrap().into_body();
                while poll_fn(|cx| Pin::new(&mut response).poll_frame(cx)).await.is_some() {}
            }
            let bare_ns = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
            let started = Instant::now();
            for _ in 0..CALLS {
                let request = from_version(request("/etcdserverpb.KV/Range", body()), "3.6");
                let mut response = measured.call(request).await.unwrap().into_body();
                while poll_fn(|cx| Pin::new(&mut response).poll_frame(cx)).await.is_some() {}
            }
            let measured_ns = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
            println!(
                "round {round}: bare {bare_ns:.0} ns/call, measured {measured_ns:.0} ns/call, the layer {:.0} ns/call",
                measured_ns - bare_ns
            );
        }
    }

    /// The layer's own work for one unary call (the path lookup, the shared
    /// call, finding one message each way, the counters) against the bare
    /// minimum of six atomic adds.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_of_measuring_against_atomic_adds() {
        use std::sync::atomic::AtomicU64;
        const CALLS: u32 = 2_000_000;
        let metrics = GrpcMetrics::new(false);
        let (request, response) = (message(b"request"), message(b"response"));
        let mut headers = http::HeaderMap::new();
        headers.insert("client-api-version", http::HeaderValue::from_static("3.6"));
        let counters: [AtomicU64; 6] = Default::default();
        for round in 0..5 {
            let started = Instant::now();
            for _ in 0..CALLS {
                for counter in &counters {
                    counter.fetch_add(std::hint::black_box(1), Ordering::Relaxed);
                }
            }
            let adds_ns = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
            let started = Instant::now();
            for _ in 0..CALLS {
                let call = metrics.inner.begin(std::hint::black_box("/etcdserverpb.KV/Range"), &headers).unwrap();
                let mut incoming = MeteredBody::new((), Some(call.clone()), Direction::Received, false);
                incoming.frames.feed(&request, |bytes| call.received(bytes));
                let mut outgoing = MeteredBody::new((), Some(call), Direction::Sent, true);
                outgoing.frames.feed(&response, |bytes| outgoing.call.as_ref().unwrap().sent(bytes));
                outgoing.finish(0);
            }
            let layer_ns = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
            println!("round {round}: six atomic adds {adds_ns:.1} ns, the layer's work {layer_ns:.1} ns per call");
        }
    }
}
