//! One client connection: read a frame (length checked before allocating),
//! handle it, write the response, in order. Like Kafka, a connection has one
//! request in processing at a time, so responses leave in request order and a
//! producer's pipelined batches are appended in the order they were sent.
//! Concurrency comes from many connections and from the shards a request fans
//! out to.

use std::net::Shutdown;

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::cluster::partition_manager::broker_config;
use crate::protocol::check_frame_len;

use super::handlers;

/// Serves one connection until the peer closes it or sends something that
/// must close it (oversized or malformed frame).
pub async fn serve(mut stream: TcpStream) {
    let addr = stream.peer_addr().ok();
    let peer = addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    let host = addr.map(|a| a.ip().to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let max = broker_config().socket_request_max_bytes;
    tracing::debug!(%peer, "connection opened");
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut len).await {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(%peer, error = %e, "read failed");
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
        let mut buf = vec![0u8; size];
        if let Err(e) = stream.read_exact(&mut buf).await {
            tracing::debug!(%peer, error = %e, "connection closed mid-frame");
            break;
        }
        match handlers::handle(Bytes::from(buf), &host).await {
            Ok(Some(resp)) => {
                if let Err(e) = stream.write_all(&resp).await {
                    tracing::debug!(%peer, error = %e, "write failed");
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        }
    }
    // Dropping a glommio stream closes it later on the executor: close now.
    let _ = stream.shutdown(Shutdown::Both).await;
    tracing::debug!(%peer, "connection closed");
}
