//! The log cleaner (`cleanup.policy=compact`): one pass of `PartitionLog::compact`.
//!
//! A pass, when due (see `plan`), does what Kafka's cleaner does:
//! 1. **Offset map**: reads the dirty sealed segments (from the checkpointed first dirty offset up
//!    to the first segment younger than `min.compaction.lag.ms`; the active segment never) and
//!    maps each key to its highest offset. The map is bounded by `OFFSET_MAP_BYTES_MAX`: when full,
//!    the pass stops at that segment's end and the rest waits for the next pass.
//! 2. **Rewrite**: every sealed segment from the log's first up to the end of the mapped range is
//!    rewritten (in groups of consecutive segments whose total stays under segment.bytes), keeping
//!    a record only if no higher offset holds its key, it has a key, and it is not a tombstone whose
//!    first cleaning is older than `delete.retention.ms`. Batches whose records all survive are
//!    copied byte for byte; others are rebuilt by `compact_rewrite` (same base offset, codec, ...);
//!    batches with no survivor disappear. Control and transactional batches are copied untouched
//!    and their keys are not mapped (unlike Kafka's cleaner, aborted data and markers are never
//!    removed); the merged segment's `.txnindex` is the concatenation of the group's.
//! 3. **Swap** (`compact_files` describes the crash protocol): under the append lock, only after
//!    checking that the cleaned segments are still the log's (retention or DeleteRecords may have
//!    removed some meanwhile, which abandons the pass), the pass commits, replaces the files and
//!    the segment list, and trims the recent-batch cache. Readers holding an old `Rc<Segment>`
//!    finish their reads on its open file descriptor (unlinked files stay readable on Linux).
//! 4. **Checkpoint**: first dirty offset and pass time (for tombstones), written atomically.
//!
//! Reading and rewriting happen without the append lock and yield to the executor after every
//! batch, so produce and fetch keep flowing; the broker runs passes in a low-priority task queue.

use std::collections::HashMap;
use std::rc::Rc;

use tracing::{debug, info};

use super::batch::{batch_crc, BatchHeader};
use super::compact_files::{
    apply_group, cleaned_path, encode_manifest, remove_cleaned_files, CleanerCheckpoint, SwapGroup,
    SWAP_MANIFEST,
};
use super::compact_rewrite::{
    parse_records, rebuild_batch, records_section, ATTR_CONTROL, ATTR_TRANSACTIONAL,
};
use super::config::{IoMode, LogConfig};
use super::error::{Result, StorageError};
use super::file::{sync_dir, write_file_atomic, SegFile, ALIGN};
use super::log::PartitionLog;
use super::segment::{NotedBatch, SegState, Segment};
use super::segment_read::Window;
use super::txn_index::{encode_all, AbortedTxn};

/// Soft bound on the memory of one pass's offset map (keys plus overhead); the segment that
/// crosses it is the last one mapped.
const OFFSET_MAP_BYTES_MAX: usize = 64 << 20;
/// Estimated per-entry overhead of the offset map besides the key bytes.
const OFFSET_MAP_ENTRY_OVERHEAD: usize = 56;
/// Read window when scanning segments.
const READ_CHUNK: usize = 1 << 20;
/// The cleaned file is written in chunks of this size (a multiple of `ALIGN`).
const WRITE_CHUNK: usize = 1 << 20;

/// What one cleaning pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Old segments rewritten.
    pub segments_in: usize,
    /// Segments that replaced them.
    pub segments_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The first dirty offset after the pass.
    pub first_dirty_offset: i64,
}

/// Key to highest offset, over the dirty range.
struct OffsetMap {
    map: HashMap<Box<[u8]>, i64>,
    bytes: usize,
}

impl OffsetMap {
    fn insert(&mut self, key: &[u8], offset: i64) {
        if let Some(o) = self.map.get_mut(key) {
            *o = (*o).max(offset);
        } else {
            self.bytes += key.len() + OFFSET_MAP_ENTRY_OVERHEAD;
            self.map.insert(key.into(), offset);
        }
    }
}

