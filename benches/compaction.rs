//! Log cleaner throughput: one `PartitionLog::compact` pass over 32 MiB of sealed segments
//! (16-record batches of 1 KiB values over 4096 keys, so most records go and most batches are
//! rebuilt), uncompressed and zstd, on tmpfs with buffered I/O (CPU-bound) and on the target
//! disk with O_DIRECT. Only the pass is timed; filling the log is set-up.
//!
//! Run: `cargo bench --bench compaction`. Throughput is input bytes cleaned per second.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use sluice::storage::{CleanupPolicy, IoMode, LogConfig, PartitionLog};

const LOG_BYTES: usize = 32 << 20;
const RECORDS_PER_BATCH: usize = 16;
const VALUE_BYTES: usize = 1024;
const KEYS: usize = 4096;

/// A value of 16 distinct letters in pseudo-random order: compresses about 2:1, like real data
/// more than like a run of one byte (which would make a compressed log hold gigabytes).
fn value(seed: usize) -> Bytes {
    let mut x = seed as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
    let v: Vec<u8> = (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 16) as u8
        })
        .collect();
    Bytes::from(v)
}

fn batch(first: usize, compression: Compression) -> Bytes {
    common::batch(
        RECORDS_PER_BATCH,
        compression,
        1_700_000_000_000 + first as i64,
        |i| Some(Bytes::from(format!("key-{}", (first + i) % KEYS))),
        |i| value(first + i),
    )
}

/// Fills a fresh log in `parent` and returns how long one cleaning pass over it took.
async fn one_pass(parent: &std::path::Path, mode: IoMode, compression: Compression) -> Duration {
    let dir = tempfile::tempdir_in(parent).expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 4 << 20,
        io_mode: mode,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), cfg, 0).await.expect("open");
    let mut first = 0;
    while log.size_bytes() < LOG_BYTES as u64 {
        log.append(batch(first, compression), 1)
            .await
            .expect("append");
        first += RECORDS_PER_BATCH;
    }
    let t = Instant::now();
    let stats = log.compact(2_000_000_000_000).await.expect("compact");
    let took = t.elapsed();
    assert!(stats.is_some_and(|s| s.records_removed > 0), "a pass ran");
    log.close().await.expect("close");
    took
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("compact");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LOG_BYTES as u64));
    for (place, parent, mode) in common::places() {
        for (name, compression) in [("none", Compression::None), ("zstd", Compression::Zstd)] {
            let id = BenchmarkId::new(place, name);
            let parent = parent.clone();
            g.bench_function(id, move |b| {
                let parent = parent.clone();
                b.iter_custom(move |iters| {
                    let parent = parent.clone();
                    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                        .spawn(move || async move {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += one_pass(&parent, mode, compression).await;
                            }
                            total
                        })
                        .expect("executor")
                        .join()
                        .expect("join")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
