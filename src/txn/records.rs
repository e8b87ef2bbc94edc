//! The records of the `__transaction_state` topic, in Kafka's own formats
//! (`TransactionLogKey` / `TransactionLogValue`) so that tools which read that
//! topic understand ours:
//! - key v0: `(transactional_id)`;
//! - value v0: producer id, producer epoch, transaction timeout, status (the
//!   state's id), the transaction's partitions grouped by topic (null while
//!   Empty), last update and start timestamps.
//!
//! Value v1 is the flexible form newer Kafka writes once `transaction.version`
//! is 1 or more: compact strings and arrays, and tagged fields for the
//! previous and next producer ids (tags 0, 1) and the client's transaction
//! version (tag 2). We read it, and write v0.
//!
//! A record with a null value (tombstone) forgets an expired transactional id;
//! log compaction then drops the older records of that key.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::wire::{WireError, WireReader as Reader};

use super::transition::TxnState;

/// The only key version of `__transaction_state`.
const KEY_V0: i16 = 0;
/// The value version we write.
const VALUE_V0: i16 = 0;
/// The first flexible value version.
const VALUE_V1: i16 = 1;

/// Tags of the value's top-level tagged fields (v1+).
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

/// A transactional id's persisted state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub txn_timeout_ms: i32,
    pub state: TxnState,
    /// `(topic, partitions)`; None (null on the wire) while Empty.
    pub partitions: Option<Vec<(String, Vec<i32>)>>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// v1 tagged fields; -1, -1 and 0 when absent (and in v0).
    pub previous_producer_id: i64,
    pub next_producer_id: i64,
    pub client_transaction_version: i16,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad __transaction_state record: {0}")]
pub struct BadRecord(String);

fn put_str(b: &mut BytesMut, s: &str) {
    // Transactional ids and topic names come from int16-length request
    // strings, so this bound never cuts in practice.
    let n = s.len().min(i16::MAX as usize);
    b.put_i16(n as i16);
    b.put_slice(&s.as_bytes()[..n]);
}

/// The record key of a transactional id.
pub fn key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(KEY_V0);
    put_str(&mut b, transactional_id);
    b.freeze()
}

/// The record value (v0) of a transactional id's state.
pub fn value(v: &TxnValue) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(VALUE_V0);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.txn_timeout_ms);
    b.put_i8(v.state.id());
    match &v.partitions {
        None => b.put_i32(-1),
        Some(topics) => {
            b.put_i32(topics.len() as i32);
            for (topic, ids) in topics {
                put_str(&mut b, topic);
                b.put_i32(ids.len() as i32);
                for p in ids {
                    b.put_i32(*p);
                }
            }
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    b.freeze()
}

impl From<WireError> for BadRecord {
    fn from(e: WireError) -> BadRecord {
        BadRecord(e.0)
    }
}

/// Decodes a record key: the transactional id.
pub fn decode_key(key: Bytes) -> Result<String, BadRecord> {
    let mut r = Reader::new(key);
    match r.i16("key version")? {
        KEY_V0 => Ok(r.str("transactional id")?),
        v => Err(BadRecord(format!("unknown key version {v}"))),
    }
}

/// Decodes a record value (v0 or v1).
pub fn decode_value(value: Bytes) -> Result<TxnValue, BadRecord> {
    let mut r = Reader::new(value);
    let version = r.i16("value version")?;
    if !(VALUE_V0..=VALUE_V1).contains(&version) {
        return Err(BadRecord(format!("unknown value version {version}")));
    }
    let flexible = version >= VALUE_V1;
    let producer_id = r.i64("producer id")?;
    let producer_epoch = r.i16("producer epoch")?;
    let txn_timeout_ms = r.i32("transaction timeout")?;
    let status = r.i8("transaction status")?;
    let state = TxnState::from_id(status)
        .ok_or_else(|| BadRecord(format!("unknown transaction status {status}")))?;
    let partitions = match r.array_len(flexible, "partitions")? {
        None => None,
        Some(n) => {
            // A topic entry is at least a length and a count.
            let n = r.bounded(n, 3, "partitions")?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let topic = if flexible {
                    r.compact_str("topic")?
                } else {
                    r.str("topic")?
                };
                let m = r
                    .array_len(flexible, "partition ids")?
                    .ok_or_else(|| BadRecord("partition ids are null".into()))?;
                let m = r.bounded(m, 4, "partition ids")?;
                let mut ids = Vec::with_capacity(m);
                for _ in 0..m {
                    ids.push(r.i32("partition id")?);
                }
                if flexible {
                    r.tagged(|_, _| Ok(()))?;
                }
                topics.push((topic, ids));
            }
            Some(topics)
        }
    };
    let last_update_ms = r.i64("last update timestamp")?;
    let start_ms = r.i64("start timestamp")?;
    let mut v = TxnValue {
        producer_id,
        producer_epoch,
        txn_timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        previous_producer_id: -1,
        next_producer_id: -1,
        client_transaction_version: 0,
    };
    if flexible {
        r.tagged(|tag, f| {
            match tag {
                TAG_PREVIOUS_PRODUCER_ID => {
                    v.previous_producer_id = f.i64("previous producer id")?
                }
                TAG_NEXT_PRODUCER_ID => v.next_producer_id = f.i64("next producer id")?,
                TAG_CLIENT_TRANSACTION_VERSION => {
                    v.client_transaction_version = f.i16("client transaction version")?
                }
                _ => {} // a field of a newer Kafka: skipped
            }
            Ok(())
        })?;
    }
    Ok(v)
}

