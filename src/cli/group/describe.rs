//! `sluice group describe GROUP`: the group's state and members (with the
//! partitions each was assigned, decoded from the consumer protocol), then per
//! partition the committed offset, the log end offset and the lag, in the
//! columns of `kafka-consumer-groups.sh --describe`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;

use super::offsets::{self, Tp, OFFSET_LATEST};
use super::{describe_group, print_table};
use crate::cli::client::Cluster;

/// Protocol type of groups whose assignments are `ConsumerProtocolAssignment`s.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Highest ConsumerProtocolAssignment version known here; a newer one is read
/// as this one, as Kafka's `ConsumerProtocol` does (newer versions only add fields).
const ASSIGNMENT_VERSION_MAX: i16 = 3;

/// A member's assignment as topic -> partitions, from the bytes SyncGroup gave it.
pub fn decode_assignment(bytes: &Bytes) -> Result<BTreeMap<String, Vec<i32>>> {
    let mut out = BTreeMap::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        bail!("consumer assignment of {} bytes is too short", bytes.len());
    }
    let version = buf.get_i16();
    if version < 0 {
        bail!("consumer assignment has a negative version {version}");
    }
    let assignment =
        ConsumerProtocolAssignment::decode(&mut buf, version.min(ASSIGNMENT_VERSION_MAX))
            .with_context(|| format!("cannot decode consumer assignment v{version}"))?;
    for tp in assignment.assigned_partitions {
        let mut partitions = tp.partitions;
        partitions.sort_unstable();
        out.entry(tp.topic.0.to_string())
            .or_insert_with(Vec::new)
            .extend(partitions);
    }
    Ok(out)
}

/// `t:0,1;u:0`
fn assignment_text(assignment: &BTreeMap<String, Vec<i32>>) -> String {
    assignment
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{t}:{}", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Who owns a partition: member id, host, client id.
type Owner = (String, String, String);

pub fn run(cluster: &mut Cluster, group: &str, timeout_ms: i32) -> Result<()> {
    let described = describe_group(cluster, group)?
        .ok_or_else(|| anyhow!("group {group:?} does not exist: GROUP_ID_NOT_FOUND (69)"))?;
    let is_consumer = described.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
    print_table(
        &["GROUP", "STATE", "PROTOCOL-TYPE", "ASSIGNOR", "MEMBERS"],
        &[vec![
            group.to_string(),
            described.group_state.to_string(),
            described.protocol_type.to_string(),
            described.protocol_data.to_string(),
            described.members.len().to_string(),
        ]],
    );
    println!();

    let mut owners: BTreeMap<Tp, Owner> = BTreeMap::new();
    let mut member_rows = Vec::new();
    for m in &described.members {
        let assignment = if is_consumer {
            decode_assignment(&m.member_assignment)
                .with_context(|| format!("member {} of group {group:?}", m.member_id.as_str()))?
        } else {
            BTreeMap::new()
        };
        let owner: Owner = (
            m.member_id.to_string(),
            m.client_host.to_string(),
            m.client_id.to_string(),
        );
        for (topic, partitions) in &assignment {
            for p in partitions {
                owners.insert((topic.clone(), *p), owner.clone());
            }
        }
        member_rows.push(vec![
            m.member_id.to_string(),
            m.group_instance_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            m.client_id.to_string(),
            m.client_host.to_string(),
            assignment_text(&assignment),
        ]);
    }
    if member_rows.is_empty() {
        println!("group {group} has no active members");
    } else {
        print_table(
            &[
                "MEMBER-ID",
                "INSTANCE-ID",
                "CLIENT-ID",
                "HOST",
                "PARTITIONS",
            ],
            &member_rows,
        );
    }
    println!();

    let committed = offsets::committed(cluster, group, None)?;
    let partitions: BTreeSet<Tp> = committed.keys().chain(owners.keys()).cloned().collect();
    if partitions.is_empty() {
        println!("group {group} has no committed offsets and no assigned partitions");
        return Ok(());
    }
    let topics: Vec<String> = partitions
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metadata = cluster.metadata(Some(&topics))?;
    // Partitions of topics that still exist; a deleted topic's offsets show "-".
    let live: Vec<Tp> = partitions
        .iter()
        .filter(|(t, p)| {
            metadata.topics.iter().any(|mt| {
                mt.error_code == 0
                    && mt.name.as_ref().is_some_and(|n| n.0.as_str() == t)
                    && mt.partitions.iter().any(|mp| mp.partition_index == *p)
            })
        })
        .cloned()
        .collect();
    let log_end = offsets::list_offsets(cluster, &metadata, &live, OFFSET_LATEST, timeout_ms)?;
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|tp| {
            let current = committed.get(tp).copied();
            let end = log_end.get(tp).copied();
            let lag = match (current, end) {
                (Some(c), Some(e)) => (e - c).to_string(),
                _ => String::new(),
            };
            let (member, host, client) = owners.get(tp).cloned().unwrap_or_default();
            vec![
                group.to_string(),
                tp.0.clone(),
                tp.1.to_string(),
                current.map(|c| c.to_string()).unwrap_or_default(),
                end.map(|e| e.to_string()).unwrap_or_default(),
                lag,
                member,
                host,
                client,
            ]
        })
        .collect();
    print_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encoded(version: i16) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![3, 1]),
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("audit")))
                .with_partitions(vec![0]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        assignment
            .encode(&mut buf, version.min(3))
            .expect("encodes");
        buf.freeze()
    }

    #[test]
    fn assignment_decodes_every_version() {
        for version in 0..=3 {
            let got = decode_assignment(&encoded(version)).expect("decodes");
            assert_eq!(got["orders"], vec![1, 3]);
            assert_eq!(got["audit"], vec![0]);
            assert_eq!(assignment_text(&got), "audit:0;orders:1,3");
        }
    }

    #[test]
    fn newer_assignment_version_reads_as_newest_known() {
        let mut bytes = encoded(3).to_vec();
        bytes[0..2].copy_from_slice(&7i16.to_be_bytes());
        let got = decode_assignment(&Bytes::from(bytes)).expect("decodes");
        assert_eq!(got["orders"], vec![1, 3]);
    }

    #[test]
    fn broken_assignments_are_errors_not_panics() {
        assert!(decode_assignment(&Bytes::new())
            .expect("empty is none")
            .is_empty());
        assert!(decode_assignment(&Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(&Bytes::from_static(&[0xff, 0xff])).is_err());
        let full = encoded(1);
        for cut in 2..full.len() {
            assert!(
                decode_assignment(&full.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }
}
