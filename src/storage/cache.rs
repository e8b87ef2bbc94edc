//! Bounded in-memory copy of a partition's most recent batches, so tailing consumers and
//! followers are served without touching the disk (O_DIRECT reads bypass the page cache).
//! Each partition keeps at most `PER_LOG_BYTES`; all caches of one shard (thread) together aim at
//! `SHARD_BYTES`, a partition evicting its own oldest batches when the shard is over budget.

use std::cell::Cell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Most bytes one partition caches.
const PER_LOG_BYTES: usize = 4 << 20;
/// Target for all caches of one shard.
const SHARD_BYTES: usize = 256 << 20;

thread_local! {
    static SHARD_USED: Cell<usize> = const { Cell::new(0) };
    static HITS: Cell<u64> = const { Cell::new(0) };
    static MISSES: Cell<u64> = const { Cell::new(0) };
}

/// Reads served by this shard's caches and reads that had to go to the
/// segment files since the last call, and the bytes cached now; resets the counts.
pub fn take_counts() -> (u64, u64, usize) {
    (
        HITS.with(|c| c.replace(0)),
        MISSES.with(|c| c.replace(0)),
        SHARD_USED.with(Cell::get),
    )
}

/// One cached batch.
struct Entry {
    base: i64,
    last: i64,
    data: Bytes,
}

/// Recent batches of one partition, contiguous in offsets, oldest first.
#[derive(Default)]
pub(crate) struct RecentBatches {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl RecentBatches {
    /// Adds a batch that directly follows the cached ones (otherwise the cache restarts).
    pub fn push(&mut self, base: i64, last: i64, data: Bytes) {
        if self.entries.back().is_some_and(|e| e.last + 1 != base) {
            self.clear();
        }
        self.bytes += data.len();
        SHARD_USED.with(|u| u.set(u.get() + data.len()));
        self.entries.push_back(Entry { base, last, data });
        while !self.entries.is_empty()
            && (self.bytes > PER_LOG_BYTES || SHARD_USED.with(|u| u.get()) > SHARD_BYTES)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.data.len();
            SHARD_USED.with(|u| u.set(u.get().saturating_sub(e.data.len())));
        }
    }

    /// Forgets the batches that start below `offset` (the cleaner rewrote them on disk).
    pub fn drop_below(&mut self, offset: i64) {
        while self.entries.front().is_some_and(|e| e.base < offset) {
            self.pop_front();
        }
    }

    /// Forgets the batches that end at or after `offset` (the log was truncated there).
    pub fn drop_from(&mut self, offset: i64) {
        while let Some(e) = self.entries.pop_back() {
            if e.last < offset {
                self.entries.push_back(e);
                break;
            }
            self.bytes -= e.data.len();
            SHARD_USED.with(|u| u.set(u.get().saturating_sub(e.data.len())));
        }
    }

    pub fn clear(&mut self) {
        while !self.entries.is_empty() {
            self.pop_front();
        }
    }

    /// Whether a read at `offset` would be served from here (not counted as a read).
    pub fn holds(&self, offset: i64) -> bool {
        self.entries
            .front()
            .is_some_and(|first| offset >= first.base)
    }

    /// Whole batches from the one holding `offset`, as `PartitionLog::read` would return them;
    /// None if `offset` is older than the cache.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset_exclusive: i64) -> Option<Bytes> {
        let hit = self
            .entries
            .front()
            .is_some_and(|first| offset >= first.base);
        let counter = if hit { &HITS } else { &MISSES };
        counter.with(|c| c.set(c.get() + 1));
        if !hit {
            return None;
        }
        let i = self.entries.partition_point(|e| e.last < offset);
        let mut picked = 0usize;
        let mut total = 0usize;
        for e in self.entries.range(i..) {
            if e.base >= max_offset_exclusive || (picked > 0 && total + e.data.len() > max_bytes) {
                break;
            }
            picked += 1;
            total += e.data.len();
        }
        match picked {
            0 => Some(Bytes::new()),
            1 => Some(self.entries[i].data.clone()),
            _ => {
                let mut out = BytesMut::with_capacity(total);
                for e in self.entries.range(i..i + picked) {
                    out.extend_from_slice(&e.data);
                }
                Some(out.freeze())
            }
        }
    }
}

impl Drop for RecentBatches {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_recent_batches_and_bounds_memory() {
        let mut c = RecentBatches::default();
        assert!(c.read(0, 100, i64::MAX).is_none());
        for i in 0..10i64 {
            c.push(i * 2, i * 2 + 1, Bytes::from(vec![i as u8; 10]));
        }
        assert_eq!(c.read(5, 1, i64::MAX).expect("hit"), vec![2u8; 10]);
        let two = c.read(4, 25, i64::MAX).expect("hit");
        assert_eq!(two.len(), 20);
        assert_eq!(c.read(4, 1000, 8).expect("hit").len(), 20);
        assert_eq!(c.read(20, 1000, i64::MAX).expect("end").len(), 0);
        // A gap restarts the cache.
        c.push(100, 100, Bytes::from_static(b"x"));
        assert!(c.read(4, 100, i64::MAX).is_none());
        // Per-partition bound.
        for i in 0..10i64 {
            c.push(101 + i, 101 + i, Bytes::from(vec![0u8; 1 << 20]));
        }
        assert!(c.bytes <= PER_LOG_BYTES);
        assert!(c.read(101, 1, i64::MAX).is_none());
        assert!(c.read(110, 1, i64::MAX).is_some());
        // Truncation drops the batches from the cut on.
        c.drop_from(109);
        assert!(c.read(108, 1, i64::MAX).is_some());
        assert_eq!(c.read(109, 1, i64::MAX), Some(Bytes::new()));
        assert!(c.entries.back().is_some_and(|e| e.last == 108));
        let used = SHARD_USED.with(|u| u.get());
        drop(c);
        assert!(SHARD_USED.with(|u| u.get()) < used);
    }
}
