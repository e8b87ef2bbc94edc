"""Hand-built Kafka frames and raw-socket helpers for tests of hostile or
malformed input (no real client sends these), plus a check that the broker
logged why it closed a given connection.

Only the fields a test needs are encoded; every encoder here is exercised
against the broker by a test that expects a normal answer from it."""
from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path


def i16(n: int) -> bytes:
    return struct.pack(">h", n)


def i32(n: int) -> bytes:
    return struct.pack(">i", n)


def string(s: bytes | str | None) -> bytes:
    """Kafka STRING / NULLABLE_STRING (i16 length, -1 = null)."""
    if s is None:
        return i16(-1)
    b = s.encode() if isinstance(s, str) else s
    return i16(len(b)) + b


def header(api_key: int, version: int, corr: int, client_id: str | None = "raw") -> bytes:
    """Request header v1 (non-flexible APIs/versions)."""
    return i16(api_key) + i16(version) + i32(corr) + string(client_id)


def frame(body: bytes) -> bytes:
    return i32(len(body)) + body


def api_versions(corr: int, pad: int = 0) -> bytes:
    """ApiVersions v0, optionally padded with trailing bytes (tolerated)."""
    return frame(header(18, 0, corr) + b"\0" * pad)


def metadata_v1(corr: int, topics: list[bytes | str | None] | None) -> bytes:
    """Metadata v1: topics array (None = null = all topics)."""
    body = i32(-1) if topics is None else i32(len(topics)) + b"".join(string(t) for t in topics)
    return frame(header(3, 1, corr) + body)


def create_topics_v2(corr: int, name: bytes | str, partitions: int = 1) -> bytes:
    """CreateTopics v2: one topic, no assignments, no configs."""
    topic = string(name) + i32(partitions) + i16(1) + i32(0) + i32(0)
    return frame(header(19, 2, corr) + i32(1) + topic + i32(10_000) + b"\0")


def produce_v3(corr: int, topic: bytes | str, records: bytes | None, partition: int = 0,
               acks: int = 1) -> bytes:
    """Produce v3 with one partition's record set (raw bytes, None = null)."""
    recs = i32(-1) if records is None else i32(len(records)) + records
    body = string(None) + i16(acks) + i32(10_000) + i32(1) + string(topic) + i32(1) \
        + i32(partition) + recs
    return frame(header(0, 3, corr) + body)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_frame(s: socket.socket, timeout: float = 5.0) -> bytes | None:
    """One response frame (without its length); None if the peer closed first or
    nothing whole came within `timeout` seconds."""
    s.settimeout(timeout)
    buf = b""
    try:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except (ConnectionResetError, socket.timeout):
        return None
    return buf[4:]


def correlation(resp: bytes) -> int:
    return struct.unpack(">i", resp[:4])[0]


def closed_by_peer(s: socket.socket, within: float) -> bool:
    """True if the broker closes `s` (EOF or reset) within `within` seconds,
    discarding anything it sends first."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


def send_expect_close(port: int, data: bytes, within: float = 5.0) -> tuple[bool, int]:
    """Send `data` on a new connection; (closed without an answer?, our local port)."""
    s = connect(port)
    local = s.getsockname()[1]
    try:
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        s.close()
        return True, local
    s.settimeout(within)
    got = b""
    closed = False
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return closed and got == b"", local


def wait_log(log: Path, pattern: str, within: float = 5.0, also: str | None = None) -> str:
    """The first broker log line matching the regex `pattern` (and the regex
    `also`, if given), waiting up to `within` s; raises AssertionError with the
    log's tail if none appears."""
    rx = re.compile(pattern)
    rx2 = re.compile(also) if also else None
    deadline = time.monotonic() + within
    while True:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if rx.search(line) and (rx2 is None or rx2.search(line)):
                return line
        if time.monotonic() >= deadline:
            tail = "\n".join(text.splitlines()[-30:])
            raise AssertionError(f"no log line matches {pattern!r} and {also!r}; log tail:\n{tail}")
        time.sleep(0.1)


def peer_log(log: Path, local_port: int, reason: str, within: float = 5.0) -> str:
    """The broker's log line about our connection from `local_port` matching `reason`."""
    return wait_log(log, rf"peer=127\.0\.0\.1:{local_port}\b", within, also=reason)


def fetch_v4(corr: int, topic: str, partitions: list[int], max_bytes: int,
             partition_max_bytes: int, max_wait_ms: int = 0, min_bytes: int = 0) -> bytes:
    """Fetch v4 from offset 0 of each partition (read uncommitted)."""
    parts = b"".join(i32(p) + struct.pack(">q", 0) + i32(partition_max_bytes) for p in partitions)
    body = i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + b"\0" \
        + i32(1) + string(topic) + i32(len(partitions)) + parts
    return frame(header(1, 4, corr) + body)


def fetch_v4_record_bytes(resp: bytes) -> dict[int, int]:
    """Partition -> bytes of records in a Fetch v4 response (after the correlation id)."""
    p = 4  # throttle
    out = {}
    (n_topics,) = struct.unpack_from(">i", resp, p)
    p += 4
    for _ in range(n_topics):
        (n,) = struct.unpack_from(">h", resp, p)
        p += 2 + n
        (n_parts,) = struct.unpack_from(">i", resp, p)
        p += 4
        for _ in range(n_parts):
            index, _err, _hw, _lso = struct.unpack_from(">ihqq", resp, p)
            p += 22
            (n_aborted,) = struct.unpack_from(">i", resp, p)
            p += 4 + max(n_aborted, 0) * 16
            (size,) = struct.unpack_from(">i", resp, p)
            p += 4 + max(size, 0)
            out[index] = max(size, 0)
    return out
