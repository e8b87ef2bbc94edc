//! Reactor stall detector. A shard is cooperative: a task that runs long
//! between two awaits delays every other connection on that core. When
//! `stall.detector.interval.ms` is above 0, each shard
//! - times every poll of every task spawned through [`super::spawn`] and of
//!   every cross-shard job, keeping the longest, and keeps the most CPU time
//!   the thread spent in one poll (`CLOCK_THREAD_CPUTIME_ID`): a long poll
//!   with little CPU time was preempted by the kernel, not busy;
//! - runs a ticker that sleeps [`TICK`] on the timer wheel and keeps the
//!   longest lateness of a wake-up (what a timer-driven task would have seen);
//! - reads the shard thread's run-queue wait from the kernel
//!   (`/proc/thread-self/schedstat`, once per tick) and keeps how much of the
//!   longest lateness was spent runnable but off the CPU, and the interval's
//!   total: a tick late because the kernel ran another thread on the core is
//!   told apart from one late because a task of the shard ran long (the
//!   longest poll) or because the timer fired late;
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

use super::histogram::LatencyHistogram;

/// Period of the lateness probe.
pub const TICK: Duration = Duration::from_millis(1);

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static MAX_POLL: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static MAX_POLL_CPU: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// The future type of the poll that used the most CPU time (its async fn or block).
    static MAX_POLL_CPU_TASK: Cell<&'static str> = const { Cell::new("") };
    /// Requests a connection reader started in the poll running now, and the
    /// API key of the last one (-1: none); and the same for the costliest poll.
    static POLL_REQUESTS: Cell<(u32, i16)> = const { Cell::new((0, -1)) };
    static MAX_POLL_CPU_REQUESTS: Cell<(u32, i16)> = const { Cell::new((0, -1)) };
    static SLOW_POLLS: Cell<u64> = const { Cell::new(0) };
    static POLLS: Cell<u64> = const { Cell::new(0) };
    static MAX_LATE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// Run-queue wait during the tick of `MAX_LATE`, and this interval's total; `None` without
    /// schedstat.
    static MAX_LATE_RUNQ: Cell<Option<Duration>> = const { Cell::new(None) };
    static RUNQ_TOTAL: Cell<Option<Duration>> = const { Cell::new(None) };
    static THRESHOLD: Cell<Duration> = const { Cell::new(Duration::from_millis(1)) };
    static MAX_WRITE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static MAX_SYNC: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static EXTRA: Cell<Option<fn() -> String>> = const { Cell::new(None) };
    static PRODUCE_US: RefCell<Option<hdrhistogram::Histogram<u64>>> = const { RefCell::new(None) };
    static FETCH_US: RefCell<Option<hdrhistogram::Histogram<u64>>> = const { RefCell::new(None) };
    /// Every fsync's duration since the shard started, detector on or off (the metrics
    /// endpoint's `sluice_fsync_latency_seconds`).
    static FSYNC: RefCell<LatencyHistogram> = const { RefCell::new(LatencyHistogram::new()) };
    /// The last interval's report, and polls over the threshold since the shard started.
    static LAST_REPORT: Cell<Option<StallReport>> = const { Cell::new(None) };
    static SLOW_POLLS_TOTAL: Cell<u64> = const { Cell::new(0) };
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

/// Records one fsync's duration on this shard: always into the shard's fsync histogram, and
/// into the interval's longest when the detector is on.
pub fn record_fsync(d: Duration) {
    FSYNC.with(|h| h.borrow_mut().record(d));
    if enabled() {
        record_disk(Disk::Sync, d);
    }
}

/// What the metrics endpoint reads from one shard's detector.
#[derive(Debug, Clone, Copy)]
pub struct ShardFigures {
    /// Whether the detector runs (`stall.detector.interval.ms` above 0).
    pub enabled: bool,
    /// The last full interval's report (`None` before the first, or with the detector off).
    pub last: Option<StallReport>,
    /// Polls longer than the threshold since the shard started.
    pub slow_polls_total: u64,
    pub fsync: LatencyHistogram,
}

/// This shard's figures for the metrics endpoint; reads only, resets nothing.
pub fn figures() -> ShardFigures {
    ShardFigures {
        enabled: enabled(),
        last: LAST_REPORT.with(Cell::get),
        slow_polls_total: SLOW_POLLS_TOTAL.with(Cell::get),
        fsync: FSYNC.with(|h| *h.borrow()),
    }
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
    /// The most CPU time the shard's thread spent in one poll.
    pub max_poll_cpu: Duration,
    /// Which task that poll was: the type name of its future (the async fn
    /// or block it was spawned from).
    pub max_poll_cpu_task: &'static str,
    /// How many requests a connection reader started in that poll, and the
    /// Kafka API key of the last of them (-1: none).
    pub max_poll_cpu_requests: (u32, i16),
    pub slow_polls: u64,
    pub max_tick_lateness: Duration,
    /// How much of `max_tick_lateness` the shard's thread spent runnable but
    /// not running (the kernel gave its core to another thread); `None` when
    /// the kernel does not keep schedstat.
    pub max_tick_runqueue: Option<Duration>,
    /// The thread's whole run-queue wait over the interval.
    pub runqueue_total: Option<Duration>,
}

