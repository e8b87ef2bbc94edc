//! Reads of a `PartitionLog`: fetches (whole batches from the one holding an offset, from the
//! recent-batch cache, a read-ahead window, or the segment files, in memory or as a file range to
//! splice) and timestamp lookups. A read that a truncation overlapped (`log_truncate.rs`) is read
//! again: what it read may be gone.

use std::rc::Rc;

use bytes::Bytes;

use super::error::{Result, StorageError};
use super::log::PartitionLog;
use super::segment::Segment;
use super::segment_read::FetchRecords;

/// Tries of a read that truncations keep overlapping before it fails (`read_records`).
const READ_TRIES: usize = 3;

impl PartitionLog {
    /// Whole batches from the one holding `fetch_offset`; see the module docs.
    pub async fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Bytes> {
        match self
            .read_records(fetch_offset, max_bytes, max_offset_exclusive, None)
            .await?
        {
            FetchRecords::Mem(b) => Ok(b),
            // Not asked for (no minimum length given): never returned.
            FetchRecords::File(_) => Err(StorageError::Io("unexpected file range".into())),
        }
    }

    /// As [`PartitionLog::read`], but records read from a segment file that
    /// lies wholly below `max_offset_exclusive` come back as a file range to
    /// splice when they are at least `splice_min` bytes (`None`: always in
    /// memory); see `Segment::file_range`. A read that a truncation overlapped
    /// is read again (what it read may be gone); after `READ_TRIES` such tries
    /// it fails with `LogTruncated`.
    pub async fn read_records(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        splice_min: Option<usize>,
    ) -> Result<FetchRecords> {
        for _ in 0..READ_TRIES {
            let truncations = self.truncations.get();
            let r = self
                .read_records_once(fetch_offset, max_bytes, max_offset_exclusive, splice_min)
                .await;
            if self.truncations.get() == truncations {
                return r;
            }
        }
        Err(StorageError::LogTruncated(format!(
            "reading at offset {fetch_offset}"
        )))
    }

    async fn read_records_once(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        splice_min: Option<usize>,
    ) -> Result<FetchRecords> {
        self.check_open()?;
        let (start, end) = (self.log_start.get(), self.log_end.get());
        if fetch_offset < start || fetch_offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: fetch_offset,
                log_start: start,
                log_end: end,
            });
        }
        if fetch_offset == end || fetch_offset >= max_offset_exclusive {
            return Ok(FetchRecords::Mem(Bytes::new()));
        }
        if let Some(hit) = self
            .recent
            .borrow()
            .read(fetch_offset, max_bytes, max_offset_exclusive)
        {
            return Ok(FetchRecords::Mem(hit));
        }
        let segs = self.segments_snapshot();
        let ahead = {
            let mut v = self.ahead.borrow_mut();
            v.iter()
                .position(|w| w.fits(fetch_offset, max_bytes, max_offset_exclusive, &segs))
                .map(|i| v.remove(i))
        };
        if let Some(w) = ahead {
            if let Some((data, seg, pos, next)) = w.take().await {
                self.read_ahead(
                    &seg,
                    pos + data.len() as u64,
                    next,
                    max_bytes,
                    max_offset_exclusive,
                );
                return Ok(FetchRecords::Mem(data));
            }
        }
        let first = segs
            .partition_point(|s| s.base_offset <= fetch_offset)
            .saturating_sub(1);
        let last = segs.len().saturating_sub(1);
        for (i, seg) in segs.iter().enumerate().skip(first) {
            let Some((pos, first_len, first_last)) = seg.locate_batch(fetch_offset).await? else {
                continue;
            };
            if let Some(min) = splice_min.filter(|_| seg.next_offset() <= max_offset_exclusive) {
                // The active segment's last block is rewritten by the next
                // O_DIRECT append (its unaligned tail): only whole blocks
                // before it are read through the page cache.
                let size = seg.size();
                let safe_end = if i == last && seg.file.is_direct() {
                    size - size % super::file::ALIGN
                } else {
                    size
                };
                if let Some(range) =
                    seg.file_range(pos, (first_len, first_last), max_bytes, min, safe_end)
                {
                    return Ok(FetchRecords::File(range));
                }
            }
            let (data, next) = seg.read_from(pos, max_bytes, max_offset_exclusive).await?;
            if data.len() >= super::readahead::MIN_READ {
                self.read_ahead(
                    seg,
                    pos + data.len() as u64,
                    next,
                    max_bytes,
                    max_offset_exclusive,
                );
            }
            return Ok(FetchRecords::Mem(data));
        }
        Ok(FetchRecords::Mem(Bytes::new()))
    }

    /// Starts reading the window after a segment-file read of a reader
    /// catching up, for its next fetch (`readahead.rs`), beside the windows
    /// of readers at other offsets.
    fn read_ahead(
        &self,
        seg: &Rc<Segment>,
        pos: u64,
        next: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) {
        // Windows ended (taken, failed, expired) or for the same offset, and
        // the oldest beyond the limit, give their budget back (on drop)
        // before the new one asks for it.
        {
            let mut v = self.ahead.borrow_mut();
            v.retain(|w| !w.is_done() && w.offset() != next);
            let over = v.len().saturating_sub(super::readahead::PER_PARTITION - 1);
            v.drain(..over);
        }
        if self.recent.borrow().holds(next) {
            // The cache answers that offset: no disk read is needed.
            return;
        }
        if let Some(w) = super::readahead::start(seg, pos, next, max_bytes, max_offset_exclusive) {
            self.ahead.borrow_mut().push(w);
        }
    }

    /// Earliest record with timestamp >= `timestamp_ms`, as (offset, timestamp). Retried, as
    /// `read_records` is, when a truncation overlaps it.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        for _ in 0..READ_TRIES {
            let truncations = self.truncations.get();
            let r = self.offset_for_timestamp_once(timestamp_ms).await;
            if self.truncations.get() == truncations {
                return r;
            }
        }
        Err(StorageError::LogTruncated(format!(
            "looking up timestamp {timestamp_ms}"
        )))
    }

    async fn offset_for_timestamp_once(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        let start = self.log_start.get();
        for seg in self.segments_snapshot() {
            let Some((max, _)) = seg.max_timestamp() else {
                continue;
            };
            if max < timestamp_ms || seg.next_offset() <= start {
                continue;
            }
            if let Some((off, ts)) = seg.find_timestamp(timestamp_ms).await? {
                if off >= start {
                    return Ok(Some((off, ts)));
                }
            }
        }
        Ok(None)
    }
}
