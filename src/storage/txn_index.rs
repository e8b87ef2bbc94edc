//! The aborted-transaction index of a segment (`<base>.txnindex`, Kafka's `TransactionIndex`):
//! one 34-byte entry per ABORT marker stored in the segment, in marker order:
//! `version int16 = 0, producer_id int64, first_offset int64, last_offset int64,
//! last_stable_offset int64` (big endian). `first_offset` is the aborted transaction's first
//! offset in this partition, `last_offset` the marker's offset, `last_stable_offset` the
//! partition's LSO right after the marker.
//!
//! A read_committed fetch of `[fetch_offset, upper)` needs every aborted transaction whose range
//! overlaps it. An entry lives in the segment of its marker, which is never before the segment of
//! any offset of its transaction, so a scan starts at the segment holding `fetch_offset` and goes
//! forward; it stops at the first entry whose `last_stable_offset >= upper` (at that marker no
//! transaction that started below `upper` was still open, so no later entry can overlap).
//!
//! Entries are kept in memory per segment (aborts are rare: 34 bytes each) and appended to the
//! file with the marker (see `log_txn.rs` for durability and recovery).

/// Size of one entry on disk.
pub(crate) const ENTRY_BYTES: usize = 34;
/// The only entry version Kafka writes.
const ENTRY_VERSION: i16 = 0;

/// One aborted transaction of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the ABORT marker.
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        b
    }

    /// Whether the transaction's offsets overlap `[fetch_offset, upper)`.
    pub fn overlaps(&self, fetch_offset: i64, upper: i64) -> bool {
        self.last_offset >= fetch_offset && self.first_offset < upper
    }
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// Decodes a whole index file: the entries up to the first that is not whole (a torn append) or
/// not valid (another version, impossible offsets), and what was wrong with the rest, if anything.
pub(crate) fn decode(b: &[u8]) -> (Vec<AbortedTxn>, Option<String>) {
    let mut out = Vec::with_capacity(b.len() / ENTRY_BYTES);
    for e in b.chunks_exact(ENTRY_BYTES) {
        let version = i16::from_be_bytes([e[0], e[1]]);
        let t = AbortedTxn {
            producer_id: be_i64(&e[2..]),
            first_offset: be_i64(&e[10..]),
            last_offset: be_i64(&e[18..]),
            last_stable_offset: be_i64(&e[26..]),
        };
        if version != ENTRY_VERSION || t.first_offset < 0 || t.first_offset > t.last_offset {
            let why = format!(
                "invalid entry {} (version {version}, offsets {}..{})",
                out.len(),
                t.first_offset,
                t.last_offset
            );
            return (out, Some(why));
        }
        out.push(t);
    }
    let torn = b.len() % ENTRY_BYTES;
    (out, (torn != 0).then(|| format!("{torn} trailing bytes")))
}

/// Encodes entries as a whole file.
pub(crate) fn encode_all(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        v.extend_from_slice(&e.encode());
    }
    v
}

/// Adds the (producer id, first offset) of every entry overlapping `[fetch_offset, upper)` to
/// `out`; returns true once an entry proves no later one can overlap (see the module docs).
pub(crate) fn collect(
    entries: &[AbortedTxn],
    fetch_offset: i64,
    upper: i64,
    out: &mut Vec<(i64, i64)>,
) -> bool {
    for e in entries {
        if e.overlaps(fetch_offset, upper) {
            out.push((e.producer_id, e.first_offset));
        }
        if e.last_stable_offset >= upper {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn codec_round_trip_and_torn_tail() {
        let es = vec![
            t(7, 10, 20, 21),
            t(-2, 0, 0, 1),
            t(i64::MAX, 5, i64::MAX, 3),
        ];
        let mut b = encode_all(&es);
        assert_eq!(b.len(), 3 * ENTRY_BYTES);
        assert_eq!(&b[0..2], &[0, 0]);
        assert_eq!(decode(&b), (es.clone(), None));
        b.extend_from_slice(&[0, 0, 1]);
        let (got, why) = decode(&b);
        assert_eq!(got, es);
        assert!(why.is_some_and(|w| w.contains("3 trailing")));
        b[ENTRY_BYTES + 1] = 1; // version of the second entry
        let (got, why) = decode(&b);
        assert_eq!(got, es[..1].to_vec());
        assert!(why.is_some());
        let (got, why) = decode(&encode_all(&[t(1, 9, 8, 10)]));
        assert!(got.is_empty() && why.is_some());
        assert_eq!(decode(&[]), (vec![], None));
    }

    #[test]
    fn collect_overlaps_and_stops_when_complete() {
        let es = [t(1, 0, 5, 3), t(2, 3, 10, 11), t(3, 12, 15, 16)];
        let mut out = Vec::new();
        // [6, 11): txn 2 overlaps; its LSO 11 >= 11 completes the scan.
        assert!(collect(&es, 6, 11, &mut out));
        assert_eq!(out, vec![(2, 3)]);
        out.clear();
        assert!(!collect(&es, 0, 100, &mut out));
        assert_eq!(out, vec![(1, 0), (2, 3), (3, 12)]);
        out.clear();
        assert!(!collect(&es, 16, 20, &mut out));
        assert!(out.is_empty());
    }
}
