//! `keel-metrics`: the registry every Keel crate registers its metrics in,
//! and the Prometheus text exposition served at `/metrics` (issue 14).
//!
//! Only the registry and the exposition live here: each crate measures in
//! its own `metrics.rs`, under etcd's metric names, so etcd's dashboards
//! and alert rules work unchanged. The process series (`process_*`, as
//! etcd exports them through Go's collector) come from the `prometheus`
//! crate's process collector.

use prometheus::{Encoder, TextEncoder};

/// The `prometheus` crate, re-exported so every crate measures with the
/// same version of it.
pub use prometheus;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// What a crate's `metrics.rs` hands to the member's registry.
pub trait Measures {
    /// Every collector of this crate's series, to register once.
    fn collectors(&self) -> Vec<Box<dyn Collector>>;

    /// Registers [`Measures::collectors`] in `registry`.
    fn register(&self, registry: &prometheus::Registry) -> Result<(), MetricsError> {
        for collector in self.collectors() {
            registry.register(collector)?;
        }
        Ok(())
    }
}

// The constructors below take the constant names and help texts of etcd's
// series; prometheus refuses only malformed names, which the unit tests of
// each `metrics.rs` would catch on the first run, so they cannot fail in
// production and do not return a Result.

/// A counter, as etcd's `prometheus.NewCounter`.
pub fn int_counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| invalid(name, e))
}

/// A counter with labels.
pub fn int_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| invalid(name, e))
}

/// A gauge.
pub fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| invalid(name, e))
}

/// A gauge with labels.
pub fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| invalid(name, e))
}

/// A floating-point gauge.
pub fn gauge(name: &str, help: &str) -> prometheus::Gauge {
    prometheus::Gauge::new(name, help).unwrap_or_else(|e| invalid(name, e))
}

/// A histogram with etcd's buckets for this series.
pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).unwrap_or_else(|e| invalid(name, e))
}

/// A histogram with labels.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).unwrap_or_else(|e| invalid(name, e))
}

/// Go's `prometheus.ExponentialBuckets(start, factor, count)`.
pub fn exponential_buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).unwrap_or_else(|e| invalid("buckets", e))
}

/// Go's `prometheus.LinearBuckets(start, width, count)`.
pub fn linear_buckets(start: f64, width: f64, count: usize) -> Vec<f64> {
    prometheus::linear_buckets(start, width, count).unwrap_or_else(|e| invalid("buckets", e))
}

#[track_caller]
fn invalid(name: &str, err: prometheus::Error) -> ! {
    panic!("metric {name} is malformed: {err}")
}

/// The kind of a [`Computed`] series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// A series whose value is read when scraped (Go's `GaugeFunc` and
/// `CounterFunc`): state the member keeps anyway (the commit index, the
/// database size, whether there is a leader) costs nothing between scrapes.
pub struct Computed {
    desc: Desc,
    kind: Kind,
    read: Box<dyn Fn() -> f64 + Send + Sync>,
}

impl Computed {
    pub fn gauge(name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) -> Computed {
        Computed::new(Kind::Gauge, name, help, read)
    }

    pub fn counter(name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) -> Computed {
        Computed::new(Kind::Counter, name, help, read)
    }

    fn new(kind: Kind, name: &str, help: &str, read: impl Fn() -> f64 + Send + Sync + 'static) -> Computed {
        let desc = Desc::new(name.to_string(), help.to_string(), Vec::new(), Default::default())
            .unwrap_or_else(|e| invalid(name, e));
        Computed { desc, kind, read: Box::new(read) }
    }
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Computed").field("name", &self.desc.fq_name).field("kind", &self.kind).finish()
    }
}

impl Collector for Computed {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let value = (self.read)();
        let mut metric = prometheus::proto::Metric::default();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        match self.kind {
            Kind::Gauge => {
                let mut gauge = prometheus::proto::Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
                family.set_field_type(prometheus::proto::MetricType::GAUGE);
            }
            Kind::Counter => {
                let mut counter = prometheus::proto::Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
                family.set_field_type(prometheus::proto::MetricType::COUNTER);
            }
        }
        family.mut_metric().push(metric);
        vec![family]
    }
}

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
        // What etcd's promhttp handler sends (the crate's TEXT_FORMAT lacks
        // the charset).
        "text/plain; version=0.0.4; charset=utf-8"
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
