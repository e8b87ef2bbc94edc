//! Log compaction at the level of one batch: reading the records of a stored batch (offset,
//! key, tombstone flag, raw bytes), deciding which survive, and rebuilding a batch that holds only
//! those. A rebuilt batch keeps its base offset, base timestamp, attributes (codec included),
//! producer id/epoch and base sequence; each kept record is copied byte for byte, so its offset
//! delta and timestamp delta (relative to the unchanged base) still give its original offset and
//! timestamp. recordsCount, lastOffsetDelta (that of the last kept record, except in an
//! idempotent producer's batch, which keeps its own so its sequence range stays), maxTimestamp,
//! batchLength and the CRC-32C are recomputed. The produce-side key check for compacted topics is
//! here too.

use std::borrow::Cow;

use super::batch::{
    batch_crc, read_varint, read_varlong, BatchHeader, BatchInfo, ATTR_LOG_APPEND_TIME, HEADER_LEN,
    LOG_OVERHEAD, OFF_CRC, OFF_LAST_OFFSET_DELTA, OFF_LENGTH, OFF_MAX_TIMESTAMP, OFF_RECORDS_COUNT,
};
use super::compression::{compress_records, decompress_records};
use super::error::{Result, StorageError};

pub(crate) use super::batch::{ATTR_CONTROL, ATTR_TRANSACTIONAL};

/// One record of a batch, borrowed from its (decompressed) records section.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordRef<'a> {
    /// The whole record as stored, its length varint included.
    pub raw: &'a [u8],
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// None for a record without a key.
    pub key: Option<&'a [u8]>,
    /// Whether the value is null (a tombstone when the key is set).
    pub null_value: bool,
}

fn invalid(what: &str) -> StorageError {
    StorageError::InvalidRecord(what.to_string())
}

/// Reads a varint-length-prefixed byte field where -1 means null.
fn bytes_field<'a>(r: &'a [u8], p: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varint(r, p)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = p.checked_add(len).filter(|e| *e <= r.len())?;
    let field = &r[*p..end];
    *p = end;
    Some(Some(field))
}

/// Parses the `count` records of an uncompressed records section, which they must fill exactly.
pub(crate) fn parse_records(data: &[u8], count: i32) -> Result<Vec<RecordRef<'_>>> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
    let mut pos = 0usize;
    for _ in 0..count {
        let start = pos;
        let len = read_varint(data, &mut pos).ok_or_else(|| invalid("bad record length"))?;
        let len = usize::try_from(len).map_err(|_| invalid("negative record length"))?;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| invalid("record overruns its batch"))?;
        let body = &data[pos..end];
        let mut p = 1usize; // attributes
        let parsed = (|| {
            if body.is_empty() {
                return None;
            }
            let timestamp_delta = read_varlong(body, &mut p)?;
            let offset_delta = read_varint(body, &mut p)?;
            let key = bytes_field(body, &mut p)?;
            let value = bytes_field(body, &mut p)?;
            Some((timestamp_delta, offset_delta, key, value.is_none()))
        })();
        let (timestamp_delta, offset_delta, key, null_value) =
            parsed.ok_or_else(|| invalid("malformed record"))?;
        out.push(RecordRef {
            raw: &data[start..end],
            offset_delta,
            timestamp_delta,
            key,
            null_value,
        });
        pos = end;
    }
    if pos != data.len() {
        return Err(invalid("records count does not match the records section"));
    }
    Ok(out)
}

/// The records section of a whole batch, decompressed when needed.
pub(crate) fn records_section<'a>(batch: &'a [u8], h: &BatchHeader) -> Result<Cow<'a, [u8]>> {
    let body = batch
        .get(HEADER_LEN..)
        .ok_or_else(|| StorageError::CorruptMessage("short batch".to_string()))?;
    if h.compression() == 0 {
        Ok(Cow::Borrowed(body))
    } else {
        Ok(Cow::Owned(decompress_records(h.compression(), body)?))
    }
}

