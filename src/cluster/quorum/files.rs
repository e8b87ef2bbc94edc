//! File helpers of the quorum's storage: the directory lock, atomic replacement of a small file
//! (temp file, fsync, rename, fsync of the directory), and reading a file made of a magic number
//! and one checked frame (the vote file, the snapshot file).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::codec::{self, DecodeError};

/// Name of the lock file that keeps a second quorum off a directory.
pub const LOCK_FILE: &str = "quorum.lock";
/// Suffix of the temp files of atomic replacements (left over only by a crash).
pub const TMP_SUFFIX: &str = ".tmp";
/// Length of every file's magic number.
pub const MAGIC_BYTES: usize = 8;

/// Errors of the quorum's storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("quorum dir {0} is in use by another quorum (lock held)")]
    Locked(PathBuf),
}

impl StoreError {
    pub fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn corrupt(path: &Path, reason: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        match e {
            StoreError::Io { source, path } => {
                io::Error::new(source.kind(), format!("{}: {source}", path.display()))
            }
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Holds the exclusive lock of a quorum dir until dropped.
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Creates `dir` if missing and takes its lock.
pub fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DirLock { _lock: lock }),
        Err(_) => Err(StoreError::Locked(dir.to_path_buf())),
    }
}

/// Removes temp files a crash left behind.
pub fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    let listing = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for item in listing {
        let item = item.map_err(|e| StoreError::io(dir, e))?;
        let path = item.path();
        if path.to_string_lossy().ends_with(TMP_SUFFIX) {
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Fsyncs a directory, making a rename or a new file in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Durably replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync dir.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    if let Err(e) = written {
        let _ignored = fs::remove_file(&tmp);
        return Err(StoreError::io(&tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)
}

/// The bytes of a file that is `magic` and one frame holding `payload`.
pub fn framed_file(magic: &[u8; MAGIC_BYTES], payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(MAGIC_BYTES + codec::FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(magic);
    codec::put_frame(&mut out, payload)?;
    Ok(out)
}

/// Checks a file made by [`framed_file`] and returns its payload.
pub fn parse_framed_file<'a>(
    magic: &[u8; MAGIC_BYTES],
    bytes: &'a [u8],
) -> Result<&'a [u8], DecodeError> {
    if bytes.get(..MAGIC_BYTES) != Some(&magic[..]) {
        return Err(DecodeError::Record("bad magic number".into()));
    }
    let rest = &bytes[MAGIC_BYTES..];
    let (payload, used) = codec::take_frame(rest)?;
    if used != rest.len() {
        return Err(DecodeError::Trailing(rest.len() - used));
    }
    Ok(payload)
}

/// Reads a whole file, `None` if it does not exist; refuses one over `max` bytes.
pub fn read_file(path: &Path, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::metadata(path) {
        Ok(m) if m.len() > max => {
            return Err(StoreError::corrupt(
                path,
                format!("{} bytes, over the limit of {max}", m.len()),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}
