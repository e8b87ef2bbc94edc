//! Tests of transactions through `PartitionLog`: the last stable offset held by open
//! transactions, commit and abort markers, the aborted-transaction index and its queries, several
//! producers interleaved, the marker's epoch check, recovery after clean and unclean stops,
//! retention, DeleteRecords and compaction.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::config::{CleanupPolicy, IoMode, LogConfig};
use super::log::PartitionLog;
use super::log_txn::batches_end_offset;
use super::testutil::{run, simple_batch};
use super::txn_index::ENTRY_BYTES;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 10,
        index_interval_bytes: 512,
        io_mode: IoMode::Buffered,
        segment_ms: i64::MAX,
        ..LogConfig::default()
    }
}

/// A transactional batch of `n` keyed records from producer `pid` at `epoch`, base sequence `seq`
/// (record i gets sequence seq + i, so the encoder makes one batch).
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1000 + i as i64,
            key: Some(Bytes::from(format!("k{pid}-{}", seq + i as i32))),
            value: Some(Bytes::from(vec![b'v'; 60])),
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

async fn open(dir: &Path, cfg: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, cfg, 0).await.expect("open")
}

/// Appends a transactional batch; returns its (first, last) offsets.
async fn txn(log: &PartitionLog, pid: i64, seq: i32, n: usize) -> (i64, i64) {
    let r = log
        .append(txn_batch(pid, 0, seq, n), 1)
        .await
        .expect("append txn");
    (r.base_offset, r.last_offset)
}

async fn plain(log: &PartitionLog, n: usize) -> (i64, i64) {
    let r = log
        .append(Bytes::from(simple_batch(n, 1000, 20)), 1)
        .await
        .expect("append plain");
    (r.base_offset, r.last_offset)
}

/// Writes a marker at epoch 0; returns its offset.
async fn marker(log: &PartitionLog, pid: i64, commit: bool) -> i64 {
    let r = log
        .append_marker(pid, 0, commit, 5, 2000)
        .await
        .expect("marker");
    assert_eq!(r.base_offset, r.last_offset);
    r.base_offset
}

fn aborted(log: &PartitionLog, from: i64, upper: i64) -> Vec<(i64, i64)> {
    log.aborted_transactions(from, upper).expect("aborted")
}

fn txn_index_files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".txnindex"))
        .map(|e| {
            let len = e.metadata().expect("stat").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn open_transaction_holds_the_lso_until_commit() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        assert_eq!(log.last_stable_offset(), 0);
        plain(&log, 3).await;
        assert_eq!(log.last_stable_offset(), 3);
        let (first, _) = txn(&log, 7, 0, 3).await;
        assert_eq!(first, 3);
        plain(&log, 2).await;
        txn(&log, 7, 3, 1).await;
        assert_eq!(log.log_end_offset(), 9);
        assert_eq!(
            log.last_stable_offset(),
            3,
            "held at the txn's first offset"
        );
        // A read bounded by the LSO returns nothing of the transaction.
        let data = log.read(0, 1 << 20, 3).await.expect("read");
        assert_eq!(batches_end_offset(&data), Some(3));
        assert!(log.read(3, 1 << 20, 3).await.expect("read").is_empty());
        let m = marker(&log, 7, true).await;
        assert_eq!(m, 9);
        assert_eq!(log.last_stable_offset(), 10);
        assert!(aborted(&log, 0, 10).is_empty());
        assert!(txn_index_files(dir.path()).is_empty());
        let p = &log.producers()[0];
        assert_eq!((p.producer_id, p.current_txn_start_offset), (7, -1));
        // The marker is in the log, as a control batch.
        let data = log.read(9, 1 << 20, i64::MAX).await.expect("read");
        assert_eq!(batches_end_offset(&data), Some(10));
        assert_eq!(
            super::log_txn::is_abort_marker(&data),
            Some(false),
            "a commit"
        );
    });
}

