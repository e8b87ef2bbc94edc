//! A benchmark workload: what to create, how to produce and consume, for how
//! long. Field names follow the OpenMessaging Benchmark's workload files where
//! OMB has the concept (camelCase: `partitionsPerTopic`, `producerRate` ...);
//! the Kafka client settings OMB keeps in its driver file (`acks`,
//! `batch.size`, `linger.ms`, compression) are workload fields here so one file
//! says everything. Every field is documented in docs/bench.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Smallest message: the producer stamps an 8-byte send time at the start of
/// every payload, which the consumer reads back for end-to-end latency.
pub const MIN_MESSAGE_BYTES: usize = 8;
/// Largest message the harness builds (librdkafka's own `message.max.bytes` default).
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;
/// Upper bound on producers and consumers of a run (each is a thread plus librdkafka's own).
pub const MAX_CLIENTS: usize = 256;

/// How message keys are chosen (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// No key: librdkafka spreads batches over partitions (sticky partitioner).
    NoKey,
    /// Keys cycle through `ROUND_ROBIN_KEYS` distinct values, in order.
    KeyRoundRobin,
    /// A fresh pseudo-random 64-bit key per message.
    RandomNano,
}

/// Number of distinct keys `KEY_ROUND_ROBIN` cycles through.
pub const ROUND_ROBIN_KEYS: u64 = 1024;

/// One workload file (`workloads/*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Workload {
    pub name: String,
    pub topics: usize,
    pub partitions_per_topic: i32,
    pub replication_factor: i16,
    pub message_size: usize,
    /// Payload bytes read from this file (relative paths are relative to the
    /// workload file); `messageSize` is then the file's length. Empty: random bytes.
    pub payload_file: String,
    pub key_distributor: KeyDistributor,
    pub producers_per_topic: usize,
    /// Consumer groups per topic; each receives every message.
    pub subscriptions_per_topic: usize,
    /// Consumers in each group.
    pub consumer_per_subscription: usize,
    /// Messages per second over all producers together; 0 = as fast as the client accepts.
    pub producer_rate: f64,
    /// Catch-up mode when > 0: producers write this much (GB, 10^9 bytes)
    /// before any consumer starts; the test then measures consumers reading it.
    #[serde(rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    pub warmup_duration_seconds: f64,
    pub test_duration_seconds: f64,
    /// After the test, how long to wait for consumers to read what was produced.
    pub drain_timeout_seconds: f64,
    /// Producer `acks`: "0", "1" or "all".
    pub acks: String,
    /// Producer `batch.size` in bytes.
    pub batch_size: usize,
    /// Producer `linger.ms`.
    pub linger_ms: f64,
    /// Producer `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// Extra librdkafka producer properties, passed through as they are.
    pub producer_config: BTreeMap<String, String>,
    /// Extra librdkafka consumer properties, passed through as they are.
    pub consumer_config: BTreeMap<String, String>,
    /// Topic configs given to CreateTopics (e.g. `"segment.bytes" = "104857600"`).
    pub topic_config: BTreeMap<String, String>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "workload".into(),
            topics: 1,
            partitions_per_topic: 1,
            replication_factor: 1,
            message_size: 1024,
            payload_file: String::new(),
            key_distributor: KeyDistributor::NoKey,
            producers_per_topic: 1,
            subscriptions_per_topic: 1,
            consumer_per_subscription: 1,
            producer_rate: 0.0,
            consumer_backlog_size_gb: 0.0,
            warmup_duration_seconds: 5.0,
            test_duration_seconds: 60.0,
            drain_timeout_seconds: 30.0,
            acks: "all".into(),
            batch_size: 131_072,
            linger_ms: 1.0,
            compression: "none".into(),
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
            topic_config: BTreeMap::new(),
        }
    }
}

