//! The one error type of this crate.
//!
//! gRPC statuses keep etcd's code and message; the few that callers act on
//! (compaction, unknown lease) get variants of their own so nobody matches on
//! message strings outside this file.

use std::error::Error as _;
use std::time::Duration;

use tonic::{Code, Status};

/// etcd's message for a read or watch below the compaction revision.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
/// etcd's message for a lease id it does not know.
const LEASE_NOT_FOUND_MESSAGE: &str = "requested lease not found";
/// The Election service's message (etcd's `concurrency.ErrElectionNoLeader`).
const NO_LEADER_MESSAGE: &str = "election: no leader";

/// Everything a call of this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `Client::connect` was given no endpoints.
    #[error("no endpoints given")]
    NoEndpoints,

    /// An endpoint could not be parsed or uses an unsupported scheme.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },

    /// The TLS options could not be used (a file unreadable or invalid).
    #[error("tls: {0}")]
    Tls(#[source] keel_tls::TlsError),

    /// No endpoint accepted a connection; `endpoint` is the last one tried.
    #[error("cannot connect to {endpoint}: {source}")]
    Transport {
        /// The last endpoint tried.
        endpoint: String,
        /// What the transport reported for it.
        #[source]
        source: tonic::transport::Error,
    },

    /// The connection to the endpoint failed (refused, reset, closed) before
    /// an answer came, after trying the other endpoints where allowed. A
    /// write that failed so may or may not have been applied.
    #[error("connection failed: {message}")]
    Connection {
        /// What the transport reported.
        message: String,
    },

    /// The server answered with a status.
    #[error("{code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: Code,
        /// The message, e.g. etcd's `"etcdserver: key not found"`.
        message: String,
    },

    /// The requested revision is older than the compaction revision. Watches
    /// know the compaction revision; unary reads do not.
    #[error(
        "required revision has been compacted{}",
        compact_revision.map(|r| format!(" (compacted at {r})")).unwrap_or_default()
    )]
    Compacted {
        /// The store's compaction revision, when the server said.
        compact_revision: Option<i64>,
    },

    /// The server does not know the lease (never granted, revoked or expired).
    #[error("lease not found")]
    LeaseNotFound,

    /// A keep-alive learned that the lease is gone, or no keep-alive was
    /// answered within the lease's TTL.
    #[error("lease {id:x} expired")]
    LeaseExpired {
        /// The lease id.
        id: i64,
    },

    /// The server canceled a watch for a reason other than compaction.
    #[error("watch canceled by the server: {reason}")]
    WatchCanceled {
        /// The server's `cancel_reason`.
        reason: String,
    },

    /// A unary call did not finish within `ClientOptions::request_timeout`.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),

    /// An election has no leader.
    #[error("election has no leader")]
    NoLeader,

    /// A proclaim or resign came from a campaigner that no longer leads.
    #[error("not the election leader")]
    NotLeader,

    /// A mutex's `try_lock` found the lock held by another session.
    #[error("mutex is locked by another session")]
    Locked,

    /// The session's lease ended, so its keys (and any lock or leadership
    /// they stood for) are gone.
    #[error("session expired")]
    SessionExpired,

    /// The server answered with something the etcd API rules out.
    #[error("unexpected response: {0}")]
    UnexpectedResponse(&'static str),
}

impl ClientError {
    /// The gRPC code, for errors that came from a status.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::Connection { .. } => Some(Code::Unavailable),
            ClientError::Compacted { .. } => Some(Code::OutOfRange),
            ClientError::LeaseNotFound => Some(Code::NotFound),
            _ => None,
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let message = status.message();
        if status.source().is_some() {
            return ClientError::Connection { message: message.to_owned() };
        }
        match status.code() {
            Code::OutOfRange if message.contains(COMPACTED_MESSAGE) => {
                ClientError::Compacted { compact_revision: None }
            }
            Code::NotFound if message.contains(LEASE_NOT_FOUND_MESSAGE) => ClientError::LeaseNotFound,
            _ if message.contains(NO_LEADER_MESSAGE) => ClientError::NoLeader,
            code => ClientError::Status { code, message: message.to_owned() },
        }
    }
}

/// True when the endpoint failed rather than the request: the server said
/// Unavailable, or this process made the status itself out of a transport
/// failure (a broken connection surfaces as Unknown "h2 protocol error" or
/// Cancelled "operation was canceled"; statuses a server sends carry no
/// source error). Such calls may succeed on another endpoint.
pub(crate) fn endpoint_failed(status: &Status) -> bool {
    status.code() == Code::Unavailable || status.source().is_some()
}

/// True when the status proves the request never left this process: the
/// channel failed to (re)connect before sending it. Only then may a write be
/// retried on another endpoint without risking applying it twice.
pub(crate) fn certainly_not_sent(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Status {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        Status::from_error(Box::new(tonic::ConnectError(Box::new(io))))
    }

    #[test]
    fn a_connect_error_is_unavailable_and_not_sent() {
        let status = refused();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(certainly_not_sent(&status));
    }

    #[test]
    fn a_server_unavailable_may_have_been_sent() {
        assert!(!certainly_not_sent(&Status::unavailable("etcdserver: leader changed")));
    }

    #[test]
    fn local_transport_failures_and_unavailable_fail_the_endpoint() {
        assert!(endpoint_failed(&refused()));
        assert!(endpoint_failed(&Status::unavailable("etcdserver: no leader")));
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(endpoint_failed(&broken));
        assert!(!certainly_not_sent(&broken));
        // The same codes sent by a server are the request's own failure.
        assert!(!endpoint_failed(&Status::unknown("election: no leader")));
        assert!(!endpoint_failed(&Status::cancelled("context canceled")));
        assert!(matches!(ClientError::from(broken), ClientError::Connection { .. }));
    }

    #[test]
    fn etcd_messages_map_to_variants() {
        let compacted = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert!(matches!(ClientError::from(compacted), ClientError::Compacted { compact_revision: None }));
        let lease = Status::not_found("etcdserver: requested lease not found");
        assert!(matches!(ClientError::from(lease), ClientError::LeaseNotFound));
        let leader = Status::unknown("election: no leader");
        assert!(matches!(ClientError::from(leader), ClientError::NoLeader));
        let other = Status::invalid_argument("etcdserver: key is not provided");
        assert!(matches!(ClientError::from(other), ClientError::Status { code: Code::InvalidArgument, .. }));
    }
}
