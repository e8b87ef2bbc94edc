//! Reading a segment: locating the batch that holds an offset (sparse index, then a short scan of
//! batch headers), collecting whole batches for a fetch, and timestamp lookups.

use bytes::Bytes;

use super::batch::{for_each_record, BatchHeader, ATTR_CONTROL, ATTR_LOG_APPEND_TIME, HEADER_LEN};
use super::error::{Result, StorageError};
use super::file::SegFile;
use super::segment::{rel, Segment};

/// Window used when scanning headers to locate an offset.
const LOCATE_WINDOW: usize = 16 << 10;
/// Largest window read speculatively when collecting a fetch.
const MAX_FETCH_WINDOW: usize = 1 << 20;
/// Window used when walking batch headers (producer state replay).
const HEADER_WALK_WINDOW: usize = 64 << 10;

/// Bytes a fetch of `max_bytes` reads from a segment file at once: its bytes
/// plus room for the header of the batch after them, which tells the walk in
/// `read_from` to stop. Without that room, a 1 MiB fetch whose batches ended
/// within a header of the window's end read the file twice more (a window
/// from that header, then the answer again).
fn fetch_window(max_bytes: usize) -> usize {
    max_bytes.min(MAX_FETCH_WINDOW).saturating_add(HEADER_LEN)
}

/// A range of a segment file holding whole batches, to be sent to a socket
/// without a copy through user space (`runtime::splice`). The fd keeps the
/// file readable even if the segment is deleted meanwhile.
#[derive(Clone)]
pub struct FileRange {
    pub fd: std::sync::Arc<std::os::fd::OwnedFd>,
    pub pos: u64,
    pub len: usize,
    /// The offset after the range's last batch.
    pub end_offset: i64,
}

/// Records read for a fetch: in memory (cache, active segment, small reads),
/// or a file range of a rolled segment.
pub enum FetchRecords {
    Mem(Bytes),
    File(FileRange),
}

impl FetchRecords {
    pub fn len(&self) -> usize {
        match self {
            FetchRecords::Mem(b) => b.len(),
            FetchRecords::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cached span of a segment file used to parse successive batch headers with few reads.
pub(crate) struct Window<'a> {
    file: &'a SegFile,
    limit: u64,
    start: u64,
    data: Bytes,
    chunk: usize,
}

impl<'a> Window<'a> {
    pub fn new(file: &'a SegFile, limit: u64, chunk: usize) -> Window<'a> {
        Window {
            file,
            limit,
            start: 0,
            data: Bytes::new(),
            chunk,
        }
    }

    /// `len` bytes at `pos`, reading more of the file if the window does not hold them.
    /// Returns fewer bytes only if the file (or `limit`) ends first.
    pub async fn get(&mut self, pos: u64, len: usize) -> Result<Bytes> {
        let end = self.start + self.data.len() as u64;
        if pos < self.start || pos + len as u64 > end {
            let want = (len.max(self.chunk) as u64).min(self.limit.saturating_sub(pos));
            self.data = self.file.read(pos, want as usize).await?;
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        let take = len.min(self.data.len() - off);
        Ok(self.data.slice(off..off + take))
    }

    /// The batch header at `pos`, with the batch's whole size; None if no valid header is there.
    pub async fn header(&mut self, pos: u64) -> Result<Option<(BatchHeader, usize)>> {
        let b = self.get(pos, HEADER_LEN).await?;
        let Some(h) = BatchHeader::parse(&b) else {
            return Ok(None);
        };
        match h.total_size() {
            Some(size) if h.magic == 2 && pos + size as u64 <= self.limit => Ok(Some((h, size))),
            _ => Ok(None),
        }
    }
}

pub(crate) fn corrupt_at(seg: &Segment, pos: u64) -> StorageError {
    StorageError::Io(format!(
        "no valid batch header at position {pos} of {}",
        seg.file.path().display()
    ))
}

impl Segment {
    /// File position of the batch holding `offset` (or the first batch after it), None if the
    /// segment ends before.
    pub async fn locate(&self, offset: i64) -> Result<Option<u64>> {
        Ok(self.locate_batch(offset).await?.map(|(pos, _, _)| pos))
    }

    /// As [`Segment::locate`], with the size and last offset of the batch found.
    pub async fn locate_batch(&self, offset: i64) -> Result<Option<(u64, usize, i64)>> {
        let (mut pos, size) = {
            let st = self.st.borrow();
            let r = rel(self.base_offset, offset.max(self.base_offset));
            (u64::from(st.index.lookup(r).1), st.size)
        };
        let mut w = Window::new(&self.file, size, LOCATE_WINDOW);
        while pos < size {
            let (h, n) = w.header(pos).await?.ok_or_else(|| corrupt_at(self, pos))?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, n, h.last_offset())));
            }
            pos += n as u64;
        }
        Ok(None)
    }

