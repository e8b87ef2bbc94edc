//! DescribeLogDirs: every configured log dir with its state (error 0, or KAFKA_STORAGE_ERROR
//! once offline after a disk error; see `storage/log_dirs.rs`), the partitions this broker
//! hosts in it and their sizes, and (v4+) the file system's total and usable bytes. This
//! answer, with the error log line written when a dir fails, is how an operator sees an
//! offline dir.
//!
//! AlterReplicaLogDirs: moves replicas this broker hosts to another of its log dirs
//! (`cluster/dir_move.rs`); answered at once, the move runs on the partition's owner shard.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse,
};

use super::{str_bytes, topic_name, topic_str};
use crate::cluster::{image, owner_shard, partition_manager};
use crate::protocol::Request;
use crate::runtime;
use crate::storage::log_dirs;

/// Kafka's KAFKA_STORAGE_ERROR.
const KAFKA_STORAGE_ERROR: i16 = 56;

pub async fn handle(req: &Request, body: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    // Which partitions the request asks about: None means all.
    let wanted: Option<HashMap<String, Vec<i32>>> = body.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (topic_str(&t.topic), t.partitions))
            .collect()
    });
    let sizes = open_sizes().await;
    let dirs = log_dirs::snapshot();
    // Per dir index: topic -> partitions.
    let mut placed: Vec<BTreeMap<String, Vec<DescribeLogDirsPartition>>> =
        vec![BTreeMap::new(); dirs.len()];
    let img = image();
    let cfg = partition_manager::broker_config();
    let node = cfg.node_id;
    for t in img.topics.values() {
        for p in &t.partitions {
            if !cfg.cluster.single_node() && !p.replicas.contains(&node) {
                continue; // hosted by other brokers only
            }
            if let Some(w) = &wanted {
                if !w.get(&t.name).is_some_and(|ps| ps.contains(&p.index)) {
                    continue;
                }
            }
            let Some(slot) = placed.get_mut(p.log_dir) else {
                continue;
            };
            let mut dp = DescribeLogDirsPartition::default();
            dp.partition_index = p.index;
            dp.partition_size = sizes
                .get(&(t.name.clone(), p.index))
                .map_or(0, |&s| i64::try_from(s).unwrap_or(i64::MAX));
            dp.offset_lag = 0;
            slot.entry(t.name.clone()).or_default().push(dp);
        }
    }
    let mut resp = DescribeLogDirsResponse::default();
    for (d, topics) in dirs.iter().zip(placed) {
        let mut r = DescribeLogDirsResult::default();
        r.log_dir = str_bytes(&d.path.to_string_lossy());
        if d.offline.is_some() {
            // Kafka lists no partitions for an offline dir.
            r.error_code = KAFKA_STORAGE_ERROR;
        } else {
            r.topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    let mut t = DescribeLogDirsTopic::default();
                    t.name = topic_name(&name);
                    t.partitions = partitions;
                    t
                })
                .collect();
        }
        if req.version >= 4 {
            let (total, usable) = fs_space(&d.path).unwrap_or((-1, -1));
            r.total_bytes = total;
            r.usable_bytes = usable;
        }
        resp.results.push(r);
    }
    resp
}

/// Kafka's error codes of AlterReplicaLogDirs.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const REPLICA_NOT_AVAILABLE: i16 = 9;
const LOG_DIR_NOT_FOUND: i16 = 57;

/// Index in `log.dirs` of the dir named `path` (as configured, or the same directory).
fn dir_index(dirs: &[std::path::PathBuf], path: &str) -> Option<usize> {
    let p = std::path::Path::new(path);
    dirs.iter().position(|d| d == p).or_else(|| {
        let want = std::fs::canonicalize(p).ok()?;
        dirs.iter()
            .position(|d| std::fs::canonicalize(d).is_ok_and(|c| c == want))
    })
}

pub fn alter(body: AlterReplicaLogDirsRequest) -> AlterReplicaLogDirsResponse {
    let cfg = partition_manager::broker_config();
    let img = image();
    let shards = runtime::nr_shards();
    let mut by_topic: BTreeMap<String, Vec<AlterReplicaLogDirPartitionResult>> = BTreeMap::new();
    for d in &body.dirs {
        let path = d.path.as_str();
        let target = dir_index(&cfg.log_dirs, path);
        for t in &d.topics {
            let name = topic_str(&t.name);
            for &index in &t.partitions {
                let code = match target {
                    None => LOG_DIR_NOT_FOUND,
                    Some(i) if log_dirs::is_offline_index(i) => KAFKA_STORAGE_ERROR,
                    Some(i) => match img.partition(&name, index) {
                        None => UNKNOWN_TOPIC_OR_PARTITION,
                        Some((_, p))
                            if !cfg.cluster.single_node() && !p.replicas.contains(&cfg.node_id) =>
                        {
                            REPLICA_NOT_AVAILABLE
                        }
                        Some(_) => {
                            let (topic, shard) = (name.clone(), owner_shard(&name, index, shards));
                            runtime::spawn(async move {
                                let moved = runtime::submit_to(shard, move || async move {
                                    partition_manager::move_to_dir(&topic, index, i).await
                                });
                                match moved.await {
                                    Ok(Ok(())) => {}
                                    Ok(Err(e)) => {
                                        tracing::warn!(error = %format!("{e:#}"), partition = index, "moving a replica between log dirs failed")
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = ?e, "log dir move: shard unreachable")
                                    }
                                }
                            });
                            0
                        }
                    },
                };
                let mut r = AlterReplicaLogDirPartitionResult::default();
                r.partition_index = index;
                r.error_code = code;
                by_topic.entry(name.clone()).or_default().push(r);
            }
        }
    }
    let mut resp = AlterReplicaLogDirsResponse::default();
    resp.results = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = AlterReplicaLogDirTopicResult::default();
            t.topic_name = topic_name(&name);
            t.partitions = partitions;
            t
        })
        .collect();
    resp
}

/// Sizes of the logs open on every shard, by (topic, partition). A partition not yet opened
/// (lazy open) is absent and reported as 0 bytes.
async fn open_sizes() -> HashMap<(String, i32), u64> {
    let mut out = HashMap::new();
    let n = runtime::nr_shards();
    for shard in 0..n {
        match runtime::submit_to(shard, || async { partition_manager::open_sizes() }).await {
            Ok(v) => {
                for (t, p, s) in v {
                    if owner_shard(&t, p, n) == shard {
                        out.insert((t, p), s);
                    }
                }
            }
            Err(e) => tracing::warn!(shard, "describe log dirs: shard unreachable: {e:?}"),
        }
    }
    out
}

/// (total, usable) bytes of the file system holding `dir`, as Kafka reports them (v4+).
fn fs_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size() as i64;
    let total = (st.blocks() as i64).checked_mul(frag)?;
    let usable = (st.blocks_available() as i64).checked_mul(frag)?;
    Some((total, usable))
}
