//! The metadata log's records and how each changes the image.
//!
//! Every metadata change (a broker registered or fenced, a topic created,
//! partitions added, a leader moved, configs replaced, a block of producer ids
//! handed out) is a [`MetadataRecord`]. One quorum entry carries a batch of
//! records, applied in order as one step. [`apply`] is a pure function of the
//! image and the record: every node applies the same entries in the same order
//! and so holds the same image. The checks that depend on the image (does the
//! topic exist, has the partition changed since the decision was made) are made
//! here, at apply time, against the image at that point of the log, so two
//! brokers proposing conflicting changes at once get one winner and one
//! definite refusal, never a silent merge.
//!
//! Entry format ([`encode_entry`], [`decode_entry`]): a version byte
//! (`ENTRY_VERSION`), the CRC-32C of the body (big-endian u32), the body length
//! (big-endian u32), then the body: a JSON array of records. JSON because
//! metadata entries are small and rare (a few per admin operation) and a
//! readable log helps the operator; the envelope makes it versioned and
//! checked. A decoder meets any bytes (`fuzz/`: `storage_files`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

use super::{BrokerMeta, MetadataImage, PartitionMeta, TopicMeta, NO_LEADER};

/// Version byte of the entry envelope written today.
pub const ENTRY_VERSION: u8 = 1;
/// Header: version (1), CRC-32C (4), body length (4).
const ENTRY_HEADER_BYTES: usize = 9;
/// Largest entry body accepted (a CreateTopics of many large topics fits well within).
pub const MAX_ENTRY_BODY_BYTES: usize = 16 << 20;

/// A refused change: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    pub fn new(err: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            code: err.code(),
            message: message.into(),
        }
    }
}

/// One change of the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The cluster id, chosen once by the first leader of the quorum.
    ClusterId {
        cluster_id: String,
    },
    /// A broker (re)started: registered and unfenced, with its advertised listener.
    RegisterBroker {
        id: i32,
        incarnation: uuid::Uuid,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// The broker stopped heartbeating (or shut down): it leads nothing and is not listed.
    FenceBroker {
        id: i32,
        incarnation: uuid::Uuid,
    },
    /// A fenced broker heartbeats again.
    UnfenceBroker {
        id: i32,
        incarnation: uuid::Uuid,
    },
    /// The broker is shutting down cleanly: fenced until it registers again.
    BrokerLeaving {
        id: i32,
        incarnation: uuid::Uuid,
    },
    /// A new topic: one replica list per partition, the preferred leader first.
    CreateTopic {
        name: String,
        id: uuid::Uuid,
        replicas: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
        id: uuid::Uuid,
    },
    /// Partitions appended to a topic that had `from` partitions.
    CreatePartitions {
        name: String,
        id: uuid::Uuid,
        from: i32,
        replicas: Vec<Vec<i32>>,
    },
    /// A partition's leader and ISR, if its partition epoch is still `partition_epoch`.
    ChangePartition {
        name: String,
        id: uuid::Uuid,
        partition: i32,
        partition_epoch: i32,
        leader: i32,
        isr: Vec<i32>,
    },
    /// A partition reassignment (AlterPartitionReassignments): move the partition's replicas
    /// to `target`, or cancel the reassignment in progress (`None`), if its partition epoch
    /// is still `partition_epoch`. The new replicas join as followers; the reassignment
    /// completes (the removed replicas leave, a removed leader hands over) in the same step
    /// that finds every target replica in the ISR ([`complete_reassignment`]).
    ReassignPartition {
        name: String,
        id: uuid::Uuid,
        partition: i32,
        partition_epoch: i32,
        target: Option<Vec<i32>>,
    },
    /// A topic's config overrides, replaced whole.
    TopicConfigs {
        name: String,
        id: uuid::Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A block of `count` producer ids, starting where the last block ended.
    ProducerIds {
        count: i64,
    },
    /// The dynamic configs of one broker (`broker` = its id as text) or, with `broker`
    /// empty, the cluster-wide defaults; replaced whole (an empty map removes them).
    BrokerConfigs {
        broker: String,
        configs: BTreeMap<String, String>,
    },
}

/// What applying a record produced, beyond success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The first id of the producer-id block handed out.
    ProducerIdBlock(i64),
}

/// One entry's outcome: a result per record, in order.
pub type Outcomes = Vec<Result<Applied, Refusal>>;

