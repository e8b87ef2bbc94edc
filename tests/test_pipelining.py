"""A connection's requests are handled in order, and their answers leave in
order, while an acks=all Produce waits for its fsync (connection.rs): the
next request is read and appended meanwhile, and shares the group commit.

Checked with pipelined raw frames (many requests written before any answer
is read) and with librdkafka pipelining acks=all batches of an idempotent
producer."""
from __future__ import annotations

import struct

from confluent_kafka import Producer

from kclients import Rec, consume_confluent, create_topic, uniq
from rawwire import connect
from test_bad_crc import produce_v3, record_batch


def produce_answer(resp: bytes) -> tuple[int, int, int, int]:
    """(correlation id, partition, error code, base offset) of a one-partition Produce v3 answer."""
    cid, ntopics = struct.unpack_from(">ii", resp, 0)
    assert ntopics == 1
    (nlen,) = struct.unpack_from(">h", resp, 8)
    pos = 10 + nlen
    nparts, index, err, base = struct.unpack_from(">iihq", resp, pos)
    assert nparts == 1
    return cid, index, err, base


def read_frames(s, n: int, timeout: float = 15.0) -> list[bytes]:
    """Up to `n` whole response frames (without lengths), fewer if the peer
    closes or goes quiet for `timeout` seconds; answers may share a recv."""
    s.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        if len(buf) >= 4 and len(buf) >= 4 + struct.unpack_from(">i", buf)[0]:
            size = struct.unpack_from(">i", buf)[0]
            out.append(buf[4:4 + size])
            buf = buf[4 + size:]
            continue
        try:
            chunk = s.recv(1 << 16)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        buf += chunk
    return out


def api_versions_v0(cid: int) -> bytes:
    body = struct.pack(">hhi", 18, 0, cid) + struct.pack(">h", 3) + b"raw"
    return struct.pack(">i", len(body)) + body


def test_pipelined_requests_are_answered_in_order(shared_broker):
    topic = uniq("pipe")
    create_topic(shared_broker.bootstrap, topic, partitions=2)
    frames = []
    # 40 acks=all produces over two partitions, with an ApiVersions in the
    # middle: all written before the first answer is read.
    for cid in range(40):
        batch = record_batch([Rec(None, f"v{cid}".encode(), [])], base_ts=1_700_000_000_000 + cid)
        frames.append(produce_v3(topic, cid % 2, batch, cid))
        if cid == 20:
            frames.append(api_versions_v0(1000))
    with connect(shared_broker.port) as s:
        s.sendall(b"".join(frames))
        answers = read_frames(s, 41)
    assert len(answers) == 41, "the broker closed the connection or went quiet"
    cids = [struct.unpack_from(">i", a)[0] for a in answers]
    assert cids == list(range(21)) + [1000] + list(range(21, 40))
    next_offset = {0: 0, 1: 0}
    for a in answers[:21] + answers[22:]:
        cid, partition, err, base = produce_answer(a)
        assert err == 0, (cid, err)
        assert partition == cid % 2
        # Appended in request order: each partition's offsets follow the send order.
        assert base == next_offset[partition], (cid, base)
        next_offset[partition] += 1
    got = consume_confluent(shared_broker.bootstrap, topic, [0, 1], 40)
    for p in (0, 1):
        values = [g.value for g in got if g.partition == p]
        assert values == [f"v{c}".encode() for c in range(40) if c % 2 == p]


def test_answers_before_a_malformed_frame_are_still_sent(shared_broker):
    topic = uniq("pipe-bad")
    create_topic(shared_broker.bootstrap, topic, partitions=1)
    good = [produce_v3(topic, 0, record_batch([Rec(None, b"x", [])], base_ts=1), cid)
            for cid in range(5)]
    # An unknown API key after them closes the connection, once the five
    # acks=all answers have gone out.
    bad = struct.pack(">i", 8) + struct.pack(">hhi", 9999, 0, 99)
    with connect(shared_broker.port) as s:
        s.sendall(b"".join(good) + bad)
        answers = read_frames(s, 6)
    # The five answers, then the connection closes (no sixth frame).
    assert [produce_answer(a)[0] for a in answers] == [0, 1, 2, 3, 4]


def test_idempotent_producer_pipelining_acks_all_keeps_order(shared_broker):
    """librdkafka keeps up to 5 acks=all requests in flight per connection;
    with linger 0 nearly every message is its own request."""
    topic = uniq("pipe-idem")
    create_topic(shared_broker.bootstrap, topic, partitions=3)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 0, "max.in.flight.requests.per.connection": 5})
    offsets: dict[int, list[int]] = {0: [], 1: [], 2: []}
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets[msg.partition()].append(msg.offset())

    n = 6000
    for i in range(n):
        p.produce(topic, value=b"%d" % i, partition=i % 3, on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors
    for part, offs in offsets.items():
        assert offs == list(range(n // 3)), part
    got = consume_confluent(shared_broker.bootstrap, topic, [0, 1, 2], n)
    for part in range(3):
        values = [int(g.value) for g in got if g.partition == part]
        assert values == list(range(part, n, 3))
