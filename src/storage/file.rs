//! One segment data file, written either with O_DIRECT (glommio `DmaFile`, 4096-aligned buffers)
//! or through the page cache (glommio `BufferedFile`), plus small whole-file helpers.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};

use super::config::IoMode;
use super::error::{Result, StorageError};
use super::log_dirs::{self, classify_errno, DiskFault};

/// Alignment used for O_DIRECT writes (a multiple of every device's logical block size).
pub(crate) const ALIGN: u64 = 4096;

/// An error of a file operation, with the OS error number when there is one.
pub(crate) trait OsError: std::fmt::Display {
    fn errno(&self) -> Option<i32>;
}

impl OsError for std::io::Error {
    fn errno(&self) -> Option<i32> {
        self.raw_os_error()
    }
}

impl OsError for glommio::GlommioError<()> {
    fn errno(&self) -> Option<i32> {
        match self {
            glommio::GlommioError::IoError(e) => e.raw_os_error(),
            glommio::GlommioError::EnhancedIoError { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A short write to a regular file: the file system ran out of space (or quota) part way.
struct ShortWrite(usize);

impl std::fmt::Display for ShortWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "only {} bytes written (out of space?)", self.0)
    }
}

impl OsError for ShortWrite {
    fn errno(&self) -> Option<i32> {
        Some(nix::errno::Errno::ENOSPC as i32)
    }
}

impl OsError for &str {
    fn errno(&self) -> Option<i32> {
        None
    }
}

/// Turns a failed operation on `path` into a `StorageError`, taking the log dir holding `path`
/// offline when the error says the disk cannot be trusted (see `log_dirs.rs`). Every failed
/// sync does: after a failed fsync the page cache no longer tells what is on disk.
fn io_err(what: &str, path: &Path, e: impl OsError) -> StorageError {
    let msg = format!("{what} {}: {e}", path.display());
    let fault = if what.starts_with("syncing") {
        DiskFault::DirFailed
    } else {
        classify_errno(e.errno())
    };
    match fault {
        DiskFault::NoSpace => StorageError::NoSpace(msg),
        DiskFault::DirFailed => {
            log_dirs::mark_offline(path, &msg);
            StorageError::LogDirOffline(msg)
        }
        DiskFault::Other => StorageError::Io(msg),
    }
}

enum Inner {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

/// A buffer to fill and hand to `SegFile::write`: DMA memory for direct files, a Vec otherwise.
pub(crate) enum WriteBuf {
    Dma(DmaBuffer, usize),
    Vec(Vec<u8>),
}

impl WriteBuf {
    /// The usable bytes (for DMA buffers, without the alignment padding).
    pub fn as_mut(&mut self) -> &mut [u8] {
        match self {
            WriteBuf::Dma(b, len) => &mut b.as_bytes_mut()[..*len],
            WriteBuf::Vec(v) => v.as_mut_slice(),
        }
    }
}

thread_local! {
    /// Devices (st_dev) on which this thread's glommio already probed IOPOLL support correctly.
    static IOPOLL_PROBED: std::cell::RefCell<std::collections::HashSet<u64>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// glommio decides once per thread and device whether O_DIRECT I/O may use the IOPOLL ring, by
/// reading the first block of the first `DmaFile` opened there. If that file is empty the read
/// succeeds trivially, IOPOLL is wrongly enabled, and later reads fail with EOPNOTSUPP on devices
/// without polling (virtio here). So the first direct open on a device goes to a one-block probe
/// file, which makes the probe read real data.
async fn ensure_iopoll_probed(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir)?.dev();
    if IOPOLL_PROBED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let probe = dir.join(".iopoll-probe");
    std::fs::write(&probe, vec![0u8; ALIGN as usize])?;
    let f = DmaFile::open(&probe)
        .await
        .map_err(|e| io_err("opening", &probe, e))?;
    f.close().await.map_err(|e| io_err("closing", &probe, e))?;
    std::fs::remove_file(&probe)?;
    IOPOLL_PROBED.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// A segment's `.log` file.
pub(crate) struct SegFile {
    inner: Inner,
    path: PathBuf,
    /// A duplicate of a direct file's fd for reads on the side ring
    /// (`read_side`); None once duplicating failed or the ring is missing.
    side_fd: std::cell::OnceCell<Option<std::sync::Arc<std::os::fd::OwnedFd>>>,
}

/// Direct reads at least this long go through the side ring into memory that
/// can leave the shard without a copy (`runtime::splice::read_direct`);
/// shorter ones (offset lookups, header walks) stay on glommio's ring.
const SIDE_READ_MIN: usize = 64 << 10;

impl SegFile {
    /// Opens (creating if missing) a file for reading and writing.
    pub async fn open(path: &Path, mode: IoMode) -> Result<SegFile> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true);
        if mode == IoMode::Direct {
            if let Some(dir) = path.parent() {
                ensure_iopoll_probed(dir).await?;
            }
        }
        let inner = match mode {
            IoMode::Direct => Inner::Direct(
                o.dma_open(path)
                    .await
                    .map_err(|e| io_err("opening", path, e))?,
            ),
            IoMode::Buffered => Inner::Buffered(
                o.buffered_open(path)
                    .await
                    .map_err(|e| io_err("opening", path, e))?,
            ),
        };
        Ok(SegFile {
            inner,
            path: path.to_path_buf(),
            side_fd: std::cell::OnceCell::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same file opened again, read-only and through the page cache, for
    /// splicing ranges of it into sockets. Opened through `/proc/self/fd`, so
    /// it is this file even if the path has since been renamed over.
    pub fn reopen_for_splice(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        let f = std::fs::File::open(format!("/proc/self/fd/{}", self.raw_fd()))?;
        Ok(f.into())
    }

    pub fn is_direct(&self) -> bool {
        matches!(self.inner, Inner::Direct(_))
    }

    /// A write buffer holding `parts` one after the other, for the caller to
    /// patch in place (`WriteBuf::as_mut`) and hand to [`SegFile::write`].
    /// Nothing is zeroed but a DMA buffer's padding up to `ALIGN`: zeroing
    /// the whole buffer before copying into it cost a memset pass over every
    /// appended byte (11% of the broker's samples at 565 MB/s of produce,
    /// BENCHMARKS.md). A page-cache (buffered) buffer is a `Vec` extended
    /// by the parts.
    pub fn alloc_filled(&self, parts: &[&[u8]]) -> WriteBuf {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        match &self.inner {
            Inner::Direct(f) => {
                let cap = (len as u64).div_ceil(ALIGN).max(1) * ALIGN;
                let mut b = f.alloc_dma_buffer(cap as usize);
                let bytes = b.as_bytes_mut();
                let mut at = 0;
                for p in parts {
                    bytes[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                bytes[len..].fill(0);
                WriteBuf::Dma(b, len)
            }
            Inner::Buffered(_) => {
                let mut v = Vec::with_capacity(len);
                for p in parts {
                    v.extend_from_slice(p);
                }
                WriteBuf::Vec(v)
            }
        }
    }

    /// Writes `buf` at `pos` (which must be `ALIGN`-aligned for direct files). Direct writes
    /// include the zero padding after the usable bytes.
    pub async fn write(&self, buf: WriteBuf, pos: u64) -> Result<()> {
        match (&self.inner, buf) {
            (Inner::Direct(f), WriteBuf::Dma(b, _)) => {
                let want = b.len();
                let n = f
                    .write_at(b, pos)
                    .await
                    .map_err(|e| io_err("writing", &self.path, e))?;
                if n != want {
                    return Err(io_err("writing", &self.path, ShortWrite(n)));
                }
                Ok(())
            }
            (Inner::Buffered(f), WriteBuf::Vec(v)) => {
                // Regular files only write short on ENOSPC-like conditions: report it as an error
                // (the caller has not advanced its logical size, so nothing is half-accounted).
                let want = v.len();
                let n = f
                    .write_at(v, pos)
                    .await
                    .map_err(|e| io_err("writing", &self.path, e))?;
                if n != want {
                    return Err(io_err("writing", &self.path, ShortWrite(n)));
                }
                Ok(())
            }
            _ => Err(io_err("mismatched buffer kind for", &self.path, "")),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.inner {
            Inner::Direct(f) => f.as_raw_fd(),
            Inner::Buffered(f) => f.as_raw_fd(),
        }
    }

    /// A duplicate of the file's fd (it shares the open file): for side-ring
    /// reads, and for the reclaim thread to close last.
    pub fn dup_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        // SAFETY: the fd belongs to `self.inner`, which is open for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.raw_fd()) };
        fd.try_clone_to_owned()
    }

    /// The fd for side-ring reads of a direct file, duplicated on first use.
    fn side_fd(&self) -> Option<&std::sync::Arc<std::os::fd::OwnedFd>> {
        if !self.is_direct() {
            return None;
        }
        self.side_fd
            .get_or_init(|| {
                if !crate::runtime::splice::available() {
                    return None;
                }
                match self.dup_fd() {
                    Ok(fd) => Some(std::sync::Arc::new(fd)),
                    Err(e) => {
                        tracing::warn!(file = %self.path.display(), error = %e,
                            "cannot duplicate segment fd; its reads are copied");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// `len` bytes at `pos` of a direct file read on the side ring, without
    /// a copy; None when that is not possible (fall back to `read`).
    async fn read_side(&self, pos: u64, len: usize) -> Result<Option<Bytes>> {
        let Some(fd) = self.side_fd() else {
            return Ok(None);
        };
        let start = pos - pos % ALIGN;
        let skip = (pos - start) as usize;
        let aligned = ((skip + len) as u64).div_ceil(ALIGN) * ALIGN;
        let buf = crate::runtime::splice::read_direct(fd, start, aligned as usize)
            .await
            .map_err(|e| io_err("reading", &self.path, e))?;
        if buf.as_ref().len() < skip + len {
            // Short (the end of the file, or a read the kernel cut): rare,
            // since callers read within the segment's size; the copying
            // path reads on until the end of the file.
            return Ok(None);
        }
        Ok(Some(Bytes::from_owner(buf).slice(skip..skip + len)))
    }

    /// Reads up to `len` bytes at `pos` (fewer only at end of file).
    pub async fn read(&self, pos: u64, len: usize) -> Result<Bytes> {
        if len >= SIDE_READ_MIN {
            if let Some(b) = self.read_side(pos, len).await? {
                return Ok(b);
            }
        }
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = pos + out.len() as u64;
            let want = len - out.len();
            let n = match &self.inner {
                Inner::Direct(f) => {
                    // Aligned read by hand: glommio's unaligned `read_at` reports bytes past EOF.
                    let start = at - at % ALIGN;
                    let skip = (at - start) as usize;
                    let len = ((skip + want) as u64).div_ceil(ALIGN) * ALIGN;
                    let got = f
                        .read_at_aligned(start, len as usize)
                        .await
                        .map_err(|e| io_err("reading", &self.path, e))?;
                    let end = got.len().min(skip + want);
                    if end > skip {
                        out.extend_from_slice(&got[skip..end]);
                    }
                    end.saturating_sub(skip)
                }
                Inner::Buffered(f) => {
                    let got = f
                        .read_at(at, want)
                        .await
                        .map_err(|e| io_err("reading", &self.path, e))?;
                    out.extend_from_slice(&got);
                    got.len()
                }
            };
            if n == 0 {
                break;
            }
        }
        Ok(Bytes::from(out))
    }

    pub async fn sync(&self) -> Result<()> {
        match &self.inner {
            Inner::Direct(f) => f.fdatasync().await,
            Inner::Buffered(f) => f.fdatasync().await,
        }
        .map_err(|e| io_err("syncing", &self.path, e))
    }

    pub async fn truncate(&self, size: u64) -> Result<()> {
        match &self.inner {
            Inner::Direct(f) => f.truncate(size).await,
            Inner::Buffered(f) => f.truncate(size).await,
        }
        .map_err(|e| io_err("truncating", &self.path, e))
    }

    pub async fn size(&self) -> Result<u64> {
        match &self.inner {
            Inner::Direct(f) => f.file_size().await,
            Inner::Buffered(f) => f.file_size().await,
        }
        .map_err(|e| io_err("stat", &self.path, e))
    }
}

/// fsyncs a directory so that file creations, renames and removals in it survive a power loss
/// (segment roll, producer snapshot, DeleteRecords checkpoint, cleaner swap). The fsync commits
/// the file system's journal, so under write load it waits as long as an fdatasync does; it runs
/// on the shard's blocking-work thread (`runtime::blocking`), so that only the caller waits, not
/// every partition and connection of the shard.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    crate::runtime::blocking(move || fsync_dir(&owned))
        .await
        .map_err(|e| io_err("syncing directory", dir, e))
}

/// [`sync_dir`] on the calling thread, for start-up paths that are not async
/// (`compact_files::recover`).
pub(crate) fn sync_dir_blocking(dir: &Path) -> Result<()> {
    fsync_dir(dir).map_err(|e| io_err("syncing directory", dir, e))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Reads a whole small file; None if it does not exist.
pub(crate) async fn read_small_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let f = match BufferedFile::open(path).await {
        Ok(f) => f,
        Err(glommio::GlommioError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => {
            if !path.exists() {
                return Ok(None);
            }
            return Err(io_err("opening", path, e));
        }
    };
    let size = f.file_size().await.map_err(|e| io_err("stat", path, e))?;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let r = f
            .read_at(out.len() as u64, (size as usize) - out.len())
            .await
            .map_err(|e| io_err("reading", path, e))?;
        if r.is_empty() {
            break;
        }
        out.extend_from_slice(&r);
    }
    f.close().await.map_err(|e| io_err("closing", path, e))?;
    Ok(Some(out))
}

/// Atomically replaces `path` with `data`: write a temporary file, fdatasync, rename. On failure
/// the temporary file is removed (it would only hold space a full disk needs back) and `path` is
/// unchanged.
pub(crate) async fn write_file_atomic(path: &Path, data: Vec<u8>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let r = write_tmp_then_rename(path, &tmp, data).await;
    if r.is_err() {
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %tmp.display(), "removing after a failed write: {e}"),
        }
    }
    r
}

async fn write_tmp_then_rename(path: &Path, tmp: &Path, data: Vec<u8>) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(tmp)
        .await
        .map_err(|e| io_err("creating", tmp, e))?;
    let mut pos = 0usize;
    while pos < data.len() {
        let n = f
            .write_at(data[pos..].to_vec(), pos as u64)
            .await
            .map_err(|e| io_err("writing", tmp, e))?;
        if n == 0 {
            return Err(io_err("writing", tmp, ShortWrite(pos)));
        }
        pos += n;
    }
    f.fdatasync().await.map_err(|e| io_err("syncing", tmp, e))?;
    f.close().await.map_err(|e| io_err("closing", tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| io_err("renaming", tmp, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testutil::run;

    /// The only unit test that registers log dirs (the registry is process-wide); its dir is
    /// unique, so other tests' paths never match it.
    #[test]
    fn failed_sync_takes_the_dir_offline_and_enospc_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        log_dirs::install(&[dir.path().to_path_buf(), other.path().to_path_buf()]);
        let seg = dir.path().join("t-0").join("00000000000000000000.log");
        let enospc = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        assert!(matches!(
            io_err("writing", &seg, enospc),
            StorageError::NoSpace(_)
        ));
        assert!(matches!(
            io_err("writing", &seg, ShortWrite(3)),
            StorageError::NoSpace(_)
        ));
        assert_eq!(
            log_dirs::offline_count(),
            0,
            "out of space is not a failed dir"
        );
        // Any failed sync, whatever the errno, takes the dir offline.
        let e = io_err("syncing", &seg, "EINVAL-like failure");
        assert!(matches!(e, StorageError::LogDirOffline(_)), "{e}");
        assert_eq!(e.kafka_code(), 56);
        assert!(log_dirs::offline_reason(&dir.path().join("t-1")).is_some());
        assert!(log_dirs::offline_reason(other.path()).is_none());
        assert!(log_dirs::is_offline_index(0) && !log_dirs::is_offline_index(1));
        // A second failure does not count twice.
        let erofs = std::io::Error::from_raw_os_error(nix::errno::Errno::EROFS as i32);
        assert!(matches!(
            io_err("writing", &seg, erofs),
            StorageError::LogDirOffline(_)
        ));
        assert_eq!(log_dirs::offline_count(), 1);
        // A directory fsync that fails (here the directory vanished, as after
        // a device loss) takes its dir offline the same way, through the
        // blocking-work thread that runs it.
        let gone = other.path().join("t-9");
        let (tx, rx) = std::sync::mpsc::channel();
        run(move || async move {
            let _ = tx.send(sync_dir(&gone).await);
        });
        let e = rx
            .recv()
            .expect("result")
            .expect_err("a vanished dir cannot be synced");
        assert!(matches!(e, StorageError::LogDirOffline(_)), "{e}");
        assert!(log_dirs::is_offline_index(1));
        assert_eq!(log_dirs::offline_count(), 2);
        log_dirs::install(&[]);
    }

    #[test]
    fn write_read_both_modes() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            for (i, mode) in [IoMode::Direct, IoMode::Buffered].into_iter().enumerate() {
                let p = dir.path().join(format!("f{i}"));
                let f = SegFile::open(&p, mode).await.expect("open");
                // Dirty memory the next buffer may reuse: its padding must still be zeros.
                let mut dirty = f.alloc_filled(&[&[0u8; 100], &[1u8; 2 * ALIGN as usize - 100]]);
                assert_eq!(dirty.as_mut().len(), 2 * ALIGN as usize);
                dirty.as_mut().fill(0xff);
                drop(dirty);
                let mut b = f.alloc_filled(&[b"0123", b"", b"456789"]);
                assert_eq!(b.as_mut(), b"0123456789");
                f.write(b, 0).await.expect("write");
                if mode == IoMode::Direct {
                    let raw = std::fs::read(&p).expect("raw read");
                    assert_eq!(raw.len(), ALIGN as usize);
                    assert!(raw[10..].iter().all(|&x| x == 0), "padding not zeroed");
                }
                assert_eq!(&f.read(2, 5).await.expect("read")[..], b"23456");
                f.truncate(10).await.expect("truncate");
                assert_eq!(f.size().await.expect("size"), 10);
                assert_eq!(f.read(5, 100).await.expect("read").len(), 5);
            }
            let p = dir.path().join("small");
            assert_eq!(read_small_file(&p).await.expect("read"), None);
            write_file_atomic(&p, b"abc".to_vec()).await.expect("write");
            assert_eq!(
                read_small_file(&p).await.expect("read"),
                Some(b"abc".to_vec())
            );
        });
    }
}
