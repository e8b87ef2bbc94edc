//! Zero-copy sends of file ranges to sockets: `splice(2)` from the file into a
//! pipe, then from the pipe into the socket, on a side io_uring ring that the
//! process shares (glommio has no splice).
//!
//! Why a side ring: a blocking `sendfile` on a shard thread stalls every
//! connection on that core (measured: 160 ms), and a blocking helper thread
//! would let one consumer that stops reading hold up every other transfer
//! queued behind it. io_uring runs each splice on its own kernel worker
//! (io-wq) when it would block, so a stalled socket only holds its own
//! transfer.
//!
//! Completions are reaped by one thread, which wakes the waiting shard task
//! through a oneshot channel. Every fd an operation names (file, pipe,
//! socket) is kept open until its completion is reaped, so a transfer dropped
//! half-way (timeout, closed connection) never lets the kernel act on a
//! reused fd number.
//!
//! The file side goes through the page cache: these are rolled segments read
//! by catching-up consumers, and page-cache pages are spliced into the
//! socket without a copy. Segment files written with O_DIRECT are opened a
//! second time without it for this (O_DIRECT splice needs aligned ranges).
//!
//! The same ring reads large windows of O_DIRECT segment files for fetches
//! ([`read_direct`]) into aligned memory that is `Send`, so the bytes reach
//! the answer, on whichever shard, without the copy that glommio's
//! shard-bound read buffers needed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::channel::oneshot;
use io_uring::{opcode, types, IoUring};

/// Submission queue entries of the side ring.
const RING_ENTRIES: u32 = 256;
/// Pipe capacity asked for (the default `fs.pipe-max-size`); smaller if refused.
const PIPE_BYTES: usize = 1 << 20;
/// Idle pipes kept per shard for the next transfer.
const PIPE_POOL: usize = 16;

struct Pending {
    tx: oneshot::Sender<(i32, Option<AlignedBuf>)>,
    /// The fds the operation names, closed only after its completion.
    _keep: [Arc<OwnedFd>; 2],
    /// The memory a read fills, owned here until its completion (then
    /// handed to the waiter, or freed if the waiter has gone).
    buf: Option<AlignedBuf>,
}

/// Heap memory aligned for O_DIRECT (4096 bytes), filled by [`read_direct`].
/// It owns its allocation alone, so it may move to and be freed on any
/// thread, and `bytes::Bytes::from_owner` can wrap it without a copy.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
    /// Bytes the read filled, from the start.
    filled: usize,
}

// SAFETY: the allocation is owned by this value alone (no aliasing pointer
// survives the read that filled it), and the global allocator may free it
// from any thread.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads the filled bytes, which nothing writes
// after the read's completion.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Alignment of the memory and of the lengths asked for.
    pub const ALIGN: usize = 4096;

    fn new(len: usize) -> io::Result<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), Self::ALIGN)
            .map_err(|_| io::Error::other("read buffer too large"))?;
        // SAFETY: the layout's size is non-zero. The memory is uninitialised;
        // only the bytes a read reports as filled are ever exposed.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = std::ptr::NonNull::new(ptr)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBuf {
            ptr,
            layout,
            filled: 0,
        })
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `filled` bytes from `ptr` were written by the completed
        // read and lie within the allocation (`filled <= layout.size()`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.filled) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

struct SideRing {
    ring: IoUring,
    /// Held while pushing to the submission queue (one producer at a time).
    sq: Mutex<()>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

static RING: OnceLock<Option<Arc<SideRing>>> = OnceLock::new();

thread_local! {
    /// Bytes this shard sent with [`send_file`] since the last [`take_spliced_bytes`].
    static SPLICED_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Bytes this shard sent from files without a copy through user space since
/// the last call (for the stall detector's line).
pub fn take_spliced_bytes() -> u64 {
    SPLICED_BYTES.with(|c| c.replace(0))
}

fn ring() -> Option<&'static Arc<SideRing>> {
    RING.get_or_init(|| match start() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e,
                "splice ring unavailable: cold fetches are copied through user space");
            None
        }
    })
    .as_ref()
}

/// Whether zero-copy sends are available (the side ring started).
pub fn available() -> bool {
    ring().is_some()
}

fn start() -> io::Result<Arc<SideRing>> {
    let ring = Arc::new(SideRing {
        ring: IoUring::new(RING_ENTRIES)?,
        sq: Mutex::new(()),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
    });
    let reaper = Arc::clone(&ring);
    std::thread::Builder::new()
        .name("splice-reaper".into())
        .spawn(move || reap(&reaper))?;
    Ok(ring)
}