/// Encodes a batch of records as one quorum entry.
pub fn encode_entry(records: &[MetadataRecord]) -> Vec<u8> {
    // Serializing plain data (strings, numbers, maps with string keys) cannot fail.
    let body = serde_json::to_vec(records).unwrap_or_default();
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + body.len());
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a quorum entry; says what is wrong with a damaged or unknown one.
pub fn decode_entry(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    if bytes.len() < ENTRY_HEADER_BYTES {
        return Err(format!(
            "metadata entry of {} bytes is too short",
            bytes.len()
        ));
    }
    if bytes[0] != ENTRY_VERSION {
        return Err(format!(
            "metadata entry version {} is not known to this broker (it writes {ENTRY_VERSION}); upgrade it",
            bytes[0]
        ));
    }
    let crc = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let body = &bytes[ENTRY_HEADER_BYTES..];
    if len > MAX_ENTRY_BODY_BYTES || len != body.len() {
        return Err(format!(
            "metadata entry body length {len} does not match the {} bytes present",
            body.len()
        ));
    }
    if crc32c::crc32c(body) != crc {
        return Err("metadata entry CRC mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("metadata entry body: {e}"))
}

fn unknown_topic(name: &str) -> Refusal {
    Refusal::new(
        ResponseError::UnknownTopicOrPartition,
        format!("Topic '{name}' does not exist."),
    )
}

/// The topic named `name` if its id is still `id` (a topic deleted and created again under
/// the same name is another topic).
fn topic_with_id<'a>(
    img: &'a MetadataImage,
    name: &str,
    id: uuid::Uuid,
) -> Result<&'a Arc<TopicMeta>, Refusal> {
    img.topics
        .get(name)
        .filter(|t| t.id == id)
        .ok_or_else(|| unknown_topic(name))
}

fn new_partition(index: i32, replicas: Vec<i32>, img: &MetadataImage) -> PartitionMeta {
    let leader = replicas
        .iter()
        .copied()
        .find(|r| img.brokers.get(r).is_some_and(|b| !b.fenced))
        .unwrap_or(NO_LEADER);
    PartitionMeta {
        index,
        log_dir: 0,
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        leader,
        partition_epoch: 0,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    }
}

/// The partition `partition` of a topic being changed, if its partition epoch is still
/// `partition_epoch` (the compare-and-set of every partition change).
fn partition_at(
    meta: &mut TopicMeta,
    partition: i32,
    partition_epoch: i32,
) -> Result<&mut PartitionMeta, Refusal> {
    let name = meta.name.clone();
    let Some(p) = usize::try_from(partition)
        .ok()
        .and_then(|i| meta.partitions.get_mut(i))
    else {
        return Err(unknown_topic(&name));
    };
    if p.partition_epoch != partition_epoch {
        return Err(Refusal::new(
            ResponseError::FencedLeaderEpoch,
            format!(
                "{name}-{partition} is at partition epoch {}, not {partition_epoch}",
                p.partition_epoch
            ),
        ));
    }
    Ok(p)
}

/// True for the refusal of a change decided on an older state of the partition: deciding
/// again on the current image may succeed.
pub fn is_stale(r: &Refusal) -> bool {
    r.code == ResponseError::FencedLeaderEpoch.code()
}

/// Moves the leadership to `leader` (bumping the leader epoch) if it is another broker.
fn set_leader(p: &mut PartitionMeta, leader: i32) {
    if p.leader != leader {
        p.leader_epoch += 1;
        p.leader = leader;
    }
}

/// Finishes the partition's reassignment once every target replica is in the ISR: the
/// replicas become the target, the removed ones leave the ISR, and a leader being removed
/// hands over to the first live in-sync target replica (none live: the reassignment waits).
/// Kafka's controller does the same when an AlterPartition completes the target ISR.
pub fn complete_reassignment(p: &mut PartitionMeta, img: &MetadataImage) {
    if !p.reassigning() {
        return;
    }
    let target = p.target_replicas();
    if target.is_empty() || !target.iter().all(|r| p.isr.contains(r)) {
        return;
    }
    let leader = if target.contains(&p.leader) {
        p.leader
    } else {
        match target.iter().copied().find(|r| img.is_live(*r)) {
            Some(l) => l,
            None => return,
        }
    };
    p.isr.retain(|r| target.contains(r));
    p.replicas = target;
    p.adding_replicas.clear();
    p.removing_replicas.clear();
    set_leader(p, leader);
}

