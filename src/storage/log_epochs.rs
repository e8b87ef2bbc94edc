//! The leader epoch cache of a `PartitionLog` (rules and file in `epoch_cache.rs`): which epoch
//! leader appends stamp, the entries appends add, the OffsetsForLeaderEpoch answer, and keeping
//! the cache consistent with the log.
//!
//! - A leader append stamps every batch with the current epoch (`set_leader_epoch`,
//!   `assign_epoch`); a follower's append keeps its leader's stamps. Either adds an entry when a
//!   batch carries an epoch above the latest one, before the batch is written, so a batch on disk
//!   always has its entry (an entry may outlive a write that failed or was lost in a crash: it
//!   then starts at or past the log end, which is harmless and dropped on open).
//! - Truncation drops the entries starting at or after the new end, after the log was cut; a log
//!   start moved by retention or DeleteRecords drops the entries wholly below it and moves the
//!   first one to it.
//! - Open reads the checkpoint and drops entries at or after the recovered log end (Kafka does
//!   the same; a leader elected again assigns its epoch again) and below the log start. A log
//!   written before the checkpoint existed, or one whose checkpoint is unreadable, gets the cache
//!   rebuilt once from the partitionLeaderEpoch of its batch headers: per segment the first and
//!   last headers are read (the last from the last offset-index entry on), and only a segment
//!   whose two epochs differ is walked header by header. Leaders so far stamped one fixed epoch,
//!   so that is two short reads per segment. (Epochs are assumed not to decrease along the log;
//!   a segment whose first and last batches agree is taken to hold that epoch only.)

use tracing::{info, warn};

use super::epoch_cache::{self, EpochCache, EpochEntry};
use super::error::Result;
use super::log::PartitionLog;

impl PartitionLog {
    /// This replica becomes leader at `epoch` with its log ending at `start_offset` (its log
    /// end): later leader appends are stamped with `epoch`, and the cache gains the entry
    /// `(epoch, start_offset)` (durably) when `epoch` is above every epoch it knows. Negative
    /// values add no entry.
    pub async fn assign_epoch(&self, epoch: i32, start_offset: i64) -> Result<()> {
        let _permit = self.lock().await?;
        self.check_open()?;
        self.leader_epoch.set(epoch);
        self.note_epochs(&[(epoch, start_offset)]).await
    }

    /// Sets the epoch stamped on later leader appends (the first such append of an epoch above
    /// the cache's latest adds its entry).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.set(epoch);
    }

    /// OffsetsForLeaderEpoch (Kafka's `LeaderEpochFileCache.endOffsetFor`): for the latest
    /// epoch, (it, the log end); for an older one, the offset where the first epoch above it
    /// starts, with the largest known epoch at or below `requested` (`requested` itself when
    /// none is smaller); (-1, -1) for an epoch above every known one or an empty cache.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.epochs
            .borrow()
            .end_offset_for(requested, self.log_end.get())
    }

    /// The latest epoch in the cache, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.borrow().latest().map(|e| e.epoch)
    }

    /// The cache's entries, ascending (for tests and debugging).
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs.borrow().entries().to_vec()
    }

    /// Adds the entries of batches about to be written, as (epoch, base offset) in log order,
    /// and persists the cache if that changed it (rare: once per epoch). On failure the cache
    /// is left as it was. Caller holds the append lock.
    pub(crate) async fn note_epochs(&self, batches: &[(i32, i64)]) -> Result<()> {
        let before = {
            let cache = self.epochs.borrow();
            if !batches.iter().any(|&(e, _)| cache.is_new(e)) {
                return Ok(());
            }
            cache.clone()
        };
        let changed = {
            let mut cache = self.epochs.borrow_mut();
            batches
                .iter()
                .fold(false, |changed, &(e, o)| cache.assign(e, o) || changed)
        };
        if !changed {
            return Ok(());
        }
        if let Err(e) = self.store_epochs().await {
            *self.epochs.borrow_mut() = before;
            return Err(e);
        }
        Ok(())
    }

    /// The log start moved to `start`: entries wholly below it go, the first moves to it.
    pub(crate) async fn epochs_start_at(&self, start: i64) -> Result<()> {
        if self.epochs.borrow_mut().truncate_from_start(start) {
            self.store_epochs().await?;
        }
        Ok(())
    }

    /// The log was truncated to end at `end`: entries starting at or after it go.
    pub(crate) async fn epochs_end_at(&self, end: i64) -> Result<()> {
        if self.epochs.borrow_mut().truncate_from_end(end) {
            self.store_epochs().await?;
        }
        Ok(())
    }

    /// Forgets every entry (the log restarts empty).
    pub(crate) async fn epochs_clear(&self) -> Result<()> {
        self.epochs.borrow_mut().clear();
        self.store_epochs().await
    }

    async fn store_epochs(&self) -> Result<()> {
        let data = self.epochs.borrow().encode();
        epoch_cache::store(&self.dir, data).await
    }

    /// Loads the cache on open (see the module docs). Runs after segments, log start and log
    /// end are recovered.
    pub(crate) async fn load_epoch_cache(&self) -> Result<()> {
        let (mut cache, mut changed) = match epoch_cache::load(&self.dir).await? {
            Some(Ok(c)) => (c, false),
            Some(Err(why)) => {
                warn!(dir = %self.dir.display(), "unreadable leader epoch checkpoint ({why}); rebuilding it from the batch headers");
                (self.rebuild_epochs().await, true)
            }
            None if self.size_bytes() > 0 => {
                info!(dir = %self.dir.display(), "no leader epoch checkpoint (a log written before it existed): building it from the batch headers");
                (self.rebuild_epochs().await, true)
            }
            None => (EpochCache::default(), false),
        };
        changed |= cache.truncate_from_end(self.log_end.get());
        changed |= cache.truncate_from_start(self.log_start.get());
        *self.epochs.borrow_mut() = cache;
        if changed {
            self.store_epochs().await?;
        }
        Ok(())
    }

    /// The cache as the batch headers give it (see the module docs). A segment whose headers
    /// cannot be read is skipped with a warning, as the producer-state replay does: its data is
    /// unreadable to fetches too.
    async fn rebuild_epochs(&self) -> EpochCache {
        let mut cache = EpochCache::default();
        for seg in self.segments_snapshot() {
            let ends = match seg.first_and_last_headers().await {
                Ok(Some(ends)) => ends,
                Ok(None) => continue,
                Err(e) => {
                    warn!(dir = %self.dir.display(), segment = seg.base_offset, "leader epoch rebuild skips a segment: {e}");
                    continue;
                }
            };
            let (first, last) = ends;
            if first.leader_epoch == last.leader_epoch {
                cache.assign(first.leader_epoch, first.base_offset);
                continue;
            }
            let mut seen: Vec<(i32, i64)> = Vec::new();
            let walked = seg
                .for_each_header(seg.base_offset, |h, _| {
                    if seen.last().is_none_or(|&(e, _)| e != h.leader_epoch) {
                        seen.push((h.leader_epoch, h.base_offset));
                    }
                })
                .await;
            for (e, o) in seen {
                cache.assign(e, o);
            }
            if let Err(e) = walked {
                warn!(dir = %self.dir.display(), segment = seg.base_offset, "leader epoch rebuild skips the rest of a segment: {e}");
            }
        }
        cache
    }
}
