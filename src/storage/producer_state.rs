//! Per-partition state of idempotent (and, later, transactional) producers, as Kafka's
//! `ProducerStateManager`: for each producer id, its epoch, the sequence and offset ranges of its
//! last `BATCHES_PER_PRODUCER` batches, its last timestamp and the first offset of its open
//! transaction.
//!
//! `PartitionLog::append` asks `stage` whether a record set may be appended: under the append
//! lock, before offsets are taken, every batch with a producer id is checked against the state as
//! it would be after the set's earlier batches:
//! - epoch older than the producer's current epoch: `InvalidProducerEpoch` (fenced);
//! - newer epoch: the base sequence must be 0 (`OutOfOrderSequence` otherwise), and the new
//!   epoch starts an empty batch history;
//! - same epoch: a batch whose first and last sequence equal one of the remembered batches is a
//!   duplicate (a retry of an acknowledged batch), anything else must start at last sequence + 1
//!   (wrapping from `i32::MAX` to 0);
//! - a producer id with no state (new, or expired) is accepted at any sequence (KIP-360).
//!
//! The staged entries replace the live ones only after the bytes were written (`apply`), so a
//! failed append leaves the state untouched. Recovery (`log_producers.rs`) replays stored batch
//! headers through `replay`, which records without checking, as Kafka's replication origin does;
//! a follower's appends (`PartitionLog::append_replicated`) go through `stage_replicated`, which
//! records the same way but, like `stage`, leaves the live state alone until `apply`.

use std::collections::{BTreeMap, VecDeque};

use super::batch::BatchInfo;
use super::compact_rewrite::{ATTR_CONTROL, ATTR_TRANSACTIONAL};
use super::error::{Result, StorageError};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;

/// Sequence, offsets and timestamp of one appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// State of one producer id in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most `BATCHES_PER_PRODUCER`, all of the current epoch.
    pub batches: VecDeque<BatchMeta>,
    /// Timestamp of its last batch (max timestamp as stored: append time for LogAppendTime).
    pub last_timestamp: i64,
    /// First offset of its open transaction in this partition (its first transactional batch
    /// after its last marker); the last stable offset is the smallest of these.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_PER_PRODUCER),
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }

    /// Sequence of the last batch, -1 if none of this epoch is remembered.
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    /// Records an accepted (or replayed) batch.
    fn record(&mut self, b: &ProducerBatch) {
        if b.epoch != self.epoch {
            self.epoch = b.epoch;
            self.batches.clear();
        }
        self.last_timestamp = b.max_timestamp;
        if b.control {
            // A transaction marker ends the open transaction and carries no sequence.
            self.current_txn_first_offset = None;
            return;
        }
        if b.transactional && self.current_txn_first_offset.is_none() {
            self.current_txn_first_offset = Some(b.first_offset);
        }
        if b.base_sequence < 0 {
            // A coordinator's own transactional write (TxnOffsetCommit):
            // part of the transaction, but not sequenced.
            return;
        }
        if self.batches.len() == BATCHES_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchMeta {
            first_seq: b.base_sequence,
            last_seq: b.last_sequence(),
            first_offset: b.first_offset,
            last_offset: b.first_offset + i64::from(b.last_offset_delta),
            max_timestamp: b.max_timestamp,
        });
    }

    /// The remembered batch with exactly this sequence range, if any.
    fn find_duplicate(&self, first_seq: i32, last_seq: i32) -> Option<BatchMeta> {
        self.batches
            .iter()
            .find(|m| m.first_seq == first_seq && m.last_seq == last_seq)
            .copied()
    }
}

/// The producer fields of one batch of a record set, with the offsets it gets (or has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub last_offset_delta: i32,
    pub first_offset: i64,
    /// As stored: the append time for LogAppendTime topics.
    pub max_timestamp: i64,
    pub transactional: bool,
    pub control: bool,
}

