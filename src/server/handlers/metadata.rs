//! Metadata: the broker list (this broker), the controller, and topics with
//! their partitions (leader, epoch, replicas, ISR). Unknown topics are created
//! when the request allows it and `auto.create.topics.enable` is on.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use super::{advertised, str_bytes, topic_name, topic_str};
use crate::cluster::controller::{self, NewTopic};
use crate::cluster::{image, partition_manager::broker_config, validate_topic_name, TopicMeta};
use crate::protocol::Request;

/// Kafka's KAFKA_STORAGE_ERROR: the partition's replica is in an offline log dir.
const KAFKA_STORAGE_ERROR: i16 = 56;

pub async fn handle(req: &Request, body: MetadataRequest) -> MetadataResponse {
    let cfg = broker_config();
    let mut resp = MetadataResponse::default();
    let (host, port) = advertised();
    let mut b = MetadataResponseBroker::default();
    b.node_id = cfg.node_id.into();
    b.host = str_bytes(&host);
    b.port = port;
    resp.brokers = vec![b];
    if req.version >= 2 {
        resp.cluster_id = Some(str_bytes(&image().cluster_id));
    }
    if req.version >= 1 {
        resp.controller_id = cfg.node_id.into();
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
                .map(|t| describe(t, cfg.node_id, req.version))
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
                    resp.topics.push(describe(t, cfg.node_id, req.version));
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
                    };
                    match controller::create_topics(vec![new]).await.pop() {
                        Some(Ok(meta)) => t = describe(&meta, cfg.node_id, req.version),
                        // Lost a race with another creator: describe what exists.
                        Some(Err(r)) if r.code == ResponseError::TopicAlreadyExists.code() => {
                            match image().topic(&name) {
                                Some(m) => t = describe(m, cfg.node_id, req.version),
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

fn describe(t: &TopicMeta, node: i32, version: i16) -> MetadataResponseTopic {
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
            mp.leader_id = node.into();
            if version >= 7 {
                mp.leader_epoch = p.leader_epoch;
            }
            mp.replica_nodes = vec![node.into()];
            mp.isr_nodes = vec![node.into()];
            if crate::storage::log_dirs::is_offline_index(p.log_dir) {
                // The only replica sits in an offline log dir. The leader stays this broker so
                // that clients send their requests and get a definite KAFKA_STORAGE_ERROR from
                // each (see docs: Kafka moves leadership away, impossible with one replica).
                mp.error_code = KAFKA_STORAGE_ERROR;
                if version >= 5 {
                    mp.offline_replicas = vec![node.into()];
                }
            }
            mp
        })
        .collect();
    out
}
