//! Metadata: the live brokers (registered, not fenced) with their advertised
//! listeners, a controller id, and topics with their partitions (leader,
//! epoch, replicas, ISR, offline replicas) as the metadata image has them.
//! Unknown topics are created when the request allows it and
//! `auto.create.topics.enable` is on.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use super::{advertised, str_bytes, topic_name, topic_str};
use crate::cluster::controller::{self, NewTopic};
use crate::cluster::{
    image, partition_manager::broker_config, validate_topic_name, MetadataImage, TopicMeta,
    NO_LEADER,
};
use crate::protocol::Request;

/// Kafka's KAFKA_STORAGE_ERROR: the partition's replica is in an offline log dir.
const KAFKA_STORAGE_ERROR: i16 = 56;

pub async fn handle(req: &Request, body: MetadataRequest) -> MetadataResponse {
    let cfg = broker_config();
    let mut resp = MetadataResponse::default();
    let img0 = image();
    resp.brokers = brokers(&img0, req.version)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = id.into();
            b.host = str_bytes(&host);
            b.port = port;
            if req.version >= 1 {
                b.rack = rack.map(|r| str_bytes(&r));
            }
            b
        })
        .collect();
    if req.version >= 2 {
        resp.cluster_id = Some(str_bytes(&img0.cluster_id));
    }
    if req.version >= 1 {
        resp.controller_id = controller_id(&img0).into();
    }
    resp.cluster_authorized_operations = i32::MIN;

    // v0: an empty list means all topics; v1+: null means all topics.
    let requested = match &body.topics {
        None => None,
        Some(t) if t.is_empty() && req.version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto = (req.version < 4 || body.allow_auto_topic_creation) && cfg.auto_create_topics;
    match requested {
        None => {
            let img = image();
            resp.topics = img
                .topics
                .values()
                .map(|t| describe(&img, t, cfg.node_id, req.version))
                .collect();
        }
        Some(list) => {
            for rt in list {
                let img = image();
                let name = match &rt.name {
                    Some(n) => topic_str(n),
                    None => match img.topic_by_id(rt.topic_id) {
                        Some(t) => t.name.clone(),
                        None => {
                            let mut t = MetadataResponseTopic::default();
                            t.topic_id = rt.topic_id;
                            t.error_code = ResponseError::UnknownTopicId.code();
                            resp.topics.push(t);
                            continue;
                        }
                    },
                };
                if let Some(t) = img.topic(&name) {
                    resp.topics
                        .push(describe(&img, t, cfg.node_id, req.version));
                    continue;
                }
                let mut t = MetadataResponseTopic::default();
                t.name = Some(topic_name(&name));
                if let Err(m) = validate_topic_name(&name) {
                    tracing::debug!(topic = %name, reason = %m, "metadata for invalid topic name");
                    t.error_code = ResponseError::InvalidTopicException.code();
                } else if !allow_auto {
                    t.error_code = ResponseError::UnknownTopicOrPartition.code();
                } else {
                    let new = NewTopic {
                        name: name.clone(),
                        partitions: -1,
                        replication_factor: -1,
                        configs: Default::default(),
                        assignment: None,
                    };
                    match controller::create_topics(vec![new]).await.pop() {
                        Some(Ok(meta)) => t = describe(&image(), &meta, cfg.node_id, req.version),
                        // Lost a race with another creator: describe what exists.
                        Some(Err(r)) if r.code == ResponseError::TopicAlreadyExists.code() => {
                            let now = image();
                            match now.topic(&name) {
                                Some(m) => t = describe(&now, m, cfg.node_id, req.version),
                                None => t.error_code = ResponseError::LeaderNotAvailable.code(),
                            }
                        }
                        Some(Err(r)) => t.error_code = r.code,
                        None => t.error_code = ResponseError::UnknownServerError.code(),
                    }
                }
                resp.topics.push(t);
            }
        }
    }
    resp
}

/// (id, host, port, rack) of every live broker; this broker alone until it has registered.
pub(crate) fn brokers(
    img: &MetadataImage,
    _version: i16,
) -> Vec<(i32, String, i32, Option<String>)> {
    let cfg = broker_config();
    let mut out: Vec<_> = img
        .live_brokers()
        .map(|b| {
            if b.id == cfg.node_id {
                // Our own address as configured now (a restart may change it before the
                // registration commits).
                let (h, p) = advertised();
                (b.id, h, p, cfg.cluster.rack.clone())
            } else {
                (b.id, b.host.clone(), b.port, b.rack.clone())
            }
        })
        .collect();
    if !out.iter().any(|b| b.0 == cfg.node_id) && cfg.cluster.roles.broker {
        let (h, p) = advertised();
        out.push((cfg.node_id, h, p, cfg.cluster.rack.clone()));
    }
    out
}

/// What Metadata and DescribeCluster report as the controller: this broker. With KRaft,
/// Kafka reports a random live broker, since clients cannot reach the controllers and any
/// broker takes admin requests (it forwards them); here any broker proposes them to the
/// metadata quorum, and the broker answering is the one surely reachable. The quorum's
/// leader is in DescribeQuorum (`sluice cluster quorum`).
pub(crate) fn controller_id(_img: &MetadataImage) -> i32 {
    broker_config().node_id
}

fn describe(img: &MetadataImage, t: &TopicMeta, node: i32, version: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(topic_name(&t.name));
    if version >= 10 {
        out.topic_id = t.id;
    }
    if version >= 1 {
        out.is_internal = t.name.starts_with("__");
    }
    out.topic_authorized_operations = i32::MIN;
    out.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.index;
            mp.leader_id = p.leader.into();
            if version >= 7 {
                mp.leader_epoch = p.leader_epoch;
            }
            mp.replica_nodes = p.replicas.iter().map(|r| (*r).into()).collect();
            mp.isr_nodes = p.isr.iter().map(|r| (*r).into()).collect();
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| img.brokers.get(r).is_none_or(|b| b.fenced))
                .collect();
            if p.leader == NO_LEADER {
                mp.error_code = ResponseError::LeaderNotAvailable.code();
            }
            if p.leader == node && crate::storage::log_dirs::is_offline_index(p.log_dir) {
                // The only replica sits in an offline log dir. The leader stays this broker so
                // that clients send their requests and get a definite KAFKA_STORAGE_ERROR from
                // each (see docs: Kafka moves leadership away, impossible with one replica).
                mp.error_code = KAFKA_STORAGE_ERROR;
                if version >= 5 {
                    mp.offline_replicas = vec![node.into()];
                }
            } else if version >= 5 && !offline.is_empty() && img.brokers.contains_key(&node) {
                mp.offline_replicas = offline.into_iter().map(Into::into).collect();
            }
            mp
        })
        .collect();
    out
}