impl ProducerBatch {
    /// The producer fields of each batch of a validated record set whose first batch gets
    /// `first_offset`.
    pub fn from_infos(
        infos: &[BatchInfo],
        first_offset: i64,
        append_time: Option<i64>,
    ) -> Vec<ProducerBatch> {
        let mut offset = first_offset;
        let mut out = Vec::with_capacity(infos.len());
        for b in infos {
            out.push(ProducerBatch {
                producer_id: b.producer_id,
                epoch: b.producer_epoch,
                base_sequence: b.base_sequence,
                last_offset_delta: b.last_offset_delta,
                first_offset: offset,
                max_timestamp: append_time.unwrap_or(b.max_timestamp),
                transactional: b.attributes & ATTR_TRANSACTIONAL != 0,
                control: b.attributes & ATTR_CONTROL != 0,
            });
            offset += i64::from(b.last_offset_delta) + 1;
        }
        out
    }

    /// The producer fields of each batch of a replicated record set, whose offsets and
    /// timestamps are final (`PartitionLog::append_replicated`).
    pub fn from_stored(infos: &[BatchInfo]) -> Vec<ProducerBatch> {
        infos
            .iter()
            .map(|b| ProducerBatch {
                producer_id: b.producer_id,
                epoch: b.producer_epoch,
                base_sequence: b.base_sequence,
                last_offset_delta: b.last_offset_delta,
                first_offset: b.base_offset,
                max_timestamp: b.max_timestamp,
                transactional: b.attributes & ATTR_TRANSACTIONAL != 0,
                control: b.attributes & ATTR_CONTROL != 0,
            })
            .collect()
    }

    /// Sequence of the batch's last record: Kafka's `baseSequence + lastOffsetDelta`, wrapping
    /// past `i32::MAX` to 0.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `seq + delta`, wrapping past `i32::MAX` to 0 (sequences are never negative).
pub(crate) fn increment_sequence(seq: i32, delta: i32) -> i32 {
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
}

/// Whether `next` directly follows `last` (-1: nothing yet, so `next` must be 0).
fn in_sequence(last: i32, next: i32) -> bool {
    next == increment_sequence(last, 1)
}

/// A transaction ended by a control batch (marker) of a record set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxnEnd {
    /// Index of the control batch in the record set.
    pub batch: usize,
    pub producer_id: i64,
    /// First offset of the transaction it ends; the marker's own offset when the producer had
    /// no open transaction here (Kafka writes markers to every partition of a transaction).
    pub first_offset: i64,
    /// Offset of the marker.
    pub marker_offset: i64,
}

/// What `stage` decided for a record set.
#[derive(Debug)]
pub(crate) enum Staged {
    /// Append it, then `apply` these entries (each producer's state after the set). `ended`
    /// lists the transactions its control batches end, in order.
    Append {
        updated: BTreeMap<i64, ProducerEntry>,
        ended: Vec<TxnEnd>,
    },
    /// Every batch is a retry of one already in the log: append nothing and answer with the
    /// original offsets (first batch's first offset, last batch's last offset).
    Duplicate { first: BatchMeta, last: BatchMeta },
}

/// How one batch relates to its producer's state.
enum Check {
    Accept,
    Duplicate(BatchMeta),
}

