//! Tests of the replication primitives of `PartitionLog`: the leader epoch cache (leader appends,
//! OffsetsForLeaderEpoch answers, rebuild from batch headers), a follower's appends, truncation
//! (mid-segment, across segments, below the log start, with a splice in flight, racing a flush)
//! and `truncate_fully_and_start_at`, each checked again after a clean and an unclean reopen.

use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::{be_i32, patch_batch, validate_replicated_batches, OFF_LEADER_EPOCH};
use super::compact_files::CleanerCheckpoint;
use super::config::{CleanupPolicy, IoMode, LogConfig};
use super::epoch_cache::{EpochEntry, EPOCH_CHECKPOINT};
use super::error::StorageError;
use super::log::PartitionLog;
use super::testutil::{run, simple_batch};
use super::verify::{verify_partition, Report};

fn config(mode: IoMode) -> LogConfig {
    LogConfig {
        segment_bytes: 2 << 10,
        index_interval_bytes: 256,
        io_mode: mode,
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

async fn open(dir: &Path, mode: IoMode) -> PartitionLog {
    PartitionLog::open(dir, config(mode), 0)
        .await
        .expect("open")
}

/// Closes cleanly (or drops without closing, as a crash would) and opens again.
async fn reopen(log: PartitionLog, dir: &Path, mode: IoMode, clean: bool) -> PartitionLog {
    if clean {
        log.close().await.expect("close");
    }
    drop(log);
    open(dir, mode).await
}

/// Appends `n` batches of 5 records as leader.
async fn fill(log: &PartitionLog, n: usize) {
    for i in 0..n {
        let b = simple_batch(5, 1000 + i as i64, 20);
        log.append(Bytes::from(b), 1).await.expect("append");
    }
}

/// A batch of `n` records as a leader stored it: base offset `base`, leader epoch `epoch`.
fn stored_batch(base: i64, epoch: i32, n: usize) -> Vec<u8> {
    let mut b = simple_batch(n, 5000 + base, 20);
    patch_batch(&mut b, base, epoch, None);
    b
}

/// A batch of `n` records of idempotent producer `pid` (transactional if asked).
fn producer_batch(pid: i64, seq: i32, n: usize, transactional: bool) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1000 + i as i64,
            key: Some(Bytes::from(format!("k{pid}-{}", seq + i as i32))),
            value: Some(Bytes::from(vec![b'v'; 40])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &recs, &opts).expect("encode batch");
    buf.freeze()
}

/// Every byte of the log from `from` on, read in small fetches.
async fn all_bytes(log: &PartitionLog, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let data = log.read(next, 1500, i64::MAX).await.expect("read");
        let infos = validate_replicated_batches(&data).expect("valid");
        let last = &infos.last().expect("progress").0;
        next = last.base_offset + i64::from(last.last_offset_delta) + 1;
        out.extend_from_slice(&data);
    }
    out
}

/// (base, last, epoch) of every batch from `from` on.
async fn batches(log: &PartitionLog, from: i64) -> Vec<(i64, i64, i32)> {
    let data = all_bytes(log, from).await;
    let mut out = Vec::new();
    let mut pos = 0;
    for (b, _) in validate_replicated_batches(&data).expect("valid") {
        let epoch = be_i32(&data, pos + OFF_LEADER_EPOCH);
        out.push((
            b.base_offset,
            b.base_offset + i64::from(b.last_offset_delta),
            epoch,
        ));
        pos += b.size;
    }
    out
}

/// Copies the leader's batches in `[from, upto)` to the follower, fetch by fetch.
async fn replicate(leader: &PartitionLog, follower: &PartitionLog, from: i64, upto: i64) {
    let mut next = from;
    while next < upto {
        let data = leader.read(next, 1200, upto).await.expect("leader read");
        let r = follower
            .append_replicated(data, 7)
            .await
            .expect("follower append");
        next = r.last_offset + 1;
    }
}

fn entries(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.epoch_entries()
        .iter()
        .map(|e: &EpochEntry| (e.epoch, e.start_offset))
        .collect()
}

