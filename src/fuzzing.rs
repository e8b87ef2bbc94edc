//! Fuzz entry points: one function per target of the `fuzz/` crate (cargo-fuzz, which builds
//! the library with `--cfg fuzzing`; unit tests compile them too). Each feeds its input to the
//! decoders the broker runs on untrusted bytes and, when they accept it, asserts what must then
//! hold (re-encoding gives back the same value, a second decode agrees). A panic or an abort is
//! a finding: the input goes under `fuzz/regressions/<target>/` and the fix gets a unit test.
//!
//! - `request`: a connection's byte stream: frame length, request header, the body of every
//!   API the broker dispatches (`protocol::any`).
//! - `record_batch`: a produce request's record set (`storage::fuzzing::record_batch`).
//! - `internal_records`: `__consumer_offsets` and `__transaction_state` records.
//! - `storage_files`: indexes, producer snapshots, `.txnindex`, cleaner files, leader epoch
//!   checkpoint, metadata image.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::protocol::any::{visit_body, BodyVisitor};
use crate::protocol::{
    check_frame_len, decode_body, decode_request, peek_key_version, supported_range, Request,
};

pub use crate::storage::fuzzing::record_batch;

/// `socket.request.max.bytes` at its default (see `config.rs`).
const MAX_FRAME_BYTES: usize = 104_857_600;

/// A connection's input: length-prefixed frames, each decoded as the connection and the
/// dispatcher do. An invalid length ends the stream (the broker closes the connection); an
/// incomplete last frame is left unread (the broker waits for the rest). True if a request
/// body decoded.
pub fn request(data: &[u8]) -> bool {
    let mut decoded = false;
    let mut rest = data;
    while let Some(prefix) = rest.get(..4) {
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let Ok(n) = check_frame_len(len, MAX_FRAME_BYTES) else {
            assert!(!(8..=MAX_FRAME_BYTES as i64).contains(&i64::from(len)));
            return decoded;
        };
        assert_eq!(n as i64, i64::from(len));
        let Some(frame) = rest.get(4..4 + n) else {
            return decoded;
        };
        decoded |= one_frame(Bytes::copy_from_slice(frame));
        rest = &rest[4 + n..];
    }
    decoded
}

fn one_frame(frame: Bytes) -> bool {
    let (key, version) = peek_key_version(&frame);
    let Ok(req) = decode_request(frame) else {
        return false;
    };
    assert_eq!((req.api_key as i16, req.version), (key, version));
    let (min, max) = supported_range(req.api_key).expect("only implemented APIs decode");
    assert!((min..=max).contains(&version));
    let header_version = req.api_key.request_header_version(version);
    if let Some(header) = round_trip(&req.header, header_version) {
        assert_eq!(header, req.header);
    }
    visit_body(&req, BodyRoundTrip).expect("every implemented API has a body type")
}

/// Encodes `value` at `version` and decodes it again; panics if either fails or the encoded
/// size is not the computed one. None for a value the codec cannot re-encode faithfully by a
/// known limitation that the broker never meets (it decodes requests, never re-encodes them):
/// kafka-protocol 0.18 keeps an unknown tagged field whose tag exceeds i32::MAX under a
/// negative key, counts it, but does not write it.
fn round_trip<T: Decodable + Encodable + Debug>(value: &T, version: i16) -> Option<T> {
    let mut buf = BytesMut::new();
    value
        .encode(&mut buf, version)
        .expect("a decoded value encodes at its version");
    let size = value
        .compute_size(version)
        .expect("size of a decoded value");
    if size != buf.len() && has_negative_tag(value) {
        return None;
    }
    assert_eq!(size, buf.len(), "computed size matches the encoding");
    let mut bytes = buf.freeze();
    let again = T::decode(&mut bytes, version).expect("an encoded value decodes");
    assert!(bytes.is_empty(), "decode consumes the whole encoding");
    Some(again)
}

/// Whether a decoded message holds an unknown tagged field with a negative tag (see
/// `round_trip`); only asked once sizes disagree.
fn has_negative_tag<T: Debug>(value: &T) -> bool {
    let text = format!("{value:?}");
    text.match_indices("unknown_tagged_fields: {")
        .any(|(at, m)| text[at + m.len()..].starts_with('-'))
}

/// Decodes a body through `decode_body` and checks that it survives a round trip.
struct BodyRoundTrip;

impl BodyVisitor for BodyRoundTrip {
    type Output = bool;
    fn visit<T>(self, req: &Request) -> bool
    where
        T: kafka_protocol::protocol::Request + PartialEq + Debug,
    {
        let Ok(body) = decode_body::<T>(req) else {
            return false;
        };
        if let Some(again) = round_trip(&body, req.version) {
            assert_eq!(again, body);
        }
        true
    }
}

