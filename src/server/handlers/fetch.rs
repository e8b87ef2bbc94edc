//! Fetch: read whole batches from each partition's owner shard, up to the
//! per-partition and per-response byte limits, and long-poll: when fewer than
//! `min_bytes` are ready, wait (up to `max_wait_ms`) for an append on any of
//! the requested partitions, then read again.
//!
//! READ_COMMITTED fetches (isolation_level 1) read only below the last stable
//! offset, wait at it as others wait at the high watermark, and get the
//! aborted transactions of the range returned (`storage/log_txn.rs`); every
//! response carries the last stable offset.
//!
//! Fetch sessions (KIP-227) are refused the way Kafka allows: every response
//! carries session id 0, so clients keep sending full fetch requests; an
//! incremental fetch naming a session gets FETCH_SESSION_ID_NOT_FOUND.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};

use super::{by_shard, topic_name, topic_str};
use crate::cluster::{image, owner_shard, partition_manager, throttle};
use crate::protocol::parts::{stand_in, Piece, MAX_SPLICE_LEN};
use crate::protocol::Request;
use crate::runtime;
use crate::storage::FetchRecords;

/// Records at least this long are sent from their own buffer instead of
/// being copied into the response (`protocol::parts`).
const OWN_PART_MIN_BYTES: usize = 64 << 10;

/// With `fetch.splice.enable`, reads from segment files at least this long
/// are spliced to the socket (`runtime::splice`); shorter ones are copied,
/// which costs less than the splice round trips.
const SPLICE_MIN_BYTES: usize = 32 << 10;

/// One partition to read: its slot in the response, name, index, offset, byte limit.
#[derive(Clone)]
struct Want {
    slot: usize,
    topic: String,
    index: i32,
    offset: i64,
    max_bytes: usize,
    /// isolation_level 1 (READ_COMMITTED): read only below the last stable offset.
    read_committed: bool,
    /// A follower's fetch (its node id): reads up to the log end, reports its progress to
    /// the leader, and is checked for a diverging epoch.
    replica: Option<i32>,
    /// The leader epoch the client believes current (-1: unknown; KIP-320).
    current_leader_epoch: i32,
    /// Epoch of the last batch the follower holds (-1: none sent).
    last_fetched_epoch: i32,
}

/// What the owner shard read for one partition.
struct Got {
    error: i16,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    records: FetchRecords,
    /// (producer id, first offset) of the aborted transactions overlapping `records`; None for
    /// READ_UNCOMMITTED (Kafka sends a null array then).
    aborted: Option<Vec<(i64, i64)>>,
    /// For a follower whose log diverged from the leader's: the leader's (epoch, end
    /// offset) for the follower's last epoch (KIP-320); no records then.
    diverging: Option<(i32, i64)>,
}

impl Got {
    fn error(error: i16, high_watermark: i64, log_start_offset: i64) -> Got {
        Got {
            error,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset,
            records: FetchRecords::Mem(Bytes::new()),
            aborted: None,
            diverging: None,
        }
    }
}

