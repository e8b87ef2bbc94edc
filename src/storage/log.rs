//! `PartitionLog`: one partition's segmented log on one glommio shard. Opening and recovery,
//! append (serialised, with offset assignment and the idempotent-producer checks of
//! `producer_state.rs`) and group-commit flush. Reads and timestamp lookups are in `log_read.rs`;
//! retention, rolling and shutdown in `log_maint.rs`; loading, snapshotting and expiring producer state in
//! `log_producers.rs`; the leader epoch cache in `log_epochs.rs`; a follower's appends and
//! truncation in `log_replica.rs` and `log_truncate.rs`.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::Semaphore;
use tracing::{info, warn};

use super::batch::{validate_batches_ext, BatchInfo, ATTR_LOG_APPEND_TIME};
use super::cache::RecentBatches;
use super::compact_rewrite::require_keys;
use super::compact_rewrite::{ATTR_CONTROL, ATTR_TRANSACTIONAL};
use super::config::{LogConfig, TimestampType};
use super::epoch_cache::EpochCache;
use super::error::{Result, StorageError};
use super::file::{read_small_file, sync_dir};
use super::producer_state::{ProducerBatch, ProducerStateMap, Staged};
use super::segment::{AppendPlan, Segment};

/// Marker written by a clean close and removed on open.
pub(crate) const CLEAN_MARKER: &str = "clean-shutdown";
/// Checkpoint of the log start offset moved by DeleteRecords.
pub(crate) const START_CHECKPOINT: &str = "log-start-offset.checkpoint";

/// Batch attributes of the batches that open or end transactions.
pub(crate) const TXN_OR_CONTROL: i16 = ATTR_TRANSACTIONAL | ATTR_CONTROL;

/// Result of a successful append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The record set retried batches already in the log (idempotent producer): nothing was
    /// appended, and the offsets (and append time) are those of the original batches. Kafka
    /// answers such a produce with NONE and these offsets.
    pub duplicate: bool,
}

/// One partition's log (not Send: lives on one shard, shared as `Rc<PartitionLog>`).
pub struct PartitionLog {
    pub(crate) dir: PathBuf,
    pub(crate) config: RefCell<LogConfig>,
    /// The epoch stamped on leader appends (`set_leader_epoch`, `assign_epoch`).
    pub(crate) leader_epoch: Cell<i32>,
    /// Leader epochs and their start offsets (`log_epochs.rs`), covering the log's batches.
    /// Changed only under the append lock; never borrowed across an await.
    pub(crate) epochs: RefCell<EpochCache>,
    /// Truncations so far (`log_truncate.rs`): a read, flush or cleaning pass that saw it change
    /// while it waited does not trust what it read.
    pub(crate) truncations: Cell<u64>,
    /// Segments by base offset; the last is the active one. Never borrowed across an await.
    pub(crate) segments: RefCell<Vec<Rc<Segment>>>,
    pub(crate) log_start: Cell<i64>,
    pub(crate) log_end: Cell<i64>,
    /// (max timestamp, offset of the record holding it).
    pub(crate) max_ts: Cell<(i64, i64)>,
    /// Serialises appends and segment-list changes (roll, retention, delete records).
    pub(crate) append_lock: Semaphore,
    /// Serialises fdatasyncs (group commit).
    pub(crate) flush_lock: Semaphore,
    /// Every offset below this is durable.
    pub(crate) durable_end: Cell<i64>,
    pub(crate) closed: Cell<bool>,
    /// Number of fdatasyncs issued by `flush` (group commit makes it much smaller than calls).
    pub(crate) sync_count: Cell<u64>,
    /// Most recent batches, served to tailing readers without disk reads.
    pub(crate) recent: RefCell<RecentBatches>,
    /// Set while a cleaning pass runs (one at a time per log; see `compact.rs`).
    pub(crate) cleaner_busy: Cell<bool>,
    /// A `flush.ms` timer is armed for data not yet durable.
    pub(crate) flush_timer_armed: Cell<bool>,
    /// Idempotent producers' state, covering every batch below `log_end`. Changed only under
    /// the append lock; never borrowed across an await.
    pub(crate) producer_state: RefCell<ProducerStateMap>,
    /// `producer_state.first_unstable_offset()`, kept up to date by every append that holds
    /// transactional or control batches (the only ones that open or end transactions) and by
    /// recovery, so the last stable offset costs nothing per fetch.
    pub(crate) first_unstable: Cell<Option<i64>>,
    /// The last append failed for lack of space (for logging the change only).
    pub(crate) out_of_space: Cell<bool>,
    /// Windows after the latest segment-file reads, read ahead for their
    /// readers' next fetches (`readahead.rs`), oldest first.
    pub(crate) ahead: RefCell<Vec<super::readahead::Window>>,
}

