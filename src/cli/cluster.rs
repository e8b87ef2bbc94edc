//! `sluice cluster info|brokers|quorum`: the cluster as its brokers report it,
//! over DescribeCluster (cluster id, controller, live brokers with their
//! racks) and DescribeQuorum (the metadata quorum: leader, epoch, committed
//! index, voters and observers with how far their logs reach), as Kafka's
//! `kafka-cluster.sh cluster-id`, `kafka-broker-api-versions.sh` and
//! `kafka-metadata-quorum.sh describe --status/--replication` show them.
//!
//! `sluice cluster elect-leaders|reassign|decommission`: the operator's handles
//! on leadership and placement (ElectLeaders, AlterPartitionReassignments,
//! ListPartitionReassignments), as Kafka's `kafka-leader-election.sh` and
//! `kafka-reassign-partitions.sh` drive them, with progress shown while a move
//! runs.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions as ElectTopic;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics as ListTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, DescribeClusterRequest, DescribeQuorumRequest,
    ElectLeadersRequest, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{check_error, error_name, Cluster};
use super::group::print_table;
use super::ClientArgs;

const CLUSTER_VERSIONS: (i16, i16) = (0, 1);
const QUORUM_VERSIONS: (i16, i16) = (0, 2);

/// Arguments of `sluice cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Cluster id, controller and broker count.
    Info,
    /// The live brokers: id, address, rack, and which one is the controller.
    Brokers,
    /// The metadata quorum: leader, epoch, committed index; voters and observers with their
    /// log end and the time since the leader last heard from them.
    Quorum,
    /// Elect leaders: the preferred replica (first listed) of each partition, or, unclean,
    /// any live replica of partitions that have no leader (records only the lost in-sync
    /// replicas held are lost).
    ElectLeaders(ElectArgs),
    /// Move partitions to other brokers (or cancel or list moves in progress).
    Reassign(ReassignArgs),
    /// Move every replica off a broker, so it can be stopped for good.
    Decommission(DecommissionArgs),
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// preferred or unclean.
    #[arg(long = "type", default_value = "preferred", value_parser = ["preferred", "unclean"])]
    election_type: String,
    /// Topic whose partitions to elect (default: every partition).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of --topic (repeatable; default: all of them).
    #[arg(long, requires = "topic")]
    partition: Vec<i32>,
}

#[derive(Args, Debug)]
pub struct ReassignArgs {
    /// Topic of the partition to move.
    #[arg(long, conflicts_with_all = ["json", "list"])]
    topic: Option<String>,
    /// Partition of --topic.
    #[arg(long, requires = "topic", default_value_t = 0)]
    partition: i32,
    /// The partition's new replicas, preferred leader first: 2,3,4.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "topic",
        conflicts_with = "cancel"
    )]
    replicas: Vec<i32>,
    /// A reassignment file in the format of kafka-reassign-partitions.sh:
    /// {"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3,4]}]}.
    #[arg(long, value_name = "FILE", conflicts_with = "list")]
    json: Option<std::path::PathBuf>,
    /// Cancel the moves of the named partitions instead.
    #[arg(long)]
    cancel: bool,
    /// List the moves in progress.
    #[arg(long)]
    list: bool,
    /// Wait until the moves are done, showing progress.
    #[arg(long)]
    wait: bool,
    /// Longest --wait, in seconds.
    #[arg(long, default_value_t = 3600)]
    wait_timeout_s: u64,
}

#[derive(Args, Debug)]
pub struct DecommissionArgs {
    /// The broker to empty.
    #[arg(long)]
    broker: i32,
    /// Print the plan without moving anything.
    #[arg(long)]
    dry_run: bool,
    /// Wait until the broker holds no replica, showing progress.
    #[arg(long)]
    wait: bool,
    /// Longest --wait, in seconds.
    #[arg(long, default_value_t = 3600)]
    wait_timeout_s: u64,
}