#[test]
fn abort_marker_records_an_index_entry() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        plain(&log, 2).await; // 0..1
        txn(&log, 4, 0, 3).await; // 2..4
        plain(&log, 1).await; // 5
        let m = marker(&log, 4, false).await;
        assert_eq!(m, 6);
        assert_eq!(log.last_stable_offset(), 7);
        for (from, upper) in [(0, 7), (0, 3), (2, 3), (4, 5), (6, 7), (5, 100)] {
            assert_eq!(
                aborted(&log, from, upper),
                vec![(4, 2)],
                "[{from}, {upper})"
            );
        }
        for (from, upper) in [(0, 2), (7, 8), (7, 100), (3, 3)] {
            assert!(aborted(&log, from, upper).is_empty(), "[{from}, {upper})");
        }
        assert_eq!(
            txn_index_files(dir.path()),
            vec![(format!("{:020}.txnindex", 0), ENTRY_BYTES as u64)]
        );
        let data = log.read(6, 1 << 20, i64::MAX).await.expect("read");
        assert_eq!(super::log_txn::is_abort_marker(&data), Some(true));
    });
}

#[test]
fn interleaved_producers() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        txn(&log, 1, 0, 2).await; // 0..1
        txn(&log, 2, 0, 2).await; // 2..3
        txn(&log, 1, 2, 1).await; // 4
        txn(&log, 3, 0, 1).await; // 5
        assert_eq!(log.last_stable_offset(), 0);
        assert_eq!(marker(&log, 1, true).await, 6);
        assert_eq!(log.last_stable_offset(), 2);
        assert_eq!(marker(&log, 2, false).await, 7);
        assert_eq!(log.last_stable_offset(), 5, "producer 3 still open");
        assert_eq!(marker(&log, 3, false).await, 8);
        assert_eq!(log.last_stable_offset(), 9);
        let st = log.active().st.borrow().aborted.clone();
        assert_eq!(st.len(), 2);
        assert_eq!(
            (st[0].producer_id, st[0].first_offset, st[0].last_offset),
            (2, 2, 7)
        );
        assert_eq!(st[0].last_stable_offset, 5);
        assert_eq!((st[1].first_offset, st[1].last_stable_offset), (5, 9));
        assert!(aborted(&log, 0, 2).is_empty());
        assert_eq!(aborted(&log, 0, 3), vec![(2, 2)]);
        assert_eq!(aborted(&log, 0, 9), vec![(2, 2), (3, 5)]);
        assert_eq!(aborted(&log, 6, 9), vec![(2, 2), (3, 5)]);
        assert_eq!(aborted(&log, 8, 9), vec![(3, 5)]);
        // A new transaction of producer 1 after its commit starts at its own first offset.
        let (f, _) = txn(&log, 1, 3, 1).await;
        assert_eq!(log.last_stable_offset(), f);
    });
}

#[test]
fn marker_epoch_check_and_markers_without_a_transaction() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        log.append(txn_batch(5, 2, 0, 2), 1).await.expect("epoch 2");
        let r = log.append_marker(5, 1, false, 0, 2000).await;
        assert_eq!(r.map_err(|e| e.kafka_code()).err(), Some(47));
        assert_eq!(log.log_end_offset(), 2, "nothing written");
        assert_eq!(log.last_stable_offset(), 0);
        // A bumped epoch (the coordinator fenced the producer) is accepted and ends the txn.
        let r = log
            .append_marker(5, 3, false, 0, 2000)
            .await
            .expect("epoch 3");
        assert_eq!(r.base_offset, 2);
        assert_eq!(log.last_stable_offset(), 3);
        assert_eq!(log.producers()[0].epoch, 3);
        assert_eq!(aborted(&log, 0, 3), vec![(5, 0)]);
        // The old epoch's data is fenced now.
        let r = log.append(txn_batch(5, 2, 2, 1), 1).await;
        assert_eq!(r.map_err(|e| e.kafka_code()).err(), Some(47));
        // A marker for a producer with no transaction here is still written; an abort indexes
        // just the marker.
        assert_eq!(marker(&log, 99, true).await, 3);
        assert_eq!(marker(&log, 98, false).await, 4);
        assert_eq!(log.last_stable_offset(), 5);
        assert_eq!(aborted(&log, 4, 5), vec![(98, 4)]);
        let r = log.append_marker(-1, 0, true, 0, 2000).await;
        assert_eq!(r.map_err(|e| e.kafka_code()).err(), Some(87));
    });
}

