//! The proxy's series: etcd's `etcd_grpc_proxy_*` names, so dashboards
//! built for etcd's proxy work, and Keel's own beside them. The cache
//! series are gauges, as etcd registers them, and stay at zero without
//! `--cache-prefix`.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) watchers_coalescing: IntGauge,
    pub(crate) events_coalescing: IntCounter,
    pub(crate) watchers: IntGauge,
    pub(crate) watch_resumes: IntCounter,
    pub(crate) watch_detached: IntCounter,
    pub(crate) watch_rejoined: IntCounter,
    pub(crate) watch_history_joins: IntCounter,
    pub(crate) keepalives: IntCounter,
    /// Requests `--read-only` or `--allow-prefix` refused, by `reason`.
    pub(crate) refused: IntCounterVec,
    pub(crate) endpoint_syncs: IntCounter,
    pub(crate) registrations: IntCounter,
    pub(crate) services: IntGauge,
    pub(crate) services_passing: IntGauge,
    pub(crate) service_puts: IntCounter,
    pub(crate) service_checks: ServiceChecks,
    /// Ranges answered from the cache (`cache.rs`).
    pub(crate) cache_hits: IntGauge,
    /// Ranges on a cached prefix forwarded upstream.
    pub(crate) cache_misses: IntGauge,
    /// Answers held.
    pub(crate) cache_keys: IntGauge,
    /// Bytes they are counted as (bounded by `--cache-max-bytes`).
    pub(crate) cache_bytes: IntGauge,
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(Metrics {
            cache_hits: gauge("etcd_grpc_proxy_cache_hits_total", "Total number of cache hits")?,
            cache_keys: gauge("etcd_grpc_proxy_cache_keys_total", "Total number of keys/ranges cached")?,
            cache_misses: gauge("etcd_grpc_proxy_cache_misses_total", "Total number of cache misses")?,
            cache_bytes: gauge("keel_grpc_proxy_cache_bytes", "Bytes the range cache's answers are counted as")?,
            watchers_coalescing: gauge(
                "etcd_grpc_proxy_watchers_coalescing_total",
                "Total number of current watchers coalescing",
            )?,
            events_coalescing: counter("etcd_grpc_proxy_events_coalescing_total", "Total number of events coalescing")?,
            watchers: gauge("keel_grpc_proxy_watchers", "Client watches open through the proxy")?,
            watch_resumes: counter(
                "keel_grpc_proxy_watch_resumes_total",
                "Upstream watches resumed on another member after their stream ended",
            )?,
            watch_detached: counter(
                "keel_grpc_proxy_watch_detached_total",
                "Slow watchers moved from a shared upstream watch to one of their own",
            )?,
            watch_history_joins: counter(
                "keel_grpc_proxy_watch_history_joins_total",
                "Watches from a past revision served from a shared upstream watch's history",
            )?,
            watch_rejoined: counter(
                "keel_grpc_proxy_watch_rejoined_total",
                "Slow watchers that caught up on their own upstream watch and rejoined the shared one",
            )?,
            keepalives: counter("keel_grpc_proxy_keepalives_total", "Lease keep-alives sent upstream")?,
            refused: {
                let refused = IntCounterVec::new(
                    Opts::new("keel_grpc_proxy_refused_total", "Requests refused by --read-only or --allow-prefix"),
                    &["reason"],
                )?;
                registry.register(Box::new(refused.clone()))?;
                // Both series exist from the start, at zero.
                let _ = refused.with_label_values(&["read-only"]);
                let _ = refused.with_label_values(&["prefix"]);
                refused
            },
            endpoint_syncs: counter(
                "keel_grpc_proxy_endpoint_syncs_total",
                "Times the upstream endpoints were replaced from the member list",
            )?,
            registrations: counter(
                "keel_grpc_proxy_registrations_total",
                "Times the proxy registered itself under --resolver-prefix (a new lease each)",
            )?,
            services: gauge("keel_grpc_proxy_services", "Local services registered with the proxy")?,
            services_passing: gauge(
                "keel_grpc_proxy_services_passing",
                "Local services registered with the proxy whose check passes",
            )?,
            service_puts: counter(
                "keel_grpc_proxy_service_puts_total",
                "Puts of registered services' keys (again after a delete or a lost lease)",
            )?,
            service_checks: ServiceChecks::register(&registry)?,
            registry,
        })
    }

    /// Prometheus' text exposition of every series.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on series names, checked at
        // registration.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Each registered service's check, by service name and id (as Consul's
/// agent reports its checks): whether it passes, and its outcomes.
#[derive(Clone)]
pub(crate) struct ServiceChecks {
    passing: IntGaugeVec,
    outcomes: IntCounterVec,
}

impl ServiceChecks {
    fn register(registry: &Registry) -> Result<ServiceChecks, prometheus::Error> {
        let passing = IntGaugeVec::new(
            Opts::new(
                "keel_grpc_proxy_service_check_passing",
                "Whether a registered service's check passes (1) or not",
            ),
            &["service", "id"],
        )?;
        let outcomes = IntCounterVec::new(
            Opts::new(
                "keel_grpc_proxy_service_checks_total",
                "Outcomes of registered services' checks (TTL checks: passes received, and expiries)",
            ),
            &["service", "id", "result"],
        )?;
        registry.register(Box::new(passing.clone()))?;
        registry.register(Box::new(outcomes.clone()))?;
        Ok(ServiceChecks { passing, outcomes })
    }

    /// A check's outcome, and whether the service now passes.
    pub(crate) fn checked(&self, service: &str, id: &str, passed: bool, passing: bool) {
        let result = if passed { "pass" } else { "fail" };
        self.outcomes.with_label_values(&[service, id, result]).inc();
        self.passing.with_label_values(&[service, id]).set(i64::from(passing));
    }

    /// A registration that starts (not passing until its first check).
    pub(crate) fn registered(&self, service: &str, id: &str) {
        self.passing.with_label_values(&[service, id]).set(0);
    }

    /// A registration gone: its series go with it.
    pub(crate) fn deregistered(&self, service: &str, id: &str) {
        let _ = self.passing.remove_label_values(&[service, id]);
        for result in ["pass", "fail"] {
            let _ = self.outcomes.remove_label_values(&[service, id, result]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcds_names_are_exposed() {
        let metrics = super::Metrics::new().unwrap();
        metrics.events_coalescing.inc_by(3);
        let text = metrics.render();
        for name in [
            "etcd_grpc_proxy_cache_hits_total 0",
            "etcd_grpc_proxy_cache_keys_total 0",
            "etcd_grpc_proxy_cache_misses_total 0",
            "etcd_grpc_proxy_events_coalescing_total 3",
            "etcd_grpc_proxy_watchers_coalescing_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn service_checks_come_and_go_with_their_service() {
        let metrics = super::Metrics::new().unwrap();
        let checks = &metrics.service_checks;
        checks.registered("web", "web-1");
        assert!(metrics.render().contains("keel_grpc_proxy_service_check_passing{id=\"web-1\",service=\"web\"} 0"));
        checks.checked("web", "web-1", true, true);
        checks.checked("web", "web-1", true, true);
        checks.checked("web", "web-1", false, false);
        let text = metrics.render();
        for line in [
            "keel_grpc_proxy_service_check_passing{id=\"web-1\",service=\"web\"} 0",
            "keel_grpc_proxy_service_checks_total{id=\"web-1\",result=\"pass\",service=\"web\"} 2",
            "keel_grpc_proxy_service_checks_total{id=\"web-1\",result=\"fail\",service=\"web\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        checks.deregistered("web", "web-1");
        assert!(!metrics.render().contains("web-1"));
    }
}
