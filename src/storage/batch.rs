//! Record batch v2 framing: header accessors, record walking and validation of a produce
//! request's record set (`validate_batches`).

use super::compression::{decompress_records, limit_for};
use super::error::{Result, StorageError};

/// Size of the fixed v2 batch header.
pub(crate) const HEADER_LEN: usize = 61;
/// baseOffset + batchLength: bytes not counted in batchLength.
pub(crate) const LOG_OVERHEAD: usize = 12;
pub(crate) const OFF_BASE_OFFSET: usize = 0;
pub(crate) const OFF_LENGTH: usize = 8;
pub(crate) const OFF_LEADER_EPOCH: usize = 12;
pub(crate) const OFF_MAGIC: usize = 16;
pub(crate) const OFF_CRC: usize = 17;
pub(crate) const OFF_ATTRIBUTES: usize = 21;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFF_BASE_TIMESTAMP: usize = 27;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFF_PRODUCER_ID: usize = 43;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFF_BASE_SEQUENCE: usize = 53;
pub(crate) const OFF_RECORDS_COUNT: usize = 57;
/// Smallest encoded record: length, attributes, timestamp delta, offset delta,
/// key length (-1), value length (-1) and header count, one byte each.
pub(crate) const MIN_RECORD_BYTES: usize = 7;
/// Attribute bit for LogAppendTime.
pub(crate) const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bit of a transactional batch.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit of a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 1 << 5;

/// Why a produce request's record set may not come from a client, if it
/// may not: a control batch (only the transaction coordinator writes
/// markers), or a batch with a producer id but no sequence number (only
/// coordinators write those, to internal topics). One walk over the batch
/// headers; headers that do not fit are left to `validate_batches`.
pub fn client_batch_refusal(buf: &[u8]) -> Option<&'static str> {
    let mut pos = 0usize;
    while pos + HEADER_LEN <= buf.len() {
        if be_i16(buf, pos + OFF_ATTRIBUTES) & ATTR_CONTROL != 0 {
            return Some("clients may not write control batches");
        }
        let pid = be_i64(buf, pos + OFF_PRODUCER_ID);
        let seq = be_i32(buf, pos + OFF_BASE_SEQUENCE);
        if pid >= 0 && seq < 0 {
            return Some("a batch with a producer id needs a sequence number");
        }
        let Ok(len) = usize::try_from(be_i32(buf, pos + OFF_LENGTH)) else {
            break;
        };
        pos = pos.saturating_add(LOG_OVERHEAD).saturating_add(len);
    }
    None
}

/// What validation learned about one batch of a record set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub records_count: i32,
    /// Whole batch size in bytes (12 + batchLength).
    pub size: usize,
    pub attributes: i16,
    /// -1 for a batch of a producer that is not idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// partitionLeaderEpoch as received (a client's is meaningless; a leader's copy, as a
    /// follower receives it, is final).
    pub leader_epoch: i32,
}

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The fields of a v2 batch header that the log needs. `parse` requires `HEADER_LEN` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    /// partitionLeaderEpoch: the epoch of the leader that appended the batch.
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `b`; None when `b` is shorter than a header.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, OFF_BASE_OFFSET),
            batch_length: be_i32(b, OFF_LENGTH),
            leader_epoch: be_i32(b, OFF_LEADER_EPOCH),
            magic: b[OFF_MAGIC] as i8,
            crc: be_u32(b, OFF_CRC),
            attributes: be_i16(b, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(b, OFF_PRODUCER_ID),
            producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
            records_count: be_i32(b, OFF_RECORDS_COUNT),
        })
    }

    /// Whole batch size, or None when the length field is impossible for a v2 batch.
    pub fn total_size(&self) -> Option<usize> {
        let len = usize::try_from(self.batch_length).ok()?;
        if len + LOG_OVERHEAD < HEADER_LEN {
            return None;
        }
        Some(len + LOG_OVERHEAD)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }
}

