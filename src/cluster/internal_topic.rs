//! Internal compacted topics written by coordinators (`__consumer_offsets`,
//! `__transaction_state`): lazy creation, durable appends of keyed records,
//! and reading a partition back at start-up.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::controller::{self, NewTopic};

/// The consumer groups' offsets topic (its owner is `group/`; named here so the controller
/// can protect it without importing the coordinators).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
use super::{image, partition_manager};
use crate::storage::StorageError;

/// How an internal topic is created.
pub struct InternalTopic<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub segment_bytes: i64,
    /// Wanted replication factor; capped at the live broker count when created.
    pub replication_factor: i16,
    /// `min.insync.replicas` to set (capped at the replication factor), if any.
    pub min_isr: Option<i16>,
}

/// Creates the internal topic if it does not exist yet (compacted, with its
/// partitions, segments and replicas). Err: a Kafka code.
pub async fn ensure(t: InternalTopic<'_>) -> Result<(), i16> {
    let name = t.name;
    if image().topic(name).is_some() {
        return Ok(());
    }
    let live = image().live_brokers().count().max(1);
    let rf = t
        .replication_factor
        .clamp(1, i16::try_from(live).unwrap_or(i16::MAX));
    let mut configs: std::collections::BTreeMap<String, String> = [
        ("cleanup.policy", "compact".to_string()),
        ("segment.bytes", t.segment_bytes.to_string()),
        ("compression.type", "producer".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(m) = t.min_isr {
        configs.insert("min.insync.replicas".into(), m.clamp(1, rf).to_string());
    }
    let res = controller::create_topics(vec![NewTopic {
        name: name.to_string(),
        partitions: t.partitions,
        replication_factor: rf,
        configs,
        assignment: None,
    }])
    .await;
    match res.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err(_)) if image().topic(name).is_some() => Ok(()),
        Some(Err(r)) => {
            tracing::error!(code = r.code, message = %r.message, "cannot create {name}");
            Err(E::CoordinatorNotAvailable.code())
        }
        None => Err(E::CoordinatorNotAvailable.code()),
    }
}

/// Kafka's mapping of a failed coordinator write to the coordinator's error.
fn store_error(e: &StorageError) -> i16 {
    match e.kafka_code() {
        10 | 18 => E::InvalidCommitOffsetSize.code(),
        _ => E::CoordinatorNotAvailable.code(),
    }
}

/// The producer of a transactional batch: (producer id, epoch).
pub type TxnProducer = Option<(i64, i16)>;

/// Encodes keyed records (value None = tombstone) as one v2 batch; with a
/// producer, as a transactional batch of that producer.
pub fn encode_batch(
    recs: Vec<(Bytes, Option<Bytes>)>,
    producer: TxnProducer,
    now: i64,
) -> Result<Bytes, i16> {
    let (pid, epoch) = producer.unwrap_or((-1, -1));
    let batch: Vec<Record> = recs
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever offset - sequence
            // changes; the header keeps the first record's -1.
            sequence: i as i32 - 1,
            timestamp: now,
            key: Some(key),
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, batch.iter(), &opts).map_err(|e| {
        tracing::error!(error = %e, "encoding an internal batch");
        E::UnknownServerError.code()
    })?;
    Ok(buf.freeze())
}

/// Appends records to `topic`-`partition` (on this shard, its owner) as one
/// batch and waits until they are durable. Err: a Kafka error code.
pub async fn append(
    topic: &str,
    partition: i32,
    recs: Vec<(Bytes, Option<Bytes>)>,
    producer: TxnProducer,
) -> Result<(), i16> {
    if recs.is_empty() {
        return Ok(());
    }
    let p = match partition_manager::get(topic, partition).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(E::CoordinatorNotAvailable.code()),
        Err(e) => return Err(store_error(&e)),
    };
    let now = crate::runtime::now_ms();
    let batch = encode_batch(recs, producer, now)?;
    let res = p.log.append(batch, now).await.map_err(|e| {
        tracing::error!(topic, partition, error = %e, "writing an internal topic");
        store_error(&e)
    })?;
    p.appended.notify_all();
    p.log.flush(res.last_offset).await.map_err(|e| {
        tracing::error!(topic, partition, error = %e, "syncing an internal topic");
        store_error(&e)
    })?;
    // Replicated: answer once every in-sync replica has it, as Kafka's coordinators write
    // with acks=all; its errors map as Kafka's GroupMetadataManager maps them.
    let timeout = std::time::Duration::from_millis(
        partition_manager::broker_config()
            .groups
            .offsets_commit_timeout_ms,
    );
    super::leader::wait_replicated(&p, res.last_offset, timeout)
        .await
        .map_err(|(code, message)| {
            tracing::warn!(topic, partition, %message, "internal topic write not replicated");
            match code {
                E::NotLeaderOrFollower => E::NotCoordinator.code(),
                _ => E::CoordinatorNotAvailable.code(),
            }
        })
}

/// One record read back from an internal topic.
pub struct ReadRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Producer id of a transactional batch, else -1.
    pub producer_id: i64,
    pub transactional: bool,
    pub control: bool,
}

/// Calls `f` on every record of `topic`-`partition` (owned by this shard),
/// from the log start to the log end, in offset order.
pub async fn read_all(
    topic: &str,
    partition: i32,
    mut f: impl FnMut(ReadRecord),
) -> anyhow::Result<()> {
    let p = match partition_manager::get(topic, partition).await {
        Ok(Some(p)) => p,
        // Led by another broker (or by none): its coordinator state is loaded there.
        Ok(None) | Err(crate::storage::StorageError::NotLeader(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let end = p.log.log_end_offset();
    let mut at = p.log.log_start_offset();
    while at < end {
        let mut chunk = p.log.read(at, 1 << 20, end).await?;
        if chunk.is_empty() {
            break;
        }
        let mut next = at;
        while chunk.len() >= 61 {
            let base = i64::from_be_bytes(chunk[0..8].try_into()?);
            let len = i32::from_be_bytes(chunk[8..12].try_into()?);
            let size = 12 + usize::try_from(len)?;
            if size > chunk.len() {
                break;
            }
            let last_delta = i32::from_be_bytes(chunk[23..27].try_into()?);
            next = base + i64::from(last_delta) + 1;
            let mut batch = chunk.split_to(size);
            let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
                anyhow::anyhow!("decoding {topic}-{partition} batch at {base}: {e}")
            })?;
            for r in set.records {
                f(ReadRecord {
                    offset: r.offset,
                    key: r.key,
                    value: r.value,
                    producer_id: r.producer_id,
                    transactional: r.transactional,
                    control: r.control,
                });
            }
        }
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(())
}
