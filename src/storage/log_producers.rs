//! Producer state of a `PartitionLog` (rules in `producer_state.rs`, files in
//! `producer_snapshot.rs`): loading it on open, snapshots at roll and close, expiry at
//! housekeeping, and the listing DescribeProducers needs.
//!
//! Recovery: the newest snapshot that decodes and lies at or below the log end is loaded (newer
//! ones past the log end and ones that fail to decode are deleted with a warning), then the
//! headers of every stored batch from its offset to the log end are replayed; with no usable
//! snapshot the replay starts at the first segment. Snapshots are taken only after the segments
//! below their offset are durable (a roll seals first; close seals first), so replay after a
//! kill -9 brings back the state of exactly the batches recovery kept: the acknowledged ones
//! (acks need a flush, and recovery keeps every flushed batch).
//!
//! A segment whose headers cannot be walked is skipped with a warning rather than failing the
//! open (its producers may become unknown).
//!
//! Snapshots are an accelerator and a memory of what the log no longer holds, never the only
//! record of acknowledged state: failing to write one is logged, not fatal. What the log no
//! longer holds: retention or DeleteRecords deleting a producer's batches, or compaction dropping
//! all records of its last batches (this cleaner, unlike Kafka's, does not keep empty batches; a
//! batch it only trims keeps its base sequence and lastOffsetDelta, so replay reads its range).
//! If no snapshot covers that producer either, its state is simply unknown after a restart, and
//! an unknown producer's next batch is accepted at any sequence (KIP-360), so only duplicate
//! detection of its in-flight retries is lost.

use tracing::{debug, info, warn};

use super::compact_rewrite::{ATTR_CONTROL, ATTR_TRANSACTIONAL};
use super::error::Result;
use super::log::PartitionLog;
use super::log_txn::is_abort_marker;
use super::producer_snapshot::{
    decode, list_snapshots, remove_snapshot, snapshot_path, write_snapshot, SNAPSHOTS_KEPT,
};
use super::producer_state::{ProducerBatch, ProducerStateMap};
use super::txn_index::AbortedTxn;

/// One producer's state in a partition, as DescribeProducers reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    /// Last sequence appended in the current epoch, -1 if none.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// Always -1: markers' coordinator epochs are not recorded yet (see docs/transactions.md).
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction, -1 if none.
    pub current_txn_start_offset: i64,
}

