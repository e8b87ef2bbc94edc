//! `sluice topic ...`: topic administration over the Kafka admin APIs
//! (CreateTopics, Metadata, DescribeConfigs, DeleteTopics, CreatePartitions,
//! IncrementalAlterConfigs), printed the way `kafka-topics.sh` prints them.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{check_error, error_name, Cluster};
use super::ClientArgs;

/// Kafka's `ConfigResource.Type.TOPIC`.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Kafka's `ConfigSource.DYNAMIC_TOPIC_CONFIG`: a value set on the topic itself.
const CONFIG_SOURCE_TOPIC: i8 = 1;
/// IncrementalAlterConfigs operations (`AlterConfigOp.OpType`).
const CONFIG_OP_SET: i8 = 0;
const CONFIG_OP_DELETE: i8 = 1;

/// Arguments of `sluice topic`.
#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Number of replicas of each partition.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: i16,
        /// Topic setting, repeatable, e.g. `--config retention.ms=60000`.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topic names, one per line.
    List,
    /// Show partitions, leaders, replicas, ISR and topic-level settings.
    Describe {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete topics.
    Delete {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Grow a topic to a total number of partitions.
    AddPartitions {
        /// Topic name.
        name: String,
        /// Total number of partitions wanted (more than it has now).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        total: i32,
    },
    /// Set or remove topic-level settings.
    AlterConfig {
        /// Topic name.
        name: String,
        /// Setting to set, repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value,
              required_unless_present = "delete")]
        set: Vec<(String, String)>,
        /// Setting to remove (back to the broker default), repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

/// Parses `key=value`; the key must be non-empty, the value may contain `=`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Runs one `sluice topic` subcommand.
pub fn run(args: TopicArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&args.client.bootstrap, args.client.timeout())?;
    let timeout_ms = args.client.timeout_ms_i32();
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => create(
            &mut cluster,
            timeout_ms,
            &name,
            partitions,
            replication_factor,
            &configs,
        ),
        TopicCommand::List => list(&mut cluster),
        TopicCommand::Describe { names } => describe(&mut cluster, &names),
        TopicCommand::Delete { names } => delete(&mut cluster, timeout_ms, &names),
        TopicCommand::AddPartitions { name, total } => {
            add_partitions(&mut cluster, timeout_ms, &name, total)
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(&mut cluster, &name, &set, &delete)
        }
    }
}

