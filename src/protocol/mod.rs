//! Kafka wire framing on top of the `kafka-protocol` crate: frame limits,
//! request header decoding, response encoding, and the ApiVersions table.
//!
//! A frame is an i32 length followed by that many bytes. The length is checked
//! against `socket.request.max.bytes` before anything is allocated for it, and
//! every length and count inside the header and body against the bytes the
//! frame holds (`bounds`), before the crate decodes them.

pub mod bounds;
pub mod parts;
#[rustfmt::skip]
pub mod schema_gen;
pub mod versions;
pub mod wire;

/// Request body types by API key, for decoding without a handler (fuzz targets).
pub mod any;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

pub use versions::{supported_range, API_VERSIONS};

/// Why a frame could not be turned into a request. Each closes the connection
/// with a log line, as Kafka does, except where a handler answers an error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("frame length {0} is invalid")]
    BadLength(i32),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// Checks a frame's length prefix. Smallest valid request: api key, version,
/// correlation id (8 bytes) plus a client id length (2 bytes).
pub fn check_frame_len(len: i32, max: usize) -> Result<usize, FrameError> {
    if len < 8 {
        return Err(FrameError::BadLength(len));
    }
    if len as i64 > max as i64 {
        return Err(FrameError::TooLarge {
            size: len as i64,
            max,
        });
    }
    Ok(len as usize)
}

/// A decoded request header plus the undecoded body.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Peeks the API key and version of a frame (at least 8 bytes long).
pub fn peek_key_version(frame: &[u8]) -> (i16, i16) {
    let mut b = frame;
    let key = b.get_i16();
    let version = b.get_i16();
    (key, version)
}

/// Decodes the request header of a frame whose key and version are supported.
pub fn decode_request(mut frame: Bytes) -> Result<Request, FrameError> {
    let (key, version) = peek_key_version(&frame);
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let range = supported_range(api_key);
    let Some((min, max)) = range else {
        return Err(FrameError::UnsupportedVersion {
            api: api_key,
            version,
            min: -1,
            max: -1,
        });
    };
    if version < min || version > max {
        return Err(FrameError::UnsupportedVersion {
            api: api_key,
            version,
            min,
            max,
        });
    }
    let header_version = api_key.request_header_version(version);
    // The header holds no arrays (the crate checks its string and tagged
    // lengths itself); walked anyway so that a crate change cannot slip by.
    bounds::check_struct(&schema_gen::REQUEST_HEADER, header_version, &frame).map_err(|e| {
        FrameError::Malformed {
            what: "request header",
            detail: e.to_string(),
        }
    })?;
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::Malformed {
            what: "request header",
            detail: e.to_string().trim_end().to_string(),
        })?;
    Ok(Request {
        api_key,
        version,
        header,
        body: frame,
    })
}

/// Decodes a request body after checking its lengths and counts against its
/// bytes (`bounds::check`), so that no count read from the wire makes the
/// crate allocate more than the body can hold. This is the only place the
/// broker decodes a request body (a unit test holds it to that).
pub fn decode_body<T: kafka_protocol::protocol::Request>(req: &Request) -> Result<T, FrameError> {
    if T::KEY != req.api_key as i16 {
        return Err(FrameError::Malformed {
            what: "request body",
            detail: format!("{:?} decoded as API key {}", req.api_key, T::KEY),
        });
    }
    bounds::check(req.api_key, req.version, &req.body).map_err(|e| FrameError::Malformed {
        what: "request body",
        detail: e.to_string(),
    })?;
    let mut body = req.body.clone();
    let msg = T::decode(&mut body, req.version).map_err(|e| FrameError::Malformed {
        what: "request body",
        detail: format!("{:?} v{}: {e}", req.api_key, req.version),
    })?;
    if body.has_remaining() {
        // Apache Kafka ignores bytes after a decoded body, and some clients
        // send them (librdkafka 2.16's Metadata v12 carries 3), so we do too.
        tracing::debug!(
            api = ?req.api_key,
            version = req.version,
            trailing = body.remaining(),
            body = %hex_prefix(&req.body, 64),
            "ignoring trailing bytes after request body"
        );
    }
    Ok(msg)
}

fn hex_prefix(b: &[u8], n: usize) -> String {
    b.iter().take(n).map(|x| format!("{x:02x}")).collect()
}

