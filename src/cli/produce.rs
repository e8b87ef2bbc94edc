//! `sluice produce`: reads lines from stdin or a file and produces one record per
//! line. A reader thread feeds lines through a bounded channel; the main thread
//! batches them per partition and sends a Produce request per partition leader
//! when a batch is full (`BATCH_RECORDS_MAX` / `BATCH_BYTES_MAX`), when input
//! pauses for `LINGER`, and at end of input.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use super::client::{error_name, find_topic, Cluster};
use super::partitioner::Partitioner;
use super::records::{encode_batch, PendingRecord};
use super::ClientArgs;

/// Records buffered before a flush.
const BATCH_RECORDS_MAX: usize = 1000;
/// Key and value bytes buffered before a flush.
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// How long input may pause before buffered records are sent anyway.
const LINGER: Duration = Duration::from_millis(100);
/// Lines the reader thread may queue ahead of the sender.
const CHANNEL_LINES_MAX: usize = 10_000;
/// Produce v13 names topics by id only; v12 is the last version with names.
const PRODUCE_VERSION_MAX: i16 = 12;

/// Acknowledgement level of `--acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// No response; fire and forget.
    #[value(name = "0")]
    None,
    /// The leader has written the records.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica has the records.
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Codec of `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Arguments of `sluice produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Topic to write to.
    pub topic: String,
    /// Write every record to this partition (default: key hash, or round robin without key).
    #[arg(short, long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Split each line at the first occurrence of this string into key and value.
    #[arg(short = 'K', long, value_parser = non_empty)]
    pub key_delimiter: Option<String>,
    /// Acknowledgements to wait for.
    #[arg(long, value_enum, default_value = "all")]
    pub acks: Acks,
    /// Compression codec of the batches.
    #[arg(short = 'z', long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Read lines from this file instead of stdin.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

/// Splits a line into key and value at the first `delimiter`; a line without the
/// delimiter (or with no delimiter given) is a value with a null key.
pub fn split_line(line: &[u8], delimiter: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
        if let Some(at) = line.windows(d.len()).position(|w| w == d) {
            let key = Bytes::copy_from_slice(&line[..at]);
            let value = Bytes::copy_from_slice(&line[at + d.len()..]);
            return (Some(key), value);
        }
    }
    (None, Bytes::copy_from_slice(line))
}

/// Removes the line terminator (`\n` or `\r\n`).
fn trim_newline(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

/// Starts the reader thread; it ends at end of input or when the receiver is gone.
fn spawn_reader(file: Option<PathBuf>) -> Result<Receiver<std::io::Result<Vec<u8>>>> {
    let mut input: Box<dyn BufRead + Send> = match &file {
        Some(path) => {
            Box::new(BufReader::new(File::open(path).with_context(|| {
                format!("cannot open input file {}", path.display())
            })?))
        }
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let (tx, rx) = sync_channel(CHANNEL_LINES_MAX);
    std::thread::spawn(move || loop {
        let mut line = Vec::new();
        let sent = match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => tx.send(Ok(trim_newline(line))),
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    });
    Ok(rx)
}

/// Per-partition buffers awaiting a flush.
#[derive(Default)]
struct Pending {
    by_partition: BTreeMap<i32, Vec<PendingRecord>>,
    records: usize,
    bytes: usize,
}

/// Runs `sluice produce`.
pub fn run(args: ProduceArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&args.client.bootstrap, args.client.timeout())?;
    let metadata = cluster.metadata_auto_create(std::slice::from_ref(&args.topic))?;
    let topic = find_topic(&metadata, &args.topic)?;
    if topic.error_code != 0 {
        bail!(
            "cannot produce to topic {:?}: {} (create it with `sluice topic create`, or let the broker auto-create topics)",
            args.topic,
            error_name(topic.error_code)
        );
    }
    let leaders: BTreeMap<i32, i32> = topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let partition_count = i32::try_from(leaders.len()).unwrap_or(i32::MAX);
    if partition_count == 0 {
        bail!("topic {:?} has no partitions", args.topic);
    }
    if let Some(p) = args.partition.filter(|p| *p >= partition_count) {
        bail!(
            "topic {:?} has partitions 0..{partition_count}, not {p}",
            args.topic
        );
    }
    let mut sender = Sender {
        cluster: &mut cluster,
        brokers: metadata.brokers.clone(),
        leaders,
        args: &args,
        produced: 0,
        failed: 0,
    };
    let lines = spawn_reader(args.file.clone())?;
    let mut partitioner = Partitioner::new(args.partition);
    let delimiter = args.key_delimiter.as_deref().map(str::as_bytes);
    let mut pending = Pending::default();
    loop {
        match lines.recv_timeout(LINGER) {
            Ok(Ok(line)) => {
                let (key, value) = split_line(&line, delimiter);
                let partition = partitioner.choose(key.as_deref(), partition_count);
                pending.bytes += value.len() + key.as_ref().map_or(0, Bytes::len);
                pending.records += 1;
                let record = PendingRecord { key, value };
                pending
                    .by_partition
                    .entry(partition)
                    .or_default()
                    .push(record);
                if pending.records >= BATCH_RECORDS_MAX || pending.bytes >= BATCH_BYTES_MAX {
                    sender.flush(std::mem::take(&mut pending))?;
                }
            }
            Ok(Err(e)) => return Err(e).context("cannot read input"),
            Err(RecvTimeoutError::Timeout) => sender.flush(std::mem::take(&mut pending))?,
            Err(RecvTimeoutError::Disconnected) => {
                sender.flush(std::mem::take(&mut pending))?;
                break;
            }
        }
    }
    let (produced, failed) = (sender.produced, sender.failed);
    tracing::info!(topic = %args.topic, produced, failed, "produce finished");
    if failed > 0 {
        bail!(
            "{failed} of {} records were not produced",
            produced + failed
        );
    }
    Ok(())
}

/// Sends flushed batches to partition leaders and counts the outcome.
struct Sender<'a> {
    cluster: &'a mut Cluster,
    brokers: Vec<MetadataResponseBroker>,
    leaders: BTreeMap<i32, i32>,
    args: &'a ProduceArgs,
    produced: usize,
    failed: usize,
}

