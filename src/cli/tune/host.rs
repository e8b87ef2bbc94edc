//! The host `sluice tune` reads and writes: every path is taken under a root
//! directory (`/` for the real machine, a fake tree for tests and dry runs).
//! Reads never fail the command: a missing file means the host has no such
//! setting, any other error is reported with its errno.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::parse;

/// Why a file could not be read (or written): the path and the errno.
#[derive(Debug, Clone)]
pub struct FileError {
    pub path: String,
    pub kind: io::ErrorKind,
    /// "Permission denied (EACCES)".
    pub message: String,
}

impl FileError {
    fn new(path: &str, e: &io::Error) -> FileError {
        FileError {
            path: path.to_string(),
            kind: e.kind(),
            message: errno_text(e),
        }
    }

    pub fn missing(&self) -> bool {
        self.kind == io::ErrorKind::NotFound
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// "Permission denied (EACCES)" for an OS error, its text otherwise.
pub fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!(
            "{} ({:?})",
            e.to_string().split(" (os error").next().unwrap_or(""),
            nix::errno::Errno::from_raw(n)
        ),
        None => e.to_string(),
    }
}

/// Largest file `read` takes in: kernel text files are small, and
/// `/proc/interrupts` on a big machine is the largest (a few hundred KiB).
const READ_BYTES_MAX: u64 = 4 << 20;

/// The machine (or fake tree) under `root`.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: &Path) -> Host {
        Host {
            root: root.to_path_buf(),
        }
    }

    /// Whether this is the running machine (root `/`), where process-wide
    /// facts (rlimits, `ethtool`) may be asked of the kernel directly.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (absolute, as on a real host) under the root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    pub fn read(&self, path: &str) -> Result<String, FileError> {
        use std::io::Read;
        let full = self.path(path);
        let f = std::fs::File::open(&full).map_err(|e| FileError::new(path, &e))?;
        let mut text = String::new();
        f.take(READ_BYTES_MAX)
            .read_to_string(&mut text)
            .map_err(|e| FileError::new(path, &e))?;
        Ok(text)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }

    /// Names in directory `path` that start with `prefix`, sorted by their
    /// numeric suffix where they have one (cpu2 before cpu10); empty when
    /// the directory cannot be read.
    pub fn list(&self, path: &str, prefix: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.path(path)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort_by_key(|n| {
            let digits: String = n.chars().rev().take_while(char::is_ascii_digit).collect();
            let num: u64 = digits
                .chars()
                .rev()
                .collect::<String>()
                .parse()
                .unwrap_or(0);
            (n[..n.len() - digits.len()].to_string(), num)
        });
        names
    }

    /// The target of a symlink under the root, resolved relative to the
    /// link's directory and kept inside the root (sysfs links are relative).
    pub fn link(&self, path: &str) -> Option<String> {
        let target = std::fs::read_link(self.path(path)).ok()?;
        let mut parts: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(String::from)
            .collect();
        parts.pop();
        if target.is_absolute() {
            parts.clear();
        }
        for c in target.components() {
            match c {
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        Some(format!("/{}", parts.join("/")))
    }

    /// Writes `value` to the kernel file `path`, as `echo value > path` does.
    /// Under a root that is not the kernel's own procfs or sysfs (a fake tree),
    /// a "[selected] other" list is rewritten with the brackets moved to the
    /// word written, as the kernel would show it; elsewhere the bytes go in as given.
    pub fn write(&self, path: &str, value: &str) -> Result<(), FileError> {
        use std::io::Write;
        let full = self.path(path);
        let mut bytes = value.to_string();
        if !on_kernel_fs(&full) {
            if let Ok(old) = std::fs::read_to_string(&full) {
                if let Some(moved) = parse::reselect(&old, value.trim()) {
                    bytes = moved;
                }
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&full)
            .map_err(|e| FileError::new(path, &e))?;
        f.write_all(bytes.as_bytes())
            .map_err(|e| FileError::new(path, &e))
    }
}

/// Whether `path` lies on procfs or sysfs, where the kernel interprets writes.
fn on_kernel_fs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    statfs(path).is_ok_and(|s| {
        s.filesystem_type() == SYSFS_MAGIC || s.filesystem_type() == PROC_SUPER_MAGIC
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_lists_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host::new(dir.path());
        std::fs::create_dir_all(dir.path().join("sys/block/vda/queue")).expect("mkdir");
        for cpu in ["cpu10", "cpu2", "cpufreq", "cpu0"] {
            std::fs::create_dir_all(dir.path().join("sys/cpu").join(cpu)).expect("mkdir");
        }
        assert_eq!(
            host.list("/sys/cpu", "cpu"),
            ["cpu0", "cpu2", "cpu10", "cpufreq"]
        );
        let sched = "/sys/block/vda/queue/scheduler";
        std::fs::write(host.path(sched), "none [mq-deadline] kyber \n").expect("write");
        host.write(sched, "none").expect("writes");
        assert_eq!(
            host.read(sched).expect("reads"),
            "[none] mq-deadline kyber \n"
        );
        let err = host.read("/proc/sys/vm/nothing").expect_err("missing");
        assert!(err.missing());
        assert!(err.to_string().contains("ENOENT"), "{err}");
        let err = host
            .write("/proc/sys/vm/nothing", "1")
            .expect_err("no create");
        assert!(
            err.to_string().starts_with("/proc/sys/vm/nothing: "),
            "{err}"
        );
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host::new(dir.path());
        std::fs::create_dir_all(dir.path().join("sys/dev/block")).expect("mkdir");
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/virtio1/block/vda",
            dir.path().join("sys/dev/block/254:0"),
        )
        .expect("symlink");
        assert_eq!(
            host.link("/sys/dev/block/254:0").as_deref(),
            Some("/sys/devices/pci0000:00/virtio1/block/vda")
        );
        assert_eq!(host.link("/sys/dev/block/1:1"), None);
    }
}
