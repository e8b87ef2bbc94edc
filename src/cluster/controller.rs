//! Metadata changes: create or delete a topic, add partitions, change configs,
//! reserve producer ids. Any broker, on any shard, validates a request against
//! its image, places new replicas over the live brokers (`placement.rs`), and
//! proposes the records to the metadata quorum (forwarded to the quorum's
//! leader when this node is not it). The answer comes once the entry is
//! committed and applied here (`publisher.rs`) and this broker's logs follow it
//! (`listener.rs`); conflicts between brokers are settled at apply time, in log
//! order (`records.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::records::{Applied, MetadataRecord, Outcomes};
use super::{
    image, listener, partition_manager, placement, publisher, quorum_handle, validate_topic_name,
    TopicMeta,
};
use crate::config::validate_topic_config;

pub use super::records::Refusal;

/// Most partitions one topic may have (a bound on directories and open files).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;
/// How long a metadata change may wait for the quorum to commit it.
pub const PROPOSE_TIMEOUT_MS: u64 = 10_000;
/// Topic names that are not to be created by clients (Kafka's metadata log).
const RESERVED_TOPICS: &[&str] = &["__cluster_metadata"];

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Replicas chosen by the client, one list per partition (CreateTopics' assignments);
    /// `partitions` and `replication_factor` are then -1.
    pub assignment: Option<Vec<Vec<i32>>>,
}

/// A config change for one topic (IncrementalAlterConfigs semantics;
/// AlterConfigs is `replace_all`).
#[derive(Debug, Clone, Default)]
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
    pub replace_all: bool,
}

/// Commits `records` as one quorum entry and returns one outcome per record, once this
/// broker has applied the entry and its logs follow it (new partitions opened, deleted
/// ones removed). On a shard only.
pub async fn propose(records: Vec<MetadataRecord>) -> Result<Outcomes, Refusal> {
    let (index, out) = propose_committed(records).await?;
    listener::wait_processed(index, PROPOSE_TIMEOUT_MS).await;
    Ok(out)
}

/// As [`propose`], answering once the entry is applied to the image here, without waiting
/// for the logs to follow: any thread (start-up, before the shards run). Also the log index.
pub async fn propose_committed(records: Vec<MetadataRecord>) -> Result<(u64, Outcomes), Refusal> {
    let n = records.len();
    let q = quorum_handle().ok_or_else(|| {
        Refusal::new(
            ResponseError::NotController,
            "the metadata quorum is not running yet",
        )
    })?;
    let index = q
        .propose(super::records::encode_entry(&records), PROPOSE_TIMEOUT_MS)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "metadata change not committed");
            let code = match e {
                super::quorum::ProposeError::Shutdown => ResponseError::NotController,
                super::quorum::ProposeError::Storage(_) => ResponseError::KafkaStorageError,
                _ => ResponseError::RequestTimedOut,
            };
            Refusal::new(code, e.to_string())
        })?;
    let out = publisher::take_outcomes(index).unwrap_or_default();
    if out.len() != n {
        return Err(Refusal::new(
            ResponseError::UnknownServerError,
            format!("metadata entry {index} was committed but its outcome is unknown here"),
        ));
    }
    Ok((index, out))
}

/// Proposes the records of the accepted items (`Ok(record)`) as one entry and puts each
/// outcome back in its item's place; refused items stay refused.
async fn propose_items(
    items: Vec<Result<MetadataRecord, Refusal>>,
) -> Vec<Result<Applied, Refusal>> {
    let records: Vec<MetadataRecord> = items
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    if records.is_empty() {
        return items
            .into_iter()
            .map(|r| r.map(|_| Applied::Done))
            .collect();
    }
    let mut outcomes = match propose(records).await {
        Ok(o) => o.into_iter(),
        Err(refusal) => {
            return items
                .into_iter()
                .map(|r| r.and_then(|_| Err(refusal.clone())))
                .collect()
        }
    };
    items
        .into_iter()
        .map(|r| {
            r.and_then(|_| {
                outcomes.next().unwrap_or_else(|| {
                    Err(Refusal::new(
                        ResponseError::UnknownServerError,
                        "missing outcome",
                    ))
                })
            })
        })
        .collect()
}

