//! Segment lifecycle of a `PartitionLog`: rolling, retention (bytes and time), DeleteRecords,
//! clean close and deletion of the whole partition. Rolls and clean close also snapshot the
//! producer state (`log_producers.rs`); housekeeping expires idle producers. A log start moved
//! by retention or DeleteRecords moves the first leader epoch entry with it (`log_epochs.rs`).

use std::rc::Rc;

use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::file::{sync_dir, write_file_atomic};
use super::log::{PartitionLog, CLEAN_MARKER, START_CHECKPOINT};
use super::segment::Segment;

impl PartitionLog {
    /// Rolls before an append of `incoming` bytes ending at `last_offset` if the active segment
    /// would exceed segment.bytes, its index is full, it is older than segment.ms, or relative
    /// offsets would overflow. Caller holds the append lock.
    pub(crate) async fn maybe_roll(
        &self,
        cfg: &LogConfig,
        incoming: u64,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<()> {
        let active = self.active();
        if !active.is_empty() && self.roll_due(&active, cfg, incoming, last_offset, now_ms) {
            self.roll().await?;
        }
        Ok(())
    }

    /// Whether the (non-empty) active segment must be rolled before an append of `incoming`
    /// bytes ending at `last_offset` (see `maybe_roll`).
    pub(crate) fn roll_due(
        &self,
        active: &Segment,
        cfg: &LogConfig,
        incoming: u64,
        last_offset: i64,
        now_ms: i64,
    ) -> bool {
        // Positions in the index are u32: never let a segment grow past 2 GiB.
        let max_size = cfg.segment_bytes.min(i32::MAX as u64);
        let by_size = active.size() + incoming > max_size;
        let by_index = active.index_full(cfg.segment_index_bytes);
        let by_offset = last_offset - active.base_offset >= i64::from(u32::MAX);
        by_size || by_index || by_offset || self.segment_expired(active, cfg, now_ms)
    }

    fn segment_expired(&self, seg: &Segment, cfg: &LogConfig, now_ms: i64) -> bool {
        let first = seg.st.borrow().first_batch_ts;
        first.is_some_and(|t| now_ms.saturating_sub(t) > cfg.segment_ms)
    }

    /// Seals the active segment and starts a new one at the log end. Caller holds the append lock.
    pub(crate) async fn roll(&self) -> Result<()> {
        self.roll_at(self.log_end.get()).await
    }

    /// `roll`, the new segment starting at `base` (>= the log end, which moves there: a
    /// follower's next batch may start past it, after offsets its compacted leader no longer
    /// has). Caller holds the append lock.
    pub(crate) async fn roll_at(&self, base: i64) -> Result<()> {
        let old = self.active();
        old.seal().await?;
        let mode = self.config.borrow().io_mode;
        let seg = Segment::create(&self.dir, base, mode).await?;
        self.segments.borrow_mut().push(Rc::new(seg));
        // Persist the new segment's directory entry and the renamed index files.
        sync_dir(&self.dir).await?;
        self.log_end.set(self.log_end.get().max(base));
        // The sealed segment was synced: everything before the new base is durable.
        self.durable_end
            .set(self.durable_end.get().max(self.log_end.get()));
        // The snapshot covers exactly the durable segments below the new one.
        self.take_producer_snapshot().await;
        Ok(())
    }

    pub(crate) async fn lock(&self) -> Result<glommio::sync::Permit<'_>> {
        self.append_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(format!("append lock: {e}")))
    }

    /// Removes the oldest segment (never the active one) and advances the log start past it.
    fn drop_oldest(&self) -> Result<()> {
        let oldest = {
            let mut segs = self.segments.borrow_mut();
            if segs.len() <= 1 {
                return Ok(());
            }
            let oldest = segs.remove(0);
            self.log_start
                .set(self.log_start.get().max(segs[0].base_offset));
            oldest
        };
        oldest.remove_files()
    }

    /// Rolls by segment.ms, then (cleanup.policy includes delete) deletes oldest segments beyond
    /// retention.bytes or retention.ms. An oldest segment left empty by the cleaner counts as
    /// expired by time.
    pub async fn housekeeping(&self, now_ms: i64) -> Result<()> {
        let _permit = self.lock().await?;
        self.check_open()?;
        let cfg = self.config.borrow().clone();
        let active = self.active();
        if !active.is_empty() && self.segment_expired(&active, &cfg, now_ms) {
            self.roll().await?;
        }
        let mut deleted = false;
        // Pure `compact` keeps every segment: only the cleaner shrinks the log.
        while cfg.cleanup_policy.deletes() {
            let (oldest, count) = {
                let segs = self.segments.borrow();
                (Rc::clone(&segs[0]), segs.len())
            };
            if count <= 1 {
                break;
            }
            let total = self.size_bytes();
            let by_bytes = u64::try_from(cfg.retention_bytes)
                .is_ok_and(|limit| total - oldest.size() >= limit);
            let by_time = cfg.retention_ms >= 0
                && oldest
                    .max_timestamp()
                    .is_none_or(|(t, _)| now_ms.saturating_sub(t) > cfg.retention_ms);
            if !(by_bytes || by_time) {
                break;
            }
            self.drop_oldest()?;
            deleted = true;
        }
        if deleted && self.max_ts.get().1 < self.log_start.get() {
            self.recompute_max_timestamp().await?;
        }
        if deleted {
            self.prune_producer_snapshots()?;
            self.epochs_start_at(self.log_start.get()).await?;
        }
        self.expire_producers(now_ms);
        Ok(())
    }

    /// DeleteRecords: moves the log start to `offset` (persisted), deleting whole segments below it.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let _permit = self.lock().await?;
        self.check_open()?;
        let (start, end) = (self.log_start.get(), self.log_end.get());
        if offset > end || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        write_file_atomic(
            &self.dir.join(START_CHECKPOINT),
            format!("{offset}\n").into_bytes(),
        )
        .await?;
        sync_dir(&self.dir).await?;
        self.log_start.set(offset);
        loop {
            let next_base = self.segments.borrow().get(1).map(|s| s.base_offset);
            match next_base {
                Some(b) if b <= offset => self.drop_oldest()?,
                _ => break,
            }
        }
        if self.max_ts.get().1 < offset {
            self.recompute_max_timestamp().await?;
        }
        self.prune_producer_snapshots()?;
        self.epochs_start_at(offset).await?;
        Ok(offset)
    }

    /// Waits for in-flight appends, seals the active segment (trim, sync, indexes) and writes the
    /// clean-shutdown marker. The log must not be used afterwards.
    pub async fn close(&self) -> Result<()> {
        let _permit = self.lock().await?;
        if self.closed.get() {
            return Ok(());
        }
        self.closed.set(true);
        self.recent.borrow_mut().clear();
        // Windows read ahead give their memory back (their tasks end by `HOLD`).
        self.ahead.borrow_mut().clear();
        self.active().seal().await?;
        self.durable_end.set(self.log_end.get());
        self.take_producer_snapshot().await;
        std::fs::write(self.dir.join(CLEAN_MARKER), b"")?;
        Ok(())
    }

    /// Closes the log and removes the whole partition directory.
    pub async fn delete(&self) -> Result<()> {
        let _permit = self.lock().await?;
        self.closed.set(true);
        self.recent.borrow_mut().clear();
        self.ahead.borrow_mut().clear();
        // Their blocks are freed off the shard, once they are dropped (here,
        // unless a reader still holds one): `reclaim`.
        for seg in self.segments.borrow_mut().drain(..) {
            seg.retire();
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
