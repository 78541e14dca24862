//! keel-client's own integration tests, run against a real keel process:
//! the test files of `crates/client/tests/etcd/` (written against etcd 3.4)
//! compiled with this directory's harness, which starts keel where theirs
//! starts etcd. So every behaviour the client relies on is checked on both
//! servers.

#[path = "../common/mod.rs"]
mod common;
mod harness;

#[path = "../../../client/tests/etcd/concurrency.rs"]
mod concurrency;
#[path = "../../../client/tests/etcd/failover.rs"]
mod failover;
#[path = "../../../client/tests/etcd/kv.rs"]
mod kv;
#[path = "../../../client/tests/etcd/lease.rs"]
mod lease;
#[path = "../../../client/tests/etcd/services.rs"]
mod services;
#[path = "../../../client/tests/etcd/support.rs"]
mod support;
#[path = "../../../client/tests/etcd/watch.rs"]
mod watch;
