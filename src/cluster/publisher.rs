//! The metadata quorum's state machine on this node: it applies each committed
//! entry's records to the image ([`records::apply_all`]), gives the partitions
//! hosted here a directory of this broker's `log.dirs`, keeps each entry's
//! outcome for the proposer, publishes the new image to the shards and wakes
//! the image listener (`listener.rs`), which makes the local logs follow.
//!
//! Runs on the quorum thread, never on a shard. Snapshots are the image as
//! JSON inside the same checked envelope as entries (version, CRC-32C,
//! length).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::quorum::StateMachine;
use super::records::{self, Outcomes};
use super::{publish, MetadataImage};

/// Outcomes kept for proposers to collect, newest last. A proposer reads its entry's
/// outcome right after the entry is applied here, so a short history is plenty.
const OUTCOMES_KEPT: usize = 1024;
/// Version byte of the snapshot envelope.
const SNAPSHOT_VERSION: u8 = 1;

static OUTCOMES: Mutex<VecDeque<(u64, Outcomes)>> = Mutex::new(VecDeque::new());
/// Wakes the image listener (capacity 1: wake-ups coalesce, the listener reads the latest).
static WAKE: OnceLock<futures::channel::mpsc::Sender<()>> = OnceLock::new();

/// Installs the image listener's wake-up channel (once, at start-up).
pub fn install_wake(tx: futures::channel::mpsc::Sender<()>) {
    let _ = WAKE.set(tx);
}

fn wake_listener() {
    if let Some(tx) = WAKE.get() {
        // Full: a wake-up is already pending and the listener reads the latest image.
        let _ = tx.clone().try_send(());
    }
}

/// The outcome of the entry applied at `index`, if it is still kept.
pub fn take_outcomes(index: u64) -> Option<Outcomes> {
    let mut kept = OUTCOMES.lock().unwrap_or_else(|p| p.into_inner());
    let at = kept.iter().position(|(i, _)| *i == index)?;
    kept.remove(at).map(|(_, o)| o)
}

fn keep_outcomes(index: u64, outcomes: Outcomes) {
    let mut kept = OUTCOMES.lock().unwrap_or_else(|p| p.into_inner());
    while kept.len() >= OUTCOMES_KEPT {
        kept.pop_front();
    }
    kept.push_back((index, outcomes));
}

