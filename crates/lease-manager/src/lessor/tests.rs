use std::time::{Duration, Instant};

use super::*;
use crate::config::min_lease_ttl;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn primary(config: LessorConfig, now: Instant) -> Lessor {
    let mut l = Lessor::new(config);
    l.promote(now, Duration::ZERO);
    l
}

fn checkpointing(interval: Duration) -> LessorConfig {
    LessorConfig { checkpointing: true, checkpoint_interval: interval, ..LessorConfig::default() }
}

fn assert_consistent(l: &Lessor) {
    for (key, id) in &l.items {
        assert!(l.leases[id].keys.contains(key), "item {key:?} -> {id} missing from the lease");
    }
    for (id, lease) in &l.leases {
        for key in &lease.keys {
            assert_eq!(l.items.get(key), Some(id), "key {key:?} of {id} missing from items");
        }
        assert_eq!(lease.deadline.is_some(), l.primary);
        assert_eq!(lease.expiry_slot.is_some(), l.primary);
        if let (Some(slot), Some(deadline)) = (lease.expiry_slot, lease.deadline) {
            assert!(slot >= deadline);
        }
    }
    let queued = if l.primary { l.leases.len() } else { 0 };
    assert_eq!(l.expiry.len(), queued);
}

#[test]
fn error_messages_are_etcds() {
    assert_eq!(LeaseError::NotFound.to_string(), "etcdserver: requested lease not found");
    assert_eq!(LeaseError::Exists.to_string(), "etcdserver: lease already exists");
    assert_eq!(LeaseError::TtlTooLarge.to_string(), "etcdserver: too large lease TTL");
    assert_eq!(LeaseError::NotPrimary.to_string(), "not a primary lessor");
}

#[test]
fn min_lease_ttl_follows_etcd_arithmetic() {
    // etcd defaults: 10 ticks of 100 ms -> 1.5 s -> 2.
    assert_eq!(min_lease_ttl(10, ms(100)), 2);
    // (3 * 5) / 2 = 7 ticks (integer division) -> 0.7 s -> 1.
    assert_eq!(min_lease_ttl(5, ms(100)), 1);
    assert_eq!(min_lease_ttl(10, s(1)), 15);
    assert_eq!(min_lease_ttl(20, ms(100)), 3);
    assert_eq!(min_lease_ttl(0, ms(100)), 0);
    assert_eq!(LessorConfig::default().min_ttl, 2);
}

#[test]
fn grant_records_the_lease() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    let info = l.grant(7, 30, now).unwrap();
    assert_eq!(info, LeaseInfo { id: 7, ttl: 30, remaining_ttl: 0, deadline: None, keys: 0 });
    assert!(l.exists(7));
    assert!(!l.exists(8));
    assert_eq!(l.lookup(7), Some(info.clone()));
    assert_eq!(info.record(), LeaseRecord { id: 7, ttl: 30, remaining_ttl: 0 });
    assert_eq!(l.len(), 1);
    assert_consistent(&l);
}

#[test]
fn grant_errors_in_etcds_order() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    assert_eq!(l.grant(NO_LEASE, 10, now), Err(LeaseError::NotFound));
    assert_eq!(l.grant(1, MAX_LEASE_TTL + 1, now), Err(LeaseError::TtlTooLarge));
    assert_eq!(l.grant(1, MAX_LEASE_TTL, now).unwrap().ttl, MAX_LEASE_TTL);
    assert_eq!(l.grant(1, 10, now), Err(LeaseError::Exists));
    // Too large is checked before existence, as in etcd.
    assert_eq!(l.grant(1, i64::MAX, now), Err(LeaseError::TtlTooLarge));
    // Negative ids are legal at this layer.
    assert!(l.grant(-5, 10, now).is_ok());
}

#[test]
fn grant_raises_ttl_to_the_minimum() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig { min_ttl: 5, ..LessorConfig::default() });
    assert_eq!(l.grant(1, 1, now).unwrap().ttl, 5);
    assert_eq!(l.grant(2, -3, now).unwrap().ttl, 5);
    assert_eq!(l.grant(3, 0, now).unwrap().ttl, 5);
    assert_eq!(l.grant(4, 6, now).unwrap().ttl, 6);
}

#[test]
fn primary_grant_starts_the_clock() {
    let now = Instant::now();
    let mut l = primary(LessorConfig::default(), now);
    let info = l.grant(1, 10, now + s(3)).unwrap();
    assert_eq!(info.deadline, Some(now + s(13)));
    assert_eq!(l.next_expiry(), Some(now + s(13)));
    assert_consistent(&l);
}

