//! OffsetForLeaderEpoch (KIP-101, KIP-320): for each partition, the largest leader epoch
//! this leader's log knows that is at most the one asked for, and the offset where it ends
//! (the start of the next epoch, or the log end for the current one), from the log's
//! leader-epoch cache (`storage/epoch_cache.rs`). Consumers use it after a leader change
//! to find out whether the records they read were truncated; followers get the same answer
//! from Fetch's diverging epoch. A `current_leader_epoch` older than this leader's gets
//! FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{topic_name, topic_str};
use crate::cluster::{image, owner_shard, partition_manager};
use crate::protocol::Request;
use crate::runtime;

/// (error, leader epoch, end offset)
type Answer = (i16, i32, i64);

const UNDEFINED: Answer = (0, -1, -1);

pub async fn handle(
    _req: &Request,
    body: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let img = image();
    let shards = runtime::nr_shards();
    let mut answers: Vec<Option<Answer>> = Vec::new();
    let mut work = Vec::new();
    for t in &body.topics {
        let name = topic_str(&t.topic);
        for p in &t.partitions {
            let slot = answers.len();
            if img.partition(&name, p.partition).is_none() {
                answers.push(Some((
                    ResponseError::UnknownTopicOrPartition.code(),
                    -1,
                    -1,
                )));
                continue;
            }
            answers.push(None);
            // v2+ (all versions served) carry the epoch the client believes current.
            work.push((
                owner_shard(&name, p.partition, shards),
                (
                    slot,
                    name.clone(),
                    p.partition,
                    p.current_leader_epoch,
                    p.leader_epoch,
                ),
            ));
        }
    }
    super::gather_on_owners(work, &mut answers, "offset-for-leader-epoch", on_owner).await;
    let mut resp = OffsetForLeaderEpochResponse::default();
    let mut it = answers.into_iter();
    for t in &body.topics {
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic_name(&topic_str(&t.topic));
        for p in &t.partitions {
            let (error, epoch, end) =
                it.next()
                    .flatten()
                    .unwrap_or((ResponseError::UnknownServerError.code(), -1, -1));
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.error_code = error;
            e.leader_epoch = epoch;
            e.end_offset = end;
            out.partitions.push(e);
        }
        resp.topics.push(out);
    }
    resp
}

async fn on_owner(items: Vec<(usize, String, i32, i32, i32)>) -> Vec<(usize, Answer)> {
    let mut out = Vec::with_capacity(items.len());
    for (slot, topic, index, current, asked) in items {
        let a = match partition_manager::get(&topic, index).await {
            Ok(Some(p)) => {
                let ours = p.replica.borrow().leader_epoch;
                if current >= 0 && current < ours {
                    (ResponseError::FencedLeaderEpoch.code(), -1, -1)
                } else if current > ours {
                    (ResponseError::UnknownLeaderEpoch.code(), -1, -1)
                } else if asked < 0 {
                    UNDEFINED
                } else {
                    let (epoch, end) = p.log.end_offset_for_epoch(asked);
                    (0, epoch, end)
                }
            }
            Ok(None) => (ResponseError::UnknownTopicOrPartition.code(), -1, -1),
            Err(e) => (super::produce::storage_error(&e).code(), -1, -1),
        };
        out.push((slot, a));
    }
    out
}
