//! Producer state snapshot files: `<20-digit offset>.snapshot` in the partition directory (Kafka's
//! name) holds the producer state covering every batch below that offset. Written atomically
//! (temporary file, fdatasync, rename) when a segment rolls and at clean close; the newest
//! `SNAPSHOTS_KEPT` are kept.
//!
//! Format (ours, big-endian): magic `SLPS`, version u16, CRC-32C u32 of everything after it, the
//! snapshot offset i64, the producer count u32, then per producer: id i64, epoch i16, last
//! timestamp i64, open transaction's first offset i64 (-1: none), batch count u8 (at most
//! `BATCHES_PER_PRODUCER`), and per batch: first sequence i32, last sequence i32, first offset
//! i64, last offset i64, max timestamp i64. A file that fails any check decodes to an error and
//! is ignored by recovery.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::error::Result;
use super::file::{sync_dir, write_file_atomic};
use super::producer_state::{BatchMeta, ProducerEntry, ProducerStateMap, BATCHES_PER_PRODUCER};
use super::segment::segment_stem;

/// Snapshot files kept after each write (the newest ones).
pub(crate) const SNAPSHOTS_KEPT: usize = 2;
const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
/// magic + version + crc.
const PREFIX_LEN: usize = 10;
const ENTRY_FIXED_LEN: usize = 8 + 2 + 8 + 8 + 1;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{}.snapshot", segment_stem(offset)))
}