/// Producer id to state, for one partition. A BTreeMap so snapshots and listings are ordered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateMap {
    pub producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateMap {
    /// Checks a record set's batches in order (see the module docs); changes nothing.
    pub fn stage(&self, batches: &[ProducerBatch]) -> Result<Staged> {
        let mut updated: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        let mut duplicates: Vec<BatchMeta> = Vec::new();
        let mut fresh = 0usize;
        let mut ended = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            if b.producer_id < 0 {
                fresh += 1;
                continue;
            }
            let current = updated
                .get(&b.producer_id)
                .or_else(|| self.producers.get(&b.producer_id));
            match check(current, b)? {
                Check::Duplicate(meta) => duplicates.push(meta),
                Check::Accept => {
                    fresh += 1;
                    let mut entry = match updated.remove(&b.producer_id) {
                        Some(e) => e,
                        None => self
                            .producers
                            .get(&b.producer_id)
                            .cloned()
                            .unwrap_or_else(|| ProducerEntry::new(b.epoch)),
                    };
                    if b.control {
                        ended.push(TxnEnd {
                            batch: i,
                            producer_id: b.producer_id,
                            first_offset: entry.current_txn_first_offset.unwrap_or(b.first_offset),
                            marker_offset: b.first_offset,
                        });
                    }
                    entry.record(b);
                    updated.insert(b.producer_id, entry);
                }
            }
        }
        match (duplicates.first(), duplicates.last()) {
            (Some(&first), Some(&last)) if fresh == 0 => Ok(Staged::Duplicate { first, last }),
            (Some(_), _) => Err(StorageError::OutOfOrderSequence(
                "a record set mixes retried (duplicate) batches with new ones".to_string(),
            )),
            _ => Ok(Staged::Append { updated, ended }),
        }
    }

    /// A follower's `stage`: records a replicated record set's batches without any check (its
    /// leader checked them; Kafka's replication origin), returning each producer's entry after
    /// the set and the transactions its control batches end, for `apply` once it is written.
    /// Recording the sequences is what lets this replica, should it become leader, answer a
    /// producer's retry of one of these batches as a duplicate.
    pub fn stage_replicated(
        &self,
        batches: &[ProducerBatch],
    ) -> (BTreeMap<i64, ProducerEntry>, Vec<TxnEnd>) {
        let mut updated: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        let mut ended = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            if b.producer_id < 0 {
                continue;
            }
            let mut entry = match updated.remove(&b.producer_id) {
                Some(e) => e,
                None => self
                    .producers
                    .get(&b.producer_id)
                    .cloned()
                    .unwrap_or_else(|| ProducerEntry::new(b.epoch)),
            };
            if b.control {
                ended.push(TxnEnd {
                    batch: i,
                    producer_id: b.producer_id,
                    first_offset: entry.current_txn_first_offset.unwrap_or(b.first_offset),
                    marker_offset: b.first_offset,
                });
            }
            entry.record(b);
            updated.insert(b.producer_id, entry);
        }
        (updated, ended)
    }

    /// Installs the entries of a staged append that was written.
    pub fn apply(&mut self, updated: BTreeMap<i64, ProducerEntry>) {
        self.producers.extend(updated);
    }

    /// Records a batch found in the log during recovery, without checks (the log is the truth).
    pub fn replay(&mut self, b: &ProducerBatch) {
        if b.producer_id < 0 {
            return;
        }
        self.producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry::new(b.epoch))
            .record(b);
    }

    /// The smallest first offset of the open transactions, if any (the last stable offset when
    /// there is one). Linear in the producers: callers cache it (`PartitionLog::first_unstable`).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers
            .values()
            .filter_map(|e| e.current_txn_first_offset)
            .min()
    }

    /// Forgets producers without an open transaction whose last timestamp is at least
    /// `expiration_ms` old (Kafka's `producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }
}