/// As [`propose_items`] for items that may be validate-only (`Ok(None)`: checked, nothing
/// to commit, answered as accepted).
async fn propose_checked(
    checked: Vec<Result<Option<MetadataRecord>, Refusal>>,
) -> Vec<Result<(), Refusal>> {
    let validate_only: Vec<bool> = checked.iter().map(|r| matches!(r, Ok(None))).collect();
    // A validate-only item is carried as a placeholder refusal, never proposed or answered.
    let placeholder = Refusal {
        code: 0,
        message: String::new(),
    };
    let items = checked
        .into_iter()
        .map(|r| r.and_then(|rec| rec.ok_or_else(|| placeholder.clone())))
        .collect();
    propose_items(items)
        .await
        .into_iter()
        .zip(validate_only)
        .map(|(r, only)| if only { Ok(()) } else { r.map(|_| ()) })
        .collect()
}

fn is_protected_internal(name: &str) -> bool {
    name == super::internal_topic::OFFSETS_TOPIC
}

/// The brokers new replicas may go to, in placement order.
fn placement_order() -> Vec<i32> {
    let img = image();
    let live: Vec<&super::BrokerMeta> = img.live_brokers().collect();
    placement::broker_order(&live)
}

fn random_start(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n.max(1) as u128) as usize
}

