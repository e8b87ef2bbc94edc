//! One log segment: its `.log` file, logical size, unaligned tail (for O_DIRECT appends) and
//! in-memory offset/time indexes. Appending, sealing and removal live here; reading in
//! `segment_read.rs`, recovery in `segment_recover.rs`, cutting back (truncation) in
//! `segment_truncate.rs`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::batch::{patch_batch, BatchInfo};
use super::config::IoMode;
use super::error::Result;
use super::file::{write_file_atomic, SegFile, ALIGN};
use super::index::{OffsetIndex, TimeIndex};
use super::txn_index::{self, AbortedTxn, ENTRY_BYTES};

/// File name stem of a segment: its base offset as 20 zero-padded digits.
pub(crate) fn segment_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Mutable state of a segment.
#[derive(Default)]
pub(crate) struct SegState {
    /// Logical size of the `.log` file (bytes of whole batches).
    pub size: u64,
    /// Offset after the last batch in this segment.
    pub next_offset: i64,
    /// Direct mode: the bytes `[align_down(size), size)`, rewritten with the next append.
    pub tail: Vec<u8>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Log bytes appended since the last offset index entry.
    pub bytes_since_index: usize,
    /// Rolling time of the segment: when its first batch was appended (after recovery: that
    /// batch's max timestamp).
    pub first_batch_ts: Option<i64>,
    /// Aborted transactions whose ABORT marker is in this segment, in marker order (the
    /// `.txnindex` file; see `txn_index.rs`).
    pub aborted: Vec<AbortedTxn>,
}

impl SegState {
    /// Accounts one batch stored at `pos` in the indexes.
    pub fn note_batch(&mut self, seg_base: i64, pos: u64, b: &NotedBatch, interval: usize) {
        if self.bytes_since_index >= interval {
            self.index.push(rel(seg_base, b.base_offset), pos as u32);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += b.size;
        self.time_index
            .observe(b.max_timestamp, rel(seg_base, b.last_offset));
        self.next_offset = b.last_offset + 1;
    }
}

/// What the indexes need to know about a stored batch.
pub(crate) struct NotedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub size: usize,
}

/// Offset relative to a segment base (callers guarantee it fits; rolls happen before overflow).
pub(crate) fn rel(seg_base: i64, offset: i64) -> u32 {
    u32::try_from(offset - seg_base).unwrap_or(u32::MAX)
}

/// A segment of a partition log.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: SegFile,
    pub dir: PathBuf,
    pub st: RefCell<SegState>,
    /// The `.log` file opened for splicing (`SegFile::reopen_for_splice`),
    /// opened on the first zero-copy read; None inside if that failed.
    pub splice_fd: std::cell::OnceCell<Option<std::sync::Arc<std::os::fd::OwnedFd>>>,
    /// Its files are being deleted: when dropped, its `.log` file is closed
    /// last on the reclaim thread, which frees the blocks (`reclaim`).
    pub retired: std::cell::Cell<bool>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.retired.get() {
            // Without a duplicate the segment's own close frees the file, as
            // before the reclaim thread existed.
            if let Ok(fd) = self.file.dup_fd() {
                super::reclaim::close_after(fd, super::reclaim::DELAY);
            }
        }
    }
}

/// Everything `Segment::append` needs besides the bytes.
pub(crate) struct AppendPlan<'a> {
    pub batches: &'a [BatchInfo],
    pub first_offset: i64,
    pub leader_epoch: i32,
    /// Some(now) for LogAppendTime.
    pub append_time: Option<i64>,
    pub index_interval: usize,
    /// Wall-clock time of the append.
    pub now_ms: i64,
    /// A follower's append of its leader's batches: stored as they are (offsets, epoch and
    /// timestamps final, each batch at its own base offset); `first_offset`, `leader_epoch` and
    /// `append_time` are not used.
    pub replicated: bool,
}

