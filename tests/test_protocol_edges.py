"""Cluster description through a real admin client, and frames no real client
sends: each gets Kafka's answer or a closed connection, and the broker keeps
serving real clients afterwards."""
import socket
import struct

from confluent_kafka.admin import AdminClient

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq


def test_describe_cluster_via_admin_client(broker):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    desc = a.describe_cluster(request_timeout=10).result(15)
    assert desc.cluster_id and len(desc.cluster_id) >= 8
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, "127.0.0.1", broker.port)]
    assert desc.controller.id == 0


def _send(port: int, frame: bytes) -> bytes:
    """Send raw bytes; return what comes back before the peer closes (<= 1 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(frame)
        s.settimeout(1.0)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out


def _header(api_key: int, version: int, corr: int) -> bytes:
    return struct.pack(">hhih", api_key, version, corr, -1)  # null client id


def test_hostile_frames_then_still_serving(broker):
    port = broker.port
    # 1. A length above socket.request.max.bytes (100 MiB): closed, nothing allocated, no reply.
    assert _send(port, struct.pack(">i", 200 * 1024 * 1024) + b"\0" * 16) == b""
    # 2. A negative length: closed.
    assert _send(port, struct.pack(">i", -5)) == b""
    # 3. An unknown API key: closed.
    body = _header(9999, 0, 7)
    assert _send(port, struct.pack(">i", len(body)) + body) == b""
    # 4. ApiVersions in a version we do not know: UNSUPPORTED_VERSION (35) in the v0
    #    format, with our version table, so the client can retry.
    body = _header(18, 99, 42)
    reply = _send(port, struct.pack(">i", len(body)) + body)
    size, corr, err = struct.unpack(">iih", reply[:10])
    assert size == len(reply) - 4 and corr == 42 and err == 35
    n_apis = struct.unpack(">i", reply[10:14])[0]
    keys = {struct.unpack(">hhh", reply[14 + 6 * i:20 + 6 * i])[0] for i in range(n_apis)}
    assert {0, 1, 2, 3, 18, 19, 20} <= keys
    # 5. A truncated Metadata body: closed.
    body = _header(3, 1, 9) + b"\x00\x00"
    assert _send(port, struct.pack(">i", len(body)) + body) == b""
    # The broker still serves real clients.
    topic = uniq("after-garbage")
    create_topic(broker.bootstrap, topic, 1)
    produce_confluent(broker.bootstrap, topic, [Rec(b"k", b"still here")], partition=0)
    got = consume_confluent(broker.bootstrap, topic, [0], 1)
    assert [g.value for g in got] == [b"still here"]
    assert broker.alive()
