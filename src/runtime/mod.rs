//! The one place that knows about glommio: shard start-up and placement,
//! cross-shard calls, spawning, timers and the memlock-derived `io_memory`.
//!
//! A shard is a glommio `LocalExecutor` pinned to one core. Work reaches another
//! shard only through [`submit_to`]: a `Send` closure is queued on that shard's
//! bounded inbox, runs there (so it may touch the shard's thread-local state),
//! and its result comes back over a oneshot channel. Nothing on the data path
//! is shared behind a lock.

pub mod histogram;
pub mod notify;
pub mod splice;
pub mod stall;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use glommio::{LocalExecutorBuilder, Placement};

pub use notify::LocalNotify;

/// Bound on queued cross-shard jobs per target shard; senders wait when it is full.
pub const SHARD_INBOX_CAPACITY: usize = 4096;

type Job = Box<dyn FnOnce() + Send + 'static>;

static INBOXES: OnceLock<Vec<mpsc::Sender<Job>>> = OnceLock::new();

thread_local! {
    static SHARD_ID: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Error from a cross-shard call: the target shard is gone (shutting down).
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

/// Wall-clock milliseconds since the epoch (Kafka timestamps). Here, below every layer
/// that needs a clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The id of the shard running the caller. Panics off-shard: a programming error.
pub fn shard_id() -> usize {
    SHARD_ID
        .with(|c| c.get())
        .expect("shard_id() called outside a shard thread")
}

/// True once [`run_shards`] has set up the shards' inboxes.
pub fn shards_started() -> bool {
    INBOXES.get().is_some()
}

/// Number of shards started.
pub fn nr_shards() -> usize {
    INBOXES.get().map(Vec::len).unwrap_or(1)
}

/// Runs `f` on shard `target` and returns its output. When `target` is the
/// calling shard the closure runs in place (no hop).
pub async fn submit_to<T, F, Fut>(target: usize, f: F) -> Result<T, ShardGone>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    if SHARD_ID.with(|c| c.get()) == Some(target) {
        return Ok(f().await);
    }
    let inbox = INBOXES
        .get()
        .and_then(|v| v.get(target))
        .ok_or(ShardGone(target))?;
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        glommio::spawn_local(stall::instrument(async move {
            let out = f().await;
            let _ = tx.send(out);
        }))
        .detach();
    });
    let mut inbox = inbox.clone();
    inbox.send(job).await.map_err(|_| ShardGone(target))?;
    rx.await.map_err(|_| ShardGone(target))
}

/// Spawns a task on the current shard, detached.
pub fn spawn<F: Future<Output = ()> + 'static>(f: F) {
    glommio::spawn_local(stall::instrument(f)).detach();
}

thread_local! {
    /// The shard's task queue for background work (log cleaning), created on first use.
    static LOW_PRIORITY: std::cell::Cell<Option<glommio::TaskQueueHandle>> =
        const { std::cell::Cell::new(None) };
}

/// Shares of the background queue against the default queue's 1000: when both have work,
/// background tasks get about a tenth of the CPU.
const LOW_PRIORITY_SHARES: usize = 100;

/// Runs `fut` in the shard's low-priority task queue and waits for it; None (logged) if it could
/// not be spawned there.
pub async fn run_low_priority<T: 'static>(fut: impl Future<Output = T> + 'static) -> Option<T> {
    let tq = LOW_PRIORITY.with(|c| match c.get() {
        Some(tq) => tq,
        None => {
            let tq = glommio::executor().create_task_queue(
                glommio::Shares::Static(LOW_PRIORITY_SHARES),
                glommio::Latency::NotImportant,
                "background",
            );
            c.set(Some(tq));
            tq
        }
    });
    match glommio::spawn_local_into(fut, tq) {
        Ok(task) => Some(task.await),
        Err(e) => {
            tracing::error!(error = %e, "cannot spawn into the background task queue");
            None
        }
    }
}

/// Lets the shard's other ready tasks run before this one goes on: a task that
/// moves many bytes in a row (a large answer to the socket, a large frame
/// from it) calls this between slices, so that no single poll holds the
/// shard for long (the stall detector's `longest_poll_us`).
pub async fn yield_now() {
    glommio::executor().yield_now().await;
}

