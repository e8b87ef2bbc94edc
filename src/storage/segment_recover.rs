//! Opening existing segments: trusting or rebuilding `.index`/`.timeindex`, and the CRC scan that
//! finds the valid prefix of the active segment after an unclean shutdown.

use std::cell::RefCell;
use std::path::Path;

use tracing::{info, warn};

use super::batch::{batch_crc, BatchHeader};
use super::config::IoMode;
use super::error::Result;
use super::file::{read_small_file, SegFile, ALIGN};
use super::index::{OffsetIndex, TimeIndex};
use super::segment::{rel, NotedBatch, SegState, Segment};
use super::segment_read::Window;
use super::txn_index;

/// Read size of the recovery scan.
const SCAN_CHUNK: usize = 1 << 20;

/// Result of a CRC scan.
struct Scan {
    /// End of the last valid batch.
    end: u64,
}

impl Segment {
    /// A segment with no batches yet (new, or found empty on open).
    pub(super) fn empty(dir: &Path, base_offset: i64, file: SegFile) -> Segment {
        Segment {
            base_offset,
            file,
            dir: dir.to_path_buf(),
            st: RefCell::new(SegState {
                next_offset: base_offset,
                ..SegState::default()
            }),
            splice_fd: Default::default(),
            retired: Default::default(),
        }
    }

    /// Loads the `.txnindex` file (missing: no aborted transactions). A torn or invalid tail is
    /// dropped with a warning: the active segment's entries are rebuilt from the log by
    /// `PartitionLog::open`; a sealed segment's file was synced whole when it was sealed.
    pub(super) async fn load_txn_index(&self) -> Result<()> {
        let path = Self::txn_index_path(&self.dir, self.base_offset);
        let Some(b) = read_small_file(&path).await? else {
            return Ok(());
        };
        let (entries, problem) = txn_index::decode(&b);
        if let Some(why) = problem {
            warn!(file = %path.display(), kept = entries.len(), "transaction index: {why}; keeping the entries before it");
        }
        self.st.borrow_mut().aborted = entries;
        Ok(())
    }

    async fn load_indexes(
        dir: &Path,
        base: i64,
    ) -> Result<(Option<OffsetIndex>, Option<TimeIndex>)> {
        let ix = read_small_file(&Self::index_path(dir, base))
            .await?
            .and_then(|b| OffsetIndex::decode(&b));
        let tix = read_small_file(&Self::time_index_path(dir, base))
            .await?
            .and_then(|b| TimeIndex::decode(&b));
        Ok((ix, tix))
    }

    /// Opens a segment that is not the last one. Its indexes are trusted when present and
    /// consistent; otherwise they are rebuilt by a scan (which never truncates a sealed segment).
    pub async fn open_sealed(
        dir: &Path,
        base: i64,
        next_base: i64,
        mode: IoMode,
        interval: usize,
    ) -> Result<Segment> {
        let file = SegFile::open(&Self::log_path(dir, base), mode).await?;
        let size = file.size().await?;
        let seg = Self::empty(dir, base, file);
        let (ix, tix) = Self::load_indexes(dir, base).await?;
        let max_rel = u32::try_from(next_base - base).unwrap_or(u32::MAX);
        let trusted = match (ix, tix) {
            (Some(ix), Some(tix))
                if ix
                    .entries
                    .last()
                    .is_none_or(|&(r, p)| u64::from(p) < size && r < max_rel)
                    && tix.last().is_none_or(|(_, r)| r < max_rel)
                    && (size == 0 || !tix.entries.is_empty()) =>
            {
                Some((ix, tix))
            }
            _ => None,
        };
        match trusted {
            Some((ix, tix)) => {
                let mut st = seg.st.borrow_mut();
                st.index = ix;
                st.time_index = tix;
                st.size = size;
                st.next_offset = next_base;
            }
            None => {
                info!(segment = %seg.file.path().display(), "rebuilding indexes of sealed segment");
                let scan = seg.scan(0, size, interval).await?;
                if scan.end < size {
                    warn!(
                        segment = %seg.file.path().display(),
                        "sealed segment has {} invalid bytes after position {}; ignoring them",
                        size - scan.end,
                        scan.end
                    );
                }
                seg.st.borrow_mut().size = scan.end;
                seg.write_indexes().await?;
            }
        }
        seg.load_txn_index().await?;
        Ok(seg)
    }

