//! Tests of `PartitionLog`: round trips across rolls in both I/O modes, index lookups, refusals,
//! timestamps, clean and unclean reopen, retention, DeleteRecords and group commit.

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::batch::{validate_batches, BatchHeader};
use super::config::{IoMode, LogConfig, TimestampType};
use super::error::StorageError;
use super::log::PartitionLog;
use super::testutil::{batch, held_deleted, run, simple_batch, Codec, Rec};

fn small_config(mode: IoMode) -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 512,
        io_mode: mode,
        ..LogConfig::default()
    }
}

/// Offsets of the batches in a fetched record set, as (base, last).
fn offsets(data: &[u8]) -> Vec<(i64, i64)> {
    validate_batches(data, usize::MAX)
        .expect("fetched data is valid")
        .iter()
        .map(|b| {
            (
                b.base_offset,
                b.base_offset + i64::from(b.last_offset_delta),
            )
        })
        .collect()
}

/// Reads everything from `from` to the end in small fetches, checking continuity.
async fn read_all(log: &PartitionLog, from: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let data = log.read(next, 3000, i64::MAX).await.expect("read");
        let got = offsets(&data);
        assert!(!got.is_empty(), "no progress at {next}");
        assert!(got[0].0 <= next && next <= got[0].1);
        next = got[got.len() - 1].1 + 1;
        out.extend(got);
    }
    out
}

/// Appends `n` batches of 5 records (~250 bytes each) with timestamps 1000 + 10 * i.
async fn fill(log: &PartitionLog, n: usize, now: i64) {
    for i in 0..n {
        let b = simple_batch(5, 1000 + 10 * i as i64, 20);
        log.append(Bytes::from(b), now).await.expect("append");
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_across_rolls_both_modes() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = PartitionLog::open(dir.path(), small_config(mode), 3)
                .await
                .expect("open");
            let mut expect = Vec::new();
            for i in 0..120 {
                let r = log
                    .append(Bytes::from(simple_batch(5, 1000 + i, 20)), 1)
                    .await
                    .expect("append");
                assert_eq!((r.base_offset, r.last_offset), (i * 5, i * 5 + 4));
                assert_eq!(r.log_append_time_ms, -1);
                expect.push((i * 5, i * 5 + 4));
            }
            assert_eq!(log.log_end_offset(), 600);
            assert!(segment_files(dir.path()).len() > 3, "{mode:?} rolled");
            // Live (served from the recent-batch cache) and reopened (served from files) agree.
            let live = check_reads(&log, &expect).await;
            log.close().await.expect("close");
            let log = PartitionLog::open(dir.path(), small_config(mode), 3)
                .await
                .expect("reopen");
            assert_eq!(check_reads(&log, &expect).await, live);
            log.close().await.expect("close");
        }
    });
}

/// Read checks shared by the live and reopened log; returns some fetched bytes to compare.
async fn check_reads(log: &PartitionLog, expect: &[(i64, i64)]) -> Vec<Bytes> {
    assert_eq!(read_all(log, 0).await, expect);
    // Fetch from the middle of a batch deep inside a segment, via the sparse index.
    let data = log.read(333, 1, i64::MAX).await.expect("read");
    assert_eq!(offsets(&data), vec![(330, 334)]);
    let h = BatchHeader::parse(&data).expect("header");
    assert_eq!(super::batch::be_i32(&data, 12), 3, "leader epoch written");
    assert_eq!(h.max_timestamp, 1000 + 66 + 4);
    // High watermark bounds the fetch.
    let bounded = log.read(100, 1 << 20, 112).await.expect("read");
    let got = offsets(&bounded);
    assert_eq!(got.first(), Some(&(100, 104)));
    assert_eq!(got.last(), Some(&(110, 114)));
    let tail = log.read(590, 1 << 20, i64::MAX).await.expect("read");
    assert_eq!(offsets(&tail), vec![(590, 594), (595, 599)]);
    assert!(log.read(600, 100, i64::MAX).await.expect("read").is_empty());
    let oor = log.read(601, 100, i64::MAX).await;
    assert!(matches!(oor, Err(StorageError::OffsetOutOfRange { .. })));
    vec![data, bounded, tail]
}

