//! `sluice group reset-offsets`: works out new committed offsets for a topic's
//! partitions (earliest, latest, an offset, a time, or a shift from the
//! committed offset), prints the plan, and with `--execute` commits it the way
//! `kafka-consumer-groups.sh --reset-offsets` does: as a non-member ("simple
//! consumer") OffsetCommit, generation -1 and an empty member id, which Kafka
//! accepts only while the group has no members. So, like Kafka's tool, it
//! refuses up front when the group is not `Empty`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::{ArgGroup, Args};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::offsets::{self, Tp, OFFSET_EARLIEST, OFFSET_LATEST};
use super::{coordinator, datetime, describe_group, print_table};
use crate::cli::client::{check_error, error_name, find_topic, Cluster};

/// OffsetCommit v2 is the lowest the broker takes; v8 is the last before KIP-848.
const OFFSET_COMMIT_VERSIONS: (i16, i16) = (2, 8);
/// Generation and member id of a commit from outside the group.
const NON_MEMBER_GENERATION: i32 = -1;
/// `retention_time_ms` (v2-v4) meaning "the broker's offsets.retention.minutes".
const RETENTION_BROKER_DEFAULT: i64 = -1;
/// No leader epoch known for the committed offset.
const NO_LEADER_EPOCH: i32 = -1;
/// The only group state in which offsets may be reset.
const STATE_EMPTY: &str = "Empty";

/// Arguments of `sluice group reset-offsets`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("to").required(true).multiple(false).args(
    ["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
pub struct ResetArgs {
    /// Group id.
    group: String,
    /// Topic whose offsets are reset.
    #[arg(long)]
    topic: String,
    /// Only this partition; repeatable. Default: every partition of the topic.
    #[arg(long = "partition", value_name = "P")]
    partitions: Vec<i32>,
    /// The log start offset of each partition.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset of each partition (skip everything there now).
    #[arg(long)]
    to_latest: bool,
    /// This offset, kept within each partition's earliest..latest.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The first offset whose timestamp is at or after this ISO-8601 time
    /// (`2024-05-01T12:00:00Z`; UTC when no zone is given); the log end if none.
    #[arg(long, value_name = "ISO", value_parser = datetime::parse_iso_ms)]
    to_datetime: Option<i64>,
    /// The committed offset moved by N (negative moves back), kept within
    /// earliest..latest.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the new offsets. Without it the plan is only printed.
    #[arg(long)]
    execute: bool,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn run(cluster: &mut Cluster, args: &ResetArgs, timeout_ms: i32) -> Result<()> {
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    if let Some(described) = describe_group(cluster, group)? {
        let state = described.group_state.as_str();
        if state != STATE_EMPTY {
            bail!(
                "offsets of group {group:?} can only be reset while it is inactive, but it is \
                 {state} with {} members; stop its consumers first",
                described.members.len()
            );
        }
    }

    let metadata = cluster.metadata(Some(&[topic.to_string()]))?;
    let t = find_topic(&metadata, topic)?;
    check_error(
        t.error_code,
        None,
        &format!("cannot look up topic {topic:?}"),
    )?;
    let mut all: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    all.sort_unstable();
    let chosen: Vec<i32> = if args.partitions.is_empty() {
        all
    } else {
        if let Some(p) = args.partitions.iter().find(|p| !all.contains(p)) {
            bail!("topic {topic} has no partition {p} (it has {})", all.len());
        }
        args.partitions.clone()
    };
    let tps: Vec<Tp> = chosen.iter().map(|&p| (topic.to_string(), p)).collect();

    let earliest = offsets::list_offsets(cluster, &metadata, &tps, OFFSET_EARLIEST, timeout_ms)?;
    let latest = offsets::list_offsets(cluster, &metadata, &tps, OFFSET_LATEST, timeout_ms)?;
    let at_time = match args.to_datetime {
        Some(ms) => Some(offsets::list_offsets(
            cluster, &metadata, &tps, ms, timeout_ms,
        )?),
        None => None,
    };
    let wanted = BTreeMap::from([(topic.to_string(), chosen.clone())]);
    let current = offsets::committed(cluster, group, Some(&wanted))?;

    let mut plan: Vec<(Tp, Option<i64>, i64)> = Vec::with_capacity(tps.len());
    for tp in &tps {
        let lo = *earliest
            .get(tp)
            .ok_or_else(|| anyhow!("no earliest offset for {tp:?}"))?;
        let hi = *latest
            .get(tp)
            .ok_or_else(|| anyhow!("no latest offset for {tp:?}"))?;
        let now = current.get(tp).copied();
        let target = if args.to_earliest {
            lo
        } else if args.to_latest {
            hi
        } else if let Some(n) = args.to_offset {
            n
        } else if let Some(by_time) = &at_time {
            match by_time.get(tp).copied() {
                Some(o) if o >= 0 => o,
                _ => hi, // no record at or after the time: the end, as Kafka's tool does
            }
        } else if let Some(n) = args.shift_by {
            let from = now.ok_or_else(|| {
                anyhow!(
                    "{topic} partition {} has no committed offset in group {group:?} to shift from",
                    tp.1
                )
            })?;
            from.saturating_add(n)
        } else {
            bail!("one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by is needed");
        };
        let new = target.clamp(lo, hi.max(lo));
        if new != target {
            eprintln!(
                "warning: {topic} partition {}: offset {target} is outside {lo}..{hi}, using {new}",
                tp.1
            );
        }
        plan.push((tp.clone(), now, new));
    }

    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|((t, p), now, new)| {
            vec![
                group.to_string(),
                t.clone(),
                p.to_string(),
                now.map(|o| o.to_string()).unwrap_or_default(),
                new.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "NEW-OFFSET",
        ],
        &rows,
    );
    if !args.execute {
        eprintln!("dry run: nothing committed; add --execute to commit these offsets");
        return Ok(());
    }
    commit(cluster, group, topic, &plan)?;
    println!(
        "committed new offsets of group {group} for {} partitions of {topic}",
        plan.len()
    );
    Ok(())
}

/// OffsetCommit from outside the group (generation -1, no member id).
fn commit(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    plan: &[(Tp, Option<i64>, i64)],
) -> Result<()> {
    let build = |version: i16| {
        let mut request = OffsetCommitRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_generation_id_or_member_epoch(NON_MEMBER_GENERATION)
            .with_member_id(StrBytes::default())
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(
                    plan.iter()
                        .map(|((_, p), _, new)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*new)
                                .with_committed_leader_epoch(NO_LEADER_EPOCH)
                                .with_committed_metadata(Some(StrBytes::default()))
                        })
                        .collect(),
                )]);
        if version <= 4 {
            request.retention_time_ms = RETENTION_BROKER_DEFAULT;
        }
        request
    };
    // OffsetCommit has no group-level error: a coordinator error comes on every partition.
    let first_error = |r: &kafka_protocol::messages::OffsetCommitResponse, _: i16| {
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .next()
            .unwrap_or(0)
    };
    let (response, _) =
        coordinator::call(cluster, group, OFFSET_COMMIT_VERSIONS, build, first_error)?;
    let mut failed = Vec::new();
    for ((_, p), _, _) in plan {
        let code = response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|r| r.partition_index == *p)
            .map(|r| r.error_code);
        match code {
            Some(0) => {}
            Some(code) => failed.push(format!("partition {p}: {}", error_name(code))),
            None => failed.push(format!("partition {p}: no result from the broker")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "cannot commit offsets of group {group:?} for {topic}: {}",
            failed.join(", ")
        );
    }
    Ok(())
}
