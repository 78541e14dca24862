//! etcd's lease series (`server/lease/metrics.go`), under etcd 3.6's names,
//! help texts and buckets, plus the expired-leases counter etcd keeps in its
//! server package (`etcd_debugging_server_lease_expired_total`), since here
//! it is the lessor that knows a revoked lease had expired.
//!
//! Each is one atomic add (the TTL histogram one more) on the call it
//! counts; the lessor stays free of clocks and registries.

use keel_metrics::prometheus::core::Collector;
use keel_metrics::prometheus::{Histogram, IntCounter};
use keel_metrics::{exponential_buckets, histogram, int_counter, Measures};

/// The lease series of a [`Lessor`](crate::Lessor); see
/// [`Lessor::metrics`](crate::Lessor::metrics). Clones share the series, so
/// a lessor rebuilt after a snapshot can go on with its predecessor's
/// ([`Lessor::with_metrics`](crate::Lessor::with_metrics)).
#[derive(Clone)]
pub struct LeaseMetrics {
    granted: IntCounter,
    revoked: IntCounter,
    renewed: IntCounter,
    ttl: Histogram,
    expired: IntCounter,
}

impl std::fmt::Debug for LeaseMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseMetrics").finish_non_exhaustive()
    }
}

impl Default for LeaseMetrics {
    fn default() -> Self {
        LeaseMetrics::new()
    }
}

impl LeaseMetrics {
    pub fn new() -> LeaseMetrics {
        LeaseMetrics {
            granted: int_counter("etcd_debugging_lease_granted_total", "The total number of granted leases."),
            revoked: int_counter("etcd_debugging_lease_revoked_total", "The total number of revoked leases."),
            renewed: int_counter(
                "etcd_debugging_lease_renewed_total",
                "The number of renewed leases seen by the leader.",
            ),
            // 1 second to about 3 months.
            ttl: histogram(
                "etcd_debugging_lease_ttl_total",
                "Bucketed histogram of lease TTLs.",
                exponential_buckets(1.0, 2.0, 24),
            ),
            expired: int_counter("etcd_debugging_server_lease_expired_total", "The total number of expired leases."),
        }
    }

    /// A grant was applied; `ttl` is the granted TTL after raising it to
    /// the minimum, as etcd observes it.
    pub(crate) fn granted(&self, ttl: i64) {
        self.granted.inc();
        self.ttl.observe(ttl as f64);
    }

    pub(crate) fn revoked(&self, had_expired: bool) {
        self.revoked.inc();
        if had_expired {
            self.expired.inc();
        }
    }

    pub(crate) fn renewed(&self) {
        self.renewed.inc();
    }
}

impl Measures for LeaseMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.granted.clone()),
            Box::new(self.revoked.clone()),
            Box::new(self.renewed.clone()),
            Box::new(self.ttl.clone()),
            Box::new(self.expired.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use keel_metrics::Metrics;

    use super::*;
    use crate::{LeaseError, Lessor, LessorConfig};

    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("{name} ");
        let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
        line[prefix.len()..].parse().unwrap()
    }

    #[test]
    fn grants_renewals_revokes_and_expiries_are_counted() {
        let t0 = Instant::now();
        let mut lessor = Lessor::new(LessorConfig::default());
        lessor.promote(t0, Duration::ZERO);
        let metrics = Metrics::new().unwrap();
        lessor.metrics().register(metrics.registry()).unwrap();

        lessor.grant(1, 1, t0).unwrap(); // raised to the 2 s minimum
        lessor.grant(2, 100, t0).unwrap();
        assert_eq!(lessor.grant(2, 100, t0), Err(LeaseError::Exists));
        lessor.renew(2, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(lessor.expired(t0 + Duration::from_secs(3), 10), vec![1]);
        lessor.revoke(1).unwrap();
        lessor.revoke(2).unwrap();
        assert_eq!(lessor.revoke(2), Err(LeaseError::NotFound));

        let text = metrics.text().unwrap();
        for (name, kind) in [
            ("etcd_debugging_lease_granted_total", "counter"),
            ("etcd_debugging_lease_revoked_total", "counter"),
            ("etcd_debugging_lease_renewed_total", "counter"),
            ("etcd_debugging_lease_ttl_total", "histogram"),
            ("etcd_debugging_server_lease_expired_total", "counter"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} is a {kind}:\n{text}");
        }
        assert_eq!(value(&text, "etcd_debugging_lease_granted_total"), 2.0);
        assert_eq!(value(&text, "etcd_debugging_lease_renewed_total"), 1.0);
        assert_eq!(value(&text, "etcd_debugging_lease_revoked_total"), 2.0);
        assert_eq!(value(&text, "etcd_debugging_server_lease_expired_total"), 1.0, "lease 1 only");
        assert_eq!(value(&text, "etcd_debugging_lease_ttl_total_sum"), 102.0);
        assert!(text.contains("etcd_debugging_lease_ttl_total_bucket{le=\"2\"} 1\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_ttl_total_bucket{le=\"64\"} 1\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_ttl_total_bucket{le=\"128\"} 2\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_ttl_total_bucket{le=\"8388608\"} 2\n"), "{text}");
    }

    #[test]
    fn a_rebuilt_lessor_goes_on_with_the_same_series() {
        let mut lessor = Lessor::new(LessorConfig::default());
        lessor.grant(1, 10, Instant::now()).unwrap();
        let metrics = Metrics::new().unwrap();
        lessor.metrics().register(metrics.registry()).unwrap();
        let mut rebuilt = Lessor::restore(LessorConfig::default(), [], []).with_metrics(lessor.metrics().clone());
        rebuilt.grant(2, 10, Instant::now()).unwrap();
        assert_eq!(value(&metrics.text().unwrap(), "etcd_debugging_lease_granted_total"), 2.0);
    }
}