#[test]
fn first_batch_is_returned_whole_even_if_larger_than_max_bytes() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), LogConfig::default(), 0)
            .await
            .expect("open");
        let big = simple_batch(3, 1, 10_000);
        log.append(Bytes::from(big.clone()), 1)
            .await
            .expect("append");
        log.append(Bytes::from(simple_batch(1, 2, 10)), 1)
            .await
            .expect("append");
        let data = log.read(1, 10, i64::MAX).await.expect("read");
        assert_eq!(data.len(), big.len());
        assert_eq!(offsets(&data), vec![(0, 2)]);
    });
}

#[test]
fn refused_appends_write_nothing() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            max_message_bytes: 2000,
            ..small_config(IoMode::Direct)
        };
        let log = PartitionLog::open(dir.path(), cfg, 0).await.expect("open");
        let good = simple_batch(2, 5, 10);
        let mut bad_crc = simple_batch(2, 5, 10);
        let n = bad_crc.len();
        bad_crc[n - 2] ^= 1;
        let mut set = good.clone();
        set.extend_from_slice(&bad_crc);
        let r = log.append(Bytes::from(set), 1).await;
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))));
        let mut mismatch = simple_batch(3, 5, 10);
        mismatch[57..61].copy_from_slice(&2i32.to_be_bytes());
        mismatch[23..27].copy_from_slice(&1i32.to_be_bytes());
        super::testutil::fix_crc(&mut mismatch);
        let r = log.append(Bytes::from(mismatch), 1).await;
        assert!(matches!(r, Err(StorageError::InvalidRecord(_))));
        let r = log.append(Bytes::from(simple_batch(1, 5, 3000)), 1).await;
        assert!(matches!(r, Err(StorageError::MessageTooLarge { .. })));
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
        let r = log.append(Bytes::from(good), 1).await.expect("append");
        assert_eq!(r.base_offset, 0);
    });
}

#[test]
fn timestamps_and_compressed_batches() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Direct), 0)
            .await
            .expect("open");
        assert_eq!(log.max_timestamp(), (-1, -1));
        assert_eq!(log.offset_for_timestamp(0).await.expect("lookup"), None);
        fill(&log, 40, 1).await; // offsets 0..200, batch i has ts 1000+10i .. +4
        let gz: Vec<Rec> = (0..4)
            .map(|i| Rec::new(5000 + 100 * i, b"k", b"v"))
            .collect();
        log.append(Bytes::from(batch(Codec::Gzip, &gz)), 1)
            .await
            .expect("append gzip"); // 200..203
        let zs: Vec<Rec> = [6000, 9000, 7000]
            .iter()
            .map(|&t| Rec::new(t, b"k", b"v"))
            .collect();
        log.append(Bytes::from(batch(Codec::Zstd, &zs)), 1)
            .await
            .expect("append zstd"); // 204..206
        assert_eq!(log.max_timestamp(), (9000, 205));
        let l = |t| log.offset_for_timestamp(t);
        assert_eq!(l(0).await.expect("lookup"), Some((0, 1000)));
        assert_eq!(l(1003).await.expect("lookup"), Some((3, 1003)));
        assert_eq!(l(1005).await.expect("lookup"), Some((5, 1010)));
        assert_eq!(l(1392).await.expect("lookup"), Some((197, 1392)));
        assert_eq!(l(5150).await.expect("lookup"), Some((202, 5200)));
        assert_eq!(l(6500).await.expect("lookup"), Some((205, 9000)));
        assert_eq!(l(9001).await.expect("lookup"), None);
        log.close().await.expect("close");
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Direct), 0)
            .await
            .expect("reopen");
        assert_eq!(log.max_timestamp(), (9000, 205));
        assert_eq!(
            log.offset_for_timestamp(5150).await.expect("lookup"),
            Some((202, 5200))
        );
    });
}