/// The completion thread: waits for completions and hands each result to its waiter.
fn reap(r: &SideRing) {
    loop {
        if let Err(e) = r.ring.submitter().submit_and_wait(1) {
            if e.raw_os_error() != Some(nix::libc::EINTR) {
                tracing::error!(error = %e, "splice ring wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        // SAFETY: this thread is the only one that ever takes the completion
        // queue, so no other `CompletionQueue` exists while this one lives.
        let done: Vec<(u64, i32)> = unsafe { r.ring.completion_shared() }
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (id, res) in done {
            if let Some(p) = pending.remove(&id) {
                // The waiter may have given up (timeout, closed connection):
                // then a read's buffer is freed here, after the kernel is
                // done with it.
                let _ = p.tx.send((res, p.buf));
            }
        }
    }
}

impl SideRing {
    /// Queues one operation; its result (bytes moved, or minus errno) arrives
    /// on the receiver, with `buf` back. `keep` are the fds it names, `buf`
    /// the memory it writes.
    fn submit(
        &self,
        entry: io_uring::squeue::Entry,
        keep: [Arc<OwnedFd>; 2],
        buf: Option<AlignedBuf>,
    ) -> io::Result<oneshot::Receiver<(i32, Option<AlignedBuf>)>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = entry.user_data(id);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Pending {
                    tx,
                    _keep: keep,
                    buf,
                },
            );
        let _guard = self.sq.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // SAFETY: the `sq` mutex is held, so no other submission queue
            // handle exists; `entry` names fds that `pending` keeps open
            // until the completion is reaped.
            let pushed = unsafe { self.ring.submission_shared().push(&entry) };
            if pushed.is_ok() {
                break;
            }
            // Full: hand the queued entries to the kernel, then retry.
            if let Err(e) = self.ring.submitter().submit() {
                // Never queued: nothing will complete it.
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                return Err(e);
            }
        }
        // Queued: if this submit fails, the next one (or the reaper's) takes
        // the entry to the kernel, so the waiter still gets its completion.
        if let Err(e) = self.ring.submitter().submit() {
            tracing::debug!(error = %e, "splice ring submit deferred");
        }
        Ok(rx)
    }

    /// One splice (`to` is a pipe or a socket, written at its current position).
    async fn splice(
        &self,
        from: &Arc<OwnedFd>,
        from_off: i64,
        to: &Arc<OwnedFd>,
        len: usize,
    ) -> io::Result<usize> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let entry = opcode::Splice::new(
            types::Fd(from.as_raw_fd()),
            from_off,
            types::Fd(to.as_raw_fd()),
            -1,
            len,
        )
        .build();
        let rx = self.submit(entry, [Arc::clone(from), Arc::clone(to)], None)?;
        let (res, _) = rx
            .await
            .map_err(|_| io::Error::other("splice ring stopped"))?;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(res as usize)
    }
}

/// Starts reading `len` bytes of `file` at `pos` into the page cache
/// (`POSIX_FADV_WILLNEED` on the side ring) without waiting: a fetch does this
/// for each range it will splice, so the reads of all its partitions are in
/// flight together instead of one by one as the answer is sent.
pub fn prefetch(file: &Arc<OwnedFd>, pos: u64, len: usize) {
    let Some(r) = ring() else {
        return;
    };
    let entry = opcode::Fadvise::new(
        types::Fd(file.as_raw_fd()),
        i64::try_from(len).unwrap_or(i64::MAX),
        nix::libc::POSIX_FADV_WILLNEED,
    )
    .offset(pos)
    .build();
    // Advice only: a failure leaves the splice to read the pages itself.
    let _ = r.submit(entry, [Arc::clone(file), Arc::clone(file)], None);
}

/// Reads `len` bytes (a multiple of [`AlignedBuf::ALIGN`]) of `file` at
/// `pos` (aligned too) into fresh aligned memory, on the side ring: an
/// O_DIRECT read whose bytes can then leave the shard as `Bytes` without a
/// copy (glommio's read buffers come from the shard's own arena and may not
/// leave its thread, so a fetch copied each of them once, 6% of the machine's
/// CPU in a catch-up read). Fewer bytes come back at the end of the file.
pub async fn read_direct(file: &Arc<OwnedFd>, pos: u64, len: usize) -> io::Result<AlignedBuf> {
    let r = ring().ok_or_else(|| io::Error::other("side ring unavailable"))?;
    let want = u32::try_from(len).map_err(|_| io::Error::other("read too large"))?;
    let buf = AlignedBuf::new(len)?;
    let entry = opcode::Read::new(types::Fd(file.as_raw_fd()), buf.ptr.as_ptr(), want)
        .offset(pos)
        .build();
    let rx = r.submit(entry, [Arc::clone(file), Arc::clone(file)], Some(buf))?;
    let (res, buf) = rx
        .await
        .map_err(|_| io::Error::other("side ring stopped"))?;
    let mut buf = buf.ok_or_else(|| io::Error::other("read buffer lost"))?;
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    buf.filled = (res as usize).min(buf.layout.size());
    Ok(buf)
}

