//! The partitions a shard owns: opening (and so recovering) their logs,
//! finding them for requests, applying config changes, retention, deletion
//! and clean close. Shard-local: every function here runs on the owner shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::BrokerConfig;
use crate::runtime::{self, LocalNotify};
use crate::storage::{PartitionLog, StorageError};

use super::replica::{Assignment, Replica, Transition};
use super::{image, owner_shard, PartitionMeta, TopicMeta};

/// A partition owned by this shard: its log, and a signal fired on every
/// append so long-polling fetches wake on data, not on a timer.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: PartitionLog,
    /// Fired on every append, and on the leader of a replicated partition whenever the high
    /// watermark moves or the replica's role changes: long-polling fetches and acks=all
    /// produces waiting for replication wake on it.
    pub appended: LocalNotify,
    /// Leader or follower, and the leader's view of its followers (`replica.rs`).
    pub replica: RefCell<Replica>,
    /// Bumped at every role change, so a fetcher or waiter notices it was superseded.
    pub role_generation: Cell<u64>,
}

impl Partition {
    /// Offsets below this are visible to consumers. A partition with one replica commits
    /// every completed write, so its high watermark is the log end; a replicated one's is
    /// the slowest in-sync replica's log end (`replica.rs`).
    pub fn high_watermark(&self) -> i64 {
        let end = self.log.log_end_offset();
        let mut r = self.replica.borrow_mut();
        if !r.replicated() {
            return end;
        }
        if r.is_leader() {
            r.advance(end);
        }
        r.high_watermark.clamp(self.log.log_start_offset(), end)
    }

    /// Applies the image's assignment of this partition: becoming its leader stamps the new
    /// leader epoch from the log end on; becoming a follower hands it to this shard's
    /// fetcher for the leader. Wakes everything waiting on the partition.
    pub async fn apply_assignment(self: &Rc<Self>, a: &Assignment) {
        let end = self.log.log_end_offset();
        let was_leader = self.replica.borrow().is_leader();
        let t = self
            .replica
            .borrow_mut()
            .apply(a, end, crate::runtime::now_ms());
        match t {
            Transition::Same => {}
            Transition::BecameLeader => {
                if let Err(e) = self.log.assign_epoch(a.leader_epoch, end).await {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                        "cannot record the new leader epoch");
                }
                if a.replicas.len() > 1 {
                    tracing::info!(topic = %self.topic, partition = self.index, epoch = a.leader_epoch,
                        log_end_offset = end, isr = ?a.isr, "leading the partition");
                }
            }
            Transition::BecameFollower { leader } => {
                self.log.set_leader_epoch(a.leader_epoch);
                tracing::info!(topic = %self.topic, partition = self.index, leader, epoch = a.leader_epoch,
                    "following the partition's leader");
            }
            Transition::Stopped => {
                tracing::info!(topic = %self.topic, partition = self.index, "no longer leading or following the partition");
            }
        }
        if t != Transition::Same {
            self.role_generation.set(self.role_generation.get() + 1);
        }
        super::fetcher::sync(self);
        self.appended.notify_all();
        let leading = self.replica.borrow().is_leader();
        if leading != was_leader {
            let hooks = LEADERSHIP_HOOKS
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default();
            for hook in hooks {
                hook(&self.topic, self.index, leading);
            }
        }
    }

    /// Writes a transaction marker (`PartitionLog::append_marker`: durable when it returns) and
    /// wakes long-polling fetches, whose last stable offset may have moved.
    pub async fn write_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<crate::storage::AppendResult, StorageError> {
        let r = self
            .log
            .append_marker(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                now_ms,
            )
            .await;
        // Wake readers even on error: part of the marker may be written.
        self.appended.notify_all();
        r
    }
}

/// Topic name, then partition index: looked up by `&str`, so finding a
/// partition on the request path allocates nothing.
type Parts = HashMap<String, HashMap<i32, Rc<Partition>>>;