#[test]
fn log_append_time_stamps_batches() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), cfg, 0).await.expect("open");
        let r = log
            .append(Bytes::from(simple_batch(3, 5, 10)), 777)
            .await
            .expect("append");
        assert_eq!(r.log_append_time_ms, 777);
        let data = log.read(0, 1 << 20, i64::MAX).await.expect("read");
        let h = BatchHeader::parse(&data).expect("header");
        assert_eq!(h.max_timestamp, 777);
        assert_ne!(h.attributes & 8, 0);
        validate_batches(&data, usize::MAX).expect("CRC recomputed");
        assert_eq!(log.max_timestamp(), (777, 0));
        assert_eq!(
            log.offset_for_timestamp(700).await.expect("ts"),
            Some((0, 777))
        );
    });
}

#[test]
fn clean_reopen_keeps_everything() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = PartitionLog::open(dir.path(), small_config(mode), 0)
                .await
                .expect("open");
            fill(&log, 50, 1).await;
            let size = log.size_bytes();
            log.close().await.expect("close");
            assert!(dir.path().join(super::log::CLEAN_MARKER).exists());
            let last = segment_files(dir.path()).pop().expect("segments");
            // No O_DIRECT padding left: the file is exactly a sequence of valid batches.
            let on_disk = std::fs::read(dir.path().join(&last)).expect("read");
            validate_batches(&on_disk, usize::MAX).expect("padding trimmed");
            let log = PartitionLog::open(dir.path(), small_config(mode), 0)
                .await
                .expect("reopen");
            assert!(!dir.path().join(super::log::CLEAN_MARKER).exists());
            assert_eq!(log.log_end_offset(), 250);
            assert_eq!(log.size_bytes(), size);
            assert_eq!(read_all(&log, 0).await.len(), 50);
            let r = log
                .append(Bytes::from(simple_batch(2, 1, 10)), 1)
                .await
                .expect("append");
            assert_eq!(r.base_offset, 250);
            assert_eq!(read_all(&log, 240).await.last(), Some(&(250, 251)));
        }
    });
}

/// Simulates a crash: the log is dropped without close, then the active segment gets a torn
/// tail (`junk`) and loses its index.
async fn crash_with_tail(mode: IoMode, junk: Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = PartitionLog::open(dir.path(), small_config(mode), 0)
            .await
            .expect("open");
        fill(&log, 45, 1).await;
        assert_eq!(log.log_end_offset(), 225);
        log.flush(224).await.expect("flush");
    }
    let last = segment_files(dir.path()).pop().expect("segments");
    let path = dir.path().join(&last);
    let stem = last.trim_end_matches(".log");
    let _ = std::fs::remove_file(dir.path().join(format!("{stem}.index")));
    let mut data = std::fs::read(&path).expect("read segment");
    // Direct mode leaves zero padding up to the page: find the logical end by walking headers.
    let mut end = 0;
    while let Some(h) = BatchHeader::parse(&data[end..]) {
        match h.total_size() {
            Some(n) if h.magic == 2 && end + n <= data.len() => end += n,
            _ => break,
        }
    }
    data.truncate(end);
    data.extend_from_slice(&junk);
    std::fs::write(&path, &data).expect("write junk");

    let log = PartitionLog::open(dir.path(), small_config(mode), 0)
        .await
        .expect("recover");
    assert_eq!(log.log_end_offset(), 225, "{mode:?}");
    assert_eq!(read_all(&log, 0).await.len(), 45);
    let r = log
        .append(Bytes::from(simple_batch(5, 1, 10)), 1)
        .await
        .expect("append after recovery");
    assert_eq!(r.base_offset, 225);
    assert!(
        dir.path().join(format!("{stem}.index")).exists(),
        "index rebuilt"
    );
    log.close().await.expect("close");
    let log = PartitionLog::open(dir.path(), small_config(mode), 0)
        .await
        .expect("reopen");
    assert_eq!(log.log_end_offset(), 230);
    assert_eq!(read_all(&log, 200).await.last(), Some(&(225, 229)));
}

