//! Tests of the log cleaner: latest value per key with original offsets, tombstone expiry,
//! compressed batches, keyless produce refused, retention per policy, readers of replaced
//! segments, and recovery from passes interrupted at each step of the swap protocol.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use super::batch::{batch_crc, BatchHeader};
use super::compact_files::{cleaned_path, encode_manifest, SwapGroup, SWAP_MANIFEST};
use super::compact_rewrite::{parse_records, records_section};
use super::config::{CleanupPolicy, IoMode, LogConfig};
use super::error::StorageError;
use super::log::PartitionLog;
use super::segment::Segment;
use super::testutil::{batch_opt, held_deleted, run, Codec};

/// (offset, key, value) of a record; None value = tombstone.
type Record = (i64, Vec<u8>, Option<Vec<u8>>);

fn compact_config(mode: IoMode) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        io_mode: mode,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1000,
        retention_ms: 1, // must be ignored under pure compact
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];

/// Appends `batches` batches of 4 records over 13 keys (so batches are partly superseded),
/// cycling codecs; every 7th record is a tombstone. Returns every record appended.
async fn fill(log: &PartitionLog, batches: usize, seq0: usize) -> Vec<Record> {
    let mut all = Vec::new();
    for b in 0..batches {
        let mut recs = Vec::new();
        let mut owned = Vec::new();
        for r in 0..4 {
            let seq = seq0 + b * 4 + r;
            let key = format!("key-{}", seq % 13).into_bytes();
            let value =
                (seq % 7 != 3).then(|| format!("value-{seq}-{}", "x".repeat(40)).into_bytes());
            owned.push((key, value));
        }
        for (i, (k, v)) in owned.iter().enumerate() {
            recs.push((1000 + (seq0 + b * 4 + i) as i64, Some(&k[..]), v.as_deref()));
        }
        let data = batch_opt(CODECS[b % CODECS.len()], &recs);
        let res = log.append(Bytes::from(data), 1).await.expect("append");
        for (i, (k, v)) in owned.into_iter().enumerate() {
            all.push((res.base_offset + i as i64, k, v));
        }
    }
    all
}

/// Every record readable from the log start, checking offsets strictly increase.
async fn read_records(log: &PartitionLog) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let data = log.read(next, 2000, i64::MAX).await.expect("read");
        assert!(!data.is_empty(), "no progress at {next}");
        let mut at = 0;
        while at < data.len() {
            let h = BatchHeader::parse(&data[at..]).expect("header");
            let size = h.total_size().expect("size");
            let b = &data[at..at + size];
            at += size;
            assert_eq!(batch_crc(b), h.crc, "CRC of a fetched batch");
            let plain = records_section(b, &h).expect("records");
            for r in parse_records(&plain, h.records_count).expect("parse") {
                let off = h.base_offset + i64::from(r.offset_delta);
                assert!(out.last().is_none_or(|l| l.0 < off), "offsets increase");
                if off >= next {
                    let key = r.key.expect("keyed").to_vec();
                    let value = (!r.null_value).then(|| value_of(r.raw));
                    out.push((off, key, value));
                }
            }
            next = h.last_offset() + 1;
        }
    }
    out
}

/// The value bytes of a raw record (length varint included); used only for non-null values.
fn value_of(raw: &[u8]) -> Vec<u8> {
    use super::batch::{read_varint, read_varlong};
    let mut p = 0;
    read_varint(raw, &mut p).expect("len");
    p += 1;
    read_varlong(raw, &mut p).expect("ts");
    read_varint(raw, &mut p).expect("od");
    let kl = read_varint(raw, &mut p).expect("kl");
    p += usize::try_from(kl).unwrap_or(0);
    let vl = read_varint(raw, &mut p).expect("vl") as usize;
    raw[p..p + vl].to_vec()
}

/// What a correct pass leaves: below `cleaned_end`, the latest record of each key (tombstones
/// too unless `drop_tombstones`); from `cleaned_end` on, everything.
fn expected(all: &[Record], cleaned_end: i64, drop_tombstones: bool) -> Vec<Record> {
    let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
    for r in all.iter().filter(|r| r.0 < cleaned_end) {
        latest.insert(&r.1, r.0);
    }
    all.iter()
        .filter(|r| {
            r.0 >= cleaned_end
                || (latest.get(&r.1[..]) == Some(&r.0) && !(drop_tombstones && r.2.is_none()))
        })
        .cloned()
        .collect()
}

fn active_base(log: &PartitionLog) -> i64 {
    log.active().base_offset
}