    /// Opens the last (active) segment: verifies index entries from the end, CRC-scans from the
    /// last trusted one, truncates a torn tail, and rewrites the indexes if they changed.
    pub async fn open_active(
        dir: &Path,
        base: i64,
        mode: IoMode,
        interval: usize,
    ) -> Result<Segment> {
        let file = SegFile::open(&Self::log_path(dir, base), mode).await?;
        let file_size = file.size().await?;
        let seg = Self::empty(dir, base, file);
        let (ix, tix) = Self::load_indexes(dir, base).await?;
        let loaded = (ix.clone(), tix.clone());
        let (mut ix, tix) = match (ix, tix) {
            (Some(ix), Some(tix)) => (ix, tix),
            _ => (OffsetIndex::default(), TimeIndex::default()),
        };
        // Drop index entries from the end until one points at a valid batch with the right offset.
        let mut start = (0u64, base);
        while let Some(&(r, p)) = ix.entries.last() {
            if seg
                .verify_batch_at(u64::from(p), base + i64::from(r), file_size)
                .await?
            {
                start = (u64::from(p), base + i64::from(r));
                break;
            }
            ix.entries.pop();
        }
        let mut tix = tix;
        tix.entries.retain(|&(_, r)| r < rel(base, start.1));
        {
            let mut st = seg.st.borrow_mut();
            st.index = ix;
            st.time_index = tix;
            st.next_offset = start.1;
            // Bytes since the last entry restart at the scan start (entries stay sparse).
            st.bytes_since_index = 0;
        }
        let scan = seg.scan(start.0, file_size, interval).await?;
        if scan.end < file_size {
            let dropped = file_size - scan.end;
            let junk = seg
                .file
                .read(scan.end, dropped.min(2 * ALIGN) as usize)
                .await?;
            if dropped >= 2 * ALIGN || junk.iter().any(|&b| b != 0) {
                warn!(
                    segment = %seg.file.path().display(),
                    "truncating torn tail: dropped {dropped} bytes after position {}",
                    scan.end
                );
            }
            seg.file.truncate(scan.end).await?;
        }
        let size = scan.end;
        let aligned = size - size % ALIGN;
        let tail = if mode == IoMode::Direct {
            seg.file
                .read(aligned, (size - aligned) as usize)
                .await?
                .to_vec()
        } else {
            Vec::new()
        };
        let first_ts = if size > 0 {
            let mut w = Window::new(&seg.file, size, 4096);
            w.header(0).await?.map(|(h, _)| h.max_timestamp)
        } else {
            None
        };
        {
            let mut st = seg.st.borrow_mut();
            st.size = size;
            st.tail = tail;
            st.first_batch_ts = first_ts;
        }
        let now = {
            let st = seg.st.borrow();
            (Some(st.index.clone()), Some(st.time_index.clone()))
        };
        if now != loaded {
            seg.write_indexes().await?;
        }
        seg.load_txn_index().await?;
        Ok(seg)
    }

    /// Whether a CRC-valid batch with base offset `offset` starts at `pos`.
    async fn verify_batch_at(&self, pos: u64, offset: i64, limit: u64) -> Result<bool> {
        let mut w = Window::new(&self.file, limit, 4096);
        let Some((h, n)) = w.header(pos).await? else {
            return Ok(false);
        };
        if h.base_offset != offset {
            return Ok(false);
        }
        let b = w.get(pos, n).await?;
        Ok(b.len() == n && batch_crc(&b) == h.crc)
    }

    /// CRC-scans batches from `pos` up to `limit`, noting each valid one in the indexes
    /// (whose `next_offset` must hold the expected next offset). Stops at the first invalid batch.
    async fn scan(&self, mut pos: u64, limit: u64, interval: usize) -> Result<Scan> {
        let mut w = Window::new(&self.file, limit, SCAN_CHUNK);
        while pos < limit {
            let Some((h, n)) = w.header(pos).await? else {
                break;
            };
            let expected = self.st.borrow().next_offset;
            if !plausible(&h, expected, self.base_offset) {
                break;
            }
            let b = w.get(pos, n).await?;
            if b.len() != n || batch_crc(&b) != h.crc {
                break;
            }
            let noted = NotedBatch {
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp,
                size: n,
            };
            self.st
                .borrow_mut()
                .note_batch(self.base_offset, pos, &noted, interval);
            pos += n as u64;
        }
        Ok(Scan { end: pos })
    }
}

/// Header checks done before the CRC: offsets move forward and stay addressable in the segment.
fn plausible(h: &BatchHeader, expected_next: i64, seg_base: i64) -> bool {
    h.base_offset >= expected_next
        && h.last_offset_delta >= 0
        && h.records_count >= 0
        && h.last_offset() - seg_base < i64::from(u32::MAX)
}
