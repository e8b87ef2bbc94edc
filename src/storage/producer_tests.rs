//! Tests of idempotent-producer state through `PartitionLog`: sequence and epoch checks,
//! duplicates, several batches per append, snapshots at roll and close, replay after an unclean
//! stop, corrupt snapshots, retention and expiry.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::{OFF_BASE_SEQUENCE, OFF_PRODUCER_EPOCH, OFF_PRODUCER_ID};
use super::config::{IoMode, LogConfig};
use super::error::StorageError;
use super::log::{AppendResult, PartitionLog};
use super::log_producers::ProducerSnapshot;
use super::testutil::{batch, fix_crc, run, simple_batch, Codec, Rec};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 10,
        index_interval_bytes: 512,
        io_mode: IoMode::Buffered,
        ..LogConfig::default()
    }
}

/// A batch of `n` records (timestamps `ts..`) from producer `pid`, `epoch`, base sequence `seq`.
fn pbatch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
    with_producer(simple_batch(n, ts, 20), pid, epoch, seq)
}

/// Sets a test batch's producer id, epoch and base sequence.
fn with_producer(mut b: Vec<u8>, pid: i64, epoch: i16, seq: i32) -> Bytes {
    b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    b[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    fix_crc(&mut b);
    Bytes::from(b)
}

/// The same kind of batch as a Kafka client encodes it (kafka-protocol's encoder).
fn encoded(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: the encoder splits where offset - sequence changes.
            sequence: seq + i as i32,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from_static(b"value")),
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

fn cat(parts: &[Bytes]) -> Bytes {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
    }
    Bytes::from(v)
}

async fn open(dir: &Path, cfg: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, cfg, 0).await.expect("open")
}

async fn append(log: &PartitionLog, b: Bytes) -> AppendResult {
    let r = log.append(b, 1).await.expect("append");
    assert!(!r.duplicate, "unexpected duplicate at {}", r.base_offset);
    r
}

fn code(r: Result<AppendResult, StorageError>) -> i16 {
    match r {
        Ok(a) => panic!("expected an error, got {a:?}"),
        Err(e) => e.kafka_code(),
    }
}

fn snapshots(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    v.sort();
    v
}

#[test]
fn in_order_appends_and_duplicates_of_the_last_five() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        let mut originals = Vec::new();
        for i in 0..7 {
            let b = encoded(42, 0, 3 * i, 3, 1000 + i64::from(i));
            originals.push((b.clone(), append(&log, b).await));
        }
        let end = log.log_end_offset();
        assert_eq!(end, 21);
        for (b, orig) in &originals[2..] {
            let r = log.append(b.clone(), 2).await.expect("duplicate");
            assert!(r.duplicate);
            assert_eq!(
                (r.base_offset, r.last_offset),
                (orig.base_offset, orig.last_offset)
            );
            assert_eq!(r.log_append_time_ms, -1);
        }
        assert_eq!(log.log_end_offset(), end, "duplicates append nothing");
        // Older batches are no longer remembered: their sequence is simply out of order.
        assert_eq!(code(log.append(originals[1].0.clone(), 2).await), 45);
        // A batch overlapping the last one without matching it is out of order too.
        assert_eq!(code(log.append(encoded(42, 0, 19, 2, 5000), 2).await), 45);
        assert_eq!(log.log_end_offset(), end);
        let r = append(&log, encoded(42, 0, 21, 1, 5000)).await;
        assert_eq!(r.base_offset, end);
        assert_eq!(
            log.producers(),
            vec![ProducerSnapshot {
                producer_id: 42,
                epoch: 0,
                last_sequence: 21,
                last_timestamp: 5000,
                coordinator_epoch: -1,
                current_txn_start_offset: -1,
            }]
        );
    });
}