/// Encodes a whole response frame (length, header, body).
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> anyhow::Result<Bytes> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let hv = R::header_version(version);
    let size = header.compute_size(hv)? + body.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, hv)?;
    body.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader};
    use kafka_protocol::protocol::StrBytes;

    fn frame(key: ApiKey, version: i16) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = 7;
        h.client_id = Some(StrBytes::from_static_str("t"));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, key.request_header_version(version))
            .unwrap();
        MetadataRequest::default()
            .encode(&mut buf, version)
            .unwrap();
        buf.freeze()
    }

    #[test]
    fn frame_limits() {
        assert!(check_frame_len(-1, 100).is_err());
        assert!(check_frame_len(4, 100).is_err());
        assert!(matches!(
            check_frame_len(101, 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(check_frame_len(100, 100).unwrap(), 100);
    }

    #[test]
    fn header_round_trip_and_versions() {
        let req = decode_request(frame(ApiKey::Metadata, 9)).unwrap();
        assert_eq!(req.header.correlation_id, 7);
        let _: MetadataRequest = decode_body(&req).unwrap();
        let mut raw = BytesMut::from(&frame(ApiKey::Metadata, 9)[..]);
        raw[3] = 99;
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(FrameError::UnsupportedVersion { .. })
        ));
        let mut raw = BytesMut::from(&frame(ApiKey::Metadata, 1)[..]);
        raw[0] = 0x7f;
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(FrameError::UnknownApiKey(_))
        ));
    }

    #[test]
    fn decode_body_refuses_a_count_the_body_cannot_hold() {
        // The 14-byte frame that aborted the broker: Metadata v0, topic count
        // 0x7fffffff.
        let mut raw = BytesMut::new();
        raw.put_i16(3);
        raw.put_i16(0);
        raw.put_i32(1);
        raw.put_i16(-1);
        raw.put_i32(0x7fff_ffff);
        let req = decode_request(raw.freeze()).unwrap();
        match decode_body::<MetadataRequest>(&req) {
            Err(FrameError::Malformed { what, detail }) => {
                assert_eq!(what, "request body");
                assert!(detail.contains("MetadataRequest v0.topics"), "{detail}");
                assert!(detail.contains("2147483647 elements"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        // A body decoded as the wrong request type is refused too.
        let req = decode_request(frame(ApiKey::Metadata, 4)).unwrap();
        assert!(decode_body::<kafka_protocol::messages::FetchRequest>(&req).is_err());
    }

    /// Every decode of client bytes with the crate goes through a bounds
    /// check: request bodies only in `decode_body`, the header in
    /// `decode_request`, consumer subscriptions in group/state.rs. A new
    /// `::decode(` elsewhere in the broker fails this test until it is
    /// checked (or listed here with the reason it needs none).
    #[test]
    fn every_crate_decode_of_client_bytes_is_bounds_checked() {
        // Decoders that are not the crate's message decoders, or that read
        // bytes no client sent (the broker's own log and files; the CLI
        // reading a broker's responses).
        const NOT_CLIENT_BYTES: &[&str] = &[
            "records::decode(",
            "OffsetIndex::decode(",
            "TimeIndex::decode(",
            "txn_index::decode(",
            "Self::decode(",
            "CleanerCheckpoint::decode(",
            "EpochCache::decode(",
            "RecordBatchDecoder::decode(",
            "producer_snapshot::decode(",
            // The metadata quorum's frames and snapshots (postcard: serde caps what a
            // length prefix preallocates; frames are bounded before they are read).
            "codec::decode(",
            // A peer broker's answer to this broker's own request (`cluster::peer_client`:
            // the follower's fetch, the coordinator's WriteTxnMarkers; cluster-internal, like
            // the CLI reading a broker's answers; the frame is bounded before reading).
            "ResponseHeader::decode(",
            "Response::decode(",
        ];
        // (file, decode call, the check that must precede it in that file).
        const CHECKED: &[(&str, &str, &str)] = &[
            (
                "src/protocol/mod.rs",
                "RequestHeader::decode(",
                "bounds::check_struct(&schema_gen::REQUEST_HEADER",
            ),
            (
                "src/protocol/mod.rs",
                "T::decode(",
                "bounds::check(req.api_key",
            ),
            (
                "src/group/state.rs",
                "ConsumerProtocolSubscription::decode(",
                "bounds::check_struct(schema",
            ),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(root.parent().unwrap()).unwrap();
                let rel = rel.to_string_lossy().replace('\\', "/");
                // Skipped: the CLI (reads a broker's answers), tests, and the fuzz harness
                // (`fuzzing.rs`, built only for tests and fuzzing), which re-decodes what it
                // has just encoded itself.
                if !rel.ends_with(".rs")
                    || rel.starts_with("src/cli/")
                    || rel.ends_with("_tests.rs")
                    || rel.ends_with("/fuzzing.rs")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.split("\n#[cfg(test)]").next().unwrap_or_default();
                for (i, _) in text.match_indices("::decode(") {
                    let start = text[..i]
                        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .map_or(0, |p| p + 1);
                    let call = &text[start..i + "::decode(".len()];
                    if NOT_CLIENT_BYTES.contains(&call) {
                        continue;
                    }
                    let Some((_, _, guard)) =
                        CHECKED.iter().find(|(f, c, _)| *f == rel && *c == call)
                    else {
                        panic!(
                            "{rel}: `{call}` decodes with no bounds check (see protocol::bounds)"
                        );
                    };
                    let g = text
                        .find(guard)
                        .unwrap_or_else(|| panic!("{rel}: `{guard}` missing"));
                    assert!(g < i, "{rel}: `{guard}` must come before `{call}`");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, CHECKED.len());
    }

    #[test]
    fn trailing_bytes_are_tolerated_truncation_is_not() {
        let mut raw = BytesMut::from(&frame(ApiKey::Metadata, 4)[..]);
        raw.put_u8(0);
        let req = decode_request(raw.freeze()).unwrap();
        assert!(decode_body::<MetadataRequest>(&req).is_ok());
        let full = frame(ApiKey::Metadata, 4);
        let req = decode_request(full.slice(..full.len() - 1)).unwrap();
        assert!(decode_body::<MetadataRequest>(&req).is_err());
    }
}
