//! The admin HTTP listener (`admin.listeners`, default `http://127.0.0.1:9644`): `GET
//! /metrics` (Prometheus text, OpenMetrics when the `Accept` header asks), `GET /v1/health`
//! and `GET /v1/ready` (docs/metrics.md).
//!
//! It is bound in `run_start` before any shard starts, without `SO_REUSEPORT`, so a port
//! already taken stops the broker with a clear error instead of sharing the port with
//! another process; shard 0 serves it as tasks of its own, so a scrape waits on the other
//! shards (`metrics::collect`) without holding shard 0. It is bounded like the Kafka port:
//! [`MAX_CONNECTIONS`] open at once (more are answered 503 and closed), a request head of at
//! most [`MAX_HEAD_BYTES`] (else 431), arriving within [`READ_TIMEOUT`] (else closed), and an
//! answer written within [`WRITE_TIMEOUT`]. GET only (405), known paths only (404).

pub mod health;
pub mod http;

use std::io::ErrorKind;
use std::net::Shutdown;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use self::health::BrokerState;
use crate::runtime;
use crate::server::metrics;

/// Admin connections open at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// Largest request head (request line and headers); a longer one is answered 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A request head must arrive whole within this long of the connection's accept.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer must be written within this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener bound at start-up, until shard 0 takes it.
static BOUND: Mutex<Option<std::net::TcpListener>> = Mutex::new(None);
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Admin connections open now.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Binds the admin listener (before the shards start), so a taken port fails the start.
pub fn bind(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on admin.listeners http://{addr}"))?;
    *BOUND.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
    tracing::info!(admin = %addr, "admin listener bound");
    Ok(())
}

/// On shard 0: serves the listener bound by [`bind`], if any, until the shard stops.
pub fn start() {
    let Some(std_listener) = BOUND.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    // SAFETY: the descriptor comes from a bound, listening std listener whose ownership
    // `into_raw_fd` gives up here; the glommio listener is its only owner from now on.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
    runtime::spawn(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => admit(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    runtime::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// An admin connection's place under [`MAX_CONNECTIONS`]; freed when dropped.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

fn admit(stream: TcpStream) {
    let taken = OPEN.fetch_add(1, Ordering::AcqRel);
    let slot = Slot;
    if taken >= MAX_CONNECTIONS {
        runtime::spawn(async move {
            let busy = http::text(503, "too many admin connections");
            let _ = send(stream, &busy).await;
            drop(slot);
        });
        return;
    }
    runtime::spawn(async move {
        serve(stream).await;
        drop(slot);
    });
}

/// Reads one request head, answers it, closes.
async fn serve(mut stream: TcpStream) {
    let answer = match read_head(&mut stream).await {
        Ok(head) => match http::parse_head(&head) {
            Ok(req) => route(&req).await,
            Err(e) => http::text(400, &e.to_string()),
        },
        Err(ReadError::TooLarge) => http::text(431, "request head too large"),
        Err(ReadError::Io(e)) => {
            tracing::debug!(error = %e, "admin connection closed before its request");
            let _ = stream.shutdown(Shutdown::Both).await;
            return;
        }
    };
    let _ = send(stream, &answer).await;
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

/// The request head, read within [`READ_TIMEOUT`]; past [`MAX_HEAD_BYTES`] without its end,
/// `TooLarge`. Bytes after the head (a body) are not read.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, ReadError> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if let Some(n) = http::head_len(&buf[..filled]) {
            buf.truncate(n);
            return Ok(buf);
        }
        if filled == buf.len() {
            return Err(ReadError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Io(ErrorKind::TimedOut.into()));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => return Err(ReadError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

async fn send(mut stream: TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let sent = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown(Shutdown::Both).await;
    sent
}

async fn route(req: &http::RequestHead<'_>) -> Vec<u8> {
    let known = matches!(req.path, "/metrics" | "/v1/health" | "/v1/ready");
    if !known {
        return http::text(404, &format!("no such path: {}", req.path));
    }
    if req.method != "GET" {
        return http::response(
            405,
            "text/plain; charset=utf-8",
            b"only GET\n",
            &[("Allow", "GET")],
        );
    }
    match req.path {
        "/metrics" => {
            let om = http::wants_openmetrics(req.accept);
            let body = metrics::collect::scrape(om).await;
            let ct = if om {
                metrics::render::OPENMETRICS_CONTENT_TYPE
            } else {
                metrics::render::PROMETHEUS_CONTENT_TYPE
            };
            http::response(200, ct, body.as_bytes(), &[])
        }
        "/v1/ready" => status_answer(true),
        _ => status_answer(false),
    }
}

/// `/v1/health` (`ready` false) or `/v1/ready`: 200 with JSON when serving with every log
/// dir online (and, for ready, this broker registered and unfenced in the metadata), else
/// 503 with the same JSON saying why.
fn status_answer(ready: bool) -> Vec<u8> {
    let state = health::state();
    let offline: Vec<serde_json::Value> = crate::storage::log_dirs::snapshot()
        .into_iter()
        .filter_map(|d| {
            d.offline.map(
                |why| serde_json::json!({"log_dir": d.path.display().to_string(), "reason": why}),
            )
        })
        .collect();
    let node = crate::cluster::partition_manager::broker_config().node_id;
    let img = crate::cluster::image();
    let live = !crate::cluster::multi_node() || img.is_live(node);
    let mut problems = Vec::new();
    if state != BrokerState::Serving {
        problems.push(format!("broker is {}", state.name()));
    }
    if !offline.is_empty() {
        problems.push(format!("{} log dir(s) offline", offline.len()));
    }
    if ready && !live {
        problems.push("broker not registered or fenced in the cluster metadata".to_string());
    }
    let ok = problems.is_empty();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "state": state.name(),
        "node_id": node,
        "shards": runtime::nr_shards(),
        "offline_log_dirs": offline,
        "registered": live,
        "problems": problems,
    });
    let status = if ok { 200 } else { 503 };
    http::response(status, "application/json", body.to_string().as_bytes(), &[])
}
