//! The result of one run, rendered as etcd's `benchmark` prints it (or as JSON).

use std::fmt::Write as _;
use std::time::Duration;

use super::histogram::Histogram;

/// Latencies of one class of requests in a run, and how long the run took.
pub struct Summary {
    latencies: Latencies,
    /// Wall time of the whole run.
    pub total: Duration,
    pub errors: usize,
    /// CPU the load generator itself used over the run (it shares the machine).
    pub generator_cpu: Duration,
}

/// Every latency (requests), or a histogram of them (watch events, which can
/// number millions).
enum Latencies {
    /// Sorted ascending.
    Exact(Vec<Duration>),
    Binned(Histogram),
}

impl Summary {
    pub fn new(mut latencies: Vec<Duration>, total: Duration, errors: usize, generator_cpu: Duration) -> Self {
        latencies.sort_unstable();
        Summary { latencies: Latencies::Exact(latencies), total, errors, generator_cpu }
    }

    /// A summary whose percentiles are exact to within a histogram bin (0.2%).
    pub fn binned(histogram: Histogram, total: Duration, errors: usize, generator_cpu: Duration) -> Self {
        Summary { latencies: Latencies::Binned(histogram), total, errors, generator_cpu }
    }

    /// Both classes of a txn-mixed run as one (for comparisons).
    pub fn merged(a: &Summary, b: &Summary) -> Summary {
        let (total, errors, cpu) = (a.total.max(b.total), a.errors + b.errors, a.generator_cpu.max(b.generator_cpu));
        match (&a.latencies, &b.latencies) {
            (Latencies::Exact(x), Latencies::Exact(y)) => {
                Summary::new(x.iter().chain(y).copied().collect(), total, errors, cpu)
            }
            _ => {
                let mut histogram = Histogram::default();
                for (latency, count) in a.weighted().chain(b.weighted()) {
                    for _ in 0..count {
                        histogram.record(latency);
                    }
                }
                Summary::binned(histogram, total, errors, cpu)
            }
        }
    }

    pub fn requests(&self) -> usize {
        match &self.latencies {
            Latencies::Exact(all) => all.len(),
            Latencies::Binned(histogram) => histogram.count() as usize,
        }
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests() as f64 / self.total.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        match &self.latencies {
            Latencies::Exact(all) => percentile(all, p),
            Latencies::Binned(histogram) => histogram.percentile(p),
        }
    }

    fn average(&self) -> Duration {
        match &self.latencies {
            Latencies::Exact(all) => all.iter().sum::<Duration>() / all.len().max(1) as u32,
            Latencies::Binned(histogram) => histogram.mean(),
        }
    }

    fn fastest(&self) -> Duration {
        match &self.latencies {
            Latencies::Exact(all) => all.first().copied().unwrap_or_default(),
            Latencies::Binned(histogram) => histogram.min(),
        }
    }

    fn slowest(&self) -> Duration {
        match &self.latencies {
            Latencies::Exact(all) => all.last().copied().unwrap_or_default(),
            Latencies::Binned(histogram) => histogram.max(),
        }
    }

