//! In-memory sparse offset index (`.index`: relative offset u32 BE + position u32 BE) and time
//! index (`.timeindex`: timestamp i64 BE + relative offset u32 BE), with their on-disk encoding.

/// Bytes per `.index` entry.
pub(crate) const INDEX_ENTRY: usize = 8;
/// Bytes per `.timeindex` entry.
pub(crate) const TIME_ENTRY: usize = 12;

/// Sparse offset index of one segment: (relative offset, file position), both increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    pub entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Decodes an `.index` file; None when its size or ordering is inconsistent.
    pub fn decode(b: &[u8]) -> Option<OffsetIndex> {
        if !b.len().is_multiple_of(INDEX_ENTRY) {
            return None;
        }
        let mut entries = Vec::with_capacity(b.len() / INDEX_ENTRY);
        for c in b.chunks_exact(INDEX_ENTRY) {
            let rel = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let pos = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            if let Some(&(pr, pp)) = entries.last() {
                if rel <= pr || pos <= pp {
                    return None;
                }
            }
            entries.push((rel, pos));
        }
        Some(OffsetIndex { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.entries.len() * INDEX_ENTRY);
        for (rel, pos) in &self.entries {
            b.extend_from_slice(&rel.to_be_bytes());
            b.extend_from_slice(&pos.to_be_bytes());
        }
        b
    }

    /// The entry with the largest relative offset <= `rel`, or (0, 0) (the segment start).
    pub fn lookup(&self, rel: u32) -> (u32, u32) {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            (0, 0)
        } else {
            self.entries[i - 1]
        }
    }

    pub fn push(&mut self, rel: u32, pos: u32) {
        self.entries.push((rel, pos));
    }

    pub fn bytes(&self) -> usize {
        self.entries.len() * INDEX_ENTRY
    }
}

/// Time index of one segment: (max timestamp so far, relative last offset of that batch), both
/// increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    pub entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Decodes a `.timeindex` file; None when its size or ordering is inconsistent.
    pub fn decode(b: &[u8]) -> Option<TimeIndex> {
        if !b.len().is_multiple_of(TIME_ENTRY) {
            return None;
        }
        let mut entries = Vec::with_capacity(b.len() / TIME_ENTRY);
        for c in b.chunks_exact(TIME_ENTRY) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            let ts = i64::from_be_bytes(t);
            let rel = u32::from_be_bytes([c[8], c[9], c[10], c[11]]);
            if let Some(&(pt, pr)) = entries.last() {
                if ts <= pt || rel < pr {
                    return None;
                }
            }
            entries.push((ts, rel));
        }
        Some(TimeIndex { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.entries.len() * TIME_ENTRY);
        for (ts, rel) in &self.entries {
            b.extend_from_slice(&ts.to_be_bytes());
            b.extend_from_slice(&rel.to_be_bytes());
        }
        b
    }

    /// Records a batch whose max timestamp is `ts` and last relative offset `rel`, if `ts` is a new max.
    pub fn observe(&mut self, ts: i64, rel: u32) {
        if self.entries.last().is_none_or(|&(t, _)| ts > t) {
            self.entries.push((ts, rel));
        }
    }

    /// First entry whose timestamp >= `ts`.
    pub fn lookup(&self, ts: i64) -> Option<(i64, u32)> {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        self.entries.get(i).copied()
    }

    /// Largest timestamp recorded, with its relative offset.
    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn bytes(&self) -> usize {
        self.entries.len() * TIME_ENTRY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_codec() {
        let mut ix = OffsetIndex::default();
        assert_eq!(ix.lookup(5), (0, 0));
        ix.push(10, 4100);
        ix.push(20, 8300);
        assert_eq!(ix.lookup(9), (0, 0));
        assert_eq!(ix.lookup(10), (10, 4100));
        assert_eq!(ix.lookup(19), (10, 4100));
        assert_eq!(ix.lookup(1000), (20, 8300));
        let enc = ix.encode();
        assert_eq!(enc.len(), 16);
        assert_eq!(OffsetIndex::decode(&enc), Some(ix));
        assert_eq!(OffsetIndex::decode(&enc[..15]), None);
        let mut bad = enc.clone();
        bad[8..16].copy_from_slice(&enc[0..8]);
        assert_eq!(OffsetIndex::decode(&bad), None);
    }

    #[test]
    fn time_index_observe_lookup_and_codec() {
        let mut ti = TimeIndex::default();
        ti.observe(100, 0);
        ti.observe(90, 1);
        ti.observe(200, 5);
        assert_eq!(ti.entries, vec![(100, 0), (200, 5)]);
        assert_eq!(ti.lookup(50), Some((100, 0)));
        assert_eq!(ti.lookup(101), Some((200, 5)));
        assert_eq!(ti.lookup(201), None);
        assert_eq!(TimeIndex::decode(&ti.encode()), Some(ti.clone()));
        assert_eq!(TimeIndex::decode(&[0u8; 13]), None);
    }
}