/// A log with an aborted txn in a sealed segment, a committed one, an aborted one in the active
/// segment and producer 9's transaction left open. Returns (open txn's first offset, expected
/// aborted list over the whole log).
async fn mixed_history(log: &PartitionLog) -> (i64, Vec<(i64, i64)>) {
    let (a, _) = txn(log, 1, 0, 3).await;
    marker(log, 1, false).await;
    for _ in 0..40 {
        plain(log, 5).await;
    }
    assert!(log.segments.borrow().len() > 2, "rolled");
    let (c, _) = txn(log, 2, 0, 2).await;
    let (o, _) = txn(log, 9, 0, 2).await;
    txn(log, 2, 2, 2).await;
    marker(log, 2, false).await;
    txn(log, 3, 0, 1).await;
    marker(log, 3, true).await;
    txn(log, 9, 2, 1).await;
    assert_eq!(log.last_stable_offset(), o);
    (o, vec![(1, a), (2, c)])
}

#[test]
fn unclean_reopen_keeps_open_transactions_and_aborted_entries() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = LogConfig {
                io_mode: mode,
                ..config()
            };
            let log = open(dir.path(), cfg.clone()).await;
            let (open_first, expect) = mixed_history(&log).await;
            let end = log.log_end_offset();
            log.flush(end - 1).await.expect("flush");
            drop(log); // no close: as after kill -9
            let log = open(dir.path(), cfg.clone()).await;
            assert_eq!(log.log_end_offset(), end);
            assert_eq!(log.last_stable_offset(), open_first, "{mode:?}");
            assert_eq!(aborted(&log, 0, end), expect);
            // The active segment's index is rebuilt from the log even if its file is lost.
            let active = log.active().base_offset;
            drop(log);
            std::fs::remove_file(dir.path().join(format!("{active:020}.txnindex")))
                .expect("active txnindex existed");
            let log = open(dir.path(), cfg.clone()).await;
            assert_eq!(aborted(&log, 0, end), expect);
            assert!(dir.path().join(format!("{active:020}.txnindex")).exists());
            // ... and with no producer snapshot at all (replay from the first segment).
            drop(log);
            for e in std::fs::read_dir(dir.path()).expect("readdir").flatten() {
                if e.file_name().to_string_lossy().ends_with(".snapshot") {
                    std::fs::remove_file(e.path()).expect("rm snapshot");
                }
            }
            let log = open(dir.path(), cfg.clone()).await;
            assert_eq!(log.last_stable_offset(), open_first);
            assert_eq!(aborted(&log, 0, end), expect);
            // The coordinator finishes the open transaction after the restart.
            let m = log
                .append_marker(9, 0, false, 5, 3000)
                .await
                .expect("abort");
            assert_eq!(log.last_stable_offset(), end + 1);
            let mut all = expect.clone();
            all.push((9, open_first));
            assert_eq!(aborted(&log, 0, m.last_offset + 1), all);
        }
    });
}

#[test]
fn clean_reopen_keeps_everything() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        let (open_first, expect) = mixed_history(&log).await;
        let end = log.log_end_offset();
        let files = txn_index_files(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        log.close().await.expect("close");
        let log = open(dir.path(), config()).await;
        assert_eq!(log.last_stable_offset(), open_first);
        assert_eq!(aborted(&log, 0, end), expect);
        assert_eq!(txn_index_files(dir.path()), files);
        // Entries stay in the segment of their marker across a roll.
        log.roll().await.expect("roll");
        assert_eq!(aborted(&log, 0, end), expect);
    });
}