/// CRC-32C of a whole batch as stored in its header (over bytes 21..).
pub(crate) fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Reads a zigzag varint (at most 5 bytes) at `*pos`.
pub(crate) fn read_varint(b: &[u8], pos: &mut usize) -> Option<i32> {
    let v = read_unsigned(b, pos, 5)?;
    let v = u32::try_from(v).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Reads a zigzag varlong (at most 10 bytes) at `*pos`.
pub(crate) fn read_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let v = read_unsigned(b, pos, 10)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn read_unsigned(b: &[u8], pos: &mut usize, max_bytes: usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..max_bytes {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One record's fields that the log looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
}

/// Walks `count` records in an (uncompressed) records section, checking that they parse and fill it
/// exactly. `f` sees each record; returning false stops the walk early (successfully).
pub(crate) fn walk_records(
    data: &[u8],
    count: i32,
    mut f: impl FnMut(RecordMeta) -> bool,
) -> Result<()> {
    let bad = |what: &str| StorageError::InvalidRecord(what.to_string());
    let mut pos = 0usize;
    for _ in 0..count {
        let len = read_varint(data, &mut pos).ok_or_else(|| bad("bad record length varint"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative record length"))?;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| bad("record overruns its batch"))?;
        let meta = parse_record(&data[pos..end]).ok_or_else(|| bad("malformed record"))?;
        pos = end;
        if !f(meta) {
            return Ok(());
        }
    }
    if pos != data.len() {
        return Err(bad("records count does not match the records section"));
    }
    Ok(())
}

/// Parses one record body (after its length); None if any field is malformed or it has trailing bytes.
fn parse_record(r: &[u8]) -> Option<RecordMeta> {
    let mut p = 1usize; // attributes
    if r.is_empty() {
        return None;
    }
    let timestamp_delta = read_varlong(r, &mut p)?;
    let offset_delta = read_varint(r, &mut p)?;
    skip_bytes_field(r, &mut p)?; // key
    skip_bytes_field(r, &mut p)?; // value
    let headers = read_varint(r, &mut p)?;
    if headers < 0 {
        return None;
    }
    for _ in 0..headers {
        let klen = read_varint(r, &mut p)?;
        let klen = usize::try_from(klen).ok()?;
        p = p.checked_add(klen).filter(|e| *e <= r.len())?;
        skip_bytes_field(r, &mut p)?;
    }
    (p == r.len()).then_some(RecordMeta {
        timestamp_delta,
        offset_delta,
    })
}

/// Skips a varint-length-prefixed byte field where -1 means null.
fn skip_bytes_field(r: &[u8], p: &mut usize) -> Option<()> {
    let len = read_varint(r, p)?;
    if len == -1 {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    *p = p.checked_add(len).filter(|e| *e <= r.len())?;
    Some(())
}

/// Calls `f` on each record of a whole batch (decompressing if needed); `f` returns false to stop.
pub(crate) fn for_each_record(batch: &[u8], f: impl FnMut(RecordMeta) -> bool) -> Result<()> {
    let h = BatchHeader::parse(batch)
        .ok_or_else(|| StorageError::CorruptMessage("short batch".to_string()))?;
    let body = &batch[HEADER_LEN..];
    if h.compression() == 0 {
        walk_records(body, h.records_count, f)
    } else {
        let plain = decompress_records(h.compression(), body)?;
        walk_records(&plain, h.records_count, f)
    }
}

/// Rewrites a stored batch's baseOffset and partitionLeaderEpoch (outside the CRC) and, for
/// LogAppendTime, its maxTimestamp and timestamp-type bit (recomputing the CRC).
pub(crate) fn patch_batch(
    batch: &mut [u8],
    base_offset: i64,
    epoch: i32,
    append_time: Option<i64>,
) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    if let Some(now) = append_time {
        let attrs = be_i16(batch, OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
        batch[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        let crc = batch_crc(batch);
        batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Validates one or more concatenated v2 batches (a produce request's record set): sizes, magic,
/// CRC-32C, record counts and the records section (decompressed, bounded, when compressed).
pub fn validate_batches(buf: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchInfo>> {
    Ok(validate_batches_ext(buf, max_batch_bytes)?
        .into_iter()
        .map(|(b, _)| b)
        .collect())
}

/// `validate_batches`, also returning for each batch the offset delta of its first record whose
/// timestamp equals the batch's maxTimestamp (lastOffsetDelta if none does).
pub(crate) fn validate_batches_ext(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<(BatchInfo, i32)>> {
    validate(buf, max_batch_bytes, false)
}

/// `validate_batches_ext` for batches copied from a leader's log (a follower's append): no size
/// limit, and a batch may hold fewer records than its offset range (the leader's cleaner removed
/// some, keeping lastOffsetDelta), down to none (Kafka's cleaner keeps empty batches).
pub(crate) fn validate_replicated_batches(buf: &[u8]) -> Result<Vec<(BatchInfo, i32)>> {
    validate(buf, usize::MAX, true)
}

fn validate(buf: &[u8], max_batch_bytes: usize, stored: bool) -> Result<Vec<(BatchInfo, i32)>> {
    let corrupt = |m: &str| StorageError::CorruptMessage(m.to_string());
    if buf.is_empty() {
        return Err(StorageError::InvalidRecord("empty record set".to_string()));
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < LOG_OVERHEAD {
            return Err(corrupt("truncated batch header"));
        }
        let len = usize::try_from(be_i32(rest, OFF_LENGTH))
            .map_err(|_| corrupt("negative batch length"))?;
        let size = len + LOG_OVERHEAD;
        if size > max_batch_bytes {
            return Err(StorageError::MessageTooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        if size > rest.len() {
            return Err(corrupt("batch length exceeds the record set"));
        }
        if size <= OFF_MAGIC {
            return Err(corrupt("batch too short"));
        }
        let magic = rest[OFF_MAGIC] as i8;
        if magic != 2 {
            return Err(StorageError::UnsupportedMagic(magic));
        }
        if size < HEADER_LEN {
            return Err(corrupt("batch shorter than a v2 header"));
        }
        let batch = &rest[..size];
        let h = BatchHeader::parse(batch).ok_or_else(|| corrupt("batch too short"))?;
        if batch_crc(batch) != h.crc {
            return Err(corrupt("CRC mismatch"));
        }
        let counts_agree = if stored {
            h.records_count >= 0
                && h.last_offset_delta >= 0
                && i64::from(h.records_count) <= i64::from(h.last_offset_delta) + 1
        } else {
            h.records_count >= 1 && h.last_offset_delta == h.records_count - 1
        };
        if !counts_agree {
            return Err(StorageError::InvalidRecord(format!(
                "recordsCount {} inconsistent with lastOffsetDelta {}",
                h.records_count, h.last_offset_delta
            )));
        }
        // Refuse a count the records section cannot hold before walking it:
        // uncompressed, the section itself; compressed, the most its
        // decompression is allowed to produce.
        let section = size - HEADER_LEN;
        let room = if h.compression() == 0 {
            section
        } else {
            limit_for(section)
        };
        if (h.records_count as usize).saturating_mul(MIN_RECORD_BYTES) > room {
            return Err(StorageError::InvalidRecord(format!(
                "recordsCount {} cannot fit in {room} bytes of records",
                h.records_count
            )));
        }
        if h.compression() > 4 {
            return Err(StorageError::InvalidRecord(format!(
                "unknown compression codec {}",
                h.compression()
            )));
        }
        let mut max_delta = None;
        for_each_record(batch, |r| {
            if max_delta.is_none()
                && h.base_timestamp.wrapping_add(r.timestamp_delta) == h.max_timestamp
            {
                max_delta = Some(r.offset_delta);
            }
            true
        })?;
        let info = BatchInfo {
            base_offset: h.base_offset,
            last_offset_delta: h.last_offset_delta,
            max_timestamp: h.max_timestamp,
            records_count: h.records_count,
            size,
            attributes: h.attributes,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            leader_epoch: h.leader_epoch,
        };
        out.push((info, max_delta.unwrap_or(h.last_offset_delta)));
        pos += size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testutil::{batch, Codec, Rec};

    fn recs(n: usize) -> Vec<Rec> {
        (0..n)
            .map(|i| Rec::new(1000 + i as i64, b"k", b"value"))
            .collect()
    }

    #[test]
    fn varints_roundtrip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
        ] {
            let mut b = Vec::new();
            crate::storage::testutil::put_varlong(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varlong(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
            let mut p = 0;
            assert_eq!(read_varint(&b, &mut p), Some(v as i32));
        }
        let mut p = 0;
        assert_eq!(read_varint(&[0x80, 0x80], &mut p), None);
    }

    #[test]
    fn valid_batches_all_codecs() {
        let mut set = Vec::new();
        for c in [
            Codec::None,
            Codec::Gzip,
            Codec::Zstd,
            Codec::Lz4,
            Codec::Snappy,
            Codec::SnappyXerial,
        ] {
            set.extend_from_slice(&batch(c, &recs(5)));
        }
        let infos = validate_batches(&set, 1 << 20).expect("valid");
        assert_eq!(infos.len(), 6);
        for i in &infos {
            assert_eq!(i.records_count, 5);
            assert_eq!(i.last_offset_delta, 4);
            assert_eq!(i.max_timestamp, 1004);
        }
        assert_eq!(infos.iter().map(|i| i.size).sum::<usize>(), set.len());
    }

    #[test]
    fn bad_crc_is_corrupt() {
        let mut b = batch(Codec::None, &recs(2));
        let n = b.len();
        b[n - 1] ^= 0xff;
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(StorageError::CorruptMessage(_))
        ));
    }

    #[test]
    fn truncated_and_trailing_garbage_are_corrupt() {
        let b = batch(Codec::None, &recs(2));
        let r = validate_batches(&b[..b.len() - 3], 1 << 20);
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))));
        let mut g = b.clone();
        g.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(
            validate_batches(&g, 1 << 20),
            Err(StorageError::CorruptMessage(_))
        ));
    }

    #[test]
    fn count_mismatch_is_invalid_record() {
        let mut b = batch(Codec::None, &recs(3));
        // Claim 4 records (and lastOffsetDelta 3) while only 3 are present.
        b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&4i32.to_be_bytes());
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&3i32.to_be_bytes());
        crate::storage::testutil::fix_crc(&mut b);
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(StorageError::InvalidRecord(_))
        ));
        // Fewer claimed than present.
        let mut b = batch(Codec::Gzip, &recs(3));
        b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&2i32.to_be_bytes());
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&1i32.to_be_bytes());
        crate::storage::testutil::fix_crc(&mut b);
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(StorageError::InvalidRecord(_))
        ));
    }

    /// Rewrites a batch's recordsCount (and lastOffsetDelta to match) and its CRC.
    fn claim_count(b: &mut [u8], n: i32) {
        b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&n.to_be_bytes());
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&(n - 1).to_be_bytes());
        crate::storage::testutil::fix_crc(b);
    }

    fn refusal(b: &[u8]) -> String {
        match validate_batches(b, 1 << 20) {
            Err(StorageError::InvalidRecord(m)) => m,
            other => panic!("expected INVALID_RECORD, got {other:?}"),
        }
    }

    #[test]
    fn records_count_must_fit_the_batch_bytes() {
        // Uncompressed: 3 records of 8+ bytes; a count of 1000 needs >= 7000 bytes.
        let mut b = batch(Codec::None, &recs(3));
        claim_count(&mut b, 1000);
        assert!(refusal(&b).contains("cannot fit"), "{}", refusal(&b));
        claim_count(&mut b, i32::MAX);
        assert!(refusal(&b).contains("cannot fit"));
        // Exactly as many minimal records as bytes allow is a count that fits
        // (then refused by the record walk, not by the count check).
        let section = b.len() - HEADER_LEN;
        claim_count(&mut b, (section / MIN_RECORD_BYTES) as i32);
        assert!(!refusal(&b).contains("cannot fit"));
        // Compressed: the bound is what decompression may produce (1 MiB floor).
        let mut z = batch(Codec::Zstd, &recs(3));
        claim_count(&mut z, i32::MAX);
        assert!(refusal(&z).contains("cannot fit"));
        claim_count(&mut z, ((1 << 20) / MIN_RECORD_BYTES + 1) as i32);
        assert!(refusal(&z).contains("cannot fit"));
        // A valid batch of minimal records passes.
        let tiny: Vec<Rec> = (0..50).map(|_| Rec::new(0, b"", b"")).collect();
        let t = batch(Codec::None, &tiny);
        assert_eq!(
            validate_batches(&t, 1 << 20).expect("valid")[0].records_count,
            50
        );
    }

    #[test]
    fn replicated_batches_may_hold_fewer_records_than_offsets() {
        // A batch a leader's cleaner trimmed: 3 records left, lastOffsetDelta still 5.
        let mut b = batch(Codec::None, &recs(3));
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&5i32.to_be_bytes());
        crate::storage::testutil::fix_crc(&mut b);
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(StorageError::InvalidRecord(_))
        ));
        let got = validate_replicated_batches(&b).expect("a leader's trimmed batch");
        assert_eq!((got[0].0.records_count, got[0].0.last_offset_delta), (3, 5));
        // More records than offsets is refused all the same.
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&1i32.to_be_bytes());
        crate::storage::testutil::fix_crc(&mut b);
        assert!(validate_replicated_batches(&b).is_err());
        // No records left at all (Kafka's cleaner keeps such batches).
        let mut empty = batch(Codec::None, &recs(1))[..HEADER_LEN].to_vec();
        empty[OFF_LENGTH..OFF_LENGTH + 4]
            .copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
        empty[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
        crate::storage::testutil::fix_crc(&mut empty);
        assert_eq!(validate_replicated_batches(&empty).expect("empty").len(), 1);
        assert!(validate_batches(&empty, 1 << 20).is_err());
    }

    #[test]
    fn too_large_and_bad_magic() {
        let b = batch(Codec::None, &recs(3));
        let r = validate_batches(&b, b.len() - 1);
        assert!(matches!(r, Err(StorageError::MessageTooLarge { size, .. }) if size == b.len()));
        let mut m = b.clone();
        m[OFF_MAGIC] = 1;
        assert!(matches!(
            validate_batches(&m, 1 << 20),
            Err(StorageError::UnsupportedMagic(1))
        ));
    }

    #[test]
    fn patch_sets_offsets_epoch_and_append_time() {
        let mut b = batch(Codec::None, &recs(3));
        patch_batch(&mut b, 42, 7, None);
        let h = BatchHeader::parse(&b).expect("header");
        assert_eq!((h.base_offset, h.last_offset()), (42, 44));
        assert_eq!(be_i32(&b, OFF_LEADER_EPOCH), 7);
        assert_eq!(validate_batches(&b, 1 << 20).expect("still valid").len(), 1);
        patch_batch(&mut b, 42, 7, Some(99_999));
        let h = BatchHeader::parse(&b).expect("header");
        assert_eq!(h.max_timestamp, 99_999);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
        assert_eq!(batch_crc(&b), h.crc);
    }

    #[test]
    fn decompression_bomb_refused() {
        let big = vec![0u8; 16 << 20];
        let rec = Rec::new(1, b"", &big);
        let b = batch(Codec::Zstd, &[rec]);
        assert!(b.len() < 1 << 20);
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(StorageError::InvalidRecord(_))
        ));
    }
}