/// Checks a topic-creation request against this broker's image without changing anything;
/// the partition count and replication factor it would have. The replicas are placed over
/// the live brokers, so a replication factor above their count is refused here.
pub fn validate_new_topic(t: &NewTopic) -> Result<(i32, i16), Refusal> {
    let cfg = partition_manager::broker_config();
    validate_topic_name(&t.name)
        .map_err(|m| Refusal::new(ResponseError::InvalidTopicException, m))?;
    if RESERVED_TOPICS.contains(&t.name.as_str()) {
        return Err(Refusal::new(
            ResponseError::InvalidTopicException,
            format!("Creation of internal topic {} is prohibited.", t.name),
        ));
    }
    if image().topic(&t.name).is_some() {
        return Err(Refusal::new(
            ResponseError::TopicAlreadyExists,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    let partitions = match (&t.assignment, t.partitions) {
        (Some(a), _) => a.len() as i32,
        (None, -1) => cfg.num_partitions,
        (None, n) => n,
    };
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(Refusal::new(
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {partitions}."),
        ));
    }
    if let Some(a) = &t.assignment {
        check_assignment(&image(), a)?;
    }
    let rf = match &t.assignment {
        Some(a) => a.first().map_or(1, |r| r.len() as i16),
        None if t.replication_factor == -1 => cfg.default_replication_factor,
        None => t.replication_factor,
    };
    let partitions = t.assignment.as_ref().map_or(partitions, |a| a.len() as i32);
    if t.assignment.is_none() {
        placement::place(&placement_order(), 0, 1, rf, 0)?;
    }
    for (k, v) in &t.configs {
        validate_topic_config(k, v).map_err(|m| Refusal::new(ResponseError::InvalidConfig, m))?;
    }
    Ok((partitions, rf))
}

/// Checks replica lists a client chose (Kafka's rules): each non-empty, no broker twice,
/// every broker registered, the same count for every partition.
pub fn check_assignment(img: &super::MetadataImage, lists: &[Vec<i32>]) -> Result<(), Refusal> {
    let invalid = |m: String| Refusal::new(ResponseError::InvalidReplicaAssignment, m);
    let rf = lists.first().map_or(0, Vec::len);
    for (i, l) in lists.iter().enumerate() {
        if l.is_empty() {
            return Err(invalid(format!(
                "The replica list of partition {i} is empty"
            )));
        }
        if l.len() != rf {
            return Err(invalid(
                "All partitions should have the same number of replicas".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(d) = l.iter().find(|b| !seen.insert(**b)) {
            return Err(invalid(format!(
                "Broker {d} appears twice in the replicas of partition {i}"
            )));
        }
        if let Some(u) = l.iter().find(|b| !img.brokers.contains_key(b)) {
            return Err(invalid(format!(
                "Unknown broker {u} in the replica assignment of partition {i}"
            )));
        }
    }
    Ok(())
}

/// Creates topics; one result per input, in order.
pub async fn create_topics(topics: Vec<NewTopic>) -> Vec<Result<Arc<TopicMeta>, Refusal>> {
    let order = placement_order();
    let start = random_start(order.len());
    let mut names = Vec::with_capacity(topics.len());
    let items: Vec<Result<MetadataRecord, Refusal>> = topics
        .into_iter()
        .map(|t| {
            names.push(t.name.clone());
            let (partitions, rf) = validate_new_topic(&t)?;
            let replicas = match t.assignment {
                Some(a) => a,
                None => placement::place(&order, 0, partitions, rf, start)?,
            };
            Ok(MetadataRecord::CreateTopic {
                name: t.name,
                id: uuid::Uuid::new_v4(),
                replicas,
                configs: t.configs,
            })
        })
        .collect();
    let results = propose_items(items).await;
    let img = image();
    results
        .into_iter()
        .zip(names)
        .map(|(r, name)| {
            r?;
            let t = img.topic(&name).cloned().ok_or_else(|| {
                Refusal::new(ResponseError::UnknownTopicOrPartition, format!("Topic '{name}' was deleted meanwhile."))
            })?;
            tracing::info!(topic = %t.name, partitions = t.partitions.len(), id = %t.id, "topic created");
            Ok(t)
        })
        .collect()
}

/// Deletes topics by name; one result per input, in order.
pub async fn delete_topics(names: Vec<String>) -> Vec<Result<uuid::Uuid, Refusal>> {
    let img = image();
    let items: Vec<Result<MetadataRecord, Refusal>> = names
        .iter()
        .map(|name| match img.topic(name) {
            Some(t) if is_protected_internal(&t.name) => Err(Refusal::new(
                ResponseError::InvalidTopicException,
                "The internal topic __consumer_offsets holds the committed offsets of every group and cannot be deleted.",
            )),
            Some(t) => Ok(MetadataRecord::DeleteTopic { name: t.name.clone(), id: t.id }),
            None => Err(Refusal::new(
                ResponseError::UnknownTopicOrPartition,
                "This server does not host this topic-partition.",
            )),
        })
        .collect();
    let ids: Vec<uuid::Uuid> = names
        .iter()
        .map(|n| img.topic(n).map(|t| t.id).unwrap_or_default())
        .collect();
    propose_items(items)
        .await
        .into_iter()
        .zip(ids.into_iter().zip(&names))
        .map(|(r, (id, name))| {
            r?;
            tracing::info!(topic = %name, "topic deleted");
            Ok(id)
        })
        .collect()
}

/// Raises topics' partition counts; one result per input, in order.
pub async fn create_partitions(items: Vec<(String, i32, bool)>) -> Vec<Result<(), Refusal>> {
    let img = image();
    let order = placement_order();
    let checked: Vec<Result<Option<MetadataRecord>, Refusal>> = items
        .into_iter()
        .map(|(name, count, validate_only)| {
            let Some(t) = img.topic(&name) else {
                return Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ));
            };
            if is_protected_internal(&name) {
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
            let rf = t.partitions.first().map_or(1, |p| p.replicas.len().max(1)) as i16;
            // New partitions continue the existing spread of leaders.
            let replicas = placement::place(&order, have, count - have, rf, random_start(order.len()))?;
            if validate_only {
                return Ok(None);
            }
            Ok(Some(MetadataRecord::CreatePartitions { name: name.clone(), id: t.id, from: have, replicas }))
        })
        .collect();
    propose_checked(checked).await
}

/// Applies config changes to topics; one result per input, in order.
pub async fn alter_topic_configs(
    items: Vec<(String, ConfigChange, bool)>,
) -> Vec<Result<(), Refusal>> {
    let cfg = partition_manager::broker_config();
    let img = image();
    let checked: Vec<Result<Option<MetadataRecord>, Refusal>> = items
        .into_iter()
        .map(|(name, change, validate_only)| {
            let Some(t) = img.topic(&name) else {
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
                return Ok(None);
            }
            tracing::info!(topic = %name, configs = ?configs, "topic config change proposed");
            Ok(Some(MetadataRecord::TopicConfigs {
                name,
                id: t.id,
                configs,
            }))
        })
        .collect();
    propose_checked(checked).await
}

/// Applies dynamic broker config changes, one `BrokerConfigs` record per resource (a broker
/// id as text, or "" for the cluster default). The caller has checked the names and values
/// (`throttle::DYNAMIC_BROKER_CONFIGS`).
pub async fn alter_broker_configs(
    items: Vec<(String, ConfigChange, bool)>,
) -> Vec<Result<(), Refusal>> {
    let img = image();
    let checked: Vec<Result<Option<MetadataRecord>, Refusal>> = items
        .into_iter()
        .map(|(broker, change, validate_only)| {
            let mut configs = if change.replace_all {
                BTreeMap::new()
            } else {
                img.broker_configs.get(&broker).cloned().unwrap_or_default()
            };
            for (k, v) in change.set {
                configs.insert(k, v);
            }
            for k in &change.delete {
                configs.remove(k);
            }
            if validate_only {
                return Ok(None);
            }
            tracing::info!(broker = %broker, configs = ?configs, "dynamic broker config change proposed");
            Ok(Some(MetadataRecord::BrokerConfigs { broker, configs }))
        })
        .collect();
    propose_checked(checked).await
}

/// Producer ids handed to a shard at a time, so InitProducerId rarely needs
/// the controller.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Reserves the next block of producer ids (committed in the quorum before it is returned,
/// so no id is handed out twice, even across a crash or by two brokers). Returns its first id.
pub async fn allocate_producer_ids() -> Result<i64, Refusal> {
    let out = propose(vec![MetadataRecord::ProducerIds {
        count: PRODUCER_ID_BLOCK,
    }])
    .await?;
    match out.into_iter().next() {
        Some(Ok(Applied::ProducerIdBlock(start))) => Ok(start),
        Some(Err(r)) => Err(r),
        _ => Err(Refusal::new(
            ResponseError::UnknownServerError,
            "no producer id block in the answer",
        )),
    }
}

/// A partition named by an admin request: (topic, partition index).
pub type PartitionKey = (String, i32);

/// Most times a partition change decided on a stale image is decided again.
const STALE_RETRIES: usize = 5;

/// Decides a change of each named partition against this broker's image and proposes the
/// changes as one entry; one result per key, in order. A change refused because the
/// partition moved meanwhile (another change won: `records::is_stale`) is decided again on
/// the newer image, a few times.
async fn change_partitions(
    keys: &[PartitionKey],
    decide: impl Fn(
        &super::MetadataImage,
        &TopicMeta,
        &super::PartitionMeta,
    ) -> Result<MetadataRecord, Refusal>,
) -> Vec<Result<(), Refusal>> {
    let mut results: Vec<Option<Result<(), Refusal>>> = vec![None; keys.len()];
    for attempt in 0..STALE_RETRIES {
        let img = image();
        let mut slots = Vec::new();
        let mut items = Vec::new();
        for (i, (topic, index)) in keys.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match img.partition(topic, *index) {
                None => {
                    results[i] = Some(Err(Refusal::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("{topic}-{index} does not exist"),
                    )))
                }
                Some((t, p)) => match decide(&img, t, p) {
                    Ok(rec) => {
                        slots.push(i);
                        items.push(Ok(rec));
                    }
                    Err(r) => results[i] = Some(Err(r)),
                },
            }
        }
        if items.is_empty() {
            break;
        }
        let last = attempt + 1 == STALE_RETRIES;
        for (i, out) in slots.into_iter().zip(propose_items(items).await) {
            match out {
                Err(r) if super::records::is_stale(&r) && !last => {}
                other => results[i] = Some(other.map(|_| ())),
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Refusal::new(
                    ResponseError::UnknownServerError,
                    "the partition kept changing; try again",
                ))
            })
        })
        .collect()
}