/// The image as a snapshot.
pub fn encode_snapshot(img: &MetadataImage) -> Vec<u8> {
    let body = serde_json::to_vec(img).unwrap_or_default();
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a snapshot; says what is wrong with a damaged one.
pub fn decode_snapshot(bytes: &[u8]) -> anyhow::Result<MetadataImage> {
    let (head, body) = bytes.split_at_checked(9).ok_or_else(|| {
        anyhow::anyhow!("metadata snapshot of {} bytes is too short", bytes.len())
    })?;
    if head[0] != SNAPSHOT_VERSION {
        anyhow::bail!(
            "metadata snapshot version {} is not known to this broker",
            head[0]
        );
    }
    let crc = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
    if len != body.len() || crc32c::crc32c(body) != crc {
        anyhow::bail!("metadata snapshot is damaged (length or CRC mismatch)");
    }
    Ok(serde_json::from_slice(body)?)
}

/// Partitions moved to another log dir here since the state machine last placed them
/// ((topic id, partition) -> dir index): `place_local` takes them over.
static RELOCATED: std::sync::Mutex<Option<HashMap<(uuid::Uuid, i32), usize>>> =
    std::sync::Mutex::new(None);

/// Records that a hosted partition now lives in log dir `dir` (a finished AlterReplicaLogDirs
/// move) and republishes the image with it. Any image the state machine publishes later
/// places it there too.
pub fn relocate(topic_id: uuid::Uuid, partition: i32, dir: usize) {
    let mut moved = RELOCATED.lock().unwrap_or_else(|p| p.into_inner());
    moved
        .get_or_insert_with(HashMap::new)
        .insert((topic_id, partition), dir);
    super::update_published(|img| {
        let mut next = img.clone();
        if let Some(t) = next.topics.values_mut().find(|t| t.id == topic_id) {
            if let Some(p) = Arc::make_mut(t)
                .partitions
                .get_mut(usize::try_from(partition).unwrap_or(usize::MAX))
            {
                p.log_dir = dir;
            }
        }
        next
    });
    drop(moved);
}

/// The state machine handed to the quorum.
pub struct ImageMachine {
    image: MetadataImage,
    node: i32,
    log_dirs: Vec<PathBuf>,
    /// (topic id, partition) -> index into `log_dirs`, for partitions hosted here.
    dirs: HashMap<(uuid::Uuid, i32), usize>,
}

impl ImageMachine {
    pub fn new(node: i32, log_dirs: Vec<PathBuf>) -> ImageMachine {
        ImageMachine {
            image: MetadataImage::default(),
            node,
            log_dirs,
            dirs: HashMap::new(),
        }
    }

    /// Gives every partition hosted here its directory: the one that already holds it on
    /// disk, else the dir holding fewest of this broker's partitions.
    fn place_local(&mut self) {
        let mut counts = vec![0usize; self.log_dirs.len().max(1)];
        let hosted = |p: &super::PartitionMeta, node: i32| p.replicas.contains(&node);
        let mut live = std::collections::HashSet::new();
        for t in self.image.topics.values() {
            for p in t.partitions.iter().filter(|p| hosted(p, self.node)) {
                live.insert((t.id, p.index));
                if let Some(d) = self.dirs.get(&(t.id, p.index)) {
                    if let Some(c) = counts.get_mut(*d) {
                        *c += 1;
                    }
                }
            }
        }
        self.dirs.retain(|k, _| live.contains(k));
        let names: Vec<(String, uuid::Uuid)> = self
            .image
            .topics
            .values()
            .map(|t| (t.name.clone(), t.id))
            .collect();
        for (name, id) in names {
            let Some(t) = self.image.topics.get_mut(&name) else {
                continue;
            };
            let needs = t
                .partitions
                .iter()
                .any(|p| hosted(p, self.node) && self.dirs.get(&(id, p.index)) != Some(&p.log_dir));
            if !needs {
                continue;
            }
            let meta = Arc::make_mut(t);
            for p in meta.partitions.iter_mut().filter(|p| hosted(p, self.node)) {
                let dir = match self.dirs.get(&(id, p.index)) {
                    Some(d) => *d,
                    None => {
                        let sub = format!("{name}-{}", p.index);
                        let d = self
                            .log_dirs
                            .iter()
                            .position(|d| d.join(&sub).is_dir())
                            .unwrap_or_else(|| {
                                counts
                                    .iter()
                                    .enumerate()
                                    .min_by_key(|(i, c)| (**c, *i))
                                    .map_or(0, |(i, _)| i)
                            });
                        if let Some(c) = counts.get_mut(d) {
                            *c += 1;
                        }
                        self.dirs.insert((id, p.index), d);
                        d
                    }
                };
                p.log_dir = dir;
            }
        }
    }

    fn publish_now(&mut self) {
        // Held while placing and publishing, so a `relocate` lands either before (and is
        // taken over here) or after (and applied on top of this image).
        let mut moved = RELOCATED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = moved.take() {
            self.dirs.extend(m);
        }
        self.place_local();
        publish(self.image.clone());
        drop(moved);
        wake_listener();
    }
}

impl StateMachine for ImageMachine {
    fn apply(&mut self, index: u64, payload: &[u8]) {
        let outcomes = match records::decode_entry(payload) {
            Ok(recs) => {
                let out = records::apply_all(&mut self.image, &recs);
                for (r, o) in recs.iter().zip(&out) {
                    match o {
                        Ok(_) => tracing::debug!(index, record = ?r, "metadata record applied"),
                        Err(refusal) => {
                            tracing::debug!(index, record = ?r, reason = %refusal.message, "metadata record refused")
                        }
                    }
                }
                out
            }
            Err(e) => {
                // Every node skips it alike, so images stay equal.
                tracing::error!(index, error = %e, "skipping a metadata entry this broker cannot read");
                Vec::new()
            }
        };
        self.image.applied_index = index;
        keep_outcomes(index, outcomes);
        self.publish_now();
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_snapshot(&self.image)
    }

    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        self.image = decode_snapshot(snapshot)?;
        self.dirs.clear();
        self.publish_now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::{encode_entry, MetadataRecord};

    #[test]
    fn applies_places_locally_and_snapshots() {
        let dirs = tempfile::tempdir().unwrap();
        let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));
        std::fs::create_dir_all(b.join("old-0")).unwrap();
        let mut m = ImageMachine::new(1, vec![a, b]);
        let reg = |id: i32| MetadataRecord::RegisterBroker {
            id,
            incarnation: uuid::Uuid::new_v4(),
            host: "h".into(),
            port: 1,
            rack: None,
        };
        let topic = |name: &str, replicas: Vec<Vec<i32>>| MetadataRecord::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            replicas,
            configs: Default::default(),
        };
        m.apply(1, &encode_entry(&[reg(1), reg(2)]));
        m.apply(
            2,
            &encode_entry(&[
                topic("old", vec![vec![1]]),
                topic("new", vec![vec![1], vec![1], vec![2]]),
            ]),
        );
        assert_eq!(take_outcomes(2).unwrap().len(), 2);
        let img = &m.image;
        assert_eq!(
            img.topic("old").unwrap().partitions[0].log_dir,
            1,
            "found on disk"
        );
        let new = img.topic("new").unwrap();
        // Each new partition goes to the dir holding fewest: one in each.
        assert_ne!(new.partitions[0].log_dir, new.partitions[1].log_dir);
        m.apply(3, b"garbage");
        assert_eq!(take_outcomes(3), Some(Vec::new()));
        let snap = m.snapshot();
        let mut other = ImageMachine::new(1, m.log_dirs.clone());
        other.restore(&snap).unwrap();
        assert_eq!(other.image.topics.len(), 2);
        assert_eq!(other.image.applied_index, 3);
        let mut bad = snap;
        bad[12] ^= 0x40;
        assert!(other.restore(&bad).is_err());
    }
}
