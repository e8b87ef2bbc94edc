"""Acceptance 6: a record batch whose CRC fails is refused (CORRUPT_MESSAGE)
and never stored.

No real client sends a bad CRC, so this is the one place where the suite
builds protocol bytes by hand: a Produce v3 request carrying a magic-2 record
batch encoded here.  The same encoder with a correct CRC must be accepted
(error 0) and its record read back by a real client, which proves the encoder
is right and so that the refusal is about the CRC.
"""

import socket
import struct
import time

import pytest

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq, watermarks

# -- CRC-32C (Castagnoli), table driven ------------------------------------

_POLY = 0x82F63B78
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA


# -- record batch v2 ---------------------------------------------------------

def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while True:
        if z & ~0x7F:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        else:
            out.append(z)
            return bytes(out)


def vbytes(b: bytes | None) -> bytes:
    return varint(-1) if b is None else varint(len(b)) + b


def encode_record(offset_delta: int, ts_delta: int, key, value, headers) -> bytes:
    body = b"\x00" + varint(ts_delta) + varint(offset_delta) + vbytes(key) + vbytes(value)
    body += varint(len(headers))
    for hk, hv in headers:
        body += vbytes(hk.encode()) + vbytes(hv)
    return varint(len(body)) + body


def record_batch(records: list[Rec], base_ts: int, attributes: int = 0,
                 producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    recs = b"".join(encode_record(i, i, r.key, r.value, r.headers) for i, r in enumerate(records))
    # From attributes to the end: the part the CRC covers.
    pid, epoch, seq = producer
    after_crc = struct.pack(">hiqqqhii", attributes, len(records) - 1, base_ts,
                            base_ts + len(records) - 1, pid, epoch, seq, len(records)) + recs
    # partitionLeaderEpoch, magic, crc
    after_len = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


CRC_POS = 8 + 4 + 4 + 1  # baseOffset, batchLength, partitionLeaderEpoch, magic


def kstr(s: str | None) -> bytes:
    return struct.pack(">h", -1) if s is None else struct.pack(">h", len(s)) + s.encode()


def produce_v3(topic: str, partition: int, batch: bytes, correlation_id: int) -> bytes:
    header = struct.pack(">hhi", 0, 3, correlation_id) + kstr("sluice-crc-test")
    body = kstr(None) + struct.pack(">hi", -1, 10000)  # transactional_id, acks=all, timeout
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", 1)
    body += struct.pack(">ii", partition, len(batch)) + batch
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"broker closed the connection after {len(buf)}/{n} bytes")
        buf += chunk
    return bytes(buf)


def send_produce(sock, topic, partition, batch, cid):
    """Send Produce v3, return (error_code, base_offset) of the one partition."""
    sock.sendall(produce_v3(topic, partition, batch, cid))
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    resp = recv_exact(sock, size)
    (rcid, ntopics) = struct.unpack_from(">ii", resp, 0)
    assert rcid == cid and ntopics == 1
    pos = 8
    (nlen,) = struct.unpack_from(">h", resp, pos)
    pos += 2
    assert resp[pos:pos + nlen].decode() == topic
    pos += nlen
    (nparts, index, err, base_offset) = struct.unpack_from(">iihq", resp, pos)
    assert nparts == 1 and index == partition
    return err, base_offset


def connect(broker) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=15)
    s.settimeout(15)
    return s


RECORDS = [Rec(b"key-1", b"value-one", (("h1", b"x"),)),
           Rec(None, b"value-two" * 10, ()),
           Rec(b"key-3", None, (("a", b""), ("b", b"\x00\xff")))]


def test_valid_handmade_batch_is_accepted(shared_broker):
    bs = shared_broker.bootstrap
    topic = uniq("crc-ok")
    create_topic(bs, topic, 1)
    ts = int(time.time() * 1000)
    with connect(shared_broker) as s:
        assert send_produce(s, topic, 0, record_batch(RECORDS, ts), 7) == (0, 0)
        assert send_produce(s, topic, 0, record_batch(RECORDS[:1], ts), 8) == (0, 3)
    assert watermarks(bs, topic, 0) == (0, 4)
    # librdkafka verifies every batch's CRC-32C on the way back (check.crcs).
    got = consume_confluent(bs, topic, [0], 4, conf={"check.crcs": True})
    assert [g.rec() for g in got] == RECORDS + RECORDS[:1]
    assert [g.timestamp for g in got[:3]] == [ts, ts + 1, ts + 2]


@pytest.mark.parametrize("where", ["crc-field", "record-value", "attributes"])
def test_bad_crc_batch_is_refused_and_not_stored(shared_broker, where):
    bs = shared_broker.bootstrap
    topic = uniq("crc-bad")
    create_topic(bs, topic, 1)
    good = record_batch(RECORDS, int(time.time() * 1000))
    bad = bytearray(good)
    if where == "crc-field":
        bad[CRC_POS + 2] ^= 0x01
    elif where == "record-value":
        i = bytes(bad).index(b"value-one")
        bad[i] ^= 0x20  # 'v' -> 'V': same length, CRC no longer matches
    else:
        bad[CRC_POS + 4 + 1] ^= 0x01  # attributes' low byte: compression gzip, CRC stale
    with connect(shared_broker) as s:
        err, _ = send_produce(s, topic, 0, bytes(bad), 1)
        assert err == 2, f"bad batch ({where}): error {err}, want 2 (CORRUPT_MESSAGE)"
        assert watermarks(bs, topic, 0) == (0, 0), "the corrupt batch was stored"
        # The same connection keeps working, and a valid batch goes in at offset 0.
        assert send_produce(s, topic, 0, good, 2) == (0, 0)
    assert watermarks(bs, topic, 0) == (0, 3)
    # A real client appends after it.
    assert produce_confluent(bs, topic, [Rec(b"k", b"after")], partition=0) == [(0, 3)]
    got = consume_confluent(bs, topic, [0], 4)
    assert [g.rec() for g in got] == RECORDS + [Rec(b"k", b"after")]


@pytest.mark.parametrize("kind", ["control", "unsequenced"])
def test_control_and_unsequenced_batches_from_clients_are_refused(shared_broker, kind):
    """No real client sends these: clients may never write control batches,
    and a batch with a producer id must carry a sequence number (both
    INVALID_RECORD)."""
    bs = shared_broker.bootstrap
    topic = uniq("ctl")
    create_topic(bs, topic, 1)
    attrs = (1 << 4) | (1 << 5) if kind == "control" else (1 << 4)
    seq = 0 if kind == "control" else -1
    batch = record_batch(RECORDS[:1], int(time.time() * 1000), attributes=attrs,
                         producer=(1234, 0, seq))
    with connect(shared_broker) as s:
        err, _ = send_produce(s, topic, 0, batch, 3)
        assert err == 87, err
        assert watermarks(bs, topic, 0) == (0, 0)
        assert send_produce(s, topic, 0, record_batch(RECORDS, int(time.time() * 1000)), 4) == (0, 0)