/// Decodes one record of `__transaction_state`: the transactional id, and its
/// state or None for a tombstone.
pub fn decode(key: Bytes, value: Option<Bytes>) -> Result<(String, Option<TxnValue>), BadRecord> {
    Ok((decode_key(key)?, value.map(decode_value).transpose()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TxnValue {
        TxnValue {
            producer_id: 4000,
            producer_epoch: 7,
            txn_timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: Some(vec![
                ("orders".into(), vec![0, 3]),
                ("__consumer_offsets".into(), vec![12]),
            ]),
            last_update_ms: 1_700_000_000_500,
            start_ms: 1_700_000_000_000,
            previous_producer_id: -1,
            next_producer_id: -1,
            client_transaction_version: 0,
        }
    }

    #[test]
    fn key_layout_is_kafkas() {
        assert_eq!(&key("tx")[..], &[0, 0, 0, 2, b't', b'x']);
        assert_eq!(decode_key(key("tx-1")).unwrap(), "tx-1");
        assert!(decode_key(Bytes::from_static(&[0, 1, 0, 0])).is_err());
    }

    #[test]
    fn value_round_trips() {
        let v = sample();
        let (id, got) = decode(key("tx"), Some(value(&v))).unwrap();
        assert_eq!((id.as_str(), got), ("tx", Some(v)));
        let empty = TxnValue {
            state: TxnState::Empty,
            partitions: None,
            start_ms: -1,
            ..sample()
        };
        assert_eq!(decode_value(value(&empty)).unwrap(), empty);
        let (_, tomb) = decode(key("tx"), None).unwrap();
        assert_eq!(tomb, None);
    }

    #[test]
    fn value_v0_layout_is_kafkas() {
        let v = TxnValue {
            partitions: Some(vec![("t".into(), vec![1])]),
            ..sample()
        };
        let b = value(&v);
        let mut want = vec![0u8, 0];
        want.extend_from_slice(&4000i64.to_be_bytes());
        want.extend_from_slice(&7i16.to_be_bytes());
        want.extend_from_slice(&60_000i32.to_be_bytes());
        want.push(1); // Ongoing
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&[0, 1, b't']);
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(&b[..], &want[..]);
        // Empty writes a null partition array.
        let e = value(&TxnValue {
            state: TxnState::Empty,
            partitions: None,
            ..sample()
        });
        assert_eq!(&e[2 + 8 + 2 + 4 + 1..2 + 8 + 2 + 4 + 1 + 4], &[0xff; 4]);
    }

    /// A v1 (flexible) value as newer Kafka writes it, built by hand.
    fn v1_bytes(with_tags: bool) -> Vec<u8> {
        let mut b = vec![0u8, 1];
        b.extend_from_slice(&4000i64.to_be_bytes());
        b.extend_from_slice(&7i16.to_be_bytes());
        b.extend_from_slice(&60_000i32.to_be_bytes());
        b.push(2); // PrepareCommit
        b.push(2); // one topic (N + 1)
        b.extend_from_slice(&[2, b't']); // compact string "t"
        b.extend_from_slice(&[3]); // two partition ids
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&5i32.to_be_bytes());
        b.push(0); // no tagged fields in the topic entry
        b.extend_from_slice(&20i64.to_be_bytes());
        b.extend_from_slice(&10i64.to_be_bytes());
        if with_tags {
            b.push(4); // four tagged fields, one unknown
            b.extend_from_slice(&[0, 8]);
            b.extend_from_slice(&3999i64.to_be_bytes());
            b.extend_from_slice(&[1, 8]);
            b.extend_from_slice(&4001i64.to_be_bytes());
            b.extend_from_slice(&[2, 2, 0, 2]);
            b.extend_from_slice(&[9, 3, 1, 2, 3]);
        } else {
            b.push(0);
        }
        b
    }

    #[test]
    fn value_v1_is_read() {
        let v = decode_value(Bytes::from(v1_bytes(true))).unwrap();
        assert_eq!(v.state, TxnState::PrepareCommit);
        assert_eq!(v.partitions, Some(vec![("t".into(), vec![0, 5])]));
        assert_eq!((v.last_update_ms, v.start_ms), (20, 10));
        assert_eq!((v.previous_producer_id, v.next_producer_id), (3999, 4001));
        assert_eq!(v.client_transaction_version, 2);
        let plain = decode_value(Bytes::from(v1_bytes(false))).unwrap();
        assert_eq!(
            (plain.previous_producer_id, plain.next_producer_id),
            (-1, -1)
        );
        assert_eq!(plain.client_transaction_version, 0);
        // A null compact array (0) reads as None.
        let mut null = v1_bytes(false);
        let at = 2 + 8 + 2 + 4 + 1;
        null.splice(at..at + 13, [0u8]);
        assert_eq!(decode_value(Bytes::from(null)).unwrap().partitions, None);
    }

    #[test]
    fn truncated_or_corrupt_records_are_errors_not_panics() {
        let full = value(&sample());
        for n in 0..full.len() {
            assert!(decode_value(full.slice(..n)).is_err(), "prefix {n}");
        }
        let v1 = Bytes::from(v1_bytes(true));
        for n in 0..v1.len() {
            assert!(decode_value(v1.slice(..n)).is_err(), "v1 prefix {n}");
        }
        let k = key("some-id");
        for n in 0..k.len() {
            assert!(decode_key(k.slice(..n)).is_err());
        }
        // Unknown version and status.
        assert!(decode_value(Bytes::from_static(&[0, 2])).is_err());
        let mut bad = full.to_vec();
        bad[2 + 8 + 2 + 4] = 42;
        assert!(decode_value(Bytes::from(bad)).is_err());
        // A huge partition count is refused before anything is allocated.
        let mut huge = full.to_vec();
        huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_value(Bytes::from(huge)).is_err());
    }
}
