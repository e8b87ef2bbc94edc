//! Fuzz entry points for storage's decoders (compiled for `cargo fuzz`, which sets
//! `--cfg fuzzing`, and for unit tests): the produce-side validation of a client record set,
//! and the decoders of the files a crash or bit rot can corrupt. Each decodes its input and,
//! when that succeeds, asserts the invariants that hold for anything accepted (an encoder gives
//! the same bytes or value back, a second walk agrees with the first). A panic is a finding.

use super::batch::{
    batch_crc, client_batch_refusal, for_each_record, validate_batches, BatchHeader, ATTR_CONTROL,
    HEADER_LEN, OFF_CRC,
};
use super::compact_files::{decode_manifest, encode_manifest, CleanerCheckpoint, MAX_PASSES};
use super::compact_rewrite::{parse_records, rebuild_batch, records_section, require_keys};
use super::compression::{compress_records, decompress_records};
use super::epoch_cache::EpochCache;
use super::error::StorageError;
use super::index::{OffsetIndex, TimeIndex};
use super::{producer_snapshot, txn_index, LogConfig};

/// Decompressed size up to which any codec's output is accepted whatever its ratio (the floor of
/// `compression::limit_for`): a re-compressed section below it always decompresses again.
const RECOMPRESS_CHECKED_BYTES: usize = 1 << 20;

/// A produce request's record set as `PartitionLog::append` and the produce handler see it:
/// `client_batch_refusal`, then `validate_batches` (framing, CRC, decompression, record walk)
/// with every codec. The input is tried as given and again with each batch's CRC recomputed,
/// so that mutations reach the record walk behind the CRC check. True if either was accepted.
pub fn record_batch(data: &[u8]) -> bool {
    let accepted = check_record_set(data);
    let mut fixed = data.to_vec();
    let fixed_accepted = fix_crcs(&mut fixed) && check_record_set(&fixed);
    accepted || fixed_accepted
}

fn check_record_set(set: &[u8]) -> bool {
    let refusal = client_batch_refusal(set);
    let max = LogConfig::default().max_message_bytes;
    let Ok(infos) = validate_batches(set, max) else {
        return false;
    };
    assert!(!infos.is_empty(), "an accepted record set has a batch");
    assert_eq!(infos.iter().map(|i| i.size).sum::<usize>(), set.len());
    let refused = infos
        .iter()
        .any(|i| i.attributes & ATTR_CONTROL != 0 || (i.producer_id >= 0 && i.base_sequence < 0));
    assert_eq!(
        refusal.is_some(),
        refused,
        "refusal agrees with the batches"
    );
    let mut pos = 0usize;
    for info in &infos {
        let batch = &set[pos..pos + info.size];
        let h = BatchHeader::parse(batch).expect("accepted batch has a header");
        assert_eq!(h.total_size(), Some(info.size));
        assert_eq!(batch_crc(batch), h.crc);
        assert!(info.size <= max);
        assert!(info.records_count >= 1);
        assert_eq!(info.last_offset_delta, info.records_count - 1);
        let mut walked = 0i32;
        for_each_record(batch, |_| {
            walked += 1;
            true
        })
        .expect("an accepted batch walks again");
        assert_eq!(walked, info.records_count);
        check_cleaner_view(batch, &h);
        if h.compression() != 0 {
            let codec = h.compression();
            let plain = decompress_records(codec, &batch[HEADER_LEN..]).expect("decompresses");
            if plain.len() <= RECOMPRESS_CHECKED_BYTES {
                let z = compress_records(codec, &plain).expect("compresses");
                assert_eq!(decompress_records(codec, &z).expect("round trip"), plain);
            }
        }
        pos += info.size;
    }
    // A compacted topic's produce check: an accepted set is keyed or keyless, never malformed.
    match require_keys(set, &infos) {
        Ok(()) | Err(StorageError::KeylessRecordOnCompactedTopic) => {}
        Err(e) => panic!("require_keys refused an accepted record set: {e}"),
    }
    true
}

