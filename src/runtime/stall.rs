//! Reactor stall detector. A shard is cooperative: a task that runs long
//! between two awaits delays every other connection on that core. When
//! `stall.detector.interval.ms` is above 0, each shard
//! - times every poll of every task spawned through [`super::spawn`] and of
//!   every cross-shard job, keeping the longest;
//! - runs a ticker that sleeps [`TICK`] on the timer wheel and keeps the
//!   longest lateness of a wake-up (what a timer-driven task would have seen);
//! - logs both once per interval (info), and a warning when either exceeded
//!   `stall.detector.threshold.us`;
//! - keeps histograms of how long the shard's connections took to serve
//!   Produce and Fetch requests (whole frame read to response written;
//!   acks=all's fsync and a fetch's long-poll wait included) and logs their
//!   percentiles with the same line, so a client-side latency can be split
//!   into broker time and the rest;
//! - keeps the longest segment write and the longest fsync of the interval
//!   (time in the kernel and the device: not a stall of the shard, which
//!   goes on serving, but what an acks=all producer waits for).
//!
//! Off (the default), spawning is untouched: no clock reads, no extra box.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Period of the lateness probe.
pub const TICK: Duration = Duration::from_millis(1);

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static MAX_POLL: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static SLOW_POLLS: Cell<u64> = const { Cell::new(0) };
    static POLLS: Cell<u64> = const { Cell::new(0) };
    static MAX_LATE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static THRESHOLD: Cell<Duration> = const { Cell::new(Duration::from_millis(1)) };
    static MAX_WRITE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static MAX_SYNC: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static EXTRA: Cell<Option<fn() -> String>> = const { Cell::new(None) };
    static PRODUCE_US: RefCell<Option<hdrhistogram::Histogram<u64>>> = const { RefCell::new(None) };
    static FETCH_US: RefCell<Option<hdrhistogram::Histogram<u64>>> = const { RefCell::new(None) };
}

/// Adds figures from a layer above (storage) to this shard's detector line:
/// `f` is called once per interval and returns `key=value` pairs.
pub fn set_extra(f: fn() -> String) {
    EXTRA.with(|c| c.set(Some(f)));
}

/// A disk operation the detector times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// A segment append's write.
    Write,
    /// A partition's fsync (acks=all, segment roll).
    Sync,
}

/// Records one disk operation's duration on this shard (detector on only).
pub fn record_disk(op: Disk, d: Duration) {
    let cell = match op {
        Disk::Write => &MAX_WRITE,
        Disk::Sync => &MAX_SYNC,
    };
    cell.with(|c| c.set(c.get().max(d)));
}

/// Requests whose service times the detector keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Produce,
    Fetch,
}

type Histogram = RefCell<Option<hdrhistogram::Histogram<u64>>>;

fn histogram(kind: Service) -> &'static std::thread::LocalKey<Histogram> {
    match kind {
        Service::Produce => &PRODUCE_US,
        Service::Fetch => &FETCH_US,
    }
}

/// Records one request's service time on this shard (detector on only).
pub fn record_service(kind: Service, d: Duration) {
    histogram(kind).with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| {
            // 1 µs to 1 h at 3 significant digits: cannot fail for these bounds.
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds")
        });
        h.saturating_record(d.as_micros().max(1) as u64);
    });
}

/// This interval's service times of `kind` in µs as `key=value` pairs
/// (count, p50, p99, p99.9, max); resets them.
fn take_service(kind: Service) -> String {
    let name = match kind {
        Service::Produce => "produce",
        Service::Fetch => "fetch",
    };
    histogram(kind).with(|h| match h.borrow_mut().as_mut() {
        Some(h) if !h.is_empty() => {
            let out = format!(
                "{name}s={} {name}_p50_us={} {name}_p99_us={} {name}_p999_us={} {name}_max_us={}",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            );
            h.reset();
            out
        }
        _ => format!("{name}s=0"),
    })
}

/// What one interval saw on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallReport {
    pub polls: u64,
    pub max_poll: Duration,
    pub slow_polls: u64,
    pub max_tick_lateness: Duration,
}

/// True when this shard measures its polls.
pub fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Wraps `fut` so each poll is timed, when the detector is on; otherwise
/// returns it boxed-free through `Either`.
pub fn instrument<F: Future + 'static>(fut: F) -> futures::future::Either<F, Timed<Pin<Box<F>>>> {
    if enabled() {
        futures::future::Either::Right(Timed(Box::pin(fut)))
    } else {
        futures::future::Either::Left(fut)
    }
}