impl StallReport {
    /// The report as `key=value` pairs, as the detector logs them (a
    /// duration the kernel does not provide is -1).
    pub fn fields(&self) -> String {
        let us = |d: Duration| d.as_micros();
        let opt_us = |d: Option<Duration>| d.map_or(-1, |d| d.as_micros() as i128);
        format!(
            "polls={} longest_poll_us={} polls_over_threshold={} most_poll_cpu_us={} \
             most_poll_cpu_task={:?} most_poll_cpu_requests={} most_poll_cpu_last_api={} \
             longest_tick_lateness_us={} longest_tick_runqueue_us={} runqueue_wait_us={}",
            self.polls,
            us(self.max_poll),
            self.slow_polls,
            us(self.max_poll_cpu),
            self.max_poll_cpu_task,
            self.max_poll_cpu_requests.0,
            self.max_poll_cpu_requests.1,
            us(self.max_tick_lateness),
            opt_us(self.max_tick_runqueue),
            opt_us(self.runqueue_total),
        )
    }
}

/// True when this shard measures its polls.
pub fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Wraps `fut` so each poll is timed, when the detector is on; otherwise
/// returns it boxed-free through `Either`.
pub fn instrument<F: Future + 'static>(fut: F) -> futures::future::Either<F, Timed<Pin<Box<F>>>> {
    if enabled() {
        futures::future::Either::Right(Timed(Box::pin(fut), std::any::type_name::<F>()))
    } else {
        futures::future::Either::Left(fut)
    }
}

/// A future whose polls are timed into the shard's counters, with the type
/// name of the future inside.
pub struct Timed<F>(F, &'static str);

impl<F: Future + Unpin> Future for Timed<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        POLL_REQUESTS.with(|c| c.set((0, -1)));
        let start = Instant::now();
        let cpu = thread_cpu();
        let out = Pin::new(&mut self.0).poll(cx);
        // CPU clock read first, inside the wall-clock interval.
        let cpu = thread_cpu().saturating_sub(cpu);
        record_poll(start.elapsed(), cpu, self.1);
        out
    }
}

/// Called by a connection reader as it starts handling a request (API key
/// `api_key`), so that a costly poll says how many requests it handled.
pub fn note_request(api_key: i16) {
    POLL_REQUESTS.with(|c| c.set((c.get().0 + 1, api_key)));
}

/// CPU time the calling thread has used (about 0.2 µs a read here: a
/// syscall, paid only with the detector on).
fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn record_poll(d: Duration, cpu: Duration, task: &'static str) {
    POLLS.with(|c| c.set(c.get() + 1));
    MAX_POLL.with(|c| c.set(c.get().max(d)));
    MAX_POLL_CPU.with(|c| {
        if cpu >= c.get() {
            c.set(cpu);
            MAX_POLL_CPU_TASK.with(|t| t.set(task));
            MAX_POLL_CPU_REQUESTS.with(|r| r.set(POLL_REQUESTS.with(Cell::get)));
        }
    });
    if d > THRESHOLD.with(Cell::get) {
        SLOW_POLLS.with(|c| c.set(c.get() + 1));
    }
}

/// Returns this interval's figures and starts a new interval.
pub fn take_report() -> StallReport {
    StallReport {
        polls: POLLS.with(|c| c.replace(0)),
        max_poll: MAX_POLL.with(|c| c.replace(Duration::ZERO)),
        max_poll_cpu: MAX_POLL_CPU.with(|c| c.replace(Duration::ZERO)),
        max_poll_cpu_task: MAX_POLL_CPU_TASK.with(|c| c.replace("")),
        max_poll_cpu_requests: MAX_POLL_CPU_REQUESTS.with(|c| c.replace((0, -1))),
        slow_polls: SLOW_POLLS.with(|c| c.replace(0)),
        max_tick_lateness: MAX_LATE.with(|c| c.replace(Duration::ZERO)),
        max_tick_runqueue: MAX_LATE_RUNQ.with(|c| c.replace(None)),
        runqueue_total: RUNQ_TOTAL.with(|c| c.replace(None)),
    }
}

/// The calling thread's scheduler statistics (`/proc/thread-self/schedstat`:
/// time on the CPU, time runnable on a run queue, timeslices, in ns), kept
/// open and re-read in place.
struct SchedStat(std::fs::File);

impl SchedStat {
    /// Opens the calling thread's file; `None` when the kernel has no schedstat.
    fn open() -> Option<Self> {
        let f = std::fs::File::open("/proc/thread-self/schedstat").ok()?;
        let s = SchedStat(f);
        s.run_delay().map(|_| s)
    }

    /// Total time this thread has waited on a run queue so far.
    fn run_delay(&self) -> Option<Duration> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        parse_run_delay(&buf[..n])
    }
}

