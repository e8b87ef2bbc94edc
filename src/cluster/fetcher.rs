//! The follower's side of replication: one fetcher per (leader broker, shard), on the shard
//! that owns the partitions it fetches, so a follower's appends never leave their owner
//! shard and nothing on the data path takes a lock.
//!
//! A fetcher sends Kafka Fetch requests (v12, `replica_id` = this node) to the leader's
//! advertised listener, one request for all the partitions this shard follows there, each
//! from its log end offset with the epoch of its last batch (KIP-320). For each partition
//! of the answer it, in order:
//! - truncates a divergent tail when the leader names a diverging epoch (the leader's
//!   end offset for the follower's last epoch), as Kafka's fetcher does: to the smaller of
//!   the two end offsets for that epoch, over as many rounds as the epochs need;
//! - appends the records as they are (`PartitionLog::append_replicated`: offsets, epochs
//!   and timestamps are the leader's) and syncs them, so the offset it fetches from next,
//!   which the leader counts as this replica's log end, is durable;
//! - takes the leader's high watermark, bounded by what it holds;
//! - restarts an empty log at the leader's log start when it fell out of the leader's
//!   range.
//!
//! A role change (`Partition::apply_assignment`) adds the partition to the fetcher of its
//! new leader and removes it from every other; a fetcher with nothing left to fetch ends.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::Duration;

use anyhow::{bail, Context};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::image;
use super::partition_manager::{broker_config, Partition};
use super::peer_client::{address_of, PeerConn};
use super::replica::Role;
use super::throttle;
use crate::runtime::{self, LocalNotify};

/// Fetch version followers send: the last with topic names (v13+ use topic ids), with
/// `replica_id`, `current_leader_epoch`, `last_fetched_epoch` and the diverging epoch.
const FETCH_VERSION: i16 = 12;
/// How long a fetcher whose every partition is throttled waits before it looks again.
const THROTTLE_PAUSE: Duration = Duration::from_millis(100);
/// Time allowed for an answer beyond the long-poll wait.
const ANSWER_SLACK: Duration = Duration::from_secs(10);

type Key = (String, i32);

/// The partitions one shard follows on one leader.
struct Fetcher {
    leader: i32,
    parts: RefCell<BTreeMap<Key, Weak<Partition>>>,
    /// Fired when a partition is added, so a waiting fetcher starts at once.
    added: LocalNotify,
}

thread_local! {
    static FETCHERS: RefCell<HashMap<i32, Rc<Fetcher>>> = RefCell::new(HashMap::new());
}

/// Puts `p` in the fetcher of its leader (starting one if needed) when this broker follows
/// it, and out of every other fetcher. On the partition's owner shard.
pub fn sync(p: &Rc<Partition>) {
    let leader = match p.replica.borrow().role {
        Role::Follower { leader } => Some(leader),
        _ => None,
    };
    let key = (p.topic.clone(), p.index);
    let start = FETCHERS.with(|f| {
        let mut fetchers = f.borrow_mut();
        for (id, fetcher) in fetchers.iter() {
            if Some(*id) != leader {
                fetcher.parts.borrow_mut().remove(&key);
            }
        }
        let leader = leader?;
        let mut started = None;
        let fetcher = fetchers.entry(leader).or_insert_with(|| {
            let f = Rc::new(Fetcher {
                leader,
                parts: RefCell::new(BTreeMap::new()),
                added: LocalNotify::default(),
            });
            started = Some(f.clone());
            f
        });
        fetcher.parts.borrow_mut().insert(key, Rc::downgrade(p));
        fetcher.added.notify_all();
        started
    });
    if let Some(f) = start {
        runtime::spawn(run(f));
    }
}

/// Stops fetching a partition (deleted, or closing).
pub fn forget(topic: &str, index: i32) {
    let key = (topic.to_string(), index);
    FETCHERS.with(|f| {
        for fetcher in f.borrow().values() {
            fetcher.parts.borrow_mut().remove(&key);
        }
    });
}

/// Number of partitions this shard follows (for status and tests).
pub fn following() -> usize {
    FETCHERS.with(|f| f.borrow().values().map(|x| x.parts.borrow().len()).sum())
}

impl Fetcher {
    /// The partitions still followed here, dropping closed ones.
    fn live(&self) -> Vec<Rc<Partition>> {
        let mut parts = self.parts.borrow_mut();
        parts.retain(|_, w| w.strong_count() > 0);
        parts.values().filter_map(Weak::upgrade).collect()
    }
}

