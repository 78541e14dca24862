//! How a command fails, and how etcdctl reports each kind of failure.
//!
//! One addition to etcdctl's reports: when a call never reached its
//! endpoint, or reached it and got no answer, etcdctl says only `Error:
//! context deadline exceeded`; keelctl prints exactly that, and then, when
//! stderr is a terminal, one line more naming the endpoint and the cause
//! in plain words (a [`Diagnosis`]). Scripts, which read stderr through a
//! pipe or a file, see etcdctl's lines alone.

use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_client::{ClientError, Code};

use crate::flags::FlagError;
use crate::gostr;

/// etcdctl's exit codes (`ctlv3/command/error.go`).
pub mod exit {
    pub const ERROR: i32 = 1;
    pub const BAD_CONNECTION: i32 = 2;
    /// Malformed `txn` and `watch -i` input.
    pub const INVALID_INPUT: i32 = 3;
    /// A valid flag with a value etcdctl does not support.
    pub const BAD_FEATURE: i32 = 4;
    pub const BAD_ARGS: i32 = 128;
    /// What the Go runtime exits with after a panic.
    pub const GO_PANIC: i32 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// etcdctl's `ExitWithError(code, err)`.
    #[error("{message}")]
    Exit { code: i32, message: String },
    /// cobra rejected the flags: the usage goes to stdout, the error twice
    /// to stderr (once from cobra, once from etcdctl's main).
    #[error("{error}")]
    Flag { error: FlagError, usage: String },
    /// cobra found no such command; `message` includes its suggestions.
    #[error("{message}")]
    UnknownCommand { message: String },
    /// cobra's `Args` check refused the arguments (`completion bash foo`):
    /// reported as `Flag` is.
    #[error("{message}")]
    Args { message: String, usage: String },
    /// A call failed: clientv3's retry interceptor logs it, then etcdctl
    /// prints the error.
    #[error("{}", .rpc.printed)]
    Rpc { rpc: RpcError, target: String },
    /// Where etcdctl panics (e.g. an unknown txn comparison operator).
    #[error("{0}")]
    Panic(String),
    /// Reported as `failure` is, but exiting with `code`: etcdctl exits 2
    /// (`ExitBadConnection`) after some failed calls, e.g. `lease list`.
    #[error("{failure}")]
    WithCode { failure: Box<Failure>, code: i32 },
    /// etcdctl's bare `os.Exit(code)`, after the command printed its own
    /// lines (`endpoint status` with an endpoint down).
    #[error("exit status {0}")]
    Quiet(i32),
}

impl Failure {
    pub fn exit(code: i32, message: impl Into<String>) -> Failure {
        Failure::Exit { code, message: message.into() }
    }

    /// This failure, exiting with `code` instead.
    pub fn with_code(self, code: i32) -> Failure {
        Failure::WithCode { failure: Box::new(self), code }
    }

    /// Writes what etcdctl writes for this failure; returns the exit code.
    pub fn report(&self, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
        // Output errors are ignored: there is nowhere left to report them.
        match self {
            Failure::Exit { code, message } => {
                let _ = writeln!(stderr, "Error: {message}");
                *code
            }
            Failure::Flag { error, usage } => {
                let _ = stdout.write_all(usage.as_bytes());
                let _ = write!(stderr, "Error: {error}\n\nError: {error}\n");
                exit::ERROR
            }
            Failure::Args { message, usage } => {
                let _ = stdout.write_all(usage.as_bytes());
                let _ = write!(stderr, "Error: {message}\n\nError: {message}\n");
                exit::ERROR
            }
            Failure::UnknownCommand { message } => {
                let _ = write!(stderr, "Error: {message}\nRun 'etcdctl --help' for usage.\nError: {message}\n");
                exit::ERROR
            }
            Failure::Rpc { rpc, target } => {
                let _ = writeln!(stderr, "{}", retry_warning(target, rpc));
                let _ = writeln!(stderr, "Error: {}", rpc.printed);
                exit::ERROR
            }
            Failure::Quiet(code) => *code,
            Failure::Panic(message) => {
                let _ = write!(stderr, "panic: {message}\n\ngoroutine 1 [running]:\n");
                exit::GO_PANIC
            }
            Failure::WithCode { failure, code } => {
                failure.report(stdout, stderr);
                *code
            }
        }
    }

