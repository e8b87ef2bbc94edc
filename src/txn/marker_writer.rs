//! Getting a transaction's commit or abort markers onto its partitions, wherever they are led:
//! Kafka's `TransactionMarkerChannelManager` (the coordinator's side) and the leader's
//! handling of WriteTxnMarkers (API 27) in one place.
//!
//! - The coordinator ([`write_all`]) sorts the partitions by their leader in the current
//!   image ([`plan`]): those this broker leads are written here, on each partition's owner
//!   shard ([`write_here`]); those another broker leads go to that broker, one
//!   WriteTxnMarkers request per leader (`cluster::peer_client`), whose handler
//!   (`server::handlers::txn::write_txn_markers`) runs [`write_here`] there. A partition the
//!   image no longer has (its topic was deleted) needs no marker.
//! - [`write_here`] writes the marker as the leader's acks=all append of a coordinator
//!   (Kafka's `requiredAcks = -1`): refused below `min.insync.replicas` before anything is
//!   written (NOT_ENOUGH_REPLICAS), durable on this broker (`Partition::write_marker` syncs
//!   it), then answered only once every in-sync replica has it (the high watermark passed
//!   it: `cluster::leader::wait_replicated`, bounded by [`REPLICATION_TIMEOUT`]). On a
//!   `__consumer_offsets` partition the group coordinator then applies or drops the offsets
//!   the transaction committed, after the marker is replicated, as Kafka completes them in
//!   the append's callback.
//! - A partition's answer [`settled`] it (written, or refused for a producer epoch a newer
//!   producer has replaced), or it is asked again on the coordinator's next round: not the
//!   leader, unknown there, no leader yet, storage errors, too few in-sync replicas, a
//!   timeout, a broker that cannot be reached. A marker written again after an answer that
//!   was lost is harmless: a marker for a producer with no open transaction on the partition
//!   is written all the same (`storage::log_txn`).
//! - Each marker carries the coordinator epoch (the leader epoch of the transactional id's
//!   `__transaction_state` partition, as in Kafka) in its control record. Partitions do not
//!   record or check it yet, so it fences nothing (see docs/transactions.md).

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::StrBytes;

use super::transition::TopicPartition;
use crate::cluster::{self, image, leader, owner_shard, partition_manager, MetadataImage};
use crate::runtime;

/// How long a marker waits for the in-sync replicas before its leader answers
/// REQUEST_TIMED_OUT (Kafka's leader uses `request.timeout.ms`, 30 s by default).
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The coordinator's bound on one WriteTxnMarkers exchange: the leader's replication wait
/// plus time to connect and answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// The WriteTxnMarkers version sent (the only one the codec has: v0 left Kafka in 4.0).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const CLIENT_ID: &str = "sluice-txn-coordinator";

/// One transaction marker: whose, which outcome, from which coordinator epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkerSpec {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Whether a partition's answer to a marker means the partition is done with the
/// transaction: written (0), or refused because a newer producer epoch has taken over
/// (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED). Every other answer is retried.
pub fn settled(code: i16) -> bool {
    code == 0 || code == E::InvalidProducerEpoch.code() || code == E::ProducerFenced.code()
}

/// Where a transaction's markers go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions this broker leads.
    pub local: Vec<TopicPartition>,
    /// Partitions other brokers lead, by leader.
    pub remote: BTreeMap<i32, Vec<TopicPartition>>,
    /// Partitions with no leader now: retried once the image gives them one.
    pub leaderless: Vec<TopicPartition>,
    /// Partitions the image no longer has (deleted): nothing to mark.
    pub gone: Vec<TopicPartition>,
}

/// Sorts `parts` by leader in `img` (`me`: this broker; `multi_node`: false on a single
/// node, which leads everything).
pub fn plan(img: &MetadataImage, me: i32, multi_node: bool, parts: Vec<TopicPartition>) -> Plan {
    let mut out = Plan::default();
    for tp in parts {
        match img.partition(&tp.0, tp.1).map(|(_, pm)| pm.leader) {
            None => out.gone.push(tp),
            Some(_) if !multi_node => out.local.push(tp),
            Some(l) if l == me => out.local.push(tp),
            Some(cluster::NO_LEADER) => out.leaderless.push(tp),
            Some(l) => out.remote.entry(l).or_default().push(tp),
        }
    }
    out
}

/// The WriteTxnMarkers request for one marker on `parts` (grouped by topic, in order).
pub fn request(m: &MarkerSpec, parts: &[TopicPartition]) -> WriteTxnMarkersRequest {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let topics = topics
        .into_iter()
        .map(|(t, ps)| {
            WritableTxnMarkerTopic::default()
                .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    t.to_string(),
                )))
                .with_partition_indexes(ps)
        })
        .collect();
    WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_transaction_result(m.commit)
        .with_coordinator_epoch(m.coordinator_epoch)
        .with_topics(topics)])
}

