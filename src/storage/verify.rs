//! Offline consistency check of partition directories (`sluice log verify`). Reads files with
//! plain blocking I/O, never writes, and reports every problem with its file and byte position.
//!
//! Checked per partition: every segment's batches (size field, magic 2, CRC-32C, offsets
//! increasing within and across segments, first batch not below the file name, the last
//! batch complete), `.index` (format, increasing, each entry at a batch start with that
//! offset), `.timeindex` (format, increasing, offsets inside the segment), `.txnindex`,
//! producer `.snapshot` files (format and CRC), the DeleteRecords and cleaner checkpoints, the
//! `leader-epoch-checkpoint` (format, CRC, ascending, within the log, no batch of a later
//! epoch than its latest), and files a crash leaves behind. What recovery repairs by design (a torn tail of the active
//! segment, its stale indexes, leftovers of an interrupted write or cleaning pass) is a
//! warning; everything else is an error.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::batch::{batch_crc, BatchHeader, HEADER_LEN};
use super::compact_files::{CLEANED_SUFFIX, CLEANER_CHECKPOINT, SWAP_MANIFEST};
use super::index::{OffsetIndex, TimeIndex};
use super::log::CLEAN_MARKER;
use super::producer_snapshot;
use super::segment::Segment;
use super::txn_index;
use super::verify_checkpoints::{check_checkpoints, check_epoch_checkpoint, log_start, LogRange};

/// Largest batch the checker reads into memory (a size field above it is corruption).
const BATCH_BYTES_MAX: usize = 256 << 20;

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Byte position in the file, when the finding is about one place.
    pub pos: Option<u64>,
    pub what: String,
    /// Warnings are states recovery repairs by design; they do not fail the check.
    pub warning: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.warning { "WARNING" } else { "ERROR" };
        match self.pos {
            Some(p) => write!(f, "{kind} {} @{p}: {}", self.file.display(), self.what),
            None => write!(f, "{kind} {}: {}", self.file.display(), self.what),
        }
    }
}

/// Totals and findings of a check.
#[derive(Debug, Default)]
pub struct Report {
    pub partitions: usize,
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| !p.warning).count()
    }
    pub fn warnings(&self) -> usize {
        self.problems.iter().filter(|p| p.warning).count()
    }
    pub fn error(&mut self, file: &Path, pos: Option<u64>, what: impl Into<String>) {
        self.push(file, pos, what.into(), false);
    }
    pub fn warn(&mut self, file: &Path, pos: Option<u64>, what: impl Into<String>) {
        self.push(file, pos, what.into(), true);
    }
    fn push(&mut self, file: &Path, pos: Option<u64>, what: String, warning: bool) {
        self.problems.push(Problem {
            file: file.to_path_buf(),
            pos,
            what,
            warning,
        });
    }
}