#[test]
fn revoke_returns_sorted_keys_and_forgets_them() {
    let now = Instant::now();
    let mut l = primary(LessorConfig::default(), now);
    l.grant(1, 10, now).unwrap();
    l.grant(2, 10, now).unwrap();
    for key in [&b"zeta"[..], b"alpha", b"mid"] {
        l.attach(1, key).unwrap();
    }
    l.attach(2, b"other").unwrap();
    assert_eq!(l.revoke(1).unwrap(), vec![b"alpha".to_vec(), b"mid".to_vec(), b"zeta".to_vec()]);
    assert_eq!(l.lease_of(b"alpha"), None);
    assert_eq!(l.lease_of(b"other"), Some(2));
    assert!(!l.exists(1));
    assert_eq!(l.revoke(1), Err(LeaseError::NotFound));
    assert_eq!(l.revoke(NO_LEASE), Err(LeaseError::NotFound));
    // Gone from the expiry queue too.
    assert_eq!(l.expired(now + s(60), 10), vec![2]);
    assert_consistent(&l);
}

#[test]
fn attach_moves_keys_and_detach_is_precise() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    assert_eq!(l.attach(1, b"k"), Err(LeaseError::NotFound));
    l.grant(1, 10, now).unwrap();
    l.grant(2, 10, now).unwrap();
    l.attach(1, b"k").unwrap();
    l.attach(1, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), Some(1));
    assert_eq!(l.lookup(1).unwrap().keys, 1);

    l.attach(2, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), Some(2));
    assert_eq!(l.keys(1), Some(vec![]));
    assert_eq!(l.keys(2), Some(vec![b"k".to_vec()]));

    // Detaching from a lease that does not hold the key changes nothing.
    l.detach(1, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), Some(2));
    assert_eq!(l.detach(3, b"k"), Err(LeaseError::NotFound));
    l.detach(2, b"k").unwrap();
    assert_eq!(l.lease_of(b"k"), None);
    assert_eq!(l.keys(2), Some(vec![]));
    assert_eq!(l.keys(3), None);
    assert_consistent(&l);
}

#[test]
fn renew_on_the_primary_only() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    l.grant(1, 10, now).unwrap();
    assert_eq!(l.renew(1, now), Err(LeaseError::NotPrimary));
    assert_eq!(l.renew(9, now), Err(LeaseError::NotPrimary));
    l.promote(now, Duration::ZERO);
    assert_eq!(l.renew(9, now), Err(LeaseError::NotFound));
    assert_eq!(l.renew(1, now + s(4)), Ok(10));
    assert_eq!(l.lookup(1).unwrap().deadline, Some(now + s(14)));
    assert!(l.expired(now + s(13), 10).is_empty());
    assert_eq!(l.expired(now + s(14), 10), vec![1]);
    assert_consistent(&l);
}

#[test]
fn renew_refuses_an_expired_lease() {
    let now = Instant::now();
    let mut l = primary(LessorConfig::default(), now);
    l.grant(1, 10, now).unwrap();
    assert_eq!(l.renew(1, now + s(10)), Err(LeaseError::Expired));
    assert_eq!(l.renew(1, now + s(11)), Err(LeaseError::Expired));
    // The pending revoke, once applied, turns it into NotFound.
    l.revoke(1).unwrap();
    assert_eq!(l.renew(1, now + s(11)), Err(LeaseError::NotFound));
}

#[test]
fn time_to_live_truncates_like_etcd() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    l.grant(1, 10, now).unwrap();
    assert_eq!(l.time_to_live(1, now, false), Err(LeaseError::NotPrimary));
    l.promote(now, Duration::ZERO);
    assert_eq!(l.time_to_live(2, now, false), Err(LeaseError::NotFound));
    l.attach(1, b"b").unwrap();
    l.attach(1, b"a").unwrap();

    let ttl = l.time_to_live(1, now + ms(500), true).unwrap();
    assert_eq!(ttl, TimeToLive { id: 1, granted_ttl: 10, ttl: 9, keys: vec![b"a".to_vec(), b"b".to_vec()] });
    assert!(l.time_to_live(1, now, false).unwrap().keys.is_empty());
    assert_eq!(l.time_to_live(1, now, false).unwrap().ttl, 10);
    assert_eq!(l.time_to_live(1, now + ms(10_500), false).unwrap().ttl, 0);
    assert_eq!(l.time_to_live(1, now + ms(11_500), false).unwrap().ttl, -1);
}