/// A group of consecutive old segments that becomes one cleaned segment.
struct Group {
    segs: Vec<Rc<Segment>>,
    /// Base of the segment after the group.
    end: i64,
}

/// Why a pass runs (for the log line).
#[derive(Debug)]
enum Trigger {
    DirtyRatio,
    MaxLag,
    TombstonesExpire,
}

/// The segments a pass works on, chosen by `plan`.
struct Plan {
    /// Sealed segments old enough to clean, from the log's first.
    cleanable: Vec<Rc<Segment>>,
    /// Base of the first segment after `cleanable` (maybe the active one).
    cleanable_end: i64,
    first_dirty: i64,
    trigger: Trigger,
}

/// Resets `cleaner_busy` when a pass ends, however it ends.
struct BusyGuard<'a>(&'a PartitionLog);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.cleaner_busy.set(false);
    }
}

impl PartitionLog {
    /// The log's cleanup.policy.
    pub fn cleanup_policy(&self) -> super::config::CleanupPolicy {
        self.config.borrow().cleanup_policy
    }

    /// Runs one cleaning pass if the log's policy includes compact and one is due; None when
    /// nothing was done. See the module docs.
    pub async fn compact(&self, now_ms: i64) -> Result<Option<CompactionStats>> {
        let cfg = self.config.borrow().clone();
        if !cfg.cleanup_policy.compacts() || self.cleaner_busy.get() {
            return Ok(None);
        }
        self.check_open()?;
        self.cleaner_busy.set(true);
        let _busy = BusyGuard(self);
        // A truncation meanwhile (`log_truncate.rs`) may cut a segment in place: the pass is
        // then abandoned at the swap.
        let truncations = self.truncations.get();
        let mut ckpt = CleanerCheckpoint::load(&self.dir).await?;
        let Some(plan) = self.plan(&cfg, &ckpt, now_ms) else {
            return Ok(None);
        };
        debug!(dir = %self.dir.display(), trigger = ?plan.trigger, "cleaning pass starts");
        let (map, map_end) = build_offset_map(&plan).await?;
        let rewrite: Vec<Rc<Segment>> = plan
            .cleanable
            .iter()
            .filter(|s| s.base_offset < map_end)
            .cloned()
            .collect();
        let groups = group_segments(&rewrite, map_end, &cfg);
        let mut stats = CompactionStats::default();
        let mut tombstone_expiry = i64::MAX;
        let mut kept = Vec::with_capacity(groups.len());
        let ctx = Decide {
            map: &map,
            ckpt: &ckpt,
            now_ms,
            delete_retention_ms: cfg.delete_retention_ms,
        };
        for (i, g) in groups.iter().enumerate() {
            let (expiry, any) = match self.write_group(g, &ctx, i == 0, &mut stats).await {
                Ok(out) => out,
                Err(e) => {
                    remove_cleaned_files(&self.dir)?;
                    return Err(e);
                }
            };
            tombstone_expiry = tombstone_expiry.min(expiry);
            kept.push(any);
        }
        let swap: Vec<SwapGroup> = groups
            .iter()
            .zip(&kept)
            .map(|(g, &any)| SwapGroup {
                base: g.segs[0].base_offset,
                end: g.end,
                dropped: !any,
            })
            .collect();
        if !self.swap(&groups, &swap, &cfg, truncations).await? {
            return Ok(None);
        }
        ckpt.record_pass(map_end, now_ms, cfg.delete_retention_ms);
        ckpt.tombstone_expiry_ms = tombstone_expiry;
        ckpt.store(&self.dir).await?;
        stats.first_dirty_offset = ckpt.first_dirty;
        info!(
            dir = %self.dir.display(),
            trigger = ?plan.trigger,
            segments_in = stats.segments_in,
            segments_out = stats.segments_out,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            records_removed = stats.records_removed,
            tombstones_removed = stats.tombstones_removed,
            "log cleaned"
        );
        Ok(Some(stats))
    }