/// Parses `<20 digits><suffix>` into the offset.
fn parse_stem(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What the batch scan of one segment found.
struct SegScan {
    /// Batch start position -> base offset.
    starts: HashMap<u64, i64>,
    /// Offset after the last valid batch (the segment's base when empty).
    next_offset: i64,
    /// End of the last valid batch.
    end: u64,
    /// Largest partitionLeaderEpoch of its batches (-1 when none).
    max_epoch: i32,
}

/// Checks one partition directory, adding to `report`.
pub fn verify_partition(dir: &Path, report: &mut Report) {
    report.partitions += 1;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return report.error(dir, None, format!("cannot list: {e}")),
    };
    let (mut bases, mut snapshots) = (Vec::new(), Vec::new());
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        if let Some(b) = parse_stem(&name, ".log") {
            bases.push(b);
        } else if let Some(o) = parse_stem(&name, ".snapshot") {
            snapshots.push(o);
        } else if name.ends_with(".tmp") {
            report.warn(
                &path,
                None,
                "leftover of an interrupted write (removed on open)",
            );
        } else if name.ends_with(CLEANED_SUFFIX) || name == SWAP_MANIFEST {
            report.warn(&path, None, "interrupted cleaning pass (finished on open)");
        }
    }
    bases.sort_unstable();
    snapshots.sort_unstable();
    // Compaction leaves offset gaps; a partition it never ran on has none.
    let gaps_allowed = dir.join(CLEANER_CHECKPOINT).exists();
    let clean = dir.join(CLEAN_MARKER).exists();
    let mut expected: Option<i64> = None;
    let mut log_end = bases.first().copied().unwrap_or(0);
    let mut max_epoch = -1;
    let batches_before = report.batches;
    for (i, &base) in bases.iter().enumerate() {
        let active = i + 1 == bases.len();
        let path = Segment::log_path(dir, base);
        report.segments += 1;
        if let Some(exp) = expected {
            if base < exp {
                report.error(&path, None, format!(
                    "segment base offset {base} overlaps the previous segment, which ends at offset {exp}"));
            } else if base > exp && !gaps_allowed {
                report.error(
                    &path,
                    None,
                    format!(
                        "offset gap: previous segment ends at {exp}, this one starts at {base}"
                    ),
                );
            }
        }
        let Some(scan) = scan_segment(&path, base, active && !clean, gaps_allowed, report) else {
            continue;
        };
        check_offset_index(dir, base, &scan, active, report);
        check_time_index(dir, base, &scan, active, report);
        check_txn_index(dir, base, active, report);
        max_epoch = max_epoch.max(scan.max_epoch);
        expected = Some(scan.next_offset);
        log_end = scan.next_offset;
    }
    for o in snapshots {
        let path = producer_snapshot::snapshot_path(dir, o);
        match std::fs::read(&path) {
            Ok(b) => {
                if let Err(e) = producer_snapshot::decode(&b, o) {
                    report.error(&path, None, format!("invalid producer snapshot: {e}"));
                } else if o > log_end {
                    report.warn(
                        &path,
                        None,
                        format!(
                        "snapshot at offset {o} is past the log end {log_end} (ignored on open)"),
                    );
                }
            }
            Err(e) => report.error(&path, None, format!("cannot read: {e}")),
        }
    }
    check_checkpoints(dir, bases.first().copied(), log_end, report);
    let log = LogRange {
        start: log_start(dir, bases.first().copied(), log_end),
        end: log_end,
        has_batches: report.batches > batches_before,
        max_epoch,
        clean,
    };
    check_epoch_checkpoint(dir, &log, report);
}

/// Reads `len` bytes at `pos` (fewer at end of file).
fn read_at(f: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], pos + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

/// Walks every batch of a segment. `may_be_torn`: the active segment after an unclean stop,
/// whose tail recovery truncates (reported as a warning).
fn scan_segment(
    path: &Path,
    base: i64,
    may_be_torn: bool,
    gaps_allowed: bool,
    report: &mut Report,
) -> Option<SegScan> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report.error(path, None, format!("cannot open: {e}"));
            return None;
        }
    };
    let len = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            report.error(path, None, format!("cannot stat: {e}"));
            return None;
        }
    };
    let mut scan = SegScan {
        starts: HashMap::new(),
        next_offset: base,
        end: 0,
        max_epoch: -1,
    };
    let mut pos = 0u64;
    let mut first = true;
    let mut bad: Option<(String, bool)> = None; // (why, reaches end of file)
    while pos < len {
        let head = match read_at(&f, pos, HEADER_LEN) {
            Ok(h) => h,
            Err(e) => {
                report.error(path, Some(pos), format!("read failed: {e}"));
                return None;
            }
        };
        let Some(h) = BatchHeader::parse(&head) else {
            bad = Some((
                format!("{} bytes, less than a batch header", head.len()),
                true,
            ));
            break;
        };
        let Some(size) = h.total_size().filter(|&s| s <= BATCH_BYTES_MAX) else {
            bad = Some((format!("impossible batch length {}", h.batch_length), true));
            break;
        };
        let end = pos + size as u64;
        if end > len {
            bad = Some((
                format!("batch of {size} bytes runs past the end of the file"),
                true,
            ));
            break;
        }
        if h.magic != 2 {
            bad = Some((format!("magic {} (only 2 is stored)", h.magic), end == len));
            break;
        }
        let bytes = match read_at(&f, pos, size) {
            Ok(b) => b,
            Err(e) => {
                report.error(path, Some(pos), format!("read failed: {e}"));
                return None;
            }
        };
        let crc = batch_crc(&bytes);
        if crc != h.crc {
            bad = Some((
                format!(
                    "CRC-32C mismatch: stored {:#010x}, computed {crc:#010x}",
                    h.crc
                ),
                end == len,
            ));
            break;
        }
        if h.last_offset_delta < 0 || h.records_count < 0 {
            report.error(
                path,
                Some(pos),
                format!(
                    "negative last offset delta {} or record count {}",
                    h.last_offset_delta, h.records_count
                ),
            );
        }
        if first && h.base_offset < base {
            report.error(
                path,
                Some(pos),
                format!(
                    "first batch offset {} is below the segment base {base} (file name)",
                    h.base_offset
                ),
            );
        } else if h.base_offset < scan.next_offset {
            report.error(
                path,
                Some(pos),
                format!(
                    "batch offset {} does not increase (expected at least {})",
                    h.base_offset, scan.next_offset
                ),
            );
        } else if h.base_offset > scan.next_offset && !gaps_allowed {
            report.error(
                path,
                Some(pos),
                format!(
                    "offset gap: expected {}, batch starts at {}",
                    scan.next_offset, h.base_offset
                ),
            );
        }
        first = false;
        scan.max_epoch = scan.max_epoch.max(h.leader_epoch);
        scan.starts.insert(pos, h.base_offset);
        scan.next_offset = scan.next_offset.max(h.last_offset() + 1);
        report.batches += 1;
        report.records += u64::try_from(h.records_count).unwrap_or(0);
        pos = end;
        scan.end = end;
    }
    if let Some((why, reaches_end)) = bad {
        let tail = len - pos;
        let zeros = read_at(&f, pos, tail.min(1 << 20) as usize)
            .map(|b| tail <= 1 << 20 && b.iter().all(|&x| x == 0))
            .unwrap_or(false);
        if may_be_torn && zeros {
            report.warn(
                path,
                Some(pos),
                format!(
                "{tail} zero bytes after the last batch (unwritten tail; recovery truncates it)"),
            );
        } else if may_be_torn && reaches_end {
            report.warn(
                path,
                Some(pos),
                format!("torn tail of {tail} bytes ({why}); recovery truncates it"),
            );
        } else {
            report.error(
                path,
                Some(pos),
                format!("{why}; {tail} bytes from here are unreadable"),
            );
        }
    }
    Some(scan)
}

