//! `sluice cluster info|brokers|quorum`: the cluster as its brokers report it,
//! over DescribeCluster (cluster id, controller, live brokers with their
//! racks) and DescribeQuorum (the metadata quorum: leader, epoch, committed
//! index, voters and observers with how far their logs reach), as Kafka's
//! `kafka-cluster.sh cluster-id`, `kafka-broker-api-versions.sh` and
//! `kafka-metadata-quorum.sh describe --status/--replication` show them.

use anyhow::Result;
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeClusterRequest, DescribeQuorumRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::client::{check_error, Cluster};
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
    }
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
