//! Partition storage: segmented logs of Kafka record batches (v2) on disk, in Kafka's layout
//! (`<base>.log`, `.index`, `.timeindex`), with batch validation, O_DIRECT or buffered appends,
//! group-commit flushes, crash recovery, rolling and retention.
//!
//! Files: `batch` (v2 framing, validation), `compression` (bounded decompression), `index`
//! (offset/time indexes), `cache` (recent batches in memory), `file` (DMA/buffered file I/O), `segment*` (one segment: append, read,
//! recovery), `log*` (`PartitionLog`: the public API and segment lifecycle).

mod batch;
mod cache;
mod compression;
mod config;
mod error;
mod file;
mod index;
mod log;
mod log_maint;
#[cfg(test)]
mod log_tests;
mod segment;
mod segment_read;
mod segment_recover;
#[cfg(test)]
mod testutil;

pub use batch::{validate_batches, BatchInfo};
pub use config::{IoMode, LogConfig, TimestampType};
pub use error::StorageError;
pub use log::{AppendResult, PartitionLog};