    /// As [`Failure::report`], adding the [`Diagnosis`] line when stderr
    /// is a terminal.
    pub fn report_to(&self, stdout: &mut dyn Write, stderr: &mut dyn Write, terminal: bool) -> i32 {
        let code = self.report(stdout, stderr);
        if let Some(diagnosis) = self.diagnosis().filter(|_| terminal) {
            let _ = writeln!(stderr, "{diagnosis}");
        }
        code
    }

    /// Why the call behind this failure failed, where known.
    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        match self {
            Failure::Rpc { rpc, .. } => rpc.diagnosis.as_deref(),
            Failure::WithCode { failure, .. } => failure.diagnosis(),
            _ => None,
        }
    }
}

/// A failed call as grpc-go and clientv3 describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// grpc-go's name of the status code (`OutOfRange`).
    pub code: &'static str,
    pub desc: String,
    /// What etcdctl prints after `Error: `.
    pub printed: String,
    /// Why, in plain words, when the call never got an answer (boxed:
    /// every command's `Result` carries this type).
    pub diagnosis: Option<Box<Diagnosis>>,
}

impl RpcError {
    pub fn deadline_exceeded(desc: &str) -> RpcError {
        RpcError {
            code: "DeadlineExceeded",
            desc: desc.to_owned(),
            printed: "context deadline exceeded".to_owned(),
            diagnosis: None,
        }
    }

    /// A call that had a connection to `endpoint` and no answer within
    /// `timeout` (`--command-timeout`).
    pub fn no_answer(endpoint: &str, timeout: Duration) -> RpcError {
        let diagnosis = Diagnosis::new(endpoint, Cause::NoAnswer(timeout));
        RpcError { diagnosis: Some(diagnosis), ..RpcError::deadline_exceeded("context deadline exceeded") }
    }

    /// As [`RpcError::from_client`], for a failure to connect or to get
    /// a first answer on a new connection, with `endpoint` named when the
    /// error names none: the dial to it timed out, or the connection broke
    /// before the first answer.
    pub fn from_dial(error: &ClientError, endpoint: &str) -> RpcError {
        let mut rpc = RpcError::from_client(error);
        if rpc.diagnosis.is_none() {
            let cause = match error {
                // keel-client keeps only the transport's words here, and
                // they are "transport error" more often than not.
                ClientError::Connection { message } => {
                    Some(cause_from_words(message, "").unwrap_or(Cause::BrokeBeforeAnswer))
                }
                ClientError::Timeout(_) => Some(Cause::TimedOut),
                _ => None,
            };
            rpc.diagnosis = cause.map(|cause| Diagnosis::new(endpoint, cause));
        }
        rpc
    }

    /// An `--command-timeout` that ran out while dialling `endpoint`.
    pub fn dial_timed_out(endpoint: &str) -> RpcError {
        RpcError {
            diagnosis: Some(Diagnosis::new(endpoint, Cause::TimedOut)),
            ..RpcError::deadline_exceeded("context deadline exceeded")
        }
    }

    pub fn from_client(error: &ClientError) -> RpcError {
        let diagnosis = match error {
            ClientError::Transport { endpoint, source } => {
                Some(Diagnosis::new(endpoint, classify(source, host_of(host_port(endpoint)))))
            }
            _ => None,
        };
        let (code, desc) = match error {
            ClientError::Status { code, message } => (*code, message.clone()),
            ClientError::Compacted { .. } => {
                (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_owned())
            }
            ClientError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found".to_owned()),
            ClientError::NoLeader => (Code::Unknown, "election: no leader".to_owned()),
            ClientError::Timeout(_) => return RpcError::deadline_exceeded("context deadline exceeded"),
            ClientError::Connection { .. } | ClientError::Transport { .. } => {
                let desc = "latest balancer error: all SubConns are in TransientFailure";
                return RpcError { diagnosis, ..RpcError::deadline_exceeded(desc) };
            }
            other => (Code::Unknown, other.to_string()),
        };
        let code = code_name(code);
        // clientv3 turns the statuses it knows (all "etcdserver: ...") into
        // its own errors, which print as their message; others print as
        // grpc-go's status error.
        let printed = if desc.starts_with("etcdserver: ") {
            desc.clone()
        } else {
            format!("rpc error: code = {code} desc = {desc}")
        };
        RpcError { code, desc, printed, diagnosis }
    }
}

