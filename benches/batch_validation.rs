//! Produce-path validation cost: CRC-32C and the full `validate_batches`
//! (framing, CRC, record walk, decompression) for 1 KiB records, uncompressed
//! and zstd, in batches of 1, 16 and 256 records.
//!
//! Run: `cargo bench --bench batch_validation`. Figures go to BENCHMARKS.md
//! with the machine's ceilings.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice::storage::validate_batches;

fn batch(records: usize, value_bytes: usize, compression: Compression) -> Bytes {
    let recs: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: kafka-protocol splits batches where offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &recs, &opts).expect("encode batch");
    buf.freeze()
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
