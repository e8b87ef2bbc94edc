//! Persistence of the metadata image: one JSON file in the first log dir,
//! replaced atomically (write temp, fsync, rename, fsync dir). Until the Raft
//! metadata log arrives this file is the single node's metadata log.
//!
//! Also the per-directory lock (`.lock`, flock) that keeps a second broker off
//! a data dir that is in use.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::MetadataImage;

/// Name of the metadata file inside the first log dir.
pub const METADATA_FILE: &str = "__sluice_metadata.json";
/// Name of the lock file in every log dir.
pub const LOCK_FILE: &str = ".lock";

/// Loads the image, or `None` for a fresh data dir.
pub fn load(dir: &Path) -> anyhow::Result<Option<MetadataImage>> {
    let path = dir.join(METADATA_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let img = serde_json::from_slice(&bytes)
                .with_context(|| format!("metadata file {} is corrupt", path.display()))?;
            Ok(Some(img))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Durably replaces the image file.
pub fn save(dir: &Path, img: &MetadataImage) -> anyhow::Result<()> {
    let path = dir.join(METADATA_FILE);
    let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(img)?;
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = f.write_all(&bytes);
    if let Err(e) = written {
        // Out of space, typically: leave the old image in place and free what was written.
        let _ignored = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    // A failed fsync takes the dir offline (`storage::log_dirs`): the page cache can no longer
    // be trusted to match the disk.
    synced(dir, f.sync_all(), &tmp)?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    synced(dir, File::open(dir).and_then(|d| d.sync_all()), dir)?;
    Ok(())
}

fn synced(dir: &Path, r: std::io::Result<()>, what: &Path) -> anyhow::Result<()> {
    r.map_err(|e| {
        let msg = format!("syncing {}: {e}", what.display());
        crate::storage::log_dirs::mark_offline(dir, &msg);
        anyhow::anyhow!(msg)
    })
}

/// An exclusive lock on a log dir, held for the life of the broker.
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
    pub path: PathBuf,
}

/// Takes the lock of `dir` (creating the dir), or says which process holds it.
pub fn lock_dir(dir: &Path) -> anyhow::Result<DirLock> {
    fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err(_) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "data dir {} is in use by another broker (pid {}); stop it or choose another --data-dir",
                dir.display(),
                holder.trim()
            );
        }
    };
    lock.set_len(0)?;
    write!(&mut *lock, "{}", std::process::id())?;
    Ok(DirLock { _lock: lock, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let img = MetadataImage {
            cluster_id: "c1".into(),
            ..Default::default()
        };
        save(dir.path(), &img).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().cluster_id, "c1");
        let _held = lock_dir(dir.path()).unwrap();
        let err = match lock_dir(dir.path()) {
            Ok(_) => panic!("second lock must fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("in use"), "{err}");
    }
}
