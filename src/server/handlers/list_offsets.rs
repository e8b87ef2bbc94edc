//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local
//! (-4), or the first offset whose timestamp is at least the one given. LATEST
//! for a READ_COMMITTED reader (isolation_level 1) is the last stable offset.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{topic_name, topic_str};
use crate::cluster::{image, owner_shard, partition_manager};
use crate::protocol::Request;
use crate::runtime;

/// Kafka's special timestamps in ListOffsets.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const LATEST_TIERED: i64 = -5;

/// (error, timestamp, offset, leader epoch)
type Answer = (i16, i64, i64, i32);

pub async fn handle(_req: &Request, body: ListOffsetsRequest) -> ListOffsetsResponse {
    let img = image();
    let shards = runtime::nr_shards();
    let mut answers: Vec<Option<Answer>> = Vec::new();
    // isolation_level 1 (READ_COMMITTED, v2+): LATEST is the last stable offset.
    let read_committed = _req.version >= 2 && body.isolation_level == 1;
    let mut work = Vec::new();
    for t in &body.topics {
        let name = topic_str(&t.name);
        for p in &t.partitions {
            let slot = answers.len();
            if img.partition(&name, p.partition_index).is_none() {
                answers.push(Some((
                    ResponseError::UnknownTopicOrPartition.code(),
                    -1,
                    -1,
                    -1,
                )));
            } else {
                answers.push(None);
                work.push((
                    owner_shard(&name, p.partition_index, shards),
                    (
                        slot,
                        name.clone(),
                        p.partition_index,
                        p.timestamp,
                        read_committed,
                    ),
                ));
            }
        }
    }
    super::gather_on_owners(work, &mut answers, "list offsets", lookup_on_owner).await;
    let mut resp = ListOffsetsResponse::default();
    let mut it = answers.into_iter();
    for t in &body.topics {
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic_name(&topic_str(&t.name));
        for p in &t.partitions {
            let (error, ts, offset, epoch) = it.next().flatten().unwrap_or((
                ResponseError::UnknownServerError.code(),
                -1,
                -1,
                -1,
            ));
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_code = error;
            pr.timestamp = ts;
            pr.offset = offset;
            if _req.version >= 4 {
                pr.leader_epoch = epoch;
            }
            out.partitions.push(pr);
        }
        resp.topics.push(out);
    }
    resp
}

/// (slot, topic, partition, timestamp, read_committed)
type Lookup = (usize, String, i32, i64, bool);

async fn lookup_on_owner(items: Vec<Lookup>) -> Vec<(usize, Answer)> {
    let mut out = Vec::with_capacity(items.len());
    for (slot, topic, index, ts, read_committed) in items {
        let a = match partition_manager::get(&topic, index).await {
            Ok(Some(p)) => {
                let epoch = p.log.leader_epoch();
                match ts {
                    LATEST if read_committed => {
                        let lso = p.log.last_stable_offset().min(p.high_watermark());
                        (0, -1, lso, epoch)
                    }
                    LATEST | LATEST_TIERED => (0, -1, p.high_watermark(), epoch),
                    EARLIEST | EARLIEST_LOCAL => (0, -1, p.log.log_start_offset(), epoch),
                    MAX_TIMESTAMP => {
                        let (mts, off) = p.log.max_timestamp();
                        (0, mts, off, epoch)
                    }
                    t if t < 0 => (ResponseError::InvalidRequest.code(), -1, -1, -1),
                    t => match p.log.offset_for_timestamp(t).await {
                        Ok(Some((offset, found))) => (0, found, offset, epoch),
                        Ok(None) => (0, -1, -1, epoch),
                        Err(e) => (super::produce::storage_error(&e).code(), -1, -1, -1),
                    },
                }
            }
            Ok(None) => (ResponseError::UnknownTopicOrPartition.code(), -1, -1, -1),
            Err(e) => (super::produce::storage_error(&e).code(), -1, -1, -1),
        };
        out.push((slot, a));
    }
    out
}