/// The code a leader answered for each of `parts` (None: missing from the answer).
pub fn answers(
    resp: &WriteTxnMarkersResponse,
    producer_id: i64,
    parts: &[TopicPartition],
) -> Vec<Option<i16>> {
    let mut codes: BTreeMap<(&str, i32), i16> = BTreeMap::new();
    for m in resp
        .markers
        .iter()
        .filter(|m| m.producer_id.0 == producer_id)
    {
        for t in &m.topics {
            for p in &t.partitions {
                codes.insert((t.name.0.as_str(), p.partition_index), p.error_code);
            }
        }
    }
    parts
        .iter()
        .map(|(t, p)| codes.get(&(t.as_str(), *p)).copied())
        .collect()
}

/// Writes `m` on `topic`-`index` as its leader (see the module docs), on the partition's
/// owner shard. Returns the Kafka code of the outcome (0: written and replicated).
pub async fn write_here(topic: &str, index: i32, m: &MarkerSpec) -> i16 {
    let p = match partition_manager::get(topic, index).await {
        Ok(Some(p)) => p,
        Ok(None) => return E::UnknownTopicOrPartition.code(),
        Err(e) => return e.kafka_code(),
    };
    if p.replica.borrow().replicated() {
        if let Some((code, why)) = leader::replication_refusal(&p) {
            tracing::debug!(topic, partition = index, reason = %why, "transaction marker refused");
            return match code {
                E::NotEnoughReplicasAfterAppend => E::NotEnoughReplicas.code(),
                other => other.code(),
            };
        }
    }
    let written = p
        .write_marker(
            m.producer_id,
            m.producer_epoch,
            m.commit,
            m.coordinator_epoch,
            runtime::now_ms(),
        )
        .await;
    let r = match written {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(topic, partition = index, producer_id = m.producer_id,
                error = %e, "writing a transaction marker");
            return e.kafka_code();
        }
    };
    if let Err((code, why)) = leader::wait_replicated(&p, r.last_offset, REPLICATION_TIMEOUT).await
    {
        tracing::info!(topic, partition = index, producer_id = m.producer_id, reason = %why,
            "transaction marker written but not acknowledged by the in-sync replicas");
        return code.code();
    }
    if topic == crate::group::OFFSETS_TOPIC {
        crate::group::coordinator::complete_txn(index, m.producer_id, m.commit);
    }
    0
}

/// Writes `m` on every partition of `parts` (see the module docs) and returns those not
/// settled yet, to ask again later.
pub async fn write_all(m: MarkerSpec, parts: Vec<TopicPartition>) -> Vec<TopicPartition> {
    let me = partition_manager::broker_config().node_id;
    let Plan {
        local,
        remote,
        mut leaderless,
        gone,
    } = plan(&image(), me, cluster::multi_node(), parts);
    for (topic, index) in &gone {
        tracing::info!(
            topic,
            partition = index,
            producer_id = m.producer_id,
            "partition of the transaction no longer exists: no marker needed"
        );
    }
    for (topic, index) in &leaderless {
        tracing::debug!(
            topic,
            partition = index,
            "no leader for a transaction marker yet"
        );
    }
    let shards = runtime::nr_shards();
    let locals = local.into_iter().map(|(topic, index)| async move {
        let owner = owner_shard(&topic, index, shards);
        let t = topic.clone();
        let code = runtime::submit_to(
            owner,
            move || async move { write_here(&t, index, &m).await },
        )
        .await
        .unwrap_or(E::NotLeaderOrFollower.code());
        ((topic, index), code)
    });
    let remotes = remote
        .into_iter()
        .map(|(leader, parts)| send(leader, m, parts));
    let (locals, remotes) = futures::future::join(
        futures::future::join_all(locals),
        futures::future::join_all(remotes),
    )
    .await;
    for ((topic, index), code) in locals {
        if !settled(code) {
            tracing::debug!(
                topic,
                partition = index,
                code,
                "transaction marker not written yet"
            );
            leaderless.push((topic, index));
        }
    }
    leaderless.extend(remotes.into_iter().flatten());
    leaderless
}