/// Runs `f` on the shard's thread for blocking work (glommio's blocking pool,
/// pinned to the shard's core) and waits for it without blocking the shard:
/// for syscalls io_uring cannot take, such as a directory fsync.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Sleeps on the shard's timer wheel.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Runs `fut` with a deadline; `None` when it ran out.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let fut = std::pin::pin!(fut);
    let timer = std::pin::pin!(glommio::timer::sleep(d));
    match futures::future::select(fut, timer).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// Chooses glommio's per-shard registered I/O memory from RLIMIT_MEMLOCK.
///
/// Each executor pins about three times `io_memory` (one registration per ring).
/// With an unlimited memlock (root) we use glommio's 10 MiB default; otherwise
/// we split the limit between shards, never below 512 KiB (glommio refuses to
/// start below that; above the limit registration only degrades with a warning).
pub fn io_memory_for(memlock_bytes: Option<u64>, shards: usize) -> usize {
    const DEFAULT: usize = 10 << 20;
    const MIN: usize = 512 << 10;
    match memlock_bytes {
        None => DEFAULT,
        Some(limit) => {
            let per = (limit as usize) / (3 * shards.max(1) + 1);
            per.clamp(MIN, DEFAULT) & !4095
        }
    }
}

fn memlock_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => None,
        Ok((soft, _)) => Some(soft),
        Err(_) => Some(8 << 20),
    }
}

/// How each shard's executor is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardOptions {
    /// glommio registered I/O memory per shard; 0 = sized from RLIMIT_MEMLOCK.
    pub io_memory: usize,
    /// How long an idle shard keeps polling before it sleeps (`reactor.spin.before.park.us`).
    pub spin_before_park: Duration,
}

/// Starts `shards` pinned executors, each running `main(shard_id)` after the
/// cross-shard inboxes are ready, and blocks until all of them return.
pub fn run_shards<F, Fut>(shards: usize, opts: ShardOptions, main: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let limit = memlock_limit();
    let io_memory = if opts.io_memory > 0 {
        opts.io_memory
    } else {
        io_memory_for(limit, shards)
    };
    tracing::info!(
        shards,
        io_memory_bytes = io_memory,
        memlock_limit = ?limit,
        spin_before_park_us = opts.spin_before_park.as_micros() as u64,
        "starting shards (io_memory sized from RLIMIT_MEMLOCK)"
    );
    let mut senders = Vec::with_capacity(shards);
    let mut receivers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = mpsc::channel::<Job>(SHARD_INBOX_CAPACITY);
        senders.push(tx);
        receivers.push(rx);
    }
    if INBOXES.set(senders).is_err() {
        anyhow::bail!("shards already started in this process");
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut handles = Vec::new();
    for (id, mut rx) in receivers.into_iter().enumerate() {
        let main = main.clone();
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(id % cpus))
            .name(&format!("shard-{id}"))
            .io_memory(io_memory);
        if !opts.spin_before_park.is_zero() {
            builder = builder.spin_before_park(opts.spin_before_park);
        }
        let handle = builder
            .spawn(move || async move {
                SHARD_ID.with(|c| c.set(Some(id)));
                glommio::spawn_local(async move {
                    while let Some(job) = rx.next().await {
                        job();
                    }
                })
                .detach();
                main(id).await;
            })
            .map_err(|e| anyhow::anyhow!("starting shard {id}: {e}"))?;
        handles.push(handle);
    }
    let mut failed = None;
    for (id, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            failed = Some(id);
        }
    }
    match failed {
        Some(id) => anyhow::bail!("shard {id} panicked"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_memory_follows_memlock() {
        assert_eq!(io_memory_for(None, 2), 10 << 20);
        let m = io_memory_for(Some(8 << 20), 2);
        assert!(m >= 512 << 10 && 3 * 2 * m <= 8 << 20, "{m}");
        assert_eq!(io_memory_for(Some(64 << 10), 16), 512 << 10);
    }
}