fn files(dir: &Path, suffix: &str) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(suffix)?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn verified(dir: &Path) -> Report {
    let mut r = Report::default();
    verify_partition(dir, &mut r);
    r
}

/// A leader log with epoch 0 on offsets 0..50, 1 on 50..100, 2 on 100..150.
async fn three_epochs(log: &PartitionLog) {
    fill(log, 10).await;
    log.assign_epoch(1, log.log_end_offset())
        .await
        .expect("assign");
    fill(log, 10).await;
    log.assign_epoch(2, log.log_end_offset())
        .await
        .expect("assign");
    fill(log, 10).await;
}

#[test]
fn leader_appends_build_the_epoch_cache() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), mode).await;
            assert_eq!(log.latest_epoch(), None);
            assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
            three_epochs(&log).await;
            assert_eq!(log.leader_epoch(), 2);
            let want = vec![(0, 0), (1, 50), (2, 100)];
            assert_eq!(entries(&log), want);
            assert_eq!(log.end_offset_for_epoch(2), (2, 150));
            assert_eq!(log.end_offset_for_epoch(1), (1, 100));
            assert_eq!(log.end_offset_for_epoch(0), (0, 50));
            assert_eq!(log.end_offset_for_epoch(3), (-1, -1));
            let stamped: Vec<i32> = batches(&log, 0).await.iter().map(|b| b.2).collect();
            assert_eq!(stamped, [[0; 10], [1; 10], [2; 10]].concat());
            // A transaction marker goes through the same path: stamped, no new entry.
            log.append_marker(9, 0, false, 0, 5).await.expect("marker");
            assert_eq!(entries(&log), want);
            let log = reopen(log, dir.path(), mode, true).await;
            assert_eq!(entries(&log), want);
            let log = reopen(log, dir.path(), mode, false).await;
            assert_eq!(entries(&log), want);
            log.close().await.expect("close");
            let r = verified(dir.path());
            assert!(r.problems.is_empty(), "{:?}", r.problems);
            let log = open(dir.path(), mode).await;
            // An epoch assigned at the log end without appends is dropped on open (as Kafka
            // does: a leader elected again assigns it again).
            log.assign_epoch(3, 151).await.expect("assign");
            assert_eq!(log.end_offset_for_epoch(2), (2, 151));
            assert_eq!(log.end_offset_for_epoch(3), (3, 151));
            let log = reopen(log, dir.path(), mode, true).await;
            assert_eq!(entries(&log), want);
            // A missing checkpoint (a log written before it existed) or an unreadable one is
            // rebuilt from the batch headers.
            log.close().await.expect("close");
            std::fs::remove_file(dir.path().join(EPOCH_CHECKPOINT)).expect("rm");
            let log = open(dir.path(), mode).await;
            assert_eq!(entries(&log), want);
            log.close().await.expect("close");
            std::fs::write(dir.path().join(EPOCH_CHECKPOINT), b"version 1\n").expect("write");
            let log = open(dir.path(), mode).await;
            assert_eq!(entries(&log), want);
            // Retention moves the first entry to the log start.
            log.delete_records_before(60).await.expect("delete records");
            assert_eq!(entries(&log), vec![(1, 60), (2, 100)]);
            let log = reopen(log, dir.path(), mode, true).await;
            assert_eq!(entries(&log), vec![(1, 60), (2, 100)]);
            log.close().await.expect("close");
            let r = verified(dir.path());
            assert!(r.problems.is_empty(), "{:?}", r.problems);
        }
    });
}