/// One fetcher's loop; ends when it has nothing to fetch.
async fn run(f: Rc<Fetcher>) {
    let cfg = broker_config();
    let repl = cfg.cluster.replication.clone();
    let backoff = Duration::from_millis(repl.fetch_backoff_ms);
    let mut conn: Option<PeerConn> = None;
    let mut failures = 0u32;
    // Partitions whose last answer was an error sit out of the fetches until then (Kafka's
    // delayed partitions), so one partition the leader refuses (a leadership change not yet
    // applied there) neither spins the loop nor holds back the others.
    let mut delayed: HashMap<Key, std::time::Instant> = HashMap::new();
    tracing::debug!(leader = f.leader, "replica fetcher started");
    loop {
        let mut parts = f.live();
        let now = std::time::Instant::now();
        delayed.retain(|_, until| *until > now);
        if !parts.is_empty() && !delayed.is_empty() {
            parts.retain(|p| !delayed.contains_key(&(p.topic.clone(), p.index)));
            if parts.is_empty() {
                let next = delayed.values().min().copied().unwrap_or(now + backoff);
                let _ =
                    runtime::timeout(next.saturating_duration_since(now), f.added.notified()).await;
                continue;
            }
        }
        if parts.is_empty() {
            let done = FETCHERS.with(|x| {
                let mut fetchers = x.borrow_mut();
                let empty = f.parts.borrow().is_empty();
                if empty && fetchers.get(&f.leader).is_some_and(|g| Rc::ptr_eq(g, &f)) {
                    fetchers.remove(&f.leader);
                }
                empty
            });
            if done {
                tracing::debug!(
                    leader = f.leader,
                    "replica fetcher stopped: nothing to follow"
                );
                return;
            }
            continue;
        }
        let Some(addr) = address_of(&image(), f.leader) else {
            // The leader is fenced or unknown: wait for the image to move leadership.
            conn = None;
            let _ = runtime::timeout(backoff, f.added.notified()).await;
            continue;
        };
        if conn.as_ref().is_none_or(|c| c.addr() != addr) {
            match PeerConn::connect(&addr, "sluice-replica-fetcher").await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(leader = f.leader, %addr, error = %format!("{e:#}"), "cannot reach the partition leader");
                    }
                    runtime::sleep(backoff).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Replication throttle (throttle.rs): replicas named for this follower and out of
        // the ISR sit out while this shard's throttled fetching is over its share.
        let img = image();
        let rate = throttle::rate(&img, &cfg, throttle::FOLLOWER_RATE);
        let throttled: HashSet<Key> = if rate == throttle::UNLIMITED {
            HashSet::new()
        } else {
            parts
                .iter()
                .filter(|p| {
                    !p.replica.borrow().isr.contains(&cfg.node_id)
                        && throttle::listed(
                            &img,
                            &p.topic,
                            throttle::FOLLOWER_REPLICAS,
                            p.index,
                            cfg.node_id,
                        )
                })
                .map(|p| (p.topic.clone(), p.index))
                .collect()
        };
        drop(img);
        let allowance = if throttled.is_empty() {
            u64::MAX
        } else {
            throttle::allowance(&cfg, false, rate, runtime::now_ms())
        };
        if allowance == 0 {
            parts.retain(|p| !throttled.contains(&(p.topic.clone(), p.index)));
            if parts.is_empty() {
                let _ = runtime::timeout(THROTTLE_PAUSE, f.added.notified()).await;
                continue;
            }
        }
        let (mut req, sent) = request(&parts, cfg.node_id, &repl);
        if allowance != u64::MAX && allowance > 0 {
            // The throttled partitions share what the rate allows now (each still gets a
            // whole batch: KIP-74).
            let share = allowance / throttled.len().max(1) as u64;
            let share = i32::try_from(share.max(1)).unwrap_or(i32::MAX);
            for t in &mut req.topics {
                for fp in &mut t.partitions {
                    if throttled.contains(&(t.topic.0.to_string(), fp.partition)) {
                        fp.partition_max_bytes = fp.partition_max_bytes.min(share);
                    }
                }
            }
        }
        let wait = Duration::from_millis(repl.fetch_wait_max_ms) + ANSWER_SLACK;
        let resp = match runtime::timeout(wait, c.send(&req, FETCH_VERSION)).await {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(leader = f.leader, %addr, error = %format!("{e:#}"), "follower fetch failed");
                }
                conn = None;
                runtime::sleep(backoff).await;
                continue;
            }
            None => {
                tracing::warn!(leader = f.leader, %addr, "follower fetch timed out");
                conn = None;
                continue;
            }
        };
        failures = 0;
        if resp.error_code != 0 {
            tracing::warn!(
                leader = f.leader,
                code = resp.error_code,
                "follower fetch refused"
            );
            runtime::sleep(backoff).await;
            continue;
        }
        for t in &resp.responses {
            for pd in &t.partitions {
                let key = (t.topic.0.to_string(), pd.partition_index);
                let Some((p, generation, offset)) = sent.get(&key) else {
                    continue;
                };
                if p.role_generation.get() != *generation {
                    continue; // the role changed while the fetch was out
                }
                if throttled.contains(&key) {
                    let bytes = pd.records.as_ref().map_or(0, |r| r.len() as u64);
                    throttle::record(&cfg, false, rate, bytes, runtime::now_ms());
                }
                if let Err(e) = on_partition(p, *offset, pd).await {
                    tracing::warn!(topic = %p.topic, partition = p.index, leader = f.leader,
                        error = %format!("{e:#}"), "replicating from the leader failed");
                    delayed.insert(key, std::time::Instant::now() + backoff);
                }
            }
        }
    }
}