/// Every partition of the image, in topic and index order.
fn all_partitions() -> Vec<PartitionKey> {
    image()
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.index)))
        .collect()
}

/// ElectLeaders: elects the preferred (or, unclean, any live) replica of each partition;
/// `None`: every partition, answering only those where an election ran or failed (Kafka
/// leaves out ELECTION_NOT_NEEDED then).
pub async fn elect_leaders(
    kind: super::election::ElectionType,
    partitions: Option<Vec<PartitionKey>>,
) -> Vec<(PartitionKey, Result<(), Refusal>)> {
    let all = partitions.is_none();
    let keys = partitions.unwrap_or_else(all_partitions);
    let results = change_partitions(&keys, |img, t, p| match kind {
        super::election::ElectionType::Preferred => super::election::elect_preferred(img, t, p),
        super::election::ElectionType::Unclean => super::election::elect_unclean(img, t, p),
    })
    .await;
    keys.into_iter()
        .zip(results)
        .filter(|(_, r)| {
            !(all
                && r.as_ref()
                    .is_err_and(|e| e.code == ResponseError::ElectionNotNeeded.code()))
        })
        .inspect(|((t, i), r)| {
            if r.is_ok() {
                tracing::info!(topic = %t, partition = i, ?kind, "leader elected on request");
            }
        })
        .collect()
}

