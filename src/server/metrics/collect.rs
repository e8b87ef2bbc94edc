//! One scrape: every shard's counters and figures, fetched with `runtime::submit_to` and
//! added up, plus what is process-wide (log dirs, replication, quorum, connections), written
//! as metric families (docs/metrics.md lists them all).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kafka_protocol::messages::ApiKey;

use super::render::{error_name, Exposition, Kind};
use super::{ApiCounters, TopicCounters};
use crate::runtime::histogram::LatencyHistogram;
use crate::runtime::{self, stall};

/// Most per-partition lag series one scrape writes, all groups together; past it only the
/// per-group sum is written (and `sluice_consumer_group_lag_series_dropped` says how many
/// were left out).
pub const MAX_LAG_SERIES: usize = 10_000;

/// What one shard hands back for a scrape.
struct ShardFigures {
    topics: Vec<(String, TopicCounters)>,
    apis: Vec<(i16, ApiCounters)>,
    stall: stall::ShardFigures,
    groups: Vec<crate::group::coordinator::GroupFigures>,
    /// (topic, partition) -> high watermark, for the partitions open on the shard.
    ends: Vec<((String, i32), i64)>,
    /// (partition dir, bytes, segments) of the partitions open on the shard.
    logs: Vec<(PathBuf, u64, usize)>,
}

fn shard_figures() -> ShardFigures {
    let img = crate::cluster::image();
    let exists = |t: &str| img.topics.contains_key(t);
    let (topics, apis) = super::shard_snapshot(&exists);
    let open = crate::cluster::partition_manager::open_partitions();
    ShardFigures {
        topics,
        apis,
        stall: stall::figures(),
        groups: crate::group::coordinator::figures(),
        ends: open
            .iter()
            .map(|p| ((p.topic.clone(), p.index), p.high_watermark()))
            .collect(),
        logs: open
            .iter()
            .map(|p| {
                let log = &p.log;
                (
                    log.dir().to_path_buf(),
                    log.size_bytes(),
                    log.segment_count(),
                )
            })
            .collect(),
    }
}

/// The whole exposition text. On a shard (the admin listener's, shard 0).
pub async fn scrape(openmetrics: bool) -> String {
    let img = crate::cluster::image();
    super::forget_deleted_topics(&|t: &str| img.topics.contains_key(t));
    let calls =
        (0..runtime::nr_shards()).map(|sh| runtime::submit_to(sh, || async { shard_figures() }));
    let shards: Vec<(usize, ShardFigures)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.ok().map(|f| (i, f)))
        .collect();
    let replication = crate::cluster::stats::gather().await;
    let mut e = Exposition::new(openmetrics);
    broker(&mut e);
    topics(&mut e, &shards);
    apis(&mut e, &shards);
    groups(&mut e, &shards);
    replication_families(&mut e, &replication, &img);
    storage(&mut e, &shards);
    runtime_families(&mut e, &shards);
    e.finish()
}

fn broker(e: &mut Exposition) {
    let now = crate::server::admin::health::state();
    e.family(
        "sluice_broker_state",
        Kind::Gauge,
        "1 for the broker's current state (starting, serving, stopping), 0 for the others",
    );
    for s in crate::server::admin::health::BrokerState::ALL {
        let v = if s == now { 1.0 } else { 0.0 };
        e.sample("sluice_broker_state", &[("state", s.name())], v);
    }
}

fn topics(e: &mut Exposition, shards: &[(usize, ShardFigures)]) {
    let mut sum: BTreeMap<&str, TopicCounters> = BTreeMap::new();
    for (_, s) in shards {
        for (t, c) in &s.topics {
            sum.entry(t.as_str()).or_default().add(c);
        }
    }
    type Field = fn(&TopicCounters) -> u64;
    let families: [(&str, &str, Field); 7] = [
        (
            "sluice_topic_bytes_in_total",
            "record-set bytes appended by producers",
            |c| c.bytes_in,
        ),
        (
            "sluice_topic_bytes_out_total",
            "record bytes sent to consumers (follower fetches not included)",
            |c| c.bytes_out,
        ),
        (
            "sluice_topic_records_in_total",
            "records appended by producers",
            |c| c.records_in,
        ),
        (
            "sluice_topic_produce_requests_total",
            "partitions named by Produce requests",
            |c| c.produce_requests,
        ),
        (
            "sluice_topic_produce_failures_total",
            "partitions of Produce requests answered with an error",
            |c| c.produce_failures,
        ),
        (
            "sluice_topic_fetch_requests_total",
            "partitions named by consumer Fetch requests",
            |c| c.fetch_requests,
        ),
        (
            "sluice_topic_fetch_failures_total",
            "partitions of consumer Fetch requests answered with an error",
            |c| c.fetch_failures,
        ),
    ];
    for (name, help, field) in families {
        e.family(name, Kind::Counter, help);
        for (t, c) in &sum {
            e.sample(name, &[("topic", t)], field(c) as f64);
        }
    }
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("api{key}"),
    }
}