#[test]
fn keeps_latest_per_key_with_offsets_in_both_modes() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = PartitionLog::open(dir.path(), compact_config(mode), 0)
                .await
                .expect("open");
            let all = fill(&log, 150, 0).await;
            let end = log.log_end_offset();
            let sealed_end = active_base(&log);
            assert!(log.segments.borrow().len() > 5, "rolled");
            let before = log.size_bytes();
            let old = log.segments_snapshot();
            let stats = log
                .compact(10_000)
                .await
                .expect("compact")
                .expect("a pass ran");
            assert!(stats.records_removed > 0);
            assert_eq!(stats.first_dirty_offset, sealed_end);
            assert!(
                log.size_bytes() < before / 2,
                "{} -> {}",
                before,
                log.size_bytes()
            );
            assert_eq!(log.log_end_offset(), end, "log end never moves");
            assert_eq!(log.log_start_offset(), 0);
            assert_eq!(
                read_records(&log).await,
                expected(&all, sealed_end, false),
                "{mode:?}"
            );
            // A reader that took the old segment list before the swap can still read them.
            let (data, _) = old[1]
                .read_from(0, 1 << 20, i64::MAX)
                .await
                .expect("old segment readable");
            assert!(!data.is_empty());
            // Once that reader lets go, the replaced segments' files (deleted
            // by the swap) are held only by the reclaim thread, which frees
            // them off the shard.
            drop(old);
            crate::runtime::sleep(std::time::Duration::from_millis(200)).await;
            assert!(held_deleted(dir.path()) > 0, "{mode:?}");
            // The same after a clean reopen and after an unclean one.
            log.close().await.expect("close");
            let log = PartitionLog::open(dir.path(), compact_config(mode), 0)
                .await
                .expect("reopen");
            assert_eq!(read_records(&log).await, expected(&all, sealed_end, false));
            drop(log);
            let log = PartitionLog::open(dir.path(), compact_config(mode), 0)
                .await
                .expect("reopen unclean");
            assert_eq!(read_records(&log).await, expected(&all, sealed_end, false));
            // Nothing dirty and no tombstone due: no pass.
            assert_eq!(log.compact(10_500).await.expect("compact"), None);
            log.close().await.expect("close");
        }
    });
}

#[test]
fn tombstones_go_after_delete_retention_and_new_data_is_cleaned() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), compact_config(IoMode::Buffered), 0)
            .await
            .expect("open");
        let mut all = fill(&log, 120, 0).await;
        let first_end = active_base(&log);
        log.compact(10_000).await.expect("compact").expect("pass");
        assert!(
            read_records(&log).await.iter().any(|r| r.2.is_none()),
            "tombstones kept"
        );
        // Within delete.retention.ms (1000) nothing is due.
        assert_eq!(log.compact(10_900).await.expect("compact"), None);
        let stats = log
            .compact(11_100)
            .await
            .expect("compact")
            .expect("tombstones due");
        assert!(stats.tombstones_removed > 0);
        let got = read_records(&log).await;
        assert_eq!(got, expected(&all, first_end, true));
        // New updates: the second pass cleans them and the already clean part together.
        all.extend(fill(&log, 120, 480).await);
        let second_end = active_base(&log);
        log.compact(20_000).await.expect("compact").expect("pass");
        // Tombstones first cleaned at 10_000 are gone; those first cleaned now remain.
        let want: Vec<Record> = expected(&all, second_end, false)
            .into_iter()
            .filter(|r| r.2.is_some() || r.0 >= first_end)
            .collect();
        assert_eq!(read_records(&log).await, want);
        // Each key appears at most once below the cleaned end.
        let mut keys: Vec<&[u8]> = want
            .iter()
            .filter(|r| r.0 < second_end)
            .map(|r| &r.1[..])
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
        log.close().await.expect("close");
    });
}

