//! Moving a replica between this broker's log dirs (Kafka's AlterReplicaLogDirs).
//!
//! On the partition's owner shard, in two passes:
//! 1. while the partition keeps serving, its files are copied to `<target>/<name>.move-tmp`
//!    (`name` = `topic-partition`), off the shard;
//! 2. then the partition is closed (requests on it answer NOT_LEADER_OR_FOLLOWER, which
//!    clients retry), the files that changed since pass 1 (size or modification time) are
//!    copied again and every file and the directory are synced; the old directory is
//!    renamed to `<name>.move-old`, the copy renamed to `<name>`, and the old one removed.
//!    The publisher then places the partition in the new dir and the next request reopens
//!    it there (recovery, then its leader or follower role as before).
//!
//! A crash at any step leaves at most one complete `<name>` or a complete copy:
//! [`recover`] runs at start-up before anything opens, and renames a synced
//! `<name>.move-tmp` into place when no `<name>` exists in any dir (the crash came between
//! the two renames), and removes leftovers otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

const TMP: &str = ".move-tmp";
const OLD: &str = ".move-old";
/// Written into a copy once all its files are synced: [`recover`] trusts only those.
const COMPLETE: &str = ".move-complete";

/// (size, modification time) of each file in `dir`, by name.
type Listing = HashMap<String, (u64, Option<SystemTime>)>;

fn listing(dir: &Path) -> std::io::Result<Listing> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        if md.is_file() {
            out.insert(
                e.file_name().to_string_lossy().to_string(),
                (md.len(), md.modified().ok()),
            );
        }
    }
    Ok(out)
}

/// Copies every file of `from` into `to` whose (size, mtime) differs from `copied`, drops
/// files of `to` that `from` no longer has, and returns the new listing of `from`.
/// Blocking.
pub fn copy_changed(from: &Path, to: &Path, copied: &Listing) -> anyhow::Result<Listing> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let now = listing(from).with_context(|| format!("listing {}", from.display()))?;
    for (name, meta) in &now {
        if copied.get(name) == Some(meta) {
            continue;
        }
        let (src, dst) = (from.join(name), to.join(name));
        match std::fs::copy(&src, &dst) {
            Ok(_) => {}
            // Removed since the listing (retention, a segment roll's rename): the next
            // pass sees the directory as it is.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
            }
        }
    }
    for e in std::fs::read_dir(to)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !now.contains_key(&name) {
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(now)
}

/// Syncs every file of `dir`, then marks it complete and syncs the directory. Blocking.
fn seal(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.path().is_file() {
            std::fs::File::open(e.path())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", e.path().display()))?;
        }
    }
    let mark = dir.join(COMPLETE);
    std::fs::write(&mark, b"")
        .and_then(|()| std::fs::File::open(&mark)?.sync_all())
        .with_context(|| format!("writing {}", mark.display()))?;
    crate::storage::sync_dir_blocking(dir).context("syncing the copy's directory")?;
    Ok(())
}

/// The copy's directory for partition dir `name` in `target`.
pub fn tmp_dir(target: &Path, name: &str) -> PathBuf {
    target.join(format!("{name}{TMP}"))
}

/// Pass 1: copies `from` (a live partition dir) into the copy in `target`. Blocking.
pub fn precopy(from: &Path, target: &Path, name: &str) -> anyhow::Result<Listing> {
    let tmp = tmp_dir(target, name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("clearing {}", tmp.display()))?;
    }
    copy_changed(from, &tmp, &HashMap::new())
}

/// Pass 2, with the partition closed: brings the copy up to date, seals it and swaps it in
/// for `from`. Returns the new partition dir. Blocking.
pub fn finish(from: &Path, target: &Path, name: &str, copied: &Listing) -> anyhow::Result<PathBuf> {
    let tmp = tmp_dir(target, name);
    copy_changed(from, &tmp, copied)?;
    seal(&tmp)?;
    let parent = from.parent().map(Path::to_path_buf).unwrap_or_default();
    let old = parent.join(format!("{name}{OLD}"));
    std::fs::rename(from, &old)
        .with_context(|| format!("renaming {} to {}", from.display(), old.display()))?;
    crate::storage::sync_dir_blocking(&parent).context("syncing the old log dir")?;
    let to = target.join(name);
    std::fs::rename(&tmp, &to)
        .with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))?;
    let _ = std::fs::remove_file(to.join(COMPLETE));
    crate::storage::sync_dir_blocking(target).context("syncing the new log dir")?;
    std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    Ok(to)
}

