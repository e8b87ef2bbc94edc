//! A small blocking Kafka client for the `sluice` command line.
//!
//! One `Client` is one TCP connection to one broker. On connect it sends
//! ApiVersions (v3, or the v0 list the broker sends back when it refuses v3) and
//! from then on every request goes out at the highest version both sides
//! support, bounded by what the calling command implements. A frame is an i32
//! length, the request header and the body; responses are checked against the
//! correlation id of the request they answer. `Cluster` adds the bootstrap
//! connection, Metadata, and connections to partition leaders on other brokers.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, Request, StrBytes,
};
use kafka_protocol::ResponseError;

/// `client.id` sent in every request header.
const CLIENT_ID: &str = "sluice-cli";
/// ApiVersions version tried first (v3 is the first flexible version, KIP-511).
const API_VERSIONS_VERSION_PREFERRED: i16 = 3;
/// Largest response frame accepted; a bigger length prefix means a broken stream.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Highest Metadata version implemented here (v13 adds nothing this CLI reads).
const METADATA_VERSION_MAX: i16 = 12;

/// The entry for `name` in a Metadata response.
pub fn find_topic<'a>(
    metadata: &'a MetadataResponse,
    name: &str,
) -> Result<&'a kafka_protocol::messages::metadata_response::MetadataResponseTopic> {
    metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
        .ok_or_else(|| anyhow::anyhow!("broker returned no metadata for topic {name:?}"))
}

