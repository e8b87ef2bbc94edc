//! The single writer of the metadata image. Every change (create or delete a
//! topic, add partitions, change configs) runs on shard 0 under one permit:
//! validate, build the next image, persist it, publish it, then have the owner
//! shards open or delete the affected logs. Callers on any shard just call the
//! functions here; the hop to shard 0 is inside.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::{
    image, owner_shard, partition_manager, publish, store, validate_topic_name, PartitionMeta,
    TopicMeta,
};
use crate::config::validate_topic_config;
use crate::runtime;

/// Most partitions one topic may have (a bound on directories and open files).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// A refused change: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    fn new(err: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            code: err.code(),
            message: message.into(),
        }
    }
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A config change for one topic (IncrementalAlterConfigs semantics;
/// AlterConfigs is `replace_all`).
#[derive(Debug, Clone, Default)]
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
    pub replace_all: bool,
}

/// Runs one metadata change on shard 0, one at a time; `n` results, in order.
async fn on_controller<T, F, Fut>(n: usize, f: F) -> Vec<Result<T, Refusal>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<Result<T, Refusal>>> + 'static,
{
    let out = runtime::submit_to(0, move || async move {
        let permit = CONTROLLER_LOCK.with(|s| s.clone());
        let _g = permit.acquire_permit(1).await;
        f().await
    })
    .await;
    match out {
        Ok(v) => v,
        Err(e) => (0..n)
            .map(|_| Err(Refusal::new(ResponseError::NotController, e.to_string())))
            .collect(),
    }
}

/// Persists and publishes `next` when `changed`; if persisting fails every
/// accepted change in `results` becomes that failure. True when published.
fn commit<T>(
    next: super::MetadataImage,
    changed: bool,
    results: &mut [Result<T, Refusal>],
) -> bool {
    if !changed {
        return false;
    }
    if let Err(refusal) = persist(&next) {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(refusal.clone());
        }
        return false;
    }
    publish(next);
    true
}

thread_local! {
    static CONTROLLER_LOCK: std::rc::Rc<glommio::sync::Semaphore> = std::rc::Rc::new(glommio::sync::Semaphore::new(1));
}

fn persist(img: &super::MetadataImage) -> Result<(), Refusal> {
    let cfg = partition_manager::broker_config();
    let dir = cfg.log_dirs.first().cloned().unwrap_or_default();
    store::save(&dir, img).map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "persisting metadata failed");
        Refusal::new(
            ResponseError::KafkaStorageError,
            format!("persisting metadata failed: {e:#}"),
        )
    })
}

