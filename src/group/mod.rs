//! Consumer groups (Kafka's classic group protocol) and committed offsets.
//!
//! Every group lives on one partition of the internal compacted topic
//! `__consumer_offsets`: partition `abs(javaHash(group.id)) % partitions`, as
//! Kafka places it. The shard that owns that partition is the group's
//! coordinator: it holds the group's state machine (`state.rs`) and its
//! committed offsets in memory, and writes every change as a record of that
//! partition (`records.rs`, Kafka's formats) before answering. At start-up each
//! shard rebuilds its groups by reading its partitions (`coordinator::load_owned`).
//!
//! Requests arrive on any shard; the handlers in `server/handlers/groups.rs`
//! send each group's part to its coordinator shard with `runtime::submit_to`.

pub mod coordinator;
pub mod records;
pub mod state;

use crate::cluster::{image, internal_topic, owner_shard, partition_manager};
use crate::runtime;

/// Name of the internal topic holding committed offsets and group metadata.
pub use crate::cluster::internal_topic::OFFSETS_TOPIC;

/// Java's `String.hashCode` (over UTF-16 code units), which Kafka uses to
/// place a group.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The offsets-topic partition of a group, given the partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Where a group lives: its offsets partition and the shard owning it. None
/// until the offsets topic exists.
pub fn locate(group: &str) -> Option<(i32, usize)> {
    let img = image();
    let t = img.topic(OFFSETS_TOPIC)?;
    let p = partition_for(group, t.partitions.len() as i32);
    Some((p, owner_shard(OFFSETS_TOPIC, p, runtime::nr_shards())))
}

/// Creates `__consumer_offsets` if it does not exist yet (Kafka creates it on
/// the first FindCoordinator). Err: a Kafka error code.
pub async fn ensure_offsets_topic() -> Result<(), i16> {
    let g = &partition_manager::broker_config().groups;
    internal_topic::ensure(internal_topic::InternalTopic {
        name: OFFSETS_TOPIC,
        partitions: g.offsets_partitions,
        segment_bytes: g.offsets_segment_bytes,
        replication_factor: g.offsets_replication_factor,
        min_isr: None,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values of "…".hashCode() in Java.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        // A negative hash: "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