    /// Chooses the cleanable segments and decides whether a pass is due.
    fn plan(&self, cfg: &LogConfig, ckpt: &CleanerCheckpoint, now_ms: i64) -> Option<Plan> {
        let segs = self.segments_snapshot();
        let sealed = &segs[..segs.len() - 1];
        let lag_limit = now_ms.saturating_sub(cfg.min_compaction_lag_ms.max(0));
        let n = sealed
            .iter()
            .take_while(|s| s.max_timestamp().is_none_or(|(t, _)| t <= lag_limit))
            .count();
        if n == 0 {
            return None;
        }
        let cleanable: Vec<Rc<Segment>> = sealed[..n].to_vec();
        let cleanable_end = segs[n].base_offset;
        let first_dirty = ckpt.first_dirty.max(cleanable[0].base_offset);
        let dirty: Vec<&Rc<Segment>> = cleanable
            .iter()
            .filter(|s| s.next_offset() > first_dirty && !s.is_empty())
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size()).sum();
        let total_bytes: u64 = sealed.iter().map(|s| s.size()).sum();
        let ratio = if total_bytes == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total_bytes as f64
        };
        let max_lag_hit = dirty.first().is_some_and(|s| {
            let first_ts = s.st.borrow().time_index.entries.first().map(|&(t, _)| t);
            first_ts.is_some_and(|t| now_ms.saturating_sub(t) > cfg.max_compaction_lag_ms)
        });
        let trigger = if dirty_bytes > 0 && ratio >= cfg.min_cleanable_dirty_ratio {
            Trigger::DirtyRatio
        } else if dirty_bytes > 0 && max_lag_hit {
            Trigger::MaxLag
        } else if now_ms >= ckpt.tombstone_expiry_ms {
            Trigger::TombstonesExpire
        } else {
            return None;
        };
        Some(Plan {
            cleanable,
            cleanable_end,
            first_dirty,
            trigger,
        })
    }

    /// Writes the `.cleaned` files of one group; returns when the earliest tombstone it kept may
    /// be removed (i64::MAX if none) and whether it wrote a segment. Nothing is written for a group
    /// left empty unless it is the log's first (which keeps the log start offset where it is).
    async fn write_group(
        &self,
        g: &Group,
        ctx: &Decide<'_>,
        first: bool,
        stats: &mut CompactionStats,
    ) -> Result<(i64, bool)> {
        let base = g.segs[0].base_offset;
        let mode = self.config.borrow().io_mode;
        let interval = self.config.borrow().index_interval_bytes;
        let mut w = CleanedWriter::open(&self.dir, base, mode, interval).await?;
        let mut expiry = i64::MAX;
        for seg in &g.segs {
            stats.segments_in += 1;
            stats.bytes_in += seg.size();
            let mut r = BatchReader::new(seg);
            while let Some(batch) = r.next().await? {
                let h = BatchHeader::parse(&batch)
                    .ok_or_else(|| StorageError::CorruptMessage("short batch".to_string()))?;
                match ctx.filter(&batch, &h, stats, &mut expiry)? {
                    Kept::All => w.push(&batch, &h).await?,
                    Kept::Some(b) => {
                        let nh = BatchHeader::parse(&b).ok_or_else(|| {
                            StorageError::CorruptMessage("short batch".to_string())
                        })?;
                        w.push(&b, &nh).await?;
                    }
                    Kept::None => {}
                }
                glommio::yield_if_needed().await;
            }
            // Markers are always kept, so the merged segment holds every aborted transaction
            // whose marker the group held: its index is the concatenation of theirs.
            w.aborted.extend_from_slice(&seg.st.borrow().aborted);
        }
        if w.size() == 0 && !first {
            debug_assert!(w.aborted.is_empty(), "a group with markers kept no batch");
            w.abandon()?;
            return Ok((expiry, false));
        }
        stats.bytes_out += w.size();
        stats.segments_out += 1;
        w.finish().await?;
        Ok((expiry, true))
    }

    /// Commits the pass and swaps the segments on disk and in memory (under the append lock).
    /// Returns false, having removed the cleaned files, when the log changed under the pass
    /// (segments replaced or removed, or any truncation since `truncations` was read).
    async fn swap(
        &self,
        groups: &[Group],
        swap: &[SwapGroup],
        cfg: &LogConfig,
        truncations: u64,
    ) -> Result<bool> {
        sync_dir(&self.dir).await?;
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(format!("append lock: {e}")))?;
        let still_ours = !self.closed.get() && self.truncations.get() == truncations && {
            let segs = self.segments.borrow();
            groups.iter().all(|g| {
                let Some(i) = segs.iter().position(|s| Rc::ptr_eq(s, &g.segs[0])) else {
                    return false;
                };
                g.segs
                    .iter()
                    .enumerate()
                    .all(|(k, s)| segs.get(i + k).is_some_and(|x| Rc::ptr_eq(x, s)))
                    && segs
                        .get(i + g.segs.len())
                        .is_some_and(|x| x.base_offset == g.end)
            })
        };
        if !still_ours {
            remove_cleaned_files(&self.dir)?;
            info!(dir = %self.dir.display(), "segments changed during cleaning; pass abandoned");
            return Ok(false);
        }
        // Commit point: from here on, recovery finishes the swap instead of rolling it back.
        write_file_atomic(&self.dir.join(SWAP_MANIFEST), encode_manifest(swap)).await?;
        sync_dir(&self.dir).await?;
        let mut new_segs = Vec::with_capacity(swap.len());
        for sg in swap {
            apply_group(&self.dir, sg)?;
            if !sg.dropped {
                let seg = Segment::open_sealed(
                    &self.dir,
                    sg.base,
                    sg.end,
                    cfg.io_mode,
                    cfg.index_interval_bytes,
                )
                .await?;
                new_segs.push((sg.base, Rc::new(seg)));
            }
        }
        sync_dir(&self.dir).await?;
        let end = swap.last().map_or(0, |g| g.end);
        {
            let mut segs = self.segments.borrow_mut();
            // Segments before and after the swapped range stay; those in it
            // were replaced, their files deleted by the swap: their blocks
            // are freed off the shard once they are dropped.
            let mut next = Vec::with_capacity(segs.len());
            let mut keep_after = Vec::new();
            for s in segs.iter() {
                if s.base_offset < swap[0].base {
                    next.push(Rc::clone(s));
                } else if s.base_offset >= end {
                    keep_after.push(Rc::clone(s));
                } else {
                    s.retire();
                }
            }
            next.extend(new_segs.into_iter().map(|(_, s)| s));
            next.extend(keep_after);
            debug_assert!(next.windows(2).all(|w| w[0].base_offset < w[1].base_offset));
            *segs = next;
        }
        self.recent.borrow_mut().drop_below(end);
        std::fs::remove_file(self.dir.join(SWAP_MANIFEST))?;
        sync_dir(&self.dir).await?;
        // The record holding the max timestamp may have been cleaned away.
        self.recompute_max_timestamp().await?;
        Ok(true)
    }
}

