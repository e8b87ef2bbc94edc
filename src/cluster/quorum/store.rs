//! The quorum's log and vote storage (openraft's `RaftLogStorage`).
//!
//! - `log`: a magic number, then one frame per record (`codec`): an optional first `Purged`
//!   record (the id of the last purged entry) and the entries in index order. An append writes
//!   the frames at the end of the file and fdatasyncs before openraft hears it is durable. A
//!   truncation cuts the file at the first removed entry (ftruncate, fdatasync). A purge rewrites
//!   the file without the purged entries (temp file, fsync, rename, fsync dir): metadata traffic
//!   is small and a purge follows a snapshot, so the rewrite copies little.
//! - `vote`: the vote and the committed log id, replaced atomically on every change.
//!
//! The entries between two purges are also kept in memory (openraft reads them back to
//! replicate and apply); a snapshot every `snapshot_every_entries` bounds them.
//!
//! At start-up a torn or corrupt tail of the log (a frame cut short, a CRC mismatch) is cut at
//! the last good entry, with a warning; a cut that would drop a committed entry is an error,
//! since that entry was acknowledged as durable.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;

use super::codec::{self, DecodeError, DiskEntry, DiskLogId, DiskState, LogRecord};
use super::files::{self, DirLock, StoreError, MAGIC_BYTES};
use super::types::{Entry, LogId, TypeConfig, Vote};

/// Name of the log file.
pub const LOG_FILE: &str = "log";
/// Name of the vote file (vote and committed log id).
pub const VOTE_FILE: &str = "vote";
/// First bytes of the log file.
pub const LOG_MAGIC: &[u8; MAGIC_BYTES] = b"SLQLOG01";
/// First bytes of the vote file.
pub const VOTE_MAGIC: &[u8; MAGIC_BYTES] = b"SLQVOT01";
/// Largest log file read at start-up.
pub const MAX_LOG_FILE_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Largest vote file read at start-up.
pub const MAX_VOTE_FILE_BYTES: u64 = 4096;

/// Why a log file's bytes are not a valid log.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LogDecodeError {
    #[error("not a quorum log file (bad magic number)")]
    BadMagic,
    #[error("bad frame at byte {offset}, after {entries} good entries: {source}")]
    Tail {
        offset: u64,
        entries: usize,
        source: DecodeError,
    },
    #[error("inconsistent record at byte {offset}: {reason}")]
    Order { offset: u64, reason: String },
}

/// A decoded log file.
#[derive(Debug, Default)]
pub struct ScannedLog {
    pub purged: Option<LogId>,
    /// Each entry and the offset of its frame.
    pub entries: Vec<(Entry, u64)>,
    /// Bytes up to the end of the last good record (the magic number included).
    pub good_len: u64,
    /// The first bad frame, if the file does not end with a good record.
    pub tail: Option<LogDecodeError>,
}

/// Decodes a log file's bytes, for a fuzz target: the number of entries, or the first error.
pub fn check_log_bytes(bytes: &[u8]) -> Result<usize, LogDecodeError> {
    let scanned = scan_log(bytes)?;
    match scanned.tail {
        Some(e) => Err(e),
        None => Ok(scanned.entries.len()),
    }
}

/// Decodes a log file's bytes. Good records then a bad frame: the records and the frame's
/// error in `tail`. Records that decode but are out of order: an error (not a torn write).
pub fn scan_log(bytes: &[u8]) -> Result<ScannedLog, LogDecodeError> {
    let mut out = ScannedLog::default();
    if bytes.len() < MAGIC_BYTES && LOG_MAGIC.starts_with(bytes) {
        // A crash while creating the file: an empty log.
        if !bytes.is_empty() {
            out.tail = Some(LogDecodeError::Tail {
                offset: 0,
                entries: 0,
                source: DecodeError::Truncated {
                    have: bytes.len(),
                    need: MAGIC_BYTES,
                },
            });
        }
        return Ok(out);
    }
    if bytes.get(..MAGIC_BYTES) != Some(&LOG_MAGIC[..]) {
        return Err(LogDecodeError::BadMagic);
    }
    let mut offset = MAGIC_BYTES;
    out.good_len = offset as u64;
    while offset < bytes.len() {
        let at = offset as u64;
        let record = codec::take_frame(&bytes[offset..])
            .and_then(|(payload, used)| Ok((codec::decode::<LogRecord>(payload)?, used)));
        let (record, used) = match record {
            Ok(r) => r,
            Err(source) => {
                out.tail = Some(LogDecodeError::Tail {
                    offset: at,
                    entries: out.entries.len(),
                    source,
                });
                return Ok(out);
            }
        };
        let order = |reason: String| LogDecodeError::Order { offset: at, reason };
        match record {
            LogRecord::Purged(id) => {
                if offset != MAGIC_BYTES {
                    return Err(order("a purge record after the first record".into()));
                }
                out.purged = Some(id.into());
            }
            LogRecord::Entry(disk) => {
                let expected = match (out.entries.last(), &out.purged) {
                    (Some((e, _)), _) => Some(e.log_id.index + 1),
                    (None, Some(p)) => Some(p.index + 1),
                    // The first entry of a log never purged may have any index.
                    (None, None) => None,
                };
                if let Some(expected) = expected.filter(|x| *x != disk.log_id.index) {
                    return Err(order(format!(
                        "entry {} where {expected} was expected",
                        disk.log_id.index
                    )));
                }
                let entry = Entry::try_from(disk).map_err(|e| order(e.to_string()))?;
                out.entries.push((entry, at));
            }
        }
        offset += used;
        out.good_len = offset as u64;
    }
    Ok(out)
}