impl Workload {
    /// Reads and checks a workload file; `payloadFile` is resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Workload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading workload {}", path.display()))?;
        let mut w =
            Workload::parse(&text).with_context(|| format!("workload {}", path.display()))?;
        if !w.payload_file.is_empty() {
            let p = PathBuf::from(&w.payload_file);
            if p.is_relative() {
                if let Some(dir) = path.parent() {
                    w.payload_file = dir.join(p).to_string_lossy().into_owned();
                }
            }
        }
        Ok(w)
    }

    /// Parses a workload from TOML text and checks it.
    pub fn parse(text: &str) -> anyhow::Result<Workload> {
        let w: Workload = toml::from_str(text)?;
        w.check()?;
        Ok(w)
    }

    /// Applies `key=value` overrides (field names as in the file). The value is
    /// read as TOML (a number, `true`, a quoted string) and, if that fails, as a
    /// bare string. Map fields take `producerConfig.KEY=VALUE`.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> anyhow::Result<()> {
        if overrides.is_empty() {
            return Ok(());
        }
        let mut table = toml::Value::try_from(&*self)?;
        let root = table
            .as_table_mut()
            .context("workload serialises to a table")?;
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .with_context(|| format!("override {o:?} is not key=value"))?;
            let key = key.trim();
            let value = parse_override_value(value.trim());
            if let Some((map, sub)) = key.split_once('.') {
                let entry = root
                    .get_mut(map)
                    .and_then(toml::Value::as_table_mut)
                    .with_context(|| format!("override {key:?}: {map:?} is not a map field"))?;
                let s = match value {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                entry.insert(sub.to_string(), toml::Value::String(s));
            } else {
                let value = match (root.get(key), value) {
                    (None, _) => bail!("override {key:?}: no such workload field"),
                    // `acks=1` is a string field given a number.
                    (Some(toml::Value::String(_)), v) if !v.is_str() => {
                        toml::Value::String(v.to_string())
                    }
                    (Some(_), v) => v,
                };
                root.insert(key.to_string(), value);
            }
        }
        let w: Workload = table.try_into().context("applying overrides")?;
        w.check()?;
        *self = w;
        Ok(())
    }

    /// Checks ranges, so a run never starts with a setting it cannot honour.
    pub fn check(&self) -> anyhow::Result<()> {
        let clients = self.topics * self.producers_per_topic
            + self.topics * self.subscriptions_per_topic * self.consumer_per_subscription;
        if self.topics == 0 || self.partitions_per_topic < 1 || self.producers_per_topic == 0 {
            bail!("topics, partitionsPerTopic and producersPerTopic must be at least 1");
        }
        if clients > MAX_CLIENTS {
            bail!("{clients} producers and consumers; at most {MAX_CLIENTS}");
        }
        if self.subscriptions_per_topic > 0 && self.consumer_per_subscription == 0 {
            bail!("consumerPerSubscription must be at least 1 when subscriptionsPerTopic > 0");
        }
        if self.payload_file.is_empty()
            && !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.message_size)
        {
            bail!(
                "messageSize must be in {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES} (the first \
                 {MIN_MESSAGE_BYTES} bytes carry the send time)"
            );
        }
        for (name, v) in [
            ("producerRate", self.producer_rate),
            ("consumerBacklogSizeGB", self.consumer_backlog_size_gb),
            ("warmupDurationSeconds", self.warmup_duration_seconds),
            ("drainTimeoutSeconds", self.drain_timeout_seconds),
            ("lingerMs", self.linger_ms),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("{name} must be a finite number >= 0, not {v}");
            }
        }
        if !self.test_duration_seconds.is_finite() || self.test_duration_seconds <= 0.0 {
            bail!("testDurationSeconds must be > 0");
        }
        if !["0", "1", "all", "-1"].contains(&self.acks.as_str()) {
            bail!("acks must be 0, 1 or all, not {:?}", self.acks);
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            bail!("compression must be none, gzip, snappy, lz4 or zstd");
        }
        if self.consumer_backlog_size_gb > 0.0 && self.subscriptions_per_topic == 0 {
            bail!("consumerBacklogSizeGB needs consumers (subscriptionsPerTopic >= 1)");
        }
        Ok(())
    }

    /// Producer threads in the run.
    pub fn producers(&self) -> usize {
        self.topics * self.producers_per_topic
    }

    /// The payload every message starts from: the file's bytes, or pseudo-random
    /// bytes of `messageSize` (random so compression has realistic work).
    pub fn payload(&self) -> anyhow::Result<Vec<u8>> {
        if self.payload_file.is_empty() {
            let mut rng = XorShift::new(0x5EED_u64);
            return Ok((0..self.message_size)
                .map(|_| rng.next_u64() as u8)
                .collect());
        }
        let p = std::fs::read(&self.payload_file)
            .with_context(|| format!("reading payloadFile {}", self.payload_file))?;
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&p.len()) {
            bail!(
                "payloadFile {} holds {} bytes; must be {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES}",
                self.payload_file,
                p.len()
            );
        }
        Ok(p)
    }
}

