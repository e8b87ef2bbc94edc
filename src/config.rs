//! Broker and topic settings: embedded defaults, a TOML file, environment
//! variables, `--set key=value` and dedicated flags, in that order of precedence.
//!
//! Keys are Kafka's names wherever Kafka has one (`log.dirs`,
//! `auto.create.topics.enable`, `message.max.bytes`, ...). Topic-level settings
//! (`retention.ms`, `max.message.bytes`, ...) are described by [`TOPIC_CONFIGS`],
//! each with the broker-level key that supplies its default, as in Kafka.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::storage::{CleanupPolicy, IoMode, LogConfig, TimestampType};

pub mod cluster;
pub use cluster::{ClusterSettings, Listener, Roles};

/// Arguments of `sluice start`. Precedence, lowest to highest: embedded defaults,
/// the TOML file (`--config`), environment variables `SLUICE_<KEY>` (dots as
/// underscores, upper case), `--set key=value`, then the dedicated flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StartArgs {
    /// TOML config file with Kafka-named keys (`"log.dirs" = ["/data"]`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on for Kafka clients (default 127.0.0.1:9092).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (shorthand for a single `log.dirs` entry; default ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (one pinned thread each; default: available cores).
    #[arg(long)]
    pub smp: Option<usize>,
    /// Any setting by its Kafka name, e.g. `--set log.segment.bytes=1048576`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// One broker-level setting: its key, default and meaning (for docs and validation).
