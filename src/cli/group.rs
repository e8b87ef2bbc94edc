//! `sluice group ...`: consumer-group administration over the Kafka group
//! APIs (ListGroups, DescribeGroups, OffsetFetch, OffsetCommit, DeleteGroups,
//! OffsetDelete, with FindCoordinator and ListOffsets), in the manner of
//! Kafka's `kafka-consumer-groups.sh`.

pub(crate) mod coordinator;
mod datetime;
mod describe;
mod offsets;
mod reset;

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetDeleteRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{check_error, error_name, find_topic, Cluster};
use super::ClientArgs;

/// Versions implemented here: ListGroups v4 adds the group state, v5 the type;
/// DescribeGroups v5 is the last before KIP-848's error messages (v6, unread here).
const LIST_GROUPS_VERSIONS: (i16, i16) = (0, 5);
const DESCRIBE_GROUPS_VERSIONS: (i16, i16) = (0, 5);
const DELETE_GROUPS_VERSIONS: (i16, i16) = (0, 2);
const OFFSET_DELETE_VERSIONS: (i16, i16) = (0, 0);
/// GROUP_ID_NOT_FOUND, for a group DescribeGroups calls `Dead`.
const GROUP_ID_NOT_FOUND: i16 = 69;

/// Arguments of `sluice group`.
#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List groups with their state and protocol type (every broker is asked).
    List,
    /// Show a group's state, members and their partitions, and per partition
    /// the committed offset, log end offset and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Plan, and with --execute commit, new offsets for a group with no active members.
    ResetOffsets(reset::ResetArgs),
    /// Delete groups and their committed offsets (the groups must have no members).
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a group's committed offsets for a topic (OffsetDelete).
    DeleteOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets are deleted.
        #[arg(long)]
        topic: String,
        /// Only this partition; repeatable. Default: every partition of the topic.
        #[arg(long = "partition", value_name = "P")]
        partitions: Vec<i32>,
    },
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Runs one `sluice group` subcommand.
pub fn run(args: GroupArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&args.client.bootstrap, args.client.timeout())?;
    let timeout_ms = args.client.timeout_ms_i32();
    match args.command {
        GroupCommand::List => list(&mut cluster),
        GroupCommand::Describe { group } => describe::run(&mut cluster, &group, timeout_ms),
        GroupCommand::ResetOffsets(reset) => reset::run(&mut cluster, &reset, timeout_ms),
        GroupCommand::Delete { groups } => delete(&mut cluster, &groups),
        GroupCommand::DeleteOffsets {
            group,
            topic,
            partitions,
        } => delete_offsets(&mut cluster, &group, &topic, &partitions),
    }
}

/// Prints rows under headers, each column as wide as its widest cell, with
/// empty cells shown as `-` so that every line splits into the same columns.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len().max(1));
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", if c.is_empty() { "-" } else { c }, w = *w))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// ListGroups to every broker in the cluster (each lists the groups it coordinates).
fn list(cluster: &mut Cluster) -> Result<()> {
    let metadata = cluster.metadata(Some(&[]))?;
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    for broker in &metadata.brokers {
        let client = cluster.node(broker.node_id.0, &metadata.brokers)?;
        let version = client
            .version_for::<ListGroupsRequest>(LIST_GROUPS_VERSIONS.0, LIST_GROUPS_VERSIONS.1)?;
        let response = client.send(version, &ListGroupsRequest::default())?;
        check_error(
            response.error_code,
            None,
            &format!("cannot list the groups of broker {}", broker.node_id.0),
        )?;
        for g in response.groups {
            let state = if version >= 4 {
                g.group_state.to_string()
            } else {
                String::new()
            };
            groups.insert(
                g.group_id.0.to_string(),
                (state, g.protocol_type.to_string()),
            );
        }
    }
    let rows: Vec<Vec<String>> = groups
        .into_iter()
        .map(|(id, (state, protocol_type))| vec![id, state, protocol_type])
        .collect();
    print_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
    Ok(())
}

/// DescribeGroups for one group, from its coordinator. A group the broker does
/// not know (state `Dead`, or GROUP_ID_NOT_FOUND) is `Ok(None)`.
pub(crate) fn describe_group(cluster: &mut Cluster, group: &str) -> Result<Option<DescribedGroup>> {
    let build = |_version: i16| {
        DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))])
    };
    let (response, _) =
        coordinator::call(cluster, group, DESCRIBE_GROUPS_VERSIONS, build, |r, _| {
            r.groups.first().map_or(0, |g| g.error_code)
        })?;
    let described = response
        .groups
        .into_iter()
        .find(|g| g.group_id.0.as_str() == group)
        .ok_or_else(|| anyhow!("broker sent no description of group {group:?}"))?;
    if described.error_code == GROUP_ID_NOT_FOUND || described.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    check_error(
        described.error_code,
        described.error_message.as_ref(),
        &format!("cannot describe group {group:?}"),
    )?;
    Ok(Some(described))
}

fn delete(cluster: &mut Cluster, groups: &[String]) -> Result<()> {
    let mut failed = 0usize;
    for group in groups {
        let build = |_version: i16| {
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(group))])
        };
        let result = coordinator::call(cluster, group, DELETE_GROUPS_VERSIONS, build, |r, _| {
            r.results.first().map_or(0, |g| g.error_code)
        })
        .and_then(|(response, _)| {
            let r = response
                .results
                .iter()
                .find(|r| r.group_id.0.as_str() == group.as_str())
                .ok_or_else(|| anyhow!("broker sent no result for group {group:?}"))?;
            check_error(
                r.error_code,
                None,
                &format!("cannot delete group {group:?}"),
            )
        });
        match result {
            Ok(()) => println!("deleted group {group}"),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} groups could not be deleted", groups.len());
    }
    Ok(())
}

fn delete_offsets(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<()> {
    let partitions: Vec<i32> = if partitions.is_empty() {
        let metadata = cluster.metadata(Some(&[topic.to_string()]))?;
        let t = find_topic(&metadata, topic)?;
        check_error(
            t.error_code,
            None,
            &format!("cannot look up topic {topic:?}"),
        )?;
        let mut all: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        all.sort_unstable();
        all
    } else {
        partitions.to_vec()
    };
    let build = |_version: i16| {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                        .collect(),
                )])
    };
    let (response, _) =
        coordinator::call(cluster, group, OFFSET_DELETE_VERSIONS, build, |r, _| {
            r.error_code
        })?;
    check_error(
        response.error_code,
        None,
        &format!("cannot delete offsets of group {group:?}"),
    )?;
    let mut failed = 0usize;
    for p in &partitions {
        let result = response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|r| r.partition_index == *p);
        match result.map(|r| r.error_code) {
            None => {
                eprintln!("error: broker sent no result for {topic} partition {p}");
                failed += 1;
            }
            Some(0) => println!("deleted offset of group {group} for {topic} partition {p}"),
            Some(code) => {
                eprintln!(
                    "error: cannot delete offset of group {group:?} for {topic} partition {p}: {}",
                    error_name(code)
                );
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} partitions kept their offsets",
            partitions.len()
        );
    }
    Ok(())
}