fn parse_override_value(v: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.into())),
        Err(_) => toml::Value::String(v.into()),
    }
}

/// A small, fast pseudo-random generator (xorshift64) for payloads and keys;
/// not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_omb_names_and_defaults() {
        let w = Workload::parse(
            r#"
            name = "t"
            topics = 2
            partitionsPerTopic = 4
            messageSize = 100
            keyDistributor = "KEY_ROUND_ROBIN"
            producerRate = 5000
            testDurationSeconds = 3
            batchSize = 16384
            [producerConfig]
            "enable.idempotence" = "true"
            "#,
        )
        .expect("parses");
        assert_eq!(w.topics, 2);
        assert_eq!(w.partitions_per_topic, 4);
        assert_eq!(w.key_distributor, KeyDistributor::KeyRoundRobin);
        assert_eq!(w.producer_rate, 5000.0);
        assert_eq!(w.batch_size, 16384);
        assert_eq!(w.acks, "all", "default acks");
        assert_eq!(w.producers(), 2);
        assert_eq!(w.producer_config["enable.idempotence"], "true");
    }

    #[test]
    fn refuses_unknown_fields_and_bad_ranges() {
        assert!(Workload::parse("partitionPerTopic = 3").is_err(), "typo");
        assert!(
            Workload::parse("messageSize = 4").is_err(),
            "below the stamp"
        );
        assert!(Workload::parse("acks = \"2\"").is_err());
        assert!(Workload::parse("compression = \"brotli\"").is_err());
        assert!(Workload::parse("testDurationSeconds = 0").is_err());
        assert!(Workload::parse("producerRate = -1").is_err());
        assert!(Workload::parse("producersPerTopic = 300").is_err());
    }

    #[test]
    fn overrides_replace_fields_with_typed_values() {
        let mut w = Workload::default();
        w.apply_overrides(&[
            "producerRate=2500".into(),
            "acks=1".into(),
            "compression=lz4".into(),
            "producerConfig.enable.idempotence=true".into(),
            "lingerMs=0.5".into(),
        ])
        .expect("applies");
        assert_eq!(w.producer_rate, 2500.0);
        assert_eq!(w.acks, "1");
        assert_eq!(w.compression, "lz4");
        assert_eq!(w.linger_ms, 0.5);
        assert_eq!(w.producer_config["enable.idempotence"], "true");
        assert!(w.apply_overrides(&["nope=1".into()]).is_err());
        assert!(w.apply_overrides(&["messageSize=2".into()]).is_err());
        assert!(w.apply_overrides(&["producerRate".into()]).is_err());
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("workloads/") {
            let path = entry.expect("entry").path();
            let w = Workload::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            names.push(w.name);
        }
        names.sort();
        assert_eq!(
            names,
            [
                "catch-up",
                "fan-out",
                "fixed-rate-latency-1k",
                "max-throughput-1k",
                "smoke"
            ]
        );
        let cu = Workload::load(&dir.join("catch-up.toml")).expect("catch-up");
        assert!(
            cu.consumer_backlog_size_gb > 0.0,
            "OMB's consumerBacklogSizeGB name"
        );
    }

    #[test]
    fn payload_has_message_size_bytes() {
        let w = Workload {
            message_size: 100,
            ..Workload::default()
        };
        let p = w.payload().expect("payload");
        assert_eq!(p.len(), 100);
        assert!(p.iter().any(|&b| b != p[0]), "not a constant run");
    }
}