pub struct BrokerSetting {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every broker-level setting the broker reads. Unknown keys are refused at start-up.
pub const BROKER_SETTINGS: &[BrokerSetting] = &[
    BrokerSetting { key: "listeners", default: "127.0.0.1:9092", doc: "the listeners, NAME://host:port,... (a bare host:port is PLAINTEXT): one for Kafka clients, and the CONTROLLER listener (named in controller.listener.names) where the metadata quorum talks when controller.quorum.voters is set" },
    BrokerSetting { key: "advertised.listeners", default: "", doc: "NAME://host:port (or host:port) given to clients and other brokers in Metadata (default: the client listener)" },
    BrokerSetting { key: "process.roles", default: "broker,controller", doc: "broker, controller, or broker,controller (a controller is a voter of the metadata quorum; a broker serves clients)" },
    BrokerSetting { key: "controller.quorum.voters", default: "", doc: "the metadata quorum's voters, id@host:port,... at their CONTROLLER listeners; empty: this node alone is a one-voter quorum (single-node mode, no controller listener)" },
    BrokerSetting { key: "controller.listener.names", default: "CONTROLLER", doc: "names of the listeners in listeners that carry quorum traffic" },
    BrokerSetting { key: "controller.quorum.election.timeout.ms", default: "1000", doc: "a voter that hears no leader for this long (randomised up to twice it) starts an election" },
    BrokerSetting { key: "broker.rack", default: "", doc: "this broker's rack; when every broker has one, replicas are spread across racks" },
    BrokerSetting { key: "broker.heartbeat.interval.ms", default: "2000", doc: "the controller's fencing check runs every half of this (liveness itself comes from the quorum's replication heartbeats)" },
    BrokerSetting { key: "broker.session.timeout.ms", default: "9000", doc: "a broker not heard from for this long is fenced: it is dropped from Metadata and its partitions' leadership moves (offline for replication factor 1)" },
    BrokerSetting { key: "replica.lag.time.max.ms", default: "30000", doc: "a follower in the ISR that has not caught up with its leader's log end for this long is dropped from the ISR by the leader" },
    BrokerSetting { key: "replica.fetch.max.bytes", default: "1048576", doc: "bytes a follower asks for per partition in one fetch (a larger batch still comes whole)" },
    BrokerSetting { key: "replica.fetch.response.max.bytes", default: "10485760", doc: "bytes a follower asks for in one fetch response, all partitions together" },
    BrokerSetting { key: "replica.fetch.wait.max.ms", default: "500", doc: "how long a follower's fetch waits at the leader for new records" },
    BrokerSetting { key: "replica.fetch.min.bytes", default: "1", doc: "bytes a follower's fetch waits for at the leader before it is answered" },
    BrokerSetting { key: "replica.fetch.backoff.ms", default: "1000", doc: "pause after a follower fetch that failed (connection lost, leader moved)" },
    BrokerSetting { key: "leader.replication.throttled.rate", default: "9223372036854775807", doc: "bytes per second a leader sends to the followers its topics' leader.replication.throttled.replicas name while they are out of the ISR (a reassignment's new replicas); also a dynamic broker config (AlterConfigs on the broker, or the cluster default)" },
    BrokerSetting { key: "follower.replication.throttled.rate", default: "9223372036854775807", doc: "bytes per second a follower fetches for the replicas its topics' follower.replication.throttled.replicas name while they are out of the ISR; also a dynamic broker config" },
    BrokerSetting { key: "replication.quota.window.num", default: "11", doc: "number of sample windows the replication throttles measure their rate over" },
    BrokerSetting { key: "replication.quota.window.size.seconds", default: "1", doc: "length of one replication throttle sample window" },
    BrokerSetting { key: "num.replica.fetchers", default: "1", doc: "accepted for Kafka compatibility: Sluice runs one fetcher per (leader broker, shard) on the shard that owns the partitions it fetches" },
    BrokerSetting { key: "unclean.leader.election.enable", default: "false", doc: "default of the topic setting: when every in-sync replica of a partition is fenced, the controller may make an out-of-sync live replica its leader (records it lacks are lost; logged as a warning)" },
    BrokerSetting { key: "auto.leader.rebalance.enable", default: "true", doc: "the controller moves each partition's leadership back to its preferred replica (the first listed) when that replica is in sync and a broker's share of partitions not led by their preferred replica exceeds leader.imbalance.per.broker.percentage" },
    BrokerSetting { key: "leader.imbalance.check.interval.seconds", default: "300", doc: "how often the controller checks the leadership balance (auto.leader.rebalance.enable)" },
    BrokerSetting { key: "leader.imbalance.per.broker.percentage", default: "10", doc: "percentage of a broker's preferred partitions that may be led elsewhere before the controller moves them back" },
    BrokerSetting { key: "log.dirs", default: "data", doc: "comma-separated data directories; a new partition goes to the one holding fewest partitions" },
    BrokerSetting { key: "smp", default: "0", doc: "number of shards (pinned threads); 0 = one per available core" },
    BrokerSetting { key: "node.id", default: "0", doc: "this node's id in the cluster (a non-negative integer; kept in meta.properties of every data dir)" },
    BrokerSetting { key: "auto.create.topics.enable", default: "true", doc: "create a topic when a client asks Metadata for an unknown one" },
    BrokerSetting { key: "num.partitions", default: "1", doc: "partitions of an auto-created topic or a CreateTopics without a count" },
    BrokerSetting { key: "default.replication.factor", default: "1", doc: "replication factor when a CreateTopics gives none" },
    BrokerSetting { key: "message.max.bytes", default: "1048588", doc: "largest record batch accepted (default for topic max.message.bytes)" },
    BrokerSetting { key: "log.segment.bytes", default: "1073741824", doc: "default segment.bytes" },
    BrokerSetting { key: "log.roll.ms", default: "604800000", doc: "default segment.ms" },
    BrokerSetting { key: "log.retention.ms", default: "604800000", doc: "default retention.ms (-1: keep forever)" },
    BrokerSetting { key: "log.retention.bytes", default: "-1", doc: "default retention.bytes (-1: unlimited)" },
    BrokerSetting { key: "log.index.interval.bytes", default: "4096", doc: "default index.interval.bytes" },
    BrokerSetting { key: "log.index.size.max.bytes", default: "10485760", doc: "default segment.index.bytes" },
    BrokerSetting { key: "log.message.timestamp.type", default: "CreateTime", doc: "default message.timestamp.type" },
    BrokerSetting { key: "log.cleanup.policy", default: "delete", doc: "default cleanup.policy" },
    BrokerSetting { key: "compression.type", default: "producer", doc: "default compression.type" },
    BrokerSetting { key: "min.insync.replicas", default: "1", doc: "default min.insync.replicas" },
    BrokerSetting { key: "log.retention.check.interval.ms", default: "300000", doc: "how often each shard applies retention and time-based roll" },
    BrokerSetting { key: "log.cleaner.enable", default: "true", doc: "run the log cleaner on topics whose cleanup.policy includes compact" },
    BrokerSetting { key: "log.cleaner.backoff.ms", default: "15000", doc: "how often each shard checks its compacted partitions for a cleaning pass" },
    BrokerSetting { key: "io_mode", default: "direct", doc: "segment writes: direct (O_DIRECT, DMA) or buffered (page cache)" },
    BrokerSetting { key: "socket.request.max.bytes", default: "104857600", doc: "largest request frame; a longer one closes the connection before anything is allocated" },
    BrokerSetting { key: "fetch.max.bytes", default: "57671680", doc: "most record bytes one Fetch response carries (the client's max_bytes is capped to it); each shard a fetch reads from reads at most this much (plus one whole batch)" },
    BrokerSetting { key: "fetch.splice.enable", default: "false", doc: "Sluice only: send fetched records of at least 32 KiB that are read from segment files with splice (file to pipe to socket, through the page cache, on a side io_uring ring) instead of copying them through the broker" },
    BrokerSetting { key: "fetch.max.wait.cap.ms", default: "30000", doc: "Sluice only: longest a Fetch long-polls, whatever max_wait_ms the client asks (Kafka has no cap)" },
    BrokerSetting { key: "max.connections", default: "2147483647", doc: "most client connections open at once, all shards together; a connection over the limit is accepted and closed at once (logged)" },
    BrokerSetting { key: "max.connections.per.ip", default: "2147483647", doc: "most connections open at once from one IP address; a connection over the limit is closed at once (logged)" },
    BrokerSetting { key: "connections.max.idle.ms", default: "600000", doc: "a connection that sends nothing this long while the broker waits for its next request (or for the rest of one) is closed" },
    BrokerSetting { key: "socket.request.read.timeout.ms", default: "60000", doc: "Sluice only: a request frame must arrive whole within this long after its length prefix, else the connection is closed" },
    BrokerSetting { key: "queued.max.request.bytes", default: "134217728", doc: "per shard: bytes of requests read but not yet answered (Produce) or not yet dispatched (others); over it, that shard's connections wait before reading the next frame; -1 = unbounded" },
    BrokerSetting { key: "cluster.id", default: "", doc: "the cluster id the first node proposes when the quorum has none yet (default: random); after that the quorum's id wins" },
    BrokerSetting { key: "group.initial.rebalance.delay.ms", default: "3000", doc: "how long the first rebalance of an empty group waits for more members (each new member extends it, up to the rebalance timeout)" },
    BrokerSetting { key: "group.min.session.timeout.ms", default: "6000", doc: "smallest session.timeout.ms a group member may ask for (else INVALID_SESSION_TIMEOUT)" },
    BrokerSetting { key: "group.max.session.timeout.ms", default: "1800000", doc: "largest session.timeout.ms a group member may ask for" },
    BrokerSetting { key: "group.max.size", default: "2147483647", doc: "most members in one group (else GROUP_MAX_SIZE_REACHED)" },
    BrokerSetting { key: "offsets.topic.num.partitions", default: "50", doc: "partitions of __consumer_offsets, fixed when it is first created; a group lives on partition hash(group.id) mod this" },
    BrokerSetting { key: "offsets.topic.replication.factor", default: "3", doc: "replication factor of __consumer_offsets when it is created, capped at the live broker count then (Kafka refuses to create it below this; Sluice creates it with what there is)" },
    BrokerSetting { key: "offsets.commit.timeout.ms", default: "5000", doc: "how long a group coordinator's write (offset commit, group state) waits for the offsets partition's in-sync replicas before the request fails" },
    BrokerSetting { key: "transaction.state.log.replication.factor", default: "3", doc: "replication factor of __transaction_state when it is created, capped at the live broker count then" },
    BrokerSetting { key: "transaction.state.log.min.isr", default: "2", doc: "min.insync.replicas of __transaction_state (capped at its replication factor)" },
    BrokerSetting { key: "offsets.topic.segment.bytes", default: "104857600", doc: "segment.bytes of __consumer_offsets (small segments let compaction run sooner)" },
    BrokerSetting { key: "offsets.retention.minutes", default: "10080", doc: "committed offsets of a group that has been empty this long are deleted" },
    BrokerSetting { key: "offsets.retention.check.interval.ms", default: "600000", doc: "how often each shard looks for expired offsets" },
    BrokerSetting { key: "offset.metadata.max.bytes", default: "4096", doc: "largest metadata string of one committed offset (else OFFSET_METADATA_TOO_LARGE)" },
    BrokerSetting { key: "producer.id.expiration.ms", default: "86400000", doc: "an idempotent producer's state in a partition (last sequences, epoch) is dropped when its last batch is older than this; its next batch is then accepted with any sequence" },
    BrokerSetting { key: "transaction.max.timeout.ms", default: "900000", doc: "largest transaction.timeout.ms a producer may ask for (else INVALID_TRANSACTION_TIMEOUT)" },
    BrokerSetting { key: "transactional.id.expiration.ms", default: "604800000", doc: "a transactional id with no transaction open, idle this long, is forgotten" },
    BrokerSetting { key: "transaction.state.log.num.partitions", default: "50", doc: "partitions of __transaction_state, fixed when it is first created" },
    BrokerSetting { key: "transaction.state.log.segment.bytes", default: "104857600", doc: "segment.bytes of __transaction_state" },
    BrokerSetting { key: "transaction.abort.timed.out.transaction.cleanup.interval.ms", default: "10000", doc: "how often each shard aborts transactions open longer than their timeout" },
    BrokerSetting { key: "transaction.remove.expired.transaction.cleanup.interval.ms", default: "3600000", doc: "how often each shard forgets expired transactional ids" },
    BrokerSetting { key: "io_memory", default: "0", doc: "glommio registered I/O memory per shard in bytes; 0 = sized from RLIMIT_MEMLOCK" },
    BrokerSetting { key: "reactor.spin.before.park.us", default: "0", doc: "an idle shard polls its rings and inbox for this long before it sleeps in the kernel; saves the wake-up (an eventfd write and a context switch) when work comes soon, at the cost of CPU another thread could use (0 = sleep at once)" },
    BrokerSetting { key: "socket.io.slice.bytes", default: "524288", doc: "a connection copies at most this many bytes to or from its socket in one send or receive, and lets the shard's other tasks run after that many; bounds how long one large Fetch answer or Produce frame holds a shard, at some cost in syscalls (0 = no bound; else at least 4096)" },
    BrokerSetting { key: "stall.detector.interval.ms", default: "0", doc: "when above 0, each shard times every task poll and a 1 ms timer tick, and logs the longest of each at this interval (0 = off), with its Produce and Fetch service times (p50/p99/p99.9/max, frame read to answer written), its longest segment write and fsync, and its recent-batch cache hits, misses and bytes" },
    BrokerSetting { key: "admin.listeners", default: "http://127.0.0.1:9644", doc: "the admin HTTP listener (http://host:port, a numeric IP): GET /metrics (Prometheus text; OpenMetrics when asked), /v1/health and /v1/ready (docs/metrics.md); served by shard 0; empty: no admin listener" },
    BrokerSetting { key: "metrics.topics.max", default: "1000", doc: "Sluice only: most topics with series of their own in the per-topic metrics (sluice_topic_*); topics seen after that many are counted together under topic=\"__other\"" },
    BrokerSetting { key: "stall.detector.threshold.us", default: "1000", doc: "a task poll or timer-tick lateness longer than this makes the stall detector's line a warning" },
];

/// Effective broker configuration after all sources are merged.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The Kafka client listener (host:port) this broker binds.
    pub listen: String,
    pub advertised: String,
    pub log_dirs: Vec<PathBuf>,
    pub smp: usize,
    pub node_id: i32,
    /// Roles, quorum voters, controller listener, rack, heartbeat and session timeouts.
    pub cluster: ClusterSettings,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub socket_request_max_bytes: usize,
    pub limits: ConnectionLimits,
    pub fetch_max_bytes: usize,
    pub fetch_max_wait_cap_ms: u64,
    pub fetch_splice: bool,
    pub retention_check_interval_ms: u64,
    pub log_cleaner_enable: bool,
    pub log_cleaner_backoff_ms: u64,
    pub cluster_id: String,
    pub io_memory_bytes: usize,
    pub spin_before_park_us: u64,
    /// `socket.io.slice.bytes`; `usize::MAX` when 0 (no bound).
    pub io_slice_bytes: usize,
    pub stall_interval_ms: u64,
    pub stall_threshold_us: u64,
    /// `admin.listeners`: the admin HTTP listener's address; `None` when empty (off).
    pub admin_listen: Option<std::net::SocketAddr>,
    /// `metrics.topics.max`.
    pub metrics_topics_max: usize,
    pub groups: GroupSettings,
    pub txns: TxnSettings,
    /// Every broker setting by key (defaults filled in), for DescribeConfigs and topic defaults.
    pub values: BTreeMap<String, String>,
}

