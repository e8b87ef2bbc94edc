//! The cleaner's files in a partition directory, and recovery from a pass cut short.
//!
//! `cleaner-offset.checkpoint` (written with `write_file_atomic`): the first dirty offset (every
//! offset below it has been through at least one cleaning pass), the earliest time at which a kept
//! tombstone expires, and the recent passes as (end offset, time). A tombstone at offset `o` was
//! first cleaned by the first pass whose end is above `o`; it is removed once
//! `delete.retention.ms` has passed since that pass. Pass times are recorded in this file rather
//! than taken from segment mtimes, which change whenever a segment is rewritten and are not
//! fsynced reliably. Losing the latest checkpoint (crash before its rename) only makes the next
//! pass re-clean the range and record a later time, which keeps tombstones longer, never shorter.
//!
//! Swap protocol of one pass (each group of old segments `[base, end)` becomes one new segment
//! `base`, or nothing when no record survives and `base` is not the log's first segment):
//! 1. write `<base>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned` (and `.txnindex.cleaned`
//!    when the group's segments have aborted-transaction entries); fdatasync; sync dir;
//! 2. commit: write `cleaner-swap` listing every group (atomic rename), sync dir;
//! 3. per group: delete the old segments' files in `[base, end)`, rename the index files, then
//!    the log file, from `.cleaned` to their final names; sync dir;
//! 4. delete `cleaner-swap`, sync dir.
//!
//! `recover` runs first in `PartitionLog::open`: without `cleaner-swap`, every `*.cleaned` file
//! is an uncommitted pass and is deleted (the old segments are intact). With it, each group whose
//! `<base>.log.cleaned` still exists is finished as in step 3 (a group without it was finished
//! already, since its log file is renamed last); groups listed as dropped have their range
//! deleted again, which is idempotent. So a kill at any point leaves the old segments or the new
//! ones, never a mix.

use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::file::{read_small_file, sync_dir, sync_dir_blocking, write_file_atomic};
use super::segment::Segment;

/// Cleaner checkpoint file name.
pub(crate) const CLEANER_CHECKPOINT: &str = "cleaner-offset.checkpoint";
/// Swap manifest: its presence commits a pass.
pub(crate) const SWAP_MANIFEST: &str = "cleaner-swap";
/// Suffix of files written by a pass before it commits.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Bound on the passes remembered in the checkpoint; beyond it the two oldest are merged into the
/// later one (which can only delay tombstone removal).
pub(crate) const MAX_PASSES: usize = 64;

/// The `.cleaned` twin of a segment file path.
pub(crate) fn cleaned_path(final_path: &Path) -> PathBuf {
    let mut p = final_path.as_os_str().to_owned();
    p.push(CLEANED_SUFFIX);
    PathBuf::from(p)
}

/// Persistent state of the cleaner for one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanerCheckpoint {
    /// Offsets below this have been cleaned at least once.
    pub first_dirty: i64,
    /// Earliest time at which a tombstone kept by the last pass may be removed (i64::MAX: none).
    pub tombstone_expiry_ms: i64,
    /// (end offset exclusive, time of the pass), both increasing.
    pub passes: Vec<(i64, i64)>,
}

impl CleanerCheckpoint {
    pub fn new() -> CleanerCheckpoint {
        CleanerCheckpoint {
            first_dirty: 0,
            tombstone_expiry_ms: i64::MAX,
            passes: Vec::new(),
        }
    }

    /// When the record at `offset` was cleaned for the first time; None if it never was.
    pub fn first_cleaned_ms(&self, offset: i64) -> Option<i64> {
        if offset >= self.first_dirty {
            return None;
        }
        let i = self.passes.partition_point(|&(end, _)| end <= offset);
        // Offsets cleaned by passes merged away or forgotten are older than every pass kept.
        Some(self.passes.get(i).map_or(i64::MIN, |&(_, t)| t))
    }

    /// Records a pass that cleaned everything below `end` at `now_ms`, forgetting what no longer
    /// matters: passes whose tombstones have all expired collapse into one.
    pub fn record_pass(&mut self, end: i64, now_ms: i64, delete_retention_ms: i64) {
        if end > self.first_dirty {
            self.first_dirty = end;
            self.passes.push((end, now_ms));
        }
        let expired = self
            .passes
            .iter()
            .take_while(|&&(_, t)| now_ms.saturating_sub(t) > delete_retention_ms)
            .count();
        if expired > 1 {
            let merged = self.passes[expired - 1];
            self.passes.drain(..expired - 1);
            self.passes[0] = merged;
        }
        while self.passes.len() > MAX_PASSES {
            self.passes.remove(0);
        }
    }

