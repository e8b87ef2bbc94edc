//! The records of the `__consumer_offsets` topic, in Kafka's own formats so
//! that tools which read that topic understand ours:
//! - offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader epoch, metadata, commit timestamp)`;
//! - group metadata: key v2 `(group)`, value v3 (protocol type, generation,
//!   protocol, leader, state timestamp, members with their subscription and
//!   assignment).
//!
//! A record with a null value (tombstone) deletes the key's entry; log
//! compaction then drops the older records of that key.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::wire::{WireError, WireReader as Reader};

/// Key version of an offset commit record (v0 and v1 share the layout).
const OFFSET_KEY_V1: i16 = 1;
/// Key version of a group metadata record.
const GROUP_KEY_V2: i16 = 2;
const OFFSET_VALUE_V3: i16 = 3;
const GROUP_VALUE_V3: i16 = 3;

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member as persisted in the group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's metadata as persisted after each completed rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded record key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// What a record of the offsets topic says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        /// None: the offset was deleted.
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        /// None: the group was deleted.
        value: Option<GroupValue>,
    },
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Lengths are bounded by the request codec (int16 strings on the wire).
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_str(b, s),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + group.len() + topic.len());
    b.put_i16(OFFSET_KEY_V1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(GROUP_KEY_V2);
    put_str(&mut b, group);
    b.freeze()
}

pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::with_capacity(26 + v.metadata.len());
    b.put_i16(OFFSET_VALUE_V3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp_ms);
    b.freeze()
}

pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(GROUP_VALUE_V3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_str(&mut b, v.protocol.as_deref());
    put_nullable_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp_ms);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad __consumer_offsets record: {0}")]
pub struct BadRecord(String);

impl From<WireError> for BadRecord {
    fn from(e: WireError) -> BadRecord {
        BadRecord(e.0)
    }
}

pub fn decode_key(key: Bytes) -> Result<Key, BadRecord> {
    let mut r = Reader::new(key);
    match r.i16("key version")? {
        0 | 1 => Ok(Key::Offset {
            group: r.str("group")?,
            topic: r.str("topic")?,
            partition: r.i32("partition")?,
        }),
        2 => Ok(Key::Group {
            group: r.str("group")?,
        }),
        v => Err(BadRecord(format!("unknown key version {v}"))),
    }
}

fn decode_offset_value(value: Bytes) -> Result<OffsetValue, BadRecord> {
    let mut r = Reader::new(value);
    let version = r.i16("offset value version")?;
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = r.nullable_str("metadata")?.unwrap_or_default();
    let commit_timestamp_ms = r.i64("commit timestamp")?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(value: Bytes) -> Result<GroupValue, BadRecord> {
    let mut r = Reader::new(value);
    let version = r.i16("group value version")?;
    if !(0..=GROUP_VALUE_V3).contains(&version) {
        return Err(BadRecord(format!("unknown group value version {version}")));
    }
    let protocol_type = r.str("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_str("protocol")?;
    let leader = r.nullable_str("leader")?;
    let state_timestamp_ms = if version >= 2 {
        r.i64("state timestamp")?
    } else {
        -1
    };
    let n = r.i32("member count")?;
    let mut members = Vec::with_capacity(n.clamp(0, 1024) as usize);
    for _ in 0..n.max(0) {
        let member_id = r.str("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_str("group instance id")?
        } else {
            None
        };
        let client_id = r.str("client id")?;
        let client_host = r.str("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            Some(r.i32("rebalance timeout")?)
        } else {
            None
        };
        let session_timeout_ms = r.i32("session timeout")?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: r.bytes("subscription")?,
            assignment: r.bytes("assignment")?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

/// Decodes one record of the offsets topic.
pub fn decode(key: Bytes, value: Option<Bytes>) -> Result<Entry, BadRecord> {
    Ok(match decode_key(key)? {
        Key::Offset {
            group,
            topic,
            partition,
        } => Entry::Offset {
            group,
            topic,
            partition,
            value: value.map(decode_offset_value).transpose()?,
        },
        Key::Group { group } => Entry::Group {
            group,
            value: value.map(decode_group_value).transpose()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_record_round_trips() {
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let e = decode(offset_key("g", "t", 7), Some(offset_value(&v))).unwrap();
        assert_eq!(
            e,
            Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: Some(v)
            }
        );
        let tomb = decode(offset_key("g", "t", 7), None).unwrap();
        assert!(matches!(tomb, Entry::Offset { value: None, .. }));
    }

    #[test]
    fn group_record_round_trips() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("c-1".into()),
            state_timestamp_ms: 9,
            members: vec![MemberValue {
                member_id: "c-1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let e = decode(group_key("g"), Some(group_value(&v))).unwrap();
        assert_eq!(
            e,
            Entry::Group {
                group: "g".into(),
                value: Some(v)
            }
        );
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let full = offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        for n in 0..full.len() {
            assert!(decode(offset_key("g", "t", 0), Some(full.slice(..n))).is_err());
        }
        assert!(decode_key(Bytes::from_static(&[0, 9])).is_err());
    }
}