/// Reads the map of the dirty range; returns it with the offset where the mapped range ends.
async fn build_offset_map(plan: &Plan) -> Result<(OffsetMap, i64)> {
    let mut map = OffsetMap {
        map: HashMap::new(),
        bytes: 0,
    };
    let mut end = plan.first_dirty;
    for (i, seg) in plan.cleanable.iter().enumerate() {
        let seg_end = plan
            .cleanable
            .get(i + 1)
            .map_or(plan.cleanable_end, |s| s.base_offset);
        if seg_end <= plan.first_dirty {
            continue;
        }
        if map.bytes >= OFFSET_MAP_BYTES_MAX {
            break;
        }
        let mut r = BatchReader::new(seg);
        while let Some(batch) = r.next().await? {
            let h = BatchHeader::parse(&batch)
                .ok_or_else(|| StorageError::CorruptMessage("short batch".to_string()))?;
            if h.last_offset() < plan.first_dirty
                || h.attributes & (ATTR_CONTROL | ATTR_TRANSACTIONAL) != 0
            {
                continue;
            }
            let plain = records_section(&batch, &h)?;
            for rec in parse_records(&plain, h.records_count)? {
                if let Some(k) = rec.key {
                    map.insert(k, h.base_offset + i64::from(rec.offset_delta));
                }
            }
            glommio::yield_if_needed().await;
        }
        end = seg_end;
    }
    Ok((map, end))
}