#[test]
fn retention_and_delete_records_drop_the_entries_of_deleted_segments() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        let (_, expect) = mixed_history(&log).await;
        let end = log.log_end_offset();
        let second = log.segments.borrow()[1].base_offset;
        log.delete_records_before(second).await.expect("delete");
        assert_eq!(aborted(&log, second, end), expect[1..].to_vec());
        assert_eq!(txn_index_files(dir.path()).len(), 1);
        drop(log);
        let log = open(dir.path(), config()).await;
        assert_eq!(aborted(&log, second, end), expect[1..].to_vec());
        // Time retention deletes every sealed segment.
        log.set_config(LogConfig {
            retention_ms: 1,
            ..config()
        });
        log.housekeeping(i64::MAX / 2).await.expect("housekeeping");
        assert_eq!(log.segments.borrow().len(), 1);
        assert!(!aborted(&log, 0, end).contains(&expect[0]));
        let in_active = !log.active().st.borrow().aborted.is_empty();
        assert_eq!(txn_index_files(dir.path()).len(), usize::from(in_active));
    });
}

#[test]
fn compaction_keeps_the_entries_of_merged_segments() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            min_cleanable_dirty_ratio: 0.0,
            ..config()
        };
        let log = open(dir.path(), cfg.clone()).await;
        let mut expect = Vec::new();
        for round in 0..6 {
            let pid = 100 + round;
            let (f, _) = txn(&log, pid, 0, 4).await;
            marker(&log, pid, round % 2 == 0).await;
            if round % 2 == 1 {
                expect.push((pid, f));
            }
            for _ in 0..30 {
                plain(&log, 4).await; // the same key again and again: compacts well
            }
        }
        let end = log.log_end_offset();
        let segs_before = log.segments.borrow().len();
        assert!(segs_before > 4);
        assert_eq!(aborted(&log, 0, end), expect);
        let stats = log.compact(10_000).await.expect("compact").expect("a pass");
        assert!(stats.segments_out < stats.segments_in, "{stats:?}");
        assert_eq!(aborted(&log, 0, end), expect);
        log.close().await.expect("close");
        let log = open(dir.path(), cfg.clone()).await;
        assert_eq!(aborted(&log, 0, end), expect);
        drop(log);
        let log = open(dir.path(), cfg).await;
        assert_eq!(aborted(&log, 0, end), expect);
    });
}

#[test]
fn several_markers_in_one_append_keep_scans_complete() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        txn(&log, 1, 0, 2).await; // 0..1
        txn(&log, 2, 0, 2).await; // 2..3
        let m = |pid, commit| {
            crate::storage::markers::control_batch(&crate::storage::markers::Marker {
                commit,
                producer_id: pid,
                producer_epoch: 0,
                coordinator_epoch: 0,
                timestamp_ms: 2000,
            })
        };
        let mut set = m(1, false).to_vec();
        set.extend_from_slice(&m(2, false));
        let r = log.append(Bytes::from(set), 1).await.expect("two markers");
        assert_eq!((r.base_offset, r.last_offset), (4, 5));
        assert_eq!(log.last_stable_offset(), 6);
        let st = log.active().st.borrow().aborted.clone();
        // The first entry's LSO still counts producer 2's transaction, ended by the next marker:
        // a scan up to 3 must not stop before it.
        assert_eq!(st[0].last_stable_offset, 2);
        assert_eq!(st[1].last_stable_offset, 6);
        assert_eq!(aborted(&log, 0, 3), vec![(1, 0), (2, 2)]);
        // Partial trailing bytes (a fetch cut short) are not a batch.
        let data = log.read(0, 1 << 20, i64::MAX).await.expect("read");
        assert_eq!(batches_end_offset(&data), Some(6));
        assert_eq!(batches_end_offset(&data[..data.len() - 1]), Some(5));
        assert_eq!(batches_end_offset(&data[..10]), None);
    });
}
