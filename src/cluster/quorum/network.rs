//! The quorum's TCP protocol and its client side (openraft's `RaftNetworkFactory` and
//! `RaftNetworkV2`).
//!
//! Wire format, both directions: `u32 length (big endian) | u8 kind | body`, the length
//! counting the kind and the body and bounded by [`MAX_FRAME_BYTES`]. A request's body is the
//! postcard encoding of `(Header, request)`; its response has the kind with [`RESPONSE_BIT`] set
//! and the body `Result<response, WireError>`. One request at a time per connection; a
//! connection is reused (pooled) after a complete exchange and dropped after any error, so the
//! next call reconnects.
//!
//! | kind | request                    | response                    |
//! |------|----------------------------|-----------------------------|
//! | 1    | openraft AppendEntries     | AppendEntriesResponse       |
//! | 2    | openraft Vote              | VoteResponse                |
//! | 3    | openraft PreVote           | VoteResponse                |
//! | 4    | full snapshot (vote, meta, bytes) | SnapshotResponse     |
//! | 5    | openraft TransferLeader    | TransferLeaderResponse      |
//! | 6    | ClientWrite{payload}       | the entry's log index       |
//! | 7    | Join{node_id, addr}        | ()                          |
//!
//! The header names the target node: a listener that is not that node answers `WrongNode`, so
//! a stale address never delivers a vote or entries to the wrong node.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::types::{Snapshot, SnapshotMeta, TypeConfig, Vote};
use super::NodeId;

/// Largest frame, either direction (so also the largest snapshot that can be sent).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Longest wait for a TCP connection to a peer (less if the RPC's own budget is shorter).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per peer address.
pub const MAX_IDLE_PER_PEER: usize = 4;
/// A pooled connection idle longer than this is closed instead of reused.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

pub const KIND_APPEND: u8 = 1;
pub const KIND_VOTE: u8 = 2;
pub const KIND_PRE_VOTE: u8 = 3;
pub const KIND_SNAPSHOT: u8 = 4;
pub const KIND_TRANSFER_LEADER: u8 = 5;
pub const KIND_CLIENT_WRITE: u8 = 6;
pub const KIND_JOIN: u8 = 7;
/// Set in a response's kind.
pub const RESPONSE_BIT: u8 = 0x80;

/// Sender and addressee of a request.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Header {
    pub from: NodeId,
    pub to: NodeId,
}

/// A request's failure, as the serving node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    #[error("reached node {actual}, not node {expected}")]
    WrongNode { expected: NodeId, actual: NodeId },
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("not committed in time")]
    Timeout,
    #[error("the node is shutting down")]
    Shutdown,
    #[error("{0}")]
    Failed(String),
}

/// Kind 4: a whole snapshot.
#[derive(Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Kind 6: a proposal forwarded to the leader, with the proposer's remaining time.
#[derive(Serialize, Deserialize)]
pub struct ClientWriteRequest {
    pub payload: Vec<u8>,
    pub timeout_ms: u64,
}

/// Kind 7: a learner asks the leader to add it.
#[derive(Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub addr: String,
}

/// Writes one frame.
pub async fn write_frame(stream: &mut TcpStream, kind: u8, body: &[u8]) -> io::Result<()> {
    let len = body.len() + 1;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes over the limit of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut buf = Vec::with_capacity(len + 4);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    buf.push(kind);
    buf.extend_from_slice(body);
    stream.write_all(&buf).await?;
    stream.flush().await
}

/// Reads one frame: its kind and body; `None` at a clean end of stream.
pub async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len} out of 1..={MAX_FRAME_BYTES}"),
        ));
    }
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind).await?;
    // Grown as bytes arrive: a lying length costs no up-front allocation.
    let mut body = Vec::new();
    let want = (len - 1) as u64;
    (&mut *stream).take(want).read_to_end(&mut body).await?;
    if body.len() as u64 != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a frame",
        ));
    }
    Ok(Some((kind[0], body)))
}

/// Decodes a postcard body that must fill `bytes` exactly; an error on any input.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// Encodes a postcard body.
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| e.to_string())
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Not connected: the request was not sent.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The exchange broke; the request may have been delivered.
    #[error("exchange with {addr} failed: {reason}")]
    Failed { addr: String, reason: String },
    #[error("no answer from {addr} within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("{0}")]
    Remote(WireError),
}

/// Idle connections, by peer address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<(TcpStream, Instant)>>>,
}

