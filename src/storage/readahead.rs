//! Read-ahead for consumers catching up from segment files.
//!
//! A librdkafka consumer keeps one Fetch in flight per broker, so a consumer
//! reading a backlog waits, each round, for the disk reads of its answer
//! (1.7 ms for a 1 MiB O_DIRECT window in the catch-up test) on top of the
//! transfer and its own parsing. When a fetch reads a partition's records
//! from a segment file (not the recent-batch cache), the window right after
//! them is read at once in a task of its own; the partition's next fetch at
//! that offset takes it, waiting for the read if it is still in flight, so
//! the disk works while the answer travels and the client parses it.
//!
//! Bounds: [`PER_PARTITION`] windows per partition (one per reader at a
//! different offset, the oldest dropped first), each of at most the fetch's
//! own size; at
//! most [`SHARD_BUDGET`] bytes ahead per shard (beyond it nothing more is
//! read ahead); a window nobody took within [`HOLD`] is dropped. A window is
//! used only by a fetch at exactly its offset, asking for at least its
//! size, with a bound (high watermark or last stable offset) at least the
//! one it was read under, while its segment is still in the log (so not
//! after retention or a cleaning pass replaced it); anything else reads as
//! before. Its bytes are records that were in the log when it was read, the
//! same as an ordinary read a moment earlier would have returned.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::segment::Segment;
use crate::runtime::notify::LocalNotify;

/// Bytes read ahead and not yet taken, at most, per shard.
pub(crate) const SHARD_BUDGET: usize = 64 << 20;
/// How long a window waits to be taken before it is dropped.
pub(crate) const HOLD: Duration = Duration::from_secs(2);
/// Reads shorter than this start no read-ahead (a tailing or small reader).
pub(crate) const MIN_READ: usize = 64 << 10;
/// Windows kept per partition (readers at different offsets: several
/// groups catching up on one topic).
pub(crate) const PER_PARTITION: usize = 4;

thread_local! {
    /// Bytes of this shard's windows in flight or waiting.
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// (windows started, windows taken, windows dropped untaken) since the last `take_counts`.
    static COUNTS: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
}

/// Bytes this shard has read ahead and not yet handed out (or is reading).
#[cfg(test)]
pub(crate) fn held() -> usize {
    HELD.with(|h| h.get())
}

/// (started, taken, dropped) since the last call, for the stall detector's line.
pub(crate) fn take_counts() -> (u64, u64, u64) {
    COUNTS.with(|c| c.replace((0, 0, 0)))
}

fn count(f: impl FnOnce(&mut (u64, u64, u64))) {
    COUNTS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

enum State {
    Reading,
    /// The records, and the offset after the last of them.
    Ready(Bytes, i64),
    /// Taken, failed, or dropped: its budget is given back.
    Done,
}

struct Shared {
    state: RefCell<State>,
    done: LocalNotify,
    /// Budget reserved for it (the fetch's size, then the bytes read if
    /// more: a first batch larger than the limit comes whole, KIP-74), given
    /// back once when it leaves `Reading`/`Ready`.
    reserved: Cell<usize>,
}

impl Shared {
    /// Ends the window (taken, failed or expired), giving back its budget; the
    /// records, if it held them.
    fn finish(&self) -> Option<(Bytes, i64)> {
        let prev = std::mem::replace(&mut *self.state.borrow_mut(), State::Done);
        match prev {
            State::Done => None,
            other => {
                HELD.with(|h| h.set(h.get().saturating_sub(self.reserved.get())));
                match other {
                    State::Ready(b, next) => Some((b, next)),
                    _ => None,
                }
            }
        }
    }
}

/// One partition's window read ahead.
pub(crate) struct Window {
    /// The fetch offset it answers: the offset after the read it follows.
    offset: i64,
    max_bytes: usize,
    max_offset_exclusive: i64,
    seg: Rc<Segment>,
    /// Its position in the segment file.
    pos: u64,
    shared: Rc<Shared>,
}

impl Drop for Window {
    fn drop(&mut self) {
        // Replaced or given up before it was taken: the reading task still
        // ends it at `HOLD`, but the budget is free now.
        if self.shared.finish().is_some() {
            count(|c| c.2 += 1);
        }
    }
}

impl Window {
    /// The fetch offset it answers.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Taken, failed, or dropped: it can answer nothing.
    pub fn is_done(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Done)
    }

    /// Whether a fetch of (`offset`, `max_bytes`, bound) may take this
    /// window, with `segs` the log's segments now.
    pub fn fits(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        segs: &[Rc<Segment>],
    ) -> bool {
        self.offset == offset
            && self.max_bytes <= max_bytes
            && self.max_offset_exclusive <= max_offset_exclusive
            && segs.iter().any(|s| Rc::ptr_eq(s, &self.seg))
    }

    /// The window's records (waiting for its read), with the segment and
    /// position they came from and the offset after them; None if the read
    /// failed or came back empty (the caller reads as usual).
    pub async fn take(self) -> Option<(Bytes, Rc<Segment>, u64, i64)> {
        loop {
            let woken = self.shared.done.notified();
            if !matches!(*self.shared.state.borrow(), State::Reading) {
                break;
            }
            woken.await;
        }
        let (bytes, next) = self.shared.finish()?;
        count(|c| c.1 += 1);
        Some((bytes, Rc::clone(&self.seg), self.pos, next))
    }
}

/// Starts reading the window of `seg` at `pos` (a batch start, offset
/// `offset`) for the next fetch of a reader that asked for `max_bytes`
/// under the bound `max_offset_exclusive`. None when there is nothing after
/// it in this segment, or the shard's budget is spent.
pub(crate) fn start(
    seg: &Rc<Segment>,
    pos: u64,
    offset: i64,
    max_bytes: usize,
    max_offset_exclusive: i64,
) -> Option<Window> {
    if pos >= seg.size() || offset >= max_offset_exclusive {
        return None;
    }
    // The whole size asked for: a reader asking for more than the budget
    // gets no read-ahead.
    let reserve = max_bytes;
    let fits = HELD.with(|h| {
        let now = h.get();
        let ok = now + reserve <= SHARD_BUDGET;
        if ok {
            h.set(now + reserve);
        }
        ok
    });
    if !fits {
        return None;
    }
    count(|c| c.0 += 1);
    let shared = Rc::new(Shared {
        state: RefCell::new(State::Reading),
        done: LocalNotify::default(),
        reserved: Cell::new(reserve),
    });
    let task_shared = Rc::clone(&shared);
    let task_seg = Rc::clone(seg);
    crate::runtime::spawn(async move {
        let read = task_seg
            .read_from(pos, max_bytes, max_offset_exclusive)
            .await;
        match read {
            Ok((b, next)) if !b.is_empty() => {
                let mut st = task_shared.state.borrow_mut();
                // Not if the window was given up meanwhile.
                if matches!(*st, State::Reading) {
                    let extra = b.len().saturating_sub(task_shared.reserved.get());
                    if extra > 0 {
                        HELD.with(|h| h.set(h.get() + extra));
                        task_shared.reserved.set(task_shared.reserved.get() + extra);
                    }
                    *st = State::Ready(b, next);
                }
            }
            // Failed or empty: the budget goes back now.
            _ => {
                task_shared.finish();
            }
        }
        task_shared.done.notify_all();
        crate::runtime::sleep(HOLD).await;
        if task_shared.finish().is_some() {
            count(|c| c.2 += 1);
        }
    });
    Some(Window {
        offset,
        max_bytes,
        max_offset_exclusive,
        seg: Rc::clone(seg),
        pos,
        shared,
    })
}