#[test]
fn unclean_reopen_truncates_torn_tails() {
    run(|| async {
        let half = simple_batch(5, 1, 100);
        for mode in [IoMode::Direct, IoMode::Buffered] {
            crash_with_tail(mode, vec![0u8; 3000]).await;
            crash_with_tail(mode, half[..half.len() / 2].to_vec()).await;
            crash_with_tail(mode, (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect()).await;
        }
    });
}

#[test]
fn retention_by_bytes_and_time() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Direct), 0)
            .await
            .expect("open");
        fill(&log, 200, 1).await; // ts up to 2999
        let segs = segment_files(dir.path()).len();
        assert!(segs > 4);
        log.set_config(LogConfig {
            retention_bytes: 20 << 10,
            ..small_config(IoMode::Direct)
        });
        log.housekeeping(3000).await.expect("housekeeping");
        // Kafka semantics: delete a segment only if what remains is still >= retention.bytes.
        let size = log.size_bytes();
        assert!((20 << 10..(20 << 10) + (8 << 10)).contains(&size), "{size}");
        let start = log.log_start_offset();
        assert!(start > 0);
        let first = segment_files(dir.path())[0].clone();
        assert_eq!(first, format!("{start:020}.log"));
        let oor = log.read(start - 1, 100, i64::MAX).await;
        assert!(matches!(oor, Err(StorageError::OffsetOutOfRange { .. })));
        assert_eq!(
            offsets(&log.read(start, 1, i64::MAX).await.expect("read"))[0].0,
            start
        );
        // By time: everything older than 500 ms before now=3000 except the active segment.
        log.set_config(LogConfig {
            retention_ms: 500,
            ..small_config(IoMode::Direct)
        });
        log.housekeeping(3000 + 1000 * 1000)
            .await
            .expect("housekeeping");
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert!(log.log_start_offset() > start);
        assert_eq!(log.log_end_offset(), 1000);
    });
}

#[test]
fn deleted_segment_files_are_freed_off_the_shard() {
    for mode in [IoMode::Direct, IoMode::Buffered] {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = PartitionLog::open(dir.path(), small_config(mode), 0)
                .await
                .expect("open");
            fill(&log, 200, 1).await;
            let before = segment_files(dir.path()).len();
            log.set_config(LogConfig {
                retention_bytes: 20 << 10,
                ..small_config(mode)
            });
            log.housekeeping(3000).await.expect("housekeeping");
            let removed = before - segment_files(dir.path()).len();
            assert!(removed > 0);
            // The shard's own handles are closed by now (glommio closes them
            // on its ring): what still holds the files is the reclaim thread,
            // one fd per removed segment, which closes it after its delay.
            crate::runtime::sleep(Duration::from_millis(200)).await;
            assert_eq!(held_deleted(dir.path()), removed, "{mode:?}");
            // Topic deletion: every segment, the same way.
            let left = segment_files(dir.path()).len();
            log.delete().await.expect("delete");
            assert!(!dir.path().exists());
            crate::runtime::sleep(Duration::from_millis(200)).await;
            assert!(held_deleted(dir.path()) >= left, "{mode:?}");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while held_deleted(dir.path()) > 0 && std::time::Instant::now() < deadline {
                crate::runtime::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(held_deleted(dir.path()), 0, "{mode:?}: never freed");
        });
    }
}

#[test]
fn segment_ms_rolls() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_ms: 100,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), cfg, 0).await.expect("open");
        fill(&log, 2, 1000).await;
        assert_eq!(segment_files(dir.path()).len(), 1);
        fill(&log, 1, 1200).await;
        assert_eq!(segment_files(dir.path()).len(), 2);
        log.housekeeping(1400).await.expect("housekeeping");
        assert_eq!(segment_files(dir.path()).len(), 3);
        log.housekeeping(1401)
            .await
            .expect("no roll of an empty segment");
        assert_eq!(segment_files(dir.path()).len(), 3);
    });
}