impl PartitionLog {
    /// Rebuilds the producer state on open: newest usable snapshot, then replay of the batch
    /// headers after it (see the module docs).
    pub(crate) async fn load_producer_state(&self) -> Result<()> {
        let log_end = self.log_end.get();
        let mut loaded: Option<(i64, ProducerStateMap)> = None;
        for offset in list_snapshots(&self.dir)?.into_iter().rev() {
            if offset > log_end {
                warn!(dir = %self.dir.display(), offset, log_end, "producer snapshot beyond the log end; deleting it");
                remove_snapshot(&self.dir, offset)?;
                continue;
            }
            let path = snapshot_path(&self.dir, offset);
            let Some(bytes) = super::file::read_small_file(&path).await? else {
                continue;
            };
            match decode(&bytes, offset) {
                Ok(map) => {
                    loaded = Some((offset, map));
                    break;
                }
                Err(why) => {
                    warn!(snapshot = %path.display(), "ignoring unreadable producer snapshot ({why}); deleting it and rebuilding from further back");
                    remove_snapshot(&self.dir, offset)?;
                }
            }
        }
        let (from, mut map) = loaded.unwrap_or_default();
        // Markers at or after `cut` are in the active segment and after the snapshot: their
        // aborted-transaction index entries are rebuilt from the log (see `log_txn.rs`).
        let cut = from.max(self.active().base_offset);
        let mut aborted: Vec<AbortedTxn> = Vec::new();
        let mut replayed = 0u64;
        for seg in self.segments_snapshot() {
            if seg.next_offset() <= from {
                continue;
            }
            let walked = seg
                .for_each_header(from, |h, control| {
                    if h.base_offset < from {
                        return;
                    }
                    replayed += 1;
                    let b = ProducerBatch {
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        base_sequence: h.base_sequence,
                        last_offset_delta: h.last_offset_delta,
                        first_offset: h.base_offset,
                        max_timestamp: h.max_timestamp,
                        transactional: h.attributes & ATTR_TRANSACTIONAL != 0,
                        control: h.attributes & ATTR_CONTROL != 0,
                    };
                    let first = map
                        .producers
                        .get(&b.producer_id)
                        .and_then(|e| e.current_txn_first_offset);
                    map.replay(&b);
                    let abort = control.and_then(is_abort_marker);
                    if b.producer_id >= 0 && h.base_offset >= cut && abort == Some(true) {
                        let end = h.last_offset() + 1;
                        aborted.push(AbortedTxn {
                            producer_id: b.producer_id,
                            first_offset: first.unwrap_or(h.base_offset),
                            last_offset: h.base_offset,
                            last_stable_offset: map.first_unstable_offset().unwrap_or(end),
                        });
                    }
                })
                .await;
            // A sealed segment with an unreadable header (its data is unreadable to fetches too)
            // must not keep the partition offline: its producers' batches are skipped, and a
            // producer left unknown is accepted at any sequence.
            if let Err(e) = walked {
                warn!(dir = %self.dir.display(), segment = seg.base_offset, "producer state replay skips the rest of a segment: {e}");
            }
        }
        if replayed > 0 || !map.producers.is_empty() {
            info!(dir = %self.dir.display(), snapshot_offset = from, replayed_batches = replayed, producers = map.producers.len(), "loaded producer state");
        }
        self.first_unstable.set(map.first_unstable_offset());
        self.rebuild_active_txn_index(cut, aborted).await?;
        *self.producer_state.borrow_mut() = map;
        Ok(())
    }

    /// Writes the snapshot covering everything below the log end and prunes old ones. Caller
    /// holds the append lock and has made every batch below the log end durable. A failure is
    /// logged only: recovery replays from an older snapshot instead.
    pub(crate) async fn take_producer_snapshot(&self) {
        let offset = self.log_end.get();
        let map = self.producer_state.borrow().clone();
        if let Err(e) = write_snapshot(&self.dir, offset, &map).await {
            warn!(dir = %self.dir.display(), offset, "writing producer snapshot failed: {e}");
            return;
        }
        if let Err(e) = self.prune_producer_snapshots() {
            warn!(dir = %self.dir.display(), "pruning producer snapshots failed: {e}");
        }
    }

    /// Keeps the newest `SNAPSHOTS_KEPT` snapshots, minus any below the first segment (the
    /// batches they summarise are gone; the state they hold lives on in memory and in newer
    /// snapshots).
    pub(crate) fn prune_producer_snapshots(&self) -> Result<()> {
        let first_base = self.segments.borrow().first().map(|s| s.base_offset);
        let offsets = list_snapshots(&self.dir)?;
        let keep_from = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
        for (i, &o) in offsets.iter().enumerate() {
            if i < keep_from || first_base.is_some_and(|b| o < b) {
                debug!(dir = %self.dir.display(), offset = o, "deleting old producer snapshot");
                remove_snapshot(&self.dir, o)?;
            }
        }
        Ok(())
    }

    /// Forgets producers idle for producer.id.expiration.ms (by their last batch's timestamp)
    /// that have no open transaction; returns how many. Called by `housekeeping`.
    pub fn expire_producers(&self, now_ms: i64) -> usize {
        let expiration_ms = self.config.borrow().producer_id_expiration_ms;
        let n = self
            .producer_state
            .borrow_mut()
            .expire(now_ms, expiration_ms);
        if n > 0 {
            debug!(dir = %self.dir.display(), expired = n, "expired idle producer ids");
        }
        n
    }

    /// Every producer id the partition has state for, ordered by id (for DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSnapshot> {
        self.producer_state
            .borrow()
            .producers
            .iter()
            .map(|(&producer_id, e)| ProducerSnapshot {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.last_sequence(),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: -1,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
            })
            .collect()
    }
}