/// Parses `00000000000000000123.snapshot` into 123.
fn parse_snapshot_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".snapshot")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(o) = parse_snapshot_name(&name.to_string_lossy()) {
            out.push(o);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn remove_snapshot(dir: &Path, offset: i64) -> Result<()> {
    match std::fs::remove_file(snapshot_path(dir, offset)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the snapshot for `offset` atomically and makes its directory entry durable.
pub(crate) async fn write_snapshot(dir: &Path, offset: i64, map: &ProducerStateMap) -> Result<()> {
    write_file_atomic(&snapshot_path(dir, offset), encode(offset, map)).await?;
    sync_dir(dir).await
}

pub(crate) fn encode(offset: i64, map: &ProducerStateMap) -> Vec<u8> {
    let batches: usize = map.producers.values().map(|e| e.batches.len()).sum();
    let mut b = Vec::with_capacity(
        PREFIX_LEN + 12 + map.producers.len() * ENTRY_FIXED_LEN + batches * BATCH_LEN,
    );
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    // Producer ids are bounded by memory long before u32: saturate rather than wrap.
    let count = u32::try_from(map.producers.len()).unwrap_or(u32::MAX);
    b.extend_from_slice(&count.to_be_bytes());
    for (&pid, e) in map.producers.iter().take(count as usize) {
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&e.epoch.to_be_bytes());
        b.extend_from_slice(&e.last_timestamp.to_be_bytes());
        b.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
        // At most BATCHES_PER_PRODUCER (5) by construction.
        b.push(e.batches.len().min(BATCHES_PER_PRODUCER) as u8);
        for m in e.batches.iter().take(BATCHES_PER_PRODUCER) {
            b.extend_from_slice(&m.first_seq.to_be_bytes());
            b.extend_from_slice(&m.last_seq.to_be_bytes());
            b.extend_from_slice(&m.first_offset.to_be_bytes());
            b.extend_from_slice(&m.last_offset.to_be_bytes());
            b.extend_from_slice(&m.max_timestamp.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&b[PREFIX_LEN..]);
    b[6..PREFIX_LEN].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Bounds-checked big-endian reader over a snapshot body.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let end = self.pos + N;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn i16(&mut self) -> std::result::Result<i16, String> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> std::result::Result<i32, String> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> std::result::Result<i64, String> {
        self.take::<8>().map(i64::from_be_bytes)
    }
}

/// Decodes a snapshot file that should cover the offsets below `offset`; Err says what is wrong.
pub(crate) fn decode(b: &[u8], offset: i64) -> std::result::Result<ProducerStateMap, String> {
    if b.len() < PREFIX_LEN || &b[..4] != MAGIC {
        return Err("not a producer snapshot (bad magic)".to_string());
    }
    let version = u16::from_be_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let crc = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
    if crc32c::crc32c(&b[PREFIX_LEN..]) != crc {
        return Err("CRC mismatch".to_string());
    }
    let mut r = Reader { b, pos: PREFIX_LEN };
    let stored = r.i64()?;
    if stored != offset {
        return Err(format!("holds offset {stored}, its name says {offset}"));
    }
    let count = r.u32()? as usize;
    if count > (b.len() - r.pos) / ENTRY_FIXED_LEN {
        return Err(format!("producer count {count} exceeds the file"));
    }
    let mut map = ProducerStateMap::default();
    for _ in 0..count {
        let pid = r.i64()?;
        let epoch = r.i16()?;
        let last_timestamp = r.i64()?;
        let txn = r.i64()?;
        let n = r.take::<1>()?[0] as usize;
        if pid < 0 || n > BATCHES_PER_PRODUCER {
            return Err(format!("bad entry for producer id {pid} ({n} batches)"));
        }
        let mut batches = VecDeque::with_capacity(n);
        for _ in 0..n {
            batches.push_back(BatchMeta {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
                max_timestamp: r.i64()?,
            });
        }
        let entry = ProducerEntry {
            epoch,
            batches,
            last_timestamp,
            current_txn_first_offset: (txn >= 0).then_some(txn),
        };
        if map.producers.insert(pid, entry).is_some() {
            return Err(format!("producer id {pid} appears twice"));
        }
    }
    if r.pos != b.len() {
        return Err(format!("{} trailing bytes", b.len() - r.pos));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::producer_state::{ProducerBatch, Staged};

    fn sample() -> ProducerStateMap {
        let mut m = ProducerStateMap::default();
        for (pid, n) in [(7i64, 7i32), (3, 1), (i64::MAX, 2)] {
            for i in 0..n {
                m.replay(&ProducerBatch {
                    producer_id: pid,
                    epoch: 2,
                    base_sequence: i * 3,
                    last_offset_delta: 2,
                    first_offset: 100 + i64::from(i) * 3,
                    max_timestamp: 5000 + i64::from(i),
                    transactional: pid == 3,
                    control: false,
                });
            }
        }
        m
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(m.producers[&7].batches.len(), BATCHES_PER_PRODUCER);
        assert_eq!(m.producers[&3].current_txn_first_offset, Some(100));
        let b = encode(200, &m);
        assert_eq!(decode(&b, 200), Ok(m.clone()));
        assert!(decode(&b, 201).is_err());
        let empty = ProducerStateMap::default();
        assert_eq!(decode(&encode(0, &empty), 0), Ok(empty));
        // The decoded state behaves like the original.
        let next = ProducerBatch {
            producer_id: 7,
            epoch: 2,
            base_sequence: 21,
            last_offset_delta: 0,
            first_offset: 300,
            max_timestamp: 1,
            transactional: false,
            control: false,
        };
        let decoded = decode(&b, 200).expect("decode");
        assert!(matches!(decoded.stage(&[next]), Ok(Staged::Append { .. })));
    }

    #[test]
    fn every_corruption_is_refused() {
        let b = encode(200, &sample());
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(decode(&c, 200).is_err(), "flipped byte {i}");
        }
        for len in 0..b.len() {
            assert!(decode(&b[..len], 200).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn names() {
        let p = snapshot_path(Path::new("/d"), 123);
        assert_eq!(p, Path::new("/d/00000000000000000123.snapshot"));
        assert_eq!(
            parse_snapshot_name("00000000000000000123.snapshot"),
            Some(123)
        );
        assert_eq!(parse_snapshot_name("123.snapshot"), None);
        assert_eq!(
            parse_snapshot_name("00000000000000000123.snapshot.tmp"),
            None
        );
    }
}
