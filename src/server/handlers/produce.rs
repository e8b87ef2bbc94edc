//! Produce: validate and append each partition's record set on the shard that
//! owns the partition, then acknowledge as `acks` asks:
//! - acks=0: no response at all;
//! - acks=1: after the write completed (O_DIRECT: in the device; buffered: in
//!   the page cache);
//! - acks=all (-1): after the write is fsynced (group commit per partition) and,
//!   for a replicated partition, once every in-sync replica has it (the high
//!   watermark passed it: `cluster/leader.rs`). With fewer in-sync replicas than
//!   `min.insync.replicas` the records are refused (NOT_ENOUGH_REPLICAS), or, when
//!   the ISR shrank after the append, answered NOT_ENOUGH_REPLICAS_AFTER_APPEND.
//!   Both waits happen after the handler returns ([`Produced::WhenDurable`]), so
//!   the connection can append its next request meanwhile.

use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{by_shard, str_bytes, topic_name, topic_str};
use crate::cluster::partition_manager::Partition;
use crate::cluster::{image, owner_shard, partition_manager};
use crate::protocol::Request;
use crate::runtime;
use crate::server::metrics;
use crate::storage::StorageError;

/// The topic's effective `min.insync.replicas`.
fn min_insync(img: &crate::cluster::MetadataImage, topic: &str) -> i64 {
    let cfg = partition_manager::broker_config();
    img.topic(topic)
        .and_then(|t| cfg.topic_value(&t.configs, "min.insync.replicas"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Members of the partition's ISR (a single node's partitions: the broker itself).
fn isr_size(img: &crate::cluster::MetadataImage, topic: &str, index: i32) -> i64 {
    img.partition(topic, index)
        .map_or(1, |(_, p)| p.isr.len().max(1) as i64)
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

/// A Produce's answer. With acks=all the batches are appended (in request
/// order, before the connection reads its next request) but the answer waits
/// for their fsync; the connection answers in order meanwhile (see
/// `connection.rs`), so a producer's pipelined requests share one group commit.
pub enum Produced {
    /// acks=0: no response at all.
    Nothing,
    Ready(ProduceResponse),
    /// acks=all: resolves once every appended partition is durable (or failed to be).
    WhenDurable(LocalBoxFuture<'static, ProduceResponse>),
}

/// One partition's place in the response: topic index, partition, outcome.
type Slot = (usize, i32, Option<Appended>);

/// The answer, and the error the request is counted under in the metrics (the first
/// partition's error known when the handler returns; 0: none).
pub async fn handle(req: &Request, body: ProduceRequest) -> (Produced, i16) {
    let acks = body.acks;
    let img = image();
    let shards = runtime::nr_shards();
    let me = partition_manager::broker_config().node_id;
    // Slot per partition in request order; filled from local checks or shard replies.
    let mut slots: Vec<Slot> = Vec::new();
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
            } else if crate::cluster::multi_node()
                && crate::cluster::leader_of(&img, &topic, pd.index) != me
            {
                // Leadership first, as Kafka's replica manager checks it before the records.
                Some(Appended::error(ResponseError::NotLeaderOrFollower, None))
            } else if topic == crate::group::OFFSETS_TOPIC {
                // Only the group coordinator writes there, as in Kafka.
                Some(Appended::error(
                    ResponseError::InvalidTopicException,
                    Some(format!("Cannot append to internal topic {topic}")),
                ))
            } else if acks == -1 && min_insync(&img, &topic) > isr_size(&img, &topic, pd.index) {
                let message = format!(
                    "min.insync.replicas is {} but the in-sync replica set has {} member(s)",
                    min_insync(&img, &topic),
                    isr_size(&img, &topic, pd.index)
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
    let timeout = std::time::Duration::from_millis(body.timeout_ms.max(0) as u64);
    let calls = by_shard(work).into_iter().map(|(shard, items)| {
        runtime::submit_to(shard, move || append_on_owner(items, acks, now, timeout))
    });
    let mut durable = Vec::new();
    for reply in futures::future::join_all(calls).await {
        match reply {
            Ok(done) => {
                for (slot, appended) in done.appended {
                    slots[slot].2 = Some(appended);
                }
                durable.extend(done.durable);
            }
            Err(e) => tracing::error!(error = %e, "produce hop failed"),
        }
    }
    let names: Vec<String> = body
        .topic_data
        .iter()
        .map(|td| topic_str(&td.name))
        .collect();
    let error = count_outcomes(&names, &slots);
    if acks == 0 {
        return (Produced::Nothing, error);
    }
    let version = req.version;
    if durable.is_empty() {
        return (Produced::Ready(response(version, &names, slots)), error);
    }
    let later = Produced::WhenDurable(Box::pin(async move {
        for (waiting, failed) in durable {
            match failed.await {
                Ok(failures) => {
                    for (slot, error) in failures {
                        if let Some(name) = slots.get(slot).and_then(|s| names.get(s.0)) {
                            metrics::count_topic(name, |c| c.produce_failures += 1);
                        }
                        slots[slot].2 = Some(error);
                    }
                }
                // The owner shard stopped before its fsyncs finished: the
                // batches are written but not known durable, so acks=all fails.
                Err(_) => {
                    for slot in waiting {
                        slots[slot].2 = Some(Appended::error(
                            ResponseError::RequestTimedOut,
                            Some("the broker stopped before the fsync completed".into()),
                        ));
                    }
                }
            }
        }
        response(version, &names, slots)
    }));
    (later, error)
}

/// Counts each partition of the request in its topic's produce requests, and those already
/// answered with an error in its failures; returns the first such error (0: none).
fn count_outcomes(names: &[String], slots: &[Slot]) -> i16 {
    let mut first = 0;
    for (ti, _, a) in slots {
        let Some(name) = names.get(*ti) else {
            continue;
        };
        let code = a.as_ref().map_or(0, |a| a.error_code);
        metrics::count_topic(name, |c| {
            c.produce_requests += 1;
            c.produce_failures += u64::from(code != 0);
        });
        if first == 0 {
            first = code;
        }
    }
    first
}

/// The response, one entry per topic of the request in request order.
fn response(version: i16, names: &[String], mut slots: Vec<Slot>) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    for (ti, name) in names.iter().enumerate() {
        let mut t = TopicProduceResponse::default();
        t.name = topic_name(name);
        for (_, index, a) in slots.iter_mut().filter(|(i, _, _)| *i == ti) {
            let a = a
                .take()
                .unwrap_or_else(|| Appended::error(ResponseError::UnknownServerError, None));
            let mut p = PartitionProduceResponse::default();
            p.index = *index;
            p.error_code = a.error_code;
            p.base_offset = a.base_offset;
            p.log_append_time_ms = a.log_append_time_ms;
            if version >= 5 {
                p.log_start_offset = a.log_start_offset;
            }
            if version >= 8 {
                p.error_message = a.error_message.as_deref().map(str_bytes);
            }
            t.partition_responses.push(p);
        }
        resp.responses.push(t);
    }
    resp
}

/// What an owner shard sends back: each partition's append, and for acks=all
/// the failures of the fsync that follows (empty when every one succeeded).
struct OwnerReply {
    appended: Vec<(usize, Appended)>,
    /// The slots being fsynced, and the failures once that is over.
    durable: Option<(Vec<usize>, oneshot::Receiver<Failures>)>,
}

/// Slots whose fsync failed, with the error to answer.
type Failures = Vec<(usize, Appended)>;

/// The answer for a partition whose `step` ("append" or "fsync") failed; I/O errors are logged.
fn failed(step: &str, topic: &str, index: i32, e: StorageError) -> Appended {
    if let StorageError::Io(_) = e {
        tracing::error!(topic, partition = index, error = %e, "{step} failed");
    }
    Appended::error(storage_error(&e), Some(e.to_string()))
}

/// Runs on the owner shard: appends each record set and wakes long-polling
/// fetches; for acks=all it then starts the fsyncs (group commit per
/// partition) on this shard and returns without waiting for them.
async fn append_on_owner(
    items: Vec<(usize, String, i32, Bytes)>,
    acks: i16,
    now: i64,
    timeout: std::time::Duration,
) -> OwnerReply {
    let appends = items
        .into_iter()
        .map(|(slot, topic, index, records)| async move {
            let r = append_one(&topic, index, records, acks, now).await;
            (slot, topic, index, r)
        });
    let mut appended = Vec::new();
    let mut to_flush = Vec::new();
    for (slot, topic, index, r) in futures::future::join_all(appends).await {
        match r {
            Ok((a, Some((p, last)))) => {
                appended.push((slot, a));
                if acks == -1 {
                    to_flush.push((slot, topic, index, p, last));
                }
            }
            Ok((a, None)) => appended.push((slot, a)),
            Err(e) => appended.push((slot, failed("append", &topic, index, e))),
        }
    }
    if to_flush.is_empty() {
        return OwnerReply {
            appended,
            durable: None,
        };
    }
    let waiting = to_flush.iter().map(|f| f.0).collect();
    let (tx, rx) = oneshot::channel();
    runtime::spawn(async move {
        let flushes = to_flush
            .into_iter()
            .map(|(slot, topic, index, p, last)| async move {
                if let Err(e) = p.log.flush(last).await {
                    return Some((slot, failed("fsync", &topic, index, e)));
                }
                crate::cluster::leader::wait_replicated(&p, last, timeout)
                    .await
                    .err()
                    .map(|(code, message)| (slot, Appended::error(code, Some(message))))
            });
        let failures = futures::future::join_all(flushes)
            .await
            .into_iter()
            .flatten()
            .collect();
        let _ = tx.send(failures);
    });
    OwnerReply {
        appended,
        durable: Some((waiting, rx)),
    }
}

/// Appends one record set; on success also the partition and the last offset
/// written, for the fsync acks=all asks.
async fn append_one(
    topic: &str,
    index: i32,
    records: Bytes,
    acks: i16,
    now: i64,
) -> Result<(Appended, Option<(Rc<Partition>, i64)>), StorageError> {
    let Some(p) = partition_manager::get(topic, index).await? else {
        return Ok((
            Appended::error(ResponseError::UnknownTopicOrPartition, None),
            None,
        ));
    };
    let bytes = records.len() as u64;
    let r = p.log.append(records, now).await?;
    p.appended.notify_all();
    if !r.duplicate {
        let n = u64::try_from(r.last_offset - r.base_offset + 1).unwrap_or(0);
        metrics::count_topic(topic, |c| {
            c.bytes_in += bytes;
            c.records_in += n;
        });
    }
    if acks != -1 {
        apply_flush_policy(&p, r.last_offset).await?;
    }
    let a = Appended {
        error_code: 0,
        error_message: None,
        base_offset: r.base_offset,
        log_append_time_ms: r.log_append_time_ms,
        log_start_offset: r.log_start_offset,
    };
    Ok((a, Some((p, r.last_offset))))
}

/// The topic's `flush.messages` / `flush.ms` after an acks=0/1 append:
/// `flush.messages` reached syncs before answering (as Kafka's append does);
/// `flush.ms` arms one timer per partition that syncs what is pending then.
async fn apply_flush_policy(p: &Rc<Partition>, last_offset: i64) -> Result<(), StorageError> {
    match p.log.flush_due() {
        Some(wait) if wait.is_zero() => p.log.flush(last_offset).await,
        Some(wait) => {
            p.log.flush_timer_armed.set(true);
            let p = Rc::clone(p);
            runtime::spawn(async move {
                runtime::sleep(wait).await;
                p.log.flush_timer_armed.set(false);
                if p.log.closed.get() {
                    return; // deleted or shutting down: close syncs what it keeps
                }
                let upto = p.log.log_end_offset() - 1;
                if let Err(e) = p.log.flush(upto).await {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e,
                        "flush.ms sync failed");
                }
            });
            Ok(())
        }
        None => Ok(()),
    }
}

/// The Kafka error for a storage failure.
pub(crate) fn storage_error(e: &StorageError) -> ResponseError {
    ResponseError::try_from_code(e.kafka_code()).unwrap_or(ResponseError::UnknownServerError)
}