#[test]
fn truncation_mid_segment_and_across_segments() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            for clean in [true, false] {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = open(dir.path(), mode).await;
                three_epochs(&log).await;
                let before = batches(&log, 0).await;
                assert!(files(dir.path(), ".log").len() > 3, "several segments");
                // Inside the batch 120..124: it goes whole.
                log.truncate_to(123).await.expect("truncate");
                assert_eq!(log.log_end_offset(), 120);
                assert_eq!(batches(&log, 0).await, before[..24].to_vec());
                assert_eq!(log.end_offset_for_epoch(2), (2, 120));
                log.truncate_to(120)
                    .await
                    .expect("at the end: nothing to do");
                log.truncate_to(500)
                    .await
                    .expect("past the end: nothing to do");
                assert_eq!(log.log_end_offset(), 120);
                let log = reopen(log, dir.path(), mode, clean).await;
                assert_eq!(log.log_end_offset(), 120);
                assert_eq!(batches(&log, 0).await, before[..24].to_vec());
                assert_eq!(entries(&log), vec![(0, 0), (1, 50), (2, 100)]);
                // Across segment boundaries, to the start of epoch 1: its entry goes too.
                log.truncate_to(50).await.expect("truncate");
                assert_eq!(log.log_end_offset(), 50);
                assert_eq!(entries(&log), vec![(0, 0)]);
                assert_eq!(log.end_offset_for_epoch(1), (-1, -1));
                assert!(files(dir.path(), ".log").iter().all(|&b| b <= 50));
                assert!(files(dir.path(), ".snapshot").iter().all(|&o| o <= 50));
                assert_eq!(log.max_timestamp().0, 1000 + 9 + 4);
                let log = reopen(log, dir.path(), mode, clean).await;
                assert_eq!(log.log_end_offset(), 50);
                assert_eq!(batches(&log, 0).await, before[..10].to_vec());
                assert_eq!(entries(&log), vec![(0, 0)]);
                // The truncated log takes leader appends at its new end, in a new epoch.
                log.assign_epoch(3, 50).await.expect("assign");
                fill(&log, 3).await;
                assert_eq!(log.log_end_offset(), 65);
                assert_eq!(entries(&log), vec![(0, 0), (3, 50)]);
                let log = reopen(log, dir.path(), mode, clean).await;
                assert_eq!(log.log_end_offset(), 65);
                assert_eq!(batches(&log, 45).await.last(), Some(&(60, 64, 3)));
                log.close().await.expect("close");
                let r = verified(dir.path());
                assert!(r.problems.is_empty(), "{:?}", r.problems);
            }
        }
    });
}

#[test]
fn follower_converges_with_its_leader_after_divergence() {
    run(|| async {
        let mode = IoMode::Direct;
        let (ld, fd) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let leader = open(ld.path(), mode).await;
        let follower = open(fd.path(), mode).await;
        fill(&leader, 10).await;
        replicate(&leader, &follower, 0, 50).await;
        assert_eq!(entries(&follower), vec![(0, 0)]);
        // The follower leads epoch 1 for a while and writes what the others never see.
        follower.assign_epoch(1, 50).await.expect("assign");
        fill(&follower, 4).await;
        // Meanwhile the old leader leads epoch 2.
        leader.assign_epoch(2, 50).await.expect("assign");
        fill(&leader, 20).await;
        // The follower asks where its latest epoch ended on the leader, and truncates there.
        let latest = follower.latest_epoch().expect("epoch");
        let (epoch, end) = leader.end_offset_for_epoch(latest);
        assert_eq!((epoch, end), (0, 50));
        follower.truncate_to(end).await.expect("truncate");
        assert_eq!(follower.log_end_offset(), 50);
        replicate(&leader, &follower, 50, leader.log_end_offset()).await;
        assert_eq!(follower.log_end_offset(), 150);
        assert_eq!(all_bytes(&follower, 0).await, all_bytes(&leader, 0).await);
        assert_eq!(entries(&follower), vec![(0, 0), (2, 50)]);
        assert_eq!(follower.max_timestamp(), leader.max_timestamp());
        let follower = reopen(follower, fd.path(), mode, false).await;
        assert_eq!(all_bytes(&follower, 0).await, all_bytes(&leader, 0).await);
        assert_eq!(entries(&follower), vec![(0, 0), (2, 50)]);
        // Its segments roll as a leader's do.
        assert!(files(fd.path(), ".log").len() > 3);
    });
}