struct Manager {
    parts: RefCell<Parts>,
    /// Set by [`close_all`]: no log is opened again while the shard stops (a follower's
    /// fetch arriving then would reopen a log being closed).
    closing: Cell<bool>,
    /// Serialises opens so two requests never open the same log twice.
    open_lock: Rc<glommio::sync::Semaphore>,
    /// Partitions closed for the last pass of a move between log dirs (`dir_move.rs`).
    moving: RefCell<std::collections::HashSet<(String, i32)>>,
    /// Partitions with a move under way (either pass), so a second request waits its turn.
    move_queued: RefCell<std::collections::HashSet<(String, i32)>>,
}

thread_local! {
    static MANAGER: Manager = Manager {
        parts: RefCell::new(HashMap::new()),
        closing: Cell::new(false),
        open_lock: Rc::new(glommio::sync::Semaphore::new(1)),
        moving: RefCell::new(std::collections::HashSet::new()),
        move_queued: RefCell::new(std::collections::HashSet::new()),
    };
}

static CONFIG: OnceLock<Arc<BrokerConfig>> = OnceLock::new();

/// Called on a partition's owner shard when this broker starts (`true`) or stops leading
/// it: the coordinators above load or drop the state they keep in their internal topics.
pub type LeadershipHook = fn(&str, i32, bool);

static LEADERSHIP_HOOKS: std::sync::Mutex<Vec<LeadershipHook>> = std::sync::Mutex::new(Vec::new());

/// Registers a [`LeadershipHook`] (at start-up, before the shards open their partitions).
pub fn on_leadership_change(hook: LeadershipHook) {
    if let Ok(mut hooks) = LEADERSHIP_HOOKS.lock() {
        hooks.push(hook);
    }
}

/// Installs the broker config (once, at start-up).
pub fn install_config(cfg: Arc<BrokerConfig>) {
    crate::storage::log_dirs::install(&cfg.log_dirs);
    let _ = CONFIG.set(cfg);
}

/// The broker config installed at start-up.
pub fn broker_config() -> Arc<BrokerConfig> {
    CONFIG
        .get()
        .cloned()
        .expect("broker config installed before shards start")
}

/// Directory of a partition's log.
pub fn partition_dir(cfg: &BrokerConfig, topic: &str, index: i32, log_dir: usize) -> PathBuf {
    let base = cfg.log_dirs.get(log_dir).or_else(|| cfg.log_dirs.first());
    base.cloned()
        .unwrap_or_default()
        .join(format!("{topic}-{index}"))
}

/// The open partition, opening its log if the metadata has it and this shard
/// owns it. `Ok(None)` when the metadata does not know the partition.
/// A partition whose log dir went offline (`storage::log_dirs`) answers `LogDirOffline`, so
/// every request on it gets KAFKA_STORAGE_ERROR.
/// In a cluster of several brokers, a partition another broker leads answers `NotLeader`
/// (NOT_LEADER_OR_FOLLOWER); a single node leads all its partitions and skips the check.
pub async fn get(topic: &str, index: i32) -> Result<Option<Rc<Partition>>, StorageError> {
    if super::multi_node() {
        let img = image();
        if let Some((_, p)) = img.partition(topic, index) {
            let me = broker_config().node_id;
            if p.leader != me {
                return Err(StorageError::NotLeader(format!(
                    "{topic}-{index} is led by {}, not by broker {me}",
                    p.leader
                )));
            }
        }
    }
    get_hosted(topic, index).await
}

/// As [`get`], without the leadership check: for the partitions this broker hosts (the
/// image listener opening new ones).
pub async fn get_hosted(topic: &str, index: i32) -> Result<Option<Rc<Partition>>, StorageError> {
    if MANAGER.with(|m| m.moving.borrow().contains(&(topic.to_string(), index))) {
        return Err(StorageError::NotLeader(format!(
            "{topic}-{index} is moving between log dirs; retry"
        )));
    }
    if let Some(p) = lookup(topic, index) {
        if let Some(why) = crate::storage::log_dirs::offline_reason(&p.log.dir) {
            return Err(StorageError::LogDirOffline(why));
        }
        return Ok(Some(p));
    }
    let img = image();
    let Some((t, _)) = img.partition(topic, index) else {
        return Ok(None);
    };
    let t = t.clone();
    open(&t, index).await.map(Some)
}