/// The response, and the records in it that go out as their own parts
/// (file ranges behind stand-ins, large in-memory records), in response
/// order (`protocol::parts`).
pub async fn handle(req: &Request, body: FetchRequest) -> (FetchResponse, Vec<Piece>) {
    let mut resp = FetchResponse::default();
    let mut pieces = Vec::new();
    if req.version >= 7 && body.session_id != 0 {
        resp.error_code = ResponseError::FetchSessionIdNotFound.code();
        return (resp, pieces);
    }
    let img = image();
    let shards = runtime::nr_shards();
    let mut wants = Vec::new();
    let mut slots = 0usize;
    let read_committed = req.version >= 4 && body.isolation_level == 1;
    // A broker's follower fetch names its node id (Fetch v0-v14 `replica_id`).
    let replica = (body.replica_id.0 >= 0).then_some(body.replica_id.0);
    // Response-level byte limit: the client's (Fetch v3+), capped by
    // fetch.max.bytes as Kafka does; it also caps each partition's limit.
    let client_max_bytes = if req.version >= 3 {
        body.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let max_bytes = client_max_bytes.min(partition_manager::broker_config().fetch_max_bytes);
    for t in &body.topics {
        let name = topic_str(&t.topic);
        for p in &t.partitions {
            let slot = slots;
            slots += 1;
            wants.push(Want {
                slot,
                topic: name.clone(),
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_bytes),
                read_committed: read_committed && replica.is_none(),
                replica,
                current_leader_epoch: if req.version >= 9 {
                    p.current_leader_epoch
                } else {
                    -1
                },
                last_fetched_epoch: if req.version >= 12 {
                    p.last_fetched_epoch
                } else {
                    -1
                },
            });
        }
    }
    let (known, unknown): (Vec<Want>, Vec<Want>) = wants
        .into_iter()
        .partition(|w| img.partition(&w.topic, w.index).is_some());
    // Capped by fetch.max.wait.cap.ms: the connection is not read while its
    // fetch waits, so a close is only seen when the wait ends.
    let max_wait = Duration::from_millis(
        (body.max_wait_ms.max(0) as u64)
            .min(partition_manager::broker_config().fetch_max_wait_cap_ms),
    );
    let deadline = Instant::now() + max_wait;
    let min_bytes = body.min_bytes.max(0) as usize;

    let mut got: Vec<Option<Got>> = (0..slots).map(|_| None).collect();
    loop {
        let results = read_all(&known, shards, max_bytes).await;
        let ready: usize = results.iter().map(|(_, g)| g.records.len()).sum();
        let any_error = results.iter().any(|(_, g)| g.error != 0);
        for (slot, g) in results {
            got[slot] = Some(g);
        }
        let now = Instant::now();
        if ready >= min_bytes || any_error || now >= deadline || known.is_empty() {
            break;
        }
        wait_for_append(&known, &got, shards, deadline - now).await;
    }
    for w in &unknown {
        got[w.slot] = Some(Got::error(
            ResponseError::UnknownTopicOrPartition.code(),
            -1,
            -1,
        ));
    }

    // Response-level byte limit, in request order; the first non-empty
    // partition is always returned whole (KIP-74) so a large batch never stalls.
    let mut budget = max_bytes;
    let mut next_slot = 0;
    let mut first = true;
    for t in &body.topics {
        let name = topic_str(&t.topic);
        let mut out = FetchableTopicResponse::default();
        out.topic = topic_name(&name);
        for p in &t.partitions {
            // Slots were numbered in this same topic/partition order.
            let slot = next_slot;
            next_slot += 1;
            let g = got
                .get_mut(slot)
                .and_then(Option::take)
                .unwrap_or(Got::error(ResponseError::UnknownServerError.code(), -1, -1));
            let mut aborted = g.aborted;
            let mut records = Bytes::new();
            if !g.records.is_empty() {
                if first || g.records.len() <= budget {
                    budget = budget.saturating_sub(g.records.len());
                    first = false;
                    records = match g.records {
                        FetchRecords::Mem(b) => {
                            if b.len() >= OWN_PART_MIN_BYTES {
                                pieces.push(Piece::Mem(b.clone()));
                            }
                            b
                        }
                        FetchRecords::File(r) => match stand_in(r.len) {
                            Some(b) => {
                                pieces.push(Piece::File(r));
                                b
                            }
                            // read_partition keeps ranges within the limit.
                            None => Bytes::new(),
                        },
                    };
                } else {
                    aborted = aborted.map(|_| Vec::new());
                }
            }
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            pd.error_code = g.error;
            pd.high_watermark = g.high_watermark;
            pd.last_stable_offset = g.last_stable_offset;
            pd.aborted_transactions = aborted.map(|list| {
                list.into_iter()
                    .map(|(producer_id, first_offset)| {
                        let mut a = AbortedTransaction::default();
                        a.producer_id = ProducerId(producer_id);
                        a.first_offset = first_offset;
                        a
                    })
                    .collect()
            });
            if req.version >= 5 {
                pd.log_start_offset = g.log_start_offset;
            }
            if let (Some((epoch, end_offset)), true) = (g.diverging, req.version >= 12) {
                pd.diverging_epoch.epoch = epoch;
                pd.diverging_epoch.end_offset = end_offset;
            }
            if replica.is_none() {
                let (error, bytes) = (pd.error_code, records.len() as u64);
                crate::server::metrics::count_topic(&name, |c| {
                    c.fetch_requests += 1;
                    c.fetch_failures += u64::from(error != 0);
                    c.bytes_out += bytes;
                });
            }
            pd.records = Some(records);
            out.partitions.push(pd);
        }
        resp.responses.push(out);
    }
    (resp, pieces)
}

/// Reads every wanted partition on its owner shard. Each shard reads its
/// partitions in request order with `max_bytes` between them (at least one
/// whole batch, KIP-74), so one fetch holds at most shards x (`max_bytes` +
/// a batch) of records however many partitions it names. When the
/// partitions' own limits add up to no more than `max_bytes`, a shard reads
/// them all at once (the bound is then their sum plus a batch each).
async fn read_all(wants: &[Want], shards: usize, max_bytes: usize) -> Vec<(usize, Got)> {
    let work = wants
        .iter()
        .map(|w| (owner_shard(&w.topic, w.index, shards), w.clone()))
        .collect();
    let calls = by_shard(work)
        .into_iter()
        .map(|(shard, items)| runtime::submit_to(shard, move || read_on_owner(items, max_bytes)));
    let mut out = Vec::new();
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(v) => out.extend(v),
            Err(e) => tracing::error!(error = %e, "fetch hop failed"),
        }
    }
    out
}