/// Limits on what clients may hold: connections, idle time, slow frames and
/// queued request bytes (see docs/limits.md).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_ms: u64,
    pub request_read_timeout_ms: u64,
    /// `None`: unbounded (Kafka's -1).
    pub queued_max_request_bytes: Option<usize>,
}

impl ConnectionLimits {
    fn from_values(values: &BTreeMap<String, String>) -> anyhow::Result<ConnectionLimits> {
        let at_least_1 = |key: &str| -> anyhow::Result<i64> {
            let n: i64 = parse_key(values, key)?;
            if n < 1 {
                bail!("{key} must be >= 1, got {n}");
            }
            Ok(n)
        };
        let queued: i64 = parse_key(values, "queued.max.request.bytes")?;
        let queued_max_request_bytes = match queued {
            -1 => None,
            n if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            n => bail!("queued.max.request.bytes must be -1 or >= 1, got {n}"),
        };
        Ok(ConnectionLimits {
            max_connections: at_least_1("max.connections")? as usize,
            max_connections_per_ip: at_least_1("max.connections.per.ip")? as usize,
            idle_ms: at_least_1("connections.max.idle.ms")? as u64,
            request_read_timeout_ms: at_least_1("socket.request.read.timeout.ms")? as u64,
            queued_max_request_bytes,
        })
    }
}

