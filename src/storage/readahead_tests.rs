//! Tests of read-ahead (`readahead.rs`) through `PartitionLog::read_records`: a
//! reader catching up takes the windows read ahead, across segment ends, and
//! every answer holds exactly what an ordinary read returns, also when the
//! reader jumps, asks for less, reads under a lower bound, or retention
//! deleted what was read ahead.

use std::path::Path;

use bytes::Bytes;

use super::batch::patch_batch;
use super::config::{IoMode, LogConfig};
use super::error::StorageError;
use super::log::PartitionLog;
use super::readahead::{held, take_counts};
use super::segment_read::FetchRecords;
use super::testutil::{run, simple_batch};

/// Batches appended (3 records of about 33 KB each: about 12 MB in all).
const BATCHES: i64 = 120;
const MIB: usize = 1 << 20;

/// Batch `i` as the log stores it (base offset `3 i`, leader epoch 0).
fn stored(i: i64) -> Vec<u8> {
    let mut b = simple_batch(3, i, 33_333 + i as usize);
    patch_batch(&mut b, i * 3, 0, None);
    b
}

/// The stored batches from the one holding `offset` that make up `len`
/// bytes, and the offset after them.
fn expected(offset: i64, len: usize) -> (Vec<u8>, i64) {
    let mut out = Vec::new();
    let mut i = offset / 3;
    while out.len() < len && i < BATCHES {
        out.extend(stored(i));
        i += 1;
    }
    (out, i * 3)
}

async fn open_filled(dir: &Path, mode: IoMode) -> PartitionLog {
    let config = LogConfig {
        segment_bytes: 4 << 20,
        io_mode: mode,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, config, 0).await.expect("open");
    for i in 0..BATCHES {
        let b = simple_batch(3, i, 33_333 + i as usize);
        log.append(Bytes::from(b), 1).await.expect("append");
    }
    log
}

async fn read(log: &PartitionLog, offset: i64, max: usize, bound: i64) -> Bytes {
    match log.read_records(offset, max, bound, None).await {
        Ok(FetchRecords::Mem(b)) => b,
        Ok(FetchRecords::File(_)) => panic!("a file range, not asked for"),
        Err(e) => panic!("read at {offset}: {e}"),
    }
}

/// Reads at `offset` and checks the answer against the batches stored
/// there; returns the offset after it.
async fn read_checked(log: &PartitionLog, offset: i64, max: usize, bound: i64) -> i64 {
    let got = read(log, offset, max, bound).await;
    let (want, next) = expected(offset, got.len());
    assert_eq!(got.len(), want.len(), "whole batches at {offset}");
    assert!(got[..] == want[..], "the records stored at {offset}");
    next
}

#[test]
fn a_reader_catching_up_takes_the_windows_read_ahead() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open_filled(dir.path(), mode).await;
            take_counts();
            let mut offset = 0;
            let mut reads = 0;
            while offset < log.log_end_offset() {
                offset = read_checked(&log, offset, MIB, log.log_end_offset()).await;
                reads += 1;
            }
            assert_eq!(offset, BATCHES * 3);
            let (started, taken, dropped) = take_counts();
            // Every disk read but the first of each segment (three 4 MiB
            // segments before the cached tail) found its window.
            assert!(
                taken >= 6,
                "{mode:?}: {taken} windows taken in {reads} reads"
            );
            assert_eq!(started, taken + dropped, "{mode:?}");
            assert_eq!(held(), 0, "{mode:?}: no budget left held");
            log.close().await.expect("close");
        }
    });
}

#[test]
fn a_window_answers_only_a_fetch_it_fits() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_filled(dir.path(), IoMode::Direct).await;
        take_counts();
        let next = read_checked(&log, 0, MIB, i64::MAX).await;
        // Another reader elsewhere: its own ordinary read, and a window of its own.
        let other = read_checked(&log, 60, MIB, i64::MAX).await;
        // A lower bound (a read_committed reader's last stable offset) than
        // the window was read under: only the batches below it.
        let bounded = read(&log, next, MIB, next + 7).await;
        let (want, _) = expected(next, 3 * stored(next / 3).len());
        assert_eq!(bounded.len(), want.len());
        assert!(bounded[..] == want[..]);
        // Asking for less than the window holds: no more than asked (and
        // at least one batch).
        let small = read(&log, next, 100_000, i64::MAX).await;
        assert_eq!(small.len(), stored(next / 3).len());
        assert_eq!(take_counts().1, 0, "no window taken yet");
        // The other reader's next fetch takes its window.
        read_checked(&log, other, MIB, i64::MAX).await;
        assert_eq!(take_counts().1, 1);
        // DeleteRecords removed the first segment (offsets 0 to about 120),
        // where the windows above were read: a fetch there is out of range,
        // window or not, and reads after it are as stored.
        let files = |d: &Path| {
            std::fs::read_dir(d)
                .expect("readdir")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
                })
                .count()
        };
        let before = files(dir.path());
        let start = log.delete_records_before(150).await.expect("delete");
        assert_eq!(start, 150);
        assert!(files(dir.path()) < before, "a segment was deleted");
        let gone = log.read_records(next, MIB, i64::MAX, None).await;
        assert!(matches!(gone, Err(StorageError::OffsetOutOfRange { .. })));
        read_checked(&log, 150, MIB, i64::MAX).await;
        assert!(held() > 0, "windows wait for their readers");
        log.close().await.expect("close");
        assert_eq!(held(), 0, "closing the log gave their memory back");
    });
}

#[test]
fn a_window_nobody_takes_is_dropped() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_filled(dir.path(), IoMode::Direct).await;
        take_counts();
        read_checked(&log, 0, MIB, i64::MAX).await;
        assert!(held() > 0, "a window read ahead");
        // The reader never comes back.
        crate::runtime::sleep(super::readahead::HOLD + std::time::Duration::from_millis(300)).await;
        assert_eq!(held(), 0);
        assert_eq!(take_counts(), (1, 0, 1));
        // Its offset still reads as stored.
        read_checked(&log, 30, MIB, i64::MAX).await;
        log.close().await.expect("close");
    });
}

#[test]
fn a_window_counts_against_the_budget_at_the_fetch_limit() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_filled(dir.path(), IoMode::Direct).await;
        take_counts();
        let next = read_checked(&log, 0, 2 * MIB, i64::MAX).await;
        assert_eq!(held(), 2 * MIB, "reserved at the limit asked for");
        assert_eq!(take_counts().0, 1);
        read_checked(&log, next, 2 * MIB, i64::MAX).await;
        assert_eq!(take_counts().1, 1, "the next fetch took it");
        assert_eq!(held(), 2 * MIB, "and its successor holds the same");
        log.close().await.expect("close");
        assert_eq!(held(), 0);
    });
}
