//! Kafka wire framing on top of the `kafka-protocol` crate: frame limits,
//! request header decoding, response encoding, and the ApiVersions table.
//!
//! A frame is an i32 length followed by that many bytes. The length is checked
//! against `socket.request.max.bytes` before anything is allocated for it.

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
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::Malformed {
            what: "request header",
            detail: e.to_string(),
        })?;
    Ok(Request {
        api_key,
        version,
        header,
        body: frame,
    })
}

/// Decodes a request body, refusing trailing bytes.
pub fn decode_body<T: Decodable>(req: &Request) -> Result<T, FrameError> {
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
