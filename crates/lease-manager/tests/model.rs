//! The lessor against a deliberately naive model: plain maps, every question
//! answered by a full scan and a sort. Random operation sequences must give
//! the same answers and leave the same visible state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use keel_lease_manager::{LeaseError, LeaseId, LeaseInfo, Lessor, LessorConfig, TimeToLive};
use proptest::prelude::*;

const MIN_TTL: i64 = 2;
const INTERVAL_MS: u64 = 5_000;
const RETRY_MS: u64 = 3_000;

#[derive(Clone, Debug)]
enum Op {
    Grant(LeaseId, i64),
    Revoke(LeaseId),
    Renew(LeaseId),
    Attach(LeaseId, u8),
    Detach(LeaseId, u8),
    Checkpoint(LeaseId, i64),
    Promote(u64),
    Demote,
    Advance(u64),
    Expired(usize),
    CheckpointsDue(usize),
    TimeToLive(LeaseId),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..6i64;
    prop_oneof![
        3 => (id.clone(), -1..12i64).prop_map(|(id, ttl)| Op::Grant(id, ttl)),
        1 => id.clone().prop_map(Op::Revoke),
        3 => id.clone().prop_map(Op::Renew),
        2 => (id.clone(), 0..4u8).prop_map(|(id, k)| Op::Attach(id, k)),
        1 => (id.clone(), 0..4u8).prop_map(|(id, k)| Op::Detach(id, k)),
        1 => (id.clone(), 0..12i64).prop_map(|(id, r)| Op::Checkpoint(id, r)),
        1 => (0..2_000u64).prop_map(Op::Promote),
        1 => Just(Op::Demote),
        // Whole half-seconds too, so deadlines are hit exactly.
        2 => (0..4_000u64).prop_map(Op::Advance),
        2 => (0..8u64).prop_map(|n| Op::Advance(n * 500)),
        2 => (0..4usize).prop_map(Op::Expired),
        2 => (0..4usize).prop_map(Op::CheckpointsDue),
        1 => id.prop_map(Op::TimeToLive),
    ]
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', k]
}

#[derive(Debug, Default)]
struct MLease {
    ttl: i64,
    remaining: i64,
    deadline: Option<u64>,
    queued: Option<u64>,
    checkpoint_at: Option<u64>,
    keys: BTreeSet<Vec<u8>>,
}

impl MLease {
    fn resume_ttl(&self) -> i64 {
        if self.remaining > 0 {
            self.remaining
        } else {
            self.ttl
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    primary: bool,
    leases: BTreeMap<LeaseId, MLease>,
    items: BTreeMap<Vec<u8>, LeaseId>,
    resets: BTreeSet<LeaseId>,
}

fn ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap() * 1000
}

impl Model {
    fn checkpoint_at(&self, ttl: i64) -> Option<u64> {
        (ms(ttl) > INTERVAL_MS).then_some(self.now + INTERVAL_MS)
    }

    fn grant(&mut self, id: LeaseId, ttl: i64) -> Result<i64, LeaseError> {
        if id == 0 {
            return Err(LeaseError::NotFound);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(MIN_TTL);
        let mut lease = MLease { ttl, ..MLease::default() };
        if self.primary {
            lease.deadline = Some(self.now + ms(ttl));
            lease.queued = lease.deadline;
            lease.checkpoint_at = self.checkpoint_at(ttl);
        }
        self.leases.insert(id, lease);
        Ok(ttl)
    }

    fn revoke(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>, LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        self.items.retain(|_, owner| *owner != id);
        self.resets.remove(&id);
        Ok(lease.keys.into_iter().collect())
    }

    fn renew(&mut self, id: LeaseId) -> Result<i64, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let now = self.now;
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if lease.deadline.unwrap() <= now {
            return Err(LeaseError::Expired);
        }
        lease.deadline = Some(now + ms(lease.ttl));
        lease.queued = lease.deadline;
        if lease.remaining > 0 {
            self.resets.insert(id);
        }
        Ok(lease.ttl)
    }

    fn attach(&mut self, id: LeaseId, k: Vec<u8>) -> Result<(), LeaseError> {
        if !self.leases.contains_key(&id) {
            return Err(LeaseError::NotFound);
        }
        for lease in self.leases.values_mut() {
            lease.keys.remove(&k);
        }
        self.leases.get_mut(&id).unwrap().keys.insert(k.clone());
        self.items.insert(k, id);
        Ok(())
    }

    fn detach(&mut self, id: LeaseId, k: Vec<u8>) -> Result<(), LeaseError> {
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        lease.keys.remove(&k);
        if self.items.get(&k) == Some(&id) {
            self.items.remove(&k);
        }
        Ok(())
    }

    fn checkpoint(&mut self, id: LeaseId, remaining: i64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.remaining = remaining;
            if remaining <= 0 {
                self.resets.remove(&id);
            }
        }
    }

    fn promote(&mut self, extend: u64) {
        self.primary = true;
        let now = self.now;
        for lease in self.leases.values_mut() {
            lease.deadline = Some(now + extend + ms(lease.resume_ttl()));
            lease.queued = lease.deadline;
            lease.checkpoint_at = (ms(lease.ttl) > INTERVAL_MS).then_some(now + INTERVAL_MS);
        }
    }

    fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.deadline = None;
            lease.queued = None;
            lease.checkpoint_at = None;
        }
        self.resets.clear();
    }

    fn expired(&mut self, limit: usize) -> Vec<LeaseId> {
        if !self.primary {
            return Vec::new();
        }
        let mut due: Vec<(u64, LeaseId)> =
            self.leases.iter().filter_map(|(&id, l)| l.queued.filter(|&q| q <= self.now).map(|q| (q, id))).collect();
        due.sort();
        due.truncate(limit);
        for &(_, id) in &due {
            self.leases.get_mut(&id).unwrap().queued = Some(self.now + RETRY_MS);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    fn checkpoints_due(&mut self, limit: usize) -> Vec<(LeaseId, i64)> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < limit {
            let Some(id) = self.resets.pop_first() else {
                break;
            };
            if self.leases.get(&id).is_some_and(|l| l.remaining > 0) {
                out.push((id, 0));
            }
        }
        let mut due: Vec<(u64, LeaseId)> = self
            .leases
            .iter()
            .filter_map(|(&id, l)| l.checkpoint_at.filter(|&c| c <= self.now).map(|c| (c, id)))
            .collect();
        due.sort();
        let now = self.now;
        for (_, id) in due {
            if out.len() >= limit {
                break;
            }
            let lease = self.leases.get_mut(&id).unwrap();
            lease.checkpoint_at = Some(now + INTERVAL_MS);
            let deadline = lease.deadline.unwrap();
            if deadline > now {
                let remaining = i64::try_from((deadline - now).div_ceil(1000)).unwrap();
                if remaining < lease.ttl {
                    out.push((id, remaining));
                }
            }
        }
        out
    }

    fn time_to_live(&self, id: LeaseId) -> Result<(i64, i64, Vec<Vec<u8>>), LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let lease = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        let left = lease.deadline.unwrap() as i64 - self.now as i64;
        Ok((lease.ttl, left / 1000, lease.keys.iter().cloned().collect()))
    }
}

fn config() -> LessorConfig {
    LessorConfig {
        min_ttl: MIN_TTL,
        checkpointing: true,
        checkpoint_interval: Duration::from_millis(INTERVAL_MS),
        expired_retry_interval: Duration::from_millis(RETRY_MS),
        ..LessorConfig::default()
    }
}

fn check_state(l: &Lessor, m: &Model, base: Instant) {
    let at = |t: Option<u64>| t.map(|t| base + Duration::from_millis(t));
    assert_eq!(l.is_primary(), m.primary);
    assert_eq!(l.len(), m.leases.len());
    let mut order: Vec<(Option<u64>, LeaseId)> = m.leases.iter().map(|(&id, l)| (l.deadline, id)).collect();
    order.sort();
    assert_eq!(l.leases(), order.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
    for id in 0..6 {
        let expected = m.leases.get(&id).map(|ml| LeaseInfo {
            id,
            ttl: ml.ttl,
            remaining_ttl: ml.remaining,
            deadline: at(ml.deadline),
            keys: ml.keys.len(),
        });
        assert_eq!(l.lookup(id), expected);
        assert_eq!(l.exists(id), m.leases.contains_key(&id));
        assert_eq!(l.keys(id), m.leases.get(&id).map(|ml| ml.keys.iter().cloned().collect()));
    }
    for k in 0..4 {
        assert_eq!(l.lease_of(&key(k)), m.items.get(&key(k)).copied());
    }
    assert_eq!(l.next_expiry(), at(m.leases.values().filter_map(|l| l.queued).min()));
    assert_eq!(l.next_checkpoint(), at(m.leases.values().filter_map(|l| l.checkpoint_at).min()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lessor_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let base = Instant::now();
        let mut l = Lessor::new(config());
        let mut m = Model::default();
        for op in ops {
            let now = base + Duration::from_millis(m.now);
            match op {
                Op::Grant(id, ttl) => {
                    let got = l.grant(id, ttl, now).map(|info| info.ttl);
                    prop_assert_eq!(got, m.grant(id, ttl));
                }
                Op::Revoke(id) => prop_assert_eq!(l.revoke(id), m.revoke(id)),
                Op::Renew(id) => prop_assert_eq!(l.renew(id, now), m.renew(id)),
                Op::Attach(id, k) => prop_assert_eq!(l.attach(id, &key(k)), m.attach(id, key(k))),
                Op::Detach(id, k) => prop_assert_eq!(l.detach(id, &key(k)), m.detach(id, key(k))),
                Op::Checkpoint(id, r) => {
                    l.checkpoint(id, r);
                    m.checkpoint(id, r);
                }
                Op::Promote(extend) => {
                    l.promote(now, Duration::from_millis(extend));
                    m.promote(extend);
                }
                Op::Demote => {
                    l.demote();
                    m.demote();
                }
                Op::Advance(d) => m.now += d,
                Op::Expired(limit) => prop_assert_eq!(l.expired(now, limit), m.expired(limit)),
                Op::CheckpointsDue(limit) => {
                    prop_assert_eq!(l.checkpoints_due(now, limit), m.checkpoints_due(limit));
                }
                Op::TimeToLive(id) => {
                    let got = l
                        .time_to_live(id, now, true)
                        .map(|TimeToLive { granted_ttl, ttl, keys, .. }| (granted_ttl, ttl, keys));
                    prop_assert_eq!(got, m.time_to_live(id));
                }
            }
            check_state(&l, &m, base);
        }
    }
}