/// Runs one `sluice cluster` subcommand.
pub fn run(args: ClusterArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&args.client.bootstrap, args.client.timeout())?;
    match args.command {
        ClusterCommand::Info | ClusterCommand::Brokers => {
            let client = cluster.bootstrap();
            let v = client
                .version_for::<DescribeClusterRequest>(CLUSTER_VERSIONS.0, CLUSTER_VERSIONS.1)?;
            let r = client.send(v, &DescribeClusterRequest::default())?;
            check_error(
                r.error_code,
                r.error_message.as_ref(),
                "cannot describe the cluster",
            )?;
            if matches!(args.command, ClusterCommand::Info) {
                println!("cluster id: {}", r.cluster_id.as_str());
                println!("controller: {}", r.controller_id.0);
                println!("brokers: {}", r.brokers.len());
                return Ok(());
            }
            let rows: Vec<Vec<String>> = r
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.broker_id.0.to_string(),
                        format!("{}:{}", b.host.as_str(), b.port),
                        b.rack.as_ref().map_or("-".to_string(), |r| r.to_string()),
                        if b.broker_id == r.controller_id {
                            "yes"
                        } else {
                            ""
                        }
                        .to_string(),
                    ]
                })
                .collect();
            print_table(&["ID", "ADDRESS", "RACK", "CONTROLLER"], &rows);
            Ok(())
        }
        ClusterCommand::Quorum => quorum(&mut cluster),
        ClusterCommand::ElectLeaders(a) => elect(&mut cluster, a),
        ClusterCommand::Reassign(a) => reassign(&mut cluster, a),
        ClusterCommand::Decommission(a) => decommission(&mut cluster, a),
    }
}

/// A partition's refusal for the RESULT column: the error's name and the broker's message.
fn refusal_text(code: i16, message: Option<&StrBytes>) -> String {
    let msg = message.map_or(String::new(), |m| format!(": {m}"));
    format!("{}{msg}", error_name(code))
}

/// A partition and its replicas: (topic, partition, replicas).
type Placed = (String, i32, Vec<i32>);

/// Every partition the cluster has, and the live brokers.
fn partitions(cluster: &mut Cluster) -> Result<(Vec<Placed>, Vec<i32>)> {
    let md = cluster.metadata(None)?;
    let mut out = Vec::new();
    for t in &md.topics {
        let Some(name) = &t.name else { continue };
        for p in &t.partitions {
            out.push((
                name.0.to_string(),
                p.partition_index,
                p.replica_nodes.iter().map(|b| b.0).collect(),
            ));
        }
    }
    out.sort();
    Ok((out, md.brokers.iter().map(|b| b.node_id.0).collect()))
}

fn elect(cluster: &mut Cluster, a: ElectArgs) -> Result<()> {
    let topic_partitions = match &a.topic {
        None => None,
        Some(t) => {
            let parts = if a.partition.is_empty() {
                let (all, _) = partitions(cluster)?;
                let mine: Vec<i32> = all
                    .iter()
                    .filter(|(n, _, _)| n == t)
                    .map(|(_, i, _)| *i)
                    .collect();
                if mine.is_empty() {
                    anyhow::bail!("topic {t} does not exist");
                }
                mine
            } else {
                a.partition.clone()
            };
            Some(vec![ElectTopic::default()
                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(parts)])
        }
    };
    let client = cluster.bootstrap();
    let v = client.version_for::<ElectLeadersRequest>(0, 2)?;
    let kind: i8 = if a.election_type == "unclean" { 1 } else { 0 };
    if kind == 1 && v < 1 {
        anyhow::bail!("the broker does not support unclean elections (ElectLeaders v1)");
    }
    let req = ElectLeadersRequest::default()
        .with_election_type(kind)
        .with_topic_partitions(topic_partitions)
        .with_timeout_ms(30_000);
    let r = client.send(v, &req)?;
    check_error(r.error_code, None, "cannot elect leaders")?;
    let mut rows = Vec::new();
    let mut failed = 0;
    for t in &r.replica_election_results {
        for p in &t.partition_result {
            let result = match p.error_code {
                0 => "elected".to_string(),
                84 => "not needed".to_string(),
                code => {
                    failed += 1;
                    refusal_text(code, p.error_message.as_ref())
                }
            };
            rows.push(vec![
                t.topic.0.to_string(),
                p.partition_id.to_string(),
                result,
            ]);
        }
    }
    rows.sort();
    if rows.is_empty() {
        println!("no election was needed");
    } else {
        print_table(&["TOPIC", "PARTITION", "RESULT"], &rows);
    }
    if failed > 0 {
        anyhow::bail!("{failed} election(s) failed");
    }
    Ok(())
}