impl Pool {
    fn take(&self, addr: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(addr)?;
        while let Some((conn, since)) = conns.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, addr: &str, conn: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            let conns = idle.entry(addr.to_string()).or_default();
            if conns.len() < MAX_IDLE_PER_PEER {
                conns.push((conn, Instant::now()));
            }
        }
    }
}

/// Sends requests to peers; shared by every openraft client and the proposal forwarder.
#[derive(Clone)]
pub struct Transport {
    pub self_id: NodeId,
    pool: Arc<Pool>,
}

impl Transport {
    pub fn new(self_id: NodeId) -> Transport {
        Transport {
            self_id,
            pool: Arc::default(),
        }
    }

    /// One request to node `target` at `addr` and its response, within `ttl`. A `pooled` call
    /// may reuse an idle connection (openraft's RPCs, which are idempotent); others connect.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        addr: &str,
        kind: u8,
        req: &Req,
        ttl: Duration,
        pooled: bool,
    ) -> Result<Resp, CallError> {
        let failed = |reason: String| CallError::Failed {
            addr: addr.to_string(),
            reason,
        };
        let header = Header {
            from: self.self_id,
            to: target,
        };
        let body = encode_body(&(header, req)).map_err(failed)?;
        let deadline = tokio::time::Instant::now() + ttl;
        let reused = if pooled { self.pool.take(addr) } else { None };
        let (mut conn, fresh) = match reused {
            Some(c) => (c, false),
            None => (self.connect(addr, ttl.min(CONNECT_TIMEOUT)).await?, true),
        };
        let mut reply = self
            .exchange(&mut conn, addr, kind, &body, deadline, ttl)
            .await;
        if !fresh && matches!(reply, Err(CallError::Failed { .. })) {
            // An idle connection the peer closed (it restarted, say): one retry on a new one.
            // Only pooled calls get here, and openraft's RPCs are idempotent.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            conn = self.connect(addr, left.min(CONNECT_TIMEOUT)).await?;
            reply = self
                .exchange(&mut conn, addr, kind, &body, deadline, ttl)
                .await;
        }
        let (reply_kind, reply_body) = reply?;
        if reply_kind != kind | RESPONSE_BIT {
            return Err(failed(format!("response kind {reply_kind} to kind {kind}")));
        }
        let result: Result<Resp, WireError> = decode_body(&reply_body).map_err(failed)?;
        self.pool.put(addr, conn);
        result.map_err(CallError::Remote)
    }

    /// Writes a request and reads its response on `conn`, by `deadline`.
    async fn exchange(
        &self,
        conn: &mut TcpStream,
        addr: &str,
        kind: u8,
        body: &[u8],
        deadline: tokio::time::Instant,
        ttl: Duration,
    ) -> Result<(u8, Vec<u8>), CallError> {
        let failed = |reason: String| CallError::Failed {
            addr: addr.to_string(),
            reason,
        };
        let exchange = async {
            write_frame(conn, kind, body).await?;
            read_frame(conn).await
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => Err(CallError::Timeout {
                addr: addr.to_string(),
                ms: ttl.as_millis() as u64,
            }),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Ok(Ok(None)) => Err(failed("connection closed".into())),
            Ok(Ok(Some(reply))) => Ok(reply),
        }
    }

    async fn connect(&self, addr: &str, limit: Duration) -> Result<TcpStream, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let conn = tokio::time::timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(format!("connect timed out after {} ms", limit.as_millis())))?
            .map_err(|e| unreachable(e.to_string()))?;
        conn.set_nodelay(true)
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(conn)
    }
}

/// openraft's network factory: one client per target, all sharing the transport.
pub struct NetworkFactory {
    pub transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// openraft's client of one peer.
pub struct PeerClient {
    transport: Transport,
    target: NodeId,
    addr: String,
}

impl PeerClient {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: u8,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        let res = self
            .transport
            .call(self.target, &self.addr, kind, req, ttl, true)
            .await;
        res.map_err(|e| match e {
            CallError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.transport.self_id,
                target: self.target,
                timeout: ttl,
            }),
            CallError::Failed { .. } => RPCError::Network(NetworkError::new(&e)),
            CallError::Unreachable { .. } | CallError::Remote(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
        })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(KIND_APPEND, RPCTypes::AppendEntries, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(KIND_VOTE, RPCTypes::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(KIND_PRE_VOTE, RPCTypes::Vote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.rpc(KIND_SNAPSHOT, RPCTypes::InstallSnapshot, &req, &option) => {
                res.map_err(StreamingError::from)
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(
            KIND_TRANSFER_LEADER,
            RPCTypes::TransferLeader,
            &req,
            &option,
        )
        .await
    }
}
