//! `keel-metrics`: the registry every Keel crate registers its metrics in,
//! and the Prometheus text exposition served at `/metrics` (issue 14).
//!
//! Only the registry and the exposition live here: each crate measures in
//! its own `metrics.rs`, under etcd's metric names, so etcd's dashboards
//! and alert rules work unchanged. The process series (`process_*`, as
//! etcd exports them through Go's collector) come from the `prometheus`
//! crate's process collector.

use prometheus::{Encoder, TextEncoder};

/// A failure to register or encode a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics: exposition is not UTF-8: {0}")]
    Encoding(#[from] std::string::FromUtf8Error),
}

/// One member's metrics. Cloning shares the registry.
#[derive(Clone)]
pub struct Metrics {
    registry: prometheus::Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with the process series (`process_resident_memory_bytes`,
    /// `process_cpu_seconds_total`, `process_open_fds`, …) of this process.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics { registry })
    }

    /// Where crates register their collectors.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every registered series.
    pub fn text(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    /// The content type of [`Metrics::text`], for the HTTP answer.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_the_process_series_and_registered_ones() {
        let metrics = Metrics::new().unwrap();
        let has_leader = prometheus::IntGauge::new(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
        )
        .unwrap();
        metrics.registry().register(Box::new(has_leader.clone())).unwrap();
        has_leader.set(1);
        let text = metrics.text().unwrap();
        assert!(text.contains("# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1\n"), "{text}");
        let resident = text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .expect("process_resident_memory_bytes is exported");
        assert!(resident.parse::<f64>().unwrap() > 0.0);
        assert!(Metrics::content_type().starts_with("text/plain"));
    }

    #[test]
    fn a_name_registered_twice_is_refused() {
        let metrics = Metrics::new().unwrap();
        let gauge =
            || prometheus::IntGauge::new("etcd_server_is_leader", "Whether or not this member is a leader.").unwrap();
        metrics.registry().register(Box::new(gauge())).unwrap();
        assert!(metrics.registry().register(Box::new(gauge())).is_err());
    }
}