    /// The whole batches from `pos` (where a batch of `first_len` bytes, ending
    /// at offset `first_last`, starts)
    /// that fit in `max_bytes` and end by `safe_end`, as a range of the file to
    /// splice, without reading them: the range ends at the last offset-index
    /// entry (a batch start) within both limits, or at the end of the segment
    /// when `safe_end` is its size. The first batch is always included
    /// (KIP-74) if it ends by `safe_end`. The caller checks that the range is
    /// below the fetch bound. None if the range is under `min_len` or the
    /// file cannot be opened for splicing.
    pub fn file_range(
        &self,
        pos: u64,
        (first_len, first_last): (usize, i64),
        max_bytes: usize,
        min_len: usize,
        safe_end: u64,
    ) -> Option<FileRange> {
        let (end, end_offset) = {
            let st = self.st.borrow();
            let safe_end = safe_end.min(st.size);
            let limit = pos.saturating_add(max_bytes as u64);
            let first_end = pos + first_len as u64;
            if first_end > safe_end {
                return None;
            }
            if limit >= st.size && safe_end == st.size {
                (st.size, st.next_offset)
            } else {
                let cap = limit.min(safe_end);
                let i = st
                    .index
                    .entries
                    .partition_point(|&(_, p)| u64::from(p) <= cap);
                // An entry's offset is that of the batch starting there.
                match i.checked_sub(1).and_then(|i| st.index.entries.get(i)) {
                    Some(&(r, p)) if u64::from(p) > first_end => {
                        (u64::from(p), self.base_offset + i64::from(r))
                    }
                    _ => (first_end, first_last + 1),
                }
            }
        };
        let len = usize::try_from(end.checked_sub(pos)?).ok()?;
        if len < min_len.max(1) {
            return None;
        }
        let fd = self
            .splice_fd
            .get_or_init(|| match self.file.reopen_for_splice() {
                Ok(fd) => {
                    // No read-ahead: in direct mode the active segment's last
                    // block is rewritten by O_DIRECT appends, and a page read
                    // ahead of the range could be cached while that happens.
                    let _ = nix::fcntl::posix_fadvise(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        0,
                        0,
                        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
                    );
                    Some(std::sync::Arc::new(fd))
                }
                Err(e) => {
                    tracing::warn!(file = %self.file.path().display(), error = %e,
                        "cannot reopen segment for splicing; its reads are copied");
                    None
                }
            })
            .clone()?;
        Some(FileRange {
            fd,
            pos,
            len,
            end_offset,
        })
    }