/// Starts (or replaces, or with `None` cancels) a reassignment of `p`. Kafka's rules: the
/// replicas are the target followed by the original replicas leaving; the ISR keeps only
/// replicas still present; a leader no longer present hands over.
fn reassign(
    p: &mut PartitionMeta,
    img: &MetadataImage,
    name: &str,
    target: Option<&Vec<i32>>,
) -> Result<(), Refusal> {
    let invalid = |m: String| Refusal::new(ResponseError::InvalidReplicaAssignment, m);
    let original: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect();
    let (replicas, adding, removing) = match target {
        None => {
            if !p.reassigning() {
                return Err(Refusal::new(
                    ResponseError::NoReassignmentInProgress,
                    format!("no reassignment of {name}-{} is in progress", p.index),
                ));
            }
            (original, Vec::new(), Vec::new())
        }
        Some(target) => {
            if target.is_empty() {
                return Err(invalid(format!(
                    "the new replica list of {name}-{} is empty",
                    p.index
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(d) = target.iter().find(|r| !seen.insert(**r)) {
                return Err(invalid(format!(
                    "broker {d} is listed twice for {name}-{}",
                    p.index
                )));
            }
            if let Some(u) = target.iter().find(|r| !img.brokers.contains_key(r)) {
                return Err(invalid(format!(
                    "broker {u} is not registered in the cluster"
                )));
            }
            let adding: Vec<i32> = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            let removing: Vec<i32> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            let mut replicas = target.clone();
            replicas.extend(&removing);
            (replicas, adding, removing)
        }
    };
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(invalid(format!(
            "no in-sync replica of {name}-{} would remain (ISR {:?})",
            p.index, p.isr
        )));
    }
    let leader = if p.leader == NO_LEADER || replicas.contains(&p.leader) {
        p.leader
    } else {
        isr.iter()
            .copied()
            .find(|r| img.is_live(*r))
            .unwrap_or(NO_LEADER)
    };
    p.replicas = replicas;
    p.adding_replicas = adding;
    p.removing_replicas = removing;
    p.isr = isr;
    set_leader(p, leader);
    Ok(())
}

/// Applies one record to the image. A refusal leaves the image unchanged.
pub fn apply(img: &mut MetadataImage, rec: &MetadataRecord) -> Result<Applied, Refusal> {
    match rec {
        MetadataRecord::ClusterId { cluster_id } => {
            if img.cluster_id.is_empty() {
                img.cluster_id = cluster_id.clone();
            } else if img.cluster_id != *cluster_id {
                return Err(Refusal::new(
                    ResponseError::InconsistentClusterId,
                    format!("the cluster id is already {}", img.cluster_id),
                ));
            }
        }
        MetadataRecord::RegisterBroker {
            id,
            incarnation,
            host,
            port,
            rack,
        } => {
            img.brokers.insert(
                *id,
                BrokerMeta {
                    id: *id,
                    incarnation: *incarnation,
                    host: host.clone(),
                    port: *port,
                    rack: rack.clone(),
                    fenced: false,
                    leaving: false,
                },
            );
        }
        MetadataRecord::FenceBroker { id, incarnation }
        | MetadataRecord::UnfenceBroker { id, incarnation }
        | MetadataRecord::BrokerLeaving { id, incarnation } => {
            let unfence = matches!(rec, MetadataRecord::UnfenceBroker { .. });
            let leaving = matches!(rec, MetadataRecord::BrokerLeaving { .. });
            match img.brokers.get_mut(id) {
                Some(b) if b.incarnation == *incarnation && !(unfence && b.leaving) => {
                    b.fenced = !unfence;
                    b.leaving |= leaving;
                }
                _ => {
                    return Err(Refusal::new(
                        ResponseError::StaleBrokerEpoch,
                        format!("broker {id} has registered again since"),
                    ))
                }
            }
        }
        MetadataRecord::CreateTopic {
            name,
            id,
            replicas,
            configs,
        } => {
            if img.topics.contains_key(name) {
                return Err(Refusal::new(
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                ));
            }
            if replicas.is_empty() || img.topic_by_id(*id).is_some() {
                return Err(Refusal::new(
                    ResponseError::InvalidRequest,
                    format!("topic {name}: no partitions or a reused topic id"),
                ));
            }
            let partitions = replicas
                .iter()
                .enumerate()
                .map(|(i, r)| new_partition(i as i32, r.clone(), img))
                .collect();
            let meta = TopicMeta {
                name: name.clone(),
                id: *id,
                partitions,
                configs: configs.clone(),
            };
            img.topics.insert(name.clone(), Arc::new(meta));
        }
        MetadataRecord::DeleteTopic { name, id } => {
            topic_with_id(img, name, *id)?;
            img.topics.remove(name);
        }
        MetadataRecord::CreatePartitions {
            name,
            id,
            from,
            replicas,
        } => {
            let t = topic_with_id(img, name, *id)?;
            if t.partitions.len() as i32 != *from {
                return Err(Refusal::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic '{name}' has {} partitions now, not {from}: it changed meanwhile.",
                        t.partitions.len()
                    ),
                ));
            }
            let mut meta = (**t).clone();
            for (i, r) in replicas.iter().enumerate() {
                meta.partitions
                    .push(new_partition(*from + i as i32, r.clone(), img));
            }
            img.topics.insert(name.clone(), Arc::new(meta));
        }
        MetadataRecord::ChangePartition {
            name,
            id,
            partition,
            partition_epoch,
            leader,
            isr,
        } => {
            let t = topic_with_id(img, name, *id)?;
            let mut meta = (**t).clone();
            let p = partition_at(&mut meta, *partition, *partition_epoch)?;
            if isr.is_empty() || isr.iter().any(|r| !p.replicas.contains(r)) {
                return Err(Refusal::new(
                    ResponseError::InvalidRequest,
                    format!("ISR {isr:?} of {name}-{partition} is not a non-empty subset of its replicas {:?}", p.replicas),
                ));
            }
            if *leader != NO_LEADER && !isr.contains(leader) {
                return Err(Refusal::new(
                    ResponseError::InvalidRequest,
                    format!("leader {leader} of {name}-{partition} is not in its ISR {isr:?}"),
                ));
            }
            // Only live brokers join an ISR (Kafka's AlterPartition refuses fenced ones).
            if let Some(r) = isr
                .iter()
                .find(|r| !p.isr.contains(r) && img.brokers.get(r).is_none_or(|b| b.fenced))
            {
                return Err(Refusal::new(
                    ResponseError::IneligibleReplica,
                    format!("broker {r} is fenced or unknown and cannot join the ISR of {name}-{partition}"),
                ));
            }
            set_leader(p, *leader);
            p.isr = isr.clone();
            p.partition_epoch += 1;
            complete_reassignment(p, img);
            img.topics.insert(name.clone(), Arc::new(meta));
        }
        MetadataRecord::ReassignPartition {
            name,
            id,
            partition,
            partition_epoch,
            target,
        } => {
            let t = topic_with_id(img, name, *id)?;
            let mut meta = (**t).clone();
            let p = partition_at(&mut meta, *partition, *partition_epoch)?;
            reassign(p, img, name, target.as_ref())?;
            p.partition_epoch += 1;
            complete_reassignment(p, img);
            img.topics.insert(name.clone(), Arc::new(meta));
        }
        MetadataRecord::TopicConfigs { name, id, configs } => {
            let t = topic_with_id(img, name, *id)?;
            let mut meta = (**t).clone();
            meta.configs = configs.clone();
            img.topics.insert(name.clone(), Arc::new(meta));
        }
        MetadataRecord::BrokerConfigs { broker, configs } => {
            if configs.is_empty() {
                img.broker_configs.remove(broker);
            } else {
                img.broker_configs.insert(broker.clone(), configs.clone());
            }
        }
        MetadataRecord::ProducerIds { count } => {
            let start = img.next_producer_id.max(0);
            let end = (*count > 0)
                .then(|| start.checked_add(*count))
                .flatten()
                .ok_or_else(|| {
                    Refusal::new(ResponseError::UnknownServerError, "producer ids exhausted")
                })?;
            img.next_producer_id = end;
            return Ok(Applied::ProducerIdBlock(start));
        }
    }
    Ok(Applied::Done)
}

/// Applies an entry's records in order; one outcome per record.
pub fn apply_all(img: &mut MetadataImage, records: &[MetadataRecord]) -> Outcomes {
    records.iter().map(|r| apply(img, r)).collect()
}

/// The records that rebuild `img` from nothing: how a single-node data dir of the JSON
/// metadata file era enters the metadata log (`node` holds every partition).
pub fn records_of_image(img: &MetadataImage, node: i32) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    if !img.cluster_id.is_empty() {
        out.push(MetadataRecord::ClusterId {
            cluster_id: img.cluster_id.clone(),
        });
    }
    for t in img.topics.values() {
        out.push(MetadataRecord::CreateTopic {
            name: t.name.clone(),
            id: t.id,
            replicas: t.partitions.iter().map(|_| vec![node]).collect(),
            configs: t.configs.clone(),
        });
    }
    if img.next_producer_id > 0 {
        out.push(MetadataRecord::ProducerIds {
            count: img.next_producer_id,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            incarnation: uuid::Uuid::from_u128(id as u128),
            host: "127.0.0.1".into(),
            port: 9092 + id,
            rack: None,
        }
    }

    fn create(name: &str, id: u128, replicas: Vec<Vec<i32>>) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::from_u128(id),
            replicas,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn entry_round_trip_and_damage() {
        let recs = vec![broker(1), create("t", 7, vec![vec![1], vec![1]])];
        let bytes = encode_entry(&recs);
        assert_eq!(decode_entry(&bytes).unwrap(), recs);
        for cut in 0..bytes.len() {
            assert!(decode_entry(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        assert!(decode_entry(&bad).unwrap_err().contains("CRC"));
        let mut future = bytes;
        future[0] = 9;
        assert!(decode_entry(&future).unwrap_err().contains("version 9"));
    }

    #[test]
    fn create_conflicts_resolve_in_log_order() {
        let mut img = MetadataImage::default();
        let out = apply_all(
            &mut img,
            &[
                broker(1),
                create("t", 1, vec![vec![1]]),
                create("t", 2, vec![vec![1], vec![1]]),
            ],
        );
        assert_eq!(out[1], Ok(Applied::Done));
        assert_eq!(
            out[2].as_ref().unwrap_err().code,
            ResponseError::TopicAlreadyExists.code()
        );
        let t = img.topic("t").unwrap();
        assert_eq!(t.id, uuid::Uuid::from_u128(1));
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.partitions[0].leader, 1);
        assert_eq!(t.partitions[0].isr, vec![1]);
    }

    #[test]
    fn leader_is_first_unfenced_replica_and_changes_are_compare_and_set() {
        let mut img = MetadataImage::default();
        apply_all(&mut img, &[broker(1), broker(2)]);
        let inc1 = img.brokers[&1].incarnation;
        apply(
            &mut img,
            &MetadataRecord::FenceBroker {
                id: 1,
                incarnation: inc1,
            },
        )
        .unwrap();
        apply(&mut img, &create("t", 1, vec![vec![1, 2], vec![1]])).unwrap();
        let t = img.topic("t").unwrap().clone();
        assert_eq!(t.partitions[0].leader, 2);
        assert_eq!(t.partitions[1].leader, NO_LEADER);
        let change = |epoch| MetadataRecord::ChangePartition {
            name: "t".into(),
            id: t.id,
            partition: 1,
            partition_epoch: epoch,
            leader: 1,
            isr: vec![1],
        };
        apply(&mut img, &change(0)).unwrap();
        let p = img.topic("t").unwrap().partitions[1].clone();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 1, 1));
        // A decision made on the old state loses.
        assert!(apply(&mut img, &change(0)).is_err());
        // A stale incarnation cannot fence the broker's new life.
        assert!(apply(
            &mut img,
            &MetadataRecord::FenceBroker {
                id: 2,
                incarnation: uuid::Uuid::nil()
            }
        )
        .is_err());
    }

    #[test]
    fn deleted_and_recreated_topic_is_another_topic() {
        let mut img = MetadataImage::default();
        apply_all(&mut img, &[broker(1), create("t", 1, vec![vec![1]])]);
        let del = MetadataRecord::DeleteTopic {
            name: "t".into(),
            id: uuid::Uuid::from_u128(1),
        };
        apply(&mut img, &del).unwrap();
        apply(&mut img, &create("t", 2, vec![vec![1]])).unwrap();
        assert!(
            apply(&mut img, &del).is_err(),
            "old id must not delete the new topic"
        );
        let grow = MetadataRecord::CreatePartitions {
            name: "t".into(),
            id: uuid::Uuid::from_u128(2),
            from: 1,
            replicas: vec![vec![1]],
        };
        apply(&mut img, &grow).unwrap();
        assert!(
            apply(&mut img, &grow).is_err(),
            "a second grow from 1 must fail"
        );
        assert_eq!(img.topic("t").unwrap().partitions.len(), 2);
    }

    fn reassign_rec(t: &TopicMeta, epoch: i32, target: Option<Vec<i32>>) -> MetadataRecord {
        MetadataRecord::ReassignPartition {
            name: t.name.clone(),
            id: t.id,
            partition: 0,
            partition_epoch: epoch,
            target,
        }
    }

    #[test]
    fn reassignment_adds_then_completes_when_the_target_is_in_sync() {
        let mut img = MetadataImage::default();
        apply_all(&mut img, &[broker(1), broker(2), broker(3), broker(4)]);
        apply(&mut img, &create("t", 1, vec![vec![1, 2, 3]])).unwrap();
        let t = img.topic("t").unwrap().clone();
        apply(&mut img, &reassign_rec(&t, 0, Some(vec![2, 3, 4]))).unwrap();
        let p = img.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 0, vec![1, 2, 3])
        );
        assert_eq!(p.target_replicas(), vec![2, 3, 4]);
        // The leader adds the caught-up new replica to the ISR: the reassignment completes,
        // and the leader, being removed, hands over to the first target replica.
        let grow = MetadataRecord::ChangePartition {
            name: "t".into(),
            id: t.id,
            partition: 0,
            partition_epoch: p.partition_epoch,
            leader: 1,
            isr: vec![1, 2, 3, 4],
        };
        apply(&mut img, &grow).unwrap();
        let p = img.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.replicas, vec![2, 3, 4]);
        assert_eq!(p.isr, vec![2, 3, 4]);
        assert!(!p.reassigning());
        assert_eq!((p.leader, p.leader_epoch), (2, 1));
    }

    #[test]
    fn reassignment_refusals_and_cancel() {
        let mut img = MetadataImage::default();
        apply_all(&mut img, &[broker(1), broker(2), broker(3), broker(4)]);
        apply(&mut img, &create("t", 1, vec![vec![1, 2]])).unwrap();
        let t = img.topic("t").unwrap().clone();
        let code = |r: Result<Applied, Refusal>| r.unwrap_err().code;
        let bad = ResponseError::InvalidReplicaAssignment.code();
        assert_eq!(
            code(apply(&mut img, &reassign_rec(&t, 0, Some(vec![])))),
            bad
        );
        assert_eq!(
            code(apply(&mut img, &reassign_rec(&t, 0, Some(vec![3, 3])))),
            bad
        );
        assert_eq!(
            code(apply(&mut img, &reassign_rec(&t, 0, Some(vec![9])))),
            bad
        );
        assert_eq!(
            code(apply(&mut img, &reassign_rec(&t, 0, None))),
            ResponseError::NoReassignmentInProgress.code()
        );
        // To brokers holding no in-sync copy: nothing would remain in sync yet, so the
        // old replicas stay until the new ones catch up.
        apply(&mut img, &reassign_rec(&t, 0, Some(vec![3, 4]))).unwrap();
        let p = img.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.replicas, vec![3, 4, 1, 2]);
        assert_eq!(p.isr, vec![1, 2]);
        assert_eq!(
            code(apply(&mut img, &reassign_rec(&t, 0, None))),
            ResponseError::FencedLeaderEpoch.code(),
            "a decision on an old partition epoch loses"
        );
        apply(&mut img, &reassign_rec(&t, 1, None)).unwrap();
        let p = img.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.replicas, vec![1, 2]);
        assert!(!p.reassigning());
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 2));
        // A target already in sync completes at once.
        apply(&mut img, &reassign_rec(&t, 2, Some(vec![2]))).unwrap();
        let p = img.topic("t").unwrap().partitions[0].clone();
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2], vec![2], 2)
        );
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut img = MetadataImage::default();
        let a = apply(&mut img, &MetadataRecord::ProducerIds { count: 1000 }).unwrap();
        let b = apply(&mut img, &MetadataRecord::ProducerIds { count: 1000 }).unwrap();
        assert_eq!(a, Applied::ProducerIdBlock(0));
        assert_eq!(b, Applied::ProducerIdBlock(1000));
        assert!(apply(&mut img, &MetadataRecord::ProducerIds { count: i64::MAX }).is_err());
        assert_eq!(img.next_producer_id, 2000);
    }

    #[test]
    fn legacy_image_rebuilds_through_records() {
        let mut old = MetadataImage::default();
        apply_all(
            &mut old,
            &[
                MetadataRecord::ClusterId {
                    cluster_id: "c".into(),
                },
                broker(0),
                create("a", 1, vec![vec![0], vec![0]]),
                MetadataRecord::ProducerIds { count: 3000 },
            ],
        );
        let mut new = MetadataImage::default();
        apply_all(&mut new, &[broker(0)]);
        let out = apply_all(&mut new, &records_of_image(&old, 0));
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert_eq!(new.cluster_id, "c");
        assert_eq!(new.topics, old.topics);
        assert_eq!(new.next_producer_id, 3000);
    }
}
