//! The checkpoint files of a partition dir, for the offline checker (`verify.rs`): the
//! DeleteRecords and cleaner checkpoints and the `leader-epoch-checkpoint`.

use std::path::Path;

use super::compact_files::{CleanerCheckpoint, CLEANER_CHECKPOINT};
use super::epoch_cache::{EpochCache, EPOCH_CHECKPOINT};
use super::log::START_CHECKPOINT;
use super::verify::Report;

/// The DeleteRecords checkpoint (a number within the log) and the cleaner checkpoint.
pub(super) fn check_checkpoints(
    dir: &Path,
    first_base: Option<i64>,
    log_end: i64,
    report: &mut Report,
) {
    let path = dir.join(START_CHECKPOINT);
    if let Ok(b) = std::fs::read(&path) {
        match String::from_utf8_lossy(&b).trim().parse::<i64>() {
            Ok(o) if o < 0 => report.error(&path, None, format!("negative log start offset {o}")),
            Ok(o) if o > log_end => report.error(
                &path,
                None,
                format!("log start offset {o} is past the log end {log_end}"),
            ),
            Ok(o) if first_base.is_some_and(|b| o < b) => report.warn(
                &path,
                None,
                format!("log start offset {o} is below the first segment (the first segment wins)"),
            ),
            Ok(_) => {}
            Err(_) => report.error(&path, None, "not a number"),
        }
    }
    let path = dir.join(CLEANER_CHECKPOINT);
    if let Ok(b) = std::fs::read(&path) {
        if CleanerCheckpoint::decode(&b).is_none() {
            report.warn(
                &path,
                None,
                "unreadable cleaner checkpoint (the next pass starts over)",
            );
        }
    }
}

/// What the epoch checkpoint is checked against.
pub(super) struct LogRange {
    pub start: i64,
    pub end: i64,
    pub has_batches: bool,
    /// Largest partitionLeaderEpoch of the batches (-1 when none).
    pub max_epoch: i32,
    /// The broker stopped cleanly (no crash left anything for recovery to repair).
    pub clean: bool,
}

/// The log start as `PartitionLog::open` computes it: the DeleteRecords checkpoint, within
/// `[first segment base, log end]`.
pub(super) fn log_start(dir: &Path, first_base: Option<i64>, log_end: i64) -> i64 {
    let base = first_base.unwrap_or(0);
    let checkpoint = std::fs::read(dir.join(START_CHECKPOINT))
        .ok()
        .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<i64>().ok());
    checkpoint.unwrap_or(base).max(base).min(log_end)
}

pub(super) fn check_epoch_checkpoint(dir: &Path, log: &LogRange, report: &mut Report) {
    let path = dir.join(EPOCH_CHECKPOINT);
    let b = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if log.has_batches {
                report.warn(
                    &path,
                    None,
                    "missing (rebuilt from the batch headers on open)",
                );
            }
            return;
        }
        Err(e) => return report.error(&path, None, format!("cannot read: {e}")),
    };
    let cache = match EpochCache::decode(&b) {
        Ok(c) => c,
        Err(why) => {
            return report.error(
                &path,
                None,
                format!("invalid leader epoch checkpoint: {why}"),
            )
        }
    };
    let entries = cache.entries();
    if let Some(first) = entries.first().filter(|e| e.start_offset < log.start) {
        report.warn(
            &path,
            None,
            format!(
                "epoch {} starts at {}, below the log start {} (moved to it on open)",
                first.epoch, first.start_offset, log.start
            ),
        );
    }
    if let Some(e) = entries.iter().find(|e| e.start_offset > log.end) {
        // Entries are written before their batches: after a crash, a lost write leaves one.
        let what = format!(
            "epoch {} starts at {}, past the log end {} (dropped on open)",
            e.epoch, e.start_offset, log.end
        );
        if log.clean {
            report.error(&path, None, what);
        } else {
            report.warn(&path, None, what);
        }
    }
    let latest = cache.latest().map_or(-1, |e| e.epoch);
    if log.max_epoch > latest {
        report.error(
            &path,
            None,
            format!(
                "a batch carries leader epoch {} but the latest epoch here is {latest}",
                log.max_epoch
            ),
        );
    }
}