#[test]
fn leases_are_listed_by_deadline_on_the_primary() {
    let now = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    l.grant(3, 30, now).unwrap();
    l.grant(1, 50, now).unwrap();
    l.grant(2, 10, now).unwrap();
    assert_eq!(l.leases(), vec![1, 2, 3]);
    l.promote(now, Duration::ZERO);
    assert_eq!(l.leases(), vec![2, 3, 1]);
}

#[test]
fn promotion_refreshes_every_lease() {
    let t0 = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    l.grant(1, 10, t0).unwrap();
    l.grant(2, 100, t0).unwrap();
    assert_eq!(l.lookup(1).unwrap().deadline, None);
    assert!(l.expired(t0 + s(1000), 10).is_empty(), "a follower never expires leases");

    let t1 = t0 + s(500);
    l.promote(t1, s(1));
    assert!(l.is_primary());
    assert_eq!(l.lookup(1).unwrap().deadline, Some(t1 + s(11)));
    assert_eq!(l.lookup(2).unwrap().deadline, Some(t1 + s(101)));
    assert_consistent(&l);
}

#[test]
fn promotion_resumes_from_the_checkpoint() {
    let t0 = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    l.grant(1, 600, t0).unwrap();
    l.grant(2, 600, t0).unwrap();
    l.checkpoint(1, 42);
    l.checkpoint(99, 42); // unknown: ignored
    assert_eq!(l.lookup(1).unwrap().remaining_ttl, 42);
    l.promote(t0, s(1));
    assert_eq!(l.lookup(1).unwrap().deadline, Some(t0 + s(43)));
    assert_eq!(l.lookup(2).unwrap().deadline, Some(t0 + s(601)));
    // A renew gives the full TTL regardless.
    assert_eq!(l.renew(1, t0 + s(10)), Ok(600));
    assert_eq!(l.lookup(1).unwrap().deadline, Some(t0 + s(610)));
}

#[test]
fn demotion_drops_deadlines_and_promotion_restores_them() {
    let t0 = Instant::now();
    let mut l = primary(LessorConfig::default(), t0);
    l.grant(1, 10, t0).unwrap();
    l.attach(1, b"k").unwrap();
    l.demote();
    assert!(!l.is_primary());
    assert_eq!(l.lookup(1).unwrap().deadline, None);
    assert_eq!(l.next_expiry(), None);
    assert!(l.expired(t0 + s(100), 10).is_empty());
    assert_eq!(l.renew(1, t0), Err(LeaseError::NotPrimary));
    assert_eq!(l.lease_of(b"k"), Some(1));
    assert_consistent(&l);

    l.promote(t0 + s(100), Duration::ZERO);
    assert_eq!(l.lookup(1).unwrap().deadline, Some(t0 + s(110)));
    assert_consistent(&l);
}

#[test]
fn expired_in_deadline_order_with_limit_and_retry() {
    let t0 = Instant::now();
    let config = LessorConfig { expired_retry_interval: s(3), ..LessorConfig::default() };
    let mut l = primary(config, t0);
    l.grant(10, 5, t0).unwrap();
    l.grant(20, 3, t0).unwrap();
    l.grant(30, 4, t0).unwrap();
    l.grant(40, 100, t0).unwrap();

    assert!(l.expired(t0 + ms(2999), 10).is_empty());
    assert_eq!(l.expired(t0 + s(3), 10), vec![20]);
    let t = t0 + s(10);
    assert_eq!(l.expired(t, 2), vec![30, 10]);
    // 20 was handed out at t0+3 s: due again at t0+6 s.
    assert_eq!(l.expired(t, 2), vec![20]);
    assert!(l.expired(t, 2).is_empty());
    assert!(l.expired(t + ms(2999), 10).is_empty());
    // All three retried together; ties in id order.
    assert_eq!(l.expired(t + s(3), 10), vec![10, 20, 30]);
    assert_eq!(l.expired(t + s(3), 0), Vec::<LeaseId>::new());
    l.revoke(20).unwrap();
    l.revoke(30).unwrap();
    assert_eq!(l.expired(t + s(6), 10), vec![10]);
    assert_eq!(l.expired(t0 + s(100), 10), vec![10, 40]);
    assert_consistent(&l);
}

