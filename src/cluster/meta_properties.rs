//! `meta.properties` in every data dir, as Kafka writes it: `version`,
//! `cluster.id`, `node.id`, plus (a Sluice addition) the
//! `controller.quorum.voters` the dir's metadata log was formed with.
//!
//! It is what keeps a data dir in its cluster: a broker refuses to start on a
//! dir of another node id, of a quorum with other voters, or (once the quorum
//! has told it the cluster id) of another cluster, with a message that says
//! which and what to do. An empty dir gets the file once the cluster id is
//! known: it joins the cluster whose quorum it reaches.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

/// File name, as Kafka's.
pub const FILE: &str = "meta.properties";

/// What `meta.properties` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: String,
    pub node_id: i32,
    /// `controller.quorum.voters` as configured when the dir joined (empty: single node).
    pub voters: String,
}

/// Reads a dir's `meta.properties`, `None` if it has none.
pub fn read(dir: &Path) -> anyhow::Result<Option<MetaProperties>> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let kv: BTreeMap<&str, &str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let node_id = kv
        .get("node.id")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{} has no valid node.id", path.display()))?;
    Ok(Some(MetaProperties {
        cluster_id: kv.get("cluster.id").unwrap_or(&"").to_string(),
        node_id,
        voters: kv
            .get("controller.quorum.voters")
            .unwrap_or(&"")
            .to_string(),
    }))
}

/// Writes a dir's `meta.properties` atomically (temp file, fsync, rename, fsync dir).
pub fn write(dir: &Path, m: &MetaProperties) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = format!(
        "#Written by sluice\nversion=1\ncluster.id={}\nnode.id={}\ncontroller.quorum.voters={}\n",
        m.cluster_id, m.node_id, m.voters
    );
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Checks every data dir before the quorum starts: same node id, same voters.
pub fn check_dirs(dirs: &[std::path::PathBuf], node_id: i32, voters: &str) -> anyhow::Result<()> {
    for d in dirs {
        let Some(m) = read(d)? else { continue };
        if m.node_id != node_id {
            bail!(
                "data dir {} belongs to node {} (its {FILE}), but node.id is {node_id}: refusing to start. Start node {} on it, or use an empty data dir.",
                d.display(), m.node_id, m.node_id
            );
        }
        if m.voters != voters {
            bail!(
                "data dir {} belongs to cluster {} whose controller.quorum.voters are {:?}, but this node is configured with {:?}: refusing to start, since its metadata log would meet another quorum. Use an empty data dir to join another cluster.",
                d.display(), m.cluster_id, m.voters, voters
            );
        }
    }
    Ok(())
}

/// Once the quorum gives the cluster id: refuses dirs of another cluster and writes the
/// file where it is missing.
pub fn settle(
    dirs: &[std::path::PathBuf],
    node_id: i32,
    voters: &str,
    cluster_id: &str,
) -> anyhow::Result<()> {
    for d in dirs {
        match read(d)? {
            Some(m) if !m.cluster_id.is_empty() && m.cluster_id != cluster_id => bail!(
                "data dir {} belongs to cluster {}, but the controller quorum at {voters:?} is cluster {cluster_id}: refusing to start. Use an empty data dir to join cluster {cluster_id}.",
                d.display(), m.cluster_id
            ),
            Some(m) if m.cluster_id == cluster_id => {}
            _ => write(
                d,
                &MetaProperties {
                    cluster_id: cluster_id.to_string(),
                    node_id,
                    voters: voters.to_string(),
                },
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_nodes_voters_and_clusters() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        assert!(read(d.path()).unwrap().is_none());
        check_dirs(&dirs, 1, "1@h:1").unwrap();
        settle(&dirs, 1, "1@h:1", "abc").unwrap();
        assert_eq!(read(d.path()).unwrap().unwrap().cluster_id, "abc");
        settle(&dirs, 1, "1@h:1", "abc").unwrap();
        let e = settle(&dirs, 1, "1@h:1", "xyz").unwrap_err().to_string();
        assert!(e.contains("belongs to cluster abc"), "{e}");
        let e = check_dirs(&dirs, 2, "1@h:1").unwrap_err().to_string();
        assert!(e.contains("belongs to node 1"), "{e}");
        let e = check_dirs(&dirs, 1, "1@h:2").unwrap_err().to_string();
        assert!(e.contains("controller.quorum.voters"), "{e}");
    }
}