/// The second field of a schedstat line, in ns.
fn parse_run_delay(line: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(line).ok()?;
    let ns: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Keeps one tick's lateness, with the run-queue wait it contained.
fn record_tick(late: Duration, runq: Option<Duration>) {
    if let Some(w) = runq {
        RUNQ_TOTAL.with(|c| c.set(Some(c.get().unwrap_or_default() + w)));
    }
    MAX_LATE.with(|c| {
        if late >= c.get() {
            c.set(late);
            MAX_LATE_RUNQ.with(|r| r.set(runq));
        }
    });
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
        let sched = SchedStat::open();
        if sched.is_none() {
            tracing::info!(
                shard,
                "stall detector: no /proc/thread-self/schedstat; run-queue wait not reported"
            );
        }
        let mut waited = sched.as_ref().and_then(SchedStat::run_delay);
        loop {
            let before = Instant::now();
            glommio::timer::sleep(TICK).await;
            let late = before.elapsed().saturating_sub(TICK);
            let now_waited = sched.as_ref().and_then(SchedStat::run_delay);
            let runq = match (waited, now_waited) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            waited = now_waited;
            record_tick(late, runq);
        }
    })
    .detach();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            let r = take_report();
            LAST_REPORT.with(|c| c.set(Some(r)));
            SLOW_POLLS_TOTAL.with(|c| c.set(c.get().saturating_add(r.slow_polls)));
            let produce = take_service(Service::Produce);
            let fetch = take_service(Service::Fetch);
            let write_us = MAX_WRITE.with(|c| c.replace(Duration::ZERO)).as_micros() as u64;
            let fsync_us = MAX_SYNC.with(|c| c.replace(Duration::ZERO)).as_micros() as u64;
            // One field, so that both lines below carry the same figures.
            let extra = EXTRA.with(Cell::get).map(|f| f()).unwrap_or_default();
            let service = format!(
                "{produce} {fetch} longest_write_us={write_us} longest_fsync_us={fsync_us} {extra}"
            );
            let figures = r.fields();
            if r.max_poll > threshold || r.max_tick_lateness > threshold {
                tracing::warn!(
                    shard,
                    threshold_us = threshold.as_micros() as u64,
                    %figures,
                    %service,
                    "stall detector: shard stalled"
                );
            } else {
                tracing::info!(shard, %figures, %service, "stall detector");
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_run_delay() {
        assert_eq!(
            parse_run_delay(b"123 4567890 12\n"),
            Some(Duration::from_nanos(4_567_890))
        );
        assert_eq!(parse_run_delay(b"123\n"), None);
        assert_eq!(parse_run_delay(b"x y z"), None);
        // This kernel's own file, where it has one: read twice, never backwards.
        if let Some(s) = SchedStat::open() {
            let a = s.run_delay().expect("readable");
            let b = s.run_delay().expect("readable");
            assert!(b >= a);
        }
    }

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
        // Asleep, not busy: the poll took 3 ms but little CPU time.
        assert!(r.max_poll_cpu < Duration::from_millis(2), "{r:?}");
        // Busy for 3 ms of CPU time: all of it counts.
        let busy = instrument(async {
            note_request(0);
            note_request(1);
            let start = thread_cpu();
            while thread_cpu() - start < Duration::from_millis(3) {
                std::hint::spin_loop();
            }
        });
        futures::executor::block_on(busy);
        let r = take_report();
        assert!(r.max_poll_cpu >= Duration::from_millis(3), "{r:?}");
        assert!(r.max_poll_cpu_task.contains("stall::tests"), "{r:?}");
        assert_eq!(r.max_poll_cpu_requests, (2, 1), "{r:?}");
        // Two clocks: the CPU time may not exceed the wall time by more than
        // their granularity.
        assert!(
            r.max_poll + Duration::from_micros(100) >= r.max_poll_cpu,
            "{r:?}"
        );
        assert_eq!(take_report().polls, 0);
        record_service(Service::Produce, Duration::from_micros(100));
        record_service(Service::Produce, Duration::from_micros(300));
        let line = take_service(Service::Produce);
        assert!(line.starts_with("produces=2 produce_p50_us=100 "), "{line}");
        assert!(line.ends_with("produce_max_us=300"), "{line}");
        assert_eq!(take_service(Service::Produce), "produces=0");
        assert_eq!(take_service(Service::Fetch), "fetchs=0");
        record_tick(Duration::from_micros(400), Some(Duration::from_micros(300)));
        record_tick(Duration::from_micros(900), Some(Duration::from_micros(800)));
        record_tick(Duration::from_micros(200), Some(Duration::from_micros(100)));
        let r = take_report();
        assert_eq!(r.max_tick_lateness, Duration::from_micros(900));
        assert_eq!(r.max_tick_runqueue, Some(Duration::from_micros(800)));
        assert_eq!(r.runqueue_total, Some(Duration::from_micros(1200)));
        assert_eq!(take_report().runqueue_total, None);
        let line = r.fields();
        assert!(
            line.contains(
                "longest_tick_lateness_us=900 longest_tick_runqueue_us=800 runqueue_wait_us=1200"
            ),
            "{line}"
        );
        assert!(take_report().fields().ends_with("runqueue_wait_us=-1"));
        ENABLED.with(|c| c.set(false));
        assert!(matches!(
            instrument(async {}),
            futures::future::Either::Left(_)
        ));
    }
}