/// The endpoint and the cause of a call that got no answer: the line
/// keelctl adds on a terminal, e.g. `keelctl: cannot reach 127.0.0.1:2379:
/// connection refused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// `host:port`, without the scheme.
    pub endpoint: String,
    pub cause: Cause,
}

impl Diagnosis {
    /// `endpoint` as given or as a URL (`http://host:port`).
    fn new(endpoint: &str, cause: Cause) -> Box<Diagnosis> {
        Box::new(Diagnosis { endpoint: host_port(endpoint).to_owned(), cause })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Refused,
    /// The peer closed or reset the connection before answering.
    Closed,
    /// A new connection failed before its first answer, the transport
    /// saying no more; as a plain connection to a TLS port does.
    BrokeBeforeAnswer,
    HostUnreachable,
    NetworkUnreachable,
    TimedOut,
    NameResolution {
        host: String,
    },
    /// The TLS handshake failed; the reason in Go's words where Go has
    /// them (`certificate signed by unknown authority`).
    Tls(String),
    /// Connected, but no answer within `--command-timeout`.
    NoAnswer(Duration),
    /// The transport's own words, for causes not sorted out above.
    Other(String),
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = &self.endpoint;
        let reach = |f: &mut fmt::Formatter<'_>, cause: &str| write!(f, "keelctl: cannot reach {endpoint}: {cause}");
        match &self.cause {
            Cause::Refused => reach(f, "connection refused"),
            Cause::Closed => reach(f, "connection closed by the server before it answered"),
            Cause::BrokeBeforeAnswer => reach(
                f,
                "the connection failed before the first answer (if the server wants TLS, use https:// endpoints)",
            ),
            Cause::HostUnreachable => reach(f, "no route to host"),
            Cause::NetworkUnreachable => reach(f, "network is unreachable"),
            Cause::TimedOut => reach(f, "connection timed out"),
            Cause::NameResolution { host } => reach(f, &format!("name resolution failed for {host}")),
            Cause::Tls(reason) => write!(f, "keelctl: TLS handshake with {endpoint} failed: {reason}"),
            Cause::NoAnswer(timeout) => {
                write!(f, "keelctl: no answer from {endpoint} within {:?} (--command-timeout)", timeout)
            }
            Cause::Other(words) => reach(f, words),
        }
    }
}

/// `host:port` of an endpoint URL (`http://host:port`).
fn host_port(endpoint: &str) -> &str {
    endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest).trim_end_matches('/')
}

/// The host of `host:port` (`[::1]:2379` gives `::1`).
fn host_of(host_port: &str) -> &str {
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The cause of a failed dial to `host`, from the chain of errors tonic,
/// hyper, std's io and rustls leave: the first link whose type tells,
/// else the first whose words do, else the deepest link's words.
pub fn classify(error: &(dyn std::error::Error + 'static), host: &str) -> Cause {
    let mut links = Vec::new();
    let mut link = Some(error);
    while let Some(error) = link {
        links.push(error);
        link = error.source();
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            // An io error's `source` skips the error it wraps (where
            // tokio-rustls puts rustls's): go through that one.
            if let Some(inner) = io.get_ref() {
                link = Some(inner);
            }
        }
    }
    for error in &links {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Cause::Tls(tls_reason(tls, host));
        }
        if let Some(cause) = error.downcast_ref::<std::io::Error>().and_then(io_cause) {
            return cause;
        }
    }
    let deepest = links.last().map(|e| e.to_string()).unwrap_or_default();
    links.iter().find_map(|e| cause_from_words(&e.to_string(), host)).unwrap_or(Cause::Other(deepest))
}

fn io_cause(io: &std::io::Error) -> Option<Cause> {
    use std::io::ErrorKind;
    Some(match io.kind() {
        ErrorKind::ConnectionRefused => Cause::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => Cause::Closed,
        ErrorKind::HostUnreachable => Cause::HostUnreachable,
        ErrorKind::NetworkUnreachable => Cause::NetworkUnreachable,
        ErrorKind::TimedOut => Cause::TimedOut,
        // tokio-rustls's words for a server that hung up mid-handshake.
        ErrorKind::UnexpectedEof if io.to_string().contains("tls handshake eof") => {
            Cause::Tls("the server closed the connection during the handshake (is it serving TLS?)".to_owned())
        }
        _ => return None,
    })
}