/// A future whose polls are timed into the shard's counters.
pub struct Timed<F>(F);

impl<F: Future + Unpin> Future for Timed<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = Instant::now();
        let out = Pin::new(&mut self.0).poll(cx);
        record_poll(start.elapsed());
        out
    }
}

fn record_poll(d: Duration) {
    POLLS.with(|c| c.set(c.get() + 1));
    MAX_POLL.with(|c| c.set(c.get().max(d)));
    if d > THRESHOLD.with(Cell::get) {
        SLOW_POLLS.with(|c| c.set(c.get() + 1));
    }
}

/// Returns this interval's figures and starts a new interval.
pub fn take_report() -> StallReport {
    StallReport {
        polls: POLLS.with(|c| c.replace(0)),
        max_poll: MAX_POLL.with(|c| c.replace(Duration::ZERO)),
        slow_polls: SLOW_POLLS.with(|c| c.replace(0)),
        max_tick_lateness: MAX_LATE.with(|c| c.replace(Duration::ZERO)),
    }
}

/// Turns the detector on for the calling shard and starts its ticker and
/// reporter. `interval` 0 leaves it off.
pub fn start(shard: usize, interval: Duration, threshold: Duration) {
    if interval.is_zero() {
        return;
    }
    ENABLED.with(|c| c.set(true));
    THRESHOLD.with(|c| c.set(threshold));
    glommio::spawn_local(async move {
        loop {
            let before = Instant::now();
            glommio::timer::sleep(TICK).await;
            let late = before.elapsed().saturating_sub(TICK);
            MAX_LATE.with(|c| c.set(c.get().max(late)));
        }
    })
    .detach();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            let r = take_report();
            let produce = take_service(Service::Produce);
            let fetch = take_service(Service::Fetch);
            let write_us = MAX_WRITE.with(|c| c.replace(Duration::ZERO)).as_micros() as u64;
            let fsync_us = MAX_SYNC.with(|c| c.replace(Duration::ZERO)).as_micros() as u64;
            // One field, so that both lines below carry the same figures.
            let extra = EXTRA.with(Cell::get).map(|f| f()).unwrap_or_default();
            let service = format!(
                "{produce} {fetch} longest_write_us={write_us} longest_fsync_us={fsync_us} {extra}"
            );
            let stalled = r.max_poll > threshold || r.max_tick_lateness > threshold;
            if stalled {
                tracing::warn!(
                    shard,
                    polls = r.polls,
                    longest_poll_us = r.max_poll.as_micros() as u64,
                    polls_over_threshold = r.slow_polls,
                    longest_tick_lateness_us = r.max_tick_lateness.as_micros() as u64,
                    threshold_us = threshold.as_micros() as u64,
                    %service,
                    "stall detector: shard stalled"
                );
            } else {
                tracing::info!(
                    shard,
                    polls = r.polls,
                    longest_poll_us = r.max_poll.as_micros() as u64,
                    longest_tick_lateness_us = r.max_tick_lateness.as_micros() as u64,
                    %service,
                    "stall detector"
                );
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_polls_are_recorded_and_reset() {
        ENABLED.with(|c| c.set(true));
        THRESHOLD.with(|c| c.set(Duration::from_millis(1)));
        let _ = take_report();
        let fut = instrument(async {
            std::thread::sleep(Duration::from_millis(3));
            7
        });
        assert_eq!(futures::executor::block_on(fut), 7);
        let r = take_report();
        assert_eq!(r.polls, 1);
        assert_eq!(r.slow_polls, 1);
        assert!(r.max_poll >= Duration::from_millis(3), "{r:?}");
        assert_eq!(take_report().polls, 0);
        record_service(Service::Produce, Duration::from_micros(100));
        record_service(Service::Produce, Duration::from_micros(300));
        let line = take_service(Service::Produce);
        assert!(line.starts_with("produces=2 produce_p50_us=100 "), "{line}");
        assert!(line.ends_with("produce_max_us=300"), "{line}");
        assert_eq!(take_service(Service::Produce), "produces=0");
        assert_eq!(take_service(Service::Fetch), "fetchs=0");
        ENABLED.with(|c| c.set(false));
        assert!(matches!(
            instrument(async {}),
            futures::future::Either::Left(_)
        ));
    }
}
