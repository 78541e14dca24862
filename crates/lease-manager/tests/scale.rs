//! A million leases: grants and keep-alives stay O(log n) each, expiry reads
//! only the due prefix, and a leader change over all of them is bearable.
//! (This crate is built without optimisation in tests, so the numbers printed
//! are pessimistic by an order of magnitude.)

use std::time::{Duration, Instant};

use keel_lease_manager::{LeaseId, Lessor, LessorConfig};

const N: LeaseId = 1_000_000;

fn ttl_of(id: LeaseId) -> i64 {
    10 + id % 50
}

#[test]
fn a_million_leases() {
    let s = Duration::from_secs;
    let t0 = Instant::now();
    let mut l = Lessor::new(LessorConfig::default());
    l.promote(t0, Duration::ZERO);

    let clock = Instant::now();
    for id in 1..=N {
        l.grant(id, ttl_of(id), t0).unwrap();
    }
    eprintln!("grant x{N}: {:?}", clock.elapsed());

    let clock = Instant::now();
    for id in 1..=N {
        assert_eq!(l.renew(id, t0 + s(1)), Ok(ttl_of(id)));
    }
    eprintln!("renew x{N}: {:?}", clock.elapsed());

    // TTL 10 leases (every 50th) now expire at t0 + 11 s, nothing earlier.
    assert!(l.expired(t0 + s(10), 500).is_empty());
    let clock = Instant::now();
    let first = l.expired(t0 + s(11), 500);
    eprintln!("expired(limit 500): {:?}", clock.elapsed());
    assert_eq!(first.len(), 500);
    assert!(first.iter().all(|id| ttl_of(*id) == 10));
    assert!(first.windows(2).all(|w| w[0] < w[1]), "ties come out in id order");
    assert_eq!(l.expired(t0 + s(11), N as usize).len(), (N / 50) as usize - 500);

    let clock = Instant::now();
    l.demote();
    l.promote(t0 + s(100), s(1));
    eprintln!("demote + promote (with spreading): {:?}", clock.elapsed());
    // Spreading keeps every one-second window at 750 expiries or fewer.
    let mut per_second = std::collections::HashMap::<u64, usize>::new();
    for id in 1..=N {
        let deadline = l.lookup(id).unwrap().deadline.unwrap();
        *per_second.entry((deadline - t0).as_secs()).or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap();
    eprintln!("busiest second after promotion: {busiest} expiries");
    assert!(busiest <= 750, "{busiest} expiries in one second");
}