/// One record of an internal topic. Input: a selector byte (bit 0: `__transaction_state`
/// instead of `__consumer_offsets`; bit 1: a tombstone, no value; bit 2: instead, the control
/// record of a transaction marker), a key length byte, the key, then the value. A decoded record must re-encode (in the version we write) to one that
/// decodes to the same thing. True if the record decoded.
pub fn internal_records(data: &[u8]) -> bool {
    let [selector, key_len, rest @ ..] = data else {
        return false;
    };
    let split = usize::from(*key_len).min(rest.len());
    let key = Bytes::copy_from_slice(&rest[..split]);
    let value = (selector & 2 == 0).then(|| Bytes::copy_from_slice(&rest[split..]));
    if selector & 4 != 0 {
        transaction_marker(&key, value.as_deref().unwrap_or_default())
    } else if selector & 1 == 0 {
        offsets_record(key, value)
    } else {
        txn_record(key, value)
    }
}

/// A transaction marker's control record as the log and the group coordinator read it; one
/// that parses, written again as a marker batch, is a valid control batch no client may send.
fn transaction_marker(key: &[u8], value: &[u8]) -> bool {
    use crate::storage::markers::{control_batch, parse_control_key, parse_marker_value};
    use crate::storage::markers::{ControlType, Marker, ATTR_CONTROL, ATTR_TRANSACTIONAL};
    let (Some(kind), Some(coordinator_epoch)) = (parse_control_key(key), parse_marker_value(value))
    else {
        return false;
    };
    if let ControlType::Other(_) = kind {
        return true;
    }
    let marker = Marker {
        commit: kind == ControlType::Commit,
        producer_id: 7,
        producer_epoch: 1,
        coordinator_epoch,
        timestamp_ms: 0,
    };
    let batch = control_batch(&marker);
    let infos = crate::storage::validate_batches(&batch, usize::MAX).expect("a marker validates");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].attributes, ATTR_TRANSACTIONAL | ATTR_CONTROL);
    assert!(crate::storage::client_batch_refusal(&batch).is_some());
    true
}

fn offsets_record(key: Bytes, value: Option<Bytes>) -> bool {
    use crate::group::records::{self as r, Entry};
    let Ok(entry) = r::decode(key, value) else {
        return false;
    };
    let (key, value) = match &entry {
        Entry::Offset {
            group,
            topic,
            partition,
            value,
        } => (
            r::offset_key(group, topic, *partition),
            value.as_ref().map(r::offset_value),
        ),
        Entry::Group { group, value } => (r::group_key(group), value.as_ref().map(r::group_value)),
    };
    assert_eq!(
        r::decode(key, value).expect("re-encoded record decodes"),
        entry
    );
    true
}

fn txn_record(key: Bytes, value: Option<Bytes>) -> bool {
    use crate::txn::records as r;
    use crate::txn::transition::TxnState;
    let Ok((id, value)) = r::decode(key, value) else {
        return false;
    };
    assert_eq!(r::decode_key(r::key(&id)).expect("key decodes"), id);
    let Some(v) = value else {
        return true;
    };
    assert_eq!(TxnState::from_id(v.state.id()), Some(v.state));
    // We write v0: int16 strings, no tagged fields. Topic names longer than an int16 string
    // cannot come from a request, only from a hand-made v1 record.
    let fits = v
        .partitions
        .iter()
        .flatten()
        .all(|(t, _)| t.len() <= i16::MAX as usize);
    if fits {
        let expected = r::TxnValue {
            previous_producer_id: -1,
            next_producer_id: -1,
            client_transaction_version: 0,
            ..v.clone()
        };
        assert_eq!(r::decode_value(r::value(&v)).expect("v0 decodes"), expected);
    }
    true
}

/// An on-disk file: the first byte picks the decoder (see `storage::fuzzing::storage_files`),
/// 255 the metadata image (JSON), 254 a metadata log entry, 253 a metadata snapshot, 252 the
/// quorum's log file; the rest is the file. True if the file decoded.
pub fn storage_files(data: &[u8]) -> bool {
    let [kind, file @ ..] = data else {
        return false;
    };
    match *kind {
        METADATA_IMAGE => metadata_image(file),
        METADATA_ENTRY => metadata_entry(file),
        METADATA_SNAPSHOT => crate::cluster::publisher::decode_snapshot(file).is_ok(),
        QUORUM_LOG => crate::cluster::quorum::check_log_bytes(file).is_ok(),
        _ => crate::storage::fuzzing::storage_files(*kind, file),
    }
}

/// `storage_files` selectors of the cluster's files.
const METADATA_IMAGE: u8 = u8::MAX;
const METADATA_ENTRY: u8 = u8::MAX - 1;
const METADATA_SNAPSHOT: u8 = u8::MAX - 2;
const QUORUM_LOG: u8 = u8::MAX - 3;

