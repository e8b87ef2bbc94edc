//! ApiVersions: the table of implemented APIs and versions. A request in a
//! version we do not know gets UNSUPPORTED_VERSION in the v0 format with the
//! table, so the client can retry with a version both sides speak.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::protocol::{encode_response, supported_range, API_VERSIONS};

fn table() -> Vec<ApiVersion> {
    API_VERSIONS
        .iter()
        .filter_map(|(key, _, _)| {
            let (min, max) = supported_range(*key)?;
            let mut v = ApiVersion::default();
            v.api_key = *key as i16;
            v.min_version = min;
            v.max_version = max;
            Some(v)
        })
        .collect()
}

pub fn handle(_req: ApiVersionsRequest) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = table();
    resp
}

/// The response to an ApiVersions request in a version outside our range, or
/// `None` when the version is supported.
pub fn unsupported_version_response(frame: &[u8], version: i16) -> Option<Bytes> {
    let (min, max) = supported_range(kafka_protocol::messages::ApiKey::ApiVersions)?;
    if (min..=max).contains(&version) || frame.len() < 8 {
        return None;
    }
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = ResponseError::UnsupportedVersion.code();
    resp.api_keys = table();
    encode_response(correlation_id, 0, &resp).ok()
}
