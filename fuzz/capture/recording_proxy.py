"""A TCP proxy between real Kafka clients and a broker that keeps a copy of
every request frame it forwards, for the fuzz corpus: the fault proxy of the
integration tests (tests/faultproxy.py) with no faults and a recording hook.

The broker must advertise the proxy's address (`advertised.listeners`), or
clients connect to it directly after their first Metadata request.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from faultproxy import AckDroppingProxy  # noqa: E402

# Largest frame kept; larger ones are forwarded but not recorded.
MAX_RECORDED_FRAME_BYTES = 256 << 10


@dataclass(frozen=True)
class Captured:
    """One request frame as sent, with its length prefix, and the label of the
    scenario that was running (the client that sent it)."""
    label: str
    api_key: int
    api_version: int
    frame: bytes


class RecordingProxy(AckDroppingProxy):
    """Listens on 127.0.0.1:`port`, forwards to 127.0.0.1:`upstream_port`
    (dropping nothing), and appends every request frame to `captured`. Set
    `label` before each scenario to tag what it sends."""

    def __init__(self, port: int, upstream_port: int):
        super().__init__(port, upstream_port, drop_rate=0.0, max_drops=0)
        self.label = "none"
        self.captured: list[Captured] = []

    def _on_request(self, frame: bytes) -> None:
        if len(frame) > MAX_RECORDED_FRAME_BYTES:
            return
        api_key, version = struct.unpack(">hh", frame[4:8])
        with self._lock:
            self.captured.append(Captured(self.label, api_key, version, frame))
