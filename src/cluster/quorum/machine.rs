//! The state machine adapter (openraft's `RaftStateMachine`) around the broker's
//! [`StateMachine`], and the snapshot file.
//!
//! The adapter keeps the last applied log id and the last membership; a normal entry's payload
//! goes to `StateMachine::apply`, blank and membership entries are only tracked. The state
//! machine is transient: at start-up the snapshot file is restored into it, then openraft
//! re-applies the committed entries after it.
//!
//! `snapshot` holds the last applied log id, the membership and the state machine's bytes, in
//! one checked frame, replaced atomically. A snapshot build captures the state machine's bytes
//! when openraft asks for a builder (on the state machine task, in log order); the builder then
//! writes the file on its own task.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::OptionalSend;

use super::codec::{self, DiskLogId, DiskSnapshot, DiskStoredMembership};
use super::files::{self, StoreError, MAGIC_BYTES};
use super::types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use super::StateMachine;

/// Name of the snapshot file.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// First bytes of the snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; MAGIC_BYTES] = b"SLQSNP01";
/// Largest snapshot file read at start-up.
pub const MAX_SNAPSHOT_FILE_BYTES: u64 = (codec::MAX_RECORD_BYTES + 64) as u64;

/// The snapshot file and a copy of the snapshot it holds.
pub struct SnapshotFile {
    dir: PathBuf,
    current: Mutex<Option<Snapshot>>,
}

impl SnapshotFile {
    /// Reads the snapshot file of `dir`, if any.
    pub fn open(dir: &Path) -> Result<SnapshotFile, StoreError> {
        let path = dir.join(SNAPSHOT_FILE);
        let current = match files::read_file(&path, MAX_SNAPSHOT_FILE_BYTES)? {
            None => None,
            Some(bytes) => {
                Some(decode_snapshot(&bytes).map_err(|e| StoreError::corrupt(&path, e))?)
            }
        };
        Ok(SnapshotFile {
            dir: dir.to_path_buf(),
            current: Mutex::new(current),
        })
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Option<Snapshot>>> {
        self.current
            .lock()
            .map_err(|_| io::Error::other("quorum snapshot file poisoned by a panic"))
    }

    /// The current snapshot.
    pub fn current(&self) -> io::Result<Option<Snapshot>> {
        Ok(self.lock()?.clone())
    }

    /// Durably replaces the snapshot, unless the current one is as new or newer.
    pub fn save(&self, snap: &Snapshot) -> io::Result<()> {
        let mut current = self.lock()?;
        if let Some(cur) = current.as_ref() {
            if cur.meta.last_log_id >= snap.meta.last_log_id {
                return Ok(());
            }
        }
        let bytes = encode_snapshot(snap).map_err(io::Error::other)?;
        files::replace_file(&self.dir, SNAPSHOT_FILE, &bytes)?;
        *current = Some(snap.clone());
        Ok(())
    }
}

/// The bytes of a snapshot file.
pub fn encode_snapshot(snap: &Snapshot) -> Result<Vec<u8>, codec::DecodeError> {
    let disk = DiskSnapshot {
        last_log_id: snap.meta.last_log_id.as_ref().map(DiskLogId::from),
        membership: DiskStoredMembership::from(&snap.meta.last_membership),
        data: snap.snapshot.clone(),
    };
    files::framed_file(SNAPSHOT_MAGIC, &codec::encode(&disk)?)
}

/// Decodes a snapshot file's bytes; an error (never a panic) on any input.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, codec::DecodeError> {
    let payload = files::parse_framed_file(SNAPSHOT_MAGIC, bytes)?;
    let disk: DiskSnapshot = codec::decode(payload)?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_log_id: disk.last_log_id.map(LogId::from),
            last_membership: StoredMembership::try_from(disk.membership)?,
        },
        snapshot: disk.data,
    })
}

/// openraft's state machine: the broker's, plus what openraft needs to know about it.
pub struct MachineAdapter {
    machine: Mutex<Box<dyn StateMachine>>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotFile>,
}

impl MachineAdapter {
    /// Wraps `machine`, restoring the snapshot of `dir` into it if there is one.
    pub fn open(dir: &Path, mut machine: Box<dyn StateMachine>) -> anyhow::Result<MachineAdapter> {
        let snapshots = SnapshotFile::open(dir)?;
        let (last_applied, membership) = match snapshots.current()? {
            Some(snap) => {
                machine.restore(&snap.snapshot).with_context(|| {
                    format!(
                        "restoring the quorum snapshot of {} into the state machine",
                        dir.display()
                    )
                })?;
                (snap.meta.last_log_id, snap.meta.last_membership)
            }
            None => (None, StoredMembership::default()),
        };
        Ok(MachineAdapter {
            machine: Mutex::new(machine),
            last_applied,
            membership,
            snapshots: Arc::new(snapshots),
        })
    }

    fn builder(&self) -> SnapshotBuilder {
        let data = match self.machine.lock() {
            Ok(m) => Ok(m.snapshot()),
            Err(_) => Err("the state machine panicked".to_string()),
        };
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            data,
            snapshots: self.snapshots.clone(),
        }
    }
}

impl RaftStateMachine<TypeConfig> for MachineAdapter {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            match &entry.payload {
                openraft::EntryPayload::Blank => {}
                openraft::EntryPayload::Normal(payload) => {
                    let mut machine = self
                        .machine
                        .lock()
                        .map_err(|_| io::Error::other("the state machine panicked"))?;
                    machine.apply(entry.log_id.index, &payload.0);
                }
                openraft::EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.builder())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        {
            let mut machine = self
                .machine
                .lock()
                .map_err(|_| io::Error::other("the state machine panicked"))?;
            machine.restore(&snapshot).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the state machine refused a snapshot: {e:#}"),
                )
            })?;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.snapshots.save(&Snapshot {
            meta: meta.clone(),
            snapshot,
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        self.snapshots.current()
    }
}

/// A snapshot being built: the state captured when openraft asked, written by `build_snapshot`.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    data: Result<Vec<u8>, String>,
    snapshots: Arc<SnapshotFile>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = self.data.clone().map_err(io::Error::other)?;
        let snap = Snapshot {
            meta: self.meta.clone(),
            snapshot: data,
        };
        self.snapshots.save(&snap)?;
        Ok(snap)
    }
}