    /// The log was truncated to end at `end` (`PartitionLog::truncate_to`): offsets from `end`
    /// on are dirty again (a follower may receive other records for them), and a pass that
    /// cleaned past `end` now counts as having cleaned up to it. Returns whether anything
    /// changed. Kafka's cleaner moves its checkpoint back the same way.
    pub fn truncate_to(&mut self, end: i64) -> bool {
        if self.first_dirty <= end {
            return false;
        }
        self.first_dirty = end;
        let kept = self.passes.partition_point(|&(e, _)| e < end);
        if let Some(&(_, t)) = self.passes.get(kept) {
            self.passes.truncate(kept);
            self.passes.push((end, t));
        }
        true
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut s = format!(
            "version 1\nfirst-dirty {}\ntombstone-expiry {}\n",
            self.first_dirty, self.tombstone_expiry_ms
        );
        for (end, t) in &self.passes {
            s.push_str(&format!("pass {end} {t}\n"));
        }
        s.into_bytes()
    }

    pub(crate) fn decode(b: &[u8]) -> Option<CleanerCheckpoint> {
        let text = std::str::from_utf8(b).ok()?;
        let mut c = CleanerCheckpoint::new();
        let mut lines = text.lines();
        if lines.next()? != "version 1" {
            return None;
        }
        for line in lines {
            let mut parts = line.split_whitespace();
            match (parts.next()?, parts.next(), parts.next()) {
                ("first-dirty", Some(v), None) => c.first_dirty = v.parse().ok()?,
                ("tombstone-expiry", Some(v), None) => c.tombstone_expiry_ms = v.parse().ok()?,
                ("pass", Some(end), Some(t)) => c.passes.push((end.parse().ok()?, t.parse().ok()?)),
                _ => return None,
            }
        }
        Some(c)
    }

    /// Reads the checkpoint; a missing or unreadable one means "nothing cleaned yet" (safe: the
    /// next pass cleans everything and keeps every tombstone for a full delete.retention.ms).
    pub async fn load(dir: &Path) -> Result<CleanerCheckpoint> {
        let Some(b) = read_small_file(&dir.join(CLEANER_CHECKPOINT)).await? else {
            return Ok(CleanerCheckpoint::new());
        };
        match Self::decode(&b) {
            Some(c) => Ok(c),
            None => {
                tracing::warn!(dir = %dir.display(), "unreadable cleaner checkpoint; starting over");
                Ok(CleanerCheckpoint::new())
            }
        }
    }

    pub async fn store(&self, dir: &Path) -> Result<()> {
        write_file_atomic(&dir.join(CLEANER_CHECKPOINT), self.encode()).await?;
        sync_dir(dir).await
    }
}

/// One group of a committed pass: old segments `[base, end)` replaced by the new segment `base`,
/// or by nothing when `dropped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SwapGroup {
    pub base: i64,
    pub end: i64,
    pub dropped: bool,
}

pub(crate) fn encode_manifest(groups: &[SwapGroup]) -> Vec<u8> {
    let mut s = String::from("version 1\n");
    for g in groups {
        let kind = if g.dropped { "drop" } else { "keep" };
        s.push_str(&format!("{kind} {} {}\n", g.base, g.end));
    }
    s.into_bytes()
}

pub(crate) fn decode_manifest(b: &[u8]) -> Option<Vec<SwapGroup>> {
    let text = std::str::from_utf8(b).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "version 1" {
        return None;
    }
    let mut out = Vec::new();
    for line in lines {
        let mut p = line.split_whitespace();
        let dropped = match p.next()? {
            "keep" => false,
            "drop" => true,
            _ => return None,
        };
        let base = p.next()?.parse().ok()?;
        let end = p.next()?.parse().ok()?;
        if p.next().is_some() || end <= base {
            return None;
        }
        out.push(SwapGroup { base, end, dropped });
    }
    Some(out)
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io(format!("removing {}: {e}", p.display()))),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io(format!(
            "renaming {}: {e}",
            from.display()
        ))),
    }
}

/// Base offsets of the `.log` files in `dir`.
fn segment_bases(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(b) = stem.parse() {
                    out.push(b);
                }
            }
        }
    }
    Ok(out)
}

