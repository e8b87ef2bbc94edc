//! One client connection: read a frame (length checked before allocating),
//! handle it, write the response, in order.
//!
//! As in Kafka, a connection's requests are processed one at a time and in
//! order: every effect of a request (an append, an offset commit, a group
//! change) has happened before the next request is read. Unlike Kafka, the
//! connection does not wait for a response to be sent before reading the next
//! request: a reader reads and handles requests, and a writer sends their
//! responses in request order. This matters for acks=all Produce, whose
//! answer waits for an fsync ([`handlers::Reply::Later`]): a producer's
//! pipelined requests are appended while the first one's fsync runs, and
//! share the next group commit instead of each waiting for its own. At most
//! [`MAX_IN_FLIGHT`] answers wait per connection; the reader waits beyond that.
//! Concurrency also comes from many connections and from the shards a request
//! fans out to.
//!
//! The writer has its own descriptor for the socket (a `dup`), so each side
//! keeps its own timeout.
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;

use crate::cluster::partition_manager::broker_config;
use crate::protocol::check_frame_len;
use crate::protocol::parts::Part;
use crate::runtime;
use crate::runtime::stall::Service;

use super::handlers::{self, Reply};
use super::limits::{admit_request, ConnectionSlot, RequestPermit};
use super::metrics::{self, RequestTiming};

/// A frame up to this size gets its whole buffer at once; a larger one grows
/// (doubling) as its bytes arrive.
const FIRST_BUFFER_BYTES: usize = 1 << 20;

/// Requests handled but not yet answered, per connection (Kafka's clients
/// send at most 5 by default when idempotent; librdkafka up to 1,000,000).
pub const MAX_IN_FLIGHT: usize = 32;