/// A metadata log entry: if it decodes, it re-encodes to the same bytes, and applying it to
/// an empty image never panics and gives one outcome per record.
fn metadata_entry(b: &[u8]) -> bool {
    use crate::cluster::records;
    let Ok(recs) = records::decode_entry(b) else {
        return false;
    };
    let again = records::decode_entry(&records::encode_entry(&recs)).expect("own entry decodes");
    assert_eq!(again, recs);
    let mut img = crate::cluster::MetadataImage::default();
    assert_eq!(records::apply_all(&mut img, &recs).len(), recs.len());
    true
}

fn metadata_image(b: &[u8]) -> bool {
    use crate::cluster::MetadataImage;
    let Ok(img) = serde_json::from_slice::<MetadataImage>(b) else {
        return false;
    };
    let json = serde_json::to_vec(&img).expect("an image serializes");
    let again: MetadataImage = serde_json::from_slice(&json).expect("its own JSON loads");
    assert_eq!(serde_json::to_vec(&again).expect("serializes"), json);
    let counts = img.partitions_per_dir(2);
    assert!(counts.iter().sum::<usize>() <= img.topics.values().map(|t| t.partitions.len()).sum());
    true
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use kafka_protocol::messages::RequestHeader;

    use super::*;

    /// Files directly under `fuzz/<dir>/<target>/`, sorted; none if the folder is missing.
    fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(rd) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        out
    }

    /// Every committed corpus file and regression input through its target, in-process, so
    /// that `cargo test` covers them without cargo-fuzz.
    #[test]
    fn corpus_and_regressions_replay() {
        type Target = fn(&[u8]) -> bool;
        let targets: [(&str, Target); 4] = [
            ("request", request),
            ("record_batch", record_batch),
            ("internal_records", internal_records),
            ("storage_files", storage_files),
        ];
        for (name, target) in targets {
            let mut files = inputs("corpus", name);
            assert!(!files.is_empty(), "no corpus for {name}");
            // Includes the `array-alloc-*` inputs: without the request bounds check
            // (protocol::bounds) each would abort this test binary with a huge allocation.
            files.extend(inputs("regressions", name));
            for f in files {
                let data = std::fs::read(&f).expect("read input");
                // Captured corpus files are real client input: the decoders must accept them.
                let accepted = target(&data);
                if dir_of(&f) == "corpus" && name != "storage_files" {
                    assert!(accepted, "{} is refused", f.display());
                }
            }
        }
    }

    fn dir_of(f: &Path) -> String {
        let dir = f.parent().and_then(Path::parent).and_then(Path::file_name);
        dir.map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn valid_inputs_reach_the_invariants() {
        use crate::group::records as g;
        let key = g::offset_key("group", "topic", 3);
        let value = g::offset_value(&g::OffsetValue {
            offset: 10,
            leader_epoch: 1,
            metadata: "m".into(),
            commit_timestamp_ms: 5,
        });
        let mut input = vec![0u8, key.len() as u8];
        input.extend_from_slice(&key);
        input.extend_from_slice(&value);
        assert!(internal_records(&input));
        input[0] = 1; // the same bytes as a __transaction_state record: key version 1 is unknown
        assert!(!internal_records(&input));
        let txn_key = crate::txn::records::key("tx");
        let mut tombstone = vec![3u8, txn_key.len() as u8];
        tombstone.extend_from_slice(&txn_key);
        assert!(internal_records(&tombstone));
        // A COMMIT marker's control record: key (version 0, type 1), value (version 0, epoch 3).
        let marker = [4u8, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3];
        assert!(internal_records(&marker));
        assert!(
            !internal_records(&marker[..marker.len() - 1]),
            "a short value is refused"
        );

        // A frame stream: a valid Metadata request, then the start of a second frame.
        let mut header = RequestHeader::default();
        header.request_api_key = 3;
        header.request_api_version = 4;
        let mut frame = BytesMut::new();
        header.encode(&mut frame, 1).expect("header");
        kafka_protocol::messages::MetadataRequest::default()
            .encode(&mut frame, 4)
            .expect("body");
        let mut stream = (frame.len() as i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&frame);
        let first = stream.clone();
        stream.extend_from_slice(&first[..7]);
        assert!(request(&stream));
        assert!(
            !request(&first[..first.len() - 1]),
            "an incomplete frame is not decoded"
        );

        let image = br#"{"cluster_id":"c","topics":{}}"#;
        let mut file = vec![METADATA_IMAGE];
        file.extend_from_slice(image);
        assert!(storage_files(&file));
        let entry = crate::cluster::records::encode_entry(&[
            crate::cluster::records::MetadataRecord::ProducerIds { count: 5 },
        ]);
        let mut file = vec![METADATA_ENTRY];
        file.extend_from_slice(&entry);
        assert!(storage_files(&file));
        let snap = crate::cluster::publisher::encode_snapshot(&Default::default());
        let mut file = vec![METADATA_SNAPSHOT];
        file.extend_from_slice(&snap);
        assert!(storage_files(&file));
    }
}
