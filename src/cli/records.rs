//! Record batches for the CLI client: encoding produced lines into one v2 batch,
//! and decoding the record bytes of a Fetch response, which may end with a
//! partial batch (the broker cuts at the byte limit) that must be skipped.

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// Bytes before a batch's `magic`: base offset (8), length (4), leader epoch (4).
const BATCH_MAGIC_OFFSET: usize = 16;
/// Bytes of a batch counted outside its length field: base offset (8) and length (4).
const BATCH_LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, from base offset through record count.
const BATCH_HEADER_BYTES: usize = 61;
/// Position of `lastOffsetDelta`: after magic (1), CRC (4) and attributes (2).
const BATCH_LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// The only record batch format this client reads and writes.
const RECORD_BATCH_MAGIC: i8 = 2;

/// One record as the CLI produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// Encodes `records` as one v2 record batch with `compression`, stamped `timestamp_ms`.
pub fn encode_batch(
    records: &[PendingRecord],
    compression: Compression,
    timestamp_ms: i64,
) -> Result<Bytes> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            // Relative offsets; the broker assigns the real base offset.
            offset: i as i64,
            // kafka-protocol starts a new batch whenever offset - sequence
            // changes; the header keeps the first record's NO_SEQUENCE (-1).
            sequence: NO_SEQUENCE + i as i32,
            timestamp: timestamp_ms,
            key: r.key.clone(),
            value: Some(r.value.clone()),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: RECORD_BATCH_MAGIC,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options)
        .context("cannot encode record batch")?;
    Ok(buf.freeze())
}

/// What the complete batches of one fetched partition hold.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Data records; control records such as transaction markers are dropped.
    pub records: Vec<Record>,
    /// The offset after the last complete batch, to fetch from next; `None` when
    /// no batch was complete.
    pub next_offset: Option<i64>,
}

/// Decodes every complete batch in `data`. A trailing partial batch is ignored,
/// as Kafka clients do; it comes again, whole, in the next fetch.
pub fn decode_fetched(mut data: Bytes) -> Result<Fetched> {
    let mut out = Fetched::default();
    while data.len() >= BATCH_LOG_OVERHEAD {
        let length = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let Ok(length) = usize::try_from(length) else {
            bail!("fetched record batch has negative length {length}");
        };
        let total = BATCH_LOG_OVERHEAD + length;
        if total < BATCH_HEADER_BYTES {
            bail!("fetched record batch has length {length}, shorter than a batch header");
        }
        if data.len() < total {
            break; // partial batch at the end of the response
        }
        let mut batch = data.split_to(total);
        let magic = batch[BATCH_MAGIC_OFFSET] as i8;
        if magic != RECORD_BATCH_MAGIC {
            bail!(
                "fetched records use message format v{magic}; only v2 record batches are supported"
            );
        }
        let base_offset = i64::from_be_bytes(batch[..8].try_into()?);
        let d = BATCH_LAST_OFFSET_DELTA_OFFSET;
        let last_offset_delta = i32::from_be_bytes(batch[d..d + 4].try_into()?);
        let set = RecordBatchDecoder::decode(&mut batch).with_context(|| {
            format!("cannot decode fetched record batch at offset {base_offset}")
        })?;
        out.records
            .extend(set.records.into_iter().filter(|r| !r.control));
        // Offsets come from the network: saturate rather than overflow.
        let next = base_offset
            .saturating_add(i64::from(last_offset_delta))
            .saturating_add(1);
        out.next_offset = Some(next);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: Option<&'static str>, value: &'static str) -> PendingRecord {
        PendingRecord {
            key: key.map(|k| Bytes::from_static(k.as_bytes())),
            value: Bytes::from_static(value.as_bytes()),
        }
    }

    #[test]
    fn batch_round_trips_with_each_codec() {
        let input = vec![pending(Some("k1"), "v1"), pending(None, "v2")];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encode_batch(&input, compression, 1_700_000_000_000).expect("encodes");
            let fetched = decode_fetched(bytes).expect("decodes");
            assert_eq!(fetched.next_offset, Some(2));
            let records = fetched.records;
            assert_eq!(records.len(), 2, "{compression:?}");
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
            assert_eq!(records[1].key, None);
            assert_eq!(records[1].offset, 1);
        }
    }

    #[test]
    fn trailing_partial_batch_is_skipped() {
        let one = encode_batch(&[pending(None, "a")], Compression::None, 0).expect("encodes");
        let two = encode_batch(&[pending(None, "b")], Compression::None, 0).expect("encodes");
        let mut joined = BytesMut::new();
        joined.extend_from_slice(&one);
        joined.extend_from_slice(&two[..two.len() - 3]);
        let fetched = decode_fetched(joined.freeze()).expect("decodes");
        assert_eq!(fetched.next_offset, Some(1));
        let records = fetched.records;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value.as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn empty_and_short_inputs_yield_nothing() {
        let empty = decode_fetched(Bytes::new()).expect("ok");
        assert!(empty.records.is_empty() && empty.next_offset.is_none());
        let short = decode_fetched(Bytes::from_static(&[0; 11])).expect("ok");
        assert!(short.records.is_empty() && short.next_offset.is_none());
    }

    #[test]
    fn corrupt_batch_is_an_error() {
        let bytes = encode_batch(&[pending(None, "a")], Compression::None, 0).expect("encodes");
        let mut corrupt = BytesMut::from(&bytes[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(decode_fetched(corrupt.freeze()).is_err());
    }
}