/// A handled request waiting for its turn on the writer.
struct Answer {
    reply: Reply,
    /// A Produce keeps its bytes counted under `queued.max.request.bytes` until answered.
    permit: Option<RequestPermit>,
    /// When the frame was read, for the stall detector's Produce and Fetch service times.
    started: Option<(Service, Instant)>,
    /// The request's phases so far, for the metrics endpoint (`server::metrics`); the writer
    /// adds the total and the answer's size.
    timing: RequestTiming,
    /// When the frame's length prefix had arrived.
    arrived: Instant,
}

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
    let slice = cfg.io_slice_bytes;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(idle));
    let writer = match duplicate(&stream) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot duplicate the socket; closing connection");
            let _ = stream.shutdown(Shutdown::Both).await;
            return;
        }
    };
    let _ = writer.set_write_timeout(Some(idle));
    let (mut answers, queue) = mpsc::channel::<Answer>(MAX_IN_FLIGHT);
    let (done_tx, done) = oneshot::channel();
    {
        let peer = peer.clone();
        let idle_ms = limits.idle_ms;
        runtime::spawn(async move {
            write_answers(writer, queue, &peer, idle_ms, slice).await;
            let _ = done_tx.send(());
        });
    }
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
        let arrived = Instant::now();
        let size = match check_frame_len(i32::from_be_bytes(len), max) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let permit = admit_request(size, limits.queued_max_request_bytes).await;
        let buf = match read_body(&mut stream, size, (idle, frame_timeout), slice).await {
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
        // Frames are at least 8 bytes (check_frame_len): the API key is there.
        let api_key = i16::from_be_bytes([buf[0], buf[1]]);
        let read_done = Instant::now();
        runtime::stall::note_request(api_key);
        // As Kafka (delayed allocation for Produce only): a Produce keeps its
        // bytes counted until answered, since its record sets are slices of
        // the frame; any other request is decoded into small structures and
        // may wait on other clients (group barriers, long polls), so its
        // bytes are released before it is handled.
        let keep = api_key == ApiKey::Produce as i16;
        let permit = if keep {
            Some(permit)
        } else {
            permit.release();
            None
        };
        let service = if api_key == ApiKey::Fetch as i16 {
            Some(Service::Fetch)
        } else {
            keep.then_some(Service::Produce)
        };
        let started = service
            .filter(|_| runtime::stall::enabled())
            .map(|kind| (kind, Instant::now()));
        let (reply, error) = match handlers::handle(Bytes::from(buf), &host).await {
            Ok(r) => r,
            Err(e) => {
                metrics::count_refused(api_key, refusal_code(&e));
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let timing = RequestTiming {
            api_key,
            error,
            queue: read_done - arrived,
            handle: read_done.elapsed(),
            total: Duration::ZERO,
            request_bytes: size + 4,
            response_bytes: 0,
        };
        let answer = Answer {
            reply,
            permit,
            started,
            timing,
            arrived,
        };
        // Fails only when the writer has stopped (write error or timeout).
        if answers.send(answer).await.is_err() {
            break;
        }
    }
    // The writer sends what was already handled, then closes the socket.
    drop(answers);
    let _ = done.await;
    let _ = stream.shutdown(Shutdown::Both).await;
    tracing::debug!(%peer, "connection closed");
}

/// The Kafka error a request that closes its connection is counted under.
fn refusal_code(e: &crate::protocol::FrameError) -> i16 {
    use kafka_protocol::error::ResponseError;
    match e {
        crate::protocol::FrameError::UnsupportedVersion { .. } => {
            ResponseError::UnsupportedVersion.code()
        }
        _ => ResponseError::InvalidRequest.code(),
    }
}

/// A second glommio stream on the same socket (`F_DUPFD_CLOEXEC`).
fn duplicate(stream: &TcpStream) -> std::io::Result<TcpStream> {
    use nix::fcntl::{fcntl, FcntlArg};
    let fd =
        fcntl(stream.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(0)).map_err(std::io::Error::from)?;
    // SAFETY: `fd` was just created by the dup above and is owned by nothing
    // else; the new TcpStream takes ownership and closes it when dropped.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// Sends the connection's answers in request order, waiting for each one
/// that is not ready yet, until the reader is done or a write fails; then
/// shuts the socket down (which also ends the reader's pending read).
async fn write_answers(
    mut stream: TcpStream,
    mut queue: mpsc::Receiver<Answer>,
    peer: &str,
    idle_ms: u64,
    slice: usize,
) {
    // A second fd of the socket for splices, made on the first one.
    let mut splice_sock: Option<Arc<OwnedFd>> = None;
    let mut pace = Pace::new(slice);
    while let Some(answer) = queue.next().await {
        let frame = match answer.reply {
            Reply::Now(frame) => Ok(frame.map(Out::Whole)),
            Reply::Later(frame) => frame.await.map(|f| f.map(Out::Whole)),
            Reply::Parts(parts) => Ok(Some(Out::Parts(parts))),
        };
        let mut timing = answer.timing;
        match frame {
            Ok(Some(out)) => {
                timing.response_bytes = match &out {
                    Out::Whole(b) => b.len(),
                    Out::Parts(parts) => parts
                        .iter()
                        .map(|p| match p {
                            Part::Mem(b) => b.len(),
                            Part::File(r) => r.len,
                        })
                        .sum(),
                };
                let sent = match out {
                    // Every answer but a Fetch in parts: one write, no part list.
                    Out::Whole(b) => pace.write(&mut stream, &b).await,
                    Out::Parts(parts) => {
                        send_parts(&mut stream, &mut splice_sock, &mut pace, parts, idle_ms).await
                    }
                };
                if let Err(e) = sent {
                    if e.kind() == ErrorKind::TimedOut {
                        tracing::info!(%peer, idle_ms,
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
        if let Some((kind, t)) = answer.started {
            runtime::stall::record_service(kind, t.elapsed());
        }
        timing.total = answer.arrived.elapsed();
        metrics::count_request(&timing);
        drop(answer.permit);
    }
    // Dropping a glommio stream closes it later on the executor: close now.
    let _ = stream.shutdown(Shutdown::Both).await;
}

/// Counts the bytes a task copied to or from its socket since it last
/// yielded, so that it yields every `slice` bytes (`socket.io.slice.bytes`):
/// one `send` of a 4 MiB Fetch answer held a shard for about 5 ms on
/// loopback (BENCHMARKS.md).
struct Pace {
    slice: usize,
    moved: usize,
}

impl Pace {
    fn new(slice: usize) -> Pace {
        Pace {
            slice: slice.max(1),
            moved: 0,
        }
    }

    /// How much of `left` bytes to move next (at most what is left of the
    /// slice), yielding first if the slice is spent.
    async fn next(&mut self, left: usize) -> usize {
        if self.moved >= self.slice {
            runtime::yield_now().await;
            self.moved = 0;
        }
        left.min(self.slice - self.moved)
    }

    fn moved(&mut self, n: usize) {
        self.moved = self.moved.saturating_add(n);
    }

    /// Writes `b` whole, at most one slice per send.
    async fn write(&mut self, stream: &mut TcpStream, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() {
            let n = self.next(b.len()).await;
            stream.write_all(&b[..n]).await?;
            self.moved(n);
            b = &b[n..];
        }
        Ok(())
    }
}

/// A response frame ready to write: whole, or in parts (`protocol::parts`).
enum Out {
    Whole(Bytes),
    Parts(Vec<Part>),
}

/// Writes one response: its bytes through the stream, its file ranges
/// spliced from the segment files (`runtime::splice`), in order. A splice
/// that moves nothing for `idle_ms` fails with `TimedOut`, as a write does.
async fn send_parts(
    stream: &mut TcpStream,
    splice_sock: &mut Option<Arc<OwnedFd>>,
    pace: &mut Pace,
    parts: Vec<Part>,
    idle_ms: u64,
) -> std::io::Result<()> {
    for part in parts {
        match part {
            Part::Mem(b) => pace.write(stream, &b).await?,
            Part::File(r) => {
                stream.flush().await?;
                let sock = match splice_sock {
                    Some(s) => s,
                    None => splice_sock.insert(runtime::splice::dup_socket(stream.as_raw_fd())?),
                };
                let step = (idle_ms > 0).then(|| Duration::from_millis(idle_ms));
                runtime::splice::send_file(sock, &r.fd, r.pos, r.len, step).await?;
            }
        }
    }
    Ok(())
}

/// Reads a frame body of `size` bytes. Fails with `TimedOut` when the peer
/// stalls for `idle`, or when the whole body has not arrived within
/// `frame_timeout`. The socket's read timeout is narrowed to what is left of
/// the frame's time (a cell write, no syscall) and put back to `idle` after.
///
/// The body is not zeroed before it is read: what the socket already holds
/// is received straight into the buffer's unwritten capacity
/// ([`recv_into_spare`]). Only when the socket is empty does the read wait
/// through glommio (which keeps the timeouts), into a zeroed piece of at most
/// [`WAIT_CHUNK_BYTES`]. A receive takes at most `slice` bytes
/// (`socket.io.slice.bytes`), and the reader yields after that many, so a
/// large frame arriving fast does not hold the shard while it is copied.
async fn read_body(
    stream: &mut TcpStream,
    size: usize,
    (idle, frame_timeout): (Duration, Duration),
    slice: usize,
) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + frame_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(size.min(FIRST_BUFFER_BYTES));
    let mut pace = Pace::new(slice);
    let result = loop {
        let filled = buf.len();
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
        if filled == buf.capacity() {
            let grown = filled.saturating_mul(2).min(size);
            buf.reserve_exact(grown - filled);
        }
        let want = pace.next(buf.capacity().min(size) - filled).await;
        match recv_into_spare(stream.as_raw_fd(), &mut buf, want) {
            Some(Ok(0)) => break Err(ErrorKind::UnexpectedEof.into()),
            Some(Ok(n)) => {
                pace.moved(n);
                continue;
            }
            Some(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
            Some(Err(e)) => break Err(e),
            None => {}
        }
        // Nothing has arrived yet: wait through glommio, into a small zeroed piece.
        let _ = stream.set_read_timeout(Some(left.min(idle)));
        buf.resize(filled + want.min(WAIT_CHUNK_BYTES), 0);
        let read = stream.read(&mut buf[filled..]).await;
        buf.truncate(filled + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => break Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
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

/// How much of the body buffer is zeroed for a read that has to wait for
/// bytes; everything after it is received without zeroing.
const WAIT_CHUNK_BYTES: usize = 4096;

/// Receives up to `want` bytes that `fd` already holds into `buf`'s unwritten
/// capacity (`MSG_DONTWAIT`), and extends `buf` by what arrived. `None` when
/// nothing is there yet (would block).
fn recv_into_spare(fd: RawFd, buf: &mut Vec<u8>, want: usize) -> Option<std::io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    // SAFETY: `spare` is `want` (or more) bytes of `buf`'s own allocation,
    // which nothing else references while `buf` is borrowed mutably here; the
    // kernel writes at most `want` bytes there and reads none of them.
    let n =
        unsafe { nix::libc::recv(fd, spare.as_mut_ptr().cast(), want, nix::libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == ErrorKind::WouldBlock {
            None
        } else {
            Some(Err(e))
        };
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare
    // capacity (n <= want <= spare.len()), so the new length covers only
    // initialised bytes within the allocation.
    unsafe { buf.set_len(buf.len() + n) };
    Some(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn pace_bounds_each_copy_and_yields_when_the_slice_is_spent() {
        use std::future::Future;
        use std::task::{Context, Poll};
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // (bytes granted, times the future was pending first)
        let mut step = |pace: &mut Pace, left: usize| {
            let mut f = std::pin::pin!(pace.next(left));
            let mut pending = 0;
            loop {
                match f.as_mut().poll(&mut cx) {
                    Poll::Ready(n) => return (n, pending),
                    Poll::Pending => pending += 1,
                }
            }
        };
        let mut pace = Pace::new(10);
        assert_eq!(step(&mut pace, 4), (4, 0));
        pace.moved(4);
        assert_eq!(step(&mut pace, 100), (6, 0), "the rest of the slice");
        pace.moved(6);
        assert_eq!(
            step(&mut pace, 100),
            (10, 1),
            "spent: yields once, then a new slice"
        );
        pace.moved(3);
        assert_eq!(step(&mut pace, 5), (5, 0));
        let mut unbounded = Pace::new(usize::MAX);
        unbounded.moved(1 << 30);
        assert_eq!(step(&mut unbounded, 1 << 30), (1 << 30, 0));
    }

    #[test]
    fn recv_into_spare_takes_what_arrived_without_zeroing() {
        let (mut tx, rx) = UnixStream::pair().expect("socket pair");
        let mut buf = Vec::with_capacity(8);
        buf.extend_from_slice(b"ab");
        let recv = |buf: &mut Vec<u8>, want| {
            recv_into_spare(rx.as_raw_fd(), buf, want).map(|r| r.expect("recv"))
        };
        // Nothing sent yet: would block, buffer unchanged.
        assert_eq!(recv(&mut buf, 6), None);
        assert_eq!(buf, b"ab");
        tx.write_all(b"cdefghij").expect("write");
        // At most `want` bytes, appended after what was there.
        assert_eq!(recv(&mut buf, 4), Some(4));
        assert_eq!(buf, b"abcdef");
        // Never past the capacity, whatever `want` says.
        assert_eq!(recv(&mut buf, 100), Some(2));
        assert_eq!(buf, b"abcdefgh");
        // Peer closed: the rest, then 0, as a read at end of stream.
        drop(tx);
        buf.reserve(8);
        assert_eq!(recv(&mut buf, 8), Some(2));
        assert_eq!(buf, b"abcdefghij");
        assert_eq!(recv(&mut buf, 8), Some(0));
    }
}
