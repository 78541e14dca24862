//! The crate's one error type. Every variant is a client error: the lessor has
//! no storage and nothing it does can fail fatally.

/// Why a lease operation was refused.
///
/// The Display strings are etcd's (`rpctypes` messages for the first three,
/// `lease.ErrNotPrimary` for [`LeaseError::NotPrimary`]); `grpc-api` still
/// owns the mapping to gRPC codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No lease has this id (or the id is 0, which means "no lease").
    #[error("etcdserver: requested lease not found")]
    NotFound,
    /// A grant names an id that is already in use.
    #[error("etcdserver: lease already exists")]
    Exists,
    /// A grant asks for more than [`MAX_LEASE_TTL`](crate::MAX_LEASE_TTL) seconds.
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
    /// Renew and TimeToLive are answered by the primary (the raft leader,
    /// once promoted) only; the caller forwards them or asks the client to
    /// retry. Between winning an election and promotion the member is not
    /// primary yet, which etcd reports as "leader changed".
    #[error("not a primary lessor")]
    NotPrimary,
    /// Renew of a lease whose deadline has passed: its revoke is already on
    /// its way through raft, so renewing it would hand the client a lease
    /// that is about to vanish. etcd's Renew waits here until the revoke is
    /// applied (then answers [`LeaseError::NotFound`]) or the member is
    /// demoted (then [`LeaseError::NotPrimary`]); the caller does the same.
    #[error("lease expired, revoke pending")]
    Expired,
}