fn lookup(topic: &str, index: i32) -> Option<Rc<Partition>> {
    MANAGER.with(|m| {
        m.parts
            .borrow()
            .get(topic)
            .and_then(|ps| ps.get(&index))
            .cloned()
    })
}

async fn open(t: &TopicMeta, index: i32) -> Result<Rc<Partition>, StorageError> {
    let sem = MANAGER.with(|m| m.open_lock.clone());
    let _permit = sem
        .acquire_permit(1)
        .await
        .map_err(|e| StorageError::Io(e.to_string()))?;
    if let Some(p) = lookup(&t.name, index) {
        return Ok(p);
    }
    if MANAGER.with(|m| m.closing.get()) {
        return Err(StorageError::NotLeader(format!(
            "{}-{index}: the broker is shutting down",
            t.name
        )));
    }
    let cfg = broker_config();
    let pm = t
        .partitions
        .get(index as usize)
        .ok_or_else(|| StorageError::Io(format!("{}-{index} vanished from metadata", t.name)))?;
    let dir = partition_dir(&cfg, &t.name, index, pm.log_dir);
    if let Some(why) = crate::storage::log_dirs::offline_reason(&dir) {
        return Err(StorageError::LogDirOffline(why));
    }
    let log_cfg = cfg
        .log_config(&t.configs)
        .map_err(|e| StorageError::Io(format!("config of {}: {e:#}", t.name)))?;
    let log = PartitionLog::open(&dir, log_cfg, pm.leader_epoch).await?;
    tracing::debug!(topic = %t.name, partition = index, dir = %dir.display(),
        log_end_offset = log.log_end_offset(), "partition opened");
    let end = log.log_end_offset();
    let p = Rc::new(Partition {
        topic: t.name.clone(),
        index,
        log,
        appended: LocalNotify::default(),
        replica: RefCell::new(Replica::new(cfg.node_id, end)),
        role_generation: Cell::new(0),
    });
    MANAGER.with(|m| {
        m.parts
            .borrow_mut()
            .entry(t.name.clone())
            .or_default()
            .insert(index, p.clone())
    });
    p.apply_assignment(&assignment(t, pm)).await;
    Ok(p)
}

/// The image's view of a partition, for its replica state.
pub fn assignment(t: &TopicMeta, pm: &PartitionMeta) -> Assignment {
    let min_isr = broker_config()
        .topic_value(&t.configs, "min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    Assignment {
        leader: pm.leader,
        leader_epoch: pm.leader_epoch,
        partition_epoch: pm.partition_epoch,
        replicas: pm.replicas.clone(),
        isr: pm.isr.clone(),
        min_isr,
    }
}

/// Brings an open partition's replica state in line with the current image (the image
/// listener calls it on the owner shard when leader, epoch, ISR or replicas changed).
pub async fn reassign(topic: &str, index: i32) {
    let Some(p) = lookup(topic, index) else {
        return;
    };
    let img = image();
    if let Some((t, pm)) = img.partition(topic, index) {
        p.apply_assignment(&assignment(t, pm)).await;
    }
}

/// The open partitions of this shard (for the replica maintenance loop).
pub fn open_partitions() -> Vec<Rc<Partition>> {
    all_open()
}

/// Opens (and recovers) every partition this shard owns, before serving.
pub async fn open_owned() -> anyhow::Result<usize> {
    let img = image();
    let me = runtime::shard_id();
    let n = runtime::nr_shards();
    let node = broker_config().node_id;
    let mut opened = 0;
    for t in img.topics.values() {
        for p in &t.partitions {
            if owner_shard(&t.name, p.index, n) == me && p.replicas.contains(&node) {
                open(t, p.index)
                    .await
                    .map_err(|e| anyhow::anyhow!("opening {}-{}: {e}", t.name, p.index))?;
                opened += 1;
            }
        }
    }
    Ok(opened)
}