    /// Every latency with how often it occurred, ascending.
    fn weighted(&self) -> Box<dyn Iterator<Item = (Duration, u64)> + '_> {
        match &self.latencies {
            Latencies::Exact(all) => Box::new(all.iter().map(|l| (*l, 1))),
            Latencies::Binned(histogram) => Box::new(histogram.weighted()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total_secs": self.total.as_secs_f64(),
            "requests": self.requests(),
            "errors": self.errors,
            "requests_per_sec": self.requests_per_sec(),
            "average_secs": self.average().as_secs_f64(),
            "slowest_secs": self.slowest().as_secs_f64(),
            "fastest_secs": self.fastest().as_secs_f64(),
            "p50_secs": self.percentile(50.0).as_secs_f64(),
            "p90_secs": self.percentile(90.0).as_secs_f64(),
            "p99_secs": self.percentile(99.0).as_secs_f64(),
            "generator_cpu_secs": self.generator_cpu.as_secs_f64(),
        })
    }

    /// etcd benchmark's layout (`pkg/report`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = |d: Duration| d.as_secs_f64();
        let avg = secs(self.average());
        let variance = self.weighted().map(|(l, n)| (secs(l) - avg).powi(2) * n as f64).sum::<f64>()
            / self.requests().max(1) as f64;
        let _ = writeln!(out, "\nSummary:");
        let _ = writeln!(out, "  Total:\t{:.4} secs.", secs(self.total));
        let _ = writeln!(out, "  Slowest:\t{:.4} secs.", secs(self.slowest()));
        let _ = writeln!(out, "  Fastest:\t{:.4} secs.", secs(self.fastest()));
        let _ = writeln!(out, "  Average:\t{avg:.4} secs.");
        let _ = writeln!(out, "  Stddev:\t{:.4} secs.", variance.sqrt());
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.requests_per_sec());
        if self.errors > 0 {
            let _ = writeln!(out, "  Errors:\t{}", self.errors);
        }
        if self.requests() > 0 {
            let _ = writeln!(out, "\nResponse time histogram:");
            let (first, last) = (secs(self.fastest()), secs(self.slowest()));
            let buckets = 10;
            let step = (last - first) / buckets as f64;
            let mut counts = [0usize; 11];
            for (latency, n) in self.weighted() {
                let bucket = if step > 0.0 { ((secs(latency) - first) / step) as usize } else { 0 };
                counts[bucket.min(buckets)] += n as usize;
            }
            let max = counts.iter().copied().max().unwrap_or(1).max(1);
            for (i, count) in counts.iter().enumerate() {
                let mark = first + step * i as f64;
                let bar = "∎".repeat(count * 40 / max);
                let _ = writeln!(out, "  {mark:.4} [{count}]\t|{bar}");
            }
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            let _ = writeln!(out, "  {p}% in {:.4} secs.", secs(self.percentile(p)));
        }
        out
    }
}

/// Nearest-rank percentile of `sorted` (ascending); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 99.9), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms(&[7]), 50.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let summary = Summary::new(ms(&[30, 10, 20, 40]), Duration::from_secs(2), 1, Duration::ZERO);
        assert_eq!(summary.requests(), 4);
        assert_eq!(summary.requests_per_sec(), 2.0);
        assert_eq!(summary.percentile(50.0), Duration::from_millis(20));
        assert_eq!(summary.average(), Duration::from_millis(25));
        let rendered = summary.render();
        assert!(rendered.contains("Requests/sec:\t2.0000"), "{rendered}");
        assert!(rendered.contains("Errors:\t1"), "{rendered}");
        assert!(rendered.contains("  50% in 0.0200 secs."), "{rendered}");
    }

    #[test]
    fn merged_keeps_every_latency_in_order() {
        let a = Summary::new(ms(&[5, 1]), Duration::from_secs(1), 0, Duration::ZERO);
        let b = Summary::new(ms(&[3]), Duration::from_secs(1), 2, Duration::ZERO);
        let both = Summary::merged(&a, &b);
        assert_eq!(both.weighted().map(|(l, _)| l).collect::<Vec<_>>(), ms(&[1, 3, 5]));
        assert_eq!(both.errors, 2);
    }

    #[test]
    fn binned_summary_reads_like_an_exact_one() {
        let latencies = ms(&[30, 10, 20, 40]);
        let mut histogram = Histogram::default();
        latencies.iter().for_each(|l| histogram.record(*l));
        let exact = Summary::new(latencies, Duration::from_secs(2), 1, Duration::ZERO);
        let binned = Summary::binned(histogram, Duration::from_secs(2), 1, Duration::ZERO);
        assert_eq!((binned.requests(), binned.requests_per_sec()), (4, 2.0));
        assert_eq!(
            (binned.fastest(), binned.slowest(), binned.average()),
            (exact.fastest(), exact.slowest(), exact.average())
        );
        assert_eq!(binned.render(), exact.render(), "bins this narrow hold one value each at 0.1 ms resolution");
        let both = Summary::merged(&exact, &binned);
        assert_eq!(both.requests(), 8);
        let p50 = both.percentile(50.0).as_secs_f64();
        assert!((p50 - 0.020).abs() < 0.020 * 0.002, "p50 {p50} is 20 ms to within a bin");
    }

    #[test]
    fn empty_summary_renders() {
        let summary = Summary::new(Vec::new(), Duration::from_secs(1), 0, Duration::ZERO);
        assert!(summary.render().contains("Requests/sec:\t0.0000"));
    }
}
