//! A follower's appends (`PartitionLog::append_replicated`): record batches copied from the
//! leader's log, stored as they are.
//!
//! What differs from a leader append (`PartitionLog::append`), as in Kafka's `appendAsFollower`:
//! - Offsets, partitionLeaderEpoch, timestamps and CRCs are final: the batches are validated
//!   (framing, CRC-32C, records; a batch its leader's cleaner trimmed may hold fewer records
//!   than its offset range) but not rewritten. The first batch must start at or after the
//!   log end and each batch after the previous one's last offset; gaps are allowed (a compacted
//!   leader no longer has some offsets) and the log end becomes the last batch's last offset + 1.
//! - No `max.message.bytes` check (the leader accepted the batches under its limit, which may
//!   have changed since) and no key check for compacted topics.
//! - The producer state records every batch without checks (`stage_replicated`), so that this
//!   replica, should it become leader, recognises a producer's retry as a duplicate; open
//!   transactions, markers, the last stable offset and the aborted-transaction index follow the
//!   batches as on a leader.
//! - A roll starts the new segment at the first batch's base offset (Kafka rolls at the first
//!   offset of the append for a follower).
//! - Every batch whose epoch is above the cache's latest adds a leader epoch entry.
//!
//! Durability is as for leader appends: `flush` makes them durable (group commit).

use bytes::Bytes;

use super::batch::{validate_replicated_batches, BatchInfo};
use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::log::{AppendResult, PartitionLog};
use super::producer_state::ProducerBatch;
use super::segment::AppendPlan;

/// Checks that the batches' offsets are not negative, increase, and fit one segment.
fn check_increasing(batches: &[BatchInfo]) -> Result<()> {
    let mut next = 0i64;
    for (i, b) in batches.iter().enumerate() {
        if b.base_offset < next {
            return Err(StorageError::OffsetsOutOfOrder(format!(
                "batch {i} starts at offset {} but must start at {next} or after",
                b.base_offset
            )));
        }
        next = b
            .base_offset
            .checked_add(i64::from(b.last_offset_delta) + 1)
            .ok_or_else(|| {
                StorageError::OffsetsOutOfOrder(format!("batch {i} ends past the largest offset"))
            })?;
    }
    let first = batches.first().map_or(0, |b| b.base_offset);
    if next - 1 - first >= i64::from(u32::MAX) {
        return Err(StorageError::OffsetsOutOfOrder(format!(
            "batches from offset {first} to {} span more offsets than a segment can address; \
             append them in smaller sets",
            next - 1
        )));
    }
    Ok(())
}

impl PartitionLog {
    /// Appends record batches copied from the leader (concatenated v2 batches with final
    /// offsets, epochs, timestamps and CRCs) as they are; see the module docs. Errors:
    /// `OffsetsOutOfOrder` when the first batch starts below the log end or the batches do not
    /// increase, validation errors (`CorruptMessage`, `InvalidRecord`, `UnsupportedMagic`), and
    /// I/O. `flush` makes the batches durable.
    pub async fn append_replicated(&self, records: Bytes, now_ms: i64) -> Result<AppendResult> {
        let detailed = validate_replicated_batches(&records)?;
        let batches: Vec<BatchInfo> = detailed.iter().map(|(b, _)| b.clone()).collect();
        check_increasing(&batches)?;
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return Err(StorageError::InvalidRecord("empty record set".to_string()));
        };
        let first_offset = first.base_offset;
        let last_offset = last.base_offset + i64::from(last.last_offset_delta);
        let _permit = self.lock().await?;
        self.check_open()?;
        let log_end = self.log_end.get();
        if first_offset < log_end {
            return Err(StorageError::OffsetsOutOfOrder(format!(
                "the first batch starts at offset {first_offset}, below the log end {log_end}"
            )));
        }
        let cfg = self.config.borrow().clone();
        let rolled = self
            .maybe_roll_replicated(
                &cfg,
                records.len() as u64,
                first_offset,
                last_offset,
                now_ms,
            )
            .await;
        if rolled.is_err() {
            self.note_space(&rolled);
        }
        rolled?;
        let (updated, ended) = self
            .producer_state
            .borrow()
            .stage_replicated(&ProducerBatch::from_stored(&batches));
        let epochs: Vec<(i32, i64)> = batches
            .iter()
            .map(|b| (b.leader_epoch, b.base_offset))
            .collect();
        let noted = self.note_epochs(&epochs).await;
        if noted.is_err() {
            self.note_space(&noted);
        }
        noted?;
        let plan = AppendPlan {
            batches: &batches,
            first_offset,
            leader_epoch: -1,
            append_time: None,
            index_interval: cfg.index_interval_bytes,
            now_ms,
            replicated: true,
        };
        let started = crate::runtime::stall::enabled().then(std::time::Instant::now);
        let stored = self.active().append(&records, &plan).await;
        if let Some(t) = started {
            crate::runtime::stall::record_disk(crate::runtime::stall::Disk::Write, t.elapsed());
        }
        self.note_space(&stored);
        let stored = stored?;
        self.log_end.set(last_offset + 1);
        let bases: Vec<i64> = batches.iter().map(|b| b.base_offset).collect();
        self.note_written(&detailed, &bases, &stored, None, Some(updated), &ended)
            .await?;
        Ok(AppendResult {
            base_offset: first_offset,
            last_offset,
            log_append_time_ms: -1,
            log_start_offset: self.log_start.get(),
            duplicate: false,
        })
    }

    /// Rolls before a replicated append of `incoming` bytes holding offsets `first..=last`, when
    /// a leader append would roll, or when an empty active segment cannot address `last`; the
    /// new segment starts at `first`. Caller holds the append lock.
    async fn maybe_roll_replicated(
        &self,
        cfg: &LogConfig,
        incoming: u64,
        first: i64,
        last: i64,
        now_ms: i64,
    ) -> Result<()> {
        let active = self.active();
        let due = if active.is_empty() {
            last - active.base_offset >= i64::from(u32::MAX)
        } else {
            self.roll_due(&active, cfg, incoming, last, now_ms)
        };
        if due {
            self.roll_at(first).await?;
        }
        Ok(())
    }
}
