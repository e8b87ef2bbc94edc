//! Shared by the criterion benchmarks: one record batch built by kafka-protocol.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One v2 batch of `records` records; record `i` has key `key(i)`, value `value(i)` and
/// timestamp `ts0 + i`.
pub fn batch(
    records: usize,
    compression: Compression,
    ts0: i64,
    key: impl Fn(usize) -> Option<Bytes>,
    value: impl Fn(usize) -> Bytes,
) -> Bytes {
    let recs: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: kafka-protocol splits batches where offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: ts0 + i as i64,
            key: key(i),
            value: Some(value(i)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &recs, &opts).expect("encode batch");
    buf.freeze()
}