/// Transaction coordinator settings (Kafka's names; see docs/configuration.md).
#[derive(Debug, Clone)]
pub struct TxnSettings {
    pub max_timeout_ms: i32,
    pub id_expiration_ms: i64,
    pub state_partitions: i32,
    pub state_segment_bytes: i64,
    pub state_replication_factor: i16,
    pub state_min_isr: i16,
    pub abort_check_interval_ms: u64,
    pub expire_check_interval_ms: u64,
}

impl TxnSettings {
    fn from_values(values: &BTreeMap<String, String>) -> anyhow::Result<TxnSettings> {
        let t = TxnSettings {
            max_timeout_ms: parse_key(values, "transaction.max.timeout.ms")?,
            id_expiration_ms: parse_key(values, "transactional.id.expiration.ms")?,
            state_partitions: parse_key(values, "transaction.state.log.num.partitions")?,
            state_segment_bytes: parse_key(values, "transaction.state.log.segment.bytes")?,
            state_replication_factor: parse_key(
                values,
                "transaction.state.log.replication.factor",
            )?,
            state_min_isr: parse_key(values, "transaction.state.log.min.isr")?,
            abort_check_interval_ms: parse_key(
                values,
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            )?,
            expire_check_interval_ms: parse_key(
                values,
                "transaction.remove.expired.transaction.cleanup.interval.ms",
            )?,
        };
        if t.state_partitions < 1 {
            bail!("transaction.state.log.num.partitions must be >= 1");
        }
        if t.max_timeout_ms < 1 {
            bail!("transaction.max.timeout.ms must be >= 1");
        }
        Ok(t)
    }
}

/// Group coordinator settings (Kafka's names; see docs/configuration.md).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub offsets_partitions: i32,
    pub offsets_segment_bytes: i64,
    pub offsets_replication_factor: i16,
    pub offsets_commit_timeout_ms: u64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
}

impl GroupSettings {
    fn from_values(values: &BTreeMap<String, String>) -> anyhow::Result<GroupSettings> {
        let g = GroupSettings {
            initial_rebalance_delay_ms: parse_key(values, "group.initial.rebalance.delay.ms")?,
            min_session_timeout_ms: parse_key(values, "group.min.session.timeout.ms")?,
            max_session_timeout_ms: parse_key(values, "group.max.session.timeout.ms")?,
            max_size: parse_key(values, "group.max.size")?,
            offsets_partitions: parse_key(values, "offsets.topic.num.partitions")?,
            offsets_segment_bytes: parse_key(values, "offsets.topic.segment.bytes")?,
            offsets_replication_factor: parse_key(values, "offsets.topic.replication.factor")?,
            offsets_commit_timeout_ms: parse_key(values, "offsets.commit.timeout.ms")?,
            offsets_retention_ms: parse_key::<i64>(values, "offsets.retention.minutes")?
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: parse_key(
                values,
                "offsets.retention.check.interval.ms",
            )?,
            offset_metadata_max_bytes: parse_key(values, "offset.metadata.max.bytes")?,
        };
        if g.offsets_partitions < 1 {
            bail!("offsets.topic.num.partitions must be >= 1");
        }
        if g.min_session_timeout_ms > g.max_session_timeout_ms {
            bail!("group.min.session.timeout.ms must be <= group.max.session.timeout.ms");
        }
        if g.initial_rebalance_delay_ms < 0 {
            bail!("group.initial.rebalance.delay.ms must be >= 0");
        }
        Ok(g)
    }
}

