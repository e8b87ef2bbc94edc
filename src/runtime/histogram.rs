//! A fixed-bucket latency histogram for the metrics endpoint: the bucket bounds are one
//! constant table, so recording is a short search and an add (no allocation, no lock), and
//! histograms of different shards merge by adding their counts. Prometheus wants cumulative
//! `le` buckets; [`LatencyHistogram::cumulative`] gives them at render time.
//!
//! Bounds run from 100 µs to 10 s in 1-2.5-5 steps: 16 finite buckets plus `+Inf`. The
//! precision is the bucket's width; exact percentiles for one shard are the stall detector's
//! job (`stall.rs`, HdrHistogram), not this one's.

use std::time::Duration;

/// Upper bounds of the finite buckets, in microseconds, ascending.
pub const BUCKET_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets including the last, unbounded one (`+Inf`).
pub const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// Counts of durations per bucket (not cumulative), their number and their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; BUCKETS],
    sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub const fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: [0; BUCKETS],
            sum_us: 0,
        }
    }

    /// Adds one duration: to the first bucket whose bound it does not exceed.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds another histogram's counts (another shard's).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Number of durations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Sum of the durations recorded, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// (upper bound in seconds, durations at or below it) for every finite bucket, ascending;
    /// the `+Inf` bucket is [`LatencyHistogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut total = 0u64;
        BUCKET_BOUNDS_US
            .iter()
            .zip(self.counts.iter())
            .map(move |(bound, n)| {
                total = total.saturating_add(*n);
                (*bound as f64 / 1e6, total)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_ascend() {
        assert!(BUCKET_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn records_into_the_first_bucket_not_exceeded_and_counts_cumulatively() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_micros(100)); // on a bound: that bucket (le is inclusive)
        h.record(Duration::from_micros(101));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // past every bound: +Inf only
        assert_eq!(h.count(), 4);
        let c: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(c.len(), 16);
        assert_eq!(c[0], (0.0001, 1));
        assert_eq!(c[1], (0.00025, 2));
        assert_eq!(c[4], (0.0025, 2));
        assert_eq!(c[5], (0.005, 3));
        assert_eq!(
            c[15],
            (10.0, 3),
            "the 60 s one is beyond the last finite bucket"
        );
        assert!(
            (h.sum_seconds() - 60.003201).abs() < 1e-9,
            "{}",
            h.sum_seconds()
        );
    }

    #[test]
    fn merge_adds_counts_and_sums() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(Duration::from_micros(50));
        b.record(Duration::from_micros(50));
        b.record(Duration::from_secs(1));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.cumulative().next(), Some((0.0001, 2)));
        assert_eq!(a.cumulative().nth(12), Some((1.0, 3)));
        let empty = LatencyHistogram::default();
        assert_eq!(empty.count(), 0);
        assert!(empty.cumulative().all(|(_, n)| n == 0));
    }
}