/// The log and vote storage; clones share it (openraft's log readers are clones).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Length of the log file: where the next append goes.
    len: u64,
    purged: Option<LogId>,
    /// Entries in index order, each with the offset of its frame in the file.
    entries: VecDeque<(Entry, u64)>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    _lock: DirLock,
}

impl LogStore {
    /// Opens (creating if needed) the log and vote files of `dir`, taking its lock.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        let lock = files::lock_dir(dir)?;
        files::remove_temp_files(dir)?;
        let state = read_vote_file(dir)?;
        let path = dir.join(LOG_FILE);
        let bytes = files::read_file(&path, MAX_LOG_FILE_BYTES)?;
        let fresh = bytes.is_none();
        let bytes = bytes.unwrap_or_default();
        let scanned = scan_log(&bytes).map_err(|e| StoreError::corrupt(&path, e))?;
        let committed: Option<LogId> = state.committed.map(LogId::from);
        if let Some(tail) = &scanned.tail {
            let last = scanned.entries.last().map(|(e, _)| e.log_id.index);
            if let Some(c) = &committed {
                let purged = scanned.purged.as_ref().map(|p| p.index);
                if last.is_none_or(|l| l < c.index) && purged < Some(c.index) {
                    return Err(StoreError::corrupt(
                        &path,
                        format!("{tail}; cutting it would drop committed entry {}", c.index),
                    ));
                }
            }
            tracing::warn!(
                "quorum log {}: {tail}; cutting the torn tail at byte {} (last entry {:?})",
                path.display(),
                scanned.good_len,
                last
            );
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let mut len = scanned.good_len;
        if len == 0 {
            file.set_len(0)
                .and_then(|()| file.write_all_at(LOG_MAGIC, 0))
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io(&path, e))?;
            len = MAGIC_BYTES as u64;
            if fresh {
                files::sync_dir(dir)?;
            }
        } else if scanned.tail.is_some() {
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io(&path, e))?;
        }
        let inner = LogInner {
            dir: dir.to_path_buf(),
            path,
            file,
            len,
            purged: scanned.purged,
            entries: scanned.entries.into(),
            vote: state.vote.map(Vote::from),
            committed,
            _lock: lock,
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, LogInner>> {
        self.inner
            .lock()
            .map_err(|_| io::Error::other("quorum log store poisoned by a panic"))
    }

    /// Entries with indexes in `range`.
    pub fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> io::Result<Vec<Entry>> {
        let inner = self.lock()?;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let Some(first) = inner.entries.front().map(|(e, _)| e.log_id.index) else {
            return Ok(Vec::new());
        };
        let skip = start.saturating_sub(first);
        let take = end.saturating_sub(start.max(first));
        Ok(inner
            .entries
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(take).unwrap_or(usize::MAX))
            .map(|(e, _)| e.clone())
            .collect())
    }

    /// The last purged log id and the last log id.
    pub fn log_state(&self) -> io::Result<LogState<TypeConfig>> {
        let inner = self.lock()?;
        let last = inner.entries.back().map(|(e, _)| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or_else(|| inner.purged),
        })
    }

    pub fn vote(&self) -> io::Result<Option<Vote>> {
        Ok(self.lock()?.vote)
    }

    pub fn committed(&self) -> io::Result<Option<LogId>> {
        Ok(self.lock()?.committed)
    }

    /// Durably saves the vote (with the committed log id).
    pub fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        let mut inner = self.lock()?;
        inner.vote = Some(*vote);
        inner.write_vote_file()
    }

    /// Durably saves the committed log id (with the vote).
    pub fn save_committed(&self, committed: Option<LogId>) -> io::Result<()> {
        let mut inner = self.lock()?;
        if inner.committed == committed {
            return Ok(());
        }
        inner.committed = committed;
        inner.write_vote_file()
    }

    /// Appends entries and fdatasyncs them.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let mut inner = self.lock()?;
        let mut buf = Vec::new();
        let mut added = Vec::new();
        let mut next = inner.next_index();
        for entry in entries {
            if let Some(want) = next.filter(|n| *n != entry.log_id.index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "append of entry {} where {want} is next",
                        entry.log_id.index
                    ),
                ));
            }
            next = Some(entry.log_id.index + 1);
            let at = inner.len + buf.len() as u64;
            let bytes = codec::encode(&LogRecord::Entry(DiskEntry::from(&entry)))
                .map_err(io::Error::other)?;
            codec::put_frame(&mut buf, &bytes).map_err(io::Error::other)?;
            added.push((entry, at));
        }
        if added.is_empty() {
            return Ok(());
        }
        let at = inner.len;
        let written = inner
            .file
            .write_all_at(&buf, at)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            // Leave no partial frame behind for a later append to follow.
            let _ignored = inner.file.set_len(at);
            return Err(io::Error::new(
                e.kind(),
                format!("appending to {}: {e}", inner.path.display()),
            ));
        }
        inner.len = at + buf.len() as u64;
        inner.entries.extend(added);
        Ok(())
    }

    /// Removes the entries after `last` (all of them for `None`).
    pub fn truncate_after(&self, last: Option<LogId>) -> io::Result<()> {
        let mut inner = self.lock()?;
        let keep_upto = last.map(|l| l.index);
        let cut = inner
            .entries
            .iter()
            .position(|(e, _)| keep_upto.is_none_or(|k| e.log_id.index > k));
        let Some(pos) = cut else {
            return Ok(());
        };
        let at = inner.entries[pos].1;
        inner
            .file
            .set_len(at)
            .and_then(|()| inner.file.sync_data())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("truncating {}: {e}", inner.path.display()),
                )
            })?;
        inner.len = at;
        inner.entries.truncate(pos);
        Ok(())
    }

    /// Removes the entries up to `upto`, inclusive, by rewriting the log file.
    pub fn purge(&self, upto: LogId) -> io::Result<()> {
        let mut inner = self.lock()?;
        if inner.purged.as_ref().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let mut kept: VecDeque<(Entry, u64)> = inner
            .entries
            .iter()
            .filter(|(e, _)| e.log_id.index > upto.index)
            .cloned()
            .collect();
        let mut buf = LOG_MAGIC.to_vec();
        let purged =
            codec::encode(&LogRecord::Purged(DiskLogId::from(&upto))).map_err(io::Error::other)?;
        codec::put_frame(&mut buf, &purged).map_err(io::Error::other)?;
        for (entry, offset) in kept.iter_mut() {
            *offset = buf.len() as u64;
            let bytes = codec::encode(&LogRecord::Entry(DiskEntry::from(&*entry)))
                .map_err(io::Error::other)?;
            codec::put_frame(&mut buf, &bytes).map_err(io::Error::other)?;
        }
        let dir = inner.dir.clone();
        files::replace_file(&dir, LOG_FILE, &buf)?;
        let path = inner.path.clone();
        inner.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("reopening {}: {e}", path.display())))?;
        inner.len = buf.len() as u64;
        inner.entries = kept;
        inner.purged = Some(upto);
        Ok(())
    }
}