/// Parses `00000000000000000123.log` into 123.
fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl PartitionLog {
    /// Opens or creates the partition directory and recovers it (see module docs of
    /// `segment_recover.rs`): the active segment is CRC-scanned and a torn tail truncated.
    /// `leader_epoch` is stamped on leader appends until `set_leader_epoch`/`assign_epoch`.
    pub async fn open(dir: &Path, config: LogConfig, leader_epoch: i32) -> Result<PartitionLog> {
        std::fs::create_dir_all(dir)?;
        // Finish or roll back a cleaning pass cut short, before any segment is looked at.
        super::compact_files::recover(dir)?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker)?;
        }
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(b) = parse_log_name(&name) {
                bases.push(b);
            } else if name.ends_with(".tmp") {
                std::fs::remove_file(dir.join(name.as_ref()))?;
            }
        }
        bases.sort_unstable();
        let checkpoint = read_start_checkpoint(dir).await?;
        if !clean && !bases.is_empty() {
            info!(dir = %dir.display(), "no clean-shutdown marker: recovering the active segment");
        }
        let mode = config.io_mode;
        let interval = config.index_interval_bytes;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let seg = match bases.get(i + 1) {
                Some(&next) => Segment::open_sealed(dir, base, next, mode, interval).await?,
                None => Segment::open_active(dir, base, mode, interval).await?,
            };
            segments.push(Rc::new(seg));
        }
        if segments.is_empty() {
            let base = checkpoint.unwrap_or(0).max(0);
            segments.push(Rc::new(Segment::create(dir, base, mode).await?));
            sync_dir(dir).await?;
        }
        let first_base = segments[0].base_offset;
        let log_end = segments[segments.len() - 1].next_offset();
        let log_start = checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end);
        if let Some(active) = segments.last() {
            active.file.sync().await?;
        }
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config: RefCell::new(config),
            leader_epoch: Cell::new(leader_epoch),
            epochs: RefCell::new(EpochCache::default()),
            truncations: Cell::new(0),
            segments: RefCell::new(segments),
            log_start: Cell::new(log_start),
            log_end: Cell::new(log_end),
            max_ts: Cell::new((-1, -1)),
            append_lock: Semaphore::new(1),
            flush_lock: Semaphore::new(1),
            durable_end: Cell::new(log_end),
            closed: Cell::new(false),
            sync_count: Cell::new(0),
            recent: RefCell::new(RecentBatches::default()),
            cleaner_busy: Cell::new(false),
            flush_timer_armed: Cell::new(false),
            producer_state: RefCell::new(ProducerStateMap::default()),
            first_unstable: Cell::new(None),
            out_of_space: Cell::new(false),
            ahead: RefCell::new(Vec::new()),
        };
        log.recompute_max_timestamp().await?;
        log.load_producer_state().await?;
        log.load_epoch_cache().await?;
        Ok(log)
    }

    /// Recomputes (max timestamp, offset of its first record) from the segments' time indexes.
    pub(crate) async fn recompute_max_timestamp(&self) -> Result<()> {
        let best = self
            .segments_snapshot()
            .iter()
            .filter_map(|s| s.max_timestamp())
            .max_by_key(|&(t, _)| t);
        let v = match best {
            None => (-1, -1),
            Some((t, last_offset)) => match self.offset_for_timestamp(t).await? {
                Some((off, _)) => (t, off),
                None => (t, last_offset),
            },
        };
        self.max_ts.set(v);
        Ok(())
    }

    pub(crate) fn segments_snapshot(&self) -> Vec<Rc<Segment>> {
        self.segments.borrow().clone()
    }

    pub(crate) fn active(&self) -> Rc<Segment> {
        let segs = self.segments.borrow();
        Rc::clone(&segs[segs.len() - 1])
    }

    /// Refuses use of a closed log, or of one whose log dir went offline (`log_dirs.rs`).
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.get() {
            return Err(StorageError::Io(format!(
                "partition log {} is closed",
                self.dir.display()
            )));
        }
        if let Some(why) = super::log_dirs::offline_reason(&self.dir) {
            return Err(StorageError::LogDirOffline(why));
        }
        Ok(())
    }

    /// Notes the outcome of an append for the out-of-space log lines: one warning when appends
    /// start failing for lack of space, one line when they succeed again.
    pub(crate) fn note_space<T>(&self, r: &Result<T>) {
        match r {
            Err(StorageError::NoSpace(e)) if !self.out_of_space.replace(true) => {
                warn!(dir = %self.dir.display(), "appends fail: disk full ({e}); answering \
                    KAFKA_STORAGE_ERROR until space is freed");
            }
            Ok(_) if self.out_of_space.replace(false) => {
                info!(dir = %self.dir.display(), "appends succeed again: disk space was freed");
            }
            _ => {}
        }
    }

    /// Appends one or more concatenated v2 batches; see the module docs for the semantics.
    pub async fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendResult> {
        let cfg = self.config.borrow().clone();
        let detailed = validate_batches_ext(&records, cfg.max_message_bytes)?;
        let batches: Vec<BatchInfo> = detailed.iter().map(|(b, _)| b.clone()).collect();
        if cfg.cleanup_policy.compacts() {
            require_keys(&records, &batches)?;
        }
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(format!("append lock: {e}")))?;
        self.check_open()?;
        let count: i64 = batches
            .iter()
            .map(|b| i64::from(b.last_offset_delta) + 1)
            .sum();
        let base_offset = self.log_end.get();
        let last_offset = base_offset + count - 1;
        let append_time =
            (cfg.message_timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        // Idempotence checks, atomic with the offset assignment because the lock is held.
        let mut ended = Vec::new();
        let staged = if batches.iter().any(|b| b.producer_id >= 0) {
            let pbs = ProducerBatch::from_infos(&batches, base_offset, append_time);
            let decision = self.producer_state.borrow().stage(&pbs)?;
            match decision {
                Staged::Duplicate { first, last } => {
                    tracing::debug!(dir = %self.dir.display(), first_offset = first.first_offset,
                        "retried batch already stored: answering with its original offsets");
                    return Ok(AppendResult {
                        base_offset: first.first_offset,
                        last_offset: last.last_offset,
                        log_append_time_ms: append_time.map_or(-1, |_| first.max_timestamp),
                        log_start_offset: self.log_start.get(),
                        duplicate: true,
                    });
                }
                Staged::Append { updated, ended: e } => {
                    ended = e;
                    Some(updated)
                }
            }
        } else {
            None
        };
        let rolled = self
            .maybe_roll(&cfg, records.len() as u64, last_offset, now_ms)
            .await;
        if rolled.is_err() {
            self.note_space(&rolled);
        }
        rolled?;
        let epoch = self.leader_epoch.get();
        let noted = self.note_epochs(&[(epoch, base_offset)]).await;
        if noted.is_err() {
            self.note_space(&noted);
        }
        noted?;
        let plan = AppendPlan {
            batches: &batches,
            first_offset: base_offset,
            leader_epoch: epoch,
            append_time,
            index_interval: cfg.index_interval_bytes,
            now_ms,
            replicated: false,
        };
        let started = crate::runtime::stall::enabled().then(std::time::Instant::now);
        let stored = self.active().append(&records, &plan).await;
        if let Some(t) = started {
            crate::runtime::stall::record_disk(crate::runtime::stall::Disk::Write, t.elapsed());
        }
        self.note_space(&stored);
        let stored = stored?;
        self.log_end.set(last_offset + 1);
        let mut bases = Vec::with_capacity(batches.len());
        let mut offset = base_offset;
        for b in &batches {
            bases.push(offset);
            offset += i64::from(b.last_offset_delta) + 1;
        }
        self.note_written(&detailed, &bases, &stored, append_time, staged, &ended)
            .await?;
        Ok(AppendResult {
            base_offset,
            last_offset,
            log_append_time_ms: append_time.unwrap_or(-1),
            log_start_offset: self.log_start.get(),
            duplicate: false,
        })
    }

    /// Bookkeeping after a record set was written at `bases` (each batch's base offset), as
    /// `stored` (the bytes written): producer state (`staged`, from `stage` or
    /// `stage_replicated`), last stable offset, recent-batch cache, max timestamp, and the
    /// aborted-transaction index for the transactions `ended`. Caller holds the append lock and
    /// has already moved the log end.
    pub(crate) async fn note_written(
        &self,
        detailed: &[(BatchInfo, i32)],
        bases: &[i64],
        stored: &Bytes,
        append_time: Option<i64>,
        staged: Option<std::collections::BTreeMap<i64, super::producer_state::ProducerEntry>>,
        ended: &[super::producer_state::TxnEnd],
    ) -> Result<()> {
        if let Some(updated) = staged {
            self.producer_state.borrow_mut().apply(updated);
        }
        if detailed
            .iter()
            .any(|(b, _)| b.attributes & TXN_OR_CONTROL != 0)
        {
            let first = self.producer_state.borrow().first_unstable_offset();
            self.first_unstable.set(first);
        }
        {
            let mut at = 0usize;
            let mut recent = self.recent.borrow_mut();
            for ((b, max_delta), &offset) in detailed.iter().zip(bases) {
                let last = offset + i64::from(b.last_offset_delta);
                recent.push(offset, last, stored.slice(at..at + b.size));
                at += b.size;
                let ts = append_time.unwrap_or(b.max_timestamp);
                if ts > self.max_ts.get().0 {
                    // LogAppendTime: every record has the batch's timestamp.
                    let exact = if append_time.is_some() || b.attributes & ATTR_LOG_APPEND_TIME != 0
                    {
                        offset
                    } else {
                        offset + i64::from(*max_delta)
                    };
                    self.max_ts.set((ts, exact));
                }
            }
        }
        if !ended.is_empty() {
            self.index_aborted(stored, detailed, ended).await?;
        }
        Ok(())
    }

    /// Makes everything up to and including `upto_offset` durable, with group commit. Fails with
    /// `LogTruncated` when the log was truncated while it waited (the offsets it waited for may
    /// be gone, or hold other records now).
    pub async fn flush(&self, upto_offset: i64) -> Result<()> {
        if self.durable_end.get() > upto_offset {
            return Ok(());
        }
        let truncations = self.truncations.get();
        let _permit = self
            .flush_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(format!("flush lock: {e}")))?;
        // A truncation holds the flush lock: none runs from here to the end.
        if self.truncations.get() != truncations {
            return Err(StorageError::LogTruncated(format!(
                "waiting to make offset {upto_offset} durable"
            )));
        }
        if self.durable_end.get() > upto_offset {
            return Ok(());
        }
        // Everything below `target` has been written; segments rolled before were synced on roll.
        let target = self.log_end.get();
        if self.durable_end.get() >= target {
            return Ok(());
        }
        self.check_open()?;
        let started = std::time::Instant::now();
        self.active().file.sync().await?;
        crate::runtime::stall::record_fsync(started.elapsed());
        self.sync_count.set(self.sync_count.get() + 1);
        self.durable_end.set(self.durable_end.get().max(target));
        Ok(())
    }

    /// The topic's flush policy after an append whose producer did not ask
    /// for durability (acks=0/1): `Some(Duration::ZERO)` when `flush.messages`
    /// messages are not yet durable (sync now, as Kafka does in the append);
    /// `Some(flush.ms)` when a `flush.ms` timer should be armed (none is yet);
    /// None otherwise.
    pub fn flush_due(&self) -> Option<std::time::Duration> {
        let cfg = self.config.borrow();
        let pending = self.log_end.get() - self.durable_end.get();
        if pending <= 0 {
            return None;
        }
        if pending >= cfg.flush_messages {
            return Some(std::time::Duration::ZERO);
        }
        if cfg.flush_ms < i64::MAX && !self.flush_timer_armed.get() {
            return Some(std::time::Duration::from_millis(cfg.flush_ms as u64));
        }
        None
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.get()
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end.get()
    }

    /// The epoch stamped on leader appends.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    /// (max timestamp, offset of the record holding it); (-1, -1) when empty.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.max_ts.get()
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    /// Logical size of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.borrow().iter().map(|s| s.size()).sum()
    }

    /// Number of segments (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.borrow().len()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads the DeleteRecords checkpoint, if any.
async fn read_start_checkpoint(dir: &Path) -> Result<Option<i64>> {
    let Some(b) = read_small_file(&dir.join(START_CHECKPOINT)).await? else {
        return Ok(None);
    };
    let s = String::from_utf8_lossy(&b);
    Ok(s.trim().parse::<i64>().ok())
}