/// The Kafka name of an error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION (3)`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE (0)".to_string(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE ({code})"),
        Some(err) => format!("{} ({code})", screaming_snake(&err.to_string())),
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`, as Kafka's `Errors` names them.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Turns a non-zero error code into an error that names it, with the broker's message.
pub fn check_error(code: i16, message: Option<&StrBytes>, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(msg) => bail!("{what}: {}: {msg}", error_name(code)),
        None => bail!("{what}: {}", error_name(code)),
    }
}

/// The version to use for an API: the highest in both our range and the broker's,
/// or `None` if the broker lacks the API or the ranges do not overlap.
pub fn choose_version(ours: (i16, i16), broker: Option<(i16, i16)>) -> Option<i16> {
    let (broker_min, broker_max) = broker?;
    let min = ours.0.max(broker_min);
    let max = ours.1.min(broker_max);
    (min <= max).then_some(max)
}

/// Decodes an ApiVersions response body sent for a request of `version`. A broker
/// that does not support `version` answers UNSUPPORTED_VERSION with a v0 body that
/// still lists its APIs; that list is returned so the client can go on.
pub fn decode_api_versions(mut body: Bytes, version: i16) -> Result<ApiVersionsResponse> {
    if body.len() < 2 {
        bail!("ApiVersions response is {} bytes, too short", body.len());
    }
    let error_code = i16::from_be_bytes([body[0], body[1]]);
    let unsupported = ResponseError::UnsupportedVersion.code();
    let decode_version = if error_code == unsupported {
        0
    } else {
        version
    };
    let response = ApiVersionsResponse::decode(&mut body, decode_version)
        .with_context(|| format!("cannot decode ApiVersions v{decode_version} response"))?;
    if response.error_code != 0 && response.error_code != unsupported {
        bail!("ApiVersions failed: {}", error_name(response.error_code));
    }
    if response.api_keys.is_empty() {
        bail!(
            "broker listed no APIs in its ApiVersions answer ({})",
            error_name(response.error_code)
        );
    }
    Ok(response)
}

/// One connection to one broker, with the API versions it supports.
pub struct Client {
    stream: TcpStream,
    address: String,
    peer: SocketAddr,
    timeout: Duration,
    correlation_id: i32,
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Client {
    /// Connects to `address` (`HOST:PORT`) and negotiates API versions.
    pub fn connect(address: &str, timeout: Duration) -> Result<Self> {
        let candidates: Vec<SocketAddr> = address
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve broker address {address:?} (want HOST:PORT)"))?
            .collect();
        let mut last_error = None;
        let mut connected = None;
        for candidate in &candidates {
            match TcpStream::connect_timeout(candidate, timeout) {
                Ok(stream) => {
                    connected = Some((stream, *candidate));
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let (stream, peer) = match (connected, last_error) {
            (Some(found), _) => found,
            (None, Some(e)) => {
                return Err(e).with_context(|| format!("cannot connect to broker at {address}"))
            }
            (None, None) => bail!("broker address {address:?} resolved to no IP address"),
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            address: address.to_string(),
            peer,
            timeout,
            correlation_id: 0,
            broker_versions: HashMap::new(),
        };
        client.negotiate()?;
        Ok(client)
    }

    /// The socket address this connection reached.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends ApiVersions and records the broker's supported range per API key.
    fn negotiate(&mut self) -> Result<()> {
        let version = API_VERSIONS_VERSION_PREFERRED;
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let correlation_id = self.write_request(ApiKey::ApiVersions, version, &request)?;
        let body = self.read_response(ApiKey::ApiVersions, version, correlation_id)?;
        let response = decode_api_versions(body, version)?;
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The version to send `R` at: the highest both sides support within `min..=max`.
    pub fn version_for<R: Request>(&self, min: i16, max: i16) -> Result<i16> {
        let key = api_key::<R>()?;
        let ours = (min.max(R::VERSIONS.min), max.min(R::VERSIONS.max));
        let broker = self.broker_versions.get(&R::KEY).copied();
        choose_version(ours, broker).ok_or_else(|| match broker {
            None => anyhow!(
                "broker at {} does not support {key:?} requests",
                self.address
            ),
            Some((bmin, bmax)) => anyhow!(
                "broker at {} supports {key:?} v{bmin}..v{bmax}, this client v{}..v{}",
                self.address,
                ours.0,
                ours.1
            ),
        })
    }

    /// Sends `request` at `version` and waits for its response.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response> {
        let key = api_key::<R>()?;
        let correlation_id = self.write_request(key, version, request)?;
        let mut body = self.read_response(key, version, correlation_id)?;
        R::Response::decode(&mut body, version)
            .with_context(|| format!("cannot decode {key:?} v{version} response"))
    }

    /// Sends `request` at `version` when the broker sends no response (Produce, acks=0).
    pub fn send_without_response<R: Request>(&mut self, version: i16, request: &R) -> Result<()> {
        let key = api_key::<R>()?;
        self.write_request(key, version, request).map(|_| ())
    }

    fn write_request<M: Encodable>(&mut self, key: ApiKey, version: i16, body: &M) -> Result<i32> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0); // length, patched below
        encode_request_header_into_buffer(&mut frame, &header)
            .with_context(|| format!("cannot encode {key:?} v{version} request header"))?;
        body.encode(&mut frame, version)
            .with_context(|| format!("cannot encode {key:?} v{version} request"))?;
        let length = i32::try_from(frame.len() - 4)
            .map_err(|_| anyhow!("{key:?} request of {} bytes is too large", frame.len()))?;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        self.stream
            .write_all(&frame)
            .map_err(|e| self.io_error(e, key, "sending"))?;
        Ok(self.correlation_id)
    }

    fn read_response(&mut self, key: ApiKey, version: i16, correlation_id: i32) -> Result<Bytes> {
        let mut length = [0u8; 4];
        self.stream
            .read_exact(&mut length)
            .map_err(|e| self.io_error(e, key, "waiting for the answer to"))?;
        let length = i32::from_be_bytes(length);
        let length = usize::try_from(length)
            .ok()
            .filter(|&l| (4..=RESPONSE_BYTES_MAX).contains(&l))
            .ok_or_else(|| {
                anyhow!("broker sent a {key:?} response frame of invalid length {length}")
            })?;
        let mut buf = vec![0u8; length];
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| self.io_error(e, key, "reading the answer to"))?;
        let mut body = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .with_context(|| format!("cannot decode {key:?} v{version} response header"))?;
        if header.correlation_id != correlation_id {
            bail!(
                "broker answered correlation id {} to {key:?} request {correlation_id}",
                header.correlation_id
            );
        }
        Ok(body)
    }

    fn io_error(&self, e: std::io::Error, key: ApiKey, doing: &str) -> anyhow::Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => anyhow!(
                "timed out after {} ms {doing} {key:?} request to broker at {}",
                self.timeout.as_millis(),
                self.address
            ),
            ErrorKind::UnexpectedEof => anyhow!(
                "broker at {} closed the connection while {doing} {key:?} request",
                self.address
            ),
            _ => anyhow!(e).context(format!(
                "network error {doing} {key:?} request to broker at {}",
                self.address
            )),
        }
    }
}

fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))
}

/// The bootstrap connection plus connections to other brokers by node id.
pub struct Cluster {
    bootstrap: Client,
    others: HashMap<i32, Client>,
    timeout: Duration,
}

impl Cluster {
    /// Connects to the bootstrap broker.
    pub fn connect(bootstrap: &str, timeout: Duration) -> Result<Self> {
        Ok(Cluster {
            bootstrap: Client::connect(bootstrap, timeout)?,
            others: HashMap::new(),
            timeout,
        })
    }

    /// The bootstrap connection, for admin requests any broker may answer.
    pub fn bootstrap(&mut self) -> &mut Client {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (all topics when `None`), never auto-creating topics.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        self.metadata_with(topics, false)
    }

    /// Metadata that lets the broker auto-create the named topics when its
    /// `auto.create.topics.enable` allows, as kcat and the Java producer do.
    pub fn metadata_auto_create(&mut self, topics: &[String]) -> Result<MetadataResponse> {
        self.metadata_with(Some(topics), true)
    }

    fn metadata_with(
        &mut self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse> {
        let client = &mut self.bootstrap;
        let version = client.version_for::<MetadataRequest>(1, METADATA_VERSION_MAX)?;
        let mut request = MetadataRequest::default().with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect()
        }));
        if version >= 4 {
            request.allow_auto_topic_creation = auto_create;
        }
        client.send(version, &request)
    }

    /// The connection to broker `node_id`, listed in `brokers` (from Metadata).
    /// Reuses the bootstrap connection when the broker is the same socket address.
    pub fn node(
        &mut self,
        node_id: i32,
        brokers: &[MetadataResponseBroker],
    ) -> Result<&mut Client> {
        let broker = brokers
            .iter()
            .find(|b| b.node_id.0 == node_id)
            .ok_or_else(|| anyhow!("broker {node_id} is not in the Metadata broker list"))?;
        let address = format!("{}:{}", broker.host.as_str(), broker.port);
        let same_as_bootstrap = address
            .to_socket_addrs()
            .map(|mut addrs| addrs.any(|a| a == self.bootstrap.peer()))
            .unwrap_or(false);
        if same_as_bootstrap {
            return Ok(&mut self.bootstrap);
        }
        if !self.others.contains_key(&node_id) {
            tracing::debug!(node_id, %address, "connecting to partition leader");
            let client = Client::connect(&address, self.timeout).with_context(|| {
                format!("cannot reach broker {node_id}, advertised as {address}")
            })?;
            self.others.insert(node_id, client);
        }
        self.others
            .get_mut(&node_id)
            .ok_or_else(|| anyhow!("connection to broker {node_id} vanished"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    #[test]
    fn version_choice_takes_highest_common() {
        assert_eq!(choose_version((3, 12), Some((0, 16))), Some(12));
        assert_eq!(choose_version((3, 12), Some((0, 9))), Some(9));
        assert_eq!(choose_version((3, 12), Some((4, 4))), Some(4));
        assert_eq!(choose_version((3, 12), Some((0, 2))), None);
        assert_eq!(choose_version((3, 12), Some((13, 15))), None);
        assert_eq!(choose_version((3, 12), None), None);
    }

    #[test]
    fn error_names_are_kafka_style() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION (3)");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS (36)");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR (-1)");
        assert_eq!(error_name(0), "NONE (0)");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE (9999)");
    }

    fn api_versions_body(error_code: i16, version: i16) -> Bytes {
        let response = ApiVersionsResponse::default()
            .with_error_code(error_code)
            .with_api_keys(vec![ApiVersion::default()
                .with_api_key(ApiKey::Produce as i16)
                .with_min_version(3)
                .with_max_version(9)]);
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .expect("test response encodes");
        buf.freeze()
    }

    #[test]
    fn api_versions_v3_decodes() {
        let response = decode_api_versions(api_versions_body(0, 3), 3).expect("decodes");
        assert_eq!(response.api_keys.len(), 1);
        assert_eq!(response.api_keys[0].max_version, 9);
    }

    #[test]
    fn api_versions_falls_back_to_v0_list() {
        let code = ResponseError::UnsupportedVersion.code();
        let response = decode_api_versions(api_versions_body(code, 0), 3).expect("decodes");
        assert_eq!(response.api_keys[0].api_key, ApiKey::Produce as i16);
    }

    #[test]
    fn api_versions_other_error_fails() {
        let code = ResponseError::UnknownServerError.code();
        assert!(decode_api_versions(api_versions_body(code, 3), 3).is_err());
        assert!(decode_api_versions(Bytes::from_static(&[0]), 3).is_err());
    }
}
