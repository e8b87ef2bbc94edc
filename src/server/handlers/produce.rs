//! Produce: validate and append each partition's record set on the shard that
//! owns the partition, then acknowledge as `acks` asks:
//! - acks=0: no response at all;
//! - acks=1: after the write completed (O_DIRECT: in the device; buffered: in
//!   the page cache);
//! - acks=all (-1): after the write is fsynced (group commit per partition). On
//!   one node the in-sync replica set is this broker alone.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{by_shard, str_bytes, topic_name, topic_str};
use crate::cluster::{image, owner_shard, partition_manager};
use crate::protocol::Request;
use crate::runtime;
use crate::storage::StorageError;

/// In-sync replicas of every partition on a single node: the broker itself.
const ISR_SIZE: i64 = 1;

/// The topic's effective `min.insync.replicas`.
fn min_insync(img: &crate::cluster::MetadataImage, topic: &str) -> i64 {
    let cfg = partition_manager::broker_config();
    img.topic(topic)
        .and_then(|t| cfg.topic_value(&t.configs, "min.insync.replicas"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Result of one partition's append, sent back from the owner shard.
struct Appended {
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
}

impl Appended {
    fn error(err: ResponseError, message: Option<String>) -> Appended {
        Appended {
            error_code: err.code(),
            error_message: message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

pub async fn handle(req: &Request, body: ProduceRequest) -> Option<ProduceResponse> {
    let acks = body.acks;
    let img = image();
    let shards = runtime::nr_shards();
    // Slot per partition in request order; filled from local checks or shard replies.
    let mut slots: Vec<(usize, i32, Option<Appended>)> = Vec::new();
    let mut work = Vec::new();
    for (ti, td) in body.topic_data.iter().enumerate() {
        let topic = topic_str(&td.name);
        for pd in &td.partition_data {
            let slot = slots.len();
            let early = if !(-1..=1).contains(&acks) {
                Some(Appended::error(ResponseError::InvalidRequiredAcks, None))
            } else if img.partition(&topic, pd.index).is_none() {
                Some(Appended::error(
                    ResponseError::UnknownTopicOrPartition,
                    None,
                ))
            } else if topic == crate::group::OFFSETS_TOPIC {
                // Only the group coordinator writes there, as in Kafka.
                Some(Appended::error(
                    ResponseError::InvalidTopicException,
                    Some(format!("Cannot append to internal topic {topic}")),
                ))
            } else if acks == -1 && min_insync(&img, &topic) > ISR_SIZE {
                let message = format!(
                    "min.insync.replicas is {} but the in-sync replica set has {ISR_SIZE} member",
                    min_insync(&img, &topic)
                );
                Some(Appended::error(
                    ResponseError::NotEnoughReplicas,
                    Some(message),
                ))
            } else {
                let refusal = pd
                    .records
                    .as_ref()
                    .and_then(|r| crate::storage::client_batch_refusal(r));
                match &pd.records {
                    None => Some(Appended::error(
                        ResponseError::CorruptMessage,
                        Some("null record set".into()),
                    )),
                    Some(_) if refusal.is_some() => Some(Appended::error(
                        ResponseError::InvalidRecord,
                        refusal.map(str::to_string),
                    )),
                    Some(records) => {
                        let shard = owner_shard(&topic, pd.index, shards);
                        work.push((shard, (slot, topic.clone(), pd.index, records.clone())));
                        None
                    }
                }
            };
            slots.push((ti, pd.index, early));
        }
    }
    let now = crate::server::now_ms();
    let calls = by_shard(work)
        .into_iter()
        .map(|(shard, items)| runtime::submit_to(shard, move || append_on_owner(items, acks, now)));
    for reply in futures::future::join_all(calls).await {
        match reply {
            Ok(done) => {
                for (slot, appended) in done {
                    slots[slot].2 = Some(appended);
                }
            }
            Err(e) => tracing::error!(error = %e, "produce hop failed"),
        }
    }
    if acks == 0 {
        return None;
    }
    let mut resp = ProduceResponse::default();
    for (ti, td) in body.topic_data.iter().enumerate() {
        let mut t = TopicProduceResponse::default();
        t.name = topic_name(&topic_str(&td.name));
        for (_, index, a) in slots.iter_mut().filter(|(i, _, _)| *i == ti) {
            let a = a
                .take()
                .unwrap_or_else(|| Appended::error(ResponseError::UnknownServerError, None));
            let mut p = PartitionProduceResponse::default();
            p.index = *index;
            p.error_code = a.error_code;
            p.base_offset = a.base_offset;
            p.log_append_time_ms = a.log_append_time_ms;
            if req.version >= 5 {
                p.log_start_offset = a.log_start_offset;
            }
            if req.version >= 8 {
                p.error_message = a.error_message.as_deref().map(str_bytes);
            }
            t.partition_responses.push(p);
        }
        resp.responses.push(t);
    }
    Some(resp)
}

/// Runs on the owner shard: appends each record set, fsyncs for acks=all, and
/// wakes long-polling fetches.
async fn append_on_owner(
    items: Vec<(usize, String, i32, Bytes)>,
    acks: i16,
    now: i64,
) -> Vec<(usize, Appended)> {
    let appends = items
        .into_iter()
        .map(|(slot, topic, index, records)| async move {
            let r = append_one(&topic, index, records, acks, now).await;
            let a = match r {
                Ok(a) => a,
                Err(e) => {
                    if let StorageError::Io(_) = e {
                        tracing::error!(topic, partition = index, error = %e, "append failed");
                    }
                    Appended::error(storage_error(&e), Some(e.to_string()))
                }
            };
            (slot, a)
        });
    futures::future::join_all(appends).await
}

async fn append_one(
    topic: &str,
    index: i32,
    records: Bytes,
    acks: i16,
    now: i64,
) -> Result<Appended, StorageError> {
    let Some(p) = partition_manager::get(topic, index).await? else {
        return Ok(Appended::error(
            ResponseError::UnknownTopicOrPartition,
            None,
        ));
    };
    let r = p.log.append(records, now).await?;
    p.appended.notify_all();
    if acks == -1 {
        p.log.flush(r.last_offset).await?;
    }
    Ok(Appended {
        error_code: 0,
        error_message: None,
        base_offset: r.base_offset,
        log_append_time_ms: r.log_append_time_ms,
        log_start_offset: r.log_start_offset,
    })
}

/// The Kafka error for a storage failure.
pub(crate) fn storage_error(e: &StorageError) -> ResponseError {
    ResponseError::try_from_code(e.kafka_code()).unwrap_or(ResponseError::UnknownServerError)
}