/// Undoes a failed or abandoned move: removes the copy. Blocking; best effort.
pub fn abandon(target: &Path, name: &str) {
    let tmp = tmp_dir(target, name);
    if let Err(e) = std::fs::remove_dir_all(&tmp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %tmp.display(), error = %e, "could not remove an abandoned log dir move");
        }
    }
}

/// Start-up: finishes or clears moves a crash interrupted (see the module docs). Blocking;
/// before any partition opens.
pub fn recover(log_dirs: &[PathBuf]) {
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let exists = |name: &str| log_dirs.iter().any(|d| d.join(name).is_dir());
    for dir in log_dirs {
        for entry in entries(dir) {
            if let Some(name) = entry.strip_suffix(TMP) {
                let tmp = dir.join(&entry);
                if !exists(name) && tmp.join(COMPLETE).is_file() {
                    let to = dir.join(name);
                    match std::fs::rename(&tmp, &to) {
                        Ok(()) => {
                            let _ = std::fs::remove_file(to.join(COMPLETE));
                            let _ = crate::storage::sync_dir_blocking(dir);
                            tracing::warn!(dir = %to.display(), "finished a log dir move a crash interrupted");
                        }
                        Err(e) => {
                            tracing::error!(dir = %tmp.display(), error = %e, "could not finish an interrupted log dir move")
                        }
                    }
                } else {
                    tracing::info!(dir = %tmp.display(), "removing an unfinished log dir move");
                    abandon(dir, name);
                }
            }
        }
    }
    for dir in log_dirs {
        for entry in entries(dir) {
            if let Some(name) = entry.strip_suffix(OLD) {
                let old = dir.join(&entry);
                if exists(name) {
                    if let Err(e) = std::fs::remove_dir_all(&old) {
                        tracing::error!(dir = %old.display(), error = %e, "could not remove a moved log's old copy");
                    }
                } else {
                    // The copy never arrived: the old one is the partition.
                    let _ = std::fs::rename(&old, dir.join(name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn two_passes_copy_what_changed_and_swap() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let from = a.join("t-0");
        std::fs::create_dir_all(&from).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        write(&from.join("0.log"), "sealed");
        write(&from.join("6.log"), "act");
        let copied = precopy(&from, &b, "t-0").unwrap();
        write(&from.join("6.log"), "active, longer");
        write(&from.join("20.log"), "new");
        std::fs::remove_file(from.join("0.log")).unwrap();
        let to = finish(&from, &b, "t-0", &copied).unwrap();
        assert_eq!(to, b.join("t-0"));
        assert!(!from.exists() && !a.join("t-0.move-old").exists());
        assert_eq!(
            std::fs::read_to_string(to.join("6.log")).unwrap(),
            "active, longer"
        );
        assert_eq!(std::fs::read_to_string(to.join("20.log")).unwrap(), "new");
        assert!(!to.join("0.log").exists() && !to.join(COMPLETE).exists());
    }

    #[test]
    fn recovery_keeps_exactly_one_copy() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let dirs = vec![a.clone(), b.clone()];
        // Crash during pass 1: the copy goes, the partition stays.
        std::fs::create_dir_all(a.join("t-0")).unwrap();
        std::fs::create_dir_all(b.join("t-0.move-tmp")).unwrap();
        write(&b.join("t-0.move-tmp").join("0.log"), "partial");
        // Crash between the renames: the sealed copy becomes the partition.
        std::fs::create_dir_all(a.join("u-1.move-old")).unwrap();
        std::fs::create_dir_all(b.join("u-1.move-tmp")).unwrap();
        write(&b.join("u-1.move-tmp").join("0.log"), "whole");
        write(&b.join("u-1.move-tmp").join(COMPLETE), "");
        // Crash after the swap, before the old copy was removed.
        std::fs::create_dir_all(a.join("v-2.move-old")).unwrap();
        std::fs::create_dir_all(b.join("v-2")).unwrap();
        recover(&dirs);
        assert!(a.join("t-0").is_dir() && !b.join("t-0.move-tmp").exists());
        assert_eq!(
            std::fs::read_to_string(b.join("u-1").join("0.log")).unwrap(),
            "whole"
        );
        assert!(!b.join("u-1").join(COMPLETE).exists() && !a.join("u-1.move-old").exists());
        assert!(b.join("v-2").is_dir() && !a.join("v-2.move-old").exists());
    }
}