async fn read_on_owner(items: Vec<Want>, max_bytes: usize) -> Vec<(usize, Got)> {
    // When every partition's limit fits in the shard's share, the budget
    // cannot run out, so the reads go to the disk together: a catch-up
    // consumer's partitions are read at queue depth N instead of one by one.
    let fits = items
        .iter()
        .try_fold(0usize, |sum, w| sum.checked_add(w.max_bytes))
        .is_some_and(|sum| sum <= max_bytes);
    if fits && items.len() > 1 {
        let reads = items.into_iter().map(|w| async move {
            let g = read_item(&w, Some(w.max_bytes)).await;
            (w.slot, g)
        });
        return futures::future::join_all(reads).await;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut left = max_bytes;
    let mut read_any = false;
    for w in items {
        // Until this shard has returned records, a read may return one
        // batch larger than what is left (KIP-74).
        let spent = read_any && left == 0;
        let g = read_item(&w, (!spent).then(|| w.max_bytes.min(left))).await;
        left = left.saturating_sub(g.records.len());
        read_any |= !g.records.is_empty();
        out.push((w.slot, g));
    }
    out
}

/// Looks the partition up on this (its owner) shard and reads it.
async fn read_item(w: &Want, max_bytes: Option<usize>) -> Got {
    match partition_manager::get(&w.topic, w.index).await {
        Ok(Some(p)) => read_partition(&p, w, max_bytes).await,
        Ok(None) => Got::error(ResponseError::UnknownTopicOrPartition.code(), -1, -1),
        Err(e) => Got::error(super::produce::storage_error(&e).code(), -1, -1),
    }
}

/// Reads one partition: below the high watermark, or below the last stable offset for
/// READ_COMMITTED, which also gets the aborted transactions of the returned range (Kafka's
/// upper bound there is the offset after the last batch returned).
/// `max_bytes` None: this shard's share of the response is spent; only the
/// partition's offsets are reported.
async fn read_partition(
    p: &partition_manager::Partition,
    w: &Want,
    max_bytes: Option<usize>,
) -> Got {
    let hw = p.high_watermark();
    let lso = p.log.last_stable_offset().min(hw);
    let log_start = p.log.log_start_offset();
    if w.current_leader_epoch >= 0 {
        // KIP-320: a client or follower a leader epoch behind refreshes its metadata; one
        // ahead of this broker waits for this broker to learn the new epoch.
        let ours = p.replica.borrow().leader_epoch;
        if w.current_leader_epoch < ours {
            return Got::error(ResponseError::FencedLeaderEpoch.code(), hw, log_start);
        }
        if w.current_leader_epoch > ours {
            return Got::error(ResponseError::UnknownLeaderEpoch.code(), hw, log_start);
        }
    }
    let empty = |diverging| Got {
        error: 0,
        high_watermark: hw,
        last_stable_offset: lso,
        log_start_offset: log_start,
        records: FetchRecords::Mem(Bytes::new()),
        aborted: w.read_committed.then(Vec::new),
        diverging,
    };
    if let Some(id) = w.replica {
        if w.last_fetched_epoch >= 0 {
            let (epoch, end) = p.log.end_offset_for_epoch(w.last_fetched_epoch);
            if epoch < w.last_fetched_epoch || end < w.offset {
                return empty(Some((epoch, end)));
            }
        }
        if w.offset <= p.log.log_end_offset() && w.offset >= log_start {
            crate::cluster::leader::on_follower_fetch(p, id, w.offset);
        }
    }
    let hw = p.high_watermark();
    let Some(max_bytes) = max_bytes else {
        return empty(None);
    };
    // Replication throttle (cluster/throttle.rs): a follower out of the ISR that the topic
    // names for this leader gets no records while this shard's throttled traffic is over
    // its share of the rate.
    let throttled = match w.replica {
        Some(id) if !p.replica.borrow().isr.contains(&id) => leader_throttle(p),
        _ => None,
    };
    let mut max_bytes = max_bytes;
    if let Some(rate) = throttled {
        let cfg = partition_manager::broker_config();
        match throttle::allowance(&cfg, true, rate, runtime::now_ms()) {
            0 => return empty(None),
            // A whole first batch still comes (KIP-74): the overshoot is one batch.
            left => max_bytes = max_bytes.min(usize::try_from(left).unwrap_or(usize::MAX)),
        }
    }
    // Followers read everything the leader holds; consumers what is committed.
    let bound = if w.replica.is_some() {
        p.log.log_end_offset()
    } else if w.read_committed {
        lso
    } else {
        hw
    };
    let splice = partition_manager::broker_config().fetch_splice && runtime::splice::available();
    let splice_min = splice.then_some(SPLICE_MIN_BYTES);
    let read = match p
        .log
        .read_records(w.offset, max_bytes, bound, splice_min)
        .await
    {
        Ok(FetchRecords::File(r)) if r.len > MAX_SPLICE_LEN => p
            .log
            .read(w.offset, max_bytes, bound)
            .await
            .map(FetchRecords::Mem),
        other => other,
    };
    let records = match read {
        Ok(FetchRecords::File(r)) => {
            runtime::splice::prefetch(&r.fd, r.pos, r.len);
            FetchRecords::File(r)
        }
        Ok(records) => records,
        Err(e) => return Got::error(super::produce::storage_error(&e).code(), hw, log_start),
    };
    if let Some(rate) = throttled {
        let bytes = match &records {
            FetchRecords::Mem(b) => b.len() as u64,
            FetchRecords::File(r) => r.len as u64,
        };
        let cfg = partition_manager::broker_config();
        throttle::record(&cfg, true, rate, bytes, runtime::now_ms());
    }
    let aborted = if !w.read_committed {
        None
    } else {
        let upper = match &records {
            FetchRecords::Mem(bytes) => {
                crate::storage::batches_end_offset(bytes).unwrap_or(w.offset)
            }
            FetchRecords::File(r) => r.end_offset,
        };
        match p.log.aborted_transactions(w.offset, upper) {
            Ok(list) => Some(list),
            Err(e) => return Got::error(super::produce::storage_error(&e).code(), hw, log_start),
        }
    };
    Got {
        error: 0,
        high_watermark: hw,
        last_stable_offset: lso,
        log_start_offset: log_start,
        records,
        aborted,
        diverging: None,
    }
}

/// The leader's throttle rate for `p` when its topic names this broker in
/// `leader.replication.throttled.replicas` and a rate is set; None otherwise.
fn leader_throttle(p: &partition_manager::Partition) -> Option<u64> {
    let cfg = partition_manager::broker_config();
    let img = crate::cluster::image();
    let rate = throttle::rate(&img, &cfg, throttle::LEADER_RATE);
    (rate != throttle::UNLIMITED
        && throttle::listed(
            &img,
            &p.topic,
            throttle::LEADER_REPLICAS,
            p.index,
            cfg.node_id,
        ))
    .then_some(rate)
}

/// Waits until any requested partition has data past its fetch offset, or
/// `wait` passes. Each owner shard checks and registers in one step, so an
/// append between our read and the wait is never missed.
async fn wait_for_append(wants: &[Want], got: &[Option<Got>], shards: usize, wait: Duration) {
    let work = wants
        .iter()
        .map(|w| {
            // Wait for data past what we already hold for this partition.
            let held = got
                .get(w.slot)
                .and_then(|g| g.as_ref())
                .map(|g| g.records.len())
                .unwrap_or(0);
            let mut w = w.clone();
            if held > 0 {
                w.offset = i64::MAX;
            }
            (owner_shard(&w.topic, w.index, shards), w)
        })
        .collect();
    let waits: Vec<_> = by_shard(work)
        .into_iter()
        .map(|(shard, items)| {
            Box::pin(runtime::submit_to(shard, move || {
                wait_on_owner(items, wait)
            }))
        })
        .collect();
    if waits.is_empty() {
        return;
    }
    let _ = futures::future::select_all(waits).await;
}

async fn wait_on_owner(items: Vec<Want>, wait: Duration) {
    let mut parts = Vec::new();
    for w in &items {
        if let Ok(Some(p)) = partition_manager::get(&w.topic, w.index).await {
            parts.push((p, w.offset, w.read_committed, w.replica.is_some()));
        }
    }
    let notified: Vec<_> = parts
        .iter()
        .map(|(p, _, _, _)| Box::pin(p.appended.notified()))
        .collect();
    // READ_COMMITTED readers wait for the last stable offset to pass them (a marker appended
    // fires `appended` too), followers for the log end, others for the high watermark.
    let readable = |p: &partition_manager::Partition, committed: bool, follower: bool| {
        if follower {
            p.log.log_end_offset()
        } else if committed {
            p.log.last_stable_offset().min(p.high_watermark())
        } else {
            p.high_watermark()
        }
    };
    if parts
        .iter()
        .any(|(p, off, c, f)| readable(p, *c, *f) > *off)
        || notified.is_empty()
    {
        return;
    }
    let _ = runtime::timeout(wait, futures::future::select_all(notified)).await;
}
