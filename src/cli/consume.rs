//! `sluice consume`: prints the records of a topic, one per line, like `kcat -C`.
//! Start offsets come from ListOffsets (`beginning`/`end`) or the command line;
//! records come from Fetch with long polling. Fetch is capped at v12, the last
//! version that names topics (v13+ wants topic ids from Metadata v10+), which
//! keeps this client simple and works with every broker since Kafka 2.x.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::client::{check_error, error_name, find_topic, Cluster};
use super::format::{OutputFormat, PrintedRecord};
use super::records::decode_fetched;
use super::ClientArgs;

/// Longest time the broker may hold a Fetch open waiting for data.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Response size limits asked of the broker.
const FETCH_BYTES_MAX: i32 = 50 * 1024 * 1024;
const FETCH_PARTITION_BYTES_MAX: i32 = 1024 * 1024;
/// Fetch v13+ names topics by id; v12 is the last with names (see module docs).
const FETCH_VERSION_MAX: i16 = 12;
const LIST_OFFSETS_VERSION_MAX: i16 = 10;
/// ListOffsets special timestamps.
const OFFSET_EARLIEST: i64 = -2;
const OFFSET_LATEST: i64 = -1;
/// A consumer's replica id in Fetch and ListOffsets.
const CONSUMER_REPLICA_ID: i32 = -1;

/// Where `--offset` starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Beginning,
    End,
    At(i64),
}

/// Parses `beginning`, `end` or a non-negative offset.
pub fn parse_start_offset(s: &str) -> Result<StartOffset, String> {
    match s {
        "beginning" | "earliest" => Ok(StartOffset::Beginning),
        "end" | "latest" => Ok(StartOffset::End),
        n => match n.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(StartOffset::At(offset)),
            _ => Err(format!(
                "expected beginning, end or an offset >= 0, got {s:?}"
            )),
        },
    }
}

/// Arguments of `sluice consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (default: all partitions).
    #[arg(short, long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Where to start in each partition: beginning, end, or an offset.
    #[arg(short, long, default_value = "beginning", value_parser = parse_start_offset)]
    pub offset: StartOffset,
    /// Stop after this many records.
    #[arg(short, long)]
    pub count: Option<u64>,
    /// Stop when every partition has been read to its end (high watermark).
    #[arg(short, long)]
    pub exit_at_end: bool,
    /// Print the key before the value, separated by --key-delimiter.
    #[arg(short = 'k', long)]
    pub print_key: bool,
    /// Separator between key and value with --print-key.
    #[arg(short = 'K', long, default_value = "\t")]
    pub key_delimiter: String,
    /// Output format, e.g. '%p:%o %k=%s\n' (see docs/cli.md); overrides --print-key.
    #[arg(short, long)]
    pub format: Option<String>,
}

/// Read state of one partition.
#[derive(Debug)]
struct PartitionState {
    leader: i32,
    position: i64,
    high_watermark: Option<i64>,
    /// Byte limit asked for this partition; doubled (up to `FETCH_BYTES_MAX`)
    /// when a response held only part of one batch, so a large batch cannot stall us.
    max_bytes: i32,
}

