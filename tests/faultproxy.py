"""A TCP proxy between Kafka clients and the broker that loses Produce
acknowledgements: it forwards every request, and when the broker's answer to
a Produce request comes back it may close both connections instead of
passing the answer on. The broker has then stored the batch, but the client
never hears so, and retries it. Only a broker that deduplicates idempotent
producers' retries keeps every record exactly once.

The proxy reads Kafka's framing (int32 length, then the frame): request
headers start with api key (int16), api version (int16), correlation id
(int32); response frames start with the correlation id.
"""

from __future__ import annotations

import random
import socket
import struct
import threading

PRODUCE = 0


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


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _read_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > 200 << 20:
        return None
    body = _read_exact(sock, size)
    return None if body is None else head + body


class AckDroppingProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream_port`.
    Each Produce answer is dropped (both connections closed) with probability
    `drop_rate`, at most `max_drops` times in all."""

    def __init__(self, port: int, upstream_port: int, drop_rate: float = 0.1,
                 max_drops: int = 20, seed: int = 7):
        self.port, self.upstream_port = port, upstream_port
        self.drop_rate, self.max_drops = drop_rate, max_drops
        self.dropped = 0
        self.produce_answers = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> "AckDroppingProxy":
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
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            self._conns += [client, upstream]
            api_of: dict[int, int] = {}
            threading.Thread(target=self._requests, args=(client, upstream, api_of),
                             daemon=True).start()
            threading.Thread(target=self._responses, args=(client, upstream, api_of),
                             daemon=True).start()

    def _on_request(self, frame: bytes) -> None:
        """Sees each request frame (length prefix included) before it is forwarded;
        for subclasses (fuzz/capture/recording_proxy.py keeps them)."""

    def _requests(self, client, upstream, api_of) -> None:
        while True:
            frame = _read_frame(client)
            if frame is None:
                break
            api_key, _ver, corr = struct.unpack(">hhi", frame[4:12])
            api_of[corr] = api_key
            self._on_request(frame)
            try:
                upstream.sendall(frame)
            except OSError:
                break
        self._close(client)
        self._close(upstream)

    def _responses(self, client, upstream, api_of) -> None:
        while True:
            frame = _read_frame(upstream)
            if frame is None:
                break
            (corr,) = struct.unpack(">i", frame[4:8])
            if api_of.pop(corr, None) == PRODUCE:
                with self._lock:
                    self.produce_answers += 1
                    drop = (self.dropped < self.max_drops
                            and self._rng.random() < self.drop_rate)
                    if drop:
                        self.dropped += 1
                if drop:
                    break
            try:
                client.sendall(frame)
            except OSError:
                break
        self._close(client)
        self._close(upstream)
