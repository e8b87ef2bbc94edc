//! The leader's side of replication, on the partition's owner shard: what a follower's
//! fetch tells the leader, waiting for the ISR before an acks=all answer, and the ISR
//! changes the leader asks the controller for (Kafka's AlterPartition, here a
//! `ChangePartition` record with the partition epoch as compare-and-set token, proposed to
//! the metadata quorum from any broker).

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::partition_manager::{self, broker_config, Partition};
use super::records::MetadataRecord;
use super::{controller, image};
use crate::runtime;

/// A follower (`replica`) fetched from `fetch_offset`: records its progress and wakes what
/// waits for the high watermark when it moved.
pub fn on_follower_fetch(p: &Partition, replica: i32, fetch_offset: i64) {
    let end = p.log.log_end_offset();
    let moved =
        p.replica
            .borrow_mut()
            .on_follower_fetch(replica, fetch_offset, end, runtime::now_ms());
    if moved {
        p.appended.notify_all();
    }
}

/// Why an acks=all append was not acknowledged.
pub fn replication_refusal(p: &Partition) -> Option<(ResponseError, String)> {
    let r = p.replica.borrow();
    if !r.is_leader() {
        return Some((
            ResponseError::NotLeaderOrFollower,
            format!("{}-{} lost its leadership here", p.topic, p.index),
        ));
    }
    (r.isr_size() < r.min_isr).then(|| {
        (
            ResponseError::NotEnoughReplicasAfterAppend,
            format!(
                "the records were written but the in-sync replica set shrank to {} member(s), below min.insync.replicas={}",
                r.isr_size(),
                r.min_isr
            ),
        )
    })
}

/// Waits until every offset up to `last_offset` is below the high watermark (every in-sync
/// replica has it), the leadership is lost, the ISR falls below `min.insync.replicas`, or
/// `timeout` passes. A partition with one replica returns at once.
pub async fn wait_replicated(
    p: &Rc<Partition>,
    last_offset: i64,
    timeout: Duration,
) -> Result<(), (ResponseError, String)> {
    if !p.replica.borrow().replicated() {
        return Ok(());
    }
    let generation = p.role_generation.get();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let woken = p.appended.notified();
        if p.high_watermark() > last_offset {
            return Ok(());
        }
        if p.role_generation.get() != generation {
            return Err((
                ResponseError::NotLeaderOrFollower,
                format!(
                    "{}-{} changed leader while the records replicated",
                    p.topic, p.index
                ),
            ));
        }
        if let Some(refusal) = replication_refusal(p) {
            return Err(refusal);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || runtime::timeout(left, woken).await.is_none() {
            return Err((
                ResponseError::RequestTimedOut,
                format!(
                    "the in-sync replicas of {}-{} did not all reach offset {last_offset} in {} ms",
                    p.topic,
                    p.index,
                    timeout.as_millis()
                ),
            ));
        }
    }
}

/// Every shard's ISR upkeep: for each partition it leads, drops followers that lag longer
/// than `replica.lag.time.max.ms` from the ISR and adds back those caught up, one change
/// per partition at a time.
pub async fn isr_loop() {
    let cfg = broker_config();
    let lag_max = cfg.cluster.replication.lag_time_max_ms;
    let tick = Duration::from_millis((lag_max / 4).clamp(50, 500));
    loop {
        runtime::sleep(tick).await;
        if !super::multi_node() {
            continue;
        }
        for p in partition_manager::open_partitions() {
            check_isr(&p, lag_max as i64);
        }
    }
}

/// Proposes the ISR change `p` needs now, if any (see [`isr_loop`]).
pub fn check_isr(p: &Rc<Partition>, lag_max_ms: i64) {
    let now = runtime::now_ms();
    let (want, epoch, me) = {
        let r = p.replica.borrow();
        if !r.replicated() {
            return;
        }
        let Some(want) = r.wanted_isr(now, lag_max_ms) else {
            return;
        };
        (want, r.partition_epoch, r.node)
    };
    let img = image();
    let Some(t) = img.topic(&p.topic) else {
        return;
    };
    let old = p.replica.borrow().isr.clone();
    p.replica.borrow_mut().set_pending(want.clone());
    let record = MetadataRecord::ChangePartition {
        name: p.topic.clone(),
        id: t.id,
        partition: p.index,
        partition_epoch: epoch,
        leader: me,
        isr: want.clone(),
    };
    let p = Rc::clone(p);
    runtime::spawn(async move {
        let shrink = want.len() < old.len();
        match controller::propose_committed(vec![record]).await {
            Ok((_, outcomes)) if outcomes.iter().all(Result::is_ok) => {
                super::stats::count_isr_change(shrink);
                tracing::info!(topic = %p.topic, partition = p.index, from = ?old, to = ?want,
                    "{}", if shrink { "ISR shrunk" } else { "ISR expanded" });
            }
            Ok((_, outcomes)) => {
                let why = outcomes
                    .into_iter()
                    .find_map(Result::err)
                    .map(|r| r.message)
                    .unwrap_or_default();
                tracing::info!(topic = %p.topic, partition = p.index, to = ?want, reason = %why,
                    "ISR change refused; the next image decides");
                p.replica.borrow_mut().clear_pending();
            }
            Err(r) => {
                tracing::warn!(topic = %p.topic, partition = p.index, to = ?want, reason = %r.message,
                    "ISR change not committed");
                p.replica.borrow_mut().clear_pending();
            }
        }
        p.appended.notify_all();
    });
}