fn apis(e: &mut Exposition, shards: &[(usize, ShardFigures)]) {
    let mut sum: BTreeMap<i16, ApiCounters> = BTreeMap::new();
    for (_, s) in shards {
        for (k, c) in &s.apis {
            sum.entry(*k).or_default().add(c);
        }
    }
    let named: Vec<(String, &ApiCounters)> = sum.iter().map(|(k, c)| (api_name(*k), c)).collect();
    e.family(
        "sluice_requests_total",
        Kind::Counter,
        "requests by API and error (Produce/Fetch: first partition error; a request that closed its connection: INVALID_REQUEST or UNSUPPORTED_VERSION)",
    );
    for (api, c) in &named {
        let mut by_error = c.by_error.clone();
        by_error.sort_unstable();
        for (code, n) in by_error {
            let err = error_name(code);
            e.sample(
                "sluice_requests_total",
                &[("api", api), ("error", &err)],
                n as f64,
            );
        }
    }
    e.family(
        "sluice_request_latency_seconds",
        Kind::Histogram,
        "request frame read to answer written, by API",
    );
    for (api, c) in &named {
        e.histogram(
            "sluice_request_latency_seconds",
            &[("api", api)],
            &c.latency,
        );
    }
    type Field = fn(&ApiCounters) -> f64;
    let counters: [(&str, &str, Field); 5] = [
        ("sluice_request_bytes_total", "request frame bytes, by API", |c| c.request_bytes as f64),
        ("sluice_response_bytes_total", "response frame bytes, by API", |c| c.response_bytes as f64),
        ("sluice_request_queue_seconds_total", "time waiting for queued.max.request.bytes and reading the frame, by API", |c| c.queue_us as f64 / 1e6),
        ("sluice_request_handle_seconds_total", "time in the request's handler, by API", |c| c.handle_us as f64 / 1e6),
        ("sluice_request_respond_seconds_total", "time from handled to answer written (fsync, replication, earlier answers, sending), by API", |c| c.respond_us as f64 / 1e6),
    ];
    for (name, help, field) in counters {
        e.family(name, Kind::Counter, help);
        for (api, c) in &named {
            e.sample(name, &[("api", api)], field(c));
        }
    }
}

