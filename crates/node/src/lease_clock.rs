//! When this member's lease manager keeps time.
//!
//! Only the leader's lease manager (the "primary") tracks deadlines, renews
//! and expires leases. It becomes primary once this member leads *and* has
//! applied the empty entry that opens its term: by then every grant and
//! revoke of earlier terms is applied, so it expires nothing it should not
//! know about (etcd promotes at the same point). It stops being primary as
//! soon as this member does not lead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_lease_manager::Lessor;
use keel_raft_node::{Clock, RaftHandle};

pub(crate) struct LeaseClock {
    raft: RaftHandle,
    /// Every lease gets this much extra time on promotion, so clients have
    /// an election's worth of time to find the new leader.
    grace: Duration,
    /// The term of the last empty (term-opening) entry applied.
    opened_term: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl LeaseClock {
    pub(crate) fn new(raft: RaftHandle, grace: Duration, clock: Arc<dyn Clock>) -> Self {
        LeaseClock { raft, grace, opened_term: AtomicU64::new(0), clock }
    }

    pub(crate) fn now(&self) -> std::time::Instant {
        self.clock.now()
    }

    /// The applier applied the empty entry that opens `term`. A leader
    /// promotes (again, if it already was primary: deadlines restart, as in
    /// etcd) when it is its own term's entry.
    pub(crate) fn term_opened(&self, lessor: &mut Lessor, term: u64) {
        self.opened_term.store(term, Ordering::Release);
        let status = self.raft.status();
        if status.is_leader() && status.term() == term {
            lessor.promote(self.clock.now(), self.grace);
        }
    }

    /// Brings the lease manager in step with raft right now: the applier may
    /// have applied the term's entry before raft published the leadership.
    pub(crate) fn align(&self, lessor: &mut Lessor) {
        let status = self.raft.status();
        let leader = status.is_leader();
        if lessor.is_primary() && !leader {
            lessor.demote();
        } else if !lessor.is_primary() && leader && self.opened_term.load(Ordering::Acquire) == status.term() {
            lessor.promote(self.clock.now(), self.grace);
        }
    }
}
