//! The one place where Keel's errors become etcd's gRPC statuses. Codes and
//! messages are etcd's (`api/v3rpc/rpctypes`): clients match on the strings.

use keel_auth::AuthError;
use keel_lease_manager::LeaseError;
use keel_mvcc::MvccError;
use keel_node::NodeError;
use tonic::{Code, Status};

use crate::recipes::RecipeError;

pub(crate) const EMPTY_KEY: (Code, &str) = (Code::InvalidArgument, "etcdserver: key is not provided");
pub(crate) const KEY_NOT_FOUND: (Code, &str) = (Code::InvalidArgument, "etcdserver: key not found");
pub(crate) const VALUE_PROVIDED: (Code, &str) = (Code::InvalidArgument, "etcdserver: value is provided");
pub(crate) const LEASE_PROVIDED: (Code, &str) = (Code::InvalidArgument, "etcdserver: lease is provided");
pub(crate) const TOO_MANY_OPS: (Code, &str) = (Code::InvalidArgument, "etcdserver: too many operations in txn request");
pub(crate) const DUPLICATE_KEY: (Code, &str) =
    (Code::InvalidArgument, "etcdserver: duplicate key given in txn request");
pub(crate) const INVALID_SORT_OPTION: (Code, &str) = (Code::InvalidArgument, "etcdserver: invalid sort option");
const COMPACTED: (Code, &str) = (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted");
const FUTURE_REV: (Code, &str) = (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision");
const LEASE_NOT_FOUND: (Code, &str) = (Code::NotFound, "etcdserver: requested lease not found");
const LEASE_EXISTS: (Code, &str) = (Code::FailedPrecondition, "etcdserver: lease already exists");
const LEASE_TTL_TOO_LARGE: (Code, &str) = (Code::OutOfRange, "etcdserver: too large lease TTL");
const NOT_LEADER: (Code, &str) = (Code::Unavailable, "etcdserver: not leader");
const REQUEST_TOO_LARGE: (Code, &str) = (Code::InvalidArgument, "etcdserver: request is too large");
const TOO_MANY_REQUESTS: (Code, &str) = (Code::ResourceExhausted, "etcdserver: too many requests");
const NO_LEADER: (Code, &str) = (Code::Unavailable, "etcdserver: no leader");
const TIMEOUT: (Code, &str) = (Code::Unavailable, "etcdserver: request timed out");
const STOPPED: (Code, &str) = (Code::Unavailable, "etcdserver: server stopped");
const CORRUPT: (Code, &str) = (Code::DataLoss, "etcdserver: corrupt cluster");
const NO_SPACE: (Code, &str) = (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded");
const MEMBER_NOT_FOUND: (Code, &str) = (Code::NotFound, "etcdserver: member not found");
const PEER_URL_EXISTS: (Code, &str) = (Code::FailedPrecondition, "etcdserver: Peer URLs already exists");
const BAD_MEMBER_URLS: (Code, &str) = (Code::InvalidArgument, "etcdserver: given member URLs are invalid");
const NOT_ENOUGH_STARTED: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members");
const UNHEALTHY: (Code, &str) = (Code::Unavailable, "etcdserver: unhealthy cluster");
const TOO_MANY_LEARNERS: (Code, &str) = (Code::FailedPrecondition, "etcdserver: too many learner members in cluster");
const MEMBER_NOT_LEARNER: (Code, &str) = (Code::FailedPrecondition, "etcdserver: can only promote a learner member");
const BAD_LEADER_TRANSFEREE: (Code, &str) = (Code::FailedPrecondition, "etcdserver: bad leader transferee");
const LEADER_TRANSFER_TIMEOUT: (Code, &str) =
    (Code::Unavailable, "etcdserver: request timed out, leader transfer took too long");
const LEARNER_NOT_READY: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader");
pub(crate) const WRONG_DOWNGRADE_VERSION_FORMAT: (Code, &str) =
    (Code::InvalidArgument, "etcdserver: wrong downgrade target version format");
pub(crate) const INVALID_DOWNGRADE_TARGET: (Code, &str) =
    (Code::InvalidArgument, "etcdserver: invalid downgrade target version");
/// etcd 3.6 logs it and answers a cancel with success.
pub(crate) const NO_INFLIGHT_DOWNGRADE: (Code, &str) =
    (Code::FailedPrecondition, "etcdserver: no inflight downgrade job");
/// etcd's `concurrency.ErrElectionNotLeader` and `ErrElectionNoLeader`.
const ELECTION_NOT_LEADER: &str = "election: not leader";
const ELECTION_NO_LEADER: &str = "election: no leader";
/// etcd's `v3election.ErrMissingLeaderKey`.
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// clientv3's `waitDelete` when its watch closes without the deletion.
const WATCH_LOST: &str = "lost watcher waiting for delete";

pub(crate) fn status((code, message): (Code, &str)) -> Status {
    Status::new(code, message)
}

/// The gRPC status etcd answers for `err` (its code and message); the
/// HTTP gateways reuse the message.
pub fn node_error(err: NodeError) -> Status {
    match err {
        NodeError::Mvcc(err) => mvcc_error(err),
        NodeError::Lease(err) => lease_error(err),
        NodeError::NoLeader => status(NO_LEADER),
        NodeError::NotLeader => status(NOT_LEADER),
        NodeError::TooManyRequests => status(TOO_MANY_REQUESTS),
        NodeError::NoSpace => status(NO_SPACE),
        NodeError::CorruptCluster => status(CORRUPT),
        NodeError::NotEnoughStartedMembers => status(NOT_ENOUGH_STARTED),
        NodeError::Unhealthy => status(UNHEALTHY),
        NodeError::MemberNotFound => status(MEMBER_NOT_FOUND),
        NodeError::PeerUrlExists => status(PEER_URL_EXISTS),
        NodeError::BadPeerUrls => status(BAD_MEMBER_URLS),
        NodeError::TooManyLearners => status(TOO_MANY_LEARNERS),
        NodeError::MemberNotLearner => status(MEMBER_NOT_LEARNER),
        NodeError::LearnerNotReady => status(LEARNER_NOT_READY),
        NodeError::BadLeaderTransferee => status(BAD_LEADER_TRANSFEREE),
        NodeError::LeaderTransferTimeout => status(LEADER_TRANSFER_TIMEOUT),
        NodeError::Timeout => status(TIMEOUT),
        NodeError::RequestTooLarge => status(REQUEST_TOO_LARGE),
        NodeError::Stopped => status(STOPPED),
        NodeError::Auth(err) => auth_error(err),
        NodeError::Corrupt(detail) => {
            tracing::error!(%detail, "corruption reported to a client");
            status(CORRUPT)
        }
        // etcd answers errors it has no name for with Unknown and their text.
        other => Status::new(Code::Unknown, other.to_string()),
    }
}

/// The Lock and Election services. etcd runs them over an embedded client,
/// which turns the KV's statuses into plain errors before the handler returns
/// them, so every failure reaches the caller as Unknown with the message
/// alone (e.g. Unknown "etcdserver: requested lease not found").
pub(crate) fn recipe_error(err: RecipeError) -> Status {
    let message = match err {
        RecipeError::Refused(status) => status.message().to_owned(),
        RecipeError::Node(err) => node_error(err).message().to_owned(),
        RecipeError::NotLeader => ELECTION_NOT_LEADER.to_owned(),
        RecipeError::NoLeader => ELECTION_NO_LEADER.to_owned(),
        RecipeError::MissingLeaderKey => MISSING_LEADER_KEY.to_owned(),
        RecipeError::WatchLost => WATCH_LOST.to_owned(),
    };
    Status::new(Code::Unknown, message)
}

/// etcd's codes for its auth errors (`rpctypes.ErrGRPC*`); the messages
/// are `AuthError`'s own.
fn auth_error(err: AuthError) -> Status {
    let code = match err {
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision
        | AuthError::PermissionNotGiven => Code::InvalidArgument,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidAuthToken => Code::Unauthenticated,
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::AuthNotEnabled => Code::FailedPrecondition,
        // etcd has no gRPC error for it and answers with its text.
        AuthError::VerifyOnly | AuthError::NoPasswordUser => Code::Unknown,
    };
    Status::new(code, err.to_string())
}

fn lease_error(err: LeaseError) -> Status {
    match err {
        LeaseError::NotFound | LeaseError::Expired => status(LEASE_NOT_FOUND),
        LeaseError::Exists => status(LEASE_EXISTS),
        LeaseError::TtlTooLarge => status(LEASE_TTL_TOO_LARGE),
        LeaseError::NotPrimary => status(NOT_LEADER),
    }
}

fn mvcc_error(err: MvccError) -> Status {
    match err {
        MvccError::Compacted => status(COMPACTED),
        MvccError::FutureRevision => status(FUTURE_REV),
        MvccError::KeyNotFound => status(KEY_NOT_FOUND),
        MvccError::LeaseNotFound => status(LEASE_NOT_FOUND),
        other => Status::new(Code::Unknown, other.to_string()),
    }
}

/// Whether the client asked, with gRPC metadata `hasleader: true` (Go's
/// `clientv3.WithRequireLeader`), to be refused when the member has no leader.
fn requires_leader<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().get("hasleader").is_some_and(|v| v.as_bytes() == b"true")
}

/// The interceptor etcd puts in front of every service: see
/// [`requires_leader`].
#[derive(Clone)]
pub(crate) struct LeaderRequired(pub(crate) std::sync::Arc<keel_node::Member>);

impl tonic::service::Interceptor for LeaderRequired {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if requires_leader(&request) && self.0.leader() == 0 {
            return Err(no_leader());
        }
        Ok(request)
    }
}

fn no_leader() -> Status {
    status(NO_LEADER)
}