#[test]
fn replicated_producer_state_and_idempotent_retries_after_truncation() {
    run(|| async {
        let mode = IoMode::Buffered;
        let (ld, fd) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let leader = open(ld.path(), mode).await;
        let follower = open(fd.path(), mode).await;
        let r = leader
            .append(producer_batch(7, 0, 3, false), 1)
            .await
            .expect("append");
        assert_eq!((r.base_offset, r.last_offset), (0, 2));
        leader
            .append(producer_batch(7, 3, 2, false), 1)
            .await
            .expect("append"); // 3..4
        fill(&leader, 1).await; // 5..9
        replicate(&leader, &follower, 0, 10).await;
        assert_eq!(follower.producers(), leader.producers());
        // The follower, become leader, knows the producer's last batches: a retry is a duplicate.
        let dup = follower
            .append(producer_batch(7, 3, 2, false), 1)
            .await
            .expect("retry");
        assert!(dup.duplicate);
        assert_eq!((dup.base_offset, dup.last_offset), (3, 4));
        // A first attempt (10..11) is truncated away: its retry is appended, not a duplicate.
        let first = follower
            .append(producer_batch(7, 5, 2, false), 1)
            .await
            .expect("append");
        assert_eq!(first.base_offset, 10);
        follower.truncate_to(10).await.expect("truncate");
        let follower = reopen(follower, fd.path(), mode, false).await;
        assert_eq!(follower.producers()[0].last_sequence, 4);
        let retry = follower
            .append(producer_batch(7, 5, 2, false), 1)
            .await
            .expect("retry");
        assert!(!retry.duplicate);
        assert_eq!(retry.base_offset, 10);
        // A batch that survived the truncation is still a duplicate, after a reopen too.
        let follower = reopen(follower, fd.path(), mode, true).await;
        for (seq, base) in [(3, 3), (5, 10)] {
            let r = follower
                .append(producer_batch(7, seq, 2, false), 1)
                .await
                .expect("retry");
            assert!(r.duplicate && r.base_offset == base, "{r:?}");
        }
    });
}

#[test]
fn aborted_transactions_follow_the_truncation() {
    run(|| async {
        for clean in [true, false] {
            let mode = IoMode::Buffered;
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), mode).await;
            let t1 = log
                .append(producer_batch(1, 0, 2, true), 1)
                .await
                .expect("txn"); // 0..1
            let m1 = log.append_marker(1, 0, false, 0, 5).await.expect("abort"); // 2
            fill(&log, 1).await; // 3..7
            let t2 = log
                .append(producer_batch(2, 0, 2, true), 1)
                .await
                .expect("txn"); // 8..9
            let m2 = log.append_marker(2, 0, false, 0, 5).await.expect("abort"); // 10
            assert_eq!((t1.base_offset, m1.base_offset), (0, 2));
            assert_eq!((t2.base_offset, m2.base_offset), (8, 10));
            let all = log.aborted_transactions(0, i64::MAX).expect("aborted");
            assert_eq!(all, vec![(1, 0), (2, 8)]);
            assert_eq!(log.last_stable_offset(), 11);
            // The second ABORT is cut: its transaction is open again and holds the LSO.
            log.truncate_to(10).await.expect("truncate");
            assert_eq!(
                log.aborted_transactions(0, i64::MAX).expect("a"),
                vec![(1, 0)]
            );
            assert_eq!(log.last_stable_offset(), 8);
            let log = reopen(log, dir.path(), mode, clean).await;
            assert_eq!(
                log.aborted_transactions(0, i64::MAX).expect("a"),
                vec![(1, 0)]
            );
            assert_eq!(log.last_stable_offset(), 8);
            // Cutting the transaction's data too leaves no open transaction.
            log.truncate_to(8).await.expect("truncate");
            assert_eq!(log.last_stable_offset(), 8);
            assert_eq!(log.log_end_offset(), 8);
            let log = reopen(log, dir.path(), mode, clean).await;
            assert_eq!(
                log.aborted_transactions(0, i64::MAX).expect("a"),
                vec![(1, 0)]
            );
            assert_eq!((log.last_stable_offset(), log.log_end_offset()), (8, 8));
        }
    });
}

