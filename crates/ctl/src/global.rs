//! etcdctl's global flags, its `ETCDCTL_*` variables, and the per-run
//! context commands use to reach the cluster and print.

use std::future::Future;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientError, ClientOptions, Credentials, TlsOptions};

use crate::error::{exit, Failure, RpcError};
use crate::flags::{FlagSpec, Kind, Parsed};
use crate::printer::{Format, Printer};

/// etcdctl 3.4's persistent flags, in its help order (sorted by name).
pub const GLOBAL_FLAGS: &[FlagSpec] = &[
    FlagSpec::new("cacert", Kind::String, "", "verify certificates of TLS-enabled secure servers using this CA bundle"),
    FlagSpec::new("cert", Kind::String, "", "identify secure client using this TLS certificate file"),
    FlagSpec::new(
        "command-timeout",
        Kind::Duration,
        "5s",
        "timeout for short running command (excluding dial timeout)",
    ),
    FlagSpec::new("debug", Kind::Bool, "false", "enable client-side debug logging"),
    FlagSpec::new("dial-timeout", Kind::Duration, "2s", "dial timeout for client connections"),
    FlagSpec::new(
        "discovery-srv",
        Kind::String,
        "",
        "domain name to query for SRV records describing cluster endpoints",
    )
    .short('d'),
    FlagSpec::new("discovery-srv-name", Kind::String, "", "service name to query when using DNS discovery"),
    FlagSpec::new("endpoints", Kind::StringSlice, "[127.0.0.1:2379]", "gRPC endpoints"),
    FlagSpec::new("hex", Kind::Bool, "false", "print byte strings as hex encoded strings"),
    FlagSpec::new("insecure-discovery", Kind::Bool, "true", "accept insecure SRV records describing cluster endpoints"),
    FlagSpec::new(
        "insecure-skip-tls-verify",
        Kind::Bool,
        "false",
        "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)",
    ),
    FlagSpec::new("insecure-transport", Kind::Bool, "true", "disable transport security for client connections"),
    FlagSpec::new("keepalive-time", Kind::Duration, "2s", "keepalive time for client connections"),
    FlagSpec::new("keepalive-timeout", Kind::Duration, "6s", "keepalive timeout for client connections"),
    FlagSpec::new("key", Kind::String, "", "identify secure client using this TLS key file"),
    FlagSpec::new(
        "password",
        Kind::String,
        "",
        "password for authentication (if this option is used, --user option shouldn't include password)",
    ),
    FlagSpec::new(
        "user",
        Kind::String,
        "",
        "username[:password] for authentication (prompt if password is not supplied)",
    ),
    FlagSpec::new("write-out", Kind::String, "simple", "set the output format (fields, json, protobuf, simple, table)")
        .short('w'),
];

/// The process's standard streams, injectable for tests.
pub struct Io<'a> {
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    pub stdin: &'a mut dyn Read,
    /// Whether stderr is a terminal (a person reads it, not a script): a
    /// call that got no answer then gets one line more after etcdctl's,
    /// naming the endpoint and the cause (see `error::Diagnosis`).
    pub stderr_is_terminal: bool,
}

/// One run of one command.
pub struct Context<'a> {
    pub io: Io<'a>,
    /// The command's flags and the global ones, parsed together as cobra
    /// parses them.
    pub flags: Parsed,
    env: Vec<(String, String)>,
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<Client>,
    /// The password prompted for when `--user` has none.
    password: Option<String>,
    /// `--discovery-srv` was looked up (once per command).
    discovered: bool,
}

