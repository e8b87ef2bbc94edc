//! Health of the broker's log dirs (`log.dirs`), shared by every shard, and the classification
//! of disk errors.
//!
//! Two kinds of disk failure are told apart, as Kafka does:
//! - out of space (`ENOSPC`, `EDQUOT`, a short write): the append that met it is rolled back
//!   and answered `KAFKA_STORAGE_ERROR`; nothing else changes, and the next append simply tries
//!   again, so writes resume by themselves once space is freed;
//! - everything else that says the disk cannot be trusted (`EROFS`, `EIO`, `EACCES`, `EPERM`,
//!   `ENODEV`, `ENXIO`, and *any* failed fsync/fdatasync, whatever its errno: after a failed
//!   sync the kernel may already have dropped the dirty pages, so a later sync can succeed over
//!   lost data): the whole log dir goes offline, once, with one error log line. Every partition
//!   in it then answers `KAFKA_STORAGE_ERROR` to produce, fetch and list offsets, Metadata
//!   reports it, and DescribeLogDirs shows the dir with error 56. An offline dir stays offline
//!   until the broker restarts (Kafka does the same: no automatic return of a failed dir).
//!
//! The registry is process-wide (dirs are shared by the shards); the fast path when every dir is
//! healthy is one relaxed atomic load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

/// One configured log dir and, once it failed, why.
#[derive(Clone, Debug)]
pub struct LogDirState {
    pub path: PathBuf,
    /// `Some(reason)` once the dir is offline.
    pub offline: Option<String>,
}

static DIRS: RwLock<Vec<LogDirState>> = RwLock::new(Vec::new());
/// Number of offline dirs (the broker's "offline log dirs" gauge).
static OFFLINE: AtomicUsize = AtomicUsize::new(0);

/// Registers the configured log dirs (at start-up, before any partition opens). Every dir starts
/// online.
pub fn install(dirs: &[PathBuf]) {
    let mut g = DIRS.write().unwrap_or_else(|p| p.into_inner());
    *g = dirs
        .iter()
        .map(|p| LogDirState {
            path: p.clone(),
            offline: None,
        })
        .collect();
    OFFLINE.store(0, Ordering::Relaxed);
}

/// Number of offline log dirs.
pub fn offline_count() -> usize {
    OFFLINE.load(Ordering::Relaxed)
}

/// Every configured log dir and its state, in `log.dirs` order.
pub fn snapshot() -> Vec<LogDirState> {
    DIRS.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Whether the log dir at `index` in `log.dirs` is offline.
pub fn is_offline_index(index: usize) -> bool {
    if offline_count() == 0 {
        return false;
    }
    let g = DIRS.read().unwrap_or_else(|p| p.into_inner());
    g.get(index).is_some_and(|d| d.offline.is_some())
}

/// The reason the log dir holding `path` is offline, if it is.
pub fn offline_reason(path: &Path) -> Option<String> {
    if offline_count() == 0 {
        return None;
    }
    let g = DIRS.read().unwrap_or_else(|p| p.into_inner());
    g.iter()
        .find(|d| path.starts_with(&d.path))
        .and_then(|d| d.offline.clone())
}

/// Takes the log dir holding `path` offline (no-op when it already is, or when `path` is in no
/// registered dir, as in unit tests). Logs one error line per dir.
pub fn mark_offline(path: &Path, reason: &str) {
    let mut g = DIRS.write().unwrap_or_else(|p| p.into_inner());
    let Some(d) = g.iter_mut().find(|d| path.starts_with(&d.path)) else {
        return;
    };
    if d.offline.is_some() {
        return;
    }
    d.offline = Some(reason.to_string());
    let n = OFFLINE.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::error!(
        log_dir = %d.path.display(),
        offline_log_dirs = n,
        "log dir is now OFFLINE after a disk error: {reason}; its partitions answer \
         KAFKA_STORAGE_ERROR until the disk is fixed and the broker restarted"
    );
}

/// What a disk error means for the log dir it happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// Out of space or quota: transient, the failed write is rolled back.
    NoSpace,
    /// The dir cannot be trusted any more: take it offline.
    DirFailed,
    /// Anything else (not found, invalid argument ...): an ordinary error.
    Other,
}

/// Classifies an OS error number.
pub fn classify_errno(errno: Option<i32>) -> DiskFault {
    match errno {
        Some(libc_errno::ENOSPC) | Some(libc_errno::EDQUOT) => DiskFault::NoSpace,
        Some(libc_errno::EROFS)
        | Some(libc_errno::EIO)
        | Some(libc_errno::EACCES)
        | Some(libc_errno::EPERM)
        | Some(libc_errno::ENODEV)
        | Some(libc_errno::ENXIO) => DiskFault::DirFailed,
        _ => DiskFault::Other,
    }
}

/// The errno values used above (Linux), from `nix` so no libc dependency is needed.
mod libc_errno {
    use nix::errno::Errno;
    pub const ENOSPC: i32 = Errno::ENOSPC as i32;
    pub const EDQUOT: i32 = Errno::EDQUOT as i32;
    pub const EROFS: i32 = Errno::EROFS as i32;
    pub const EIO: i32 = Errno::EIO as i32;
    pub const EACCES: i32 = Errno::EACCES as i32;
    pub const EPERM: i32 = Errno::EPERM as i32;
    pub const ENODEV: i32 = Errno::ENODEV as i32;
    pub const ENXIO: i32 = Errno::ENXIO as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errnos() {
        assert_eq!(classify_errno(Some(28)), DiskFault::NoSpace);
        assert_eq!(classify_errno(Some(122)), DiskFault::NoSpace);
        assert_eq!(classify_errno(Some(30)), DiskFault::DirFailed);
        assert_eq!(classify_errno(Some(5)), DiskFault::DirFailed);
        assert_eq!(classify_errno(Some(13)), DiskFault::DirFailed);
        assert_eq!(classify_errno(Some(2)), DiskFault::Other);
        assert_eq!(classify_errno(None), DiskFault::Other);
    }
}
