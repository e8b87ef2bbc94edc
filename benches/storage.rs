//! Storage hot pieces: sparse offset index lookup (binary search over the
//! entries of a full 10 MiB index and a small one), and one `PartitionLog::append`
//! of a 16 x 1 KiB batch on tmpfs with buffered I/O (CPU cost of the append
//! path: validation, offset assignment, patching, copy, index) and on the
//! temp dir's disk with O_DIRECT.
//!
//! Run: `cargo bench --bench storage`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use sluice::storage::{IoMode, LogConfig, OffsetIndex, PartitionLog};

const RECORDS_PER_BATCH: usize = 16;
const VALUE_BYTES: usize = 1024;
/// Appends into one log before it is replaced by a fresh one (bounds the files: 64 MiB).
const APPENDS_PER_LOG: u64 = 4096;

fn batch() -> Bytes {
    common::batch(
        RECORDS_PER_BATCH,
        Compression::None,
        1_700_000_000_000,
        |_| None,
        |i| Bytes::from(vec![b'a' + (i % 26) as u8; VALUE_BYTES]),
    )
}

fn index_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("offset_index_lookup");
    // 1,310,720 entries = a full 10 MiB .index; 512 = a 4 KiB one.
    for entries in [512u32, 1_310_720] {
        let mut ix = OffsetIndex::default();
        for i in 0..entries {
            ix.push(i * 16, i * 4096);
        }
        let last = entries * 16;
        g.bench_with_input(BenchmarkId::from_parameter(entries), &ix, |b, ix| {
            let mut probe: u32 = 0;
            b.iter(|| {
                // A different offset each time, spread over the index.
                probe = probe.wrapping_mul(1_103_515_245).wrapping_add(12_345) % last;
                ix.lookup(std::hint::black_box(probe))
            })
        });
    }
    g.finish();
}

/// Times `iters` appends, replacing the log every `APPENDS_PER_LOG` (untimed).
async fn appends(parent: &std::path::Path, mode: IoMode, iters: u64) -> Duration {
    let b = batch();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let cfg = LogConfig {
            io_mode: mode,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), cfg, 0).await.expect("open");
        let n = (iters - done).min(APPENDS_PER_LOG);
        let t = Instant::now();
        for _ in 0..n {
            log.append(b.clone(), 1).await.expect("append");
        }
        total += t.elapsed();
        done += n;
        log.close().await.expect("close");
    }
    total
}

fn segment_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment_append_16x1KiB");
    g.throughput(Throughput::Bytes((RECORDS_PER_BATCH * VALUE_BYTES) as u64));
    for (place, parent, mode) in common::places() {
        g.bench_function(place, move |b| {
            let parent = parent.clone();
            b.iter_custom(move |iters| {
                let parent = parent.clone();
                glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                    .spawn(move || async move { appends(&parent, mode, iters).await })
                    .expect("executor")
                    .join()
                    .expect("join")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, index_lookup, segment_append);
criterion_main!(benches);