    /// Whole batches from `pos`: the first one always (if its base offset is below
    /// `max_offset_exclusive`), then more while the total stays within `max_bytes`;
    /// with the offset after the last of them (`i64::MIN` when there are none).
    pub async fn read_from(
        &self,
        pos: u64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<(Bytes, i64)> {
        let size = self.size();
        let mut w = Window::new(&self.file, size, fetch_window(max_bytes));
        let mut end = pos;
        let mut next = i64::MIN;
        while end < size {
            let (h, n) = w.header(end).await?.ok_or_else(|| corrupt_at(self, end))?;
            if h.base_offset >= max_offset_exclusive {
                break;
            }
            if end > pos && (end - pos) as usize + n > max_bytes {
                break;
            }
            end += n as u64;
            next = h.last_offset() + 1;
        }
        if end == pos {
            return Ok((Bytes::new(), next));
        }
        let len = (end - pos) as usize;
        let data = w.get(pos, len).await?;
        if data.len() != len {
            return Err(StorageError::Io(format!(
                "short read of {} at {pos}",
                self.file.path().display()
            )));
        }
        Ok((data, next))
    }

    /// Calls `f` on the header of every batch from the one holding `from` (or the first after
    /// it) to the end of the segment, with the whole batch for control batches (transaction
    /// markers, a few dozen bytes). Reads no other record bodies.
    pub async fn for_each_header(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader, Option<&[u8]>),
    ) -> Result<()> {
        let Some(mut pos) = self.locate(from).await? else {
            return Ok(());
        };
        let size = self.size();
        let mut w = Window::new(&self.file, size, HEADER_WALK_WINDOW);
        while pos < size {
            let (h, n) = w.header(pos).await?.ok_or_else(|| corrupt_at(self, pos))?;
            if h.attributes & ATTR_CONTROL != 0 {
                let b = w.get(pos, n).await?;
                f(&h, Some(&b));
            } else {
                f(&h, None);
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// The headers of the segment's first and last batches (None when it is empty): the last
    /// found by a walk from the last offset-index entry, so at most an index interval of
    /// headers is read.
    pub async fn first_and_last_headers(&self) -> Result<Option<(BatchHeader, BatchHeader)>> {
        let (mut pos, size) = {
            let st = self.st.borrow();
            let last_entry = st.index.entries.last().map_or(0, |&(_, p)| u64::from(p));
            (last_entry, st.size)
        };
        if size == 0 {
            return Ok(None);
        }
        let mut w = Window::new(&self.file, size, LOCATE_WINDOW);
        let (first, _) = w.header(0).await?.ok_or_else(|| corrupt_at(self, 0))?;
        let mut last = first;
        while pos < size {
            let (h, n) = w.header(pos).await?.ok_or_else(|| corrupt_at(self, pos))?;
            last = h;
            pos += n as u64;
        }
        Ok(Some((first, last)))
    }

    /// The first record with timestamp >= `ts` in this segment, as (offset, timestamp).
    pub async fn find_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let (entry, size) = {
            let st = self.st.borrow();
            (st.time_index.lookup(ts), st.size)
        };
        let Some((_, r)) = entry else {
            return Ok(None);
        };
        let Some(mut pos) = self.locate(self.base_offset + i64::from(r)).await? else {
            return Ok(None);
        };
        let mut w = Window::new(&self.file, size, LOCATE_WINDOW);
        while pos < size {
            let (h, n) = w.header(pos).await?.ok_or_else(|| corrupt_at(self, pos))?;
            if h.max_timestamp >= ts {
                let batch = w.get(pos, n).await?;
                if let Some(found) = first_record_at_or_after(&batch, &h, ts)? {
                    return Ok(Some(found));
                }
            }
            pos += n as u64;
        }
        Ok(None)
    }
}

/// Decodes a batch's records to find the first with timestamp >= `ts`.
fn first_record_at_or_after(batch: &[u8], h: &BatchHeader, ts: i64) -> Result<Option<(i64, i64)>> {
    if h.attributes & ATTR_LOG_APPEND_TIME != 0 {
        return Ok((h.max_timestamp >= ts).then_some((h.base_offset, h.max_timestamp)));
    }
    let mut found = None;
    for_each_record(batch, |r| {
        let t = h.base_timestamp.saturating_add(r.timestamp_delta);
        if t >= ts {
            found = Some((h.base_offset + i64::from(r.offset_delta), t));
            false
        } else {
            true
        }
    })?;
    Ok(found)
}
