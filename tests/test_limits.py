"""Resource limits a client can hit (docs/limits.md): connection counts,
idle connections, slow frames and each shard's queued request bytes. Each
test provokes the limit over raw sockets, checks what the client sees and the
broker's log line, then proves a real client (confluent-kafka) is still
served."""
import threading
import time

import pytest

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq
from rawwire import (api_versions, closed_by_peer, connect, correlation, fetch_v4,
                     fetch_v4_record_bytes, frame, header, i32,
                     peer_log, read_frame, wait_log)

pytestmark = pytest.mark.sluice_only


def served(port: int, corr: int) -> bool:
    """A new connection answers ApiVersions."""
    try:
        with connect(port) as s:
            s.sendall(api_versions(corr))
            r = read_frame(s, 3)
            return r is not None and correlation(r) == corr
    except OSError:
        return False


def open_served(port: int, n: int) -> list:
    """`n` open connections, each answered once. Retries for a moment: a slot
    freed by a just-closed connection (the fixture's readiness probe) is
    released when the broker sees the close."""
    socks = []
    for i in range(n):
        deadline = time.monotonic() + 3
        while True:
            s = connect(port)
            try:
                s.sendall(api_versions(100 + i))
            except OSError:
                pass
            r = read_frame(s, 5)
            if r is not None:
                break
            s.close()
            assert time.monotonic() < deadline, f"connection {i} not served"
            time.sleep(0.1)
        assert correlation(r) == 100 + i
        socks.append(s)
    return socks


