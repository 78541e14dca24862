//! keel-client against a real etcd (Debian's etcd 3.4 in CI). Each test
//! starts its own single-member etcd on free loopback ports, so tests run in
//! parallel and leave nothing behind.

mod concurrency;
mod failover;
mod harness;
mod kv;
mod lease;
mod services;
mod support;
mod watch;