#[test]
fn renew_after_retry_scheduling_moves_the_lease_back() {
    let t0 = Instant::now();
    let mut l = primary(LessorConfig::default(), t0);
    l.grant(1, 5, t0).unwrap();
    l.grant(2, 5, t0 + s(1)).unwrap();
    // Renewed before expiry: the old deadline slot must be gone.
    assert_eq!(l.renew(1, t0 + s(4)), Ok(5));
    assert_eq!(l.expired(t0 + s(8), 10), vec![2]);
    assert_eq!(l.expired(t0 + s(9), 10), vec![1]);
    assert_consistent(&l);
}

#[test]
fn checkpoints_every_interval_rounded_up() {
    let t0 = Instant::now();
    let mut l = primary(checkpointing(s(60)), t0);
    l.grant(1, 300, t0).unwrap();
    l.grant(2, 60, t0).unwrap(); // not longer than the interval: never checkpointed
    assert_eq!(l.next_checkpoint(), Some(t0 + s(60)));
    assert!(l.checkpoints_due(t0 + ms(59_999), 10).is_empty());
    assert_eq!(l.checkpoints_due(t0 + ms(60_500), 10), vec![(1, 240)]);
    assert!(l.checkpoints_due(t0 + s(61), 10).is_empty());
    assert_eq!(l.next_checkpoint(), Some(t0 + ms(120_500)));
    // Applying it changes the record only; the primary's deadline stays.
    l.checkpoint(1, 240);
    assert_eq!(l.lookup(1).unwrap().deadline, Some(t0 + s(300)));
    assert_eq!(l.checkpoints_due(t0 + s(121), 10), vec![(1, 179)]);
}

#[test]
fn checkpoint_skips_full_and_expired_leases_but_keeps_their_turn() {
    let t0 = Instant::now();
    let mut l = primary(checkpointing(s(60)), t0);
    l.grant(1, 300, t0).unwrap();
    l.grant(2, 100, t0).unwrap();
    l.renew(1, t0 + s(60)).unwrap();
    // Lease 1 was just renewed (full TTL left), lease 2 is fine.
    assert_eq!(l.checkpoints_due(t0 + s(60), 10), vec![(2, 40)]);
    // Lease 2 expires at t0+100 s; at t0+120 s it is skipped, lease 1 is not.
    assert_eq!(l.checkpoints_due(t0 + s(120), 10), vec![(1, 240)]);
}

#[test]
fn checkpoint_limit_counts_emitted_entries() {
    let t0 = Instant::now();
    let mut l = primary(checkpointing(s(60)), t0);
    for id in 1..=5 {
        l.grant(id, 300, t0).unwrap();
    }
    assert_eq!(l.checkpoints_due(t0 + s(61), 2), vec![(1, 239), (2, 239)]);
    assert_eq!(l.checkpoints_due(t0 + s(61), 10), vec![(3, 239), (4, 239), (5, 239)]);
    assert!(l.checkpoints_due(t0 + s(61), 0).is_empty());
}

#[test]
fn renew_after_a_checkpoint_queues_a_reset() {
    let t0 = Instant::now();
    let mut l = primary(checkpointing(s(60)), t0);
    l.grant(1, 300, t0).unwrap();
    l.grant(2, 300, t0).unwrap();
    l.checkpoint(1, 200);
    l.renew(1, t0 + s(1)).unwrap();
    l.renew(2, t0 + s(1)).unwrap(); // nothing checkpointed: no reset
    assert_eq!(l.checkpoints_due(t0 + s(1), 10), vec![(1, 0)]);
    assert!(l.checkpoints_due(t0 + s(1), 10).is_empty());
    l.checkpoint(1, 0);
    assert_eq!(l.lookup(1).unwrap().remaining_ttl, 0);

    // Applied before the leader got round to it: nothing to reset any more.
    l.checkpoint(2, 100);
    l.renew(2, t0 + s(2)).unwrap();
    l.checkpoint(2, 0);
    assert!(l.checkpoints_due(t0 + s(2), 10).is_empty());
}

#[test]
fn no_checkpoints_unless_enabled_and_primary() {
    let t0 = Instant::now();
    let mut l = primary(LessorConfig { checkpoint_interval: s(60), ..LessorConfig::default() }, t0);
    l.grant(1, 300, t0).unwrap();
    l.checkpoint(1, 200);
    l.renew(1, t0).unwrap();
    assert!(l.checkpoints_due(t0 + s(3600), 10).is_empty());
    assert_eq!(l.next_checkpoint(), None);

    let mut l = Lessor::new(checkpointing(s(60)));
    l.grant(1, 300, t0).unwrap();
    assert!(l.checkpoints_due(t0 + s(3600), 10).is_empty());
    l.promote(t0, Duration::ZERO);
    l.demote();
    assert!(l.checkpoints_due(t0 + s(3600), 10).is_empty());
}

