//! The on-disk encoding of the quorum's files: a checked frame (length, CRC-32C, payload) and the
//! records inside it, encoded with postcard.
//!
//! The records are this module's own types, not openraft's serde forms: the files stay readable
//! whatever openraft does to its types, and every decoded membership goes through
//! `Membership::new`, which rejects one that openraft would trip over later. Every decoder here
//! returns an error on any input; none panics.
//!
//! Frame layout (little endian): `u32 payload length | u32 CRC-32C of the payload | payload`.

use std::collections::{BTreeMap, BTreeSet};

use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{self, Entry, LogId, Membership, StoredMembership, Vote};

/// Bytes of a frame's header: length and CRC.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Largest payload of one on-disk frame (a log entry, the vote file, a snapshot).
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Why bytes are not a valid frame or record.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("incomplete frame: {have} bytes, {need} needed")]
    Truncated { have: usize, need: usize },
    #[error("frame length {0} exceeds the limit of {MAX_RECORD_BYTES} bytes")]
    TooLong(u64),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("undecodable record: {0}")]
    Record(String),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("invalid membership: {0}")]
    Membership(String),
}

/// Appends one frame holding `payload` to `out`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), DecodeError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_RECORD_BYTES)
        .ok_or(DecodeError::TooLong(payload.len() as u64))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads the frame at the start of `buf`: its payload and the bytes the frame takes.
pub fn take_frame(buf: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    let header = buf
        .get(..FRAME_HEADER_BYTES)
        .ok_or(DecodeError::Truncated {
            have: buf.len(),
            need: FRAME_HEADER_BYTES,
        })?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLong(len as u64));
    }
    let need = FRAME_HEADER_BYTES + len;
    let payload = buf
        .get(FRAME_HEADER_BYTES..need)
        .ok_or(DecodeError::Truncated {
            have: buf.len(),
            need,
        })?;
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(DecodeError::Crc { stored, computed });
    }
    Ok((payload, need))
}

/// Encodes a record (postcard).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DecodeError> {
    postcard::to_allocvec(value).map_err(|e| DecodeError::Record(e.to_string()))
}

/// Decodes a record that must fill `bytes` exactly.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Record(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

/// A log id: the term and node of the leader that wrote it, and its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLogId {
    pub term: u64,
    pub node_id: u64,
    pub index: u64,
}

impl From<&LogId> for DiskLogId {
    fn from(id: &LogId) -> Self {
        DiskLogId {
            term: id.leader_id.term,
            node_id: id.leader_id.node_id,
            index: id.index,
        }
    }
}

impl From<DiskLogId> for LogId {
    fn from(d: DiskLogId) -> Self {
        types::log_id(d.term, d.node_id, d.index)
    }
}

/// A vote: the term, the node voted for, and whether a quorum granted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskVote {
    pub term: u64,
    pub node_id: u64,
    pub committed: bool,
}

impl From<&Vote> for DiskVote {
    fn from(v: &Vote) -> Self {
        DiskVote {
            term: v.leader_id.term,
            node_id: v.leader_id.node_id,
            committed: v.committed,
        }
    }
}

impl From<DiskVote> for Vote {
    fn from(d: DiskVote) -> Self {
        if d.committed {
            Vote::new_committed(d.term, d.node_id)
        } else {
            Vote::new(d.term, d.node_id)
        }
    }
}

/// A membership: the voter sets of a (joint) config, and every node's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMembership {
    pub configs: Vec<BTreeSet<u64>>,
    pub nodes: BTreeMap<u64, String>,
}

impl From<&Membership> for DiskMembership {
    fn from(m: &Membership) -> Self {
        DiskMembership {
            configs: m.get_joint_config().clone(),
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }
    }
}

impl TryFrom<DiskMembership> for Membership {
    type Error = DecodeError;

    fn try_from(d: DiskMembership) -> Result<Self, DecodeError> {
        let nodes: BTreeMap<u64, BasicNode> = d
            .nodes
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        Membership::new(d.configs, nodes).map_err(|e| DecodeError::Membership(e.to_string()))
    }
}

/// A membership and the log id of the entry that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStoredMembership {
    pub log_id: Option<DiskLogId>,
    pub membership: DiskMembership,
}

impl From<&StoredMembership> for DiskStoredMembership {
    fn from(m: &StoredMembership) -> Self {
        DiskStoredMembership {
            log_id: m.log_id().as_ref().map(DiskLogId::from),
            membership: DiskMembership::from(m.membership()),
        }
    }
}

impl TryFrom<DiskStoredMembership> for StoredMembership {
    type Error = DecodeError;

    fn try_from(d: DiskStoredMembership) -> Result<Self, DecodeError> {
        Ok(StoredMembership::new(
            d.log_id.map(LogId::from),
            Membership::try_from(d.membership)?,
        ))
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskPayload {
    Blank,
    Normal(Vec<u8>),
    Membership(DiskMembership),
}

/// A log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskEntry {
    pub log_id: DiskLogId,
    pub payload: DiskPayload,
}

impl From<&Entry> for DiskEntry {
    fn from(e: &Entry) -> Self {
        let payload = match &e.payload {
            openraft::EntryPayload::Blank => DiskPayload::Blank,
            openraft::EntryPayload::Normal(p) => DiskPayload::Normal(p.0.clone()),
            openraft::EntryPayload::Membership(m) => {
                DiskPayload::Membership(DiskMembership::from(m))
            }
        };
        DiskEntry {
            log_id: DiskLogId::from(&e.log_id),
            payload,
        }
    }
}

impl TryFrom<DiskEntry> for Entry {
    type Error = DecodeError;

    fn try_from(d: DiskEntry) -> Result<Self, DecodeError> {
        let payload = match d.payload {
            DiskPayload::Blank => openraft::EntryPayload::Blank,
            DiskPayload::Normal(bytes) => openraft::EntryPayload::Normal(types::Payload(bytes)),
            DiskPayload::Membership(m) => openraft::EntryPayload::Membership(m.try_into()?),
        };
        Ok(Entry {
            log_id: d.log_id.into(),
            payload,
        })
    }
}

/// One record of the log file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    /// Entries up to this id were purged; only ever the file's first record.
    Purged(DiskLogId),
    Entry(DiskEntry),
}

/// The vote file: the vote and the committed log id, saved together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskState {
    pub vote: Option<DiskVote>,
    pub committed: Option<DiskLogId>,
}

/// The snapshot file: what the snapshot covers and the state machine's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSnapshot {
    pub last_log_id: Option<DiskLogId>,
    pub membership: DiskStoredMembership,
    pub data: Vec<u8>,
}
