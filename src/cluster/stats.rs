//! Replication figures for the metrics endpoint (Kafka's `UnderReplicatedPartitions`,
//! `IsrShrinksPerSec` / `IsrExpandsPerSec`, `ReplicaFetcherManager MaxLag`). ISR changes are
//! rare (a lagging follower, a fence), so they are counted in process-wide atomics; the
//! per-partition figures are read from each shard's replica state when asked
//! ([`gather`]), so the data path pays nothing for them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::partition_manager;
use crate::runtime;

static ISR_SHRINKS: AtomicU64 = AtomicU64::new(0);
static ISR_EXPANDS: AtomicU64 = AtomicU64::new(0);

/// Counts an ISR change this broker's leader committed.
pub fn count_isr_change(shrink: bool) {
    let c = if shrink { &ISR_SHRINKS } else { &ISR_EXPANDS };
    c.fetch_add(1, Ordering::Relaxed);
}

/// This broker's replication figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Partitions led here with a replica outside the ISR.
    pub under_replicated: u64,
    /// Partitions led here whose ISR is below `min.insync.replicas` (acks=all refused).
    pub under_min_isr: u64,
    /// Partitions led here.
    pub leading: u64,
    /// Partitions followed here.
    pub following: u64,
    /// Largest number of offsets a follower of a partition led here is behind.
    pub max_follower_lag: i64,
    pub isr_shrinks_total: u64,
    pub isr_expands_total: u64,
}

/// Figures of the partitions open on the calling shard.
fn shard_stats() -> ReplicationStats {
    let mut s = ReplicationStats::default();
    for p in partition_manager::open_partitions() {
        let r = p.replica.borrow();
        if r.is_leader() {
            s.leading += 1;
            s.under_replicated += u64::from(r.under_replicated());
            s.under_min_isr += u64::from(r.replicated() && r.isr_size() < r.min_isr);
            let end = p.log.log_end_offset();
            let lag = r.follower_lag(end).into_iter().map(|(_, l)| l).max();
            s.max_follower_lag = s.max_follower_lag.max(lag.unwrap_or(0));
        } else if matches!(r.role, super::replica::Role::Follower { .. }) {
            s.following += 1;
        }
    }
    s
}

/// Every shard's figures merged, with the ISR change counts. On a shard.
pub async fn gather() -> ReplicationStats {
    let calls =
        (0..runtime::nr_shards()).map(|sh| runtime::submit_to(sh, || async { shard_stats() }));
    let mut out = ReplicationStats {
        isr_shrinks_total: ISR_SHRINKS.load(Ordering::Relaxed),
        isr_expands_total: ISR_EXPANDS.load(Ordering::Relaxed),
        ..Default::default()
    };
    for s in futures::future::join_all(calls).await.into_iter().flatten() {
        out.under_replicated += s.under_replicated;
        out.under_min_isr += s.under_min_isr;
        out.leading += s.leading;
        out.following += s.following;
        out.max_follower_lag = out.max_follower_lag.max(s.max_follower_lag);
    }
    out
}