/// `admin.listeners`: empty (off) or one `http://host:port` with a numeric IP.
fn parse_admin_listener(value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let Some(addr) = value.strip_prefix("http://") else {
        bail!("admin.listeners must be http://host:port (or empty to turn it off), got {value:?}");
    };
    let addr = addr.trim_end_matches('/');
    addr.parse::<std::net::SocketAddr>()
        .map(Some)
        .with_context(|| {
            format!("admin.listeners must be http://host:port with a numeric IP, got {value:?}")
        })
}

impl BrokerConfig {
    /// Merges defaults, the TOML file, `SLUICE_*` environment variables, `--set` and flags.
    pub fn load(args: &StartArgs) -> anyhow::Result<BrokerConfig> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(args, &env)
    }

    /// As [`BrokerConfig::load`], with the environment passed in (for tests).
    pub fn load_from(args: &StartArgs, env: &[(String, String)]) -> anyhow::Result<BrokerConfig> {
        let mut values: BTreeMap<String, String> = BROKER_SETTINGS
            .iter()
            .map(|s| (s.key.to_string(), s.default.to_string()))
            .collect();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            let mut flat = Vec::new();
            flatten_toml("", &toml::Value::Table(table), &mut flat)?;
            for (k, v) in flat {
                set_known(&mut values, &k, v).with_context(|| format!("in {}", path.display()))?;
            }
        }
        for s in BROKER_SETTINGS {
            let var = format!("SLUICE_{}", s.key.replace('.', "_").to_uppercase());
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == var) {
                set_known(&mut values, s.key, v.clone()).with_context(|| format!("in ${var}"))?;
            }
        }
        for kv in &args.set {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--set expects key=value, got {kv:?}");
            };
            set_known(&mut values, k.trim(), v.trim().to_string())?;
        }
        if let Some(l) = &args.listen {
            // `--listen` replaces the client listener and keeps a CONTROLLER listener.
            let names = values
                .get("controller.listener.names")
                .cloned()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let kept: Vec<String> =
                cluster::parse_listeners("listeners", values.get("listeners").map_or("", |v| v))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|x| names.split(',').any(|n| n.trim() == x.name))
                    .map(|x| format!("{}://{}", x.name, x.addr))
                    .collect();
            let mut all = vec![format!("PLAINTEXT://{l}")];
            all.extend(kept);
            values.insert("listeners".into(), all.join(","));
        }
        if let Some(d) = &args.data_dir {
            values.insert("log.dirs".into(), d.display().to_string());
        }
        if let Some(n) = args.smp {
            values.insert("smp".into(), n.to_string());
        }
        Self::from_values(values)
    }

    fn from_values(values: BTreeMap<String, String>) -> anyhow::Result<BrokerConfig> {
        let get = |k: &str| values.get(k).cloned().unwrap_or_default();
        let listeners = cluster::parse_listeners("listeners", &get("listeners"))?;
        let (cluster, client) = cluster::from_values(&values, &listeners)?;
        let listen = client.addr.clone();
        for l in &listeners {
            l.addr.parse::<std::net::SocketAddr>().with_context(|| {
                format!(
                    "listeners must be host:port with a numeric IP, got {:?}",
                    l.addr
                )
            })?;
        }
        let advertised_all =
            cluster::parse_listeners("advertised.listeners", &get("advertised.listeners"))?;
        let advertised = advertised_all
            .iter()
            .find(|a| a.name == client.name)
            .or_else(|| advertised_all.first())
            .map_or_else(|| listen.clone(), |a| a.addr.clone());
        let log_dirs: Vec<PathBuf> = get("log.dirs")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            bail!("log.dirs is empty");
        }
        let mut smp: usize = parse_key(&values, "smp")?;
        if smp == 0 {
            smp = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
        }
        let cfg = BrokerConfig {
            listen,
            advertised,
            log_dirs,
            smp,
            node_id: cluster.node_id,
            cluster,
            auto_create_topics: parse_key(&values, "auto.create.topics.enable")?,
            num_partitions: parse_key(&values, "num.partitions")?,
            default_replication_factor: parse_key(&values, "default.replication.factor")?,
            socket_request_max_bytes: parse_key(&values, "socket.request.max.bytes")?,
            limits: ConnectionLimits::from_values(&values)?,
            fetch_max_bytes: parse_key(&values, "fetch.max.bytes")?,
            fetch_max_wait_cap_ms: parse_key(&values, "fetch.max.wait.cap.ms")?,
            fetch_splice: parse_key(&values, "fetch.splice.enable")?,
            retention_check_interval_ms: parse_key(&values, "log.retention.check.interval.ms")?,
            log_cleaner_enable: parse_key(&values, "log.cleaner.enable")?,
            log_cleaner_backoff_ms: parse_key(&values, "log.cleaner.backoff.ms")?,
            cluster_id: get("cluster.id"),
            io_memory_bytes: parse_key(&values, "io_memory")?,
            spin_before_park_us: parse_key(&values, "reactor.spin.before.park.us")?,
            io_slice_bytes: match parse_key::<usize>(&values, "socket.io.slice.bytes")? {
                0 => usize::MAX,
                n if n < 4096 => bail!("socket.io.slice.bytes must be 0 or at least 4096"),
                n => n,
            },
            stall_interval_ms: parse_key(&values, "stall.detector.interval.ms")?,
            stall_threshold_us: parse_key(&values, "stall.detector.threshold.us")?,
            admin_listen: parse_admin_listener(&get("admin.listeners"))?,
            metrics_topics_max: parse_key(&values, "metrics.topics.max")?,
            groups: GroupSettings::from_values(&values)?,
            txns: TxnSettings::from_values(&values)?,
            values,
        };
        if cfg.num_partitions < 1 {
            bail!("num.partitions must be >= 1");
        }
        if cfg.fetch_max_bytes < 1024 {
            bail!("fetch.max.bytes must be >= 1024 (Kafka's minimum)");
        }
        // Validate every topic default once, so a bad broker default fails at start-up.
        cfg.log_config(&BTreeMap::new())?;
        Ok(cfg)
    }

    /// The broker-level default of a topic setting (Kafka's synonym chain).
    pub fn topic_default(&self, def: &TopicConfigDef) -> String {
        match def.broker_key {
            Some(k) => self
                .values
                .get(k)
                .cloned()
                .unwrap_or_else(|| def.default.to_string()),
            None => def.default.to_string(),
        }
    }

    /// Effective value of a topic setting given the topic's overrides.
    pub fn topic_value(&self, overrides: &BTreeMap<String, String>, name: &str) -> Option<String> {
        let def = topic_config_def(name)?;
        Some(
            overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| self.topic_default(def)),
        )
    }

    /// The storage settings of a topic with the given overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> anyhow::Result<LogConfig> {
        let v = |name: &str| self.topic_value(overrides, name).unwrap_or_default();
        let num = |name: &str| -> anyhow::Result<i64> {
            v(name)
                .parse::<i64>()
                .with_context(|| format!("{name} must be an integer, got {:?}", v(name)))
        };
        let io_mode = match self.values.get("io_mode").map(String::as_str) {
            Some("buffered") => IoMode::Buffered,
            Some("direct") | None => IoMode::Direct,
            Some(other) => bail!("io_mode must be direct or buffered, got {other:?}"),
        };
        let ts = match v("message.timestamp.type").as_str() {
            "CreateTime" => TimestampType::CreateTime,
            "LogAppendTime" => TimestampType::LogAppendTime,
            other => {
                bail!("message.timestamp.type must be CreateTime or LogAppendTime, got {other:?}")
            }
        };
        let positive = |name: &str, min: i64| -> anyhow::Result<i64> {
            let n = num(name)?;
            if n < min {
                bail!("{name} must be >= {min}, got {n}");
            }
            Ok(n)
        };
        let expiration_text = self
            .values
            .get("producer.id.expiration.ms")
            .map_or("86400000", String::as_str);
        let producer_id_expiration_ms = expiration_text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 1)
            .with_context(|| {
                format!(
                    "producer.id.expiration.ms must be an integer >= 1, got {expiration_text:?}"
                )
            })?;
        let policy = v("cleanup.policy");
        let cleanup_policy = CleanupPolicy::parse(&policy).with_context(|| {
            format!("cleanup.policy must be delete, compact or compact,delete, got {policy:?}")
        })?;
        let ratio_text = v("min.cleanable.dirty.ratio");
        let min_cleanable_dirty_ratio = ratio_text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .with_context(|| {
                format!("min.cleanable.dirty.ratio must be a number in [0, 1], got {ratio_text:?}")
            })?;
        Ok(LogConfig {
            cleanup_policy,
            delete_retention_ms: positive("delete.retention.ms", 0)?,
            min_compaction_lag_ms: positive("min.compaction.lag.ms", 0)?,
            max_compaction_lag_ms: positive("max.compaction.lag.ms", 1)?,
            min_cleanable_dirty_ratio,
            segment_bytes: positive("segment.bytes", 14)? as u64,
            segment_ms: positive("segment.ms", 1)?,
            retention_ms: positive("retention.ms", -1)?,
            retention_bytes: positive("retention.bytes", -1)?,
            max_message_bytes: positive("max.message.bytes", 0)? as usize,
            index_interval_bytes: positive("index.interval.bytes", 0)? as usize,
            segment_index_bytes: positive("segment.index.bytes", 8)? as usize,
            message_timestamp_type: ts,
            io_mode,
            producer_id_expiration_ms,
            flush_messages: positive("flush.messages", 1)?,
            flush_ms: positive("flush.ms", 0)?,
        })
    }
}

