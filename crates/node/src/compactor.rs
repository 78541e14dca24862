//! etcd's auto-compaction (`--auto-compaction-mode`, `--auto-compaction-
//! retention`): the leader alone decides, and compacts through raft like
//! any client, so every member compacts at the same index.
//!
//! - periodic: keep about `retention` of history. The revision is sampled
//!   every tenth of the retention (at most an hour); once `retention` has
//!   passed since the last compaction (then every retention, at most an
//!   hour) the oldest sample — the revision of `retention` ago — is
//!   compacted.
//! - revision: every five minutes, compact at `current - retention` when
//!   that moved.
//!
//! The plans are plain state driven by the caller's clock; the member's
//! task ([`crate::Member::run_auto_compaction`]) feeds them real time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How history is compacted automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

/// How often the revision compactor looks (etcd's `revInterval`).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);
const HOUR: Duration = Duration::from_secs(3600);

/// etcd's periodic compactor.
#[derive(Debug)]
pub struct PeriodicPlan {
    period: Duration,
    /// The wait between compactions after the first (the period, at most an hour).
    compact_interval: Duration,
    /// The wait between samples, and between failed attempts.
    retry_interval: Duration,
    retentions: usize,
    revs: VecDeque<i64>,
    last_success: Instant,
    base_interval: Duration,
}

impl PeriodicPlan {
    pub fn new(period: Duration, now: Instant) -> PeriodicPlan {
        let compact_interval = period.min(HOUR);
        let retry_interval = compact_interval / 10;
        let retentions = if retry_interval.is_zero() {
            1
        } else {
            usize::try_from(period.as_nanos() / retry_interval.as_nanos()).unwrap_or(usize::MAX) + 1
        };
        PeriodicPlan {
            period,
            compact_interval,
            retry_interval,
            retentions,
            revs: VecDeque::new(),
            last_success: now,
            base_interval: period,
        }
    }

    /// How long to wait after each [`PeriodicPlan::sample`].
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
    }

    /// Records the current revision; called before each wait.
    pub fn sample(&mut self, revision: i64) {
        self.revs.push_back(revision);
        if self.revs.len() > self.retentions {
            self.revs.pop_front();
        }
    }

    /// After a wait: the revision to compact now, if it is time.
    pub fn due(&mut self, now: Instant) -> Option<i64> {
        if now.saturating_duration_since(self.last_success) < self.base_interval {
            return None;
        }
        if self.base_interval == self.period {
            self.base_interval = self.compact_interval;
        }
        self.revs.front().copied()
    }

    /// The compaction [`PeriodicPlan::due`] asked for succeeded (or the
    /// revision was compacted already).
    pub fn succeeded(&mut self, now: Instant) {
        self.last_success = now;
    }
}

/// etcd's revision compactor.
#[derive(Debug)]
pub struct RevisionPlan {
    retention: i64,
    previous: i64,
}

impl RevisionPlan {
    pub fn new(retention: i64) -> RevisionPlan {
        RevisionPlan { retention, previous: 0 }
    }

    /// After a wait: the revision to compact, if it moved.
    pub fn due(&self, current: i64) -> Option<i64> {
        let rev = current - self.retention;
        (rev > 0 && rev != self.previous).then_some(rev)
    }

    pub fn succeeded(&mut self, rev: i64) {
        self.previous = rev;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_compacts_the_revision_of_one_retention_ago() {
        let start = Instant::now();
        let mut plan = PeriodicPlan::new(Duration::from_secs(10), start);
        assert_eq!(plan.retry_interval(), Duration::from_secs(1));
        let mut compacted = Vec::new();
        // One write per second: the revision is 100 + seconds.
        for second in 0..40u64 {
            plan.sample(100 + second as i64);
            let now = start + Duration::from_secs(second + 1);
            if let Some(rev) = plan.due(now) {
                compacted.push((second + 1, rev));
                plan.succeeded(now);
            }
        }
        // First after one retention, then every retention; each time the
        // revision sampled a retention earlier.
        assert_eq!(compacted, vec![(10, 100), (20, 109), (30, 119), (40, 129)]);
    }

    #[test]
    fn periodic_retries_every_sample_after_a_failure() {
        let start = Instant::now();
        let mut plan = PeriodicPlan::new(Duration::from_secs(10), start);
        let mut attempts = Vec::new();
        for second in 0..13u64 {
            plan.sample(second as i64 + 1);
            if let Some(rev) = plan.due(start + Duration::from_secs(second + 1)) {
                attempts.push(rev);
            }
        }
        assert_eq!(attempts, vec![1, 1, 2, 3], "every retry interval while failing");
    }

    #[test]
    fn periodic_over_an_hour_compacts_hourly() {
        let start = Instant::now();
        let plan = PeriodicPlan::new(Duration::from_secs(5 * 3600), start);
        assert_eq!(plan.retry_interval(), Duration::from_secs(360));
        assert_eq!(plan.retentions, 51);
        assert_eq!(plan.compact_interval, HOUR);
    }

    #[test]
    fn revision_keeps_the_retention_and_compacts_only_when_it_moved() {
        let mut plan = RevisionPlan::new(1000);
        assert_eq!(plan.due(1000), None);
        assert_eq!(plan.due(1500), Some(500));
        plan.succeeded(500);
        assert_eq!(plan.due(1500), None);
        assert_eq!(plan.due(1501), Some(501));
    }
}