def eventually(cond, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def real_client_works(bs: str):
    topic = uniq("limits")
    create_topic(bs, topic, 2)
    produce_confluent(bs, topic, [Rec(b"k", b"v%d" % i) for i in range(10)])
    got = consume_confluent(bs, topic, [0, 1], 10)
    assert sorted(g.value for g in got) == sorted(b"v%d" % i for i in range(10))


@pytest.mark.parametrize("key,limit,reason", [
    ("max.connections.per.ip", 3, r"max\.connections\.per\.ip \(3\) reached"),
    ("max.connections", 3, r"max\.connections \(3\) reached"),
])
def test_connection_limit(broker_factory, key, limit, reason):
    b = broker_factory(settings={key: str(limit)})
    socks = open_served(b.port, limit)
    # Counted across shards: the next one is closed, whichever shard accepted it.
    for _ in range(3):
        extra = connect(b.port)
        try:
            extra.sendall(api_versions(7))
        except OSError:
            pass
        assert closed_by_peer(extra, 5), "a connection over the limit was kept open"
        extra.close()
    wait_log(b.log_path, r"refusing connection.*" + reason)
    # Freeing two slots lets two new connections in.
    socks.pop().close()
    socks.pop().close()
    assert eventually(lambda: served(b.port, 11)), "a freed slot was not reusable"
    socks += open_served(b.port, 1)
    for s in socks:
        s.close()
    # A real client (which opens several connections) works once slots are free.
    assert eventually(lambda: served(b.port, 12))
    real_client_works(b.bootstrap)
    assert b.alive()


@pytest.fixture(scope="module")
def timeout_broker(request, tmp_path_factory):
    from conftest import _module_broker
    yield from _module_broker(request, tmp_path_factory, "timeouts", {
        "connections.max.idle.ms": "1500",
        "socket.request.read.timeout.ms": "2500",
    })


def test_idle_connection_is_closed(timeout_broker):
    b = timeout_broker
    s = open_served(b.port, 1)[0]
    local = s.getsockname()[1]
    t0 = time.monotonic()
    assert closed_by_peer(s, 10), "an idle connection stayed open"
    assert time.monotonic() - t0 >= 1.0, "closed before connections.max.idle.ms"
    s.close()
    peer_log(b.log_path, local, r"closing idle connection")


def test_busy_connection_and_real_clients_are_not_closed(timeout_broker):
    b = timeout_broker
    # A raw connection sending a request every 0.5 s outlives the idle limit.
    s = open_served(b.port, 1)[0]
    for i in range(8):
        time.sleep(0.5)
        s.sendall(api_versions(200 + i))
        r = read_frame(s, 3)
        assert r is not None and correlation(r) == 200 + i, "a busy connection was closed"
    s.close()
    # A consumer long-polling (fetch wait 1 s) and a producer sending every 0.3 s for
    # 4 s: every record arrives in order, none lost to the idle limit.
    topic = uniq("busy")
    create_topic(b.bootstrap, topic, 1)
    n = 14
    result = {}

    def consume():
        result["got"] = consume_confluent(b.bootstrap, topic, [0], n, timeout=40,
                                          conf={"fetch.wait.max.ms": 1000})

    t = threading.Thread(target=consume)
    t.start()
    for i in range(n):
        produce_confluent(b.bootstrap, topic, [Rec(None, b"%d" % i)], partition=0)
        time.sleep(0.3)
    t.join(60)
    assert [g.value for g in result["got"]] == [b"%d" % i for i in range(n)]


def test_stalled_frame_is_closed(timeout_broker):
    b = timeout_broker
    s = connect(b.port)
    local = s.getsockname()[1]
    # A length prefix of 100 KB, 10 bytes, then nothing.
    s.sendall(i32(100_000) + header(18, 0, 1)[:10])
    t0 = time.monotonic()
    assert closed_by_peer(s, 10), "a stalled frame held its connection"
    assert time.monotonic() - t0 >= 1.0
    s.close()
    peer_log(b.log_path, local, r"closing connection mid-frame.*connections\.max\.idle\.ms")
    assert served(b.port, 5)


def test_trickled_frame_is_closed(timeout_broker):
    b = timeout_broker
    s = connect(b.port)
    local = s.getsockname()[1]
    body = header(18, 0, 1) + b"\0" * 200
    s.sendall(i32(len(body)))
    # One byte every 0.3 s (well inside the 1.5 s idle limit) would take 60 s.
    t0 = time.monotonic()
    closed = False
    for byte in body:
        try:
            s.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        if closed_by_peer(s, 0.3):
            closed = True
            break
        if time.monotonic() - t0 > 10:
            break
    elapsed = time.monotonic() - t0
    s.close()
    assert closed, "a trickled frame kept its connection past socket.request.read.timeout.ms"
    assert 2.0 <= elapsed <= 6.0, elapsed
    peer_log(b.log_path, local,
             r"closing connection mid-frame.*socket\.request\.read\.timeout\.ms")
    real_client_works(b.bootstrap)


def test_queued_request_bytes_backpressure(broker_factory):
    # One shard, so both raw connections share its budget.
    b = broker_factory(smp=1, settings={"queued.max.request.bytes": "1000",
                                        "socket.request.read.timeout.ms": "3000",
                                        "message.max.bytes": "2000000"})
    # A announces a 900-byte frame and stalls: its bytes are admitted and held.
    a = connect(b.port)
    a.sendall(i32(900) + header(18, 0, 1))
    time.sleep(0.3)
    # B's 200-byte frame does not fit beside it: no answer while A holds the budget.
    bsock = connect(b.port)
    bsock.sendall(api_versions(77, pad=200 - 10))
    t0 = time.monotonic()
    assert read_frame(bsock, 1.0) is None, "B was answered while A held the budget"
    wait_log(b.log_path, r"queued\.max\.request\.bytes reached")
    # When A's frame times out and A is closed, B is read and answered.
    r = read_frame(bsock, 10)
    assert r is not None and correlation(r) == 77
    assert time.monotonic() - t0 >= 1.5, "B was answered while A held the budget"
    assert closed_by_peer(a, 5)
    a.close()
    bsock.close()
    # Requests each larger than the whole budget, from concurrent producers, all
    # complete (each is admitted alone), and the data is all there.
    topic = uniq("queued")
    create_topic(b.bootstrap, topic, 4)
    errors = []

    def produce(i):
        try:
            produce_confluent(b.bootstrap, topic,
                              [Rec(b"%d" % i, bytes([65 + i]) * 300_000) for _ in range(3)],
                              partition=i, conf={"message.max.bytes": 2_000_000,
                                                 "linger.ms": 0})
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    got = consume_confluent(b.bootstrap, topic, [0, 1, 2, 3], 12, timeout=40,
                            conf={"fetch.max.bytes": 10_000_000})
    assert sorted((g.partition, len(g.value)) for g in got) == \
        sorted((i, 300_000) for i in range(4) for _ in range(3))
    # A frame over 1 MiB (its buffer grows as it arrives) comes back intact.
    big = bytes(range(256)) * 6000
    produce_confluent(b.bootstrap, topic, [Rec(b"big", big)], partition=0,
                      conf={"message.max.bytes": 2_000_000})
    got = consume_confluent(b.bootstrap, topic, [0], 4, timeout=40,
                            conf={"fetch.max.bytes": 10_000_000})
    assert got[-1].value == big
    real_client_works(b.bootstrap)


def test_fetch_max_bytes_and_wait_cap(broker_factory):
    b = broker_factory(settings={"fetch.max.bytes": "2048", "fetch.max.wait.cap.ms": "1000"})
    topic = uniq("fmb")
    create_topic(b.bootstrap, topic, 4)
    for p in range(4):  # one ~5 KB batch per partition
        produce_confluent(b.bootstrap, topic, [Rec(None, b"x" * 1000) for _ in range(5)],
                          partition=p, conf={"linger.ms": 50})
    # The client asks for everything: max_bytes and partition_max_bytes i32::MAX.
    with connect(b.port) as s:
        s.sendall(fetch_v4(31, topic, [0, 1, 2, 3], 2**31 - 1, 2**31 - 1))
        r = read_frame(s, 10)
    assert r is not None and correlation(r) == 31
    sizes = fetch_v4_record_bytes(r[4:])
    non_empty = [p for p, n in sizes.items() if n]
    # Capped at 2048 bytes: the first batch comes whole (KIP-74), no other fits.
    assert len(non_empty) == 1, sizes
    # A real consumer still reads everything, a batch at a time.
    got = consume_confluent(b.bootstrap, topic, [0, 1, 2, 3], 20)
    assert len(got) == 20
    # A fetch that would wait i32::MAX ms for data that never comes is answered
    # (empty) after fetch.max.wait.cap.ms, so it holds nothing past the cap.
    empty = uniq("fwait")
    create_topic(b.bootstrap, empty, 1)
    with connect(b.port) as s:
        t0 = time.monotonic()
        s.sendall(fetch_v4(32, empty, [0], 1 << 20, 1 << 20, max_wait_ms=2**31 - 1,
                           min_bytes=1))
        r = read_frame(s, 15)
        waited = time.monotonic() - t0
    assert r is not None and correlation(r) == 32
    assert fetch_v4_record_bytes(r[4:]) == {0: 0}
    assert 0.8 <= waited <= 5, waited


def test_peer_that_does_not_read_responses_is_closed(timeout_broker):
    b = timeout_broker
    topic = uniq("unread")
    create_topic(b.bootstrap, topic, 1)
    produce_confluent(b.bootstrap, topic, [Rec(None, b"r" * 900_000)], partition=0)
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", b.port))
    local = s.getsockname()[1]
    # 40 fetches of ~900 KB each, pipelined, and never a byte read back: the
    # broker's write stalls once the socket buffers are full.
    s.sendall(b"".join(fetch_v4(i, topic, [0], 1_000_000, 1_000_000) for i in range(40)))
    peer_log(b.log_path, local, r"response not read", within=20)
    s.close()
    assert served(b.port, 3)


def test_many_idle_connections_are_held_then_closed(broker_factory):
    """Hundreds of idle connections (each served once, then silent) neither
    stop real clients nor stick: the idle limit closes every one, and the
    broker then serves new connections as before."""
    n = 400
    b = broker_factory({"connections.max.idle.ms": "6000"})
    socks = open_served(b.port, n)
    try:
        real_client_works(b.bootstrap)
        deadline = time.monotonic() + 30
        for s in socks:
            left = max(0.1, deadline - time.monotonic())
            assert closed_by_peer(s, left), "an idle connection stayed open"
    finally:
        for s in socks:
            s.close()
    assert eventually(lambda: served(b.port, 7))
    real_client_works(b.bootstrap)
    assert b.alive()