/// A topic-level setting: Kafka name, the broker key that supplies its default,
/// the embedded default, and an allowed-values check.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub broker_key: Option<&'static str>,
    pub default: &'static str,
    pub kind: ConfigKind,
    /// Whether the storage layer honours it today (others are stored and described only).
    pub enforced: bool,
}

/// Value type of a topic setting, used to validate CreateTopics/AlterConfigs input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConfigKind {
    Long,
    Int,
    Bool,
    Choice(&'static [&'static str]),
    List(&'static [&'static str]),
    Str,
}

impl ConfigKind {
    /// Kafka's DescribeConfigs config_type code (KIP-569).
    pub fn kafka_type(self) -> i8 {
        match self {
            ConfigKind::Bool => 1,
            ConfigKind::Str | ConfigKind::Choice(_) => 2,
            ConfigKind::Int => 3,
            ConfigKind::Long => 5,
            ConfigKind::List(_) => 7,
        }
    }
}

macro_rules! tc {
    ($name:expr, $bk:expr, $def:expr, $kind:expr, $enf:expr) => {
        TopicConfigDef {
            name: $name,
            broker_key: $bk,
            default: $def,
            kind: $kind,
            enforced: $enf,
        }
    };
}

/// Every topic setting known to the broker. Unknown names are refused with INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    tc!(
        "cleanup.policy",
        Some("log.cleanup.policy"),
        "delete",
        ConfigKind::List(&["delete", "compact"]),
        true
    ),
    tc!(
        "compression.type",
        Some("compression.type"),
        "producer",
        ConfigKind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        false
    ),
    tc!(
        "delete.retention.ms",
        None,
        "86400000",
        ConfigKind::Long,
        true
    ),
    tc!(
        "file.delete.delay.ms",
        None,
        "60000",
        ConfigKind::Long,
        false
    ),
    tc!(
        "flush.messages",
        None,
        "9223372036854775807",
        ConfigKind::Long,
        true
    ),
    tc!(
        "flush.ms",
        None,
        "9223372036854775807",
        ConfigKind::Long,
        true
    ),
    tc!(
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        "4096",
        ConfigKind::Int,
        true
    ),
    tc!(
        "follower.replication.throttled.replicas",
        None,
        "",
        ConfigKind::List(&[]),
        true
    ),
    tc!(
        "leader.replication.throttled.replicas",
        None,
        "",
        ConfigKind::List(&[]),
        true
    ),
    tc!(
        "max.compaction.lag.ms",
        None,
        "9223372036854775807",
        ConfigKind::Long,
        true
    ),
    tc!(
        "max.message.bytes",
        Some("message.max.bytes"),
        "1048588",
        ConfigKind::Int,
        true
    ),
    tc!(
        "message.timestamp.type",
        Some("log.message.timestamp.type"),
        "CreateTime",
        ConfigKind::Choice(&["CreateTime", "LogAppendTime"]),
        true
    ),
    tc!(
        "min.cleanable.dirty.ratio",
        None,
        "0.5",
        ConfigKind::Str,
        true
    ),
    tc!("min.compaction.lag.ms", None, "0", ConfigKind::Long, true),
    tc!(
        "min.insync.replicas",
        Some("min.insync.replicas"),
        "1",
        ConfigKind::Int,
        true
    ),
    tc!("preallocate", None, "false", ConfigKind::Bool, false),
    tc!(
        "retention.bytes",
        Some("log.retention.bytes"),
        "-1",
        ConfigKind::Long,
        true
    ),
    tc!(
        "retention.ms",
        Some("log.retention.ms"),
        "604800000",
        ConfigKind::Long,
        true
    ),
    tc!(
        "segment.bytes",
        Some("log.segment.bytes"),
        "1073741824",
        ConfigKind::Int,
        true
    ),
    tc!(
        "segment.index.bytes",
        Some("log.index.size.max.bytes"),
        "10485760",
        ConfigKind::Int,
        true
    ),
    tc!("segment.jitter.ms", None, "0", ConfigKind::Long, false),
    tc!(
        "segment.ms",
        Some("log.roll.ms"),
        "604800000",
        ConfigKind::Long,
        true
    ),
    tc!(
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        "false",
        ConfigKind::Bool,
        true
    ),
];