impl<'a> Context<'a> {
    pub fn new(io: Io<'a>, flags: Parsed, env: Vec<(String, String)>) -> Context<'a> {
        Context { io, flags, env, runtime: None, client: None, password: None, discovered: false }
    }

    /// What etcdctl's `mustClientFromCmd` does before dialling: reads the
    /// `ETCDCTL_*` variables and makes `display`, so an unknown
    /// `--write-out` fails here, before any request.
    pub fn setup(&mut self) -> Result<Printer, Failure> {
        self.apply_env();
        self.discover()?;
        let user = self.flags.string("user");
        if !user.is_empty()
            && !user.contains(':')
            && self.flags.string("password").is_empty()
            && self.password.is_none()
        {
            self.password = Some(crate::command::user::ask(self, "Password: "));
        }
        let format = match self.flags.string("write-out") {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "protobuf" => Format::Protobuf,
            "table" => Format::Table,
            _ => return Err(Failure::exit(exit::BAD_FEATURE, "unsupported output format")),
        };
        Ok(Printer { format, hex: self.flags.bool("hex"), value_only: false })
    }

    /// Applies `ETCDCTL_<FLAG>` to global flags not given on the command
    /// line, and warns about unknown `ETCDCTL_*` variables, as etcd's
    /// `flags.SetPflagsFromEnv` does when etcdctl builds its client.
    fn apply_env(&mut self) {
        let mut warnings = Vec::new();
        for (key, value) in &self.env {
            let Some(suffix) = key.strip_prefix("ETCDCTL_") else { continue };
            // etcdctl reads ETCDCTL_API itself before parsing flags, and
            // `watch` reads its two variables; none of them is a flag.
            if matches!(suffix, "API" | "WATCH_KEY" | "WATCH_RANGE_END") {
                continue;
            }
            let flag = GLOBAL_FLAGS.iter().find(|spec| spec.name.replace('-', "_").to_uppercase() == suffix);
            match flag {
                Some(spec) if !self.flags.changed(spec.name) => {
                    // etcdctl ignores a variable it cannot parse.
                    let _ = self.flags.set(spec.name, value);
                }
                Some(_) => {}
                None => warnings.push(format!("unrecognized environment variable {key}={value}")),
            }
        }
        for warning in warnings {
            let now = crate::error::timestamp(std::time::SystemTime::now());
            // capnslog's format: "2006-01-02 15:04:05.000000 W | pkg/flags: ...".
            let stamp = format!("{} {}", &now[..10], &now[11..23]);
            let _ = writeln!(self.io.stderr, "{stamp}000 W | pkg/flags: {warning}");
        }
    }

    /// `--discovery-srv`: the endpoints from DNS replace `--endpoints`,
    /// unless DNS names none (etcdctl's `endpointsFromCmd`).
    fn discover(&mut self) -> Result<(), Failure> {
        let domain = self.flags.string("discovery-srv").to_owned();
        if domain.is_empty() || self.discovered {
            return Ok(());
        }
        self.discovered = true;
        let service_name = self.flags.string("discovery-srv-name").to_owned();
        let insecure = self.flags.bool("insecure-discovery");
        let endpoints = crate::discovery::discover(&domain, &service_name, insecure, self.io.stderr)
            .map_err(|e| Failure::exit(exit::ERROR, e))?;
        if !endpoints.is_empty() {
            self.flags.replace_strings("endpoints", endpoints);
        }
        Ok(())
    }

    fn endpoints(&self) -> Vec<String> {
        self.flags.strings("endpoints").to_vec()
    }

    /// The endpoint clientv3's log lines name: the first, without scheme.
    fn log_target(&self) -> String {
        let first = self.endpoints().into_iter().next().unwrap_or_default();
        match first.split_once("://") {
            Some((_, rest)) => rest.to_owned(),
            None => first,
        }
    }

    fn client_options(&self) -> ClientOptions {
        let flags = &self.flags;
        let tls_wanted = !flags.string("cacert").is_empty()
            || !flags.string("cert").is_empty()
            || !flags.string("key").is_empty()
            || flags.bool("insecure-skip-tls-verify")
            || !flags.bool("insecure-transport");
        let tls = tls_wanted.then(|| {
            let mut tls = TlsOptions::new();
            if !flags.string("cacert").is_empty() {
                tls = tls.with_ca(flags.string("cacert"));
            }
            if !flags.string("cert").is_empty() || !flags.string("key").is_empty() {
                tls = tls.with_client_cert(flags.string("cert"), flags.string("key"));
            }
            if flags.bool("insecure-skip-tls-verify") {
                tls = tls.with_insecure_skip_verify();
            }
            tls
        });
        // etcdctl's `authCfgFromCmd`: with `--password`, `--user` is the
        // whole name; clientv3 logs in only with a name and a password.
        let credentials = match (flags.string("user"), flags.string("password")) {
            ("", _) => None,
            (user, "") => Some(match user.split_once(':') {
                Some((name, password)) => Credentials::new(name, password),
                None => Credentials::new(user, self.password.clone().unwrap_or_default()),
            }),
            (user, password) => Some(Credentials::new(user, password)),
        };
        let credentials = credentials.filter(|c| !c.user.is_empty() && !c.password.is_empty());
        ClientOptions {
            connect_timeout: flags.duration("dial-timeout").max(Duration::from_millis(1)),
            request_timeout: None,
            // A one-shot command ends long before the first ping would be
            // useful, and etcd answers pings every 2 s with GOAWAY.
            keep_alive: None,
            tls,
            credentials,
            ..ClientOptions::default()
        }
    }

    /// Runs one request under `--command-timeout`, connecting first if
    /// needed; failures become what etcdctl prints for them.
    pub fn call<T, F, Fut>(&mut self, request: F) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.flags.duration("command-timeout");
        let target = self.log_target();
        if self.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::exit(exit::ERROR, e.to_string()))?;
            self.runtime = Some(runtime);
        }
        let runtime = self.runtime.as_ref().expect("runtime just built");
        let failed = |rpc: RpcError| Failure::Rpc { rpc, target: target.clone() };
        let timeout = self.flags.duration("command-timeout");
        // Whether this call made the connection: then a connection that
        // breaks before the answer never worked at all.
        let fresh = self.client.is_none();
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let options = self.client_options();
                let logs_in = options.credentials.is_some();
                let client = runtime.block_on(connect(self.endpoints(), options, deadline));
                let client = client.map_err(|e| match e {
                    ClientError::InvalidEndpoint { .. } | ClientError::Tls(_) | ClientError::NoEndpoints => {
                        Failure::exit(exit::ERROR, e.to_string())
                    }
                    // A refused login: clientv3.New fails, and etcdctl
                    // exits with ExitBadConnection after clientv3's warning.
                    refused @ ClientError::Status { .. } => {
                        let rpc = RpcError::from_client(&refused);
                        warn(self.io.stderr, failed(rpc.clone()));
                        Failure::exit(exit::BAD_CONNECTION, rpc.printed)
                    }
                    other => failed(RpcError::from_dial(&other, &target)),
                })?;
                if logs_in && !client.has_token() {
                    // clientv3 logs the refusal and goes on without a token.
                    let rpc = RpcError::from_client(&ClientError::Status {
                        code: keel_client::Code::FailedPrecondition,
                        message: "etcdserver: authentication is not enabled".to_owned(),
                    });
                    warn(self.io.stderr, failed(rpc));
                }
                self.client = Some(client.clone());
                client
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let asked = client.clone();
        // The timer must be made inside the runtime.
        match runtime.block_on(async { tokio::time::timeout(remaining, request(client)).await }) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error @ ClientError::Connection { .. })) if fresh => {
                let endpoint = runtime.block_on(asked.current_endpoint());
                Err(failed(RpcError::from_dial(&error, &endpoint)))
            }
            Ok(Err(error)) => Err(failed(RpcError::from_client(&error))),
            Err(_) => {
                let endpoint = runtime.block_on(asked.current_endpoint());
                Err(failed(RpcError::no_answer(&endpoint, timeout)))
            }
        }
    }
}

