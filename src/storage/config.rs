//! Per-partition log settings (the topic-level `segment.*`, `retention.*`, ... configs).

/// How segment files are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// O_DIRECT through glommio `DmaFile`, 4096-aligned writes.
    Direct,
    /// Through the page cache (glommio `BufferedFile`).
    Buffered,
}

/// `message.timestamp.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// The broker stamps each batch with its append time.
    LogAppendTime,
}

/// `cleanup.policy`: what happens to old segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Time/size retention deletes whole old segments (Kafka's default).
    Delete,
    /// Only the cleaner runs: it keeps the newest record per key; retention deletes nothing.
    Compact,
    /// Both: the cleaner runs and retention still deletes old segments.
    CompactDelete,
}

impl CleanupPolicy {
    /// Parses Kafka's list form (`delete`, `compact`, `compact,delete`, in any order).
    pub fn parse(s: &str) -> Option<CleanupPolicy> {
        let (mut delete, mut compact) = (false, false);
        for part in s.split(',').map(str::trim) {
            match part {
                "delete" => delete = true,
                "compact" => compact = true,
                _ => return None,
            }
        }
        match (delete, compact) {
            (true, false) => Some(CleanupPolicy::Delete),
            (false, true) => Some(CleanupPolicy::Compact),
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (false, false) => None,
        }
    }

    /// Whether time/size retention deletes segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the log cleaner compacts this log (and produce requires keys).
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// Settings of one partition log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// segment.bytes, default 1 GiB.
    pub segment_bytes: u64,
    /// segment.ms, default 7 days.
    pub segment_ms: i64,
    /// retention.ms, default 7 days, -1 = unlimited.
    pub retention_ms: i64,
    /// retention.bytes, default -1 = unlimited.
    pub retention_bytes: i64,
    /// max.message.bytes: largest allowed batch (12 + batchLength), default 1048588.
    pub max_message_bytes: usize,
    /// index.interval.bytes, default 4096.
    pub index_interval_bytes: usize,
    /// segment.index.bytes, default 10 MiB (index capacity; roll when full).
    pub segment_index_bytes: usize,
    /// message.timestamp.type, default CreateTime.
    pub message_timestamp_type: TimestampType,
    /// Direct (O_DIRECT) or buffered writes, default Direct.
    pub io_mode: IoMode,
    /// cleanup.policy, default Delete.
    pub cleanup_policy: CleanupPolicy,
    /// delete.retention.ms: how long a tombstone survives after its segment was first cleaned,
    /// default 1 day.
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms: a record younger than this is never cleaned, default 0.
    pub min_compaction_lag_ms: i64,
    /// max.compaction.lag.ms: a dirty record older than this forces a cleaning pass whatever the
    /// dirty ratio, default i64::MAX (never).
    pub max_compaction_lag_ms: i64,
    /// min.cleanable.dirty.ratio: clean when dirty bytes / non-active bytes reach this, default 0.5.
    pub min_cleanable_dirty_ratio: f64,
    /// producer.id.expiration.ms (broker-wide in Kafka): an idempotent producer whose last batch
    /// is older than this, and that has no open transaction, is forgotten at housekeeping;
    /// default 1 day.
    pub producer_id_expiration_ms: i64,
    /// flush.messages: fdatasync once this many messages are not yet durable
    /// (acks=0/1 appends; acks=all syncs every request anyway), default i64::MAX (never).
    pub flush_messages: i64,
    /// flush.ms: fdatasync at most this long after an append that left data
    /// not yet durable, default i64::MAX (never).
    pub flush_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            message_timestamp_type: TimestampType::CreateTime,
            io_mode: IoMode::Direct,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DAY_MS,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            producer_id_expiration_ms: DAY_MS,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
        }
    }
}
