//! Kafka's transaction coordinator (KIP-98), the pure core: what the
//! coordinator decides and what it persists, with no I/O, so that the APIs
//! (InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, DescribeTransactions, ListTransactions) can be
//! wired on top of it the way `group/` wires the group protocol.
//!
//! Every transactional id lives on one partition of the internal compacted
//! topic `__transaction_state`: partition `abs(javaHash(transactional.id)) %
//! partitions` (default 50), placed as Kafka places it. The shard that owns
//! that partition is the id's coordinator. Each change follows Kafka's
//! "pending state" pattern: an operation on `state::Txn` computes a
//! `Transition` (or answers an error at once), the coordinator writes
//! `Transition::record()` to the partition, then calls `Txn::complete` (or
//! `Txn::abort_pending` if the write failed). Ending a transaction is two
//! such writes with the commit or abort markers (`storage::markers`) written to
//! every partition of the transaction in between.
//!
//! Files: `records` (the `__transaction_state` key and value formats),
//! `transition` (states, transitions, outcomes), `state` (one transactional
//! id's state machine: the operations), `describe`
//! (DescribeTransactions and ListTransactions views), `markers` (control
//! batches), `marker_writer` (getting the markers onto the partitions, on this
//! broker or through WriteTxnMarkers to the partitions' leaders), `coordinator`
//! (the shard-local coordinator that runs it all). docs/transactions.md says
//! what is still to be wired.

pub mod coordinator;
pub mod describe;
pub mod marker_writer;
/// Commit and abort markers live with the log that stores them (`storage::markers`).
pub use crate::storage::markers;
pub mod records;
pub mod state;
#[cfg(test)]
mod state_tests;
pub mod transition;

use kafka_protocol::error::ResponseError as E;

/// Name of the internal topic holding the transaction coordinator's state.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's default `transaction.state.log.num.partitions`.
pub const DEFAULT_TXN_STATE_PARTITIONS: i32 = 50;

/// Kafka's default `transaction.max.timeout.ms` (15 minutes).
pub const DEFAULT_MAX_TIMEOUT_MS: i32 = 900_000;

/// Kafka's default `transactional.id.expiration.ms` (7 days).
pub const DEFAULT_ID_EXPIRATION_MS: i64 = 604_800_000;

/// Request versions from which a client understands PRODUCER_FENCED (KIP-588,
/// Kafka 2.7); older versions get INVALID_PRODUCER_EPOCH instead.
pub const PRODUCER_FENCED_SINCE_INIT_PRODUCER_ID: i16 = 4;
pub const PRODUCER_FENCED_SINCE_ADD_PARTITIONS: i16 = 2;
pub const PRODUCER_FENCED_SINCE_ADD_OFFSETS: i16 = 2;
pub const PRODUCER_FENCED_SINCE_END_TXN: i16 = 2;

/// The `__transaction_state` partition of a transactional id: the same
/// placement as a group's (Java's `String.hashCode`, absolute value, modulo).
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::group::partition_for(transactional_id, partitions)
}

/// Coordinator limits (from the broker settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `transaction.max.timeout.ms`: the largest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an idle id (no transaction open) is
    /// forgotten (tombstoned) after this long.
    pub id_expiration_ms: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_timeout_ms: DEFAULT_MAX_TIMEOUT_MS,
            id_expiration_ms: DEFAULT_ID_EXPIRATION_MS,
        }
    }
}

/// Why the coordinator refuses an operation; each maps to Kafka's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Another change of this id is being written, or a transaction is
    /// completing: the client backs off and retries.
    #[error("a concurrent operation on the transactional id is in progress; retry")]
    ConcurrentTransactions,
    /// A newer producer (epoch or producer id) owns the transactional id.
    #[error("the producer was fenced by a newer one with the same transactional id")]
    ProducerFenced,
    /// The producer id is not the one assigned to the transactional id (or the
    /// id is unknown).
    #[error("producer id does not belong to the transactional id")]
    InvalidProducerIdMapping,
    /// The operation does not fit the transaction's state (EndTxn with no
    /// transaction open, commit after abort ...).
    #[error("operation not allowed in the transaction's state")]
    InvalidTxnState,
    /// The timeout is not positive or exceeds `transaction.max.timeout.ms`.
    #[error("transaction timeout out of range")]
    InvalidTransactionTimeout,
    /// DescribeTransactions of an id the coordinator does not know.
    #[error("transactional id not found")]
    TransactionalIdNotFound,
    /// A malformed request (InitProducerId with only one of producer id and
    /// epoch set).
    #[error("invalid request")]
    InvalidRequest,
    /// A state Kafka treats as impossible; answered UNKNOWN_SERVER_ERROR and
    /// logged by the caller.
    #[error("transaction coordinator bug: {0}")]
    Internal(&'static str),
}

impl TxnError {
    /// Kafka's error code.
    pub fn code(self) -> i16 {
        match self {
            TxnError::ConcurrentTransactions => E::ConcurrentTransactions.code(),
            TxnError::ProducerFenced => E::ProducerFenced.code(),
            TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping.code(),
            TxnError::InvalidTxnState => E::InvalidTxnState.code(),
            TxnError::InvalidTransactionTimeout => E::InvalidTransactionTimeout.code(),
            TxnError::TransactionalIdNotFound => E::TransactionalIdNotFound.code(),
            TxnError::InvalidRequest => E::InvalidRequest.code(),
            TxnError::Internal(_) => E::UnknownServerError.code(),
        }
    }

    /// The code for a request of `version`, where PRODUCER_FENCED exists from
    /// `fenced_since` (the `PRODUCER_FENCED_SINCE_*` constants): older clients
    /// get INVALID_PRODUCER_EPOCH, which they handle the same way.
    pub fn code_for_version(self, version: i16, fenced_since: i16) -> i16 {
        if self == TxnError::ProducerFenced && version < fenced_since {
            return E::InvalidProducerEpoch.code();
        }
        self.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_kafkas() {
        assert_eq!(TxnError::ConcurrentTransactions.code(), 51);
        assert_eq!(TxnError::ProducerFenced.code(), 90);
        assert_eq!(TxnError::InvalidProducerIdMapping.code(), 49);
        assert_eq!(TxnError::InvalidTxnState.code(), 48);
        assert_eq!(TxnError::InvalidTransactionTimeout.code(), 50);
        assert_eq!(TxnError::TransactionalIdNotFound.code(), 105);
        assert_eq!(TxnError::Internal("x").code(), -1);
        // KIP-588: old request versions get INVALID_PRODUCER_EPOCH (47).
        let f = TxnError::ProducerFenced;
        assert_eq!(
            f.code_for_version(3, PRODUCER_FENCED_SINCE_INIT_PRODUCER_ID),
            47
        );
        assert_eq!(
            f.code_for_version(4, PRODUCER_FENCED_SINCE_INIT_PRODUCER_ID),
            90
        );
        assert_eq!(f.code_for_version(1, PRODUCER_FENCED_SINCE_END_TXN), 47);
        let c = TxnError::ConcurrentTransactions;
        assert_eq!(c.code_for_version(0, PRODUCER_FENCED_SINCE_END_TXN), 51);
    }

    #[test]
    fn placement_matches_groups() {
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
