//! One client connection: read a frame (length checked before allocating),
//! handle it, write the response, in order. Like Kafka, a connection has one
//! request in processing at a time, so responses leave in request order and a
//! producer's pipelined batches are appended in the order they were sent.
//! Concurrency comes from many connections and from the shards a request fans
//! out to.
//!
//! Limits (docs/limits.md): the socket's read and write timeouts are
//! `connections.max.idle.ms` (set once; glommio arms a timer only while a
//! read or write is pending), so an idle or stalled peer is closed; a frame
//! must arrive whole within `socket.request.read.timeout.ms` of its length
//! prefix (the same read timer, narrowed to the time left); the frame's bytes are admitted
//! against the shard's `queued.max.request.bytes` before its body is read;
//! and the body buffer grows with what has arrived, so a peer that announces
//! a large frame and stalls holds little memory.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;

use crate::cluster::partition_manager::broker_config;
use crate::protocol::check_frame_len;

use super::handlers;
use super::limits::{admit_request, ConnectionSlot};

/// A frame up to this size gets its whole buffer at once; a larger one grows
/// (doubling) as its bytes arrive.
const FIRST_BUFFER_BYTES: usize = 1 << 20;

/// Serves one connection until the peer closes it, goes idle, or sends
/// something that must close it (oversized, slow or malformed frame).
/// `_slot` is the connection's place under `max.connections`, freed on return.
pub async fn serve(mut stream: TcpStream, _slot: ConnectionSlot) {
    let addr = stream.peer_addr().ok();
    let peer = addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    let host = addr.map(|a| a.ip().to_string()).unwrap_or_default();
    let cfg = broker_config();
    let max = cfg.socket_request_max_bytes;
    let limits = &cfg.limits;
    let idle = Duration::from_millis(limits.idle_ms);
    let frame_timeout = Duration::from_millis(limits.request_read_timeout_ms);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(idle));
    let _ = stream.set_write_timeout(Some(idle));
    tracing::debug!(%peer, "connection opened");
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut len).await {
            match e.kind() {
                ErrorKind::UnexpectedEof => {}
                ErrorKind::TimedOut => tracing::info!(
                    %peer, idle_ms = limits.idle_ms,
                    "closing idle connection (connections.max.idle.ms)"
                ),
                _ => tracing::debug!(%peer, error = %e, "read failed"),
            }
            break;
        }
        let size = match check_frame_len(i32::from_be_bytes(len), max) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let permit = admit_request(size, limits.queued_max_request_bytes).await;
        let buf = match read_body(&mut stream, size, idle, frame_timeout).await {
            Ok(b) => b,
            Err(e) => {
                match e.kind() {
                    ErrorKind::UnexpectedEof => {
                        tracing::debug!(%peer, "connection closed mid-frame")
                    }
                    ErrorKind::TimedOut => {
                        tracing::info!(%peer, size, error = %e, "closing connection mid-frame")
                    }
                    _ => tracing::debug!(%peer, error = %e, "read failed mid-frame"),
                }
                break;
            }
        };
        // As Kafka (delayed allocation for Produce only): a Produce keeps its
        // bytes counted until answered, since its record sets are slices of
        // the frame; any other request is decoded into small structures and
        // may wait on other clients (group barriers, long polls), so its
        // bytes are released before it is handled.
        let keep = buf[..2] == (ApiKey::Produce as i16).to_be_bytes();
        let permit = if keep {
            Some(permit)
        } else {
            permit.release();
            None
        };
        let result = handlers::handle(Bytes::from(buf), &host).await;
        match result {
            Ok(Some(resp)) => {
                if let Err(e) = stream.write_all(&resp).await {
                    if e.kind() == ErrorKind::TimedOut {
                        tracing::info!(%peer, idle_ms = limits.idle_ms,
                            "closing connection: response not read (connections.max.idle.ms)");
                    } else {
                        tracing::debug!(%peer, error = %e, "write failed");
                    }
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        }
        drop(permit);
    }
    // Dropping a glommio stream closes it later on the executor: close now.
    let _ = stream.shutdown(Shutdown::Both).await;
    tracing::debug!(%peer, "connection closed");
}

/// Reads a frame body of `size` bytes. Fails with `TimedOut` when the peer
/// stalls for `idle`, or when the whole body has not arrived within
/// `frame_timeout`. The socket's read timeout is narrowed to what is left of
/// the frame's time (a cell write, no syscall) and put back to `idle` after.
async fn read_body(
    stream: &mut TcpStream,
    size: usize,
    idle: Duration,
    frame_timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + frame_timeout;
    let mut buf = vec![0u8; size.min(FIRST_BUFFER_BYTES)];
    let mut filled = 0;
    let result = loop {
        if filled == size {
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "frame incomplete ({filled} of {size} bytes) after \
                     socket.request.read.timeout.ms ({} ms)",
                    frame_timeout.as_millis()
                ),
            ));
        }
        let _ = stream.set_read_timeout(Some(left.min(idle)));
        if filled == buf.len() {
            let grown = buf.len().saturating_mul(2).min(size);
            buf.resize(grown, 0);
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => break Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            // The narrowed timer fired: the loop head reports a spent deadline.
            Err(e) if e.kind() == ErrorKind::TimedOut && left < idle => {}
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                break Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "no bytes for connections.max.idle.ms ({} ms) mid-frame \
                         ({filled} of {size} bytes)",
                        idle.as_millis()
                    ),
                ))
            }
            Err(e) => break Err(e),
        }
    };
    let _ = stream.set_read_timeout(Some(idle));
    result.map(|()| buf)
}