impl Segment {
    pub fn log_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.log", segment_stem(base)))
    }
    pub fn index_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.index", segment_stem(base)))
    }
    pub fn time_index_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.timeindex", segment_stem(base)))
    }
    pub fn txn_index_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(format!("{}.txnindex", segment_stem(base)))
    }

    /// Creates a new, empty segment (replacing any stale file of that name).
    pub async fn create(dir: &Path, base_offset: i64, mode: IoMode) -> Result<Segment> {
        let file = SegFile::open(&Self::log_path(dir, base_offset), mode).await?;
        file.truncate(0).await?;
        for p in [
            Self::index_path(dir, base_offset),
            Self::time_index_path(dir, base_offset),
            Self::txn_index_path(dir, base_offset),
        ] {
            if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(Segment::empty(dir, base_offset, file))
    }

    pub fn size(&self) -> u64 {
        self.st.borrow().size
    }

    pub fn next_offset(&self) -> i64 {
        self.st.borrow().next_offset
    }

    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Newest timestamp in the segment, if it holds any batch.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.st
            .borrow()
            .time_index
            .last()
            .map(|(t, r)| (t, self.base_offset + i64::from(r)))
    }

    /// Appends `records` (already validated) at the end, patching offsets/epoch/timestamps, and
    /// returns the bytes as stored. In-memory state changes only after the write completed.
    pub async fn append(&self, records: &[u8], plan: &AppendPlan<'_>) -> Result<Bytes> {
        let (size, tail) = {
            let st = self.st.borrow();
            let tail = if self.file.is_direct() {
                st.tail.clone()
            } else {
                Vec::new()
            };
            (st.size, tail)
        };
        let lead = tail.len();
        let total = lead + records.len();
        let mut buf = self.file.alloc_filled(&[&tail, records]);
        let new_size = size + records.len() as u64;
        let new_tail;
        let stored;
        {
            let b = buf.as_mut();
            let mut at = lead;
            let mut offset = plan.first_offset;
            if !plan.replicated {
                for bi in plan.batches {
                    patch_batch(
                        &mut b[at..at + bi.size],
                        offset,
                        plan.leader_epoch,
                        plan.append_time,
                    );
                    at += bi.size;
                    offset += i64::from(bi.last_offset_delta) + 1;
                }
            }
            let keep = if self.file.is_direct() {
                (new_size % ALIGN) as usize
            } else {
                0
            };
            new_tail = b[total - keep..total].to_vec();
            stored = Bytes::copy_from_slice(&b[lead..total]);
        }
        if let Err(e) = self.file.write(buf, size - lead as u64).await {
            self.roll_back_write(size).await;
            return Err(e);
        }

        let mut st = self.st.borrow_mut();
        let mut pos = size;
        let mut offset = plan.first_offset;
        for bi in plan.batches {
            if plan.replicated {
                offset = bi.base_offset;
            }
            let last = offset + i64::from(bi.last_offset_delta);
            let noted = NotedBatch {
                base_offset: offset,
                last_offset: last,
                max_timestamp: plan.append_time.unwrap_or(bi.max_timestamp),
                size: bi.size,
            };
            st.note_batch(self.base_offset, pos, &noted, plan.index_interval);
            pos += bi.size as u64;
            offset = last + 1;
        }
        st.size = new_size;
        st.tail = new_tail;
        if st.first_batch_ts.is_none() {
            st.first_batch_ts = Some(plan.now_ms);
        }
        Ok(stored)
    }

    /// After a failed append (out of space, typically), cuts the file back to `size`, the end of
    /// the last complete batch, so no partial batch stays on disk. In-memory state was not
    /// changed by the failed append, so the next one writes at the same place. If even the
    /// truncate fails the bytes past `size` are still never read (reads stop at the logical
    /// size), the next append overwrites them, and recovery would cut them as a torn tail.
    async fn roll_back_write(&self, size: u64) {
        if let Err(e) = self.file.truncate(size).await {
            tracing::warn!(segment = %self.file.path().display(), size,
                "cutting a failed append back to the last complete batch: {e}");
        }
    }

    /// Writes the index files as they are in memory.
    pub async fn write_indexes(&self) -> Result<()> {
        let (ix, tix) = {
            let st = self.st.borrow();
            (st.index.encode(), st.time_index.encode())
        };
        write_file_atomic(&Self::index_path(&self.dir, self.base_offset), ix).await?;
        write_file_atomic(&Self::time_index_path(&self.dir, self.base_offset), tix).await
    }

    /// Makes the segment final: trims O_DIRECT padding, syncs, then writes its indexes (so an
    /// index file on disk implies a trimmed, durable log file).
    pub async fn seal(&self) -> Result<()> {
        let size = self.size();
        if self.file.is_direct() {
            self.file.truncate(size).await?;
        }
        self.file.sync().await?;
        self.write_indexes().await
    }

    /// Marks the segment's files as being deleted (unlinked now or soon, by
    /// the caller or `remove_files`): its last handle is closed off the shard.
    pub fn retire(&self) {
        self.retired.set(true);
    }

    /// Deletes the segment's files (their blocks are freed off the shard
    /// once the segment is dropped: `retire`).
    pub fn remove_files(&self) -> Result<()> {
        self.retire();
        for p in [
            Self::log_path(&self.dir, self.base_offset),
            Self::index_path(&self.dir, self.base_offset),
            Self::time_index_path(&self.dir, self.base_offset),
            Self::txn_index_path(&self.dir, self.base_offset),
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Records an aborted transaction whose marker was just appended to this (active) segment:
    /// in memory, then appended to the `.txnindex` file and fdatasynced (the file's first entry
    /// also syncs the directory, so a sealed segment never loses its index file). Caller holds
    /// the append lock. On error the memory keeps the entry; recovery rebuilds the active
    /// segment's file from the log.
    pub async fn append_aborted(&self, t: AbortedTxn) -> Result<()> {
        let index = {
            let mut st = self.st.borrow_mut();
            st.aborted.push(t);
            st.aborted.len() - 1
        };
        let path = Self::txn_index_path(&self.dir, self.base_offset);
        let f = SegFile::open(&path, IoMode::Buffered).await?;
        let buf = f.alloc_filled(&[&t.encode()]);
        f.write(buf, (index * ENTRY_BYTES) as u64).await?;
        f.sync().await?;
        if index == 0 {
            super::file::sync_dir(&self.dir).await?;
        }
        Ok(())
    }

    /// Replaces the `.txnindex` file with the entries in memory (removing it when there are
    /// none), atomically. Used by recovery of the active segment.
    pub async fn rewrite_txn_index(&self) -> Result<()> {
        let data = txn_index::encode_all(&self.st.borrow().aborted);
        let path = Self::txn_index_path(&self.dir, self.base_offset);
        if data.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        } else {
            write_file_atomic(&path, data).await?;
        }
        super::file::sync_dir(&self.dir).await
    }

    /// Whether the indexes have reached `capacity` bytes (segment.index.bytes).
    pub fn index_full(&self, capacity: usize) -> bool {
        let st = self.st.borrow();
        st.index.bytes() + super::index::INDEX_ENTRY > capacity
            || st.time_index.bytes() + super::index::TIME_ENTRY > capacity
    }
}
