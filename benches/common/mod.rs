//! Shared by the criterion benchmarks: one record batch, built by the same
//! encoder as `sluice produce` (`cli::records::encode_batch`).

use bytes::Bytes;
use kafka_protocol::records::Compression;
use sluice::cli::records::{encode_batch, PendingRecord};
use sluice::storage::IoMode;

/// One v2 batch of `records` records; record `i` has key `key(i)` and value `value(i)`.
pub fn batch(
    records: usize,
    compression: Compression,
    timestamp_ms: i64,
    key: impl Fn(usize) -> Option<Bytes>,
    value: impl Fn(usize) -> Bytes,
) -> Bytes {
    let recs: Vec<PendingRecord> = (0..records)
        .map(|i| PendingRecord {
            key: key(i),
            value: value(i),
        })
        .collect();
    encode_batch(&recs, compression, timestamp_ms).expect("encode batch")
}

// Each bench binary compiles this module and uses only part of it.
#[allow(dead_code)]
/// Where the disk benchmarks write: tmpfs through the page cache, and the
/// temp dir's disk with O_DIRECT. A place that does not exist is left out.
pub fn places() -> Vec<(&'static str, std::path::PathBuf, IoMode)> {
    [
        (
            "tmpfs-buffered",
            std::path::PathBuf::from("/dev/shm"),
            IoMode::Buffered,
        ),
        ("disk-direct", std::env::temp_dir(), IoMode::Direct),
    ]
    .into_iter()
    .filter(|(_, parent, _)| parent.exists())
    .collect()
}