/// Looks up a topic setting by its Kafka name.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a throttled-replicas list: empty, `*`, or `partition:broker` entries.
pub fn validate_throttled_replicas(name: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    if v.is_empty() || v == "*" {
        return Ok(());
    }
    for e in v.split(',') {
        let ok = e.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
        });
        if !ok {
            return Err(format!(
                "Invalid value {value} for configuration {name}: expected '*' or a list of \
                 partition:broker entries, found {:?}",
                e.trim()
            ));
        }
    }
    Ok(())
}

/// Checks one topic setting; the error text goes back to the client as the error message.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = topic_config_def(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let ok = match def.kind {
        ConfigKind::Long => value.parse::<i64>().is_ok(),
        ConfigKind::Int => value.parse::<i32>().is_ok(),
        ConfigKind::Bool => matches!(value, "true" | "false"),
        ConfigKind::Choice(c) => c.contains(&value),
        // An empty set of choices: any entries (checked by name below).
        ConfigKind::List(c) => c.is_empty() || value.split(',').all(|p| c.contains(&p.trim())),
        ConfigKind::Str => true,
    };
    if !ok {
        return Err(format!("Invalid value {value} for configuration {name}"));
    }
    if name.ends_with(".replication.throttled.replicas") {
        validate_throttled_replicas(name, value)?;
    }
    if name == "min.cleanable.dirty.ratio"
        && !value
            .trim()
            .parse::<f64>()
            .is_ok_and(|r| (0.0..=1.0).contains(&r))
    {
        return Err(format!(
            "Invalid value {value} for configuration {name}: must be a number in [0, 1]"
        ));
    }
    let n = value.parse::<i64>().unwrap_or(0);
    let min = match name {
        "retention.ms" | "retention.bytes" => -1,
        "segment.bytes" => 14,
        "segment.ms"
        | "min.insync.replicas"
        | "segment.index.bytes"
        | "max.compaction.lag.ms"
        | "flush.messages" => 1,
        "delete.retention.ms" | "min.compaction.lag.ms" | "flush.ms" => 0,
        _ => i64::MIN,
    };
    if matches!(def.kind, ConfigKind::Long | ConfigKind::Int) && n < min {
        return Err(format!(
            "Invalid value {value} for configuration {name}: must be >= {min}"
        ));
    }
    Ok(())
}

fn set_known(values: &mut BTreeMap<String, String>, key: &str, v: String) -> anyhow::Result<()> {
    if !BROKER_SETTINGS.iter().any(|s| s.key == key) {
        bail!("unknown setting {key:?} (see docs/configuration.md for the list)");
    }
    values.insert(key.to_string(), v);
    Ok(())
}

