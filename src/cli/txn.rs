//! `sluice txn ...`: transactions and producers, over ListTransactions,
//! DescribeTransactions (with FindCoordinator for the transactional id) and
//! DescribeProducers, in the manner of Kafka's `kafka-transactions.sh`.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, ProducerId,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{check_error, find_topic, Cluster};
use super::group::coordinator::{call_keyed, KEY_TYPE_TRANSACTION};
use super::group::print_table;
use super::ClientArgs;

const LIST_VERSIONS: (i16, i16) = (0, 1);
const DESCRIBE_VERSIONS: (i16, i16) = (0, 0);
const PRODUCERS_VERSIONS: (i16, i16) = (0, 0);

/// Arguments of `sluice txn`.
#[derive(Args, Debug)]
pub struct TxnArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: TxnCommand,
}

#[derive(Subcommand, Debug)]
enum TxnCommand {
    /// List transactional ids with their producer id and state (every broker is asked).
    List {
        /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort); repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only this producer id; repeatable.
        #[arg(long = "producer-id", value_name = "ID")]
        producer_ids: Vec<i64>,
    },
    /// Show a transactional id's state, producer, timeout and partitions.
    Describe {
        /// Transactional id.
        transactional_id: String,
    },
    /// Show the producers a partition knows (idempotent and transactional).
    Producers {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Only this partition; repeatable. Default: every partition.
        #[arg(long = "partition", value_name = "P")]
        partitions: Vec<i32>,
    },
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Runs one `sluice txn` subcommand.
pub fn run(args: TxnArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&args.client.bootstrap, args.client.timeout())?;
    match args.command {
        TxnCommand::List {
            states,
            producer_ids,
        } => list(&mut cluster, &states, &producer_ids),
        TxnCommand::Describe { transactional_id } => describe(&mut cluster, &transactional_id),
        TxnCommand::Producers { topic, partitions } => producers(&mut cluster, &topic, &partitions),
    }
}

fn list(cluster: &mut Cluster, states: &[String], producer_ids: &[i64]) -> Result<()> {
    let metadata = cluster.metadata(Some(&[]))?;
    let mut rows = Vec::new();
    for broker in &metadata.brokers {
        let client = cluster.node(broker.node_id.0, &metadata.brokers)?;
        let version =
            client.version_for::<ListTransactionsRequest>(LIST_VERSIONS.0, LIST_VERSIONS.1)?;
        let request = ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| str_bytes(s)).collect())
            .with_producer_id_filters(producer_ids.iter().map(|p| ProducerId(*p)).collect());
        let response = client.send(version, &request)?;
        check_error(
            response.error_code,
            None,
            &format!(
                "cannot list the transactions of broker {}",
                broker.node_id.0
            ),
        )?;
        if !response.unknown_state_filters.is_empty() {
            let names: Vec<&str> = response
                .unknown_state_filters
                .iter()
                .map(|s| s.as_str())
                .collect();
            bail!("unknown transaction states: {}", names.join(", "));
        }
        for t in response.transaction_states {
            rows.push(vec![
                t.transactional_id.0.to_string(),
                t.producer_id.0.to_string(),
                t.transaction_state.to_string(),
            ]);
        }
    }
    rows.sort();
    print_table(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"], &rows);
    Ok(())
}

fn describe(cluster: &mut Cluster, id: &str) -> Result<()> {
    let build = |_v: i16| {
        DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(str_bytes(id))])
    };
    let (response, _) = call_keyed(
        cluster,
        KEY_TYPE_TRANSACTION,
        id,
        DESCRIBE_VERSIONS,
        build,
        |r, _| r.transaction_states.first().map_or(0, |t| t.error_code),
    )?;
    let t = response
        .transaction_states
        .into_iter()
        .find(|t| t.transactional_id.0.as_str() == id)
        .ok_or_else(|| anyhow!("broker sent no description of {id:?}"))?;
    check_error(
        t.error_code,
        None,
        &format!("cannot describe transactional id {id:?}"),
    )?;
    let partitions: Vec<String> = t
        .topics
        .iter()
        .flat_map(|tp| {
            tp.partitions
                .iter()
                .map(move |p| format!("{}-{p}", tp.topic.0.as_str()))
        })
        .collect();
    print_table(
        &[
            "TRANSACTIONAL-ID",
            "STATE",
            "PRODUCER-ID",
            "EPOCH",
            "TIMEOUT-MS",
            "START-MS",
            "PARTITIONS",
        ],
        &[vec![
            id.to_string(),
            t.transaction_state.to_string(),
            t.producer_id.0.to_string(),
            t.producer_epoch.to_string(),
            t.transaction_timeout_ms.to_string(),
            t.transaction_start_time_ms.to_string(),
            partitions.join(","),
        ]],
    );
    Ok(())
}

fn producers(cluster: &mut Cluster, topic: &str, only: &[i32]) -> Result<()> {
    let metadata = cluster.metadata(Some(&[topic.to_string()]))?;
    let t = find_topic(&metadata, topic)?;
    check_error(
        t.error_code,
        None,
        &format!("cannot describe topic {topic:?}"),
    )?;
    let mut rows = Vec::new();
    let mut parts: Vec<(i32, i32)> = t
        .partitions
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.partition_index))
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    parts.sort();
    if parts.is_empty() {
        bail!("topic {topic:?} has none of the partitions asked for");
    }
    for (partition, leader) in parts {
        let client = cluster.node(leader, &metadata.brokers)?;
        let version = client
            .version_for::<DescribeProducersRequest>(PRODUCERS_VERSIONS.0, PRODUCERS_VERSIONS.1)?;
        let request = DescribeProducersRequest::default()
            .with_topics(vec![TopicRequest::default()
                .with_name(kafka_protocol::messages::TopicName(str_bytes(topic)))
                .with_partition_indexes(vec![partition])]);
        let response = client.send(version, &request)?;
        for tr in response.topics {
            for pr in tr.partitions {
                check_error(
                    pr.error_code,
                    pr.error_message.as_ref(),
                    &format!("cannot describe the producers of {topic}-{partition}"),
                )?;
                for s in pr.active_producers {
                    rows.push(vec![
                        partition.to_string(),
                        s.producer_id.0.to_string(),
                        s.producer_epoch.to_string(),
                        s.last_sequence.to_string(),
                        s.last_timestamp.to_string(),
                        s.current_txn_start_offset.to_string(),
                    ]);
                }
            }
        }
    }
    print_table(
        &[
            "PARTITION",
            "PRODUCER-ID",
            "EPOCH",
            "LAST-SEQUENCE",
            "LAST-TIMESTAMP",
            "TXN-START-OFFSET",
        ],
        &rows,
    );
    Ok(())
}