/// AlterPartitionReassignments: moves each partition to its target replicas (`None`:
/// cancels the reassignment in progress); one result per item, in order. The move itself
/// runs in the background: the new replicas catch up as followers, and the reassignment
/// completes when they are all in the ISR (`records::complete_reassignment`).
pub async fn alter_reassignments(
    items: Vec<(PartitionKey, Option<Vec<i32>>)>,
) -> Vec<Result<(), Refusal>> {
    let keys: Vec<PartitionKey> = items.iter().map(|(k, _)| k.clone()).collect();
    let targets: std::collections::HashMap<PartitionKey, Option<Vec<i32>>> =
        items.into_iter().collect();
    let results = change_partitions(&keys, |_, t, p| {
        let target = targets.get(&(t.name.clone(), p.index)).cloned().flatten();
        Ok(MetadataRecord::ReassignPartition {
            name: t.name.clone(),
            id: t.id,
            partition: p.index,
            partition_epoch: p.partition_epoch,
            target,
        })
    })
    .await;
    for ((t, i), r) in keys.iter().zip(&results) {
        match r {
            Ok(()) => {
                tracing::info!(topic = %t, partition = i, target = ?targets.get(&(t.clone(), *i)), "partition reassignment accepted")
            }
            Err(e) => {
                tracing::info!(topic = %t, partition = i, reason = %e.message, "partition reassignment refused")
            }
        }
    }
    results
}

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The reassignments in progress among `partitions` (`None`: all), from this broker's image
/// (every broker applies the same metadata log; it may lag the quorum by an entry).
pub fn list_reassignments(partitions: Option<&[PartitionKey]>) -> Vec<Reassignment> {
    let img = image();
    let mut out = Vec::new();
    for t in img.topics.values() {
        for p in t.partitions.iter().filter(|p| p.reassigning()) {
            if partitions.is_some_and(|ks| !ks.iter().any(|(n, i)| *n == t.name && *i == p.index)) {
                continue;
            }
            out.push(Reassignment {
                topic: t.name.clone(),
                partition: p.index,
                replicas: p.replicas.clone(),
                adding: p.adding_replicas.clone(),
                removing: p.removing_replicas.clone(),
            });
        }
    }
    out
}
