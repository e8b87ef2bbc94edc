//! A single-shard "something changed" signal: tasks wait for the next
//! `notify_all`, used for long polling (a fetch waits for an append).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter on `notify_all`. Not `Send`: lives on one shard.
#[derive(Default)]
pub struct LocalNotify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalNotify {
    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves after the next `notify_all` following this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            seen: self.generation.get(),
            waker: None,
        }
    }
}

/// Future returned by [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
    seen: u64,
    waker: Option<Waker>,
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        // A waiter that gives up (timeout) takes its waker out, so the list stays
        // bounded by the number of tasks waiting right now.
        if let Some(mine) = self.waker.take() {
            if let Ok(mut w) = self.notify.waiters.try_borrow_mut() {
                w.retain(|x| !x.will_wake(&mine));
            }
        }
    }
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notify.generation.get() != this.seen {
            this.waker = None;
            return Poll::Ready(());
        }
        let mut w = this.notify.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
