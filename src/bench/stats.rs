//! Latency histograms and the result of a run as it is written to
//! `result.json` (and read back by `compare` and `sweep`). Latencies are
//! recorded in microseconds in HdrHistogram (3 significant digits, up to one
//! hour) and reported at OMB's percentiles.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram records (1 h in µs); larger values saturate.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// The percentiles every report shows, as quantiles.
pub const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.50),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// Points of the percentile-distribution curve kept in the JSON for plots.
const CURVE_POINTS: usize = 60;
/// The curve runs from 0% to 1 - 10^-CURVE_NINES (99.999%).
const CURVE_NINES: f64 = 5.0;

/// A fresh latency histogram.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Latency percentiles in microseconds, plus the curve for plotting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p75_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    #[serde(rename = "p99_9Us")]
    pub p99_9_us: u64,
    #[serde(rename = "p99_99Us")]
    pub p99_99_us: u64,
    pub max_us: u64,
    /// (percentile 0..100, latency µs) pairs, percentiles spaced on a log scale
    /// of 1/(1 - p) as HdrHistogram's plots are.
    pub distribution: Vec<(f64, u64)>,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let q = |x: f64| h.value_at_quantile(x);
        let distribution = (0..=CURVE_POINTS)
            .map(|i| {
                let nines = CURVE_NINES * i as f64 / CURVE_POINTS as f64;
                let quantile = 1.0 - 10f64.powf(-nines);
                // Rounded: the JSON is for people and plots.
                ((quantile * 100.0 * 1e6).round() / 1e6, q(quantile))
            })
            .collect();
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: q(0.50),
            p75_us: q(0.75),
            p95_us: q(0.95),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: h.max(),
            distribution,
        }
    }

    /// The percentiles of [`QUANTILES`] in order, then max.
    pub fn percentiles(&self) -> [(&'static str, u64); 7] {
        [
            ("p50", self.p50_us),
            ("p75", self.p75_us),
            ("p95", self.p95_us),
            ("p99", self.p99_us),
            ("p99.9", self.p99_9_us),
            ("p99.99", self.p99_99_us),
            ("max", self.max_us),
        ]
    }
}

/// Everything one run measured; `result.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// Label in tables and plots (workload name, or a sweep variant).
    pub label: String,
    pub workload: super::workload::Workload,
    pub bootstrap: String,
    /// Unix time (s) the run started.
    pub started_unix_s: u64,
    pub test_duration_s: f64,
    /// Messages and bytes acknowledged and consumed within the test window.
    pub publish_rate_msg_s: f64,
    pub publish_rate_mb_s: f64,
    pub consume_rate_msg_s: f64,
    pub consume_rate_mb_s: f64,
    /// Whole run (warm-up, backlog, test, drain): acknowledged sends, failed
    /// sends, and messages consumed over all subscriptions.
    pub messages_produced: u64,
    pub messages_failed: u64,
    pub messages_consumed: u64,
    /// Messages every subscription should have received: produced x subscriptions.
    pub messages_expected: u64,
    /// Largest backlog (expected - consumed, all subscriptions) seen at a
    /// one-second sample during the test, and what was left at the end.
    pub backlog_max_msgs: u64,
    pub backlog_end_msgs: u64,
    /// Backlog written before consumers started (catch-up mode), in bytes.
    pub backlog_built_bytes: u64,
    pub publish_latency: LatencySummary,
    pub end_to_end_latency: LatencySummary,
    /// True when latencies are measured from intended send times (fixed rate).
    pub coordinated_omission_corrected: bool,
    /// Per-second samples of the test window.
    pub timeline: Vec<Sample>,
}

/// One progress sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub elapsed_s: f64,
    pub publish_rate_msg_s: f64,
    pub consume_rate_msg_s: f64,
    pub backlog_msgs: u64,
    pub publish_p99_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_are_monotonic_and_close() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).expect("in range");
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 10_000);
        let p: Vec<u64> = s.percentiles().iter().map(|x| x.1).collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        // 3 significant digits: within 0.1%.
        assert!((4995..=5005).contains(&s.p50_us), "{}", s.p50_us);
        assert!((9895..=9905).contains(&s.p99_us), "{}", s.p99_us);
        assert!((9995..=10_010).contains(&s.max_us));
        assert_eq!(s.distribution.first().map(|d| d.0), Some(0.0));
        let last = s.distribution.last().expect("curve").0;
        assert!((last - 99.999).abs() < 1e-9, "{last}");
        assert!(s.distribution.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        let s = LatencySummary::from_histogram(&new_histogram());
        assert_eq!(s, LatencySummary::default());
    }

    #[test]
    fn result_round_trips_through_json() {
        let mut h = new_histogram();
        h.record(1500).expect("in range");
        let r = RunResult {
            label: "x".into(),
            publish_rate_msg_s: 12.5,
            publish_latency: LatencySummary::from_histogram(&h),
            ..RunResult::default()
        };
        let j = serde_json::to_string(&r).expect("serialises");
        assert!(j.contains("\"publishRateMsgS\":12.5"), "{j}");
        assert!(j.contains("\"p99_9Us\":"), "{j}");
        let back: RunResult = serde_json::from_str(&j).expect("parses");
        // Floats may come back one ulp off; everything else is exact.
        assert_eq!(back.publish_latency.p99_us, 1500);
        assert_eq!(back.label, "x");
        assert_eq!(back.workload, r.workload);
        assert_eq!(
            serde_json::to_string(&back).expect("serialises").len(),
            j.len()
        );
    }
}
