//! Partition storage: segmented logs of Kafka record batches (v2) on disk, in Kafka's layout
//! (`<base>.log`, `.index`, `.timeindex`), with batch validation, O_DIRECT or buffered appends,
//! group-commit flushes, crash recovery, rolling and retention.
//!
//! Files: `batch` (v2 framing, validation), `compression` (bounded decompression), `index`
//! (offset/time indexes), `cache` (recent batches in memory), `readahead` (the next window of a
//! reader catching up from segment files, read while its answer travels), `reclaim` (deleted
//! segment files freed off the shards), `file` (DMA/buffered file I/O), `segment*` (one segment: append, read,
//! recovery), `log*` (`PartitionLog`: the public API, reads and segment lifecycle), `compact*` (the log
//! cleaner for `cleanup.policy=compact`: pass selection and swap, batch rewriting, crash-safe
//! swap files and checkpoint), `producer_*` (idempotent producers' per-partition state: sequence
//! and epoch checks, snapshot files; `log_producers` ties them to the log: recovery, expiry),
//! `log_txn` and `txn_index` (transactions: markers, last stable offset, `.txnindex`),
//! `epoch_cache` and `log_epochs` (leader epochs and their start offsets,
//! `leader-epoch-checkpoint`), `log_replica` (a follower's appends of its leader's batches),
//! `log_truncate` and `segment_truncate` (truncation for replication),
//! `log_dirs` (disk-error classification, offline log dirs), `verify` (the offline checker behind
//! `sluice log verify`).

mod batch;
mod cache;
mod compact;
mod compact_files;
mod compact_rewrite;
#[cfg(test)]
mod compact_tests;
mod compression;
mod config;
mod epoch_cache;
mod error;
mod file;
pub(crate) use file::sync_dir_blocking;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod index;
mod log;
pub mod log_dirs;
mod log_epochs;
mod log_maint;
mod log_producers;
mod log_read;
mod log_replica;
#[cfg(test)]
mod log_replica_tests;
#[cfg(test)]
mod log_tests;
mod log_truncate;
mod log_txn;
#[cfg(test)]
mod log_txn_tests;
pub mod markers;
mod producer_snapshot;
mod producer_state;
#[cfg(test)]
mod producer_tests;
mod readahead;
#[cfg(test)]
mod readahead_tests;
mod reclaim;
mod segment;
mod segment_read;
mod segment_recover;
mod segment_truncate;
#[cfg(test)]
mod testutil;
mod txn_index;
pub mod verify;
mod verify_checkpoints;
#[cfg(test)]
mod verify_tests;

pub use batch::{
    client_batch_refusal, validate_batches, BatchInfo, ATTR_CONTROL, ATTR_TRANSACTIONAL,
};
pub use compact::CompactionStats;
pub use config::{CleanupPolicy, IoMode, LogConfig, TimestampType};
pub use epoch_cache::EpochEntry;
pub use error::StorageError;
/// Public for the criterion benchmarks (`benches/storage.rs`).
pub use index::OffsetIndex;
pub use log::{AppendResult, PartitionLog};
pub use log_producers::ProducerSnapshot;
pub use log_txn::batches_end_offset;
pub use segment_read::{FetchRecords, FileRange};

/// This shard's read figures since the last call, as `key=value` pairs for
/// the stall detector's line: reads served by the recent-batch cache, reads
/// that went to the segment files, the bytes the shard's caches hold, and
/// the bytes it spliced from segment files to sockets (`runtime::splice`),
/// read-ahead windows; and, for the whole broker since it started, the
/// deleted segment files freed by the reclaim thread and its longest close.
pub fn read_figures() -> String {
    let (hits, misses, bytes) = cache::take_counts();
    let spliced = crate::runtime::splice::take_spliced_bytes();
    let (ahead_started, ahead_taken, ahead_dropped) = readahead::take_counts();
    let (reclaimed, reclaim_longest) = reclaim::figures();
    format!(
        "cache_hits={hits} cache_misses={misses} cache_bytes={bytes} spliced_bytes={spliced} \
         ahead_started={ahead_started} ahead_taken={ahead_taken} ahead_dropped={ahead_dropped} \
         reclaimed_files={reclaimed} reclaim_longest_us={reclaim_longest}"
    )
}
