//! Cluster metadata: the immutable image of brokers, topics and partitions that
//! every shard reads; the metadata log it is built from (records applied in
//! order, replicated by a Raft quorum: `quorum/`, `records.rs`,
//! `publisher.rs`); the changes proposed to it (`controller.rs`), the broker's
//! life in the cluster (`lifecycle.rs`), and each shard's manager of the
//! partitions it owns (`partition_manager.rs`), kept in line with the image by
//! `listener.rs`.
//!
//! The image is published through an `ArcSwap`: readers take a cheap snapshot
//! per request and never lock. Which shard owns a partition is a pure function
//! of the topic name and partition index ([`owner_shard`]).

pub mod controller;
pub mod dir_move;
pub mod election;
pub mod fetcher;
pub mod internal_topic;
pub mod leader;
pub mod lifecycle;
pub mod listener;
pub mod meta_properties;
pub mod partition_manager;
pub mod peer_client;
pub mod placement;
pub mod producer_ids;
pub mod publisher;
pub mod quorum;
pub mod records;
pub mod replica;
pub mod stats;
pub mod store;
pub mod throttle;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// One partition as the metadata sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionMeta {
    pub index: i32,
    /// Index into this broker's `log.dirs` of the directory holding the partition. Local to
    /// each broker (chosen when the partition is first placed here), not part of the
    /// replicated records: `publisher.rs` fills it in before an image is published.
    #[serde(default)]
    pub log_dir: usize,
    /// Bumped at every leader change (Kafka's leader epoch).
    pub leader_epoch: i32,
    /// Node ids holding a replica, the preferred leader first.
    #[serde(default)]
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    #[serde(default)]
    pub isr: Vec<i32>,
    /// The leading node, or -1 when none is available (its only replicas are fenced).
    #[serde(default = "no_leader")]
    pub leader: i32,
    /// Bumped at every change of leader or ISR; the compare-and-set token of a change.
    #[serde(default)]
    pub partition_epoch: i32,
    /// While a reassignment runs: the replicas being added (in `replicas`, catching up, not
    /// yet all in the ISR) and those to be removed once they are (Kafka's
    /// adding/removing replicas). Both empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
}

impl PartitionMeta {
    /// True while a reassignment of the partition is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition will have once its reassignment completes (its replicas
    /// when none runs).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}

fn no_leader() -> i32 {
    NO_LEADER
}

/// Kafka's "no leader" node id.
pub const NO_LEADER: i32 = -1;

/// A registered broker, as clients see it in Metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerMeta {
    pub id: i32,
    /// New at every start of the broker process (KRaft's incarnation id).
    pub incarnation: uuid::Uuid,
    /// The advertised Kafka listener.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is not listed to clients.
    pub fenced: bool,
    /// Fenced by its own clean shutdown: stays fenced until it registers again, even while
    /// the quorum still hears from the stopping process.
    #[serde(default)]
    pub leaving: bool,
}

/// One topic: id, partitions and its config overrides (Kafka names).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionMeta>,
    pub configs: BTreeMap<String, String>,
}

/// The whole cluster metadata at one point in time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Producer ids below this have been handed out (in blocks); never reused.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Registered brokers by node id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// Log index of the last metadata record applied (0: none yet).
    #[serde(default)]
    pub applied_index: u64,
    /// Dynamic broker configs (`throttle::DYNAMIC_BROKER_CONFIGS`), by broker id as text;
    /// the key "" holds the cluster-wide defaults.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<(&Arc<TopicMeta>, &PartitionMeta)> {
        let t = self.topics.get(topic)?;
        let p = usize::try_from(index)
            .ok()
            .and_then(|i| t.partitions.get(i))?;
        Some((t, p))
    }

    /// True when broker `id` is registered and not fenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Brokers that may lead and serve clients (registered, not fenced), by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Partitions per log dir, for placing a new partition on the emptiest.
    pub fn partitions_per_dir(&self, dirs: usize) -> Vec<usize> {
        let mut counts = vec![0; dirs];
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(c) = counts.get_mut(p.log_dir) {
                    *c += 1;
                }
            }
        }
        counts
    }
}

static IMAGE: OnceLock<ArcSwap<MetadataImage>> = OnceLock::new();
static QUORUM: OnceLock<quorum::Quorum> = OnceLock::new();
static MULTI_NODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The metadata quorum of this node, once started.
pub fn quorum_handle() -> Option<&'static quorum::Quorum> {
    QUORUM.get()
}

/// True when `controller.quorum.voters` is set: partitions may be led by other brokers.
pub fn multi_node() -> bool {
    MULTI_NODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The current metadata image (a snapshot; cheap).
pub fn image() -> Arc<MetadataImage> {
    IMAGE
        .get_or_init(|| ArcSwap::from_pointee(MetadataImage::default()))
        .load_full()
}

/// The leader of `topic`'s partition `index` in `img` (-1: none, or no such partition).
pub fn leader_of(img: &MetadataImage, topic: &str, index: i32) -> i32 {
    img.partition(topic, index)
        .map_or(NO_LEADER, |(_, p)| p.leader)
}

/// The advertised (host, port) of a live broker.
pub fn broker_address(img: &MetadataImage, id: i32) -> Option<(String, i32)> {
    img.brokers
        .get(&id)
        .filter(|b| !b.fenced)
        .map(|b| (b.host.clone(), b.port))
}

/// Changes the published image in place (compare-and-swap, so an image the quorum's
/// state machine publishes meanwhile is not lost: `f` is applied to it again).
pub(crate) fn update_published(f: impl Fn(&MetadataImage) -> MetadataImage) {
    IMAGE
        .get_or_init(|| ArcSwap::from_pointee(MetadataImage::default()))
        .rcu(|cur| Arc::new(f(cur)));
}

/// Replaces the published image. Only the quorum's state machine calls this.
pub(crate) fn publish(img: MetadataImage) {
    IMAGE
        .get_or_init(|| ArcSwap::from_pointee(MetadataImage::default()))
        .store(Arc::new(img));
}

/// The shard that owns a partition: a stable hash of topic and partition, so a
/// restart with the same `--smp` puts every partition back on the same shard.
pub fn owner_shard(topic: &str, partition: i32, shards: usize) -> usize {
    let h = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    (h as usize) % shards.max(1)
}

/// Kafka's rules for topic names: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "Topic name {name:?} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-' ({c:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("bad/name").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
    }

    #[test]
    fn ownership_is_stable_and_spread() {
        let a: Vec<usize> = (0..64).map(|p| owner_shard("t", p, 4)).collect();
        let b: Vec<usize> = (0..64).map(|p| owner_shard("t", p, 4)).collect();
        assert_eq!(a, b);
        for s in 0..4 {
            assert!(a.contains(&s), "shard {s} owns nothing of 64 partitions");
        }
        assert!((0..10).all(|p| owner_shard("t", p, 1) == 0));
    }
}
