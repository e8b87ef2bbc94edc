//! The partition side of transactions (KIP-98): transaction markers, the last stable offset and
//! the aborted-transaction index of a `PartitionLog`.
//!
//! - Transactional batches are appended like any other; the producer state records the first
//!   offset of each producer's open transaction (`producer_state.rs`).
//! - `append_marker` writes a COMMIT or ABORT control batch (`storage::markers`) through the same
//!   append path, so the producer-epoch check applies (an older epoch: INVALID_PRODUCER_EPOCH),
//!   and ends the producer's open transaction. A marker for a producer with no open transaction
//!   here is written all the same, as Kafka writes markers to every partition of a transaction.
//! - Every ABORT control batch appended (whoever appends it) adds an entry to the active
//!   segment's aborted-transaction index (`txn_index.rs`): the transaction's first offset, the
//!   marker's offset and the LSO after it.
//! - The last stable offset is the smallest first offset of the open transactions, else the log
//!   end (the high watermark on one node). read_committed fetches stop there.
//!
//! Durability: the index entry is appended to `<base>.txnindex` and fdatasynced before
//! `append_marker` flushes the marker itself, and `append_marker` returns only once both are
//! durable (the coordinator then records the transaction complete). Recovery after a crash
//! rebuilds the active segment's entries from the log (`rebuild_active_txn_index`); sealed
//! segments' files were synced when written. Retention and DeleteRecords remove a segment's
//! index with it; the cleaner keeps every control and transactional batch and carries the
//! entries of the segments it merges into the merged segment's index (`compact.rs`).

use bytes::Bytes;
use tracing::warn;

use super::batch::{BatchHeader, BatchInfo};
use super::compact_rewrite::{parse_records, records_section};
use super::error::{Result, StorageError};
use super::log::{AppendResult, PartitionLog};
use super::markers::{control_batch, parse_control_key, ControlType, Marker};
use super::producer_state::TxnEnd;
use super::txn_index::{self, AbortedTxn};

/// Whether a whole control batch holds an ABORT marker (Kafka: `ControlRecordType.ABORT`); None
/// when its control record cannot be read.
pub(crate) fn is_abort_marker(batch: &[u8]) -> Option<bool> {
    let h = BatchHeader::parse(batch)?;
    let plain = records_section(batch, &h).ok()?;
    let records = parse_records(&plain, h.records_count).ok()?;
    let key = records.first()?.key?;
    Some(parse_control_key(key)? == ControlType::Abort)
}

/// The offset after the last batch of `records` (whole v2 batches as a fetch returns them); None
/// when it holds no whole batch.
pub fn batches_end_offset(records: &[u8]) -> Option<i64> {
    let mut pos = 0usize;
    let mut end = None;
    while let Some(h) = records.get(pos..).and_then(BatchHeader::parse) {
        let size = h.total_size()?;
        if pos + size > records.len() {
            break;
        }
        end = Some(h.last_offset() + 1);
        pos += size;
    }
    end
}

impl PartitionLog {
    /// Writes a transaction marker for `producer_id` (see the module docs) and returns once it
    /// and its index entry are durable. Errors: `InvalidProducerEpoch` for an epoch older than
    /// the producer's current one here, `InvalidRecord` for a negative producer id, and I/O.
    pub async fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendResult> {
        if producer_id < 0 || producer_epoch < 0 {
            return Err(StorageError::InvalidRecord(format!(
                "transaction marker for producer id {producer_id} epoch {producer_epoch}"
            )));
        }
        let batch = control_batch(&Marker {
            commit,
            producer_id,
            producer_epoch,
            coordinator_epoch,
            timestamp_ms: now_ms,
        });
        let r = self.append(batch, now_ms).await?;
        self.flush(r.last_offset).await?;
        Ok(r)
    }

    /// Offsets below this belong to no open transaction: the smallest first offset of the open
    /// transactions, else the log end (the high watermark on one node).
    pub fn last_stable_offset(&self) -> i64 {
        let end = self.log_end.get();
        self.first_unstable.get().map_or(end, |f| f.min(end))
    }

    /// (producer id, first offset) of every aborted transaction whose offsets overlap
    /// `[fetch_offset, upper)`, scanning the segments' indexes from the one holding
    /// `fetch_offset` (Kafka's `collectAbortedTransactions`). In memory: never waits.
    pub fn aborted_transactions(&self, fetch_offset: i64, upper: i64) -> Result<Vec<(i64, i64)>> {
        self.check_open()?;
        let mut out = Vec::new();
        if upper <= fetch_offset {
            return Ok(out);
        }
        let segs = self.segments.borrow();
        let first = segs
            .partition_point(|s| s.base_offset <= fetch_offset)
            .saturating_sub(1);
        for seg in &segs[first..] {
            if txn_index::collect(&seg.st.borrow().aborted, fetch_offset, upper, &mut out) {
                break;
            }
        }
        Ok(out)
    }

    /// Adds the index entries of the ABORT markers among the control batches of an append that
    /// was just written to the active segment (caller holds the append lock; the producer state
    /// and `first_unstable` are already updated). The LSO of an entry counts the transactions
    /// still open after the whole append and those ended by later markers of the same append
    /// (Kafka completes them one by one), so a scan stopping at it misses none.
    pub(crate) async fn index_aborted(
        &self,
        records: &Bytes,
        batches: &[(BatchInfo, i32)],
        ended: &[TxnEnd],
    ) -> Result<()> {
        let mut starts = Vec::with_capacity(batches.len());
        let mut at = 0usize;
        for (b, _) in batches {
            starts.push((at, b.size));
            at += b.size;
        }
        let mut lso = self.last_stable_offset();
        let mut entries = Vec::with_capacity(ended.len());
        for e in ended.iter().rev() {
            let Some(&(pos, size)) = starts.get(e.batch) else {
                continue;
            };
            let abort = is_abort_marker(&records[pos..pos + size]);
            if abort.is_none() {
                warn!(dir = %self.dir.display(), offset = e.marker_offset, "control batch with an unreadable marker: not indexed as an abort");
            }
            if abort == Some(true) {
                entries.push(AbortedTxn {
                    producer_id: e.producer_id,
                    first_offset: e.first_offset,
                    last_offset: e.marker_offset,
                    last_stable_offset: lso,
                });
            }
            lso = lso.min(e.first_offset);
        }
        let active = self.active();
        for t in entries.into_iter().rev() {
            active.append_aborted(t).await?;
        }
        Ok(())
    }

    /// Recovery: the active segment's index entries for markers at or after `cut` are replaced
    /// by `replayed` (those the producer-state replay found in the log); the file is rewritten if
    /// that changed anything. Entries before `cut` were durable before the snapshot the replay
    /// started from was taken.
    pub(crate) async fn rebuild_active_txn_index(
        &self,
        cut: i64,
        replayed: Vec<AbortedTxn>,
    ) -> Result<()> {
        let active = self.active();
        let changed = {
            let mut st = active.st.borrow_mut();
            let before = st.aborted.clone();
            st.aborted.retain(|t| t.last_offset < cut);
            st.aborted.extend(replayed);
            st.aborted != before
        };
        if changed {
            active.rewrite_txn_index().await?;
        }
        Ok(())
    }
}
