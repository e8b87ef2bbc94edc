//! Cross-shard hand-off: a `runtime::submit_to` round trip from shard 0 to
//! shard 1 (closure queued on shard 1's inbox, run there, result back over a
//! oneshot), against the same call to the caller's own shard (runs in place).
//! Two pinned glommio shards, as `sluice start --smp 2` runs them.
//!
//! Run: `cargo bench --bench shard_handoff`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::channel::mpsc;
use futures::StreamExt;
use sluice::runtime;

/// A measurement request to shard 0: (target shard, round trips, where to send the time).
type Job = (usize, u64, std::sync::mpsc::Sender<Duration>);

fn main() {
    let (jobs_tx, jobs_rx) = mpsc::unbounded::<Job>();
    let jobs_rx = Arc::new(std::sync::Mutex::new(Some(jobs_rx)));
    let done = Arc::new(AtomicBool::new(false));
    let shards = {
        let done = done.clone();
        std::thread::spawn(move || {
            // The broker's `reactor.spin.before.park.us`, for an A/B of the hand-off.
            let spin_us = std::env::var("SPIN_BEFORE_PARK_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let opts = runtime::ShardOptions {
                io_memory: 0,
                spin_before_park: Duration::from_micros(spin_us),
            };
            runtime::run_shards(2, opts, move |id| {
                let jobs = if id == 0 {
                    jobs_rx.lock().expect("lock").take()
                } else {
                    None
                };
                let done = done.clone();
                async move {
                    match jobs {
                        Some(mut jobs) => {
                            while let Some((target, iters, reply)) = jobs.next().await {
                                let t = Instant::now();
                                for i in 0..iters {
                                    let out = runtime::submit_to(target, move || async move {
                                        i.wrapping_add(1)
                                    })
                                    .await
                                    .expect("shard running");
                                    std::hint::black_box(out);
                                }
                                let _ = reply.send(t.elapsed());
                            }
                            done.store(true, Ordering::Relaxed);
                        }
                        // Shard 1 serves its inbox until shard 0 is done.
                        None => {
                            while !done.load(Ordering::Relaxed) {
                                runtime::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                }
            })
            .expect("shards");
        })
    };

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("submit_to_round_trip");
    for (name, target) in [("same_shard", 0usize), ("shard0_to_shard1", 1)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (tx, rx) = std::sync::mpsc::channel();
                jobs_tx
                    .unbounded_send((target, iters, tx))
                    .expect("shard 0 running");
                rx.recv().expect("measurement")
            })
        });
    }
    g.finish();
    c.final_summary();
    drop(jobs_tx);
    shards.join().expect("shards thread");
}
