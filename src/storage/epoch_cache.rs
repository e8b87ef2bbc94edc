//! The leader epoch cache of a partition (Kafka's `LeaderEpochFileCache`): for each leader epoch
//! that wrote to the log, the offset of its first batch, ascending in both. A follower asks the
//! leader where its own latest epoch ended (OffsetsForLeaderEpoch, `end_offset_for`) and truncates
//! what it holds beyond that: the entries are what makes replicas converge after a leader change.
//!
//! Kept in the partition dir as `leader-epoch-checkpoint`, a small text file (ours, Kafka's lines
//! plus a version and a checksum):
//!
//! ```text
//! version 1
//! <entry count>
//! <epoch> <start offset>      (one line per entry, ascending)
//! crc32c <8 lowercase hex digits: CRC-32C of every byte before this line>
//! ```
//!
//! Numbers are written in canonical decimal; anything else (another version, a count that does
//! not match, entries not strictly ascending in both epoch and start offset, negative values, a
//! wrong checksum) makes the file unreadable, and the log rebuilds the cache from its batch
//! headers (`log_epochs.rs`). The file changes only when an epoch starts, on truncation and when
//! the log start passes an entry; each change rewrites it atomically (temporary file, fdatasync,
//! rename, directory fsync).

use std::path::Path;

use super::error::Result;
use super::file::{sync_dir, write_file_atomic};

/// File name of the checkpoint in the partition dir.
pub(crate) const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
/// Epoch and offset Kafka answers for an epoch it knows nothing of (UNDEFINED_EPOCH and
/// UNDEFINED_EPOCH_OFFSET).
pub(crate) const UNDEFINED: (i32, i64) = (-1, -1);
const VERSION_LINE: &str = "version 1";
const CRC_PREFIX: &str = "crc32c ";

/// One leader epoch and the offset of the first batch it wrote (or the log end when it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The entries, strictly ascending in epoch and in start offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Whether `assign(epoch, _)` would add an entry (the append path asks first, to skip the
    /// work in the usual case).
    pub fn is_new(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest().is_none_or(|l| epoch > l.epoch)
    }

    /// Adds `(epoch, start_offset)` when `epoch` is above every known epoch; returns whether the
    /// cache changed. Negative values are ignored (batches of old formats carry epoch -1). As in
    /// Kafka, entries starting at or after `start_offset` are dropped first, so start offsets
    /// stay strictly ascending (an epoch that wrote nothing is superseded by the next one).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if start_offset < 0 || !self.is_new(epoch) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's OffsetsForLeaderEpoch answer (`LeaderEpochFileCache.endOffsetFor`) for
    /// `requested`: the latest epoch ends at `log_end`; an older one ends where the first epoch
    /// above it starts, reported with the largest known epoch at or below it (itself when none
    /// is known below it); an epoch above every known one, or an empty cache, gives (-1, -1).
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested < 0 {
            return UNDEFINED;
        }
        if self.latest().is_some_and(|l| l.epoch == requested) {
            return (requested, log_end);
        }
        let i = self.entries.partition_point(|e| e.epoch <= requested);
        match self.entries.get(i) {
            None => UNDEFINED,
            Some(higher) => {
                let epoch = i
                    .checked_sub(1)
                    .and_then(|j| self.entries.get(j))
                    .map_or(requested, |e| e.epoch);
                (epoch, higher.start_offset)
            }
        }
    }

    /// The log was truncated to end at `end`: entries starting at or after it go. Returns
    /// whether the cache changed.
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        self.entries.len() != before
    }

    /// The log now starts at `start`: entries wholly below it go, and the one it falls in
    /// starts there. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start: i64) -> bool {
        let below = self.entries.partition_point(|e| e.start_offset <= start);
        if below == 0 || (below == 1 && self.entries[0].start_offset == start) {
            return false;
        }
        self.entries.drain(..below - 1);
        self.entries[0].start_offset = start;
        true
    }

    /// Forgets every entry; returns whether there were any.
    pub fn clear(&mut self) -> bool {
        let had = !self.entries.is_empty();
        self.entries.clear();
        had
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{VERSION_LINE}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        let crc = crc32c::crc32c(s.as_bytes());
        s.push_str(&format!("{CRC_PREFIX}{crc:08x}\n"));
        s.into_bytes()
    }

    /// Decodes a checkpoint file; the error says what is wrong with it.
    pub fn decode(b: &[u8]) -> std::result::Result<EpochCache, String> {
        let text = std::str::from_utf8(b).map_err(|_| "not UTF-8 text".to_string())?;
        let body_and_crc = text
            .strip_suffix('\n')
            .ok_or_else(|| "does not end with a newline".to_string())?;
        let crc_at = body_and_crc.rfind('\n').map_or(0, |i| i + 1);
        let (body, crc_line) = body_and_crc.split_at(crc_at);
        let stored = crc_line
            .strip_prefix(CRC_PREFIX)
            .filter(|h| h.len() == 8 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| "no checksum line at the end".to_string())?;
        let computed = crc32c::crc32c(body.as_bytes());
        if stored != computed {
            return Err(format!(
                "CRC-32C mismatch: stored {stored:08x}, computed {computed:08x}"
            ));
        }
        // Lines end at '\n' only: a '\r' before it is not ours, and would not encode back.
        let mut lines = body.split_terminator('\n');
        if lines.next() != Some(VERSION_LINE) {
            return Err(format!("first line is not `{VERSION_LINE}`"));
        }
        let count = lines
            .next()
            .and_then(canonical::<usize>)
            .ok_or_else(|| "no entry count".to_string())?;
        let mut c = EpochCache::default();
        for (i, line) in lines.enumerate() {
            let entry = line.split_once(' ').and_then(|(e, o)| {
                Some(EpochEntry {
                    epoch: canonical::<i32>(e).filter(|&e| e >= 0)?,
                    start_offset: canonical::<i64>(o).filter(|&o| o >= 0)?,
                })
            });
            let Some(entry) = entry else {
                return Err(format!(
                    "entry {i} is not `<epoch> <start offset>`: {line:?}"
                ));
            };
            if let Some(prev) = c.latest() {
                if entry.epoch <= prev.epoch || entry.start_offset <= prev.start_offset {
                    return Err(format!(
                        "entry {i} ({} {}) does not follow ({} {}) in ascending order",
                        entry.epoch, entry.start_offset, prev.epoch, prev.start_offset
                    ));
                }
            }
            c.entries.push(entry);
        }
        if c.entries.len() != count {
            return Err(format!(
                "{} entries where the count says {count}",
                c.entries.len()
            ));
        }
        Ok(c)
    }
}