/// Checks a topic-creation request without changing anything.
pub fn validate_new_topic(t: &NewTopic) -> Result<(i32, i16), Refusal> {
    let cfg = partition_manager::broker_config();
    validate_topic_name(&t.name)
        .map_err(|m| Refusal::new(ResponseError::InvalidTopicException, m))?;
    if image().topic(&t.name).is_some() {
        return Err(Refusal::new(
            ResponseError::TopicAlreadyExists,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    let partitions = if t.partitions == -1 {
        cfg.num_partitions
    } else {
        t.partitions
    };
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(Refusal::new(
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}."),
        ));
    }
    let rf = if t.replication_factor == -1 {
        cfg.default_replication_factor
    } else {
        t.replication_factor
    };
    if rf < 1 {
        return Err(Refusal::new(
            ResponseError::InvalidReplicationFactor,
            "Replication factor must be larger than 0.",
        ));
    }
    if rf > 1 {
        return Err(Refusal::new(
            ResponseError::InvalidReplicationFactor,
            format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."),
        ));
    }
    for (k, v) in &t.configs {
        validate_topic_config(k, v).map_err(|m| Refusal::new(ResponseError::InvalidConfig, m))?;
    }
    Ok((partitions, rf))
}

/// Creates topics; one result per input, in order.
pub async fn create_topics(topics: Vec<NewTopic>) -> Vec<Result<Arc<TopicMeta>, Refusal>> {
    on_controller(topics.len(), move || create_topics_local(topics)).await
}

async fn create_topics_local(topics: Vec<NewTopic>) -> Vec<Result<Arc<TopicMeta>, Refusal>> {
    let cfg = partition_manager::broker_config();
    let mut next = (*image()).clone();
    let mut results = Vec::with_capacity(topics.len());
    let mut created = Vec::new();
    for t in topics {
        let r = validate_new_topic(&t).and_then(|(partitions, _)| {
            if next.topics.contains_key(&t.name) {
                return Err(Refusal::new(
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{}' already exists.", t.name),
                ));
            }
            let mut counts = next.partitions_per_dir(cfg.log_dirs.len());
            let parts = (0..partitions)
                .map(|index| {
                    let log_dir = least_loaded(&counts);
                    counts[log_dir] += 1;
                    PartitionMeta {
                        index,
                        log_dir,
                        leader_epoch: 0,
                    }
                })
                .collect();
            let meta = Arc::new(TopicMeta {
                name: t.name.clone(),
                id: uuid::Uuid::new_v4(),
                partitions: parts,
                configs: t.configs,
            });
            next.topics.insert(t.name.clone(), meta.clone());
            Ok(meta)
        });
        if let Ok(m) = &r {
            created.push(m.clone());
        }
        results.push(r);
    }
    if !commit(next, !created.is_empty(), &mut results) {
        return results;
    }
    for t in &created {
        tracing::info!(topic = %t.name, partitions = t.partitions.len(), id = %t.id, "topic created");
        open_partitions(t, 0).await;
    }
    results
}

fn least_loaded(counts: &[usize]) -> usize {
    counts
        .iter()
        .enumerate()
        .min_by_key(|(i, c)| (**c, *i))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

async fn open_partitions(t: &TopicMeta, from: i32) {
    let shards = runtime::nr_shards();
    let opens = t.partitions.iter().filter(|p| p.index >= from).map(|p| {
        let (name, index) = (t.name.clone(), p.index);
        runtime::submit_to(owner_shard(&name, index, shards), move || async move {
            if let Err(e) = partition_manager::get(&name, index).await {
                tracing::error!(topic = %name, partition = index, error = %e, "opening new partition failed");
            }
        })
    });
    futures::future::join_all(opens).await;
}

/// Deletes topics by name; one result per input, in order.
pub async fn delete_topics(names: Vec<String>) -> Vec<Result<uuid::Uuid, Refusal>> {
    on_controller(names.len(), move || delete_topics_local(names)).await
}

async fn delete_topics_local(names: Vec<String>) -> Vec<Result<uuid::Uuid, Refusal>> {
    let mut next = (*image()).clone();
    let mut removed = Vec::new();
    let mut results: Vec<_> = names
        .iter()
        .map(|name| match next.topics.remove(name) {
            Some(t) if t.name == crate::group::OFFSETS_TOPIC => {
                next.topics.insert(t.name.clone(), t);
                Err(Refusal::new(
                    ResponseError::InvalidTopicException,
                    "The internal topic __consumer_offsets holds the committed offsets of every group and cannot be deleted.",
                ))
            }
            Some(t) => {
                let id = t.id;
                removed.push(t);
                Ok(id)
            }
            None => Err(Refusal::new(
                ResponseError::UnknownTopicOrPartition,
                "This server does not host this topic-partition.",
            )),
        })
        .collect();
    if !commit(next, !removed.is_empty(), &mut results) {
        return results;
    }
    let cfg = partition_manager::broker_config();
    let shards = runtime::nr_shards();
    for t in &removed {
        let deletes = t.partitions.iter().map(|p| {
            let (name, index) = (t.name.clone(), p.index);
            let dir = partition_manager::partition_dir(&cfg, &name, index, p.log_dir);
            runtime::submit_to(owner_shard(&name, index, shards), move || async move {
                if let Err(e) = partition_manager::delete(&name, index, dir).await {
                    tracing::error!(topic = %name, partition = index, error = %e, "deleting partition failed");
                }
            })
        });
        futures::future::join_all(deletes).await;
        tracing::info!(topic = %t.name, "topic deleted");
    }
    results
}

/// Raises topics' partition counts; one result per input, in order.
pub async fn create_partitions(items: Vec<(String, i32, bool)>) -> Vec<Result<(), Refusal>> {
    on_controller(items.len(), move || create_partitions_local(items)).await
}

async fn create_partitions_local(items: Vec<(String, i32, bool)>) -> Vec<Result<(), Refusal>> {
    let cfg = partition_manager::broker_config();
    let mut next = (*image()).clone();
    let mut grown = Vec::new();
    let mut results = Vec::with_capacity(items.len());
    for (name, count, validate_only) in items {
        let r = (|| {
            let Some(t) = next.topics.get(&name) else {
                return Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            };
            if name == crate::group::OFFSETS_TOPIC {
                // Groups are placed by hash modulo the partition count.
                return Err(Refusal::new(
                    ResponseError::InvalidPartitions,
                    "The partition count of __consumer_offsets cannot change: every group would move.",
                ));
            }
            let have = t.partitions.len() as i32;
            if count <= have {
                return Err(Refusal::new(
                    ResponseError::InvalidPartitions,
                    format!("Topic currently has {have} partitions, which is higher than the requested {count}."),
                ));
            }
            if count > MAX_PARTITIONS_PER_TOPIC {
                return Err(Refusal::new(
                    ResponseError::InvalidPartitions,
                    format!("At most {MAX_PARTITIONS_PER_TOPIC} partitions per topic."),
                ));
            }
            if validate_only {
                return Ok(());
            }
            let mut counts = next.partitions_per_dir(cfg.log_dirs.len());
            let mut meta = (**t).clone();
            for index in have..count {
                let log_dir = least_loaded(&counts);
                counts[log_dir] += 1;
                meta.partitions.push(PartitionMeta {
                    index,
                    log_dir,
                    leader_epoch: 0,
                });
            }
            let meta = Arc::new(meta);
            next.topics.insert(name.clone(), meta.clone());
            grown.push((meta, have));
            Ok(())
        })();
        results.push(r);
    }
    if !commit(next, !grown.is_empty(), &mut results) {
        return results;
    }
    for (t, from) in &grown {
        tracing::info!(topic = %t.name, partitions = t.partitions.len(), "partitions added");
        open_partitions(t, *from).await;
    }
    results
}

/// Applies config changes to topics; one result per input, in order.
pub async fn alter_topic_configs(
    items: Vec<(String, ConfigChange, bool)>,
) -> Vec<Result<(), Refusal>> {
    on_controller(items.len(), move || alter_local(items)).await
}

async fn alter_local(items: Vec<(String, ConfigChange, bool)>) -> Vec<Result<(), Refusal>> {
    let cfg = partition_manager::broker_config();
    let mut next = (*image()).clone();
    let mut changed = Vec::new();
    let mut results = Vec::with_capacity(items.len());
    for (name, change, validate_only) in items {
        let r = (|| {
            let Some(t) = next.topics.get(&name) else {
                return Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            };
            let mut configs = if change.replace_all {
                BTreeMap::new()
            } else {
                t.configs.clone()
            };
            for (k, v) in &change.set {
                validate_topic_config(k, v)
                    .map_err(|m| Refusal::new(ResponseError::InvalidConfig, m))?;
                configs.insert(k.clone(), v.clone());
            }
            for k in &change.delete {
                if crate::config::topic_config_def(k).is_none() {
                    return Err(Refusal::new(
                        ResponseError::InvalidConfig,
                        format!("Unknown topic config name: {k}"),
                    ));
                }
                configs.remove(k);
            }
            cfg.log_config(&configs)
                .map_err(|e| Refusal::new(ResponseError::InvalidConfig, format!("{e:#}")))?;
            if validate_only {
                return Ok(());
            }
            let mut meta = (**t).clone();
            meta.configs = configs;
            next.topics.insert(name.clone(), Arc::new(meta.clone()));
            changed.push(meta);
            Ok(())
        })();
        results.push(r);
    }
    if !commit(next, !changed.is_empty(), &mut results) {
        return results;
    }
    let shards = runtime::nr_shards();
    for t in changed {
        tracing::info!(topic = %t.name, configs = ?t.configs, "topic config changed");
        let applies = (0..shards).map(|s| {
            let (name, configs) = (t.name.clone(), t.configs.clone());
            runtime::submit_to(s, move || async move {
                partition_manager::apply_config(&name, &configs)
            })
        });
        futures::future::join_all(applies).await;
    }
    results
}

/// Producer ids handed to a shard at a time, so InitProducerId rarely needs
/// the controller.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Reserves the next block of producer ids (persisted before it is returned,
/// so no id is handed out twice, even across a crash). Returns its first id.
pub async fn allocate_producer_ids() -> Result<i64, Refusal> {
    let mut out = on_controller(1, || async {
        let mut next = (*image()).clone();
        let start = next.next_producer_id.max(0);
        let Some(end) = start.checked_add(PRODUCER_ID_BLOCK) else {
            return vec![Err(Refusal::new(
                ResponseError::UnknownServerError,
                "producer ids exhausted",
            ))];
        };
        next.next_producer_id = end;
        let mut results = vec![Ok(start)];
        commit(next, true, &mut results);
        results
    })
    .await;
    out.pop().unwrap_or_else(|| {
        Err(Refusal::new(
            ResponseError::UnknownServerError,
            "no answer from the controller",
        ))
    })
}
