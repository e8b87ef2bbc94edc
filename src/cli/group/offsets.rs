//! Offsets a group command needs: what a group has committed (OffsetFetch to
//! its coordinator) and where partitions start and end (ListOffsets to each
//! partition's leader).

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    GroupId, ListOffsetsRequest, MetadataResponse, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::coordinator;
use crate::cli::client::{check_error, error_name, Cluster};

/// A partition of a topic, ordered by topic name then partition.
pub type Tp = (String, i32);

/// OffsetFetch: v2 is the first that takes "all topics" (null); v8 batches groups.
const OFFSET_FETCH_VERSIONS: (i16, i16) = (2, 8);
/// ListOffsets v1 is the first with a single offset per partition.
const LIST_OFFSETS_VERSIONS: (i16, i16) = (1, 10);
/// ListOffsets special timestamps.
pub const OFFSET_LATEST: i64 = -1;
pub const OFFSET_EARLIEST: i64 = -2;
/// A consumer's replica id in ListOffsets.
const CONSUMER_REPLICA_ID: i32 = -1;
/// OffsetFetch's "no committed offset" value.
const NO_OFFSET: i64 = -1;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The group-level error of an OffsetFetch response of `version`.
fn offset_fetch_error(response: &OffsetFetchResponse, version: i16) -> i16 {
    if version >= 8 {
        response.groups.first().map_or(0, |g| g.error_code)
    } else {
        response.error_code
    }
}

/// The offsets `group` has committed, for the partitions of `topics` (every
/// topic when `None`); partitions without a committed offset are left out.
pub fn committed(
    cluster: &mut Cluster,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> Result<BTreeMap<Tp, i64>> {
    let build = |version: i16| {
        let mut request = OffsetFetchRequest::default();
        if version >= 8 {
            request.groups = vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|(name, parts)| {
                            OffsetFetchRequestTopics::default()
                                .with_name(TopicName(str_bytes(name)))
                                .with_partition_indexes(parts.clone())
                        })
                        .collect()
                }))];
        } else {
            request.group_id = GroupId(str_bytes(group));
            request.topics = topics.map(|ts| {
                ts.iter()
                    .map(|(name, parts)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partition_indexes(parts.clone())
                    })
                    .collect()
            });
        }
        request
    };
    let (response, version) = coordinator::call(
        cluster,
        group,
        OFFSET_FETCH_VERSIONS,
        build,
        offset_fetch_error,
    )?;
    check_error(
        offset_fetch_error(&response, version),
        None,
        &format!("cannot fetch the committed offsets of group {group:?}"),
    )?;
    // (topic, partition, offset, error) from either response layout.
    let mut rows: Vec<(String, i32, i64, i16)> = Vec::new();
    if version >= 8 {
        for g in response
            .groups
            .iter()
            .filter(|g| g.group_id.0.as_str() == group)
        {
            for t in &g.topics {
                for p in &t.partitions {
                    let name = t.name.0.to_string();
                    rows.push((name, p.partition_index, p.committed_offset, p.error_code));
                }
            }
        }
    } else {
        for t in &response.topics {
            for p in &t.partitions {
                let name = t.name.0.to_string();
                rows.push((name, p.partition_index, p.committed_offset, p.error_code));
            }
        }
    }
    let mut out = BTreeMap::new();
    for (topic, partition, offset, code) in rows {
        check_error(
            code,
            None,
            &format!("cannot fetch the committed offset of group {group:?} for {topic} partition {partition}"),
        )?;
        if offset != NO_OFFSET {
            out.insert((topic, partition), offset);
        }
    }
    Ok(out)
}

/// The offset of each partition at `timestamp` (`OFFSET_LATEST`, `OFFSET_EARLIEST`
/// or milliseconds since the epoch), asked of each partition's leader in one
/// request per leader. A timestamp after the last record gives -1, as in Kafka.
pub fn list_offsets(
    cluster: &mut Cluster,
    metadata: &MetadataResponse,
    partitions: &[Tp],
    timestamp: i64,
    timeout_ms: i32,
) -> Result<BTreeMap<Tp, i64>> {
    let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
    for (topic, partition) in partitions {
        let t = crate::cli::client::find_topic(metadata, topic)?;
        check_error(
            t.error_code,
            None,
            &format!("cannot look up topic {topic:?}"),
        )?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition_index == *partition)
            .ok_or_else(|| anyhow!("topic {topic} has no partition {partition}"))?;
        if p.leader_id.0 < 0 {
            return Err(anyhow!(
                "{topic} partition {partition} has no leader: {}",
                error_name(p.error_code)
            ));
        }
        by_leader
            .entry(p.leader_id.0)
            .or_default()
            .entry(topic.as_str())
            .or_default()
            .push(*partition);
    }
    let mut out = BTreeMap::new();
    for (leader, topics) in by_leader {
        let client = cluster.node(leader, &metadata.brokers)?;
        let version = client
            .version_for::<ListOffsetsRequest>(LIST_OFFSETS_VERSIONS.0, LIST_OFFSETS_VERSIONS.1)?;
        let mut request = ListOffsetsRequest::default()
            .with_replica_id(CONSUMER_REPLICA_ID.into())
            .with_topics(
                topics
                    .iter()
                    .map(|(name, parts)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|&p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        if version >= 10 {
            request.timeout_ms = timeout_ms;
        }
        let response = client.send(version, &request)?;
        for t in &response.topics {
            for p in &t.partitions {
                let topic = t.name.0.to_string();
                check_error(
                    p.error_code,
                    None,
                    &format!(
                        "cannot look up offsets of {topic} partition {}",
                        p.partition_index
                    ),
                )?;
                out.insert((topic, p.partition_index), p.offset);
            }
        }
    }
    for tp in partitions {
        if !out.contains_key(tp) {
            return Err(anyhow!(
                "broker sent no offset for {} partition {}",
                tp.0,
                tp.1
            ));
        }
    }
    Ok(out)
}
