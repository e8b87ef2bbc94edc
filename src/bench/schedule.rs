//! The fixed-rate send schedule. Message `n` of a producer is due at
//! `start + n / rate`; a producer that falls behind sends at once but the
//! message keeps its *intended* time, and latencies are measured from that
//! time. This is the coordinated-omission correction: a stall in the broker
//! shows up in the latency of every message that should have been sent
//! during it, not only the one that was waiting.

use std::time::Duration;

/// Intended send times of one producer at a fixed rate.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    interval_ns: f64,
}

impl Schedule {
    /// A schedule of `rate` messages per second (> 0).
    pub fn new(rate: f64) -> Schedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Schedule {
            interval_ns: 1e9 / rate,
        }
    }

    /// When message `n` (from 0) is due, from the schedule's start.
    pub fn intended(&self, n: u64) -> Duration {
        Duration::from_nanos((n as f64 * self.interval_ns) as u64)
    }

    /// How long to wait before sending message `n`, `elapsed` after the start:
    /// zero when it is due or late (late messages go at once, never skipped).
    pub fn wait(&self, n: u64, elapsed: Duration) -> Duration {
        self.intended(n).saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.intended(0), Duration::ZERO);
        assert_eq!(s.intended(1), Duration::from_millis(1));
        assert_eq!(s.intended(2500), Duration::from_millis(2500));
        let s = Schedule::new(3.0);
        assert_eq!(s.intended(3), Duration::from_secs(1));
    }

    #[test]
    fn wait_is_zero_when_late_and_never_skips() {
        let s = Schedule::new(100.0); // every 10 ms
        assert_eq!(
            s.wait(5, Duration::from_millis(20)),
            Duration::from_millis(30)
        );
        assert_eq!(s.wait(5, Duration::from_millis(50)), Duration::ZERO);
        // 200 ms behind: message 5 is still sent, its intended time stays 50 ms.
        assert_eq!(s.wait(5, Duration::from_millis(250)), Duration::ZERO);
        assert_eq!(s.intended(5), Duration::from_millis(50));
    }
}