/// Consecutive segments grouped while their total size stays within segment.bytes and their
/// offsets within one segment's relative-offset range.
fn group_segments(segs: &[Rc<Segment>], range_end: i64, cfg: &LogConfig) -> Vec<Group> {
    let max_size = cfg.segment_bytes.min(i32::MAX as u64);
    let mut groups: Vec<Group> = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let next_base = segs.get(i + 1).map_or(range_end, |n| n.base_offset);
        let fits = groups.last().is_some_and(|g| {
            let size: u64 = g.segs.iter().map(|x| x.size()).sum();
            size + s.size() <= max_size && next_base - g.segs[0].base_offset < i64::from(u32::MAX)
        });
        match groups.last_mut() {
            Some(g) if fits => {
                g.segs.push(Rc::clone(s));
                g.end = next_base;
            }
            _ => groups.push(Group {
                segs: vec![Rc::clone(s)],
                end: next_base,
            }),
        }
    }
    groups
}

/// What survives of a batch.
enum Kept {
    All,
    Some(Vec<u8>),
    None,
}

/// The retention rule of a pass.
struct Decide<'a> {
    map: &'a OffsetMap,
    ckpt: &'a CleanerCheckpoint,
    now_ms: i64,
    delete_retention_ms: i64,
}

impl Decide<'_> {
    /// Filters one batch, counting removals and lowering `expiry` to the earliest time a kept
    /// tombstone may go.
    fn filter(
        &self,
        batch: &[u8],
        h: &BatchHeader,
        stats: &mut CompactionStats,
        expiry: &mut i64,
    ) -> Result<Kept> {
        if h.attributes & (ATTR_CONTROL | ATTR_TRANSACTIONAL) != 0 {
            return Ok(Kept::All);
        }
        let plain = records_section(batch, h)?;
        let records = parse_records(&plain, h.records_count)?;
        let mut kept = Vec::with_capacity(records.len());
        for r in &records {
            let offset = h.base_offset + i64::from(r.offset_delta);
            let Some(key) = r.key else {
                stats.records_removed += 1; // keyless records are invalid on a compacted log
                continue;
            };
            if self.map.map.get(key).is_some_and(|&newest| newest > offset) {
                stats.records_removed += 1;
                continue;
            }
            if r.null_value {
                // A tombstone cleaned for the first time now is kept for delete.retention.ms.
                let first_cleaned = self.ckpt.first_cleaned_ms(offset);
                let due = first_cleaned
                    .unwrap_or(self.now_ms)
                    .saturating_add(self.delete_retention_ms.max(0));
                if first_cleaned.is_some() && self.now_ms > due {
                    stats.records_removed += 1;
                    stats.tombstones_removed += 1;
                    continue;
                }
                *expiry = (*expiry).min(due.saturating_add(1));
            }
            kept.push(*r);
        }
        if kept.len() == records.len() {
            Ok(Kept::All)
        } else if kept.is_empty() {
            Ok(Kept::None)
        } else {
            Ok(Kept::Some(rebuild_batch(batch, h, &kept)?))
        }
    }
}

/// Reads the whole batches of a sealed segment in order, checking each one's CRC.
struct BatchReader<'a> {
    seg: &'a Segment,
    w: Window<'a>,
    pos: u64,
    size: u64,
}

