//! A latency histogram of fixed size, for runs with too many samples to keep
//! one by one: a fan-out watch run delivers millions of events, and sixteen
//! bytes per event would make the generator's memory, not the server's, the
//! story of the run.
//!
//! Bins are log-linear over nanoseconds (as HdrHistogram's): exact below
//! 512 ns, then 256 bins per power of two, so a bin's midpoint is within
//! 0.2% of any value in it. Count, sum, minimum and maximum are exact.

use std::time::Duration;

/// Values below `1 << SUB_BITS` ns get a bin each.
const SUB_BITS: u32 = 9;
/// Bins per power of two above that.
const HALF: usize = 1 << (SUB_BITS - 1);
/// Values are clamped below 2^40 ns (18 minutes).
const MAX_BITS: u32 = 40;
const BINS: usize = (MAX_BITS - SUB_BITS + 2) as usize * HALF;

#[derive(Clone, Debug)]
pub struct Histogram {
    bins: Vec<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { bins: vec![0; BINS], count: 0, sum_ns: 0, min_ns: u64::MAX, max_ns: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).min((1 << MAX_BITS) - 1);
        self.bins[bin_of(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.bins.iter_mut().zip(&other.bins) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.min_ns)
        }
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn mean(&self) -> Duration {
        Duration::from_nanos((self.sum_ns / u128::from(self.count.max(1))) as u64)
    }

    /// Nearest-rank percentile, as `summary::percentile`, to within a bin.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().clamp(1.0, self.count as f64) as u64;
        let mut seen = 0;
        for (value, count) in self.weighted() {
            seen += count;
            if seen >= rank {
                return value;
            }
        }
        self.max()
    }

    /// Each non-empty bin as (its midpoint, kept within the exact minimum and
    /// maximum; how many values fell in it), ascending.
    pub fn weighted(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.bins.iter().enumerate().filter(|(_, &count)| count > 0).map(|(bin, &count)| {
            let (low, high) = bounds_of(bin);
            let mid = low + (high - low) / 2;
            (Duration::from_nanos(mid.clamp(self.min_ns, self.max_ns)), count)
        })
    }
}

fn bin_of(ns: u64) -> usize {
    if ns < 1 << SUB_BITS {
        return ns as usize;
    }
    let top = 63 - ns.leading_zeros();
    let shift = top - SUB_BITS + 1;
    shift as usize * HALF + (ns >> shift) as usize
}

/// The smallest and largest value of `bin`.
fn bounds_of(bin: usize) -> (u64, u64) {
    if bin < 2 * HALF {
        return (bin as u64, bin as u64);
    }
    let shift = bin / HALF - 1;
    let mantissa = (bin % HALF + HALF) as u64;
    (mantissa << shift, ((mantissa + 1) << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_contiguous_and_cover_every_value() {
        assert_eq!(bin_of(0), 0);
        assert_eq!(bin_of(511), 511);
        assert_eq!(bin_of(512), 512);
        assert_eq!(bounds_of(512), (512, 513));
        assert_eq!(bin_of((1 << MAX_BITS) - 1), BINS - 1);
        for bin in 1..BINS {
            assert_eq!(bounds_of(bin).0, bounds_of(bin - 1).1 + 1, "gap before bin {bin}");
        }
        for ns in [0, 1, 511, 512, 513, 1023, 1024, 1_000_000, 123_456_789, (1 << MAX_BITS) - 1] {
            let (low, high) = bounds_of(bin_of(ns));
            assert!(low <= ns && ns <= high, "{ns} outside {low}..={high}");
        }
    }

    #[test]
    fn a_bin_is_narrow() {
        for ns in [600u64, 10_000, 1_234_567, 987_654_321_000] {
            let (low, high) = bounds_of(bin_of(ns));
            assert!(((high - low) as f64) < ns as f64 / 250.0, "{ns}: {low}..={high}");
        }
    }

    #[test]
    fn percentiles_match_nearest_rank_within_a_bin() {
        let mut histogram = Histogram::default();
        let values: Vec<Duration> = (1..=1000).map(|ms| Duration::from_micros(ms * 137)).collect();
        for value in values.iter().rev() {
            histogram.record(*value);
        }
        for p in [0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            let exact = crate::bench::summary::percentile(&values, p).as_secs_f64();
            let binned = histogram.percentile(p).as_secs_f64();
            assert!((binned - exact).abs() <= exact * 0.002, "p{p}: {binned} vs {exact}");
        }
        assert_eq!(histogram.count(), 1000);
        assert_eq!(histogram.min(), Duration::from_micros(137));
        assert_eq!(histogram.max(), Duration::from_micros(137_000));
        assert_eq!(histogram.mean(), Duration::from_micros(137 * 1001 / 2) + Duration::from_nanos(500));
    }

    #[test]
    fn merge_adds_counts_and_extremes() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(Duration::from_millis(5));
        b.record(Duration::from_millis(1));
        b.record(Duration::from_millis(9));
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, Duration::from_millis(1), Duration::from_millis(9)));
        assert_eq!(a.mean(), Duration::from_millis(5));
        assert_eq!(a.weighted().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn empty_and_huge() {
        let mut histogram = Histogram::default();
        assert_eq!(
            (histogram.percentile(50.0), histogram.min(), histogram.mean()),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
        histogram.record(Duration::from_secs(1 << 20));
        assert_eq!(histogram.max(), Duration::from_nanos((1 << MAX_BITS) - 1));
    }
}