#[test]
fn keyless_produce_is_refused_and_retention_follows_policy() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), compact_config(IoMode::Buffered), 0)
            .await
            .expect("open");
        let keyless = batch_opt(
            Codec::Lz4,
            &[(1, Some(b"k"), Some(b"v")), (2, None, Some(b"v"))],
        );
        let r = log.append(Bytes::from(keyless.clone()), 1).await;
        assert!(matches!(
            r,
            Err(StorageError::KeylessRecordOnCompactedTopic)
        ));
        assert_eq!(r.map_err(|e| e.kafka_code()).err(), Some(87));
        assert_eq!(log.log_end_offset(), 0);
        fill(&log, 60, 0).await;
        let segs = log.segments.borrow().len();
        // Pure compact: retention.ms = 1 deletes nothing.
        log.housekeeping(1 << 40).await.expect("housekeeping");
        assert_eq!(log.segments.borrow().len(), segs);
        // compact,delete: retention applies again; delete alone accepts keyless records.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::CompactDelete,
            ..compact_config(IoMode::Buffered)
        });
        log.housekeeping(1 << 40).await.expect("housekeeping");
        assert_eq!(log.segments.borrow().len(), 1);
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..compact_config(IoMode::Buffered)
        });
        log.append(Bytes::from(keyless), 1)
            .await
            .expect("delete policy takes keyless records");
        assert_eq!(
            log.compact(1 << 40).await.expect("compact"),
            None,
            "not compacted"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn min_compaction_lag_and_dirty_ratio_gate_passes() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = LogConfig {
            delete_retention_ms: 1 << 50, // no tombstone becomes due in this test
            ..compact_config(IoMode::Buffered)
        };
        let cfg = LogConfig {
            min_compaction_lag_ms: 1_000_000,
            ..base.clone()
        };
        let log = PartitionLog::open(dir.path(), cfg.clone(), 0)
            .await
            .expect("open");
        fill(&log, 60, 0).await; // timestamps ~1000..1240
        assert_eq!(
            log.compact(2_000).await.expect("compact"),
            None,
            "too young"
        );
        assert!(log.compact(1_010_000).await.expect("compact").is_some());
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.99,
            ..base.clone()
        });
        fill(&log, 40, 240).await;
        assert_eq!(
            log.compact(2_000_000).await.expect("compact"),
            None,
            "ratio not reached"
        );
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.99,
            max_compaction_lag_ms: 1000,
            ..base
        });
        assert!(
            log.compact(2_000_000).await.expect("compact").is_some(),
            "max lag forces it"
        );
        log.close().await.expect("close");
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("readdir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

fn log_bases(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    v.sort_unstable();
    v
}

/// Crash states built from the files before and after a real pass: uncommitted (cleaned files
/// without a manifest) rolls back; committed with nothing or part applied rolls forward.
#[test]
fn interrupted_swaps_recover_to_old_or_new_segments() {
    run(|| async {
        let root = tempfile::tempdir().expect("tempdir");
        let live = root.path().join("live");
        let cfg = compact_config(IoMode::Direct);
        let log = PartitionLog::open(&live, cfg.clone(), 0)
            .await
            .expect("open");
        let all = fill(&log, 100, 0).await;
        let sealed_end = active_base(&log);
        log.close().await.expect("close");
        let pre = root.path().join("pre");
        copy_dir(&live, &pre);
        let old_bases = log_bases(&pre);
        let log = PartitionLog::open(&live, cfg.clone(), 0)
            .await
            .expect("open");
        log.compact(10_000).await.expect("compact").expect("pass");
        log.close().await.expect("close");
        let new_bases = log_bases(&live);
        assert!(new_bases.len() < old_bases.len());
        let want_new = expected(&all, sealed_end, false);
        let groups: Vec<SwapGroup> = new_bases
            .windows(2)
            .map(|w| SwapGroup {
                base: w[0],
                end: w[1],
                dropped: false,
            })
            .collect();
        // Scenario: (manifest written, groups already applied before the crash).
        for (manifest, applied) in [(false, 0), (true, 0), (true, 1), (true, groups.len())] {
            let crash = root.path().join(format!("crash-{manifest}-{applied}"));
            copy_dir(&pre, &crash);
            for g in &groups {
                for p in [
                    Segment::log_path(&live, g.base),
                    Segment::index_path(&live, g.base),
                    Segment::time_index_path(&live, g.base),
                ] {
                    let name = p.file_name().expect("name");
                    std::fs::copy(&p, cleaned_path(&crash.join(name))).expect("copy");
                }
            }
            if manifest {
                std::fs::write(crash.join(SWAP_MANIFEST), encode_manifest(&groups))
                    .expect("manifest");
            }
            for g in groups.iter().take(applied) {
                super::compact_files::apply_group(&crash, g).expect("apply");
            }
            let log = PartitionLog::open(&crash, cfg.clone(), 0)
                .await
                .expect("recover");
            let got = read_records(&log).await;
            if manifest {
                assert_eq!(got, want_new, "rolled forward ({applied} applied)");
                assert_eq!(log_bases(&crash), new_bases);
            } else {
                assert_eq!(got, all, "rolled back");
                assert_eq!(log_bases(&crash), old_bases);
            }
            let leftovers: Vec<String> = std::fs::read_dir(&crash)
                .expect("readdir")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cleaned") || n == SWAP_MANIFEST)
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            // The recovered log cleans and serves as usual.
            log.compact(20_000).await.expect("compact after recovery");
            assert_eq!(read_records(&log).await, want_new);
            log.close().await.expect("close");
        }
    });
}