fn parse_key<T: std::str::FromStr>(
    values: &BTreeMap<String, String>,
    key: &str,
) -> anyhow::Result<T> {
    let v = values.get(key).map(String::as_str).unwrap_or("");
    v.trim()
        .parse::<T>()
        .map_err(|_| anyhow::anyhow!("setting {key} has an invalid value {v:?}"))
}

fn flatten_toml(
    prefix: &str,
    v: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_toml(&key, v, out)?;
            }
        }
        toml::Value::Array(a) => {
            let parts: Vec<String> = a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push((prefix.to_string(), parts.join(",")));
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_defaults_file_env_set_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "\"num.partitions\" = 3\n[log]\ndirs = [\"/a\", \"/b\"]\nsegment.bytes = 1000\n",
        )
        .unwrap();
        let args = StartArgs {
            config: Some(file),
            set: vec!["log.segment.bytes=2000".into()],
            smp: Some(2),
            ..Default::default()
        };
        let env = vec![("SLUICE_NUM_PARTITIONS".to_string(), "4".to_string())];
        let cfg = BrokerConfig::load_from(&args, &env).unwrap();
        assert_eq!(cfg.log_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(cfg.num_partitions, 4);
        assert_eq!(cfg.smp, 2);
        assert_eq!(
            cfg.log_config(&BTreeMap::new()).unwrap().segment_bytes,
            2000
        );
        assert_eq!(cfg.listen, "127.0.0.1:9092");
    }

    #[test]
    fn admin_listener_is_an_http_address_or_off() {
        let load = |v: &str| {
            let args = StartArgs {
                set: vec![format!("admin.listeners={v}")],
                ..Default::default()
            };
            BrokerConfig::load_from(&args, &[]).map(|c| c.admin_listen)
        };
        let default = BrokerConfig::load_from(&StartArgs::default(), &[]).unwrap();
        assert_eq!(
            default.admin_listen,
            Some("127.0.0.1:9644".parse().unwrap())
        );
        assert_eq!(default.metrics_topics_max, 1000);
        assert_eq!(
            load("http://0.0.0.0:9000").unwrap(),
            Some("0.0.0.0:9000".parse().unwrap())
        );
        assert_eq!(load("").unwrap(), None);
        assert!(load("127.0.0.1:9000").is_err(), "the scheme is required");
        assert!(load("https://127.0.0.1:9000").is_err(), "no TLS");
        assert!(load("http://localhost:9000").is_err(), "a numeric IP");
    }

    #[test]
    fn unknown_and_bad_values_are_refused() {
        let bad = StartArgs {
            set: vec!["no.such.key=1".into()],
            ..Default::default()
        };
        assert!(BrokerConfig::load_from(&bad, &[]).is_err());
        let bad = StartArgs {
            set: vec!["num.partitions=x".into()],
            ..Default::default()
        };
        assert!(BrokerConfig::load_from(&bad, &[]).is_err());
        let bad = StartArgs {
            set: vec!["io_mode=fast".into()],
            ..Default::default()
        };
        assert!(BrokerConfig::load_from(&bad, &[]).is_err());
        for bad in [
            "max.connections=0",
            "connections.max.idle.ms=-5",
            "queued.max.request.bytes=0",
            "socket.io.slice.bytes=100",
        ] {
            let args = StartArgs {
                set: vec![bad.into()],
                ..Default::default()
            };
            assert!(BrokerConfig::load_from(&args, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_limits_defaults_and_unbounded_queue() {
        let cfg = BrokerConfig::load_from(&StartArgs::default(), &[]).unwrap();
        assert_eq!(cfg.limits.max_connections, i32::MAX as usize);
        assert_eq!(cfg.limits.idle_ms, 600_000);
        assert_eq!(cfg.limits.queued_max_request_bytes, Some(128 << 20));
        let args = StartArgs {
            set: vec!["queued.max.request.bytes=-1".into()],
            ..Default::default()
        };
        let cfg = BrokerConfig::load_from(&args, &[]).unwrap();
        assert_eq!(cfg.limits.queued_max_request_bytes, None);
    }

    #[test]
    fn io_slice_default_and_unbounded() {
        let cfg = BrokerConfig::load_from(&StartArgs::default(), &[]).unwrap();
        assert_eq!(cfg.io_slice_bytes, 512 << 10);
        let args = StartArgs {
            set: vec!["socket.io.slice.bytes=0".into()],
            ..Default::default()
        };
        let cfg = BrokerConfig::load_from(&args, &[]).unwrap();
        assert_eq!(cfg.io_slice_bytes, usize::MAX);
    }

    #[test]
    fn topic_overrides_and_validation() {
        let cfg = BrokerConfig::load_from(&StartArgs::default(), &[]).unwrap();
        let mut o = BTreeMap::new();
        o.insert("max.message.bytes".to_string(), "1000".to_string());
        assert_eq!(cfg.log_config(&o).unwrap().max_message_bytes, 1000);
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("no.such", "1").is_err());
        assert!(validate_topic_config("segment.bytes", "5").is_err());
    }
}

#[cfg(test)]
mod doc_tests {
    /// docs/configuration.md must list every setting the broker reads.
    #[test]
    fn every_setting_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .unwrap();
        for s in super::BROKER_SETTINGS {
            assert!(
                doc.contains(&format!("`{}`", s.key)),
                "{} missing from docs/configuration.md",
                s.key
            );
        }
        for t in super::TOPIC_CONFIGS {
            assert!(
                doc.contains(&format!("`{}`", t.name)),
                "{} missing from docs/configuration.md",
                t.name
            );
        }
    }
}