/// One WriteTxnMarkers request to `leader` for `parts`; returns the partitions not settled.
async fn send(leader: i32, m: MarkerSpec, parts: Vec<TopicPartition>) -> Vec<TopicPartition> {
    let req = request(&m, &parts);
    let resp = cluster::peer_client::call(
        leader,
        &req,
        WRITE_TXN_MARKERS_VERSION,
        CLIENT_ID,
        REQUEST_TIMEOUT,
    )
    .await;
    let codes = match resp {
        Ok(r) => answers(&r, m.producer_id, &parts),
        Err(e) => {
            tracing::warn!(leader, producer_id = m.producer_id, partitions = parts.len(),
                error = %format!("{e:#}"), "sending transaction markers to a partition leader");
            return parts;
        }
    };
    parts
        .into_iter()
        .zip(codes)
        .filter_map(|((topic, index), code)| {
            let code = code.unwrap_or(E::UnknownServerError.code());
            if settled(code) {
                return None;
            }
            tracing::debug!(
                leader,
                topic,
                partition = index,
                code,
                "a partition leader did not write a transaction marker yet"
            );
            Some((topic, index))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;
    use crate::cluster::{PartitionMeta, TopicMeta};

    fn image_with(topic: &str, leaders: &[i32]) -> MetadataImage {
        let mut img = MetadataImage::default();
        let partitions = leaders
            .iter()
            .enumerate()
            .map(|(i, &leader)| PartitionMeta {
                index: i as i32,
                log_dir: 0,
                leader_epoch: 3,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            })
            .collect();
        img.topics.insert(
            topic.to_string(),
            Arc::new(TopicMeta {
                name: topic.to_string(),
                id: uuid::Uuid::nil(),
                partitions,
                configs: Default::default(),
            }),
        );
        img
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn plan_sorts_partitions_by_leader() {
        let img = image_with("t", &[1, 2, 3, -1, 2]);
        let parts = vec![
            tp("t", 0),
            tp("t", 1),
            tp("t", 2),
            tp("t", 3),
            tp("t", 4),
            tp("t", 9),
            tp("gone", 0),
        ];
        let p = plan(&img, 1, true, parts.clone());
        assert_eq!(p.local, vec![tp("t", 0)]);
        assert_eq!(
            p.remote,
            BTreeMap::from([(2, vec![tp("t", 1), tp("t", 4)]), (3, vec![tp("t", 2)])])
        );
        assert_eq!(p.leaderless, vec![tp("t", 3)]);
        assert_eq!(p.gone, vec![tp("t", 9), tp("gone", 0)]);
        // A single node leads every partition it knows.
        let single = plan(&img, 1, false, parts);
        assert_eq!(single.local.len(), 5);
        assert!(single.remote.is_empty() && single.leaderless.is_empty());
        assert_eq!(single.gone.len(), 2);
    }

    #[test]
    fn settled_codes() {
        assert!(settled(0));
        assert!(settled(E::InvalidProducerEpoch.code()));
        assert!(settled(E::ProducerFenced.code()));
        for retried in [
            E::NotLeaderOrFollower,
            E::UnknownTopicOrPartition,
            E::KafkaStorageError,
            E::NotEnoughReplicas,
            E::NotEnoughReplicasAfterAppend,
            E::RequestTimedOut,
            E::UnknownServerError,
        ] {
            assert!(!settled(retried.code()), "{retried:?}");
        }
    }

    #[test]
    fn request_groups_partitions_by_topic_and_survives_the_wire() {
        let m = MarkerSpec {
            producer_id: 42,
            producer_epoch: 7,
            commit: true,
            coordinator_epoch: 5,
        };
        let req = request(&m, &[tp("b", 1), tp("a", 0), tp("b", 0)]);
        let mut buf = bytes::BytesMut::new();
        req.encode(&mut buf, WRITE_TXN_MARKERS_VERSION).unwrap();
        let back =
            WriteTxnMarkersRequest::decode(&mut buf.freeze(), WRITE_TXN_MARKERS_VERSION).unwrap();
        assert_eq!(back, req);
        let [marker] = &back.markers[..] else {
            panic!("one marker expected: {back:?}")
        };
        assert_eq!(marker.producer_id.0, 42);
        assert_eq!(marker.producer_epoch, 7);
        assert!(marker.transaction_result);
        assert_eq!(marker.coordinator_epoch, 5);
        let topics: Vec<(&str, Vec<i32>)> = marker
            .topics
            .iter()
            .map(|t| (t.name.0.as_str(), t.partition_indexes.clone()))
            .collect();
        assert_eq!(topics, vec![("a", vec![0]), ("b", vec![1, 0])]);
    }

    #[test]
    fn answers_map_back_to_the_partitions_asked() {
        let part = |i, c| {
            WritableTxnMarkerPartitionResult::default()
                .with_partition_index(i)
                .with_error_code(c)
        };
        let resp = WriteTxnMarkersResponse::default().with_markers(vec![
            WritableTxnMarkerResult::default()
                .with_producer_id(ProducerId(9))
                .with_topics(vec![WritableTxnMarkerTopicResult::default()
                    .with_name(kafka_protocol::messages::TopicName(
                        StrBytes::from_static_str("t"),
                    ))
                    .with_partitions(vec![part(0, 6)])]),
            WritableTxnMarkerResult::default()
                .with_producer_id(ProducerId(42))
                .with_topics(vec![WritableTxnMarkerTopicResult::default()
                    .with_name(kafka_protocol::messages::TopicName(
                        StrBytes::from_static_str("t"),
                    ))
                    .with_partitions(vec![part(0, 0), part(1, 6)])]),
        ]);
        let got = answers(&resp, 42, &[tp("t", 0), tp("t", 1), tp("t", 2), tp("u", 0)]);
        assert_eq!(got, vec![Some(0), Some(6), None, None]);
    }
}
