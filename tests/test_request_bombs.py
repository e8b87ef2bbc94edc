"""Requests whose array counts claim far more elements than the frame holds
("allocation bombs"): before protocol/bounds.rs, the decoder allocated for the
claimed count and the whole broker aborted on a 14-byte frame. Each bomb must
now close its connection with a WARN line saying which field and what count,
and the broker must keep serving real clients."""
import socket
import struct
import time

import pytest

from conftest import group_settings
from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq
from rawwire import frame, send_expect_close

pytestmark = pytest.mark.sluice_only  # reads the broker's log

BOMB = 0x7FFFFFFF
# Unsigned varint of BOMB + 1: a compact array of 0x7fffffff elements.
COMPACT_BOMB = bytes([0x80, 0x80, 0x80, 0x80, 0x08])


def _h1(api: int, version: int, corr: int = 1) -> bytes:
    """Request header v1: key, version, correlation id, null client id."""
    return struct.pack(">hhih", api, version, corr, -1)


def _h2(api: int, version: int, corr: int = 1) -> bytes:
    """Request header v2 (flexible requests): v1 plus an empty tagged-field section."""
    return _h1(api, version, corr) + b"\x00"


def _s(x: str) -> bytes:
    b = x.encode()
    return struct.pack(">h", len(b)) + b


def _cs(x: str) -> bytes:
    b = x.encode()
    return bytes([len(b) + 1]) + b


def _wait_log(broker, *needles: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in broker.log_path.read_text(errors="replace").splitlines():
            if "WARN" in line and all(n in line for n in needles):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no WARN line with {needles} in {broker.log_path}")
        time.sleep(0.1)


def _assert_serving(broker):
    topic = uniq("after-bombs")
    create_topic(broker.bootstrap, topic, 1)
    produce_confluent(broker.bootstrap, topic, [Rec(b"k", b"still here")], partition=0)
    got = consume_confluent(broker.bootstrap, topic, [0], 1)
    assert [g.value for g in got] == [b"still here"]
    assert broker.alive()


def test_array_bombs_close_the_connection_and_the_broker_keeps_serving(broker):
    port = broker.port
    bombs = [
        # Metadata v0: topics (i32 count) 0x7fffffff: the 14-byte frame.
        (_h1(3, 0) + struct.pack(">i", BOMB), ("MetadataRequest v0.topics", "2147483647 elements")),
        # Metadata v12 (flexible): topics as a compact array.
        (_h2(3, 12) + COMPACT_BOMB, ("MetadataRequest v12.topics", "2147483647 elements")),
        # CreateTopics v2: one topic whose assignments array is the bomb.
        (
            _h1(19, 2) + struct.pack(">i", 1) + _s("t") + struct.pack(">ihi", -1, -1, BOMB),
            ("CreateTopicsRequest v2.topics[0].assignments", "2147483647 elements"),
        ),
        # Produce v3: one topic whose partition_data array is the bomb.
        (
            _h1(0, 3) + struct.pack(">hhii", -1, -1, 5000, 1) + _s("t") + struct.pack(">i", BOMB),
            ("ProduceRequest v3.topic_data[0].partition_data", "2147483647 elements"),
        ),
        # Produce v9 (flexible): the same, nested compact arrays.
        (
            _h2(0, 9) + b"\x00" + struct.pack(">hi", -1, 5000) + b"\x02" + _cs("t") + COMPACT_BOMB,
            ("ProduceRequest v9.topic_data[0].partition_data", "2147483647 elements"),
        ),
    ]
    for body, needles in bombs:
        closed, _ = send_expect_close(port, frame(body))
        assert closed, needles
        line = _wait_log(broker, *needles)
        assert "closing connection" in line and "malformed request body" in line, line
        assert broker.alive(), needles
    _assert_serving(broker)


def _join_group_v0(group: str, metadata: bytes) -> bytes:
    return (
        _h1(11, 0, 7)
        + _s(group)
        + struct.pack(">i", 10000)  # session timeout
        + _s("")  # member id
        + _s("consumer")
        + struct.pack(">i", 1)
        + _s("range")
        + struct.pack(">i", len(metadata))
        + metadata
    )


def test_consumer_subscription_bomb_in_join_group_metadata(broker_factory):
    """A JoinGroup member's consumer-protocol metadata is decoded by the broker
    (OffsetDelete asks which topics the group subscribes to). A topic array
    bomb there makes the subscription unreadable (every topic counts as
    subscribed), logs why, and aborts nothing."""
    broker = broker_factory(settings=group_settings())
    group = uniq("bomb-group")
    # ConsumerProtocolSubscription v0: version, then topics (i32 count).
    metadata = struct.pack(">hi", 0, BOMB)
    with socket.create_connection(("127.0.0.1", broker.port), timeout=15) as s:
        s.sendall(frame(_join_group_v0(group, metadata)))
        head = s.recv(4)
        assert len(head) == 4, "no JoinGroup response"
        (size,) = struct.unpack(">i", head)
        resp = b""
        while len(resp) < size:
            resp += s.recv(size - len(resp))
        corr, err = struct.unpack(">ih", resp[:6])
        assert (corr, err) == (7, 0), (corr, err)
        # OffsetDelete v0 (key 47) for one partition of a topic.
        body = _h1(47, 0, 8) + _s(group) + struct.pack(">i", 1) + _s("t") + struct.pack(">ii", 1, 0)
        s.sendall(frame(body))
        head = s.recv(4)
        assert len(head) == 4, "no OffsetDelete response (broker died?)"
        (size,) = struct.unpack(">i", head)
        resp = b""
        while len(resp) < size:
            resp += s.recv(size - len(resp))
    corr, err = struct.unpack(">ih", resp[:6])
    assert corr == 8 and err == 0
    # The partition is reported subscribed (GROUP_SUBSCRIBED_TO_TOPIC, 86).
    assert resp.endswith(struct.pack(">ih", 0, 86)), resp.hex()
    line = _wait_log(broker, "unreadable consumer protocol subscription",
                     "ConsumerProtocolSubscription v0.topics", "2147483647 elements")
    assert group in line
    _assert_serving(broker)
