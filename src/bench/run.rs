//! One benchmark run: create topics, start consumers and producers, warm up,
//! (catch-up mode: write the backlog, stop the producers, then start the
//! consumers and measure them reading it), measure for
//! the test duration with a progress line every second, stop the producers,
//! let the consumers drain, and summarise.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::clients::{self, ConsumerJob, ProducerJob, Shared};
use super::stats::{LatencySummary, RunResult, Sample};
use super::workload::Workload;

/// Progress-line interval.
const TICK: Duration = Duration::from_secs(1);
/// Catch-up mode: longest time spent writing the backlog.
const BACKLOG_BUILD_LIMIT: Duration = Duration::from_secs(3600);

/// Longest wait for the consumer groups to be assigned every partition.
const ASSIGN_LIMIT: Duration = Duration::from_secs(60);

const PHASES: [&str; 5] = ["warm-up", "backlog", "test", "drain", "assign"];
const PHASE_WARMUP: u8 = 0;
const PHASE_BACKLOG: u8 = 1;
const PHASE_TEST: u8 = 2;
const PHASE_DRAIN: u8 = 3;
const PHASE_ASSIGN: u8 = 4;

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: String,
    pub label: String,
    /// Leave the run's topics in place afterwards (default: delete them).
    pub keep_topics: bool,
}

/// Counter values at one instant, for rates over an interval.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    produced: u64,
    produced_bytes: u64,
    consumed: u64,
    consumed_bytes: u64,
}