/// Builds a batch like `batch` (header `h`) holding only `kept` (a non-empty, ordered subset of
/// its records), re-compressed with the batch's own codec.
pub(crate) fn rebuild_batch(
    batch: &[u8],
    h: &BatchHeader,
    kept: &[RecordRef<'_>],
) -> Result<Vec<u8>> {
    let last = kept
        .last()
        .ok_or_else(|| invalid("rebuilding a batch with no records"))?;
    let plain_len: usize = kept.iter().map(|r| r.raw.len()).sum();
    let mut plain = Vec::with_capacity(plain_len);
    for r in kept {
        plain.extend_from_slice(r.raw);
    }
    let body = if h.compression() == 0 {
        plain
    } else {
        compress_records(h.compression(), &plain)?
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| invalid("rebuilt batch too large"))?;
    let count = i32::try_from(kept.len()).map_err(|_| invalid("too many records"))?;
    let max_ts = if h.attributes & ATTR_LOG_APPEND_TIME != 0 {
        h.max_timestamp
    } else {
        kept.iter()
            .map(|r| h.base_timestamp.saturating_add(r.timestamp_delta))
            .max()
            .unwrap_or(h.max_timestamp)
    };
    out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    // An idempotent producer's batch keeps its lastOffsetDelta (as Kafka's cleaner keeps it for
    // every batch): baseSequence + lastOffsetDelta is the batch's last sequence, which producer
    // state replay (`log_producers.rs`) reads back from the header.
    let last_delta = if h.producer_id >= 0 {
        h.last_offset_delta
    } else {
        last.offset_delta
    };
    out[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&last_delta.to_be_bytes());
    out[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_be_bytes());
    out[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = batch_crc(&out);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Produce-side check of a compacted topic: every record of every data batch has a key.
/// `batches` are the validated batches of `records`, in order.
pub(crate) fn require_keys(records: &[u8], batches: &[BatchInfo]) -> Result<()> {
    let mut at = 0usize;
    for b in batches {
        let batch = &records[at..at + b.size];
        at += b.size;
        if b.attributes & ATTR_CONTROL != 0 {
            continue;
        }
        let h = BatchHeader::parse(batch)
            .ok_or_else(|| StorageError::CorruptMessage("short batch".to_string()))?;
        let plain = records_section(batch, &h)?;
        if parse_records(&plain, h.records_count)?
            .iter()
            .any(|r| r.key.is_none())
        {
            return Err(StorageError::KeylessRecordOnCompactedTopic);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate_batches;
    use crate::storage::testutil::{batch, batch_opt, Codec, Rec};

    fn recs() -> Vec<Rec> {
        (0..6)
            .map(|i| Rec::new(1000 + i, format!("k{i}").as_bytes(), b"some value"))
            .collect()
    }

    #[test]
    fn rebuild_keeps_offsets_timestamps_and_codec() {
        for c in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let mut b = batch(c, &recs());
            b[..8].copy_from_slice(&100i64.to_be_bytes());
            let h = BatchHeader::parse(&b).expect("header");
            let plain = records_section(&b, &h).expect("records");
            let all = parse_records(&plain, h.records_count).expect("parse");
            assert_eq!(all.len(), 6);
            let kept: Vec<RecordRef<'_>> = all
                .iter()
                .copied()
                .filter(|r| r.offset_delta % 2 == 0)
                .collect();
            let out = rebuild_batch(&b, &h, &kept).expect("rebuild");
            let nh = BatchHeader::parse(&out).expect("header");
            assert_eq!(nh.base_offset, 100);
            assert_eq!(nh.compression(), h.compression(), "{c:?}");
            assert_eq!(nh.records_count, 3);
            assert_eq!(nh.last_offset_delta, 4);
            assert_eq!(nh.max_timestamp, 1004);
            // An idempotent producer's batch keeps its sequence range: lastOffsetDelta stays.
            let mut pb = b.clone();
            pb[43..51].copy_from_slice(&7i64.to_be_bytes());
            crate::storage::testutil::fix_crc(&mut pb);
            let ph = BatchHeader::parse(&pb).expect("header");
            let pout = rebuild_batch(&pb, &ph, &kept).expect("rebuild");
            let pnh = BatchHeader::parse(&pout).expect("header");
            assert_eq!((pnh.records_count, pnh.last_offset_delta), (3, 5));
            assert_eq!(batch_crc(&pout), pnh.crc);
            assert_eq!(batch_crc(&out), nh.crc);
            assert_eq!(nh.total_size(), Some(out.len()));
            let plain = records_section(&out, &nh).expect("records");
            let got = parse_records(&plain, nh.records_count).expect("parse");
            let keys: Vec<&[u8]> = got.iter().filter_map(|r| r.key).collect();
            assert_eq!(keys, vec![&b"k0"[..], b"k2", b"k4"]);
            let deltas: Vec<i32> = got.iter().map(|r| r.offset_delta).collect();
            assert_eq!(deltas, vec![0, 2, 4]);
        }
    }

    #[test]
    fn keyless_records_are_refused() {
        let mut set = batch(Codec::Gzip, &recs());
        // A present, zero-length key is a key; a null value (tombstone) is fine.
        set.extend_from_slice(&batch_opt(Codec::None, &[(1, Some(b""), None)]));
        let infos = validate_batches(&set, 1 << 20).expect("valid");
        require_keys(&set, &infos).expect("keyed");
        for c in [Codec::None, Codec::Zstd] {
            let mut bad = set.clone();
            bad.extend_from_slice(&batch_opt(
                c,
                &[(1, Some(b"k"), Some(b"v")), (2, None, Some(b"v"))],
            ));
            let infos = validate_batches(&bad, 1 << 20).expect("valid");
            assert!(matches!(
                require_keys(&bad, &infos),
                Err(StorageError::KeylessRecordOnCompactedTopic)
            ));
        }
    }
}