/// The log cleaner's view of an accepted batch: its records parse, and a batch rebuilt from
/// every record, or from every other one, is whole (length, CRC) and keeps their offsets.
fn check_cleaner_view(batch: &[u8], h: &BatchHeader) {
    let plain = records_section(batch, h).expect("an accepted batch has a records section");
    if plain.len() > RECOMPRESS_CHECKED_BYTES {
        return;
    }
    let records = parse_records(&plain, h.records_count).expect("an accepted batch parses");
    assert_eq!(records.len() as i64, i64::from(h.records_count));
    let mut deltas = Vec::with_capacity(records.len());
    for_each_record(batch, |r| {
        deltas.push((r.offset_delta, r.timestamp_delta));
        true
    })
    .expect("walks");
    let parsed: Vec<(i32, i64)> = records
        .iter()
        .map(|r| (r.offset_delta, r.timestamp_delta))
        .collect();
    assert_eq!(
        parsed, deltas,
        "the cleaner and the validator read the same records"
    );
    let every_other: Vec<_> = records.iter().copied().step_by(2).collect();
    for kept in [&records[..], &every_other[..]] {
        let rebuilt = rebuild_batch(batch, h, kept).expect("rebuilds");
        let rh = BatchHeader::parse(&rebuilt).expect("rebuilt header");
        assert_eq!(rh.total_size(), Some(rebuilt.len()));
        assert_eq!(batch_crc(&rebuilt), rh.crc);
        assert_eq!(rh.records_count as usize, kept.len());
        let mut offsets = Vec::with_capacity(kept.len());
        for_each_record(&rebuilt, |r| {
            offsets.push(r.offset_delta);
            true
        })
        .expect("a rebuilt batch walks");
        let want: Vec<i32> = kept.iter().map(|r| r.offset_delta).collect();
        assert_eq!(offsets, want);
    }
}

/// Recomputes the CRC of every whole batch that the length fields frame; true if any changed.
fn fix_crcs(set: &mut [u8]) -> bool {
    let mut changed = false;
    let mut pos = 0usize;
    while pos + HEADER_LEN <= set.len() {
        let Some(h) = BatchHeader::parse(&set[pos..]) else {
            break;
        };
        let Some(size) = h.total_size().filter(|s| pos + s <= set.len()) else {
            break;
        };
        let batch = &mut set[pos..pos + size];
        let crc = batch_crc(batch);
        if crc != h.crc {
            batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            changed = true;
        }
        pos += size;
    }
    changed
}

/// Which on-disk file `storage_files` decodes: the first input byte picks it.
const FILE_KINDS: u8 = 7;

/// Decoders of on-disk files, the first byte choosing which: offset index, time index,
/// producer snapshot, `.txnindex`, cleaner checkpoint, cleaner swap manifest, leader epoch
/// checkpoint. (The metadata image, JSON through serde, is checked by the crate-level
/// `fuzzing::storage_files`.) True if the file decoded.
pub fn storage_files(kind: u8, file: &[u8]) -> bool {
    match kind % FILE_KINDS {
        0 => offset_index(file),
        1 => time_index(file),
        2 => {
            let accepted = producer_snapshot_file(file);
            let mut fixed = file.to_vec();
            let fixed_accepted = fix_snapshot_crc(&mut fixed) && producer_snapshot_file(&fixed);
            accepted || fixed_accepted
        }
        3 => txn_index_file(file),
        4 => cleaner_checkpoint(file),
        5 => swap_manifest(file),
        _ => {
            let accepted = epoch_checkpoint(file);
            let fixed = fix_epoch_crc(file);
            let fixed_accepted = fixed
                .as_deref()
                .is_some_and(|f| f != file && epoch_checkpoint(f));
            accepted || fixed_accepted
        }
    }
}