impl Snapshot {
    fn take(s: &Shared) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            produced: s.produced.load(Ordering::Relaxed),
            produced_bytes: s.produced_bytes.load(Ordering::Relaxed),
            consumed: s.consumed.load(Ordering::Relaxed),
            consumed_bytes: s.consumed_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Rates between two snapshots: (publish msg/s, MB/s, consume msg/s, MB/s).
fn rates(a: &Snapshot, b: &Snapshot) -> (f64, f64, f64, f64) {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    (
        per_s(a.produced, b.produced),
        per_s(a.produced_bytes, b.produced_bytes) / 1e6,
        per_s(a.consumed, b.consumed),
        per_s(a.consumed_bytes, b.consumed_bytes) / 1e6,
    )
}

/// Messages produced but not yet consumed, over every subscription.
fn backlog(s: &Shared, subscriptions: u64) -> u64 {
    (s.produced.load(Ordering::Relaxed) * subscriptions)
        .saturating_sub(s.consumed.load(Ordering::Relaxed))
}

/// Runs the workload against `opts.bootstrap`.
pub fn run(w: &Workload, opts: &RunOptions) -> anyhow::Result<RunResult> {
    let payload = w.payload()?;
    let run_id = format!(
        "{:x}{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        std::process::id()
    );
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let topics: Vec<String> = (0..w.topics)
        .map(|i| format!("sluice-bench-{}-{run_id}-{i}", sanitize(&w.name)))
        .collect();
    clients::create_topics(&opts.bootstrap, w, &topics)?;
    let result = run_on_topics(w, opts, &topics, payload, started_unix_s, &run_id);
    if !opts.keep_topics {
        clients::delete_topics(&opts.bootstrap, &topics);
    }
    result
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn run_on_topics(
    w: &Workload,
    opts: &RunOptions,
    topics: &[String],
    payload: Vec<u8>,
    started_unix_s: u64,
    run_id: &str,
) -> anyhow::Result<RunResult> {
    let consumers_per_topic = w.subscriptions_per_topic * w.consumer_per_subscription;
    let shared = Arc::new(Shared::new(w.producers(), w.topics * consumers_per_topic));
    let subs = w.subscriptions_per_topic as u64;
    let catch_up = w.consumer_backlog_size_gb > 0.0;

    // Consumers are built (and subscribe) first, so they see every message;
    // in catch-up mode they start only once the backlog is written.
    let mut consumer_jobs = Vec::new();
    for (t, topic) in topics.iter().enumerate() {
        for sub in 0..w.subscriptions_per_topic {
            for _ in 0..w.consumer_per_subscription {
                consumer_jobs.push(ConsumerJob {
                    shared: shared.clone(),
                    index: consumer_jobs.len(),
                    topic: topic.clone(),
                    group: format!("sluice-bench-{run_id}-t{t}-s{sub}"),
                });
            }
        }
    }
    let mut progress = Progress::new(shared.clone(), subs);
    let mut consumer_threads = Vec::new();
    if !catch_up {
        consumer_threads = start_consumers(consumer_jobs.drain(..), &opts.bootstrap, w)?;
        await_assignment(&mut progress, w);
    }

    let config = clients::producer_config(&opts.bootstrap, w);
    let per_producer_rate = (w.producer_rate > 0.0).then(|| w.producer_rate / w.producers() as f64);
    let mut producer_threads: Vec<JoinHandle<()>> = Vec::new();
    for (t, topic) in topics.iter().enumerate() {
        for p in 0..w.producers_per_topic {
            let job = ProducerJob {
                shared: shared.clone(),
                index: t * w.producers_per_topic + p,
                topic: topic.clone(),
                payload: payload.clone(),
                keys: w.key_distributor,
                rate: per_producer_rate,
            };
            let producer = job.client(&config)?;
            producer_threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-producer-{}", job.index))
                    .spawn(move || job.run(producer))
                    .context("spawning a producer thread")?,
            );
        }
    }

    progress.phase(PHASE_WARMUP);
    progress.wait(Duration::from_secs_f64(w.warmup_duration_seconds), |_| {
        false
    });

    let mut backlog_built_bytes = 0;
    let mut publish_window = None;
    if catch_up {
        // Write the backlog, stop the producers, then start the consumers.
        progress.phase(PHASE_BACKLOG);
        let target = (w.consumer_backlog_size_gb * 1e9) as u64;
        // Publish figures of a catch-up run are those of writing the backlog.
        Shared::reset(&shared.publish_hist);
        let build_start = Snapshot::take(&shared);
        let s = shared.clone();
        progress.wait(BACKLOG_BUILD_LIMIT, move |_| {
            s.produced_bytes.load(Ordering::Relaxed) >= target
        });
        shared.stop_producers.store(true, Ordering::Relaxed);
        join_all(std::mem::take(&mut producer_threads));
        publish_window = Some((build_start, Snapshot::take(&shared)));
        backlog_built_bytes = shared.produced_bytes.load(Ordering::Relaxed);
        if backlog_built_bytes < target {
            eprintln!(
                "warning: backlog reached only {backlog_built_bytes} of {target} bytes in {} s",
                BACKLOG_BUILD_LIMIT.as_secs()
            );
        }
        consumer_threads = start_consumers(consumer_jobs.drain(..), &opts.bootstrap, w)?;
        await_assignment(&mut progress, w);
    }

    progress.phase(PHASE_TEST);
    if !catch_up {
        Shared::reset(&shared.publish_hist);
    }
    Shared::reset(&shared.e2e_hist);
    let test_start = Snapshot::take(&shared);
    progress.timeline_from = Some(test_start.at);
    let s = shared.clone();
    // Catch-up mode ends early once the consumers have read everything.
    progress.wait(
        Duration::from_secs_f64(w.test_duration_seconds),
        move |_| catch_up && backlog(&s, subs) == 0,
    );
    let test_end = Snapshot::take(&shared);

    progress.phase(PHASE_DRAIN);
    shared.stop_producers.store(true, Ordering::Relaxed);
    join_all(producer_threads);
    let s = shared.clone();
    progress.wait(
        Duration::from_secs_f64(w.drain_timeout_seconds),
        move |_| backlog(&s, subs) == 0,
    );
    shared.stop_consumers.store(true, Ordering::Relaxed);
    join_all(consumer_threads);
    shared.recording.store(false, Ordering::Relaxed);

    let (mut pub_msgs, mut pub_mb, cons_msgs, cons_mb) = rates(&test_start, &test_end);
    if let Some((a, b)) = publish_window {
        (pub_msgs, pub_mb, _, _) = rates(&a, &b);
    }
    let produced = shared.produced.load(Ordering::Relaxed);
    Ok(RunResult {
        label: opts.label.clone(),
        workload: w.clone(),
        bootstrap: opts.bootstrap.clone(),
        started_unix_s,
        test_duration_s: test_end.at.duration_since(test_start.at).as_secs_f64(),
        publish_rate_msg_s: pub_msgs,
        publish_rate_mb_s: pub_mb,
        consume_rate_msg_s: cons_msgs,
        consume_rate_mb_s: cons_mb,
        messages_produced: produced,
        messages_failed: shared.failed.load(Ordering::Relaxed),
        messages_consumed: shared.consumed.load(Ordering::Relaxed),
        messages_expected: produced * subs,
        backlog_max_msgs: progress.backlog_max,
        backlog_end_msgs: backlog(&shared, subs),
        backlog_built_bytes,
        publish_latency: LatencySummary::from_histogram(&Shared::merged(&shared.publish_hist)),
        end_to_end_latency: LatencySummary::from_histogram(&Shared::merged(&shared.e2e_hist)),
        coordinated_omission_corrected: w.producer_rate > 0.0,
        timeline: progress.timeline,
    })
}

/// Waits until every consumer group holds all its topic's partitions (the
/// group's first rebalance is delayed by the broker), so that the measured
/// latencies do not include it. Consumers are numbered topic by topic, group
/// by group.
fn await_assignment(progress: &mut Progress, w: &Workload) {
    progress.phase(PHASE_ASSIGN);
    let per_group = w.consumer_per_subscription;
    let partitions = usize::try_from(w.partitions_per_topic).unwrap_or(0);
    let shared = progress.shared.clone();
    let all_assigned = move |_: &Progress| {
        shared.assigned.chunks(per_group.max(1)).all(|group| {
            group
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .sum::<usize>()
                >= partitions
        })
    };
    progress.wait(ASSIGN_LIMIT, &all_assigned);
    if !all_assigned(progress) {
        eprintln!(
            "warning: consumer groups not fully assigned after {} s; going on",
            ASSIGN_LIMIT.as_secs()
        );
    }
}

fn join_all(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            eprintln!("warning: a client thread panicked");
        }
    }
}

