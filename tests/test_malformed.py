"""Malformed input (extends test_protocol_edges.py; huge array counts are
covered elsewhere): each frame gets Kafka's error code, or a closed
connection with a broker log line naming our connection and the reason;
never a crash or a stuck shard. Real clients are served afterwards."""
import struct

import pytest

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq
from rawwire import (api_versions, connect, correlation, create_topics_v2, frame, header, i16,
                     i32, metadata_v1, peer_log, produce_v3, read_frame, send_expect_close,
                     string)
from test_bad_crc import crc32c, record_batch

pytestmark = pytest.mark.sluice_only

INVALID_TOPIC_EXCEPTION = 17
UNKNOWN_TOPIC_OR_PARTITION = 3
CORRUPT_MESSAGE = 2
INVALID_RECORD = 87


def ask(port: int, data: bytes, corr: int) -> bytes:
    """Send one request on a new connection and return its answer (after the correlation id)."""
    with connect(port) as s:
        s.sendall(data)
        r = read_frame(s, 5)
    assert r is not None, "the broker closed the connection instead of answering"
    assert correlation(r) == corr
    return r[4:]


def assert_closed_and_logged(broker, data: bytes, reason: str):
    closed, local = send_expect_close(broker.port, data)
    assert closed, f"expected the connection closed without an answer ({reason})"
    peer_log(broker.log_path, local, reason)


def still_serving(broker, corr: int = 999):
    assert ask(broker.port, api_versions(corr), corr)[:2] == b"\0\0"


# -- response parsers (only what the tests look at) ----------------------

class Reader:
    def __init__(self, b: bytes):
        self.b, self.p = b, 0

    def take(self, fmt: str):
        v = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.b[self.p:self.p + n]
        self.p += n
        return s.decode()


def create_topics_v2_errors(resp: bytes) -> list[tuple[str, int]]:
    r = Reader(resp)
    r.take(">i")  # throttle
    out = []
    for _ in range(r.take(">i")):
        name = r.string()
        code = r.take(">h")
        r.string()  # message
        out.append((name, code))
    return out


def metadata_v1_errors(resp: bytes) -> list[tuple[str, int]]:
    r = Reader(resp)
    for _ in range(r.take(">i")):  # brokers
        r.take(">i"), r.string(), r.take(">i"), r.string()
    r.take(">i")  # controller
    out = []
    for _ in range(r.take(">i")):
        code = r.take(">h")
        name = r.string()
        r.take(">b")
        for _ in range(r.take(">i")):
            r.take(">hii")
            for _ in range(r.take(">i")):
                r.take(">i")
            for _ in range(r.take(">i")):
                r.take(">i")
        out.append((name, code))
    return out


def produce_v3_errors(resp: bytes) -> list[tuple[str, int, int]]:
    r = Reader(resp)
    out = []
    for _ in range(r.take(">i")):
        name = r.string()
        for _ in range(r.take(">i")):
            index, code, _, _ = r.take(">ihqq")
            out.append((name, index, code))
    return out


# -- framing --------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 6, 7, -1, -2147483648])
def test_impossible_frame_lengths(shared_broker, length):
    assert_closed_and_logged(shared_broker, i32(length) + b"\0" * 8,
                             rf"frame length {length} is invalid")
    still_serving(shared_broker)


def test_unknown_api_key_and_unserved_api(shared_broker):
    assert_closed_and_logged(shared_broker, frame(header(32000, 0, 1)), r"unknown API key 32000")
    # UpdateFeatures (57) is a Kafka API we do not serve.
    assert_closed_and_logged(shared_broker, frame(header(57, 0, 1)),
                             r"UpdateFeatures version 0 is not supported")
    still_serving(shared_broker)


def test_unsupported_version_closes(shared_broker):
    # Kafka answers only ApiVersions in an unknown version (test_protocol_edges);
    # any other API in a version it does not know closes the connection.
    assert_closed_and_logged(shared_broker, frame(header(3, 99, 1) + i32(0)),
                             r"Metadata version 99 is not supported")
    assert_closed_and_logged(shared_broker, frame(header(0, 42, 1)),
                             r"Produce version 42 is not supported")
    still_serving(shared_broker)


def test_truncated_header_and_bodies(shared_broker):
    b = shared_broker
    # Client id claims 10 bytes, 2 follow.
    assert_closed_and_logged(b, frame(i16(3) + i16(1) + i32(1) + i16(10) + b"ab"),
                             r"malformed request header")
    for name, full in [("Produce", produce_v3(1, "t", b"x" * 30)),
                       ("CreateTopics", create_topics_v2(1, "t")),
                       ("Metadata", metadata_v1(1, ["some-topic"]))]:
        body = full[4:-5]  # a whole frame whose body ends early
        assert_closed_and_logged(b, frame(body), rf"malformed request body: {name}(Request)? v\d")
    still_serving(b)


def test_trailing_bytes_are_tolerated(shared_broker):
    # As Kafka: bytes after a decoded body are ignored.
    resp = ask(shared_broker.port, frame(metadata_v1(5, [])[4:] + b"\x01\x02\x03"), 5)
    assert metadata_v1_errors(resp) == []
    assert ask(shared_broker.port, api_versions(6, pad=17), 6)[:2] == b"\0\0"


# -- negative lengths inside a body -------------------------------------------

