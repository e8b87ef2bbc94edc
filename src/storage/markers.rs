//! Transaction markers: the control batches that end a transaction in each of
//! its partitions (Kafka's `EndTransactionMarker` in a control batch), which
//! readers use to drop aborted records (read_committed) and to advance the
//! last stable offset.
//!
//! A marker is a record batch v2 with the transactional (bit 4) and control
//! (bit 5) attributes, the transaction's producer id and epoch, base sequence
//! -1, and one record: key `(version int16 = 0, type int16: 0 ABORT, 1
//! COMMIT)`, value `(version int16 = 0, coordinator_epoch int32)`.

use bytes::{BufMut, Bytes, BytesMut};

pub use super::{ATTR_CONTROL, ATTR_TRANSACTIONAL};

/// Control record types (the second int16 of the key).
pub const CONTROL_ABORT: i16 = 0;
pub const CONTROL_COMMIT: i16 = 1;

const CONTROL_KEY_VERSION: i16 = 0;
const MARKER_VALUE_VERSION: i16 = 0;

/// Size of the v2 batch header; the CRC covers bytes 21.. (attributes on).
const HEADER_LEN: usize = 61;
const LOG_OVERHEAD: usize = 12;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;

/// One transaction marker for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The coordinator's epoch (Kafka: the leader epoch of the
    /// `__transaction_state` partition), so a partition can refuse markers of
    /// a deposed coordinator.
    pub coordinator_epoch: i32,
    pub timestamp_ms: i64,
}

/// Appends a zigzag varint (record fields are varints in batch v2).
fn put_varint(b: &mut BytesMut, v: i32) {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    while z >= 0x80 {
        b.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    b.put_u8(z as u8);
}

/// The control record's key and value.
fn marker_record(m: &Marker) -> (Bytes, Bytes) {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(CONTROL_KEY_VERSION);
    key.put_i16(if m.commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(MARKER_VALUE_VERSION);
    value.put_i32(m.coordinator_epoch);
    (key.freeze(), value.freeze())
}

/// The control batch of a marker, base offset 0 and partition leader epoch
/// -1 (the log assigns both on append, outside the CRC).
pub fn control_batch(m: &Marker) -> Bytes {
    let (key, value) = marker_record(m);
    let mut record = BytesMut::with_capacity(32);
    record.put_i8(0); // record attributes (unused)
    put_varint(&mut record, 0); // timestamp delta (a varlong; 0 is one byte)
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, key.len() as i32);
    record.put_slice(&key);
    put_varint(&mut record, value.len() as i32);
    record.put_slice(&value);
    put_varint(&mut record, 0); // no headers

    let mut b = BytesMut::with_capacity(HEADER_LEN + 1 + record.len());
    b.put_i64(0); // base offset
    b.put_i32(0); // batch length, set below
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // CRC, set below
    b.put_i16(ATTR_TRANSACTIONAL | ATTR_CONTROL); // no compression, CreateTime
    b.put_i32(0); // last offset delta
    b.put_i64(m.timestamp_ms); // base timestamp
    b.put_i64(m.timestamp_ms); // max timestamp
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(-1); // base sequence: markers carry none
    b.put_i32(1); // records count
    debug_assert_eq!(b.len(), HEADER_LEN);
    put_varint(&mut b, record.len() as i32);
    b.put_slice(&record);
    let batch_length = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A control record's type, from its key (Kafka's `ControlRecordType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Types used by KRaft and snapshots (leader change, snapshot header ...):
    /// not transaction markers.
    Other(i16),
}

/// Reads a control record key; None if it is too short or its version is
/// negative.
pub fn parse_control_key(key: &[u8]) -> Option<ControlType> {
    let version = i16::from_be_bytes([*key.first()?, *key.get(1)?]);
    if version < 0 {
        return None;
    }
    let kind = i16::from_be_bytes([*key.get(2)?, *key.get(3)?]);
    Some(match kind {
        CONTROL_ABORT => ControlType::Abort,
        CONTROL_COMMIT => ControlType::Commit,
        other => ControlType::Other(other),
    })
}

/// Reads an end-transaction marker value: the coordinator epoch.
pub fn parse_marker_value(value: &[u8]) -> Option<i32> {
    let version = i16::from_be_bytes([*value.first()?, *value.get(1)?]);
    if version < 0 {
        return None;
    }
    let e = value.get(2..6)?;
    Some(i32::from_be_bytes([e[0], e[1], e[2], e[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::validate_batches;
    use kafka_protocol::records::RecordBatchDecoder;

    fn marker(commit: bool) -> Marker {
        Marker {
            commit,
            producer_id: 4242,
            producer_epoch: 3,
            coordinator_epoch: 7,
            timestamp_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn control_batch_passes_storage_validation() {
        let b = control_batch(&marker(true));
        let infos = validate_batches(&b, 1 << 20).expect("valid batch");
        assert_eq!(infos.len(), 1);
        let i = &infos[0];
        assert_eq!((i.records_count, i.last_offset_delta), (1, 0));
        assert_eq!(i.size, b.len());
        assert_eq!(i.attributes, ATTR_TRANSACTIONAL | ATTR_CONTROL);
        assert_eq!(i.producer_id, 4242);
        assert_eq!(i.max_timestamp, 1_700_000_000_123);
        // Base sequence -1, epoch 3.
        assert_eq!(&b[51..53], &3i16.to_be_bytes());
        assert_eq!(&b[53..57], &(-1i32).to_be_bytes());
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut b = control_batch(&marker(false)).to_vec();
        let n = b.len();
        b[n - 2] ^= 1; // the coordinator epoch
        assert!(validate_batches(&b, 1 << 20).is_err());
    }

    #[test]
    fn kafka_protocol_decodes_a_control_record() {
        for commit in [true, false] {
            let mut b = control_batch(&marker(commit));
            let set = RecordBatchDecoder::decode(&mut b).expect("decodes");
            assert_eq!(set.records.len(), 1);
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            assert_eq!((r.producer_id, r.producer_epoch), (4242, 3));
            assert_eq!(r.timestamp, 1_700_000_000_123);
            let key = r.key.as_ref().expect("control key");
            let value = r.value.as_ref().expect("marker value");
            let want = if commit {
                ControlType::Commit
            } else {
                ControlType::Abort
            };
            assert_eq!(parse_control_key(key), Some(want));
            assert_eq!(&key[..], &[0, 0, 0, u8::from(commit)]);
            assert_eq!(parse_marker_value(value), Some(7));
            assert_eq!(&value[..], &[0, 0, 0, 0, 0, 7]);
        }
    }

    #[test]
    fn control_parsers_refuse_short_input() {
        assert_eq!(parse_control_key(&[0, 0, 0]), None);
        assert_eq!(parse_control_key(&[0xff, 0xff, 0, 1]), None);
        assert_eq!(
            parse_control_key(&[0, 0, 0, 2]),
            Some(ControlType::Other(2))
        );
        assert_eq!(parse_marker_value(&[0, 0, 0, 0, 1]), None);
        assert_eq!(parse_marker_value(&[0, 0, 0, 0, 0, 1]), Some(1));
    }
}
