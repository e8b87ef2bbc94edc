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
        }
    }
}
