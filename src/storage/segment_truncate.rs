//! Cutting one segment back, for `PartitionLog::truncate_to` (`log_truncate.rs`): where the cut
//! falls, the segment's in-memory state after it, and the copy of the kept bytes into a new file
//! when a range of the old one handed out for splicing may still be in flight.

use std::path::PathBuf;

use super::error::{Result, StorageError};
use super::file::{sync_dir, SegFile, ALIGN};
use super::segment::{rel, Segment};
use super::segment_read::{corrupt_at, Window};

/// Window used when walking batch headers to the cut.
const CUT_WINDOW: usize = 16 << 10;
/// Bytes copied per read and write when the kept bytes move to a new file.
const COPY_CHUNK: usize = 1 << 20;

impl Segment {
    /// Where a truncation to `offset` cuts this segment: the position of the first batch that
    /// holds an offset >= `offset` (the segment's size when none does), and the offset after the
    /// batches before it (the segment's base offset when there are none). That end is what
    /// recovery computes for the cut file, also when a compacted log has a gap before the cut.
    pub async fn cut_point(&self, offset: i64) -> Result<(u64, i64)> {
        let (mut pos, size) = {
            let st = self.st.borrow();
            let r = rel(self.base_offset, offset.max(self.base_offset));
            let i = st.index.entries.partition_point(|&(e, _)| e <= r);
            // One index entry further back than a lookup, so that when the cut is not at the
            // segment start, at least one kept batch is walked: its end is the new end.
            let start = match i.checked_sub(2) {
                Some(j) => u64::from(st.index.entries[j].1),
                None => 0,
            };
            (start, st.size)
        };
        let mut end = self.base_offset;
        let mut w = Window::new(&self.file, size, CUT_WINDOW);
        while pos < size {
            let (h, n) = w.header(pos).await?.ok_or_else(|| corrupt_at(self, pos))?;
            if h.last_offset() >= offset {
                return Ok((pos, end));
            }
            end = h.last_offset() + 1;
            pos += n as u64;
        }
        Ok((size, end))
    }

    /// The bytes `[align_down(pos), pos)` that a direct file rewrites with its next append
    /// (empty for a buffered file).
    pub async fn tail_at(&self, pos: u64) -> Result<Vec<u8>> {
        if !self.file.is_direct() {
            return Ok(Vec::new());
        }
        let aligned = pos - pos % ALIGN;
        let len = (pos - aligned) as usize;
        let tail = self.file.read(aligned, len).await?;
        if tail.len() != len {
            return Err(StorageError::Io(format!(
                "short read of the tail of {} at {aligned}",
                self.file.path().display()
            )));
        }
        Ok(tail.to_vec())
    }

    /// Makes the in-memory state that of the segment cut at `pos` (a batch start, or the size)
    /// ending at offset `end` (from `cut_point`), with `tail` from `tail_at(pos)`: indexes,
    /// aborted transactions, size, next offset. The file is cut by the caller. Returns whether
    /// aborted-transaction entries were dropped (its `.txnindex` must then be rewritten).
    pub fn cut_state(&self, pos: u64, end: i64, tail: Vec<u8>) -> bool {
        let mut st = self.st.borrow_mut();
        let base = self.base_offset;
        st.index.entries.retain(|&(_, p)| u64::from(p) < pos);
        st.time_index
            .entries
            .retain(|&(_, r)| base + i64::from(r) < end);
        let before = st.aborted.len();
        st.aborted.retain(|t| t.last_offset < end);
        let last_indexed = st.index.entries.last().map_or(0, |&(_, p)| u64::from(p));
        st.bytes_since_index = usize::try_from(pos - last_indexed).unwrap_or(usize::MAX);
        st.size = pos;
        st.next_offset = end;
        st.tail = tail;
        if pos == 0 {
            st.first_batch_ts = None;
        }
        st.aborted.len() != before
    }

    /// Whether a range of this segment's file handed out for splicing (`file_range`) may still
    /// be in flight: its holder shares the splice fd.
    pub fn splice_in_flight(&self) -> bool {
        self.splice_fd
            .get()
            .and_then(Option::as_ref)
            .is_some_and(|fd| std::sync::Arc::strong_count(fd) > 1)
    }

    /// Replaces the `.log` file by a new one holding its first `len` bytes (a temporary file,
    /// synced, renamed over it, the directory synced). The old file is left as it was for
    /// whoever still reads it (a splice in flight, this segment's own handle).
    pub async fn copy_prefix_over(&self, len: u64) -> Result<()> {
        let path = Segment::log_path(&self.dir, self.base_offset);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let r = self.copy_prefix_to(&tmp, len).await;
        if r.is_err() {
            // Recovery removes `*.tmp` files too; this only gives the space back at once.
            let _ = std::fs::remove_file(&tmp);
            return r;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir).await
    }

    async fn copy_prefix_to(&self, tmp: &std::path::Path, len: u64) -> Result<()> {
        let mode = if self.file.is_direct() {
            super::config::IoMode::Direct
        } else {
            super::config::IoMode::Buffered
        };
        let out = SegFile::open(tmp, mode).await?;
        out.truncate(0).await?;
        let mut at = 0u64;
        while at < len {
            // COPY_CHUNK is a multiple of ALIGN, so every write but the last is whole blocks
            // at an aligned position; the last one's padding is cut below.
            let n = COPY_CHUNK.min((len - at) as usize);
            let data = self.file.read(at, n).await?;
            if data.len() != n {
                return Err(StorageError::Io(format!(
                    "short read of {} at {at}",
                    self.file.path().display()
                )));
            }
            out.write(out.alloc_filled(&[&data]), at).await?;
            at += n as u64;
        }
        out.truncate(len).await?;
        out.sync().await
    }
}