#[test]
fn truncate_fully_and_start_at_restarts_an_empty_log() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), mode).await;
            three_epochs(&log).await;
            log.append(producer_batch(4, 0, 2, false), 1)
                .await
                .expect("append");
            log.truncate_fully_and_start_at(1000)
                .await
                .expect("restart");
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
            assert!(log
                .read(1000, 100, i64::MAX)
                .await
                .expect("read")
                .is_empty());
            assert!(matches!(
                log.read(999, 100, i64::MAX).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            assert!(entries(&log).is_empty() && log.producers().is_empty());
            assert_eq!((log.size_bytes(), log.max_timestamp()), (0, (-1, -1)));
            assert_eq!(files(dir.path(), ".log"), vec![1000]);
            assert!(files(dir.path(), ".snapshot").is_empty());
            // The leader's batches follow, from its log start.
            let r = log
                .append_replicated(Bytes::from(stored_batch(1000, 4, 5)), 1)
                .await
                .expect("replicated");
            assert_eq!((r.base_offset, r.last_offset), (1000, 1004));
            assert_eq!(entries(&log), vec![(4, 1000)]);
            let log = reopen(log, dir.path(), mode, false).await;
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1005));
            assert_eq!(entries(&log), vec![(4, 1000)]);
            // Truncating to or below the log start restarts it too, even below the old start.
            log.truncate_to(1000).await.expect("truncate");
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
            log.truncate_fully_and_start_at(10).await.expect("restart");
            let log = reopen(log, dir.path(), mode, true).await;
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
            fill(&log, 1).await;
            assert_eq!(batches(&log, 10).await, vec![(10, 14, 0)]);
        }
    });
}

#[test]
fn out_of_order_replicated_batches_are_refused() {
    run(|| async {
        let mode = IoMode::Direct;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), mode).await;
        let r = log
            .append_replicated(Bytes::from(stored_batch(0, 0, 5)), 1)
            .await
            .expect("append");
        assert_eq!(r.last_offset, 4);
        let refused =
            |r: Result<_, StorageError>| matches!(r, Err(StorageError::OffsetsOutOfOrder(_)));
        let below_end = log
            .append_replicated(Bytes::from(stored_batch(3, 0, 5)), 1)
            .await;
        assert!(refused(below_end));
        let mut overlapping = stored_batch(5, 0, 5);
        overlapping.extend_from_slice(&stored_batch(8, 0, 5));
        assert!(refused(
            log.append_replicated(Bytes::from(overlapping), 1).await
        ));
        let mut huge = stored_batch(5, 0, 1);
        huge.extend_from_slice(&stored_batch(5 + (1 << 33), 0, 1));
        assert!(refused(log.append_replicated(Bytes::from(huge), 1).await));
        let mut bad_crc = stored_batch(5, 0, 5);
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 1;
        let r = log.append_replicated(Bytes::from(bad_crc), 1).await;
        assert!(matches!(r, Err(StorageError::CorruptMessage(_))));
        assert_eq!(log.log_end_offset(), 5);
        // A gap (a compacted leader) is fine, and so is an epoch below the latest one.
        let mut gap = stored_batch(5, 2, 5);
        gap.extend_from_slice(&stored_batch(20, 1, 5));
        let r = log
            .append_replicated(Bytes::from(gap), 1)
            .await
            .expect("gap");
        assert_eq!(
            (r.base_offset, r.last_offset, log.log_end_offset()),
            (5, 24, 25)
        );
        assert_eq!(batches(&log, 12).await, vec![(20, 24, 1)]);
        assert_eq!(entries(&log), vec![(0, 0), (2, 5)]);
        let log = reopen(log, dir.path(), mode, false).await;
        assert_eq!(log.log_end_offset(), 25);
        // Truncating inside the gap ends the log after the batch before it (what recovery finds).
        log.truncate_to(15).await.expect("truncate");
        assert_eq!(log.log_end_offset(), 10);
        let log = reopen(log, dir.path(), mode, false).await;
        assert_eq!(log.log_end_offset(), 10);
    });
}