/// The leader epoch checkpoint: a decoded file encodes back to the same bytes, and the queries
/// and truncations on whatever it held keep the entries ascending.
fn epoch_checkpoint(b: &[u8]) -> bool {
    let Ok(cache) = EpochCache::decode(b) else {
        return false;
    };
    assert_eq!(
        cache.encode(),
        b,
        "a decoded checkpoint encodes back to itself"
    );
    let entries = cache.entries().to_vec();
    assert!(entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset));
    let log_end = entries
        .last()
        .map_or(0, |e| e.start_offset.saturating_add(1));
    for (i, e) in entries.iter().enumerate() {
        let (epoch, end) = cache.end_offset_for(e.epoch, log_end);
        assert_eq!(epoch, e.epoch);
        let want = entries.get(i + 1).map_or(log_end, |n| n.start_offset);
        assert_eq!(end, want);
    }
    if let Some(last) = entries.last() {
        if let Some(above) = last.epoch.checked_add(1) {
            let undefined = super::epoch_cache::UNDEFINED;
            assert_eq!(cache.end_offset_for(above, log_end), undefined);
        }
        let mut cut = cache.clone();
        let mid = entries[entries.len() / 2].start_offset;
        cut.truncate_from_start(mid);
        cut.truncate_from_end(last.start_offset);
        assert_eq!(EpochCache::decode(&cut.encode()), Ok(cut));
    }
    true
}

/// The checkpoint with its last line replaced by the right checksum line, when it has one.
fn fix_epoch_crc(b: &[u8]) -> Option<Vec<u8>> {
    let body_and_crc = b.strip_suffix(b"\n")?;
    let crc_at = body_and_crc
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let body = &b[..crc_at];
    let mut out = body.to_vec();
    out.extend_from_slice(format!("crc32c {:08x}\n", crc32c::crc32c(body)).as_bytes());
    Some(out)
}

fn offset_index(b: &[u8]) -> bool {
    let Some(ix) = OffsetIndex::decode(b) else {
        return false;
    };
    assert_eq!(ix.encode(), b);
    assert_eq!(ix.bytes(), b.len());
    for &(rel, pos) in &ix.entries {
        assert_eq!(ix.lookup(rel), (rel, pos));
    }
    true
}

fn time_index(b: &[u8]) -> bool {
    let Some(ti) = TimeIndex::decode(b) else {
        return false;
    };
    assert_eq!(ti.encode(), b);
    assert_eq!(ti.bytes(), b.len());
    let mut rebuilt = TimeIndex::default();
    for &(ts, rel) in &ti.entries {
        assert_eq!(ti.lookup(ts), Some((ts, rel)));
        rebuilt.observe(ts, rel);
    }
    assert_eq!(rebuilt, ti);
    assert_eq!(ti.last(), ti.entries.last().copied());
    true
}

/// Byte range of the snapshot's CRC and of the offset it names (see `producer_snapshot`).
const SNAPSHOT_CRC: std::ops::Range<usize> = 6..10;
const SNAPSHOT_OFFSET: std::ops::Range<usize> = 10..18;

fn producer_snapshot_file(b: &[u8]) -> bool {
    // Recovery decodes a file with the offset its name gives; use the one the file holds so
    // that inputs get past that check, and one it does not hold, which must be refused.
    let Some(offset) = b.get(SNAPSHOT_OFFSET).map(|o| {
        let mut a = [0u8; 8];
        a.copy_from_slice(o);
        i64::from_be_bytes(a)
    }) else {
        assert!(producer_snapshot::decode(b, 0).is_err());
        return false;
    };
    assert!(producer_snapshot::decode(b, offset.wrapping_add(1)).is_err());
    let Ok(map) = producer_snapshot::decode(b, offset) else {
        return false;
    };
    let again = producer_snapshot::encode(offset, &map);
    assert_eq!(producer_snapshot::decode(&again, offset), Ok(map));
    true
}

fn fix_snapshot_crc(b: &mut [u8]) -> bool {
    if b.len() < SNAPSHOT_CRC.end {
        return false;
    }
    let crc = crc32c::crc32c(&b[SNAPSHOT_CRC.end..]).to_be_bytes();
    let changed = b[SNAPSHOT_CRC] != crc;
    b[SNAPSHOT_CRC].copy_from_slice(&crc);
    changed
}

fn txn_index_file(b: &[u8]) -> bool {
    let (entries, problem) = txn_index::decode(b);
    let whole = entries.len() * txn_index::ENTRY_BYTES;
    assert_eq!(txn_index::encode_all(&entries), &b[..whole]);
    assert_eq!(problem.is_none(), whole == b.len());
    let accepted = problem.is_none();
    let (again, none) = txn_index::decode(&b[..whole]);
    assert_eq!((again, none), (entries, None));
    accepted
}