/// Closes and deletes a partition's log (topic deletion).
pub async fn delete(topic: &str, index: i32, dir: PathBuf) -> Result<(), StorageError> {
    let p = MANAGER.with(|m| {
        let mut parts = m.parts.borrow_mut();
        let p = parts.get_mut(topic).and_then(|ps| ps.remove(&index));
        if parts.get(topic).is_some_and(HashMap::is_empty) {
            parts.remove(topic);
        }
        p
    });
    super::fetcher::forget(topic, index);
    match p {
        Some(p) => {
            p.appended.notify_all();
            p.log.delete().await
        }
        // Not open here: its files are closed, so unlinking them frees their
        // blocks, which can take long (storage::reclaim): off the shard.
        None => match crate::runtime::blocking({
            let dir = dir.clone();
            move || std::fs::remove_dir_all(dir)
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Io(format!("removing {}: {e}", dir.display()))),
        },
    }
}

/// Moves a hosted partition's log to log dir `target` (an index into `log.dirs`; see
/// `dir_move.rs`): a first copy while it serves, then a short close for the rest and the
/// swap; the publisher then places it there and it reopens with its role. On the owner
/// shard. Errors leave the partition where it was.
pub async fn move_to_dir(topic: &str, index: i32, target: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    let key = (topic.to_string(), index);
    if !MANAGER.with(|m| m.move_queued.borrow_mut().insert(key.clone())) {
        anyhow::bail!("{topic}-{index} is already moving");
    }
    let result = move_inner(topic, index, target).await;
    MANAGER.with(|m| {
        m.move_queued.borrow_mut().remove(&key);
        m.moving.borrow_mut().remove(&key);
    });
    if result.is_err() {
        let cfg = broker_config();
        if let Some(base) = cfg.log_dirs.get(target).cloned() {
            let name = format!("{topic}-{index}");
            let _ = runtime::blocking(move || super::dir_move::abandon(&base, &name)).await;
        }
    }
    // Reopen at once (in the new dir, or the old one after a failure) so followers and
    // clients find it without waiting for a request to do it.
    if let Err(e) = get_hosted(topic, index).await {
        tracing::warn!(topic, partition = index, error = %e, "reopening a moved partition failed");
    }
    return result;

    async fn move_inner(topic: &str, index: i32, target: usize) -> anyhow::Result<()> {
        let cfg = broker_config();
        let base = cfg
            .log_dirs
            .get(target)
            .cloned()
            .context("no such log dir")?;
        let p = get_hosted(topic, index)
            .await?
            .with_context(|| format!("{topic}-{index} is not hosted here"))?;
        let from = p.log.dir.clone();
        let name = format!("{topic}-{index}");
        if from.parent() == Some(base.as_path()) {
            return Ok(());
        }
        tracing::info!(topic, partition = index, from = %from.display(), to = %base.display(), "moving a replica between log dirs");
        let copied = {
            let (from, base, name) = (from.clone(), base.clone(), name.clone());
            runtime::blocking(move || super::dir_move::precopy(&from, &base, &name))
                .await
                .context("first copy")?
        };
        // Last pass: the partition closes; requests answer NOT_LEADER_OR_FOLLOWER meanwhile.
        let key = (topic.to_string(), index);
        MANAGER.with(|m| {
            m.moving.borrow_mut().insert(key.clone());
            let mut parts = m.parts.borrow_mut();
            if let Some(ps) = parts.get_mut(topic) {
                ps.remove(&index);
                if ps.is_empty() {
                    parts.remove(topic);
                }
            }
        });
        super::fetcher::forget(topic, index);
        p.role_generation.set(p.role_generation.get() + 1);
        p.appended.notify_all();
        p.log
            .close()
            .await
            .context("closing the log for the move")?;
        drop(p);
        let started = std::time::Instant::now();
        let to = {
            let (from, base, name) = (from.clone(), base.clone(), name.clone());
            runtime::blocking(move || super::dir_move::finish(&from, &base, &name, &copied)).await
        };
        let to = match to {
            Ok(to) => to,
            Err(e) => {
                // The old directory is intact unless the swap's first rename happened; the
                // publisher still points at it, so the reopen below finds it.
                return Err(e.context("last copy and swap"));
            }
        };
        let img = super::image();
        if let Some((t, _)) = img.partition(topic, index) {
            super::publisher::relocate(t.id, index, target);
        }
        tracing::info!(topic, partition = index, dir = %to.display(),
            closed_ms = started.elapsed().as_millis() as u64, "replica moved between log dirs");
        Ok(())
    }
}