#[test]
fn a_splice_in_flight_keeps_the_old_bytes_of_a_cut_segment() {
    run(|| async {
        use std::os::unix::fs::FileExt;
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), mode).await;
            fill(&log, 30).await;
            // Reopened, so that reads come from the files, not the recent-batch cache.
            let log = reopen(log, dir.path(), mode, true).await;
            let second = files(dir.path(), ".log")[1];
            // A range of the second segment, as a zero-copy fetch hands it out.
            let range = match log
                .read_records(second, 1 << 20, i64::MAX, Some(1))
                .await
                .expect("read")
            {
                super::FetchRecords::File(r) => r,
                super::FetchRecords::Mem(_) => panic!("expected a file range"),
            };
            let old = all_bytes(&log, second).await[..range.len].to_vec();
            log.truncate_to(second + 7).await.expect("truncate");
            assert_eq!(log.log_end_offset(), second + 5);
            // The range still reads the bytes it was handed out for.
            let f = std::fs::File::from(range.fd.try_clone().expect("dup"));
            let mut got = vec![0u8; range.len];
            f.read_exact_at(&mut got, range.pos).expect("read range");
            assert_eq!(got, old);
            // And the log goes on from its new end.
            fill(&log, 2).await;
            let log = reopen(log, dir.path(), mode, false).await;
            assert_eq!(log.log_end_offset(), second + 15);
            assert_eq!(batches(&log, second).await.len(), 3);
            assert_eq!(&all_bytes(&log, second).await[..100], &old[..100]);
        }
    });
}

#[test]
fn a_flush_waiting_across_a_truncation_fails() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Rc::new(open(dir.path(), IoMode::Direct).await);
        fill(&log, 20).await;
        let truncating = {
            let log = Rc::clone(&log);
            glommio::spawn_local(async move { log.truncate_to(30).await })
        };
        // Let the truncation take its locks, then wait for a flush of a truncated offset.
        glommio::executor().yield_now().await;
        let flushed = log.flush(99).await;
        truncating.await.expect("truncate");
        assert!(
            matches!(flushed, Err(StorageError::LogTruncated(_))),
            "{flushed:?}"
        );
        assert_eq!(log.log_end_offset(), 30);
        log.flush(29).await.expect("a later flush");
    });
}

#[test]
fn a_compacted_leader_is_copied_with_its_gaps_and_truncation_dirties_the_cleaned_range() {
    run(|| async {
        let cfg = LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            min_cleanable_dirty_ratio: 0.0,
            ..config(IoMode::Buffered)
        };
        let (ld, fd) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let leader = PartitionLog::open(ld.path(), cfg.clone(), 0)
            .await
            .expect("open");
        // Every record has the key "key": the cleaner keeps the last one of the cleaned range.
        fill(&leader, 30).await;
        let stats = leader.compact(1 << 40).await.expect("compact");
        assert!(stats.is_some_and(|s| s.records_removed > 0));
        let first_dirty = CleanerCheckpoint::load(ld.path())
            .await
            .expect("checkpoint")
            .first_dirty;
        assert!(first_dirty > 50, "{first_dirty}");
        let follower = PartitionLog::open(fd.path(), cfg.clone(), 0)
            .await
            .expect("open");
        replicate(&leader, &follower, 0, leader.log_end_offset()).await;
        assert_eq!(follower.log_end_offset(), 150);
        assert_eq!(all_bytes(&follower, 0).await, all_bytes(&leader, 0).await);
        // Truncating below the cleaned range makes what follows dirty again.
        leader
            .truncate_to(first_dirty - 20)
            .await
            .expect("truncate");
        let end = leader.log_end_offset();
        assert!(end <= first_dirty - 20);
        let c = CleanerCheckpoint::load(ld.path())
            .await
            .expect("checkpoint");
        assert_eq!(c.first_dirty, end);
        assert!(c.passes.iter().all(|&(e, _)| e <= end));
    });
}