fn create(
    cluster: &mut Cluster,
    timeout_ms: i32,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<()> {
    let client = cluster.bootstrap();
    let version = client.version_for::<CreateTopicsRequest>(2, 7)?;
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(timeout_ms);
    let response = client.send(version, &request)?;
    let result = response
        .topics
        .first()
        .ok_or_else(|| anyhow!("broker sent no result for topic {name:?}"))?;
    check_error(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot create topic {name:?}"),
    )?;
    println!(
        "created topic {name} ({partitions} partitions, replication factor {replication_factor})"
    );
    Ok(())
}

fn list(cluster: &mut Cluster) -> Result<()> {
    let metadata = cluster.metadata(None)?;
    let mut names: Vec<&str> = metadata
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
        .collect();
    names.sort_unstable();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

fn join_ids(ids: &[BrokerId]) -> String {
    ids.iter()
        .map(|id| id.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(cluster: &mut Cluster, names: &[String]) -> Result<()> {
    let metadata = cluster.metadata(Some(names))?;
    let configs = describe_configs(cluster, names);
    let mut failed = 0usize;
    for name in names {
        let topic = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name));
        let Some(topic) = topic.filter(|t| t.error_code == 0) else {
            let code = topic.map_or(3, |t| t.error_code);
            eprintln!(
                "error: cannot describe topic {name:?}: {}",
                error_name(code)
            );
            failed += 1;
            continue;
        };
        let config_text = match &configs {
            Ok(results) => topic_configs_text(results, name),
            Err(e) => format!("(unavailable: {e:#})"),
        };
        print_topic(topic, name, &config_text);
    }
    if failed > 0 {
        bail!("{failed} of {} topics could not be described", names.len());
    }
    Ok(())
}

fn print_topic(topic: &MetadataResponseTopic, name: &str, config_text: &str) {
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let replication = partitions.first().map_or(0, |p| p.replica_nodes.len());
    println!(
        "Topic: {name}\tPartitionCount: {}\tReplicationFactor: {replication}\tConfigs: {config_text}",
        partitions.len()
    );
    for p in partitions {
        let mut line = format!(
            "\tTopic: {name}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            p.partition_index,
            p.leader_id.0,
            join_ids(&p.replica_nodes),
            join_ids(&p.isr_nodes)
        );
        if !p.offline_replicas.is_empty() {
            line.push_str(&format!("\tOffline: {}", join_ids(&p.offline_replicas)));
        }
        if p.error_code != 0 {
            line.push_str(&format!("\tError: {}", error_name(p.error_code)));
        }
        println!("{line}");
    }
}

fn describe_configs(cluster: &mut Cluster, names: &[String]) -> Result<Vec<DescribeConfigsResult>> {
    let client = cluster.bootstrap();
    let version = client.version_for::<DescribeConfigsRequest>(1, 4)?;
    let request = DescribeConfigsRequest::default().with_resources(
        names
            .iter()
            .map(|n| {
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TYPE_TOPIC)
                    .with_resource_name(str_bytes(n))
                    .with_configuration_keys(None)
            })
            .collect(),
    );
    Ok(client.send(version, &request)?.results)
}

/// `key=value,...` for the settings set on topic `name` itself, as kafka-topics shows.
fn topic_configs_text(results: &[DescribeConfigsResult], name: &str) -> String {
    let Some(result) = results.iter().find(|r| r.resource_name.as_str() == name) else {
        return "(not returned by broker)".to_string();
    };
    if result.error_code != 0 {
        return format!("(error: {})", error_name(result.error_code));
    }
    for c in &result.configs {
        tracing::debug!(topic = name, config = %c.name, source = c.config_source, "DescribeConfigs entry");
    }
    result
        .configs
        .iter()
        .filter(|c| c.config_source == CONFIG_SOURCE_TOPIC)
        .map(|c| match (&c.value, c.is_sensitive) {
            (_, true) => format!("{}=(sensitive)", c.name.as_str()),
            (Some(v), false) => format!("{}={}", c.name.as_str(), v.as_str()),
            (None, false) => format!("{}=(null)", c.name.as_str()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn delete(cluster: &mut Cluster, timeout_ms: i32, names: &[String]) -> Result<()> {
    let client = cluster.bootstrap();
    let version = client.version_for::<DeleteTopicsRequest>(1, 6)?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    // v6 names topics by state (name or id); earlier versions by a plain name list.
    if version >= 6 {
        request.topics = names
            .iter()
            .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
            .collect();
    } else {
        request.topic_names = names.iter().map(|n| topic_name(n)).collect();
    }
    let response = client.send(version, &request)?;
    let mut failed = 0usize;
    for name in names {
        let result = response
            .responses
            .iter()
            .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == name));
        match result {
            None => {
                eprintln!("error: broker sent no result for topic {name:?}");
                failed += 1;
            }
            Some(r) => match check_error(
                r.error_code,
                r.error_message.as_ref(),
                &format!("cannot delete topic {name:?}"),
            ) {
                Ok(()) => println!("deleted topic {name}"),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    failed += 1;
                }
            },
        }
    }
    if failed > 0 {
        bail!("{failed} of {} topics could not be deleted", names.len());
    }
    Ok(())
}

fn add_partitions(cluster: &mut Cluster, timeout_ms: i32, name: &str, total: i32) -> Result<()> {
    let client = cluster.bootstrap();
    let version = client.version_for::<CreatePartitionsRequest>(0, 3)?;
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(total)
            .with_assignments(None)])
        .with_timeout_ms(timeout_ms);
    let response = client.send(version, &request)?;
    let result = response
        .results
        .first()
        .ok_or_else(|| anyhow!("broker sent no result for topic {name:?}"))?;
    check_error(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot grow topic {name:?} to {total} partitions"),
    )?;
    println!("topic {name} now has {total} partitions");
    Ok(())
}

fn alter_config(
    cluster: &mut Cluster,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<()> {
    let client = cluster.bootstrap();
    let version = client.version_for::<IncrementalAlterConfigsRequest>(0, 1)?;
    let sets = set.iter().map(|(k, v)| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(CONFIG_OP_SET)
            .with_value(Some(str_bytes(v)))
    });
    let deletes = delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(CONFIG_OP_DELETE)
            .with_value(None)
    });
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configs(sets.chain(deletes).collect()),
    ]);
    let response = client.send(version, &request)?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| anyhow!("broker sent no result for topic {name:?}"))?;
    check_error(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot alter configs of topic {name:?}"),
    )?;
    println!("updated configs of topic {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".to_string(), "1000".to_string()))
        );
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_key_value("k="), Ok(("k".to_string(), String::new())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }
}