#[test]
fn gaps_epochs_and_unknown_producers() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        // Unknown producer: any first sequence is accepted (KIP-360).
        append(&log, pbatch(7, 3, 100, 2, 1000)).await;
        assert_eq!(code(log.append(pbatch(7, 3, 103, 1, 1000), 1).await), 45);
        assert_eq!(code(log.append(pbatch(7, 2, 102, 1, 1000), 1).await), 47);
        // A new epoch must start at sequence 0 ...
        assert_eq!(code(log.append(pbatch(7, 4, 102, 1, 1000), 1).await), 45);
        append(&log, pbatch(7, 4, 0, 2, 1000)).await;
        // ... and forgets the old epoch's batches: retrying one is fenced.
        assert_eq!(code(log.append(pbatch(7, 3, 100, 2, 1000), 1).await), 47);
        let r = log.append(pbatch(7, 4, 0, 2, 1000), 1).await.expect("dup");
        assert!(r.duplicate);
        assert_eq!((r.base_offset, r.last_offset), (2, 3));
        append(&log, pbatch(7, 4, 2, 1, 1000)).await;
        // Producers are independent; non-idempotent batches are never checked.
        append(&log, pbatch(8, 0, 5, 1, 1000)).await;
        append(&log, pbatch(-1, -1, -1, 1, 1000)).await;
        append(&log, pbatch(-1, -1, -1, 1, 1000)).await;
        let p = log.producers();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].producer_id, p[0].epoch, p[0].last_sequence),
            (7, 4, 2)
        );
        assert_eq!((p[1].producer_id, p[1].last_sequence), (8, 5));
        assert_eq!(log.log_end_offset(), 8);
    });
}

#[test]
fn sequence_wraps_at_i32_max() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        append(&log, pbatch(1, 0, i32::MAX - 1, 1, 1000)).await;
        // MAX, 0, 1: the last sequence wraps.
        append(&log, pbatch(1, 0, i32::MAX, 3, 1000)).await;
        assert_eq!(log.producers()[0].last_sequence, 1);
        let r = log.append(pbatch(1, 0, i32::MAX, 3, 1000), 1).await;
        assert!(r.expect("duplicate across the wrap").duplicate);
        assert_eq!(code(log.append(pbatch(1, 0, 3, 1, 1000), 1).await), 45);
        append(&log, pbatch(1, 0, 2, 1, 1000)).await;
        // A batch ending exactly at MAX is followed by 0.
        append(&log, pbatch(2, 0, i32::MAX - 1, 2, 1000)).await;
        append(&log, pbatch(2, 0, 0, 1, 1000)).await;
    });
}

#[test]
fn several_batches_in_one_append() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        let set = cat(&[
            pbatch(5, 0, 0, 2, 1000),
            pbatch(5, 0, 2, 3, 1001),
            pbatch(6, 1, 9, 1, 1002),
        ]);
        let r = append(&log, set.clone()).await;
        assert_eq!((r.base_offset, r.last_offset), (0, 5));
        // The whole set retried: a duplicate spanning the original batches.
        let d = log.append(set, 1).await.expect("duplicate set");
        assert!(d.duplicate);
        assert_eq!((d.base_offset, d.last_offset), (0, 5));
        // The second batch is checked against the state after the first: a gap inside the set
        // refuses all of it.
        let bad = cat(&[pbatch(5, 0, 5, 1, 1003), pbatch(5, 0, 7, 1, 1003)]);
        assert_eq!(code(log.append(bad, 1).await), 45);
        // A retried batch followed by a new one is refused, not half-appended.
        let mixed = cat(&[pbatch(5, 0, 2, 3, 1003), pbatch(5, 0, 5, 1, 1003)]);
        assert_eq!(code(log.append(mixed, 1).await), 45);
        assert_eq!(log.log_end_offset(), 6);
        let good = cat(&[pbatch(5, 0, 5, 1, 1003), pbatch(5, 0, 6, 1, 1003)]);
        assert_eq!(append(&log, good).await.base_offset, 6);
        assert_eq!(log.producers()[0].last_sequence, 6);
    });
}

/// Appends `rounds` batches for each of producers 1..=3 in a small-segment log (so it rolls),
/// flushing each as a produce with acks would.
async fn busy_log(log: &PartitionLog, rounds: i32) {
    for i in 0..rounds {
        for pid in 1..=3i64 {
            let b = pbatch(pid, 1, 4 * i, 4, 1000 + i64::from(i));
            let r = append(log, b).await;
            log.flush(r.last_offset).await.expect("flush");
        }
    }
}

/// Retrying each producer's last batch is a duplicate, and the next sequence is accepted.
async fn check_continues(log: &PartitionLog, rounds: i32) {
    let end = log.log_end_offset();
    for pid in 1..=3i64 {
        let retry = pbatch(pid, 1, 4 * (rounds - 1), 4, 1000);
        let r = log.append(retry, 1).await.expect("retry");
        assert!(r.duplicate, "producer {pid}");
    }
    assert_eq!(log.log_end_offset(), end);
    for pid in 1..=3i64 {
        append(log, pbatch(pid, 1, 4 * rounds, 1, 9000)).await;
    }
}