/// What was asked for each partition: the partition, its role generation, the offset.
type Sent = HashMap<Key, (Rc<Partition>, u64, i64)>;

fn request(
    parts: &[Rc<Partition>],
    node: i32,
    repl: &crate::config::cluster::ReplicationSettings,
) -> (FetchRequest, Sent) {
    let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    let mut sent = HashMap::new();
    for p in parts {
        let offset = p.log.log_end_offset();
        let mut fp = FetchPartition::default();
        fp.partition = p.index;
        fp.current_leader_epoch = p.replica.borrow().leader_epoch;
        fp.fetch_offset = offset;
        fp.last_fetched_epoch = p.log.latest_epoch().unwrap_or(-1);
        fp.log_start_offset = p.log.log_start_offset();
        fp.partition_max_bytes = i32::try_from(repl.fetch_max_bytes).unwrap_or(i32::MAX);
        topics.entry(p.topic.clone()).or_default().push(fp);
        sent.insert(
            (p.topic.clone(), p.index),
            (p.clone(), p.role_generation.get(), offset),
        );
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(node);
    req.max_wait_ms = i32::try_from(repl.fetch_wait_max_ms).unwrap_or(i32::MAX);
    req.min_bytes = i32::try_from(repl.fetch_min_bytes).unwrap_or(1);
    req.max_bytes = i32::try_from(repl.fetch_response_max_bytes).unwrap_or(i32::MAX);
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(name));
            t.partitions = partitions;
            t
        })
        .collect();
    (req, sent)
}

/// Applies one partition of a leader's answer (see the module docs).
async fn on_partition(
    p: &Rc<Partition>,
    fetch_offset: i64,
    pd: &kafka_protocol::messages::fetch_response::PartitionData,
) -> anyhow::Result<()> {
    let now = runtime::now_ms();
    match ResponseError::try_from_code(pd.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            let end = p.log.log_end_offset();
            if fetch_offset < pd.log_start_offset {
                tracing::warn!(topic = %p.topic, partition = p.index, fetch_offset,
                    leader_log_start = pd.log_start_offset,
                    "behind the leader's log start: restarting the log there");
                p.log
                    .truncate_fully_and_start_at(pd.log_start_offset)
                    .await?;
            } else if pd.high_watermark >= 0 && end > pd.high_watermark {
                tracing::warn!(topic = %p.topic, partition = p.index, fetch_offset,
                    leader_high_watermark = pd.high_watermark,
                    "ahead of the leader: truncating to its high watermark");
                p.log.truncate_to(pd.high_watermark).await?;
            }
            return Ok(());
        }
        Some(e) => bail!("the leader answered {e:?}"),
    }
    let div = &pd.diverging_epoch;
    if div.epoch >= 0 || div.end_offset >= 0 {
        let end = p.log.log_end_offset();
        let target = if div.epoch < 0 {
            p.high_watermark().min(end)
        } else {
            let (mine, mine_end) = p.log.end_offset_for_epoch(div.epoch);
            if mine == div.epoch {
                div.end_offset.min(mine_end).min(end)
            } else if mine_end >= 0 {
                // The leader's epoch is unknown here: cut back to the end of the last epoch
                // below it that is, and ask again from there.
                mine_end.min(end)
            } else {
                div.end_offset.min(end)
            }
        };
        tracing::info!(topic = %p.topic, partition = p.index, log_end_offset = end, truncate_to = target,
            leader_epoch = div.epoch, leader_end_offset = div.end_offset, "truncating a divergent tail");
        p.log.truncate_to(target).await?;
        return Ok(());
    }
    if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
        let r = p
            .log
            .append_replicated(records.clone(), now)
            .await
            .context("appending the leader's records")?;
        p.log
            .flush(r.last_offset)
            .await
            .context("syncing the leader's records")?;
    }
    let end = p.log.log_end_offset();
    p.replica
        .borrow_mut()
        .follower_high_watermark(pd.high_watermark, end);
    Ok(())
}