@pytest.mark.parametrize("case,data,reason", [
    ("string -2", frame(header(3, 1, 1) + i32(1) + i16(-2)), r"MetadataRequest v1\.topics\[0\]\.name at byte 4: negative length -2"),
    ("null name, CreateTopics", create_topics_v2(1, None),
     r"CreateTopicsRequest v2\.topics\[0\]\.name at byte \d+: null where the field is not nullable"),
    ("null name, Metadata v1", metadata_v1(1, [None]), r"Metadata v1: null topic name"),
    ("client id -5", frame(i16(3) + i16(1) + i32(1) + i16(-5) + i32(0)),
     r"malformed request header: RequestHeader v1\.client_id at byte 8: negative length -5"),
    ("array -2", frame(header(3, 1, 1) + i32(-2)), r"MetadataRequest v1\.topics at byte 0: negative length -2"),
    ("bytes -2", frame(produce_v3(1, "t", None)[4:-4] + i32(-2)),
     r"ProduceRequest v3\.topic_data\[0\]\.partition_data\[0\]\.records at byte \d+: negative length -2"),
])
def test_negative_lengths_close(shared_broker, case, data, reason):
    assert_closed_and_logged(shared_broker, data, reason)
    still_serving(shared_broker)


def test_null_array_and_null_records_are_answered(shared_broker):
    b = shared_broker
    topic = uniq("nulls")
    create_topic(b.bootstrap, topic, 1)
    # Metadata v1 topics = -1 (null) means every topic.
    names = [n for n, _ in metadata_v1_errors(ask(b.port, metadata_v1(3, None), 3))]
    assert topic in names
    # Produce with null records: refused per partition, connection kept.
    assert produce_v3_errors(ask(b.port, produce_v3(4, topic, None), 4)) == \
        [(topic, 0, CORRUPT_MESSAGE)]
    assert produce_v3_errors(ask(b.port, produce_v3(5, topic, b""), 5)) == \
        [(topic, 0, INVALID_RECORD)]


# -- topic names ---------------------------------------------------------------

@pytest.mark.parametrize("api", ["CreateTopics", "Metadata", "Produce"])
def test_invalid_utf8_topic_name_closes(shared_broker, api):
    # Kafka decodes with replacement characters and then refuses the name; the
    # decoder here refuses the bytes, so the connection is closed (docs/limits.md).
    name = b"\xff\xfeab"
    data = {"CreateTopics": create_topics_v2(1, name), "Metadata": metadata_v1(1, [name]),
            "Produce": produce_v3(1, name, b"x" * 70)}[api]
    assert_closed_and_logged(shared_broker, data, rf"malformed request body: {api} v\d+: invalid utf-8")
    still_serving(shared_broker)


BAD_NAMES = ["..", ".", "a" * 250, "bad/char", "with space", "tab\tname", "ünïcode", ""]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]))
def test_invalid_topic_names(shared_broker, name):
    b = shared_broker
    assert create_topics_v2_errors(ask(b.port, create_topics_v2(7, name), 7)) == \
        [(name, INVALID_TOPIC_EXCEPTION)]
    # Metadata (auto-create on): INVALID_TOPIC_EXCEPTION, nothing created.
    assert metadata_v1_errors(ask(b.port, metadata_v1(8, [name]), 8)) == \
        [(name, INVALID_TOPIC_EXCEPTION)]
    # Produce to a name that cannot exist: UNKNOWN_TOPIC_OR_PARTITION, as Kafka.
    assert produce_v3_errors(ask(b.port, produce_v3(9, name, b"x" * 70), 9)) == \
        [(name, 0, UNKNOWN_TOPIC_OR_PARTITION)]
    assert name not in [n for n, _ in metadata_v1_errors(ask(b.port, metadata_v1(3, None), 3))]


def test_longest_valid_topic_name(shared_broker):
    name = "b" * 249
    assert create_topics_v2_errors(ask(shared_broker.port, create_topics_v2(7, name), 7)) == \
        [(name, 0)]


# -- record count against batch size ---------------------------------------------

def with_count(batch: bytes, n: int) -> bytes:
    """Rewrites recordsCount (and lastOffsetDelta) of a v2 batch and fixes its CRC."""
    b = bytearray(batch)
    struct.pack_into(">i", b, 23, n - 1)
    struct.pack_into(">i", b, 57, n)
    struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return bytes(b)


def test_records_count_larger_than_batch(shared_broker):
    b = shared_broker
    topic = uniq("count")
    create_topic(b.bootstrap, topic, 1)
    batch = record_batch([Rec(b"k", b"v")] * 3, base_ts=1_700_000_000_000)
    for n in (1000, 2_147_483_647):
        resp = ask(b.port, produce_v3(11, topic, with_count(batch, n)), 11)
        assert produce_v3_errors(resp) == [(topic, 0, INVALID_RECORD)]
    assert produce_v3_errors(ask(b.port, produce_v3(12, topic, batch), 12)) == [(topic, 0, 0)]


# -- afterwards ------------------------------------------------------------------

def test_real_clients_after_everything(shared_broker):
    """Runs last in the module: every shard still serves."""
    bs = shared_broker.bootstrap
    topic = uniq("after-malformed")
    create_topic(bs, topic, 4)
    produce_confluent(bs, topic, [Rec(b"%d" % i, b"v%d" % i) for i in range(20)])
    got = consume_confluent(bs, topic, [0, 1, 2, 3], 20)
    assert sorted(g.value for g in got) == sorted(b"v%d" % i for i in range(20))
    assert shared_broker.alive()