fn check_offset_index(dir: &Path, base: i64, scan: &SegScan, active: bool, report: &mut Report) {
    let path = Segment::index_path(dir, base);
    let b = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !active {
                report.warn(&path, None, "missing (rebuilt on open)");
            }
            return;
        }
        Err(e) => return report.error(&path, None, format!("cannot read: {e}")),
    };
    let Some(ix) = OffsetIndex::decode(&b) else {
        return report.error(
            &path,
            None,
            "size not a multiple of 8, or entries not increasing",
        );
    };
    for (i, &(rel, p)) in ix.entries.iter().enumerate() {
        let at = Some((i * super::index::INDEX_ENTRY) as u64);
        let offset = base + i64::from(rel);
        match scan.starts.get(&u64::from(p)) {
            Some(&o) if o == offset => {}
            Some(&o) => report.error(
                &path,
                at,
                format!(
                "entry (offset {offset}, position {p}) but the batch there starts at offset {o}"),
            ),
            None if active && u64::from(p) >= scan.end => report.warn(
                &path,
                at,
                format!(
                    "entry (offset {offset}, position {p}) past the valid data (dropped on open)"
                ),
            ),
            None => report.error(
                &path,
                at,
                format!("entry (offset {offset}, position {p}) does not point at a batch start"),
            ),
        }
    }
}

fn check_time_index(dir: &Path, base: i64, scan: &SegScan, active: bool, report: &mut Report) {
    let path = Segment::time_index_path(dir, base);
    let b = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return report.error(&path, None, format!("cannot read: {e}")),
    };
    let Some(tix) = TimeIndex::decode(&b) else {
        return report.error(
            &path,
            None,
            "size not a multiple of 12, or entries not increasing",
        );
    };
    for (i, &(ts, rel)) in tix.entries.iter().enumerate() {
        let offset = base + i64::from(rel);
        if offset >= scan.next_offset {
            let at = Some((i * super::index::TIME_ENTRY) as u64);
            let what = format!(
                "entry (timestamp {ts}, offset {offset}) beyond the segment's last offset {}",
                scan.next_offset - 1
            );
            if active {
                report.warn(&path, at, format!("{what} (dropped on open)"));
            } else {
                report.error(&path, at, what);
            }
        }
    }
}

fn check_txn_index(dir: &Path, base: i64, active: bool, report: &mut Report) {
    let path = Segment::txn_index_path(dir, base);
    let b = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return report.error(&path, None, format!("cannot read: {e}")),
    };
    if let (kept, Some(why)) = txn_index::decode(&b) {
        let at = Some((kept.len() * txn_index::ENTRY_BYTES) as u64);
        if active {
            report.warn(&path, at, format!("{why} (rebuilt from the log on open)"));
        } else {
            report.error(&path, at, why);
        }
    }
}