/// Applies a topic's new config to the partitions of it open on this shard.
pub fn apply_config(topic: &str, overrides: &std::collections::BTreeMap<String, String>) {
    let cfg = broker_config();
    let Ok(log_cfg) = cfg.log_config(overrides) else {
        tracing::error!(topic, "refusing invalid topic config at apply time");
        return;
    };
    MANAGER.with(|m| {
        for p in m
            .parts
            .borrow()
            .get(topic)
            .into_iter()
            .flat_map(HashMap::values)
        {
            p.log.set_config(log_cfg.clone());
        }
    });
}

fn all_open() -> Vec<Rc<Partition>> {
    MANAGER.with(|m| {
        m.parts
            .borrow()
            .values()
            .flat_map(HashMap::values)
            .cloned()
            .collect()
    })
}

/// Retention and time-based roll every `log.retention.check.interval.ms`, and a log cleaner
/// pass on compacted partitions every `log.cleaner.backoff.ms` (when `log.cleaner.enable`). The
/// cleaner runs in the shard's low-priority task queue so produce and fetch go first.
pub async fn housekeeping_loop() {
    let cfg = broker_config();
    let retention_every_ms = cfg.retention_check_interval_ms.max(100);
    let cleaner_every_ms = cfg
        .log_cleaner_enable
        .then_some(cfg.log_cleaner_backoff_ms.max(100));
    let tick_ms = cleaner_every_ms.map_or(retention_every_ms, |c| c.min(retention_every_ms));
    let (mut since_retention_ms, mut since_cleaner_ms) = (0u64, 0u64);
    loop {
        runtime::sleep(Duration::from_millis(tick_ms)).await;
        since_retention_ms += tick_ms;
        since_cleaner_ms += tick_ms;
        if since_retention_ms >= retention_every_ms {
            since_retention_ms = 0;
            let now = crate::runtime::now_ms();
            for p in all_open() {
                if let Err(e) = p.log.housekeeping(now).await {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "housekeeping failed");
                }
            }
        }
        if cleaner_every_ms.is_some_and(|every| since_cleaner_ms >= every) {
            since_cleaner_ms = 0;
            for p in all_open() {
                if !p.log.cleanup_policy().compacts() {
                    continue;
                }
                let part = Rc::clone(&p);
                let pass = runtime::run_low_priority(async move {
                    part.log.compact(crate::runtime::now_ms()).await
                })
                .await;
                if let Some(Err(e)) = pass {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "log cleaner pass failed");
                }
            }
        }
    }
}

/// (topic, partition, logical size in bytes) of every log open on this shard (DescribeLogDirs).
pub fn open_sizes() -> Vec<(String, i32, u64)> {
    all_open()
        .iter()
        .map(|p| (p.topic.clone(), p.index, p.log.size_bytes()))
        .collect()
}

/// Flushes and closes every open log (clean shutdown).
pub async fn close_all() {
    let parts: Vec<Rc<Partition>> = MANAGER.with(|m| {
        m.closing.set(true);
        m.parts
            .borrow_mut()
            .drain()
            .flat_map(|(_, ps)| ps.into_values())
            .collect()
    });
    for p in parts {
        p.appended.notify_all();
        if let Err(e) = p.log.close().await {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "close failed");
        }
    }
}