#[test]
fn delete_records_survives_reopen() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Buffered), 0)
            .await
            .expect("open");
        fill(&log, 100, 1).await;
        let before = segment_files(dir.path()).len();
        assert_eq!(log.delete_records_before(303).await.expect("delete"), 303);
        assert_eq!(log.log_start_offset(), 303);
        assert!(segment_files(dir.path()).len() < before);
        assert_eq!(log.delete_records_before(10).await.expect("noop"), 303);
        let r = log.delete_records_before(501).await;
        assert!(matches!(r, Err(StorageError::OffsetOutOfRange { .. })));
        let data = log.read(303, 1, i64::MAX).await.expect("read");
        assert_eq!(offsets(&data), vec![(300, 304)]);
        drop(log); // unclean
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Buffered), 0)
            .await
            .expect("reopen");
        assert_eq!(log.log_start_offset(), 303);
        let oor = log.read(302, 1, i64::MAX).await;
        assert!(matches!(oor, Err(StorageError::OffsetOutOfRange { .. })));
        assert_eq!(log.log_end_offset(), 500);
    });
}

#[test]
fn group_commit_flush_and_concurrent_appends() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Rc::new(
            PartitionLog::open(dir.path(), small_config(IoMode::Direct), 0)
                .await
                .expect("open"),
        );
        let mut tasks = Vec::new();
        for i in 0..20 {
            let log = Rc::clone(&log);
            tasks.push(glommio::spawn_local(async move {
                let r = log
                    .append(Bytes::from(simple_batch(2, i, 30)), 1)
                    .await
                    .expect("append");
                log.flush(r.last_offset).await.expect("flush");
                r.base_offset
            }));
        }
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await);
        }
        bases.sort_unstable();
        assert_eq!(bases, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(log.durable_end.get(), 40);
        let syncs = log.sync_count.get();
        assert!((1..=20).contains(&syncs), "20 flushes took {syncs} syncs");
        // Already durable: returns at once without another sync.
        log.flush(10).await.expect("flush");
        log.flush(39).await.expect("flush");
        assert_eq!(log.sync_count.get(), syncs);
        // Flushes arriving together are covered by one sync (the first one in, covering all).
        for i in 0..20 {
            log.append(Bytes::from(simple_batch(1, i, 30)), 1)
                .await
                .expect("append");
        }
        let flushes: Vec<_> = (40..60)
            .map(|o| {
                let log = Rc::clone(&log);
                glommio::spawn_local(async move { log.flush(o).await.expect("flush") })
            })
            .collect();
        for f in flushes {
            f.await;
        }
        assert_eq!(log.sync_count.get(), syncs + 1);
        assert_eq!(log.durable_end.get(), 60);
        assert_eq!(read_all(&log, 0).await.len(), 40);
    });
}

#[test]
fn flush_policy_follows_flush_messages_and_flush_ms() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            flush_messages: 5,
            ..small_config(IoMode::Direct)
        };
        let log = PartitionLog::open(dir.path(), cfg.clone(), 0)
            .await
            .expect("open");
        assert_eq!(log.flush_due(), None, "nothing pending");
        log.append(Bytes::from(simple_batch(3, 0, 10)), 1)
            .await
            .expect("append");
        assert_eq!(log.flush_due(), None, "3 of 5 messages pending");
        log.append(Bytes::from(simple_batch(2, 0, 10)), 1)
            .await
            .expect("append");
        assert_eq!(log.flush_due(), Some(Duration::ZERO), "5 pending: sync now");
        log.flush(4).await.expect("flush");
        assert_eq!(log.flush_due(), None);
        // flush.ms: a timer is asked for once, until it has run.
        log.set_config(LogConfig {
            flush_ms: 250,
            ..cfg
        });
        log.append(Bytes::from(simple_batch(1, 0, 10)), 1)
            .await
            .expect("append");
        assert_eq!(log.flush_due(), Some(Duration::from_millis(250)));
        log.flush_timer_armed.set(true);
        assert_eq!(log.flush_due(), None, "timer already armed");
        // The defaults never sync on their own.
        log.set_config(small_config(IoMode::Direct));
        log.flush_timer_armed.set(false);
        assert_eq!(log.flush_due(), None);
    });
}

