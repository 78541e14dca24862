//! A set of `(time, lease id)` ordered by time: the lessor's expiry and
//! checkpoint schedules. Each lease remembers the time it is filed under (its
//! "slot"), so moving or removing it is one O(log n) lookup and the due
//! prefix is read without touching anything later.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::LeaseId;

#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    set: BTreeSet<(Instant, LeaseId)>,
}

impl DeadlineQueue {
    /// Files `id` under `at` (or nowhere, for `None`), moving it from `slot`.
    pub(crate) fn reschedule(&mut self, id: LeaseId, slot: &mut Option<Instant>, at: Option<Instant>) {
        if let Some(old) = slot.take() {
            self.set.remove(&(old, id));
        }
        if let Some(at) = at {
            self.set.insert((at, id));
            *slot = Some(at);
        }
    }

    /// Removes and returns up to `limit` entries filed at or before `now`,
    /// earliest first (ties by id).
    pub(crate) fn pop_due(&mut self, now: Instant, limit: usize) -> Vec<(Instant, LeaseId)> {
        let mut due = Vec::new();
        while due.len() < limit {
            match self.pop_next_due(now) {
                Some(entry) => due.push(entry),
                None => break,
            }
        }
        due
    }

    /// Removes and returns the earliest entry if it is filed at or before `now`.
    pub(crate) fn pop_next_due(&mut self, now: Instant) -> Option<(Instant, LeaseId)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    pub(crate) fn first(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Instant, LeaseId)> + '_ {
        self.set.iter().copied()
    }

    pub(crate) fn clear(&mut self) {
        self.set.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}
