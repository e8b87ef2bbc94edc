//! The I/O loop of `sluice iotune`: keeps `depth` reads or writes of one
//! block size in flight on one file until a deadline, on an io_uring of its
//! own (one thread, no kernel polling), or with plain pread/pwrite one at a
//! time where io_uring cannot be set up. Buffers are aligned for O_DIRECT.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

/// Alignment of buffers, offsets and lengths (O_DIRECT's strictest common need).
pub const ALIGN: usize = 4096;

/// Deepest queue the loop keeps (and the ring's size).
pub const DEPTH_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

/// What one run moved.
#[derive(Debug, Clone, Copy)]
pub struct Moved {
    pub ops: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Moved {
    pub fn per_second(&self, n: u64) -> u64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            (n as f64 / s) as u64
        } else {
            0
        }
    }
}

/// Memory for `depth` blocks, aligned to `ALIGN`, filled with non-zero bytes
/// (a device that compresses or skips zeroes would flatter the write numbers).
pub struct Buffers {
    mem: Vec<u8>,
    start: usize,
    block: usize,
}

impl Buffers {
    pub fn new(depth: usize, block: usize) -> Buffers {
        assert!(block.is_multiple_of(ALIGN) && (1..=DEPTH_MAX).contains(&depth));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mem: Vec<u8> = (0..depth * block + ALIGN)
            .map(|_| {
                seed = xorshift(seed);
                (seed as u8) | 1
            })
            .collect();
        let start = mem.as_ptr().align_offset(ALIGN);
        Buffers { mem, start, block }
    }

    /// The first aligned byte; slot i starts `i * block` after it.
    fn base(&mut self) -> *mut u8 {
        self.mem[self.start..].as_mut_ptr()
    }

    fn slot(&mut self, i: usize) -> &mut [u8] {
        let at = self.start + i * self.block;
        &mut self.mem[at..at + self.block]
    }
}

/// The next value of a xorshift64 generator (offsets for random reads).
pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// How the operations reach the kernel.
pub enum Engine {
    Uring(Box<IoUring>),
    /// pread/pwrite, one at a time: queue depth is always 1.
    Sync,
}

impl Engine {
    /// An io_uring, or the synchronous engine and why when none can be had.
    pub fn new() -> (Engine, Option<String>) {
        match IoUring::new(DEPTH_MAX as u32) {
            Ok(r) => (Engine::Uring(Box::new(r)), None),
            Err(e) => (
                Engine::Sync,
                Some(format!(
                    "io_uring unavailable ({e}): pread/pwrite at queue depth 1 only"
                )),
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Uring(_) => "io_uring",
            Engine::Sync => "pread/pwrite",
        }
    }

    /// Runs `op` with up to `depth` in flight until `until`, each at the
    /// offset `next` gives; waits for the ones in flight at the deadline.
    pub fn run(
        &mut self,
        file: &File,
        op: Op,
        depth: usize,
        bufs: &mut Buffers,
        until: Instant,
        mut next: impl FnMut() -> u64,
    ) -> io::Result<Moved> {
        let block = bufs.block;
        let start = Instant::now();
        let mut ops = 0u64;
        match self {
            Engine::Sync => {
                while Instant::now() < until {
                    let off = next();
                    let buf = bufs.slot(0);
                    let n = match op {
                        Op::Read => file.read_at(buf, off)?,
                        Op::Write => file.write_at(buf, off)?,
                    };
                    if n != block {
                        return Err(io::Error::other(format!(
                            "short {op:?}: {n} of {block} bytes at {off}"
                        )));
                    }
                    ops += 1;
                }
            }
            Engine::Uring(ring) => {
                let depth = depth.clamp(1, DEPTH_MAX);
                let fd = types::Fd(file.as_raw_fd());
                // Pointers into `bufs` are taken from this one base, never from a
                // fresh borrow of the whole buffer while the kernel writes into it.
                let base = bufs.base();
                let mut in_flight = 0usize;
                let mut free: Vec<usize> = (0..depth).rev().collect();
                let mut failure: Option<io::Error> = None;
                loop {
                    while failure.is_none() && Instant::now() < until {
                        let Some(slot) = free.pop() else { break };
                        let ptr = base.wrapping_add(slot * block);
                        let off = next();
                        let entry = match op {
                            Op::Read => {
                                opcode::Read::new(fd, ptr, block as u32).offset(off).build()
                            }
                            Op::Write => opcode::Write::new(fd, ptr, block as u32)
                                .offset(off)
                                .build(),
                        }
                        .user_data(slot as u64);
                        // SAFETY: the buffer is slot `slot` of `bufs`, which outlives
                        // this call, and no other operation uses that slot until this
                        // one's completion is reaped below (the loop only returns once
                        // nothing is in flight); `file` is borrowed for the whole call.
                        if unsafe { ring.submission().push(&entry) }.is_err() {
                            free.push(slot);
                            break;
                        }
                        in_flight += 1;
                    }
                    if in_flight == 0 {
                        break;
                    }
                    if let Err(e) = ring.submit_and_wait(1) {
                        if e.raw_os_error() == Some(nix::libc::EINTR) {
                            continue;
                        }
                        // Completions already queued are still reaped below; if the
                        // kernel never took the entries, nothing will complete them.
                        if failure.is_none() {
                            failure = Some(e);
                        }
                        if ring.completion().is_empty() {
                            return Err(failure
                                .unwrap_or_else(|| io::Error::other("io_uring submit failed")));
                        }
                    }
                    for cqe in ring.completion() {
                        in_flight -= 1;
                        free.push(cqe.user_data() as usize);
                        let res = cqe.result();
                        if res < 0 {
                            failure.get_or_insert(io::Error::from_raw_os_error(-res));
                        } else if res as usize != block {
                            failure.get_or_insert(io::Error::other(format!(
                                "short {op:?}: {res} of {block} bytes"
                            )));
                        } else {
                            ops += 1;
                        }
                    }
                }
                if let Some(e) = failure {
                    return Err(e);
                }
            }
        }
        Ok(Moved {
            ops,
            bytes: ops * block as u64,
            elapsed: start.elapsed(),
        })
    }
}
