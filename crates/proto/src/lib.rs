//! Keel's wire types: the etcd v3 gRPC contract (etcd 3.6 API level) and
//! Keel's internal raft payloads, generated from the workspace `proto/` tree
//! by prost and tonic.
//!
//! Each protobuf package is a sibling top-level module because prost refers
//! across packages as `super::<package>::...`. Services come with both tonic
//! clients (`<service>_client`) and servers (`<service>_server`). Lints are
//! silenced on the generated modules only.
//!
//! This is the leaf of the crate graph: it holds no logic, only types.

/// Keys, values and watch events (`mvccpb`).
#[allow(clippy::all, clippy::pedantic)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// Users, roles and permissions as persisted by the auth store (`authpb`).
#[allow(clippy::all, clippy::pedantic)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// The etcd v3 client API: KV, Watch, Lease, Cluster, Maintenance and Auth
/// services and their messages (`etcdserverpb`).
#[allow(clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// The Lock service (`v3lockpb`).
#[allow(clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// The Election service (`v3electionpb`).
#[allow(clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Keel-internal payloads carried in the raft log (`keelpb`); not part of the
/// etcd contract.
#[allow(clippy::all, clippy::pedantic)]
pub mod keelpb {
    include!(concat!(env!("OUT_DIR"), "/keelpb.rs"));
}

#[cfg(test)]
mod tests;