#[test]
fn delete_removes_directory() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t-0");
        let log = PartitionLog::open(&p, LogConfig::default(), 0)
            .await
            .expect("open");
        fill(&log, 3, 1).await;
        log.delete().await.expect("delete");
        assert!(!p.exists());
        assert!(matches!(log.flush(100).await, Err(StorageError::Io(_))));
        assert!(matches!(
            log.read(0, 10, 100).await,
            Err(StorageError::Io(_))
        ));
        log.housekeeping(0).await.expect_err("deleted");
        let r = log.append(Bytes::from(simple_batch(1, 1, 1)), 1).await;
        assert!(matches!(r, Err(StorageError::Io(_))));
    });
}

#[test]
fn missing_indexes_of_sealed_segments_are_rebuilt() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Direct), 0)
            .await
            .expect("open");
        fill(&log, 100, 1).await;
        log.close().await.expect("close");
        let segs = segment_files(dir.path());
        assert!(segs.len() > 2);
        let stem = segs[1].trim_end_matches(".log").to_string();
        let ix = dir.path().join(format!("{stem}.index"));
        let tix = dir.path().join(format!("{stem}.timeindex"));
        let (ix_before, tix_before) = (
            std::fs::read(&ix).expect("ix"),
            std::fs::read(&tix).expect("tix"),
        );
        assert!(!ix_before.is_empty() && !tix_before.is_empty());
        std::fs::remove_file(&ix).expect("rm");
        std::fs::write(&tix, b"garbage").expect("corrupt timeindex");
        let log = PartitionLog::open(dir.path(), small_config(IoMode::Direct), 0)
            .await
            .expect("reopen");
        assert_eq!(std::fs::read(&ix).expect("ix"), ix_before);
        assert_eq!(std::fs::read(&tix).expect("tix"), tix_before);
        assert_eq!(read_all(&log, 0).await.len(), 100);
        assert_eq!(
            log.offset_for_timestamp(1500).await.expect("ts"),
            Some((250, 1500))
        );
    });
}

#[test]
fn live_disk_reads_beyond_the_cache_match_appends() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = PartitionLog::open(
                dir.path(),
                LogConfig {
                    io_mode: mode,
                    ..LogConfig::default()
                },
                0,
            )
            .await
            .expect("open");
            // Odd sizes so every append rewrites an unaligned tail page.
            for i in 0..90 {
                log.append(Bytes::from(simple_batch(3, i, 33_333 + i as usize)), 1)
                    .await
                    .expect("append");
            }
            assert!(log.size_bytes() > 8 << 20, "more than the cache holds");
            let first = log.read(0, 1, i64::MAX).await.expect("disk read");
            let mut want = simple_batch(3, 0, 33_333);
            super::batch::patch_batch(&mut want, 0, 0, None);
            assert_eq!(&first[..], &want[..]);
            assert_eq!(read_all(&log, 0).await.len(), 90);
            // A fetch-sized read from the middle of the file (in direct mode
            // read on the side ring into memory of its own) holds exactly the
            // batches written there.
            let many = log.read(30, 1 << 20, i64::MAX).await.expect("disk read");
            let mut want = Vec::new();
            for i in 10..(10 + (many.len() / 100_000) as i64) {
                let mut b = simple_batch(3, i, 33_333 + i as usize);
                super::batch::patch_batch(&mut b, i * 3, 0, None);
                want.extend_from_slice(&b);
            }
            assert!(many.len() > 900_000, "{mode:?}: {} bytes", many.len());
            assert_eq!(&many[..], &want[..], "{mode:?}");
        }
    });
}
