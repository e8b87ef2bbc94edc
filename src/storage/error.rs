//! Storage errors and their mapping to Kafka protocol error codes.

/// Everything that can go wrong in the storage layer, each variant mapping to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Bad CRC, bad framing, truncated batch.
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    /// A batch larger than `max.message.bytes`.
    #[error("message too large: {size} bytes, max {max}")]
    MessageTooLarge { size: usize, max: usize },
    /// Structurally bad records (count mismatch, bad varints, decompression failure).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A record without a key sent to a compacted topic (Kafka refuses it with INVALID_RECORD).
    #[error("Compacted topic cannot accept message without key")]
    KeylessRecordOnCompactedTopic,
    /// A batch whose magic is not 2.
    #[error("unsupported magic {0}")]
    UnsupportedMagic(i8),
    /// Fetch/delete offset outside `[log_start, log_end]`.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
    /// An idempotent producer's batch whose base sequence does not follow the last one
    /// appended for its producer id and epoch (or is not 0 after an epoch bump). The producer
    /// must not retry the batch as is.
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    /// A batch whose producer epoch is older than the partition's current epoch for that
    /// producer id: another producer instance with the same transactional id fenced this one.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// A follower's replicated record set (`append_replicated`) whose first batch starts below
    /// the log end, or whose batches do not increase. Nothing was appended. When its first batch
    /// starts below the log end of an empty log (the leader's log start fell inside that batch),
    /// Kafka's follower restarts its log at that batch (`truncate_fully_and_start_at`).
    #[error("replicated batches out of order: {0}")]
    OffsetsOutOfOrder(String),
    /// The log was truncated (`truncate_to`, `truncate_fully_and_start_at`) while the operation
    /// waited, so what it waited for or read may be gone: a flush whose offsets may no longer
    /// hold the records appended, or a read that truncations kept overlapping. Truncation
    /// happens when this replica follows another leader, hence NOT_LEADER_OR_FOLLOWER.
    #[error("log truncated meanwhile: {0}")]
    LogTruncated(String),
    /// Any other disk error.
    #[error("storage i/o error: {0}")]
    Io(String),
    /// The disk is full (ENOSPC, EDQUOT, short write). The write was rolled back; a later one
    /// may succeed once space is freed.
    #[error("no space left on the log dir: {0}")]
    NoSpace(String),
    /// The partition's log dir is offline after a disk error (see `log_dirs.rs`).
    #[error("log dir offline: {0}")]
    LogDirOffline(String),
    /// Another broker leads the partition (or none does): NOT_LEADER_OR_FOLLOWER, so the
    /// client refreshes its metadata and goes to the leader.
    #[error("not the leader: {0}")]
    NotLeader(String),
}

impl StorageError {
    /// The Kafka protocol error code for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            StorageError::CorruptMessage(_) => 2,
            StorageError::MessageTooLarge { .. } => 10,
            StorageError::InvalidRecord(_) => 87,
            StorageError::KeylessRecordOnCompactedTopic => 87,
            StorageError::UnsupportedMagic(_) => 43,
            StorageError::OffsetOutOfRange { .. } => 1,
            StorageError::OutOfOrderSequence(_) => 45,
            StorageError::InvalidProducerEpoch(_) => 47,
            StorageError::OffsetsOutOfOrder(_) => -1,
            StorageError::LogTruncated(_) => 6,
            StorageError::Io(_) | StorageError::NoSpace(_) | StorageError::LogDirOffline(_) => 56,
            StorageError::NotLeader(_) => 6,
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        // No path here, so the dir cannot be taken offline; out-of-space is still told apart.
        match super::log_dirs::classify_errno(e.raw_os_error()) {
            super::log_dirs::DiskFault::NoSpace => StorageError::NoSpace(e.to_string()),
            _ => StorageError::Io(e.to_string()),
        }
    }
}

impl From<glommio::GlommioError<()>> for StorageError {
    fn from(e: glommio::GlommioError<()>) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// Shorthand for storage results.
pub type Result<T> = std::result::Result<T, StorageError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(StorageError::CorruptMessage(String::new()).kafka_code(), 2);
        assert_eq!(
            StorageError::MessageTooLarge { size: 2, max: 1 }.kafka_code(),
            10
        );
        assert_eq!(StorageError::InvalidRecord(String::new()).kafka_code(), 87);
        assert_eq!(StorageError::KeylessRecordOnCompactedTopic.kafka_code(), 87);
        assert_eq!(StorageError::UnsupportedMagic(1).kafka_code(), 43);
        let oor = StorageError::OffsetOutOfRange {
            requested: 5,
            log_start: 0,
            log_end: 1,
        };
        assert_eq!(oor.kafka_code(), 1);
        assert_eq!(StorageError::Io(String::new()).kafka_code(), 56);
        assert_eq!(StorageError::NoSpace(String::new()).kafka_code(), 56);
        assert_eq!(StorageError::LogDirOffline(String::new()).kafka_code(), 56);
        assert_eq!(
            StorageError::OutOfOrderSequence(String::new()).kafka_code(),
            45
        );
        assert_eq!(
            StorageError::InvalidProducerEpoch(String::new()).kafka_code(),
            47
        );
        assert_eq!(
            StorageError::OffsetsOutOfOrder(String::new()).kafka_code(),
            -1
        );
        assert_eq!(StorageError::LogTruncated(String::new()).kafka_code(), 6);
    }
}
