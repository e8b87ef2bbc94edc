//! Truncation of a `PartitionLog`, for replication: a follower cuts what it holds beyond the
//! point where its log and the leader's diverge (`truncate_to`, Kafka's `Log.truncateTo`), or
//! drops everything and restarts at the leader's log start (`truncate_fully_and_start_at`).
//!
//! `truncate_to(offset)` removes whole batches: the log then ends at the base offset of the first
//! batch that held an offset >= `offset` (with a compaction gap right before that batch, at the
//! end of the batch before it, which is what recovery finds too). Under the append and flush
//! locks:
//! 1. The in-memory log becomes the truncated one in one step, without awaiting: segment list,
//!    the cut segment's indexes and aborted transactions, log end, durable end, the recent-batch
//!    cache, read-ahead windows (all dropped), and the truncation count that readers check.
//! 2. Whole segments above the cut are deleted, newest first, and the directory synced; then the
//!    cut segment's file is truncated at the batch boundary and synced, and its index files are
//!    rewritten (stale entries past the cut could otherwise be trusted by a later recovery).
//!    This order means a crash at any point leaves a prefix of the old log, which recovery opens
//!    as it is (the replication protocol then truncates again).
//! 3. Producer state as of the new end (snapshots above it deleted, the newest below it loaded
//!    and the batch headers after it replayed, as recovery does; this also rebuilds the cut
//!    segment's aborted-transaction entries and the last stable offset), the max timestamp (from
//!    the time indexes of the remaining segments: exact), the leader epoch cache, and the
//!    cleaner checkpoint (offsets from the cut on are dirty again).
//!
//! Concurrent readers: a read (`read_records`, `offset_for_timestamp`) that a truncation
//! overlapped is read again, and a flush waiting across one fails (`LogTruncated`): the bytes
//! they saw may be gone or overwritten by later appends. Deleted segments stay readable through
//! the handles readers hold (as after retention). A file range handed out for splicing cannot be
//! called back, so a segment with one possibly in flight is not cut in place: its kept bytes are
//! copied to a new file that replaces it, and the old file stays whole for the splice. A
//! cleaning pass that overlapped a truncation is abandoned at its swap.
//!
//! A failure after step 1 (a disk error) closes the log: memory and disk may disagree, and
//! reopening it recovers a consistent prefix of the log (a log dir error also takes the dir
//! offline, `log_dirs.rs`).

use std::rc::Rc;

use tracing::error;

use super::compact_files::{CleanerCheckpoint, CLEANER_CHECKPOINT};
use super::error::{Result, StorageError};
use super::file::{sync_dir, write_file_atomic};
use super::log::{PartitionLog, START_CHECKPOINT};
use super::producer_snapshot::{list_snapshots, remove_snapshot};
use super::producer_state::ProducerStateMap;
use super::segment::Segment;

impl PartitionLog {
    /// Truncates the log so that it ends at the base offset of the first batch holding an
    /// offset >= `offset` (whole batches from it on are removed); nothing happens when `offset`
    /// is at or past the log end. At or below the log start (or inside the batch holding the
    /// log start) the log restarts empty, as `truncate_fully_and_start_at`. Durable when it
    /// returns. See the module docs.
    pub async fn truncate_to(&self, offset: i64) -> Result<()> {
        let _permit = self.lock().await?;
        let _flush = self.flush_permit().await?;
        self.check_open()?;
        let (start, end) = (self.log_start.get(), self.log_end.get());
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset >= end {
            return Ok(());
        }
        if offset <= start {
            return self.restart_at(offset).await;
        }
        let segs = self.segments_snapshot();
        // Segments starting after `offset` hold only offsets after it: they go whole.
        let k = segs.partition_point(|s| s.base_offset <= offset);
        let Some(seg) = k.checked_sub(1).and_then(|i| segs.get(i)).cloned() else {
            return self.restart_at(offset).await;
        };
        let (pos, new_end) = seg.cut_point(offset).await?;
        if new_end < start {
            return self.restart_at(start).await;
        }
        if k == segs.len() && pos == seg.size() {
            // No batch holds an offset at or after `offset`.
            return Ok(());
        }
        let tail = seg.tail_at(pos).await?;
        // Step 1: the in-memory log becomes the truncated one, in one step.
        self.truncations.set(self.truncations.get() + 1);
        let removed: Vec<Rc<Segment>> = self.segments.borrow_mut().drain(k..).collect();
        let copy = seg.splice_in_flight();
        let txn_changed = seg.cut_state(pos, new_end, tail);
        self.log_end.set(new_end);
        self.durable_end.set(self.durable_end.get().min(new_end));
        self.recent.borrow_mut().drop_from(new_end);
        self.ahead.borrow_mut().clear();
        let done = self
            .finish_truncation(&seg, &removed, pos, new_end, copy, txn_changed)
            .await;
        if let Err(e) = &done {
            self.fail_stop("truncation", e);
        }
        done
    }