fn groups(e: &mut Exposition, shards: &[(usize, ShardFigures)]) {
    let ends: BTreeMap<(&str, i32), i64> = shards
        .iter()
        .flat_map(|(_, s)| s.ends.iter().map(|((t, p), hw)| ((t.as_str(), *p), *hw)))
        .collect();
    let mut all: Vec<&crate::group::coordinator::GroupFigures> =
        shards.iter().flat_map(|(_, s)| s.groups.iter()).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    e.family(
        "sluice_consumer_group_lag",
        Kind::Gauge,
        "log end offset (high watermark) minus committed offset, for partitions whose log is on this broker",
    );
    let mut written = 0usize;
    let mut dropped = 0usize;
    let mut sums = Vec::with_capacity(all.len());
    for g in &all {
        let mut sum = 0i64;
        for (t, p, committed) in &g.offsets {
            let Some(end) = ends.get(&(t.as_str(), *p)) else {
                continue;
            };
            let lag = (end - committed).max(0);
            sum = sum.saturating_add(lag);
            if written < MAX_LAG_SERIES {
                written += 1;
                let part = p.to_string();
                e.sample(
                    "sluice_consumer_group_lag",
                    &[("group", &g.id), ("topic", t), ("partition", &part)],
                    lag as f64,
                );
            } else {
                dropped += 1;
            }
        }
        sums.push(sum);
    }
    e.family(
        "sluice_consumer_group_lag_series_dropped",
        Kind::Gauge,
        "per-partition lag series left out of this scrape past its bound",
    );
    e.sample(
        "sluice_consumer_group_lag_series_dropped",
        &[],
        dropped as f64,
    );
    e.family(
        "sluice_consumer_group_lag_sum",
        Kind::Gauge,
        "a group's lag summed over its partitions",
    );
    for (g, sum) in all.iter().zip(&sums) {
        e.sample(
            "sluice_consumer_group_lag_sum",
            &[("group", &g.id)],
            *sum as f64,
        );
    }
    e.family(
        "sluice_consumer_group_members",
        Kind::Gauge,
        "members of a group",
    );
    for g in &all {
        e.sample(
            "sluice_consumer_group_members",
            &[("group", &g.id)],
            g.members as f64,
        );
    }
    e.family(
        "sluice_consumer_group_state",
        Kind::Gauge,
        "1 for the group's state (Empty, PreparingRebalance, CompletingRebalance, Stable, Dead)",
    );
    for g in &all {
        e.sample(
            "sluice_consumer_group_state",
            &[("group", &g.id), ("state", g.state)],
            1.0,
        );
    }
}

fn replication_families(
    e: &mut Exposition,
    r: &crate::cluster::stats::ReplicationStats,
    img: &crate::cluster::MetadataImage,
) {
    let gauges: [(&str, &str, f64); 5] = [
        (
            "sluice_under_replicated_partitions",
            "partitions led here with a replica outside the ISR",
            r.under_replicated as f64,
        ),
        (
            "sluice_under_min_isr_partitions",
            "partitions led here whose ISR is below min.insync.replicas",
            r.under_min_isr as f64,
        ),
        (
            "sluice_leader_partitions",
            "partitions led by this broker",
            r.leading as f64,
        ),
        (
            "sluice_follower_partitions",
            "partitions this broker follows",
            r.following as f64,
        ),
        (
            "sluice_follower_max_lag_offsets",
            "most offsets a follower of a partition led here is behind",
            r.max_follower_lag as f64,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, Kind::Gauge, help);
        e.sample(name, &[], v);
    }
    e.family(
        "sluice_isr_shrinks_total",
        Kind::Counter,
        "ISR shrinks this broker's leaders committed",
    );
    e.sample("sluice_isr_shrinks_total", &[], r.isr_shrinks_total as f64);
    e.family(
        "sluice_isr_expands_total",
        Kind::Counter,
        "ISR expansions this broker's leaders committed",
    );
    e.sample("sluice_isr_expands_total", &[], r.isr_expands_total as f64);
    let offline = img
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader < 0)
        .count();
    e.family(
        "sluice_offline_partitions",
        Kind::Gauge,
        "partitions of the cluster without a leader, as this broker's metadata shows",
    );
    e.sample("sluice_offline_partitions", &[], offline as f64);
    if let Some(q) = crate::cluster::quorum_handle() {
        let st = q.status();
        let leader = st.leader.map_or(-1.0, |l| l as f64);
        e.family(
            "sluice_quorum_leader_id",
            Kind::Gauge,
            "node id of the metadata quorum's leader as this node sees it (-1: none)",
        );
        e.sample("sluice_quorum_leader_id", &[], leader);
        e.family(
            "sluice_quorum_term",
            Kind::Gauge,
            "the metadata quorum's current term",
        );
        e.sample("sluice_quorum_term", &[], st.term as f64);
        e.family(
            "sluice_quorum_committed_index",
            Kind::Gauge,
            "the metadata log's committed index on this node",
        );
        e.sample(
            "sluice_quorum_committed_index",
            &[],
            st.committed_index as f64,
        );
        e.family(
            "sluice_quorum_applied_index",
            Kind::Gauge,
            "the metadata log's index applied to this node's image",
        );
        e.sample("sluice_quorum_applied_index", &[], st.applied_index as f64);
    }
}

