//! Tests of the offline checker (`verify.rs`): a log written by `PartitionLog` passes, and each
//! hand-made corruption is found with its file.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::config::{IoMode, LogConfig};
use super::log::PartitionLog;
use super::testutil::{run, simple_batch};
use super::verify::{verify_partition, Report};

/// Writes 40 batches of 5 records over several segments, closes cleanly, returns the segments.
fn write_log(dir: &Path, mode: IoMode) -> Vec<PathBuf> {
    let d = dir.to_path_buf();
    run(move || async move {
        let cfg = LogConfig {
            segment_bytes: 4 << 10,
            index_interval_bytes: 300,
            io_mode: mode,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&d, cfg, 0).await.expect("open");
        for i in 0..40 {
            let b = simple_batch(5, 1000 + i, 20);
            log.append(Bytes::from(b), 1).await.expect("append");
        }
        log.close().await.expect("close");
    });
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readdir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    segs
}

fn check(dir: &Path) -> Report {
    let mut r = Report::default();
    verify_partition(dir, &mut r);
    r
}

fn errors_in(r: &Report, suffix: &str) -> usize {
    r.problems
        .iter()
        .filter(|p| !p.warning && p.file.to_string_lossy().ends_with(suffix))
        .count()
}

#[test]
fn clean_log_passes_in_both_modes() {
    for mode in [IoMode::Direct, IoMode::Buffered] {
        let dir = tempfile::tempdir().expect("tempdir");
        let segs = write_log(dir.path(), mode);
        let r = check(dir.path());
        assert_eq!(r.problems, vec![], "{mode:?}");
        assert_eq!(r.segments, segs.len());
        assert_eq!(r.batches, 40);
        assert_eq!(r.records, 200);
    }
}

#[test]
fn flipped_byte_in_a_batch_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = write_log(dir.path(), IoMode::Buffered);
    let mut b = std::fs::read(&segs[0]).expect("read");
    b[100] ^= 0x40; // inside the first batch's records
    std::fs::write(&segs[0], b).expect("write");
    let r = check(dir.path());
    assert!(errors_in(&r, ".log") >= 1, "{:?}", r.problems);
    let p = r.problems.iter().find(|p| !p.warning).expect("an error");
    assert_eq!(p.pos, Some(0));
    assert!(p.what.contains("CRC"), "{p}");
}

#[test]
fn bad_index_entry_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = write_log(dir.path(), IoMode::Buffered);
    let ix = segs[0].with_extension("index");
    let mut b = std::fs::read(&ix).expect("read index");
    assert!(b.len() >= 8, "the first segment has index entries");
    // Move the first entry's position by one byte: no longer a batch start.
    b[7] = b[7].wrapping_add(1);
    std::fs::write(&ix, b).expect("write");
    let r = check(dir.path());
    assert_eq!(errors_in(&r, ".index"), 1, "{:?}", r.problems);
}

#[test]
fn truncated_snapshot_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), IoMode::Buffered);
    let snap = std::fs::read_dir(dir.path())
        .expect("readdir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "snapshot"))
        .expect("a producer snapshot");
    let b = std::fs::read(&snap).expect("read");
    std::fs::write(&snap, &b[..b.len() - 3]).expect("truncate");
    let r = check(dir.path());
    assert_eq!(errors_in(&r, ".snapshot"), 1, "{:?}", r.problems);
}

#[test]
fn torn_tail_of_active_segment_is_a_warning_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = write_log(dir.path(), IoMode::Buffered);
    std::fs::remove_file(dir.path().join(super::log::CLEAN_MARKER)).expect("unclean");
    let active = segs.last().expect("active");
    let mut b = std::fs::read(active).expect("read");
    let half = simple_batch(5, 1, 100);
    b.extend_from_slice(&half[..half.len() / 2]);
    std::fs::write(active, b).expect("write");
    let r = check(dir.path());
    assert_eq!(r.errors(), 0, "{:?}", r.problems);
    assert_eq!(r.warnings(), 1, "{:?}", r.problems);
    assert!(r.problems[0].what.contains("torn tail"));
    // The same bytes in a sealed segment are an error.
    let mut b = std::fs::read(&segs[0]).expect("read");
    b.extend_from_slice(&half[..half.len() / 2]);
    std::fs::write(&segs[0], b).expect("write");
    let r = check(dir.path());
    assert_eq!(errors_in(&r, ".log"), 1, "{:?}", r.problems);
}

#[test]
fn offset_gap_between_segments_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = write_log(dir.path(), IoMode::Buffered);
    std::fs::remove_file(&segs[1]).expect("remove a middle segment");
    let r = check(dir.path());
    assert!(
        r.problems
            .iter()
            .any(|p| !p.warning && p.what.contains("gap")),
        "{:?}",
        r.problems
    );
}

#[test]
fn leader_epoch_checkpoint_is_checked() {
    use super::epoch_cache::{EpochCache, EPOCH_CHECKPOINT};
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), IoMode::Buffered);
    let path = dir.path().join(EPOCH_CHECKPOINT);
    let good = std::fs::read(&path).expect("written by the first append");
    let only = |r: &Report, warning: bool, what: &str| {
        r.problems.len() == 1
            && r.problems[0].warning == warning
            && r.problems[0].what.contains(what)
            && r.problems[0].file == path
    };
    // A flipped byte.
    let mut b = good.clone();
    b[12] ^= 0x01;
    std::fs::write(&path, &b).expect("write");
    let r = check(dir.path());
    assert!(only(&r, false, "CRC"), "{:?}", r.problems);
    // Missing, for a log with batches: rebuilt on open.
    std::fs::remove_file(&path).expect("rm");
    let r = check(dir.path());
    assert!(only(&r, true, "missing"), "{:?}", r.problems);
    // Batches of an epoch the checkpoint does not know.
    std::fs::write(&path, EpochCache::default().encode()).expect("write");
    let r = check(dir.path());
    assert!(only(&r, false, "leader epoch 0"), "{:?}", r.problems);
    // An entry past the log end: an error after a clean stop, a warning after a crash.
    let mut c = EpochCache::default();
    c.assign(0, 0);
    c.assign(1, 5000);
    std::fs::write(&path, c.encode()).expect("write");
    let r = check(dir.path());
    assert!(only(&r, false, "past the log end"), "{:?}", r.problems);
    std::fs::remove_file(dir.path().join(super::log::CLEAN_MARKER)).expect("unclean");
    let r = check(dir.path());
    assert!(only(&r, true, "past the log end"), "{:?}", r.problems);
}