fn cleaner_checkpoint(b: &[u8]) -> bool {
    let Some(mut c) = CleanerCheckpoint::decode(b) else {
        return false;
    };
    assert_eq!(CleanerCheckpoint::decode(&c.encode()), Some(c.clone()));
    // Lookups and a pass on whatever a file held: no panic, and the bound on passes holds.
    for p in c.passes.clone() {
        let _ = c.first_cleaned_ms(p.0);
    }
    let first_dirty = c.first_dirty;
    let end = c.passes.last().map_or(1, |p| p.0.saturating_add(1));
    c.record_pass(end, c.tombstone_expiry_ms, 0);
    assert!(c.passes.len() <= MAX_PASSES);
    assert!(c.first_dirty >= first_dirty);
    true
}

fn swap_manifest(b: &[u8]) -> bool {
    let Some(groups) = decode_manifest(b) else {
        return false;
    };
    assert!(groups.iter().all(|g| g.end > g.base));
    assert_eq!(decode_manifest(&encode_manifest(&groups)), Some(groups));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::producer_state::{ProducerBatch, ProducerStateMap};
    use crate::storage::testutil::{batch, Codec, Rec};

    #[test]
    fn crc_fixing_reaches_the_record_walk() {
        let recs = [Rec::new(1, b"k", b"v"), Rec::new(2, b"k2", b"v2")];
        let mut set = batch(Codec::Lz4, &recs);
        assert!(record_batch(&set));
        assert!(!fix_crcs(&mut set.clone()), "a valid batch needs no fixing");
        // The CRC field itself damaged: refused as given, accepted once the CRC is fixed.
        set[OFF_CRC] ^= 0x01;
        assert!(validate_batches(&set, 1 << 20).is_err());
        assert!(record_batch(&set));
        // The records section damaged: refused even with a fixed CRC.
        let mut bad = batch(Codec::None, &recs);
        let n = bad.len();
        bad[n - 1] = 0x7f;
        assert!(!record_batch(&bad));
    }

    #[test]
    fn every_file_kind_accepts_its_own_encoding() {
        let mut ix = OffsetIndex::default();
        ix.push(3, 100);
        ix.push(9, 400);
        assert!(storage_files(0, &ix.encode()));
        let mut ti = TimeIndex::default();
        ti.observe(10, 0);
        ti.observe(20, 4);
        assert!(storage_files(1, &ti.encode()));
        let mut map = ProducerStateMap::default();
        map.replay(&ProducerBatch {
            producer_id: 5,
            epoch: 1,
            base_sequence: 0,
            last_offset_delta: 2,
            first_offset: 40,
            max_timestamp: 7,
            transactional: true,
            control: false,
        });
        let mut snapshot = producer_snapshot::encode(43, &map);
        assert!(storage_files(2, &snapshot));
        let last = snapshot.len() - 1;
        snapshot[last] ^= 0x10; // the batch's max timestamp: fine once the CRC is fixed
        assert!(storage_files(2, &snapshot));
        let entry = txn_index::AbortedTxn {
            producer_id: 5,
            first_offset: 40,
            last_offset: 50,
            last_stable_offset: 51,
        };
        let mut txn = txn_index::encode_all(&[entry, entry]);
        assert!(storage_files(3, &txn));
        txn.push(0);
        assert!(!storage_files(3, &txn), "a torn entry is reported");
        let checkpoint = b"version 1\nfirst-dirty 7\ntombstone-expiry 9\npass 7 1\n";
        assert!(storage_files(4, checkpoint));
        let mut manifest = b"version 1\nkeep 0 10\ndrop 10 20\n".to_vec();
        assert!(storage_files(5, &manifest));
        manifest.extend_from_slice(b"keep 5 5\n");
        assert!(!storage_files(5, &manifest));
        let mut epochs = EpochCache::default();
        epochs.assign(0, 0);
        epochs.assign(4, 120);
        let mut file = epochs.encode();
        assert!(storage_files(6, &file));
        file[12] = b'3'; // the first entry's epoch: fine once the checksum is fixed
        assert!(storage_files(6, &file));
        file[12] = b'5'; // above the next epoch: refused even then
        assert!(!storage_files(6, &file));
    }
}