impl<'a> BatchReader<'a> {
    fn new(seg: &'a Segment) -> BatchReader<'a> {
        let size = seg.size();
        BatchReader {
            seg,
            w: Window::new(&seg.file, size, READ_CHUNK),
            pos: 0,
            size,
        }
    }

    async fn next(&mut self) -> Result<Option<bytes::Bytes>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let bad = |what: &str, pos: u64| {
            StorageError::Io(format!(
                "cleaner: {what} at position {pos} of {}",
                self.seg.file.path().display()
            ))
        };
        let (h, n) = self
            .w
            .header(self.pos)
            .await?
            .ok_or_else(|| bad("no valid batch header", self.pos))?;
        let b = self.w.get(self.pos, n).await?;
        if b.len() != n || batch_crc(&b) != h.crc {
            return Err(bad("CRC mismatch", self.pos));
        }
        self.pos += n as u64;
        Ok(Some(b))
    }
}

/// Writes one cleaned segment (`<base>.log.cleaned` and its index files) and builds its indexes.
struct CleanedWriter {
    file: SegFile,
    base: i64,
    interval: usize,
    /// Bytes not yet written; the file holds `flushed` bytes before them.
    pending: Vec<u8>,
    flushed: u64,
    st: SegState,
    /// Aborted-transaction entries of the group's segments, in order.
    aborted: Vec<AbortedTxn>,
}

impl CleanedWriter {
    async fn open(dir: &std::path::Path, base: i64, mode: IoMode, interval: usize) -> Result<Self> {
        let file = SegFile::open(&cleaned_path(&Segment::log_path(dir, base)), mode).await?;
        file.truncate(0).await?;
        Ok(CleanedWriter {
            file,
            base,
            interval,
            pending: Vec::with_capacity(WRITE_CHUNK),
            flushed: 0,
            st: SegState {
                next_offset: base,
                ..SegState::default()
            },
            aborted: Vec::new(),
        })
    }

    fn size(&self) -> u64 {
        self.flushed + self.pending.len() as u64
    }

    async fn push(&mut self, batch: &[u8], h: &BatchHeader) -> Result<()> {
        let noted = NotedBatch {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
            size: batch.len(),
        };
        let pos = self.size();
        self.st.note_batch(self.base, pos, &noted, self.interval);
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= WRITE_CHUNK {
            let n = self.pending.len() - self.pending.len() % ALIGN as usize;
            self.write_out(n).await?;
        }
        Ok(())
    }

    /// Writes the first `n` pending bytes at `flushed` (aligned for O_DIRECT; a final partial
    /// block is zero-padded by `alloc_filled` and trimmed by `finish`).
    async fn write_out(&mut self, n: usize) -> Result<()> {
        let buf = self.file.alloc_filled(&[&self.pending[..n]]);
        self.file.write(buf, self.flushed).await?;
        self.flushed += n as u64;
        self.pending.drain(..n);
        Ok(())
    }

    /// Writes the rest, trims padding, syncs, and writes the `.cleaned` index files.
    async fn finish(mut self) -> Result<()> {
        let size = self.size();
        if !self.pending.is_empty() {
            self.write_out(self.pending.len()).await?;
        }
        if self.file.is_direct() {
            self.file.truncate(size).await?;
        }
        self.file.sync().await?;
        let dir = self
            .file
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        write_file_atomic(
            &cleaned_path(&Segment::index_path(&dir, self.base)),
            self.st.index.encode(),
        )
        .await?;
        write_file_atomic(
            &cleaned_path(&Segment::time_index_path(&dir, self.base)),
            self.st.time_index.encode(),
        )
        .await?;
        if self.aborted.is_empty() {
            return Ok(());
        }
        write_file_atomic(
            &cleaned_path(&Segment::txn_index_path(&dir, self.base)),
            encode_all(&self.aborted),
        )
        .await
    }

    /// Removes the partial file of a group that kept nothing.
    fn abandon(self) -> Result<()> {
        let path = self.file.path().to_path_buf();
        drop(self.file);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
