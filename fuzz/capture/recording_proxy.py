"""A TCP proxy between real Kafka clients and a broker that keeps a copy of
every request frame it forwards, for the fuzz corpus.

Kafka framing: int32 length, then the frame; a request frame starts with api
key (int16), api version (int16), correlation id (int32). Each client
connection gets two threads: client -> broker (frames are parsed, recorded,
forwarded) and broker -> client (bytes are copied as they come). The broker
must advertise the proxy's address (`advertised.listeners`), or clients
connect to it directly after their first Metadata request.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

# Largest frame kept; larger ones are forwarded but not recorded.
MAX_RECORDED_FRAME_BYTES = 256 << 10
# Largest frame forwarded at all (the broker's socket.request.max.bytes default).
MAX_FRAME_BYTES = 100 << 20


@dataclass(frozen=True)
class Captured:
    """One request frame as sent, with its length prefix, and the label of the
    scenario that was running (the client that sent it)."""
    label: str
    api_key: int
    api_version: int
    frame: bytes


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class RecordingProxy:
    """Listens on 127.0.0.1:`port`, forwards to 127.0.0.1:`upstream_port`, and
    appends every request frame to `captured`. Set `label` before each
    scenario to tag what it sends."""

    def __init__(self, port: int, upstream_port: int):
        self.port, self.upstream_port = port, upstream_port
        self.label = "none"
        self.captured: list[Captured] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> "RecordingProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for c in list(self._conns):
            self._close(c)

    @staticmethod
    def _close(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                self._close(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            self._conns += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        while not self._stop.is_set():
            head = _read_exact(client, 4)
            if head is None:
                break
            (size,) = struct.unpack(">i", head)
            if size < 0 or size > MAX_FRAME_BYTES:
                break
            body = _read_exact(client, size)
            if body is None:
                break
            if 4 <= size <= MAX_RECORDED_FRAME_BYTES:
                key, version = struct.unpack(">hh", body[:4])
                with self._lock:
                    self.captured.append(Captured(self.label, key, version, head + body))
            try:
                upstream.sendall(head + body)
            except OSError:
                break
        self._close(client)
        self._close(upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                chunk = upstream.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            try:
                client.sendall(chunk)
            except OSError:
                break
        self._close(client)
        self._close(upstream)