/// Causes known only by their words: std's for a failed `getaddrinfo`,
/// tonic's and tokio's for timeouts.
fn cause_from_words(words: &str, host: &str) -> Option<Cause> {
    if words.contains("failed to lookup address information") {
        return Some(Cause::NameResolution { host: host.to_owned() });
    }
    let lower = words.to_lowercase();
    if ["timed out", "timeout expired", "deadline has elapsed"].iter().any(|w| lower.contains(w)) {
        return Some(Cause::TimedOut);
    }
    if lower.contains("connection refused") {
        return Some(Cause::Refused);
    }
    None
}

/// A failed handshake in the words Go's crypto/tls and crypto/x509 use,
/// which etcd's users know, where they have some.
fn tls_reason(error: &rustls::Error, host: &str) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match error {
        Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => "certificate signed by unknown authority".to_owned(),
            Cert::Expired | Cert::ExpiredContext { .. } => "certificate has expired".to_owned(),
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => "certificate is not valid yet".to_owned(),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                format!("certificate is not valid for {host}")
            }
            Cert::Revoked => "certificate has been revoked".to_owned(),
            Cert::BadSignature => "certificate has a bad signature".to_owned(),
            other => format!("invalid certificate: {other}"),
        },
        Error::AlertReceived(Alert::CertificateRequired) => {
            "the server requires a client certificate (--cert, --key)".to_owned()
        }
        Error::AlertReceived(Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown) => {
            "the server refused the client certificate".to_owned()
        }
        Error::AlertReceived(Alert::HandshakeFailure | Alert::ProtocolVersion | Alert::InsufficientSecurity) => {
            "no TLS version, cipher suite or signature scheme in common with the server".to_owned()
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "the server does not speak TLS (is the endpoint http://?)".to_owned()
        }
        other => other.to_string(),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// clientv3's zap line for a failed attempt (`retry_interceptor.go:62`).
fn retry_warning(target: &str, rpc: &RpcError) -> String {
    retry_warning_at(&format!("endpoint://client-{}/{target}", uuid_v4()), rpc)
}

/// As [`retry_warning`], for a client etcdctl dialled at one endpoint
/// only (`endpoint status` and the like): its gRPC target is
/// `passthrough:///<endpoint>`.
pub fn passthrough_retry_warning(endpoint: &str, rpc: &RpcError) -> String {
    retry_warning_at(&format!("passthrough:///{endpoint}"), rpc)
}

fn retry_warning_at(full_target: &str, rpc: &RpcError) -> String {
    let error = format!("rpc error: code = {} desc = {}", rpc.code, rpc.desc);
    format!(
        "{{\"level\":\"warn\",\"ts\":\"{}\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"{full_target}\",\"attempt\":0,\"error\":{}}}",
        timestamp(SystemTime::now()),
        gostr::json_string(error.as_bytes()),
    )
}

/// zap's ISO 8601 time with milliseconds, in UTC.
pub fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let at =
        time::OffsetDateTime::from_unix_timestamp(since.as_secs() as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        since.subsec_millis()
    )
}

