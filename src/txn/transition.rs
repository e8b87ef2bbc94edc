//! The vocabulary of the transaction state machine: Kafka's transaction
//! states (with their persisted ids and reported names), the `Transition`
//! an operation asks the coordinator to persist, and the outcomes of the
//! operations in `state.rs`.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::records::{self, TxnValue};
use super::TxnError;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// Kafka never hands out the last two epochs of a producer id, so that the
/// coordinator can always bump once more to fence the producer.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The transaction status byte of the `__transaction_state` value.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name Kafka reports in DescribeTransactions and ListTransactions.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether an idle id in this state may expire (no transaction open).
    pub fn expiration_allowed(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }

    /// The states this one may be entered from (Kafka's table).
    pub(super) fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteCommit, CompleteAbort],
            PrepareEpochFence => &[Ongoing],
        }
    }
}

/// A partition of a transaction: (topic, partition).
pub type TopicPartition = (String, i32);

/// The whole next state of a transactional id, to persist and then apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: TxnState,
    pub producer_id: i64,
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub txn_timeout_ms: i32,
    pub partitions: BTreeSet<TopicPartition>,
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

impl Transition {
    /// The persisted value; None (a tombstone) for Dead.
    pub fn value(&self) -> Option<TxnValue> {
        if self.state == TxnState::Dead {
            return None;
        }
        // Kafka writes a null partition list while Empty.
        let partitions = (self.state != TxnState::Empty).then(|| {
            let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
            for (topic, p) in &self.partitions {
                match topics.last_mut() {
                    Some((t, ids)) if t == topic => ids.push(*p),
                    _ => topics.push((topic.clone(), vec![*p])),
                }
            }
            topics
        });
        Some(TxnValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            txn_timeout_ms: self.txn_timeout_ms,
            state: self.state,
            partitions,
            last_update_ms: self.last_update_ms,
            start_ms: self.txn_start_ms,
            previous_producer_id: self.last_producer_id,
            next_producer_id: NO_PRODUCER_ID,
            client_transaction_version: 0,
        })
    }

    /// The `__transaction_state` record (key, value or tombstone) to write.
    pub fn record(&self, transactional_id: &str) -> (Bytes, Option<Bytes>) {
        (
            records::key(transactional_id),
            self.value().as_ref().map(records::value),
        )
    }
}

/// The answer to AddPartitionsToTxn, AddOffsetsToTxn or EndTxn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success with nothing to write (partitions already in the transaction,
    /// or a retried EndTxn that already completed).
    Done,
    /// Persist, `complete`, then answer success (after an EndTxn: then write
    /// the markers and `prepare_complete`).
    Persist(Transition),
}

/// The answer to InitProducerId.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// Persist, `complete`, then answer the transition's producer id and epoch.
    Ready(Transition),
    /// A transaction was ongoing: persist this PrepareAbort (epoch bumped,
    /// fencing the old producer), `complete`, answer CONCURRENT_TRANSACTIONS
    /// (the client retries), write the abort markers, `prepare_complete`.
    Fence(Transition),
}

/// What the markers of a transaction being completed say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerPlan<'a> {
    pub commit: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Every partition gets one marker.
    pub partitions: &'a BTreeSet<TopicPartition>,
}

/// InitProducerId v3+ carries the producer id and epoch a producer had
/// (KIP-360): both -1 for none, and only both or neither may be set.
pub fn expected_producer(
    producer_id: i64,
    producer_epoch: i16,
) -> Result<Option<(i64, i16)>, TxnError> {
    match (producer_id, producer_epoch) {
        (NO_PRODUCER_ID, NO_PRODUCER_EPOCH) => Ok(None),
        (NO_PRODUCER_ID, _) | (_, NO_PRODUCER_EPOCH) => Err(TxnError::InvalidRequest),
        (p, e) => Ok(Some((p, e))),
    }
}