/// Checks one batch against its producer's current (possibly staged) state.
fn check(current: Option<&ProducerEntry>, b: &ProducerBatch) -> Result<Check> {
    // Unsequenced transactional batches are the group coordinator's
    // TxnOffsetCommit writes (clients cannot write __consumer_offsets).
    let unsequenced_txn = b.transactional && b.base_sequence < 0;
    if b.base_sequence < 0 && !b.control && !unsequenced_txn {
        return Err(StorageError::InvalidRecord(format!(
            "invalid sequence number {} in a batch of producer id {}",
            b.base_sequence, b.producer_id
        )));
    }
    let Some(e) = current else {
        return Ok(Check::Accept);
    };
    if b.epoch < e.epoch {
        return Err(StorageError::InvalidProducerEpoch(format!(
            "epoch {} of producer id {} is older than the current epoch {}",
            b.epoch, b.producer_id, e.epoch
        )));
    }
    if b.control || unsequenced_txn {
        return Ok(Check::Accept);
    }
    if b.epoch > e.epoch {
        if b.base_sequence != 0 {
            return Err(StorageError::OutOfOrderSequence(format!(
                "producer id {} bumped its epoch to {} with base sequence {} (must be 0)",
                b.producer_id, b.epoch, b.base_sequence
            )));
        }
        return Ok(Check::Accept);
    }
    if let Some(meta) = e.find_duplicate(b.base_sequence, b.last_sequence()) {
        return Ok(Check::Duplicate(meta));
    }
    let last = e.last_sequence();
    if !in_sequence(last, b.base_sequence) {
        return Err(StorageError::OutOfOrderSequence(format!(
            "producer id {} epoch {}: base sequence {} does not follow the last sequence {last}",
            b.producer_id, b.epoch, b.base_sequence
        )));
    }
    Ok(Check::Accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            base_sequence: seq,
            last_offset_delta: n - 1,
            first_offset: offset,
            max_timestamp: 1000 + offset,
            transactional: false,
            control: false,
        }
    }

    fn append(map: &mut ProducerStateMap, batches: &[ProducerBatch]) -> Result<()> {
        match map.stage(batches)? {
            Staged::Append { updated, .. } => {
                map.apply(updated);
                Ok(())
            }
            Staged::Duplicate { .. } => panic!("unexpected duplicate"),
        }
    }

    #[test]
    fn sequence_increments_wrap_like_kafka() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(in_sequence(-1, 0));
        assert!(!in_sequence(-1, 1));
        assert!(!in_sequence(3, 3));
    }

    #[test]
    fn stage_checks_against_earlier_batches_of_the_same_set() {
        let mut m = ProducerStateMap::default();
        append(&mut m, &[pb(1, 0, 0, 2, 0), pb(1, 0, 2, 3, 2)]).expect("in order");
        assert_eq!(m.producers[&1].last_sequence(), 4);
        let err = m.stage(&[pb(1, 0, 5, 1, 5), pb(1, 0, 7, 1, 6)]);
        assert!(matches!(err, Err(StorageError::OutOfOrderSequence(_))));
        // Nothing of the refused set was recorded.
        assert_eq!(m.producers[&1].last_sequence(), 4);
    }

    #[test]
    fn mixed_duplicate_and_new_is_refused() {
        let mut m = ProducerStateMap::default();
        append(&mut m, &[pb(1, 0, 0, 2, 0)]).expect("first");
        let r = m.stage(&[pb(1, 0, 0, 2, 2), pb(1, 0, 2, 1, 4)]);
        assert!(matches!(r, Err(StorageError::OutOfOrderSequence(_))));
        let r = m.stage(&[pb(1, 0, 0, 2, 2), pb(-1, -1, -1, 1, 4)]);
        assert!(matches!(r, Err(StorageError::OutOfOrderSequence(_))));
    }

    #[test]
    fn control_batch_ends_transaction_and_keeps_no_sequence() {
        let mut m = ProducerStateMap::default();
        let mut t = pb(9, 0, 0, 2, 10);
        t.transactional = true;
        append(&mut m, &[t]).expect("txn data");
        assert_eq!(m.producers[&9].current_txn_first_offset, Some(10));
        // Open transactions never expire.
        assert_eq!(m.expire(i64::MAX, 1), 0);
        let mut marker = pb(9, 0, -1, 1, 12);
        marker.control = true;
        append(&mut m, &[marker]).expect("marker");
        let e = &m.producers[&9];
        assert_eq!(e.current_txn_first_offset, None);
        assert_eq!(e.last_sequence(), 1);
        assert_eq!(m.expire(i64::MAX, 1), 1);
    }

    #[test]
    fn replicated_batches_are_recorded_without_checks() {
        let mut m = ProducerStateMap::default();
        append(&mut m, &[pb(1, 0, 0, 2, 0)]).expect("first");
        // Out of sequence and an older epoch: a leader accepted them, so a follower records them.
        let mut t = pb(2, 3, 7, 1, 2);
        t.transactional = true;
        let mut marker = pb(2, 3, -1, 1, 9);
        marker.control = true;
        let (updated, ended) = m.stage_replicated(&[pb(1, 0, 5, 2, 2), t, marker]);
        assert_eq!(
            ended,
            vec![TxnEnd {
                batch: 2,
                producer_id: 2,
                first_offset: 2,
                marker_offset: 9
            }]
        );
        assert_eq!(m.producers[&1].last_sequence(), 1, "staged only");
        m.apply(updated);
        assert_eq!(m.producers[&1].last_sequence(), 6);
        assert_eq!(m.producers[&2].current_txn_first_offset, None);
        // The recorded batch is now a duplicate for the leader path.
        assert!(matches!(
            m.stage(&[pb(1, 0, 5, 2, 20)]),
            Ok(Staged::Duplicate { first, .. }) if first.first_offset == 2
        ));
    }

    #[test]
    fn negative_sequence_with_producer_id_is_invalid() {
        let m = ProducerStateMap::default();
        let r = m.stage(&[pb(1, 0, -1, 1, 0)]);
        assert!(matches!(r, Err(StorageError::InvalidRecord(_))));
    }
}