/// A random-looking v4 UUID; it only names the client in a log line, so
/// std's randomly keyed hasher is randomness enough.
fn uuid_v4() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_zap_iso8601() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_574_553_953);
        assert_eq!(timestamp(at), "2026-12-06T16:29:13.953Z");
    }

    #[test]
    fn status_errors_print_as_etcdctl() {
        let lease = RpcError::from_client(&ClientError::LeaseNotFound);
        assert_eq!(lease.code, "NotFound");
        assert_eq!(lease.printed, "etcdserver: requested lease not found");
        let other = RpcError::from_client(&ClientError::Status { code: Code::Unavailable, message: "x".into() });
        assert_eq!(other.printed, "rpc error: code = Unavailable desc = x");
    }

    /// A link of an error chain, as tonic's and hyper's wrappers are.
    #[derive(Debug)]
    struct Link(&'static str, Box<dyn std::error::Error + Send + Sync>);

    impl fmt::Display for Link {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Link {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.1)
        }
    }

    /// `io` as tonic hands a dial failure over: transport error, connect
    /// error, then the connector's.
    fn dial_error(io: std::io::Error) -> Link {
        Link("transport error", Box::new(Link("tcp connect error", Box::new(io))))
    }

    fn tls_error(error: rustls::Error) -> Link {
        // tokio-rustls wraps rustls's error in an io error.
        dial_error(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn causes_from_io_errors() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (Error::from(ErrorKind::ConnectionRefused), Cause::Refused),
            (Error::from_raw_os_error(111), Cause::Refused),
            (Error::from_raw_os_error(113), Cause::HostUnreachable),
            (Error::from_raw_os_error(101), Cause::NetworkUnreachable),
            (Error::from_raw_os_error(110), Cause::TimedOut),
            (Error::from_raw_os_error(104), Cause::Closed),
            (
                Error::other("failed to lookup address information: Name or service not known"),
                Cause::NameResolution { host: "foo.invalid".into() },
            ),
            (
                Error::other("h2 protocol error: frame with invalid size"),
                Cause::Other("h2 protocol error: frame with invalid size".into()),
            ),
        ];
        for (io, want) in cases {
            let words = io.to_string();
            assert_eq!(classify(&dial_error(io), "foo.invalid"), want, "{words}");
        }
        // tonic's connect timeout names no io error.
        assert_eq!(
            classify(&Link("transport error", Box::new(Link("timeout expired", "x".into()))), "h"),
            Cause::TimedOut
        );
    }

    #[test]
    fn causes_from_rustls_errors() {
        use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
        let cases = [
            (Error::InvalidCertificate(CertificateError::UnknownIssuer), "certificate signed by unknown authority"),
            (Error::InvalidCertificate(CertificateError::Expired), "certificate has expired"),
            (Error::InvalidCertificate(CertificateError::NotValidForName), "certificate is not valid for h.example"),
            (
                Error::AlertReceived(AlertDescription::CertificateRequired),
                "the server requires a client certificate (--cert, --key)",
            ),
            (Error::AlertReceived(AlertDescription::BadCertificate), "the server refused the client certificate"),
            (
                Error::InvalidMessage(InvalidMessage::InvalidContentType),
                "the server does not speak TLS (is the endpoint http://?)",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(classify(&tls_error(error), "h.example"), Cause::Tls(want.to_owned()));
        }
    }

    #[test]
    fn diagnosis_lines() {
        let line = |cause| Diagnosis { endpoint: "127.0.0.1:2379".into(), cause }.to_string();
        assert_eq!(line(Cause::Refused), "keelctl: cannot reach 127.0.0.1:2379: connection refused");
        assert_eq!(line(Cause::HostUnreachable), "keelctl: cannot reach 127.0.0.1:2379: no route to host");
        assert_eq!(
            line(Cause::NameResolution { host: "foo.invalid".into() }),
            "keelctl: cannot reach 127.0.0.1:2379: name resolution failed for foo.invalid"
        );
        assert_eq!(
            line(Cause::Tls("certificate signed by unknown authority".into())),
            "keelctl: TLS handshake with 127.0.0.1:2379 failed: certificate signed by unknown authority"
        );
        assert_eq!(
            line(Cause::NoAnswer(Duration::from_secs(5))),
            "keelctl: no answer from 127.0.0.1:2379 within 5s (--command-timeout)"
        );
        assert_eq!((host_port("https://[::1]:2379/"), host_of("[::1]:2379")), ("[::1]:2379", "::1"));
    }

    #[test]
    fn the_diagnosis_line_follows_etcdctls_only_on_a_terminal() {
        let rpc =
            RpcError::from_dial(&ClientError::Connection { message: "dial timed out".into() }, "http://10.0.0.1:2379");
        let failure = Failure::Rpc { rpc, target: "10.0.0.1:2379".into() }.with_code(exit::ERROR);
        let report = |terminal| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(failure.report_to(&mut out, &mut err, terminal), exit::ERROR);
            assert!(out.is_empty());
            String::from_utf8(err).unwrap()
        };
        let plain = report(false);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("\"error\":\"rpc error: code = DeadlineExceeded desc = latest balancer error: all SubConns are in TransientFailure\"}"));
        assert_eq!(lines[1], "Error: context deadline exceeded");
        let terminal = report(true);
        assert_eq!(terminal.lines().count(), 3);
        assert!(terminal.starts_with(lines[0].split("\"ts\"").next().unwrap()));
        assert!(terminal.ends_with(
            "Error: context deadline exceeded\nkeelctl: cannot reach 10.0.0.1:2379: connection timed out\n"
        ));
    }

    /// The whole path, from a command to its report, in both modes.
    #[test]
    fn a_command_names_the_unreachable_endpoint_on_a_terminal() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let args: Vec<String> =
            [format!("--endpoints=127.0.0.1:{port}"), "--command-timeout=300ms".into(), "get".into(), "k".into()]
                .into();
        let run = |terminal| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let io =
                crate::Io { stdout: &mut out, stderr: &mut err, stdin: &mut &b""[..], stderr_is_terminal: terminal };
            let code = crate::run(&args, Vec::new(), io);
            (code, String::from_utf8(err).unwrap())
        };
        let (code, plain) = run(false);
        assert_eq!(code, exit::ERROR);
        assert!(plain.ends_with("}\nError: context deadline exceeded\n"), "{plain}");
        let (code, terminal) = run(true);
        assert_eq!(code, exit::ERROR);
        let want = format!(
            "}}\nError: context deadline exceeded\nkeelctl: cannot reach 127.0.0.1:{port}: connection refused\n"
        );
        assert!(terminal.ends_with(&want), "{terminal}");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    async fn dial(endpoint: &str, tls: Option<keel_client::TlsOptions>) -> ClientError {
        let options = keel_client::ClientOptions { tls, ..keel_client::ClientOptions::default() };
        match keel_client::Client::connect([endpoint.to_owned()], options).await {
            Ok(_) => panic!("{endpoint} answered"),
            Err(error) => error,
        }
    }

    fn diagnosis(error: &ClientError) -> String {
        RpcError::from_client(error).diagnosis.map(|d| d.to_string()).unwrap_or_else(|| format!("none for {error:?}"))
    }

    // The chains keel-client really returns, through tonic, hyper,
    // tokio-rustls and rustls, not just the ones built above.
    #[test]
    fn real_dial_failures() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused = runtime().block_on(dial(&format!("127.0.0.1:{port}"), None));
        assert_eq!(diagnosis(&refused), format!("keelctl: cannot reach 127.0.0.1:{port}: connection refused"));

        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (cert_file, key_file) = keel_tls::self_signed(dir.path(), &["127.0.0.1".to_owned()], 1).unwrap();
            let options = keel_tls::ServerTlsOptions { cert_file, key_file, ..Default::default() };
            let tls = keel_tls::ServerTls::new(options).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut incoming = keel_tls::Incoming::tls(listener, tls);
            tokio::spawn(async move {
                use tokio_stream::StreamExt;
                while incoming.next().await.is_some() {}
            });
            let unknown = dial(&format!("https://{addr}"), Some(keel_client::TlsOptions::new())).await;
            assert_eq!(
                diagnosis(&unknown),
                format!("keelctl: TLS handshake with {addr} failed: certificate signed by unknown authority")
            );
            // Without TLS, the connection is made; the first call fails.
            let options = keel_client::ClientOptions::default();
            let plain = keel_client::Client::connect([format!("http://{addr}")], options).await.unwrap();
            let error = plain.get("k").await.unwrap_err();
            assert_eq!(
                RpcError::from_dial(&error, &format!("http://{addr}")).diagnosis.unwrap().to_string(),
                format!("keelctl: cannot reach {addr}: the connection failed before the first answer (if the server wants TLS, use https:// endpoints)")
            );

            // A server that answers a TLS hello with HTTP/1.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Ok((mut conn, _)) = listener.accept().await {
                    let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                }
            });
            let skip = keel_client::TlsOptions::new().with_insecure_skip_verify();
            let not_tls = dial(&format!("https://{addr}"), Some(skip)).await;
            assert_eq!(
                diagnosis(&not_tls),
                format!("keelctl: TLS handshake with {addr} failed: the server does not speak TLS (is the endpoint http://?)")
            );
        });
    }

    #[test]
    fn warning_line_shape() {
        let rpc = RpcError::from_client(&ClientError::Compacted { compact_revision: None });
        let line = retry_warning("127.0.0.1:2379", &rpc);
        assert!(line.starts_with("{\"level\":\"warn\",\"ts\":\""));
        assert!(line.ends_with("/127.0.0.1:2379\",\"attempt\":0,\"error\":\"rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision has been compacted\"}"));
        assert_eq!(uuid_v4().len(), 36);
    }
}