fn storage(e: &mut Exposition, shards: &[(usize, ShardFigures)]) {
    let dirs = crate::storage::log_dirs::snapshot();
    let mut bytes = vec![0u64; dirs.len()];
    let mut segments = vec![0usize; dirs.len()];
    for (_, s) in shards {
        for (dir, b, n) in &s.logs {
            if let Some(i) = dirs.iter().position(|d| dir.starts_with(&d.path)) {
                bytes[i] = bytes[i].saturating_add(*b);
                segments[i] = segments[i].saturating_add(*n);
            }
        }
    }
    let names: Vec<String> = dirs.iter().map(|d| d.path.display().to_string()).collect();
    e.family(
        "sluice_log_dir_offline",
        Kind::Gauge,
        "1 when the log dir is offline after a disk error",
    );
    for (d, name) in dirs.iter().zip(&names) {
        let v = if d.offline.is_some() { 1.0 } else { 0.0 };
        e.sample("sluice_log_dir_offline", &[("log_dir", name)], v);
    }
    e.family(
        "sluice_log_dir_size_bytes",
        Kind::Gauge,
        "bytes of the open partitions' segments in the log dir",
    );
    for (name, b) in names.iter().zip(&bytes) {
        e.sample("sluice_log_dir_size_bytes", &[("log_dir", name)], *b as f64);
    }
    e.family(
        "sluice_log_dir_segments",
        Kind::Gauge,
        "segments of the open partitions in the log dir",
    );
    for (name, n) in names.iter().zip(&segments) {
        e.sample("sluice_log_dir_segments", &[("log_dir", name)], *n as f64);
    }
    let mut fsync = LatencyHistogram::new();
    for (_, s) in shards {
        fsync.merge(&s.stall.fsync);
    }
    e.family(
        "sluice_fsync_latency_seconds",
        Kind::Histogram,
        "duration of a partition's fsync (acks=all, flush policy), all shards",
    );
    e.histogram("sluice_fsync_latency_seconds", &[], &fsync);
}

fn runtime_families(e: &mut Exposition, shards: &[(usize, ShardFigures)]) {
    e.family(
        "sluice_connections",
        Kind::Gauge,
        "connections open now, by listener",
    );
    let kafka = crate::server::limits::open_connections() as f64;
    e.sample("sluice_connections", &[("listener", "kafka")], kafka);
    let admin = crate::server::admin::open_connections() as f64;
    e.sample("sluice_connections", &[("listener", "admin")], admin);
    // The stall detector's figures, by shard, when it runs (`stall.detector.interval.ms`).
    let on: Vec<(String, &stall::ShardFigures)> = shards
        .iter()
        .filter(|(_, s)| s.stall.enabled)
        .map(|(i, s)| (i.to_string(), &s.stall))
        .collect();
    if on.is_empty() {
        return;
    }
    e.family(
        "sluice_stall_slow_polls_total",
        Kind::Counter,
        "task polls longer than stall.detector.threshold.us, by shard",
    );
    for (sh, s) in &on {
        e.sample(
            "sluice_stall_slow_polls_total",
            &[("shard", sh)],
            s.slow_polls_total as f64,
        );
    }
    type Field = fn(&stall::StallReport) -> Option<std::time::Duration>;
    let gauges: [(&str, &str, Field); 4] = [
        (
            "sluice_stall_longest_poll_seconds",
            "longest task poll of the detector's last interval, by shard",
            |r| Some(r.max_poll),
        ),
        (
            "sluice_stall_longest_poll_cpu_seconds",
            "most CPU time one task poll used in the last interval, by shard",
            |r| Some(r.max_poll_cpu),
        ),
        (
            "sluice_stall_longest_tick_lateness_seconds",
            "longest lateness of the 1 ms timer tick in the last interval, by shard",
            |r| Some(r.max_tick_lateness),
        ),
        (
            "sluice_stall_runqueue_wait_seconds",
            "time the shard thread waited on the kernel's run queue in the last interval, by shard",
            |r| r.runqueue_total,
        ),
    ];
    for (name, help, field) in gauges {
        e.family(name, Kind::Gauge, help);
        for (sh, s) in &on {
            if let Some(d) = s.last.as_ref().and_then(field) {
                e.sample(name, &[("shard", sh)], d.as_secs_f64());
            }
        }
    }
}
