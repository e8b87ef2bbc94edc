//! The record `sluice tune --apply` keeps of what it changed, so that
//! `--revert` can put back exactly the values that were there before. The
//! file is written before the first change and rewritten after the last, so a
//! crash in between leaves a record that reverts to the original values.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::host::errno_text;
use super::parse;

/// Version of the state file's format.
const VERSION: u32 = 1;

/// Largest state file read back (a few thousand changes at most).
const STATE_BYTES_MAX: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// The setting (`swappiness`, `disk_scheduler` ...).
    pub setting: String,
    /// The kernel file, as on the host (under the state's root).
    pub path: String,
    /// The file's bytes before the first `--apply` that changed it.
    pub before: String,
    /// What `--revert` writes to get `before` back (for a "[selected] list"
    /// file, the selected word; else `before` itself).
    pub restore: String,
    /// What the last `--apply` wrote.
    pub applied: String,
}

impl Change {
    pub fn new(setting: &str, path: &str, before: &str, applied: &str) -> Change {
        let restore = match parse::selected(before) {
            Some(word) if before.contains('[') => format!("{word}\n"),
            _ => before.to_string(),
        };
        Change {
            setting: setting.into(),
            path: path.into(),
            before: before.into(),
            restore,
            applied: applied.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The `--root` the changes were made under.
    pub root: PathBuf,
    pub changes: Vec<Change>,
}

impl State {
    pub fn new(root: &Path) -> State {
        State {
            version: VERSION,
            root: root.to_path_buf(),
            changes: Vec::new(),
        }
    }

    /// The state at `path`, or `None` when there is no file.
    pub fn load(path: &Path) -> Result<Option<State>> {
        use std::io::Read;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut text = String::new();
        f.take(STATE_BYTES_MAX)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        let state: State = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a sluice tune state file", path.display()))?;
        if state.version != VERSION {
            bail!(
                "{}: state format {} (this sluice reads {VERSION})",
                path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    /// Records a change; a path changed before keeps its original `before`.
    pub fn record(&mut self, change: Change) {
        match self.changes.iter_mut().find(|c| c.path == change.path) {
            Some(old) => old.applied = change.applied,
            None => self.changes.push(change),
        }
    }

    /// Writes the state atomically (temp file, fsync, rename), or removes the
    /// file when nothing is left to revert.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        if self.changes.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create {}: {}", dir.display(), errno_text(&e))
            })?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), errno_text(&e)))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_values_and_merging() {
        let c = Change::new(
            "disk_scheduler",
            "/sys/block/vda/queue/scheduler",
            "none [mq-deadline] kyber \n",
            "none\n",
        );
        assert_eq!(c.restore, "mq-deadline\n");
        let c = Change::new("swappiness", "/proc/sys/vm/swappiness", "60\n", "1\n");
        assert_eq!(c.restore, "60\n");
        let mut s = State::new(Path::new("/"));
        s.record(c.clone());
        s.record(Change::new(
            "swappiness",
            "/proc/sys/vm/swappiness",
            "1\n",
            "0\n",
        ));
        assert_eq!(s.changes.len(), 1);
        assert_eq!(
            s.changes[0].before, "60\n",
            "the first apply's value is kept"
        );
        assert_eq!(s.changes[0].applied, "0\n");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/state.json");
        assert!(State::load(&path).expect("no file").is_none());
        s.save(&path).expect("saves");
        let back = State::load(&path).expect("loads").expect("present");
        assert_eq!(back.changes, s.changes);
        State::new(Path::new("/"))
            .save(&path)
            .expect("empty removes");
        assert!(!path.exists());
        std::fs::write(&path, "{}").expect("write");
        assert!(State::load(&path).is_err());
    }
}
