//! How a command fails, and how etcdctl reports each kind of failure.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

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
}

/// A failed call as grpc-go and clientv3 describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// grpc-go's name of the status code (`OutOfRange`).
    pub code: &'static str,
    pub desc: String,
    /// What etcdctl prints after `Error: `.
    pub printed: String,
}

impl RpcError {
    pub fn deadline_exceeded(desc: &str) -> RpcError {
        RpcError { code: "DeadlineExceeded", desc: desc.to_owned(), printed: "context deadline exceeded".to_owned() }
    }

    pub fn from_client(error: &ClientError) -> RpcError {
        let (code, desc) = match error {
            ClientError::Status { code, message } => (*code, message.clone()),
            ClientError::Compacted { .. } => {
                (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_owned())
            }
            ClientError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found".to_owned()),
            ClientError::NoLeader => (Code::Unknown, "election: no leader".to_owned()),
            ClientError::Timeout(_) => return RpcError::deadline_exceeded("context deadline exceeded"),
            ClientError::Connection { .. } | ClientError::Transport { .. } => {
                return RpcError::deadline_exceeded("latest balancer error: all SubConns are in TransientFailure")
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
        RpcError { code, desc, printed }
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
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, since.subsec_millis())
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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

    #[test]
    fn warning_line_shape() {
        let rpc = RpcError::from_client(&ClientError::Compacted { compact_revision: None });
        let line = retry_warning("127.0.0.1:2379", &rpc);
        assert!(line.starts_with("{\"level\":\"warn\",\"ts\":\""));
        assert!(line.ends_with("/127.0.0.1:2379\",\"attempt\":0,\"error\":\"rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision has been compacted\"}"));
        assert_eq!(uuid_v4().len(), 36);
    }
}
