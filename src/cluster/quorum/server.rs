//! The quorum's listener: accepts peers' connections and serves their requests (the protocol is
//! described in `network.rs`), one request at a time per connection, each bounded in time.
//! openraft's RPCs go to the local `Raft`; `ClientWrite` and `Join` to the node (`node.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::network::{
    decode_body, encode_body, read_frame, write_frame, ClientWriteRequest, Header, JoinRequest,
    SnapshotRequest, WireError, KIND_APPEND, KIND_CLIENT_WRITE, KIND_JOIN, KIND_PRE_VOTE,
    KIND_SNAPSHOT, KIND_TRANSFER_LEADER, KIND_VOTE, RESPONSE_BIT,
};
use super::node::Node;
use super::types::{Snapshot, TypeConfig};

/// Most connections served at once; more are closed at once.
pub const MAX_INBOUND_CONNECTIONS: usize = 256;
/// A connection with no request for this long is closed (clients reconnect).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a request is served before the answer is `Timeout`.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a response takes to write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (out of file descriptors, typically).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    let permits = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("quorum listener: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                "quorum listener: {MAX_INBOUND_CONNECTIONS} connections open, refusing {peer}"
            );
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(conn, &node).await {
                tracing::debug!("quorum connection from {peer} closed: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(mut conn: TcpStream, node: &Node) -> Result<(), String> {
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut conn)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(frame))) => frame,
        };
        let (kind, body) = frame;
        let reply = dispatch(node, kind, &body).await?;
        tokio::time::timeout(
            WRITE_TIMEOUT,
            write_frame(&mut conn, kind | RESPONSE_BIT, &reply),
        )
        .await
        .map_err(|_| "response write timed out".to_string())?
        .map_err(|e| e.to_string())?;
    }
}

/// Serves one request; the response body, or an error that closes the connection (a request
/// that does not decode).
async fn dispatch(node: &Node, kind: u8, body: &[u8]) -> Result<Vec<u8>, String> {
    let raft = &node.raft;
    match kind {
        KIND_APPEND => {
            serve_rpc(
                node,
                body,
                |req: AppendEntriesRequest<TypeConfig>| async move {
                    raft.append_entries(req).await.map_err(fatal)
                },
            )
            .await
        }
        KIND_VOTE => {
            serve_rpc(node, body, |req: VoteRequest<TypeConfig>| async move {
                raft.vote(req).await.map_err(fatal)
            })
            .await
        }
        KIND_PRE_VOTE => {
            serve_rpc(node, body, |req: VoteRequest<TypeConfig>| async move {
                raft.pre_vote(req).await.map_err(fatal)
            })
            .await
        }
        KIND_SNAPSHOT => {
            serve_rpc(node, body, |req: SnapshotRequest| async move {
                let snap = Snapshot {
                    meta: req.meta,
                    snapshot: req.data,
                };
                raft.install_full_snapshot(req.vote, snap)
                    .await
                    .map_err(fatal)
            })
            .await
        }
        KIND_TRANSFER_LEADER => {
            serve_rpc(
                node,
                body,
                |req: TransferLeaderRequest<TypeConfig>| async move {
                    raft.handle_transfer_leader(req).await.map_err(fatal)
                },
            )
            .await
        }
        KIND_CLIENT_WRITE => {
            serve_rpc(node, body, |req: ClientWriteRequest| {
                node.handle_client_write(req)
            })
            .await
        }
        KIND_JOIN => serve_rpc(node, body, |req: JoinRequest| node.handle_join(req)).await,
        other => Err(format!("unknown request kind {other}")),
    }
}

/// Decodes a request, checks it is addressed to this node, serves it within
/// [`HANDLER_TIMEOUT`] and encodes the result.
async fn serve_rpc<Req, Resp, F, Fut>(node: &Node, body: &[u8], serve: F) -> Result<Vec<u8>, String>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, WireError>>,
{
    let (header, req): (Header, Req) = decode_body(body)?;
    let result = if header.to != node.id {
        Err(WireError::WrongNode {
            expected: header.to,
            actual: node.id,
        })
    } else {
        match tokio::time::timeout(HANDLER_TIMEOUT, serve(req)).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout),
        }
    };
    encode_body(&result)
}

/// A local openraft failure, as reported to the peer.
fn fatal(e: impl std::fmt::Display) -> WireError {
    WireError::Failed(e.to_string())
}