/// A number written exactly as `to_string` writes it (so a decoded file encodes back to itself).
fn canonical<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let v: T = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

/// Reads the checkpoint: None when there is none, `Some(Err(why))` when it is unreadable.
pub(crate) async fn load(dir: &Path) -> Result<Option<std::result::Result<EpochCache, String>>> {
    let Some(b) = super::file::read_small_file(&dir.join(EPOCH_CHECKPOINT)).await? else {
        return Ok(None);
    };
    Ok(Some(EpochCache::decode(&b)))
}

/// Replaces the checkpoint with `data` (an encoded cache), durably: atomic write, then a
/// directory fsync for the rename.
pub(crate) async fn store(dir: &Path, data: Vec<u8>) -> Result<()> {
    write_file_atomic(&dir.join(EPOCH_CHECKPOINT), data).await?;
    sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, o) in pairs {
            assert!(c.assign(e, o), "assign ({e}, {o})");
        }
        c
    }

    fn pairs(c: &EpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_only_newer_epochs_and_ascending_starts() {
        let mut c = cache(&[(0, 0), (2, 100)]);
        assert!(!c.assign(2, 150), "the current epoch");
        assert!(!c.assign(1, 150), "an older epoch");
        assert!(!c.assign(-1, 150));
        assert!(!c.assign(3, -1));
        // An epoch that wrote nothing (5 at 200) is superseded by the next one at the same start.
        assert!(c.assign(5, 200));
        assert!(c.assign(6, 200));
        assert_eq!(pairs(&c), vec![(0, 0), (2, 100), (6, 200)]);
        // A start below the latest ones drops them (Kafka's non-monotonic truncation).
        assert!(c.assign(7, 100));
        assert_eq!(pairs(&c), vec![(0, 0), (7, 100)]);
        assert!(c.is_new(8) && !c.is_new(7) && !c.is_new(-3));
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (3, 100), (5, 250)]);
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(5, 300), (5, 300));
        // A known older epoch ends where the next starts.
        assert_eq!(c.end_offset_for(3, 300), (3, 250));
        assert_eq!(c.end_offset_for(1, 300), (1, 100));
        // An unknown epoch between known ones: the largest known below it, and the next start.
        assert_eq!(c.end_offset_for(4, 300), (3, 250));
        assert_eq!(c.end_offset_for(2, 300), (1, 100));
        // Below every known epoch: the epoch itself, ending at the first entry's start.
        assert_eq!(c.end_offset_for(0, 300), (0, 0));
        // Above every known epoch, undefined, or an empty cache.
        assert_eq!(c.end_offset_for(6, 300), UNDEFINED);
        assert_eq!(c.end_offset_for(-1, 300), UNDEFINED);
        assert_eq!(EpochCache::default().end_offset_for(0, 10), UNDEFINED);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(0, 0), (1, 50), (2, 100)]);
        assert!(!c.truncate_from_end(101));
        assert!(c.truncate_from_end(100));
        assert_eq!(pairs(&c), vec![(0, 0), (1, 50)]);
        let mut c = cache(&[(0, 0), (1, 50), (2, 100)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(60));
        assert_eq!(pairs(&c), vec![(1, 60), (2, 100)]);
        assert!(!c.truncate_from_start(60));
        assert!(c.truncate_from_start(100));
        assert_eq!(pairs(&c), vec![(2, 100)]);
        assert!(c.truncate_from_start(500));
        assert_eq!(pairs(&c), vec![(2, 500)]);
        assert!(c.clear() && !c.clear());
        assert!(!c.truncate_from_start(5) && !c.truncate_from_end(0));
    }

    #[test]
    fn codec_round_trip_and_refusals() {
        let c = cache(&[(0, 0), (3, 120), (9, 4000)]);
        let b = c.encode();
        let text = String::from_utf8(b.clone()).expect("text");
        assert!(
            text.starts_with("version 1\n3\n0 0\n3 120\n9 4000\ncrc32c "),
            "{text}"
        );
        assert_eq!(EpochCache::decode(&b), Ok(c.clone()));
        assert_eq!(
            EpochCache::decode(&EpochCache::default().encode()),
            Ok(EpochCache::default())
        );
        // Any flipped byte is caught (by the checksum or by the checksum line itself).
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x01;
            assert!(EpochCache::decode(&bad).is_err(), "byte {i} flipped");
        }
        // Well-formed checksums over bad bodies: each refused for its own reason.
        let with_crc = |body: &str| {
            let crc = crc32c::crc32c(body.as_bytes());
            format!("{body}{CRC_PREFIX}{crc:08x}\n").into_bytes()
        };
        for (body, why) in [
            ("version 2\n0\n", "first line"),
            ("version 1\n2\n0 0\n", "count says"),
            ("version 1\n2\n1 5\n1 9\n", "ascending"),
            ("version 1\n2\n1 5\n2 5\n", "ascending"),
            ("version 1\n1\n-1 5\n", "entry 0"),
            ("version 1\n1\n01 5\n", "entry 0"),
            ("version 1\n1\n1  5\n", "entry 0"),
            ("version 1\n", "count"),
        ] {
            let got = EpochCache::decode(&with_crc(body));
            assert!(
                got.as_ref().is_err_and(|e| e.contains(why)),
                "{body:?}: {got:?}"
            );
        }
        assert!(EpochCache::decode(b"").is_err());
        assert!(EpochCache::decode(b"\n").is_err());
    }

    #[test]
    fn a_carriage_return_in_a_line_is_refused() {
        let good = cache(&[(0, 0), (1, 4)]).encode();
        let text = String::from_utf8(good).unwrap();
        let body = text.replacen("1 4\n", "1 4\r\n", 1);
        let body = &body[..body.rfind(CRC_PREFIX).unwrap()];
        let crc = crc32c::crc32c(body.as_bytes());
        let forged = format!("{body}{CRC_PREFIX}{crc:08x}\n");
        assert!(EpochCache::decode(forged.as_bytes()).is_err());
    }
}