/// A pipe used for one transfer at a time.
struct Pipe {
    read: Arc<OwnedFd>,
    write: Arc<OwnedFd>,
    capacity: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = PIPES.with(|v| v.borrow_mut().pop()) {
        return Ok(p);
    }
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // Refused above fs.pipe-max-size or the user's pipe limit: keep the default.
    let _ = fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32));
    let capacity = fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)
        .map(|c| c.max(4096) as usize)
        .unwrap_or(65536);
    Ok(Pipe {
        read: Arc::new(read),
        write: Arc::new(write),
        capacity,
    })
}

fn give_back(p: Pipe) {
    PIPES.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() < PIPE_POOL {
            v.push(p);
        }
    });
}

/// Duplicates a socket fd for [`send_file`] (the duplicate keeps the socket
/// open while operations on it are in flight).
pub fn dup_socket(fd: RawFd) -> io::Result<Arc<OwnedFd>> {
    use nix::fcntl::{fcntl, FcntlArg};
    let dup = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(0)).map_err(io::Error::from)?;
    // SAFETY: `dup` was just returned by F_DUPFD_CLOEXEC and nothing else owns it.
    Ok(Arc::new(unsafe {
        std::os::fd::FromRawFd::from_raw_fd(dup)
    }))
}

/// Sends `len` bytes of `file` starting at `pos` to `sock`, without copying
/// them through user space. `step_timeout` bounds each step (a socket that
/// takes no bytes for that long fails the transfer with `TimedOut`); the
/// caller must then close the connection, since a frame was cut short.
pub async fn send_file(
    sock: &Arc<OwnedFd>,
    file: &Arc<OwnedFd>,
    pos: u64,
    len: usize,
    step_timeout: Option<Duration>,
) -> io::Result<()> {
    let r = ring().ok_or_else(|| io::Error::other("splice ring unavailable"))?;
    let pipe = take_pipe()?;
    let mut off = pos;
    let mut left = len;
    let mut in_pipe = 0usize;
    while left > 0 || in_pipe > 0 {
        let step = async {
            if in_pipe > 0 {
                r.splice(&pipe.read, -1, sock, in_pipe).await
            } else {
                let off = i64::try_from(off).map_err(|_| io::Error::other("offset too large"))?;
                r.splice(file, off, &pipe.write, left.min(pipe.capacity))
                    .await
            }
        };
        let res = match step_timeout {
            Some(d) => crate::runtime::timeout(d, step)
                .await
                .unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::TimedOut))),
            None => step.await,
        };
        let n = match res {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EAGAIN | nix::libc::EINTR)) => {
                continue
            }
            Err(e) => return Err(e),
        };
        if in_pipe > 0 {
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            in_pipe -= n.min(in_pipe);
            SPLICED_BYTES.with(|c| c.set(c.get() + n as u64));
        } else {
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ended {left} bytes before the range sent"),
                ));
            }
            let n = n.min(left);
            off += n as u64;
            left -= n;
            in_pipe = n;
        }
    }
    // Only an empty pipe is reused; one left with bytes in it is closed.
    give_back(pipe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn sends_a_file_range_through_a_socket() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).expect("write");
        let file = Arc::new(OwnedFd::from(f));
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let sock = dup_socket(a.as_raw_fd()).expect("dup");
        drop(a);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).map(|_| got)
        });
        let (pos, len) = (12_345u64, 2_500_000usize);
        futures::executor::block_on(async {
            send_file(&sock, &file, pos, len, None).await.expect("send");
            // Past the end of the file: refused, not padded.
            let err = send_file(&sock, &file, 2_999_000, 5_000, None).await;
            assert_eq!(
                err.expect_err("short file").kind(),
                io::ErrorKind::UnexpectedEof
            );
        });
        drop(sock);
        let got = reader.join().expect("reader").expect("read");
        // The failed transfer still sent the 1,000 bytes that existed.
        assert_eq!(got.len(), len + 1_000);
        assert_eq!(&got[..len], &data[pos as usize..pos as usize + len]);
        assert_eq!(take_spliced_bytes(), len as u64 + 1_000);
    }

    #[test]
    fn reads_a_direct_file_into_memory_that_leaves_the_thread() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        // O_DIRECT where the file system allows it (tmpfs does not).
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path))
            .expect("open");
        let file = Arc::new(OwnedFd::from(f));
        let (whole, tail) = futures::executor::block_on(async {
            let whole = read_direct(&file, 8192, 128 << 10).await.expect("read");
            // Past the end: the bytes that exist, no more.
            let tail = read_direct(&file, 294_912, 16_384)
                .await
                .expect("read tail");
            (whole, tail)
        });
        // The buffer moves to another thread as `Bytes` and is freed there.
        let got = std::thread::spawn(move || bytes::Bytes::from_owner(whole).slice(10..))
            .join()
            .expect("thread");
        assert_eq!(&got[..], &data[8192 + 10..8192 + (128 << 10)]);
        assert_eq!(tail.as_ref(), &data[294_912..]);
        assert_eq!(tail.as_ref().as_ptr() as usize % AlignedBuf::ALIGN, 0);
    }
}