/// Kafka's reassignment file.
#[derive(serde::Deserialize)]
struct ReassignmentFile {
    partitions: Vec<ReassignmentEntry>,
}

#[derive(serde::Deserialize)]
struct ReassignmentEntry {
    topic: String,
    partition: i32,
    #[serde(default)]
    replicas: Vec<i32>,
}

fn reassign(cluster: &mut Cluster, a: ReassignArgs) -> Result<()> {
    if a.list {
        return list_moves(cluster, None).map(|_| ());
    }
    let moves: Vec<(String, i32, Vec<i32>)> = match (&a.json, &a.topic) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let f: ReassignmentFile = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a reassignment file", path.display()))?;
            f.partitions
                .into_iter()
                .map(|e| (e.topic, e.partition, e.replicas))
                .collect()
        }
        (None, Some(t)) => {
            if a.replicas.is_empty() && !a.cancel {
                anyhow::bail!("--replicas (or --cancel) is needed with --topic");
            }
            vec![(t.clone(), a.partition, a.replicas.clone())]
        }
        (None, None) => anyhow::bail!(
            "name the partitions: --topic/--partition/--replicas, --json FILE, or --list"
        ),
    };
    if !a.cancel {
        if let Some((t, i, _)) = moves.iter().find(|(_, _, r)| r.is_empty()) {
            anyhow::bail!("{t}-{i}: empty replica list (use --cancel to cancel a move)");
        }
    }
    let targets = moves
        .iter()
        .map(|(t, i, r)| (t.clone(), *i, (!a.cancel).then(|| r.clone())))
        .collect::<Vec<_>>();
    submit_moves(cluster, &targets)?;
    let keys: Vec<(String, i32)> = moves.iter().map(|(t, i, _)| (t.clone(), *i)).collect();
    if a.wait && !a.cancel {
        wait_moves(cluster, &keys, a.wait_timeout_s)?;
    }
    Ok(())
}