#[test]
fn revoked_leases_leave_every_schedule() {
    let t0 = Instant::now();
    let mut l = primary(checkpointing(s(60)), t0);
    l.grant(1, 300, t0).unwrap();
    l.checkpoint(1, 200);
    l.renew(1, t0).unwrap();
    l.revoke(1).unwrap();
    assert!(l.checkpoints_due(t0 + s(3600), 10).is_empty());
    assert!(l.expired(t0 + s(3600), 10).is_empty());
    assert_eq!(l.next_checkpoint(), None);
    assert_eq!(l.next_expiry(), None);
}

#[test]
fn promotion_spreads_a_pile_up_like_etcd() {
    // revoke_rate 4 -> at most 3 expiries per second.
    let t0 = Instant::now();
    let mut l = Lessor::new(LessorConfig { revoke_rate: 4, ..LessorConfig::default() });
    for id in 1..=8 {
        l.grant(id, 10, t0).unwrap();
    }
    l.grant(9, 100, t0).unwrap();
    l.promote(t0, s(1));
    let deadline = |id| l.lookup(id).unwrap().deadline.unwrap() - t0;
    for id in 1..=3 {
        assert_eq!(deadline(id), s(11));
    }
    // delay = 1 s * expires / 3, truncated to nanoseconds, on top of extend + TTL.
    assert_eq!(deadline(4), s(11) + Duration::from_nanos(1_333_333_333));
    assert_eq!(deadline(5), s(11) + Duration::from_nanos(1_666_666_666));
    assert_eq!(deadline(6), s(11) + s(2));
    assert_eq!(deadline(7), s(11) + Duration::from_nanos(2_333_333_333));
    assert_eq!(deadline(8), s(11) + Duration::from_nanos(2_666_666_666));
    assert_eq!(deadline(9), s(101));
    assert_consistent(&l);
}

#[test]
fn no_spreading_below_the_revoke_rate() {
    let t0 = Instant::now();
    let mut l = Lessor::new(LessorConfig { revoke_rate: 10, ..LessorConfig::default() });
    for id in 1..=9 {
        l.grant(id, 10, t0).unwrap();
    }
    l.promote(t0, Duration::ZERO);
    assert!((1..=9).all(|id| l.lookup(id).unwrap().deadline == Some(t0 + s(10))));
}

#[test]
fn restore_rebuilds_a_demoted_lessor() {
    let t0 = Instant::now();
    let config = LessorConfig { min_ttl: 5, ..LessorConfig::default() };
    let records = [
        LeaseRecord { id: 1, ttl: 60, remaining_ttl: 20 },
        LeaseRecord { id: 2, ttl: 1, remaining_ttl: 0 },
        LeaseRecord { id: NO_LEASE, ttl: 60, remaining_ttl: 0 },
    ];
    let keys = [(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"orphan".to_vec(), 3)];
    let mut l = Lessor::restore(config, records, keys);
    assert!(!l.is_primary());
    assert_eq!(l.leases(), vec![1, 2]);
    assert_eq!(l.lookup(1).unwrap().record(), LeaseRecord { id: 1, ttl: 60, remaining_ttl: 20 });
    assert_eq!(l.lookup(2).unwrap().ttl, 5);
    assert_eq!(l.lease_of(b"a"), Some(1));
    assert_eq!(l.lease_of(b"b"), Some(2));
    assert_eq!(l.lease_of(b"orphan"), None);
    assert_consistent(&l);

    l.promote(t0, Duration::ZERO);
    assert_eq!(l.lookup(1).unwrap().deadline, Some(t0 + s(20)));
    assert_eq!(l.lookup(2).unwrap().deadline, Some(t0 + s(5)));
}

#[test]
fn the_largest_ttl_does_not_overflow() {
    let t0 = Instant::now();
    let mut l = primary(checkpointing(s(60)), t0);
    l.grant(1, MAX_LEASE_TTL, t0).unwrap();
    assert_eq!(l.renew(1, t0 + s(1)), Ok(MAX_LEASE_TTL));
    assert_eq!(l.time_to_live(1, t0 + s(1), false).unwrap().ttl, MAX_LEASE_TTL);
    assert_eq!(l.checkpoints_due(t0 + s(61), 10), vec![(1, MAX_LEASE_TTL - 60)]);
    l.promote(t0, s(1));
    assert!(l.expired(t0 + s(3600), 10).is_empty());
}