#[test]
fn state_survives_clean_close() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        busy_log(&log, 30).await;
        assert!(log.segments.borrow().len() > 3, "the test needs rolls");
        let before = log.producers();
        let end = log.log_end_offset();
        log.close().await.expect("close");
        let snaps = snapshots(dir.path());
        assert_eq!(snaps.len(), 2, "the newest two are kept: {snaps:?}");
        assert_eq!(snaps[1], format!("{end:020}.snapshot"));
        let log = open(dir.path(), config()).await;
        assert_eq!(log.producers(), before);
        check_continues(&log, 30).await;
    });
}

#[test]
fn state_survives_unclean_stop_by_replay() {
    run(|| async {
        for mode in [IoMode::Direct, IoMode::Buffered] {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = LogConfig {
                io_mode: mode,
                ..config()
            };
            let log = open(dir.path(), cfg.clone()).await;
            busy_log(&log, 30).await;
            let before = log.producers();
            // The newest snapshot is at the last roll: the active segment must be replayed.
            let newest = snapshots(dir.path()).pop().expect("a snapshot from a roll");
            assert_ne!(newest, format!("{:020}.snapshot", log.log_end_offset()));
            drop(log); // no close: as after kill -9
            let log = open(dir.path(), cfg.clone()).await;
            assert_eq!(log.producers(), before);
            check_continues(&log, 30).await;
            // No snapshot at all: everything is replayed from the first segment.
            let before = log.producers();
            drop(log);
            for s in snapshots(dir.path()) {
                std::fs::remove_file(dir.path().join(s)).expect("rm");
            }
            let log = open(dir.path(), cfg).await;
            assert_eq!(log.producers(), before);
        }
    });
}

#[test]
fn corrupt_snapshot_falls_back_to_replay() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        busy_log(&log, 30).await;
        let before = log.producers();
        log.close().await.expect("close");
        let snaps = snapshots(dir.path());
        let newest = dir.path().join(&snaps[snaps.len() - 1]);
        let mut b = std::fs::read(&newest).expect("read snapshot");
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(&newest, &b).expect("corrupt it");
        // And one past the log end, as if it belonged to a longer log.
        let stray = dir.path().join(format!("{:020}.snapshot", 1_000_000));
        std::fs::copy(dir.path().join(&snaps[0]), &stray).expect("copy");
        let log = open(dir.path(), config()).await;
        assert_eq!(log.producers(), before);
        assert!(!newest.exists(), "the corrupt snapshot is deleted");
        assert!(!stray.exists(), "a snapshot past the log end is deleted");
        check_continues(&log, 30).await;
    });
}

#[test]
fn retention_prunes_snapshots_below_the_log_start() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            retention_bytes: 6 << 10,
            ..config()
        };
        let log = open(dir.path(), cfg.clone()).await;
        busy_log(&log, 30).await;
        let before = log.producers();
        log.housekeeping(2000).await.expect("housekeeping");
        let first = log.segments.borrow()[0].base_offset;
        assert!(first > 0, "retention deleted segments");
        for s in snapshots(dir.path()) {
            let o: i64 = s.trim_end_matches(".snapshot").parse().expect("name");
            assert!(o >= first, "snapshot {s} below the first segment {first}");
        }
        // Deleting records does not forget producers.
        assert_eq!(log.producers(), before);
        drop(log);
        let log = open(dir.path(), cfg).await;
        assert_eq!(log.producers(), before);
        check_continues(&log, 30).await;
    });
}

#[test]
fn idle_producers_expire_at_housekeeping() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            producer_id_expiration_ms: 10_000,
            ..config()
        };
        let log = open(dir.path(), cfg).await;
        append(&log, pbatch(1, 0, 0, 1, 1_000)).await;
        append(&log, pbatch(2, 0, 0, 1, 5_000)).await;
        log.housekeeping(10_999).await.expect("housekeeping");
        assert_eq!(log.producers().len(), 2);
        log.housekeeping(11_000).await.expect("housekeeping");
        let p = log.producers();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].producer_id, 2);
        // An expired producer is unknown: any sequence is accepted again.
        append(&log, pbatch(1, 0, 77, 1, 20_000)).await;
        assert_eq!(log.expire_producers(1 << 40), 2);
        assert!(log.producers().is_empty());
        // Expiry is remembered by the snapshot taken at close.
        log.close().await.expect("close");
        let log = open(dir.path(), config()).await;
        assert!(log.producers().is_empty());
    });
}