impl LogInner {
    /// The index the next append must start at; `None` (any) for a log never written to.
    fn next_index(&self) -> Option<u64> {
        match (self.entries.back(), &self.purged) {
            (Some((e, _)), _) => Some(e.log_id.index + 1),
            (None, Some(p)) => Some(p.index + 1),
            (None, None) => None,
        }
    }

    fn write_vote_file(&self) -> io::Result<()> {
        let state = DiskState {
            vote: self.vote.as_ref().map(Into::into),
            committed: self.committed.as_ref().map(Into::into),
        };
        let bytes = codec::encode(&state)
            .and_then(|p| files::framed_file(VOTE_MAGIC, &p))
            .map_err(io::Error::other)?;
        files::replace_file(&self.dir, VOTE_FILE, &bytes)?;
        Ok(())
    }
}

fn read_vote_file(dir: &Path) -> Result<DiskState, StoreError> {
    let path = dir.join(VOTE_FILE);
    let Some(bytes) = files::read_file(&path, MAX_VOTE_FILE_BYTES)? else {
        return Ok(DiskState::default());
    };
    files::parse_framed_file(VOTE_MAGIC, &bytes)
        .and_then(codec::decode::<DiskState>)
        .map_err(|e| StoreError::corrupt(&path, e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.entries(range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.vote()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        self.log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        LogStore::save_vote(self, vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        LogStore::save_committed(self, committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.committed()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match LogStore::append(self, entries) {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        LogStore::truncate_after(self, last_log_id)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        LogStore::purge(self, log_id)
    }
}