    /// Deletes every segment and restarts the log, empty, at `offset` (log start = log end =
    /// `offset`; producer state, leader epochs and aborted transactions are forgotten). A
    /// follower whose fetch offset is out of the leader's range uses it. Durable when it
    /// returns; a crash meanwhile leaves a prefix of the old log, or the empty one.
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        let _permit = self.lock().await?;
        let _flush = self.flush_permit().await?;
        self.check_open()?;
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start.get(),
                log_end: self.log_end.get(),
            });
        }
        self.restart_at(offset).await
    }

    async fn flush_permit(&self) -> Result<glommio::sync::Permit<'_>> {
        self.flush_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(format!("flush lock: {e}")))
    }

    /// Steps 2 and 3 of `truncate_to` (see the module docs), `seg` cut at `pos` in memory, the
    /// segments after it `removed`.
    async fn finish_truncation(
        &self,
        seg: &Rc<Segment>,
        removed: &[Rc<Segment>],
        pos: u64,
        new_end: i64,
        copy: bool,
        txn_changed: bool,
    ) -> Result<()> {
        for s in removed.iter().rev() {
            s.remove_files()?;
        }
        if !removed.is_empty() {
            sync_dir(&self.dir).await?;
        }
        if copy {
            // A spliced range of the old file may still be read: the old file keeps its bytes.
            seg.write_indexes().await?;
            if txn_changed {
                seg.rewrite_txn_index().await?;
            }
            seg.copy_prefix_over(pos).await?;
            let cfg = self.config.borrow().clone();
            let fresh = Segment::open_active(
                &self.dir,
                seg.base_offset,
                cfg.io_mode,
                cfg.index_interval_bytes,
            )
            .await?;
            seg.retire();
            let mut segs = self.segments.borrow_mut();
            if let Some(last) = segs.last_mut() {
                *last = Rc::new(fresh);
            }
        } else {
            seg.file.truncate(pos).await?;
            seg.file.sync().await?;
            seg.write_indexes().await?;
            if txn_changed {
                seg.rewrite_txn_index().await?;
            }
        }
        sync_dir(&self.dir).await?;
        for o in list_snapshots(&self.dir)? {
            if o > new_end {
                remove_snapshot(&self.dir, o)?;
            }
        }
        self.load_producer_state().await?;
        self.recompute_max_timestamp().await?;
        self.epochs_end_at(new_end).await?;
        if self.dir.join(CLEANER_CHECKPOINT).exists() {
            let mut c = CleanerCheckpoint::load(&self.dir).await?;
            if c.truncate_to(new_end) {
                c.store(&self.dir).await?;
            }
        }
        Ok(())
    }

    /// Deletes every segment and restarts the empty log at `offset`. Caller holds the append
    /// and flush locks.
    async fn restart_at(&self, offset: i64) -> Result<()> {
        // First the new log start, so that a crash below leaves it with what remains.
        write_file_atomic(
            &self.dir.join(START_CHECKPOINT),
            format!("{offset}\n").into_bytes(),
        )
        .await?;
        sync_dir(&self.dir).await?;
        let done = self.restart_at_inner(offset).await;
        if let Err(e) = &done {
            self.fail_stop("restarting the log", e);
        }
        done
    }

    async fn restart_at_inner(&self, offset: i64) -> Result<()> {
        let old = self.segments_snapshot();
        for s in old.iter().rev() {
            s.remove_files()?;
        }
        match std::fs::remove_file(self.dir.join(CLEANER_CHECKPOINT)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        for o in list_snapshots(&self.dir)? {
            remove_snapshot(&self.dir, o)?;
        }
        let mode = self.config.borrow().io_mode;
        let seg = Segment::create(&self.dir, offset, mode).await?;
        sync_dir(&self.dir).await?;
        // The in-memory log becomes the empty one, in one step.
        self.truncations.set(self.truncations.get() + 1);
        *self.segments.borrow_mut() = vec![Rc::new(seg)];
        self.log_start.set(offset);
        self.log_end.set(offset);
        self.durable_end.set(offset);
        self.max_ts.set((-1, -1));
        *self.producer_state.borrow_mut() = ProducerStateMap::default();
        self.first_unstable.set(None);
        self.recent.borrow_mut().clear();
        self.ahead.borrow_mut().clear();
        self.epochs_clear().await
    }

    /// A truncation failed half way: memory and disk may disagree, so the log takes no more
    /// requests; reopening it recovers what the disk holds.
    fn fail_stop(&self, what: &str, e: &StorageError) {
        self.closed.set(true);
        error!(dir = %self.dir.display(), "{what} failed part way ({e}); the partition log is \
            closed and recovers a consistent prefix of its log when reopened");
    }
}