/// Writes only the warning line clientv3 logs for `failure`'s call.
fn warn(stderr: &mut dyn Write, failure: Failure) {
    let mut lines = Vec::new();
    failure.report(&mut std::io::sink(), &mut lines);
    let line = lines.split_inclusive(|b| *b == b'\n').next().unwrap_or_default();
    let _ = stderr.write_all(line);
}

/// Connects, retrying until `deadline` as grpc-go keeps redialling while a
/// call waits, so a member that is just starting is still reached.
async fn connect(endpoints: Vec<String>, options: ClientOptions, deadline: Instant) -> Result<Client, ClientError> {
    let mut last = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = Client::connect(endpoints.clone(), options.clone());
        let error = match tokio::time::timeout(remaining, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error @ (ClientError::Transport { .. } | ClientError::Connection { .. }))) => error,
            Ok(Err(error)) => return Err(error),
            // The last attempt's error says more than that time ran out.
            Err(_) => return Err(last.unwrap_or(ClientError::Connection { message: "dial timed out".to_owned() })),
        };
        if Instant::now() + Duration::from_millis(100) >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return Err(error);
        }
        last = Some(error);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Context<'_> {
    /// Writes the line naming why `rpc` got no answer, when stderr is a
    /// terminal: for the commands that report each endpoint's failure
    /// themselves (`endpoint status`, `defrag`).
    pub fn diagnose(&mut self, rpc: &RpcError) {
        if let Some(diagnosis) = rpc.diagnosis.as_deref().filter(|_| self.io.stderr_is_terminal) {
            let _ = writeln!(self.io.stderr, "{diagnosis}");
        }
    }
}

impl<'a> Context<'a> {
    /// Gives the streams back for reporting a failure.
    pub fn into_io(self) -> Io<'a> {
        self.io
    }
}

impl Context<'_> {
    /// Runs `request` on a client of its own connected to `endpoint` only,
    /// under `--command-timeout`, as etcdctl's commands that report on each
    /// endpoint (`endpoint status|health|hashkv`, `defrag`) do. The error
    /// is returned, not reported: those commands print their own line for
    /// each endpoint that failed and go on with the next.
    pub fn call_on<T, F, Fut>(&mut self, endpoint: &str, request: F) -> Result<T, RpcError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.flags.duration("command-timeout");
        if self.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RpcError::from_client(&ClientError::Connection { message: e.to_string() }))?;
            self.runtime = Some(runtime);
        }
        let runtime = self.runtime.as_ref().expect("runtime just built");
        let options = self.client_options();
        let endpoints = vec![endpoint.to_owned()];
        let timeout = self.flags.duration("command-timeout");
        // Whether a failure came before or after the connection was made.
        let connected = std::cell::Cell::new(false);
        runtime.block_on(async {
            let work = async {
                let client = connect(endpoints, options, deadline).await?;
                connected.set(true);
                request(client).await
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, work).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) if connected.get() && !matches!(error, ClientError::Connection { .. }) => {
                    Err(RpcError::from_client(&error))
                }
                Ok(Err(error)) => Err(RpcError::from_dial(&error, endpoint)),
                Err(_) if connected.get() => Err(RpcError::no_answer(endpoint, timeout)),
                Err(_) => Err(RpcError::dial_timed_out(endpoint)),
            }
        })
    }

    /// Runs a future on the command's runtime without a deadline (a
    /// snapshot download may take longer than `--command-timeout`).
    pub fn block_on<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Failure> {
        if self.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::exit(exit::ERROR, e.to_string()))?;
            self.runtime = Some(runtime);
        }
        Ok(self.runtime.as_ref().expect("runtime just built").block_on(work))
    }
}
