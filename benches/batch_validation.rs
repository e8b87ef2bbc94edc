//! Produce-path validation cost: CRC-32C and the full `validate_batches`
//! (framing, CRC, record walk, decompression) for 1 KiB records, uncompressed
//! and zstd, in batches of 1, 16 and 256 records.
//!
//! Run: `cargo bench --bench batch_validation`. Figures go to BENCHMARKS.md
//! with the machine's ceilings.

mod common;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::Compression;
use sluice::storage::validate_batches;

fn batch(records: usize, value_bytes: usize, compression: Compression) -> Bytes {
    common::batch(
        records,
        compression,
        1_700_000_000_000,
        |i| Some(Bytes::from(format!("key-{i}"))),
        |i| Bytes::from(vec![b'a' + (i % 26) as u8; value_bytes]),
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate_batches");
    for (name, compression) in [("none", Compression::None), ("zstd", Compression::Zstd)] {
        for records in [1usize, 16, 256] {
            let b = batch(records, 1024, compression);
            g.throughput(Throughput::Bytes((records * 1024) as u64));
            g.bench_with_input(BenchmarkId::new(name, records), &b, |bench, b| {
                bench.iter(|| validate_batches(b, 64 << 20).expect("valid batch"))
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("crc32c");
    let data = vec![7u8; 256 * 1024];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("256KiB", |b| b.iter(|| crc32c::crc32c(&data)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
