//! What one client may hold on the broker: connection slots (counted across
//! all shards, since every shard accepts on the same port) and each shard's
//! budget of queued request bytes. The settings and what a client sees when it
//! hits each limit are in docs/limits.md.
//!
//! Cost on the hot path: accepting a connection touches one global atomic (and
//! a mutex-guarded map only when `max.connections.per.ip` is set); reading a
//! request touches shard-local cells. Nothing here runs per request byte.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::ConnectionLimits;
use crate::runtime::LocalNotify;

/// Open client connections, all shards together.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Open connections per peer address; only kept when a per-IP limit is set.
static PER_IP: Mutex<Option<HashMap<IpAddr, usize>>> = Mutex::new(None);

/// `max.connections.per.ip` at or above this is Kafka's "no limit" default:
/// nothing is counted per address then.
const PER_IP_UNLIMITED: usize = i32::MAX as usize;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections` reached (the limit is carried for the log line).
    Broker(usize),
    /// `max.connections.per.ip` reached for this address.
    PerIp(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Broker(n) => write!(f, "max.connections ({n}) reached"),
            Refusal::PerIp(n) => write!(f, "max.connections.per.ip ({n}) reached"),
        }
    }
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    ip: Option<IpAddr>,
}

/// Client connections open now, all shards together.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Takes a connection slot for a peer, or says which limit refuses it.
pub fn open_connection(ip: IpAddr, limits: &ConnectionLimits) -> Result<ConnectionSlot, Refusal> {
    let taken = OPEN.fetch_add(1, Ordering::AcqRel);
    if taken >= limits.max_connections {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        return Err(Refusal::Broker(limits.max_connections));
    }
    if limits.max_connections_per_ip >= PER_IP_UNLIMITED {
        return Ok(ConnectionSlot { ip: None });
    }
    let mut guard = PER_IP.lock().unwrap_or_else(|p| p.into_inner());
    let count = guard
        .get_or_insert_with(HashMap::new)
        .entry(ip)
        .or_insert(0);
    if *count >= limits.max_connections_per_ip {
        drop(guard);
        OPEN.fetch_sub(1, Ordering::AcqRel);
        return Err(Refusal::PerIp(limits.max_connections_per_ip));
    }
    *count += 1;
    Ok(ConnectionSlot { ip: Some(ip) })
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut guard = PER_IP.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(map) = guard.as_mut() {
                if let Some(n) = map.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        map.remove(&ip);
                    }
                }
            }
        }
    }
}

/// Lets one log line through per interval and counts the ones held back, so a
/// flood of refused connections cannot flood the log.
pub struct LogLimiter {
    interval_ms: i64,
    last_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub const fn new(interval_ms: i64) -> LogLimiter {
        LogLimiter {
            interval_ms,
            last_ms: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, mentioning the `n` events not logged since the last line.
    pub fn allow(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= self.interval_ms
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// One shard's budget of request bytes that were admitted for reading and are
/// not yet released (`queued.max.request.bytes`). Admission is first come,
/// first served, so a large frame waiting for room is not starved by a stream
/// of small ones; a frame larger than the whole budget is admitted when
/// nothing else is queued, so it can never deadlock.
#[derive(Default)]
struct Budget {
    queued_bytes: Cell<usize>,
    /// Tickets handed to waiting connections, and the one whose turn it is.
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    /// Tickets whose waiter went away before its turn (its task was dropped);
    /// skipped when the turn reaches them.
    abandoned: std::cell::RefCell<std::collections::BTreeSet<u64>>,
    changed: LocalNotify,
}

impl Budget {
    fn fits(&self, bytes: usize, max: usize) -> bool {
        let q = self.queued_bytes.get();
        q == 0 || q.saturating_add(bytes) <= max
    }

    fn take(&self, bytes: usize) {
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
    }

    /// Passes the turn to the next ticket still waiting, and wakes the waiters.
    fn next_turn(&self) {
        let mut next = self.serving.get() + 1;
        let mut abandoned = self.abandoned.borrow_mut();
        while abandoned.remove(&next) {
            next += 1;
        }
        self.serving.set(next);
        drop(abandoned);
        self.changed.notify_all();
    }
}

/// A waiting connection's place in line; leaving the line early (the task
/// was dropped) must not stop the line.
struct Ticket<'a> {
    budget: &'a Budget,
    number: u64,
    served: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        if self.budget.serving.get() == self.number {
            self.budget.next_turn();
        } else {
            self.budget.abandoned.borrow_mut().insert(self.number);
        }
    }
}

/// One "budget full" log line per this interval, all shards together.
static WAIT_LOG: LogLimiter = LogLimiter::new(10_000);

thread_local! {
    static BUDGET: Rc<Budget> = Rc::new(Budget::default());
}

/// Bytes of one request counted against its shard's budget until dropped.
pub struct RequestPermit {
    budget: Option<Rc<Budget>>,
    bytes: usize,
}

/// Waits until the shard may read a request of `bytes` (`max` None: no bound).
///
/// Must be awaited to completion once started: a waiter holds a ticket, and
/// the connection task that awaits it only ends with the process.
pub async fn admit_request(bytes: usize, max: Option<usize>) -> RequestPermit {
    let Some(max) = max else {
        return RequestPermit {
            budget: None,
            bytes: 0,
        };
    };
    let b = BUDGET.with(Rc::clone);
    if b.next_ticket.get() == b.serving.get() && b.fits(bytes, max) {
        b.take(bytes);
        return RequestPermit {
            budget: Some(b),
            bytes,
        };
    }
    if let Some(suppressed) = WAIT_LOG.allow(crate::server::now_ms()) {
        tracing::info!(
            queued_bytes = b.queued_bytes.get(),
            frame_bytes = bytes,
            max_bytes = max,
            waits_since_last_line = suppressed,
            "queued.max.request.bytes reached: connection waits before reading its next frame"
        );
    }
    let number = b.next_ticket.get();
    b.next_ticket.set(number + 1);
    {
        let mut ticket = Ticket {
            budget: &b,
            number,
            served: false,
        };
        loop {
            let changed = b.changed.notified();
            if b.serving.get() == number && b.fits(bytes, max) {
                b.take(bytes);
                ticket.served = true;
                // The next in line may fit too.
                b.next_turn();
                break;
            }
            changed.await;
        }
    }
    RequestPermit {
        budget: Some(b),
        bytes,
    }
}

impl RequestPermit {
    /// Returns the bytes to the shard's budget now.
    pub fn release(self) {}
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            b.queued_bytes
                .set(b.queued_bytes.get().saturating_sub(self.bytes));
            if b.next_ticket.get() != b.serving.get() {
                b.changed.notify_all();
            }
        }
    }
}

/// Bytes queued on this shard now (for tests and logs).
pub fn queued_request_bytes() -> usize {
    BUDGET.with(|b| b.queued_bytes.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            idle_ms: 1,
            request_read_timeout_ms: 1,
            queued_max_request_bytes: None,
        }
    }

    /// Both limits in one test: the counters are process-wide.
    #[test]
    fn connection_slots_count_and_free() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let l = limits(3, 2);
        let s1 = open_connection(a, &l).unwrap();
        let s2 = open_connection(a, &l).unwrap();
        assert_eq!(open_connection(a, &l).unwrap_err(), Refusal::PerIp(2));
        let s3 = open_connection(b, &l).unwrap();
        assert_eq!(open_connection(b, &l).unwrap_err(), Refusal::Broker(3));
        drop(s1);
        let s4 = open_connection(a, &l).unwrap();
        drop((s2, s3, s4));
        assert_eq!(OPEN.load(Ordering::Acquire), 0);
        let guard = PER_IP.lock().unwrap();
        assert!(guard.as_ref().is_some_and(HashMap::is_empty));
    }

    #[test]
    fn log_limiter_lets_one_line_per_interval() {
        let l = LogLimiter::new(1000);
        assert_eq!(l.allow(10_000), Some(0));
        assert_eq!(l.allow(10_500), None);
        assert_eq!(l.allow(10_900), None);
        assert_eq!(l.allow(11_000), Some(2));
    }

    #[test]
    fn budget_is_fifo_and_admits_an_oversized_frame_alone() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let big = admit_request(300, Some(100)).await; // alone: admitted
            assert_eq!(queued_request_bytes(), 300);
            let order = Rc::new(std::cell::RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for (i, size) in [(1, 80usize), (2, 10), (3, 10)] {
                let order = order.clone();
                tasks.push(glommio::spawn_local(async move {
                    let p = admit_request(size, Some(100)).await;
                    order.borrow_mut().push(i);
                    p
                }));
            }
            glommio::yield_if_needed().await;
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            assert!(
                order.borrow().is_empty(),
                "nothing fits beside the big frame"
            );
            big.release();
            let mut held = Vec::new();
            for t in tasks {
                held.push(t.await);
            }
            assert_eq!(*order.borrow(), vec![1, 2, 3]);
            assert_eq!(queued_request_bytes(), 100);
            drop(held);
            assert_eq!(queued_request_bytes(), 0);
            // A waiter dropped before its turn does not stop the line.
            let hold = admit_request(100, Some(100)).await;
            let gone = glommio::spawn_local(admit_request(50, Some(100))).detach();
            let next = glommio::spawn_local(admit_request(60, Some(100)));
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            gone.cancel();
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            drop(hold);
            let p = next.await;
            assert_eq!(queued_request_bytes(), 60);
            drop(p);
            let unbounded = admit_request(1 << 40, None).await;
            assert_eq!(queued_request_bytes(), 0);
            drop(unbounded);
        });
    }
}
