//! The image listener: makes this broker's logs follow the metadata image.
//!
//! One task on shard 0. Each time the quorum thread publishes an image
//! (`publisher.rs`), it compares the image it last handled with the new one
//! and, on the owner shards: deletes the logs of topics deleted (by id: a topic
//! deleted and created again under its name is another topic) that were hosted
//! here, opens the logs of new partitions hosted here (which creates their
//! directories, so a produce right after a CreateTopics finds them), and
//! applies changed topic configs. A reassignment that adds this broker to a
//! partition's replicas opens it here (as a follower); one that removes it
//! closes and deletes the local copy. Deletions go first. Each change is handled
//! once, in image order; [`wait_processed`] lets a proposer wait until the
//! entry it committed has been handled here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{image, owner_shard, partition_manager, MetadataImage, TopicMeta};
use crate::runtime;

/// Applied index of the last image this broker's logs were brought in line with.
static PROCESSED: AtomicU64 = AtomicU64::new(0);
/// How often a waiter looks at [`PROCESSED`] (admin operations only).
const WAIT_POLL_MS: u64 = 2;

/// Waits (bounded) until the image listener has handled the image of entry `index`.
pub async fn wait_processed(index: u64, timeout_ms: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
    while PROCESSED.load(Ordering::Acquire) < index {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(index, "the image listener is behind; answering anyway");
            return false;
        }
        runtime::sleep(Duration::from_millis(WAIT_POLL_MS)).await;
    }
    true
}

/// Runs on shard 0 until the wake-up channel closes: `first` is the image the shards
/// opened their logs from at start-up.
pub async fn run(mut wake: futures::channel::mpsc::Receiver<()>, first: Arc<MetadataImage>) {
    let node = partition_manager::broker_config().node_id;
    let mut prev = first;
    PROCESSED.store(prev.applied_index, Ordering::Release);
    loop {
        let next = image();
        if next.applied_index != prev.applied_index {
            follow(&prev, &next, node).await;
            PROCESSED.store(next.applied_index, Ordering::Release);
            prev = next;
            continue;
        }
        if wake.next().await.is_none() {
            return;
        }
    }
}

fn hosted(t: &TopicMeta, node: i32) -> impl Iterator<Item = &super::PartitionMeta> {
    t.partitions
        .iter()
        .filter(move |p| p.replicas.contains(&node))
}

async fn follow(prev: &MetadataImage, next: &MetadataImage, node: i32) {
    let cfg = partition_manager::broker_config();
    let shards = runtime::nr_shards();
    let next_ids: HashMap<uuid::Uuid, &Arc<TopicMeta>> =
        next.topics.values().map(|t| (t.id, t)).collect();
    let mut jobs = Vec::new();
    for t in prev
        .topics
        .values()
        .filter(|t| !next_ids.contains_key(&t.id))
    {
        for p in hosted(t, node) {
            let (name, index) = (t.name.clone(), p.index);
            let dir = partition_manager::partition_dir(&cfg, &name, index, p.log_dir);
            jobs.push(runtime::submit_to(
                owner_shard(&name, index, shards),
                move || async move {
                    if let Err(e) = partition_manager::delete(&name, index, dir).await {
                        tracing::error!(topic = %name, partition = index, error = %e, "deleting partition failed");
                    }
                },
            ));
        }
    }
    futures::future::join_all(jobs).await;
    let prev_ids: HashMap<uuid::Uuid, &Arc<TopicMeta>> =
        prev.topics.values().map(|t| (t.id, t)).collect();
    let mut opens = Vec::new();
    let mut configs = Vec::new();
    for t in next.topics.values() {
        let old = prev_ids.get(&t.id);
        let had = old.map_or(0, |o| o.partitions.len());
        if old.is_some_and(|o| o.configs != t.configs) {
            configs.push((t.name.clone(), t.configs.clone()));
        }
        for p in hosted(t, node).filter(|p| p.index as usize >= had) {
            let (name, index) = (t.name.clone(), p.index);
            opens.push(runtime::submit_to(
                owner_shard(&name, index, shards),
                move || async move {
                    if let Err(e) = partition_manager::get_hosted(&name, index).await {
                        tracing::error!(topic = %name, partition = index, error = %e, "opening new partition failed");
                    }
                },
            ));
        }
    }
    futures::future::join_all(opens).await;
    // Leader, leader epoch, ISR or replicas changed (or min.insync.replicas): the owner
    // shard brings the partition's replica state in line (leading, following, neither).
    let mut roles = Vec::new();
    for t in next.topics.values() {
        let Some(old) = prev_ids.get(&t.id) else {
            continue; // new: opening it applied its assignment
        };
        let min_isr_changed =
            old.configs.get("min.insync.replicas") != t.configs.get("min.insync.replicas");
        for p in t.partitions.iter() {
            let before = old.partitions.get(p.index as usize);
            let was = before.is_some_and(|o| o.replicas.contains(&node));
            let is = p.replicas.contains(&node);
            if !was && !is {
                continue;
            }
            let changed = before.is_none_or(|o| {
                o.leader != p.leader
                    || o.leader_epoch != p.leader_epoch
                    || o.partition_epoch != p.partition_epoch
                    || o.replicas != p.replicas
            });
            if !changed && !min_isr_changed {
                continue;
            }
            let (name, index) = (t.name.clone(), p.index);
            // A completed reassignment that removed this broker: the local copy goes.
            let remove = (was && !is).then(|| {
                partition_manager::partition_dir(
                    &cfg,
                    &name,
                    index,
                    before.map_or(0, |o| o.log_dir),
                )
            });
            let open = is && !was;
            roles.push(runtime::submit_to(
                owner_shard(&name, index, shards),
                move || async move {
                    if open {
                        // A reassignment made this broker a replica: open the partition
                        // (empty, or what an earlier stint left); it follows its leader.
                        if let Err(e) = partition_manager::get_hosted(&name, index).await {
                            tracing::error!(topic = %name, partition = index, error = %e, "opening a newly assigned replica failed");
                            return;
                        }
                    }
                    partition_manager::reassign(&name, index).await;
                    if let Some(dir) = remove {
                        tracing::info!(topic = %name, partition = index, "no longer a replica of the partition: deleting the local copy");
                        if let Err(e) = partition_manager::delete(&name, index, dir).await {
                            tracing::error!(topic = %name, partition = index, error = %e, "deleting a removed replica failed");
                        }
                    }
                },
            ));
        }
    }
    futures::future::join_all(roles).await;
    for (name, overrides) in configs {
        tracing::info!(topic = %name, configs = ?overrides, "topic config changed");
        let applies = (0..shards).map(|s| {
            let (name, overrides) = (name.clone(), overrides.clone());
            runtime::submit_to(s, move || async move {
                partition_manager::apply_config(&name, &overrides)
            })
        });
        futures::future::join_all(applies).await;
    }
}
