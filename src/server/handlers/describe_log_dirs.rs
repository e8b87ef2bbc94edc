//! DescribeLogDirs: every configured log dir with its state (error 0, or KAFKA_STORAGE_ERROR
//! once offline after a disk error; see `storage/log_dirs.rs`), the partitions placed in it and
//! their sizes, and (v4+) the file system's total and usable bytes. This answer, with the error
//! log line written when a dir fails, is how an operator sees an offline dir.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

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
    for t in img.topics.values() {
        for p in &t.partitions {
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