fn start_consumers(
    jobs: impl Iterator<Item = ConsumerJob>,
    bootstrap: &str,
    w: &Workload,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    for job in jobs {
        let consumer = job.client(bootstrap, w)?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-consumer-{}", job.index))
                .spawn(move || job.run(consumer))
                .context("spawning a consumer thread")?,
        );
    }
    Ok(threads)
}

/// The once-a-second progress line on stderr, and the test's timeline.
struct Progress {
    shared: Arc<Shared>,
    subs: u64,
    start: Instant,
    last: Snapshot,
    backlog_max: u64,
    timeline_from: Option<Instant>,
    timeline: Vec<Sample>,
}

impl Progress {
    fn new(shared: Arc<Shared>, subs: u64) -> Progress {
        let last = Snapshot::take(&shared);
        Progress {
            shared,
            subs,
            start: Instant::now(),
            last,
            backlog_max: 0,
            timeline_from: None,
            timeline: Vec::new(),
        }
    }

    fn phase(&mut self, p: u8) {
        self.shared.phase.store(p, Ordering::Relaxed);
    }

    /// Waits up to `limit`, printing a line every second, until `done` says so.
    fn wait(&mut self, limit: Duration, mut done: impl FnMut(&Progress) -> bool) {
        let until = Instant::now().checked_add(limit);
        loop {
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) || done(self) {
                return;
            }
            let next_tick = self.last.at + TICK;
            let nap = next_tick
                .saturating_duration_since(now)
                .min(until.map_or(TICK, |u| u.saturating_duration_since(now)))
                .min(Duration::from_millis(100));
            std::thread::sleep(nap);
            if Instant::now() >= next_tick {
                self.tick();
            }
        }
    }

    fn tick(&mut self) {
        let s = &*self.shared;
        let snap = Snapshot::take(s);
        let (pm, pmb, cm, cmb) = rates(&self.last, &snap);
        self.last = snap;
        let backlog = backlog(s, self.subs);
        let phase = s.phase.load(Ordering::Relaxed);
        let p99 = Shared::merged(&s.publish_hist).value_at_quantile(0.99);
        if phase == PHASE_TEST {
            self.backlog_max = self.backlog_max.max(backlog);
            if let Some(from) = self.timeline_from {
                self.timeline.push(Sample {
                    elapsed_s: snap.at.duration_since(from).as_secs_f64(),
                    publish_rate_msg_s: pm,
                    consume_rate_msg_s: cm,
                    backlog_msgs: backlog,
                    publish_p99_us: p99,
                });
            }
        }
        eprintln!(
            "[bench {:>6.1}s {:<7}] pub {:>9.0} msg/s {:>8.2} MB/s | cons {:>9.0} msg/s {:>8.2} MB/s | backlog {:>9} | pub p99 {:>8.3} ms",
            snap.at.duration_since(self.start).as_secs_f64(),
            PHASES[usize::from(phase).min(PHASES.len() - 1)],
            pm,
            pmb,
            cm,
            cmb,
            backlog,
            p99 as f64 / 1000.0,
        );
    }
}
