//! Freeing deleted segment files' blocks off the shards.
//!
//! Deleting a large file is not cheap: the kernel frees its extents when the
//! last open handle of an unlinked file goes away (or at the unlink, if none
//! is open), in the thread that lets go. On this VM's ext4 that took 47-65 ms
//! for a 256 MiB segment file and about 200 ms for 1 GiB, and a topic
//! deletion stopped a shard for over 3 s (BENCHMARKS.md). A shard does that
//! for retention, DeleteRecords, the cleaner's swap and topic deletion.
//!
//! So a segment whose files are being removed is marked (`Segment::retire`);
//! when it is dropped it hands a duplicate of its `.log` fd to this module,
//! and a background thread closes that fd [`DELAY`] later. The shard's own
//! handles close first (glommio closes on its ring at the next cycle), so
//! the duplicate is the last one and the freeing happens here. Were a shard
//! handle to outlive the delay, the shard would pay as before: nothing is
//! lost either way, the file is already unlinked.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the background thread holds a retired file before closing it:
/// long enough for the shard's own close (queued on its ring) to complete.
pub(crate) const DELAY: Duration = Duration::from_secs(1);

/// Files closed by the background thread, and the longest close (µs).
static CLOSED: AtomicU64 = AtomicU64::new(0);
static LONGEST_US: AtomicU64 = AtomicU64::new(0);

type Job = (Instant, OwnedFd);

fn sender() -> Option<&'static Sender<Job>> {
    static TX: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("sluice-reclaim".into())
            .spawn(move || {
                // In arrival order: with one delay (`DELAY`) that is due order.
                while let Ok((due, fd)) = rx.recv() {
                    let wait = due.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    let t = Instant::now();
                    drop(fd);
                    let us = t.elapsed().as_micros() as u64;
                    CLOSED.fetch_add(1, Ordering::Relaxed);
                    LONGEST_US.fetch_max(us, Ordering::Relaxed);
                    if us >= 10_000 {
                        tracing::debug!(ms = us / 1000, "freed a deleted segment file");
                    }
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e,
                    "cannot start the reclaim thread; deleted files are freed on the shards");
                None
            }
        }
    })
    .as_ref()
}

/// Closes `fd` (the last handle of an unlinked file, by then) on the
/// background thread, no sooner than `delay` from now and after the jobs
/// handed over before it; inline if that thread could not start.
pub(crate) fn close_after(fd: OwnedFd, delay: Duration) {
    let Some(tx) = sender() else {
        drop(fd);
        return;
    };
    if let Err(back) = tx.send((Instant::now() + delay, fd)) {
        // The thread is gone (it only ends if the channel closes): close here.
        drop(back.0);
    }
}

/// Files closed in the background since the start, and the longest close in µs.
pub fn figures() -> (u64, u64) {
    (
        CLOSED.load(Ordering::Relaxed),
        LONGEST_US.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// What fd `raw` names now (None once closed).
    fn target(raw: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/self/fd/{raw}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    #[test]
    fn closes_on_the_background_thread_after_the_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, vec![7u8; 1 << 20]).expect("write");
        let f = std::fs::File::open(&path).expect("open");
        std::fs::remove_file(&path).expect("unlink");
        let fd: OwnedFd = f.into();
        let raw = fd.as_raw_fd();
        let held = format!("{} (deleted)", path.display());
        close_after(fd, Duration::from_millis(300));
        // Held until the delay is over.
        assert_eq!(target(raw).as_deref(), Some(held.as_str()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while target(raw).as_deref() == Some(held.as_str()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_ne!(target(raw).as_deref(), Some(held.as_str()), "never closed");
        assert!(figures().0 >= 1);
    }
}