impl Sender<'_> {
    fn flush(&mut self, pending: Pending) -> Result<()> {
        if pending.records == 0 {
            return Ok(());
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // Group partitions by leader so each broker gets one request.
        let mut by_leader: BTreeMap<i32, Vec<(i32, Vec<PendingRecord>)>> = BTreeMap::new();
        for (partition, records) in pending.by_partition {
            match self.leaders.get(&partition).copied().filter(|l| *l >= 0) {
                Some(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .push((partition, records)),
                None => {
                    eprintln!(
                        "error: partition {partition}: {}",
                        error_name(kafka_protocol::ResponseError::LeaderNotAvailable.code())
                    );
                    self.failed += records.len();
                }
            }
        }
        for (leader, partitions) in by_leader {
            self.send_to_leader(leader, partitions, now_ms)?;
        }
        Ok(())
    }

    fn send_to_leader(
        &mut self,
        leader: i32,
        partitions: Vec<(i32, Vec<PendingRecord>)>,
        now_ms: i64,
    ) -> Result<()> {
        let compression = Compression::from(self.args.compression);
        let mut counts = BTreeMap::new();
        let mut partition_data = Vec::with_capacity(partitions.len());
        for (partition, records) in &partitions {
            counts.insert(*partition, records.len());
            partition_data.push(
                PartitionProduceData::default()
                    .with_index(*partition)
                    .with_records(Some(encode_batch(records, compression, now_ms)?)),
            );
        }
        let request = ProduceRequest::default()
            .with_acks(self.args.acks.wire())
            .with_timeout_ms(self.args.client.timeout_ms_i32())
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.args.topic.clone())))
                .with_partition_data(partition_data)]);
        let client = self.cluster.node(leader, &self.brokers)?;
        let version = client.version_for::<ProduceRequest>(3, PRODUCE_VERSION_MAX)?;
        if self.args.acks == Acks::None {
            client.send_without_response(version, &request)?;
            self.produced += counts.values().sum::<usize>();
            return Ok(());
        }
        let response = client.send(version, &request)?;
        for topic in &response.responses {
            for p in &topic.partition_responses {
                let Some(count) = counts.remove(&p.index) else {
                    continue; // a partition we did not send; nothing to count
                };
                if p.error_code == 0 {
                    self.produced += count;
                    continue;
                }
                self.failed += count;
                let message = p.error_message.as_ref().map_or("", |m| m.as_str());
                eprintln!(
                    "error: topic {} partition {}: {} {message}",
                    self.args.topic,
                    p.index,
                    error_name(p.error_code)
                );
            }
        }
        for (partition, count) in counts {
            eprintln!("error: broker sent no result for partition {partition}");
            self.failed += count;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_without_delimiter_is_value_only() {
        assert_eq!(
            split_line(b"hello", None),
            (None, Bytes::from_static(b"hello"))
        );
        assert_eq!(
            split_line(b"hello", Some(b":")),
            (None, Bytes::from_static(b"hello"))
        );
    }

    #[test]
    fn line_splits_at_first_delimiter() {
        let (key, value) = split_line(b"k:v:w", Some(b":"));
        assert_eq!(key, Some(Bytes::from_static(b"k")));
        assert_eq!(value, Bytes::from_static(b"v:w"));
        let (key, value) = split_line(b"user-1::{\"a\":1}", Some(b"::"));
        assert_eq!(key, Some(Bytes::from_static(b"user-1")));
        assert_eq!(value, Bytes::from_static(b"{\"a\":1}"));
        let (key, value) = split_line(b":v", Some(b":"));
        assert_eq!(key, Some(Bytes::new()));
        assert_eq!(value, Bytes::from_static(b"v"));
    }

    #[test]
    fn newline_trimming() {
        assert_eq!(trim_newline(b"a\n".to_vec()), b"a".to_vec());
        assert_eq!(trim_newline(b"a\r\n".to_vec()), b"a".to_vec());
        assert_eq!(trim_newline(b"a".to_vec()), b"a".to_vec());
        assert_eq!(trim_newline(b"\n".to_vec()), Vec::<u8>::new());
    }

    #[test]
    fn acks_wire_values() {
        assert_eq!(Acks::None.wire(), 0);
        assert_eq!(Acks::Leader.wire(), 1);
        assert_eq!(Acks::All.wire(), -1);
    }
}