/// Runs `sluice consume`.
pub fn run(args: ConsumeArgs) -> Result<()> {
    let format = match &args.format {
        Some(f) => OutputFormat::parse(f)?,
        None if args.print_key => OutputFormat::key_value(&args.key_delimiter),
        None => OutputFormat::value_only(),
    };
    let mut cluster = Cluster::connect(&args.client.bootstrap, args.client.timeout())?;
    let metadata = cluster.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let topic = find_topic(&metadata, &args.topic)?;
    if topic.error_code != 0 {
        bail!(
            "cannot consume topic {:?}: {}",
            args.topic,
            error_name(topic.error_code)
        );
    }
    let mut leaders: BTreeMap<i32, i32> = topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    if let Some(p) = args.partition {
        let leader = leaders.get(&p).copied().ok_or_else(|| {
            anyhow!(
                "topic {:?} has no partition {p} ({} partitions)",
                args.topic,
                leaders.len()
            )
        })?;
        leaders = BTreeMap::from([(p, leader)]);
    }
    if let Some((p, _)) = leaders.iter().find(|(_, leader)| **leader < 0) {
        bail!(
            "partition {p} of {:?} has no leader: {}",
            args.topic,
            error_name(5)
        );
    }
    let brokers = metadata.brokers.clone();
    let mut state = BTreeMap::new();
    for (partition, leader) in leaders {
        let position = match args.offset {
            StartOffset::At(offset) => offset,
            StartOffset::Beginning => list_offset(
                &mut cluster,
                &brokers,
                &args,
                leader,
                partition,
                OFFSET_EARLIEST,
            )?,
            StartOffset::End => list_offset(
                &mut cluster,
                &brokers,
                &args,
                leader,
                partition,
                OFFSET_LATEST,
            )?,
        };
        let s = PartitionState {
            leader,
            position,
            high_watermark: None,
            max_bytes: FETCH_PARTITION_BYTES_MAX,
        };
        state.insert(partition, s);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match consume_loop(&mut cluster, &brokers, &args, &format, &mut state, &mut out) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
}

fn list_offset(
    cluster: &mut Cluster,
    brokers: &[MetadataResponseBroker],
    args: &ConsumeArgs,
    leader: i32,
    partition: i32,
    timestamp: i64,
) -> Result<i64> {
    let client = cluster.node(leader, brokers)?;
    let version = client.version_for::<ListOffsetsRequest>(1, LIST_OFFSETS_VERSION_MAX)?;
    let mut request = ListOffsetsRequest::default()
        .with_replica_id(CONSUMER_REPLICA_ID.into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    if version >= 10 {
        request.timeout_ms = args.client.timeout_ms_i32();
    }
    let response = client.send(version, &request)?;
    let result = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| anyhow!("broker sent no offset for partition {partition}"))?;
    check_error(
        result.error_code,
        None,
        &format!(
            "cannot look up offsets of {} partition {partition}",
            args.topic
        ),
    )?;
    Ok(result.offset)
}

/// Fetches round after round until `--count` records or, with `-e`, the end.
fn consume_loop(
    cluster: &mut Cluster,
    brokers: &[MetadataResponseBroker],
    args: &ConsumeArgs,
    format: &OutputFormat,
    state: &mut BTreeMap<i32, PartitionState>,
    out: &mut impl Write,
) -> Result<()> {
    let mut printer = Printer {
        args,
        format,
        printed: 0,
    };
    let max_wait_ms = FETCH_MAX_WAIT_MS.min(args.client.timeout_ms_i32() / 2);
    loop {
        if printer.done() {
            return Ok(());
        }
        let all_at_end = state
            .values()
            .all(|s| s.high_watermark.is_some_and(|hw| s.position >= hw));
        if args.exit_at_end && all_at_end {
            return Ok(());
        }
        let mut by_leader: BTreeMap<i32, Vec<FetchPartition>> = BTreeMap::new();
        for (partition, s) in state.iter() {
            by_leader.entry(s.leader).or_default().push(
                FetchPartition::default()
                    .with_partition(*partition)
                    .with_fetch_offset(s.position)
                    .with_partition_max_bytes(s.max_bytes),
            );
        }
        for (leader, partitions) in by_leader {
            let request = FetchRequest::default()
                .with_replica_id(CONSUMER_REPLICA_ID.into())
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_BYTES_MAX)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(args.topic.clone())))
                    .with_partitions(partitions)]);
            let client = cluster.node(leader, brokers)?;
            let version = client.version_for::<FetchRequest>(4, FETCH_VERSION_MAX)?;
            let response = client.send(version, &request)?;
            check_error(response.error_code, None, "fetch failed")?;
            for data in response.responses.into_iter().flat_map(|t| t.partitions) {
                if let Some(s) = state.get_mut(&data.partition_index) {
                    printer.absorb(s, data, out)?;
                }
            }
            out.flush().context("cannot write to stdout")?;
        }
    }
}

/// Prints fetched records and moves partition positions forward.
struct Printer<'a> {
    args: &'a ConsumeArgs,
    format: &'a OutputFormat,
    printed: u64,
}

impl Printer<'_> {
    fn done(&self) -> bool {
        self.args.count.is_some_and(|c| self.printed >= c)
    }

    /// Handles one partition of a Fetch response.
    fn absorb(
        &mut self,
        s: &mut PartitionState,
        data: PartitionData,
        out: &mut impl Write,
    ) -> Result<()> {
        let topic = &self.args.topic;
        let partition = data.partition_index;
        check_error(
            data.error_code,
            None,
            &format!(
                "cannot fetch {topic} partition {partition} at offset {}",
                s.position
            ),
        )?;
        s.high_watermark = Some(data.high_watermark);
        let Some(bytes) = data.records.filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        let fetched = decode_fetched(bytes)?;
        let Some(next_offset) = fetched.next_offset else {
            // Only part of one batch fit: ask for more bytes next time.
            if s.max_bytes >= FETCH_BYTES_MAX {
                bail!(
                    "record batch at {topic} partition {partition} offset {} is larger than {FETCH_BYTES_MAX} bytes",
                    s.position
                );
            }
            s.max_bytes = s.max_bytes.saturating_mul(2).min(FETCH_BYTES_MAX);
            return Ok(());
        };
        for record in &fetched.records {
            if record.offset < s.position {
                continue; // compressed batches may start before the fetch offset
            }
            if self.done() {
                return Ok(());
            }
            let printed = PrintedRecord {
                topic,
                partition,
                record,
            };
            self.format.write(out, &printed)?;
            self.printed += 1;
            s.position = record.offset.saturating_add(1);
        }
        // Skips offsets with no data record (control batches, compacted gaps).
        s.position = s.position.max(next_offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_parse() {
        assert_eq!(parse_start_offset("beginning"), Ok(StartOffset::Beginning));
        assert_eq!(parse_start_offset("end"), Ok(StartOffset::End));
        assert_eq!(parse_start_offset("42"), Ok(StartOffset::At(42)));
        assert!(parse_start_offset("-1").is_err());
        assert!(parse_start_offset("soon").is_err());
    }
}