/// Sends one AlterPartitionReassignments; prints each partition's answer; fails if any
/// was refused.
fn submit_moves(cluster: &mut Cluster, moves: &[(String, i32, Option<Vec<i32>>)]) -> Result<()> {
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (t, i, r) in moves {
        let part = ReassignablePartition::default()
            .with_partition_index(*i)
            .with_replicas(r.as_ref().map(|r| r.iter().map(|b| BrokerId(*b)).collect()));
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let client = cluster.bootstrap();
    let v = client.version_for::<AlterPartitionReassignmentsRequest>(0, 1)?;
    let mut req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    if v >= 1 {
        req.allow_replication_factor_change = true;
    }
    let r = client.send(v, &req)?;
    check_error(
        r.error_code,
        r.error_message.as_ref(),
        "cannot reassign partitions",
    )?;
    let mut rows = Vec::new();
    let mut failed = 0;
    for t in &r.responses {
        for p in &t.partitions {
            let result = if p.error_code == 0 {
                "accepted".to_string()
            } else {
                failed += 1;
                refusal_text(p.error_code, p.error_message.as_ref())
            };
            rows.push(vec![
                t.name.0.to_string(),
                p.partition_index.to_string(),
                result,
            ]);
        }
    }
    print_table(&["TOPIC", "PARTITION", "RESULT"], &rows);
    if failed > 0 {
        anyhow::bail!("{failed} reassignment(s) refused");
    }
    Ok(())
}

/// Prints the moves in progress among `keys` (all when `None`); how many there are.
fn list_moves(cluster: &mut Cluster, keys: Option<&[(String, i32)]>) -> Result<usize> {
    let client = cluster.bootstrap();
    let v = client.version_for::<ListPartitionReassignmentsRequest>(0, 0)?;
    let topics = keys.map(|ks| {
        let mut by: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for (t, i) in ks {
            by.entry(t.as_str()).or_default().push(*i);
        }
        by.into_iter()
            .map(|(t, ps)| {
                ListTopics::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partition_indexes(ps)
            })
            .collect()
    });
    let r = client.send(
        v,
        &ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(topics),
    )?;
    check_error(
        r.error_code,
        r.error_message.as_ref(),
        "cannot list reassignments",
    )?;
    let ids = |v: &[BrokerId]| {
        v.iter()
            .map(|b| b.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut rows = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            rows.push(vec![
                t.name.0.to_string(),
                p.partition_index.to_string(),
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no reassignment in progress");
    } else {
        print_table(
            &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
            &rows,
        );
    }
    Ok(rows.len())
}

/// Polls until none of `keys` is being moved, printing the moves left each time it changes.
fn wait_moves(cluster: &mut Cluster, keys: &[(String, i32)], timeout_s: u64) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    let mut last = usize::MAX;
    loop {
        let client = cluster.bootstrap();
        let v = client.version_for::<ListPartitionReassignmentsRequest>(0, 0)?;
        let r = client.send(
            v,
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000),
        )?;
        check_error(
            r.error_code,
            r.error_message.as_ref(),
            "cannot list reassignments",
        )?;
        let left = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.partition_index))
            })
            .filter(|k| keys.contains(k))
            .count();
        if left == 0 {
            println!("done: {} partition(s) moved", keys.len());
            return Ok(());
        }
        if left != last {
            println!(
                "moving: {left} of {} partition(s) still catching up",
                keys.len()
            );
            last = left;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{left} partition(s) still moving after {timeout_s} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn decommission(cluster: &mut Cluster, a: DecommissionArgs) -> Result<()> {
    let (parts, brokers) = partitions(cluster)?;
    let plan = crate::cluster::placement::plan_decommission(&parts, &brokers, a.broker)
        .map_err(|e| anyhow::anyhow!("cannot decommission broker {}: {e}", a.broker))?;
    if plan.is_empty() {
        println!("broker {} holds no replica", a.broker);
        return Ok(());
    }
    let before: std::collections::HashMap<(String, i32), Vec<i32>> =
        parts.into_iter().map(|(t, i, r)| ((t, i), r)).collect();
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|(t, i, r)| {
            let join = |v: &[i32]| {
                v.iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                t.clone(),
                i.to_string(),
                before
                    .get(&(t.clone(), *i))
                    .map_or(String::new(), |v| join(v)),
                join(r),
            ]
        })
        .collect();
    print_table(&["TOPIC", "PARTITION", "FROM", "TO"], &rows);
    if a.dry_run {
        return Ok(());
    }
    let moves: Vec<(String, i32, Option<Vec<i32>>)> = plan
        .iter()
        .map(|(t, i, r)| (t.clone(), *i, Some(r.clone())))
        .collect();
    submit_moves(cluster, &moves)?;
    if a.wait {
        let keys: Vec<(String, i32)> = plan.iter().map(|(t, i, _)| (t.clone(), *i)).collect();
        wait_moves(cluster, &keys, a.wait_timeout_s)?;
        println!(
            "broker {} holds no replica now; it can be stopped",
            a.broker
        );
    }
    Ok(())
}

fn quorum(cluster: &mut Cluster) -> Result<()> {
    let client = cluster.bootstrap();
    let v = client.version_for::<DescribeQuorumRequest>(QUORUM_VERSIONS.0, QUORUM_VERSIONS.1)?;
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let r = client.send(v, &req)?;
    check_error(
        r.error_code,
        r.error_message.as_ref(),
        "cannot describe the quorum",
    )?;
    let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else {
        anyhow::bail!("the broker described no metadata quorum");
    };
    check_error(
        p.error_code,
        p.error_message.as_ref(),
        "cannot describe the quorum",
    )?;
    println!("leader: {}", p.leader_id.0);
    println!("epoch: {}", p.leader_epoch);
    println!("committed index: {}", p.high_watermark);
    let now = crate::runtime::now_ms();
    let mut rows = Vec::new();
    for (role, list) in [("voter", &p.current_voters), ("observer", &p.observers)] {
        for s in list.iter() {
            let lag = if s.log_end_offset >= 0 {
                (p.high_watermark - s.log_end_offset).max(0).to_string()
            } else {
                "?".to_string()
            };
            let heard = if s.last_fetch_timestamp >= 0 {
                format!("{} ms", (now - s.last_fetch_timestamp).max(0))
            } else {
                "?".to_string()
            };
            let end = if s.log_end_offset >= 0 {
                s.log_end_offset.to_string()
            } else {
                "?".to_string()
            };
            rows.push(vec![
                s.replica_id.0.to_string(),
                role.to_string(),
                end,
                lag,
                heard,
            ]);
        }
    }
    print_table(&["NODE", "ROLE", "LOG-END", "LAG", "LAST-HEARD"], &rows);
    Ok(())
}