/// Step 3 of the swap protocol for one group, on disk only (idempotent).
pub(crate) fn apply_group(dir: &Path, g: &SwapGroup) -> Result<()> {
    let new_log = cleaned_path(&Segment::log_path(dir, g.base));
    if !g.dropped && !new_log.exists() {
        return Ok(()); // finished already: the log file is renamed last
    }
    // The new `.txnindex` cannot be rebuilt from its segment alone (its entries need the
    // producer state before it), so one already renamed into place is never deleted: without its
    // `.cleaned` twin, `base.txnindex` is either the new one or absent (the new index holds the
    // entries of every old segment of the group, so no old one has entries when it has none).
    let new_txn_pending = cleaned_path(&Segment::txn_index_path(dir, g.base)).exists();
    for b in segment_bases(dir)? {
        if b >= g.base && b < g.end {
            remove_if_exists(&Segment::log_path(dir, b))?;
            remove_if_exists(&Segment::index_path(dir, b))?;
            remove_if_exists(&Segment::time_index_path(dir, b))?;
            if b != g.base || g.dropped || new_txn_pending {
                remove_if_exists(&Segment::txn_index_path(dir, b))?;
            }
        }
    }
    if !g.dropped {
        for p in [
            Segment::index_path(dir, g.base),
            Segment::time_index_path(dir, g.base),
            Segment::txn_index_path(dir, g.base),
            Segment::log_path(dir, g.base),
        ] {
            rename_if_exists(&cleaned_path(&p), &p)?;
        }
    }
    Ok(())
}

/// Deletes every `*.cleaned` file of `dir` (an uncommitted or abandoned pass).
pub(crate) fn remove_cleaned_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(CLEANED_SUFFIX) {
            remove_if_exists(&dir.join(&name))?;
        }
    }
    Ok(())
}

/// Finishes (committed) or rolls back (uncommitted) a cleaning pass interrupted by a crash.
/// Blocking file operations: called from `PartitionLog::open` only.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let manifest = dir.join(SWAP_MANIFEST);
    let groups = match std::fs::read(&manifest) {
        Ok(b) => Some(decode_manifest(&b).ok_or_else(|| {
            StorageError::Io(format!(
                "unreadable cleaner swap manifest {}; refusing to guess which segments are current",
                manifest.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(groups) = &groups {
        tracing::info!(dir = %dir.display(), groups = groups.len(), "finishing an interrupted cleaner swap");
        for g in groups {
            apply_group(dir, g)?;
        }
    }
    remove_cleaned_files(dir)?;
    if groups.is_some() {
        sync_dir_blocking(dir)?;
        remove_if_exists(&manifest)?;
        sync_dir_blocking(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_codec_and_pass_times() {
        let mut c = CleanerCheckpoint::new();
        assert_eq!(c.first_cleaned_ms(0), None);
        c.record_pass(100, 1_000, 10_000);
        c.record_pass(250, 2_000, 10_000);
        c.record_pass(250, 3_000, 10_000); // nothing new: no pass recorded
        assert_eq!(c.first_dirty, 250);
        assert_eq!(c.passes, vec![(100, 1_000), (250, 2_000)]);
        assert_eq!(c.first_cleaned_ms(99), Some(1_000));
        assert_eq!(c.first_cleaned_ms(100), Some(2_000));
        assert_eq!(c.first_cleaned_ms(250), None);
        c.tombstone_expiry_ms = 12_000;
        assert_eq!(CleanerCheckpoint::decode(&c.encode()), Some(c.clone()));
        assert_eq!(CleanerCheckpoint::decode(b"version 2\n"), None);
        // Expired passes collapse into the latest expired one.
        c.record_pass(400, 30_000, 10_000);
        assert_eq!(c.passes, vec![(250, 2_000), (400, 30_000)]);
        assert_eq!(c.first_cleaned_ms(10), Some(2_000));
        for i in 0..100 {
            c.record_pass(500 + i, 30_001 + i, 1 << 40);
        }
        assert_eq!(c.passes.len(), MAX_PASSES);
    }

    #[test]
    fn truncation_makes_offsets_dirty_again() {
        let mut c = CleanerCheckpoint::new();
        c.record_pass(100, 1_000, 1 << 40);
        c.record_pass(250, 2_000, 1 << 40);
        assert!(!c.truncate_to(300), "nothing cleaned past it");
        assert!(c.truncate_to(180));
        assert_eq!(
            (c.first_dirty, c.passes.clone()),
            (180, vec![(100, 1_000), (180, 2_000)])
        );
        assert_eq!(c.first_cleaned_ms(150), Some(2_000));
        assert_eq!(c.first_cleaned_ms(180), None);
        assert!(c.truncate_to(100));
        assert_eq!(c.passes, vec![(100, 1_000)]);
        assert!(c.truncate_to(0));
        assert_eq!((c.first_dirty, c.passes.clone()), (0, vec![(0, 1_000)]));
        assert_eq!(c.first_cleaned_ms(0), None);
    }

    #[test]
    fn manifest_codec() {
        let g = vec![
            SwapGroup {
                base: 0,
                end: 10,
                dropped: false,
            },
            SwapGroup {
                base: 10,
                end: 20,
                dropped: true,
            },
        ];
        assert_eq!(decode_manifest(&encode_manifest(&g)), Some(g));
        assert_eq!(decode_manifest(b"version 1\nkeep 5 5\n"), None);
    }
}