#[test]
fn log_append_time_duplicate_reports_the_original_time() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            message_timestamp_type: super::config::TimestampType::LogAppendTime,
            ..config()
        };
        let log = open(dir.path(), cfg).await;
        let r = log
            .append(pbatch(1, 0, 0, 2, 5), 777)
            .await
            .expect("append");
        assert_eq!(r.log_append_time_ms, 777);
        let d = log.append(pbatch(1, 0, 0, 2, 5), 888).await.expect("dup");
        assert!(d.duplicate);
        assert_eq!(d.log_append_time_ms, 777);
        assert_eq!(log.producers()[0].last_timestamp, 777);
    });
}

#[test]
fn compaction_dropping_a_producers_batches_keeps_its_state_in_snapshots() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            cleanup_policy: super::config::CleanupPolicy::Compact,
            min_cleanable_dirty_ratio: 0.0,
            ..config()
        };
        let log = open(dir.path(), cfg.clone()).await;
        // Every record has the same key: later batches supersede producer 1's only batch.
        append(&log, pbatch(1, 0, 0, 2, 1000)).await;
        for _ in 0..40 {
            append(&log, pbatch(-1, -1, -1, 2, 1000)).await;
        }
        let stats = log
            .compact(2000)
            .await
            .expect("compact")
            .expect("a pass ran");
        assert!(stats.records_removed > 0);
        let first = log.read(0, 1 << 20, i64::MAX).await.expect("read");
        let h = super::batch::BatchHeader::parse(&first).expect("a batch");
        assert_eq!(h.producer_id, -1, "producer 1's batch was compacted away");
        let before = log.producers();
        assert_eq!(before.len(), 1);
        drop(log); // unclean: the snapshot taken at a roll after its batch remembers it
        let log = open(dir.path(), cfg.clone()).await;
        assert_eq!(log.producers(), before);
        let r = log
            .append(pbatch(1, 0, 0, 2, 1000), 1)
            .await
            .expect("retry");
        assert!(r.duplicate);
        assert_eq!(r.base_offset, 0);
        // Without snapshots nothing in the log remembers it: it is unknown, hence accepted at
        // any sequence (the documented limit of this cleaner, which drops empty batches).
        drop(log);
        for s in snapshots(dir.path()) {
            std::fs::remove_file(dir.path().join(s)).expect("rm");
        }
        let log = open(dir.path(), cfg).await;
        assert!(log.producers().is_empty());
        append(&log, pbatch(1, 0, 99, 1, 1000)).await;
    });
}

#[test]
fn replay_reads_the_sequence_range_of_a_batch_compaction_trimmed() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            cleanup_policy: super::config::CleanupPolicy::Compact,
            min_cleanable_dirty_ratio: 0.0,
            ..config()
        };
        let log = open(dir.path(), cfg.clone()).await;
        // Producer 1's batch: its second (last) record's key is superseded later.
        let recs = [Rec::new(1000, b"own", b"v"), Rec::new(1000, b"key", b"v")];
        let mine = with_producer(batch(Codec::Lz4, &recs), 1, 0, 10);
        append(&log, mine.clone()).await;
        for _ in 0..40 {
            append(&log, pbatch(-1, -1, -1, 2, 1000)).await;
        }
        log.compact(2000)
            .await
            .expect("compact")
            .expect("a pass ran");
        let first = log.read(0, 1 << 20, i64::MAX).await.expect("read");
        let h = super::batch::BatchHeader::parse(&first).expect("a batch");
        assert_eq!(
            (h.producer_id, h.records_count),
            (1, 1),
            "trimmed, not dropped"
        );
        // Only the log remembers it now.
        drop(log);
        for s in snapshots(dir.path()) {
            std::fs::remove_file(dir.path().join(s)).expect("rm");
        }
        let log = open(dir.path(), cfg).await;
        assert_eq!(log.producers()[0].last_sequence, 11);
        assert!(log.append(mine, 1).await.expect("retry").duplicate);
        append(&log, pbatch(1, 0, 12, 1, 1000)).await;
    });
}

#[test]
fn unreadable_sealed_segment_does_not_block_the_open() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), config()).await;
        busy_log(&log, 30).await;
        let before = log.producers();
        log.close().await.expect("close");
        for s in snapshots(dir.path()) {
            std::fs::remove_file(dir.path().join(s)).expect("rm");
        }
        // Break the magic byte of the first batch of the first (sealed) segment.
        let first = dir.path().join(format!("{:020}.log", 0));
        let mut b = std::fs::read(&first).expect("read segment");
        b[super::batch::OFF_MAGIC] = 0;
        std::fs::write(&first, &b).expect("write segment");
        let log = open(dir.path(), config()).await;
        // Every producer wrote its last batches in later segments.
        assert_eq!(log.producers(), before);
    });
}
