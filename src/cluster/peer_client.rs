//! A small client for broker-to-broker Kafka requests over the peers' advertised client
//! listeners: the follower's Fetch (`fetcher.rs`, one long-lived connection per fetcher) and
//! the transaction coordinator's WriteTxnMarkers (`txn::marker_writer`, through [`call`]).
//!
//! A [`PeerConn`] is one glommio TCP connection sending Kafka-framed requests of any
//! `kafka-protocol` request type, one at a time, and decoding their answers (correlation ids
//! checked, response frames bounded). [`call`] sends one request to a broker by node id on a
//! connection from this shard's small pool of idle ones, within a time bound that covers the
//! connect; a connection that failed or timed out is dropped, never reused. Retrying is the
//! caller's business: a request that failed may or may not have been served.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request as KafkaRequest, StrBytes,
};

use super::{broker_address, image, MetadataImage};
use crate::runtime;

/// Largest response frame accepted from a peer.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Time allowed to connect to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept per peer address and shard by [`call`].
const POOL_PER_PEER: usize = 4;
/// A pooled connection idle longer than this is closed rather than reused (well inside the
/// peers' `connections.max.idle.ms`, so a reused one is rarely found closed).
const POOL_IDLE_MAX: Duration = Duration::from_secs(60);

/// One connection to a peer broker's client listener.
pub struct PeerConn {
    addr: String,
    client_id: &'static str,
    stream: glommio::net::TcpStream,
    correlation_id: i32,
}

impl PeerConn {
    /// Connects to `addr` ("host:port"; a host name is resolved off the shard), within
    /// [`CONNECT_TIMEOUT`]. `client_id` names this side in the peer's request headers.
    pub async fn connect(addr: &str, client_id: &'static str) -> anyhow::Result<PeerConn> {
        let sock: std::net::SocketAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => {
                let a = addr.to_string();
                runtime::blocking(move || {
                    use std::net::ToSocketAddrs;
                    a.to_socket_addrs().ok().and_then(|mut i| i.next())
                })
                .await
                .ok_or_else(|| anyhow!("cannot resolve {addr}"))?
            }
        };
        let stream = runtime::timeout(CONNECT_TIMEOUT, glommio::net::TcpStream::connect(sock))
            .await
            .ok_or_else(|| anyhow!("connecting to {addr} timed out"))?
            .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(PeerConn {
            addr: addr.to_string(),
            client_id,
            stream,
            correlation_id: 0,
        })
    }

    /// The "host:port" this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at `version` and reads its answer. No time bound of its own (wrap it in
    /// `runtime::timeout`); after an error or a timeout the connection must be dropped, its
    /// stream being at an unknown position.
    pub async fn send<R: KafkaRequest>(
        &mut self,
        req: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut frame = BytesMut::with_capacity(512);
        frame.put_i32(0);
        encode_request_header_into_buffer(&mut frame, &header)?;
        req.encode(&mut frame, version)
            .with_context(|| format!("encoding a {api:?} v{version} request"))?;
        let len = i32::try_from(frame.len() - 4)?;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&frame).await?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        let len = usize::try_from(i32::from_be_bytes(len))
            .ok()
            .filter(|l| (4..=RESPONSE_BYTES_MAX).contains(l))
            .ok_or_else(|| anyhow!("invalid response frame length from {}", self.addr))?;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await?;
        let mut body = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        if h.correlation_id != self.correlation_id {
            bail!(
                "{} answered correlation id {} to {}",
                self.addr,
                h.correlation_id,
                self.correlation_id
            );
        }
        R::Response::decode(&mut body, version)
            .with_context(|| format!("decoding a {api:?} v{version} response from {}", self.addr))
    }
}

/// The "host:port" of a live (registered, unfenced) broker in `img`.
pub fn address_of(img: &MetadataImage, node: i32) -> Option<String> {
    broker_address(img, node).map(|(host, port)| format!("{host}:{port}"))
}

thread_local! {
    /// Idle connections of this shard by peer address, each with the time it went idle.
    static POOL: RefCell<HashMap<String, Vec<(PeerConn, Instant)>>> = RefCell::new(HashMap::new());
}

fn take_pooled(addr: &str) -> Option<PeerConn> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let conns = pool.get_mut(addr)?;
        conns.retain(|(_, since)| since.elapsed() < POOL_IDLE_MAX);
        let c = conns.pop().map(|(c, _)| c);
        if conns.is_empty() {
            pool.remove(addr);
        }
        c
    })
}

fn give_back(c: PeerConn) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let conns = pool.entry(c.addr.clone()).or_default();
        if conns.len() < POOL_PER_PEER {
            conns.push((c, Instant::now()));
        }
    })
}

/// Sends one request to broker `node` (its advertised listener in the current image) and
/// returns its answer, within `timeout` in all (connecting included). Errors: the broker is
/// fenced or unknown, the connection failed, the time ran out, or the answer did not decode.
pub async fn call<R: KafkaRequest>(
    node: i32,
    req: &R,
    version: i16,
    client_id: &'static str,
    timeout: Duration,
) -> anyhow::Result<R::Response> {
    let addr = address_of(&image(), node)
        .ok_or_else(|| anyhow!("broker {node} is fenced or not registered"))?;
    let exchange = async {
        let mut conn = match take_pooled(&addr) {
            Some(c) => c,
            None => PeerConn::connect(&addr, client_id).await?,
        };
        let resp = conn.send(req, version).await?;
        give_back(conn);
        Ok(resp)
    };
    runtime::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|| {
            Err(anyhow!(
                "broker {node} ({addr}) did not answer within {} ms",
                timeout.as_millis()
            ))
        })
}
