"""The admin listener (`admin.listeners`): /metrics parsed with Prometheus's own text
parser (prometheus_client), counters that follow a real produce and consume, consumer
lag as `sluice group describe` computes it, /v1/health and /v1/ready, and the listener's
limits (docs/metrics.md)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from kclients import admin, consume_confluent, create_topic, uniq, watermarks
from smallfs import small_fs  # noqa: F401  (fixture)

pytestmark = pytest.mark.sluice_only

RECORDS = 5000
VALUE_BYTES = 1024
PARTITIONS = 4
# The admin listener's bounds (src/server/admin/mod.rs).
ADMIN_MAX_CONNECTIONS = 32
ADMIN_MAX_HEAD_BYTES = 8 * 1024
ADMIN_READ_TIMEOUT_S = 5


def get(url: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, str]:
    """(status, headers, body) of one HTTP request; error statuses are answers too."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def scrape(b) -> dict:
    status, headers, text = get(b.admin_url + "/metrics")
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams: dict, family: str, name: str | None = None, **labels) -> list:
    """Samples of `family` named `name` (default: the family's own name, or `_total` for a
    counter) whose labels include `labels`."""
    f = fams.get(family)
    assert f is not None, f"no family {family}; have {sorted(fams)}"
    if name is None:
        name = family + "_total" if f.type == "counter" else family
    return [s for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(fams: dict, family: str, **labels) -> float:
    got = samples(fams, family, **labels)
    assert len(got) == 1, f"{family}{labels}: {got}"
    return got[0].value


def produce(bootstrap: str, topic: str, n: int, partitions: int = PARTITIONS) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 30000})
    errors = []
    value = b"v" * VALUE_BYTES
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, partition=i % partitions,
                          on_delivery=lambda err, _m: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0, "undelivered records"
    assert not errors, errors[:3]


def test_counters_follow_a_real_produce_and_consume(broker_factory):
    b = broker_factory()
    topic = uniq("metrics")
    create_topic(b.bootstrap, topic, PARTITIONS)
    produce(b.bootstrap, topic, RECORDS)
    got = consume_confluent(b.bootstrap, topic, range(PARTITIONS), RECORDS, timeout=60)
    assert len(got) == RECORDS

    fams = scrape(b)
    assert value(fams, "sluice_topic_records_in", topic=topic) == RECORDS
    assert value(fams, "sluice_topic_bytes_in", topic=topic) >= RECORDS * VALUE_BYTES
    assert value(fams, "sluice_topic_bytes_out", topic=topic) >= RECORDS * VALUE_BYTES
    assert value(fams, "sluice_topic_produce_requests", topic=topic) >= PARTITIONS
    assert value(fams, "sluice_topic_produce_failures", topic=topic) == 0
    assert value(fams, "sluice_topic_fetch_requests", topic=topic) >= PARTITIONS
    assert value(fams, "sluice_topic_fetch_failures", topic=topic) == 0
    assert fams["sluice_topic_bytes_in"].type == "counter"

    hist = fams["sluice_request_latency_seconds"]
    assert hist.type == "histogram"
    for api in ("Produce", "Fetch"):
        buckets = samples(fams, "sluice_request_latency_seconds",
                          "sluice_request_latency_seconds_bucket", api=api)
        assert len(buckets) >= 9, f"{api}: {len(buckets)} buckets (8 and +Inf at least)"
        counts = [s.value for s in buckets]
        assert counts == sorted(counts), f"{api}: buckets are not cumulative"
        assert buckets[-1].labels["le"] == "+Inf"
        total = value(fams, "sluice_request_latency_seconds",
                      name="sluice_request_latency_seconds_count", api=api)
        assert buckets[-1].value == total > 0
        assert value(fams, "sluice_requests", api=api, error="NONE") > 0
        assert value(fams, "sluice_request_bytes", api=api) > 0
        assert value(fams, "sluice_response_bytes", api=api) > 0
    assert value(fams, "sluice_request_bytes", api="Produce") >= RECORDS * VALUE_BYTES
    assert value(fams, "sluice_response_bytes", api="Fetch") >= RECORDS * VALUE_BYTES
    assert value(fams, "sluice_connections", listener="admin") >= 1
    # acks=all fsyncs were timed.
    assert value(fams, "sluice_fsync_latency_seconds",
                 name="sluice_fsync_latency_seconds_count") > 0
    assert value(fams, "sluice_log_dir_size_bytes", log_dir=str(b.data_dir)) \
        >= RECORDS * VALUE_BYTES
    assert value(fams, "sluice_log_dir_segments", log_dir=str(b.data_dir)) >= PARTITIONS
    assert value(fams, "sluice_log_dir_offline", log_dir=str(b.data_dir)) == 0
    assert value(fams, "sluice_broker_state", state="serving") == 1
    assert value(fams, "sluice_under_replicated_partitions") == 0
    assert value(fams, "sluice_leader_partitions") >= PARTITIONS

    # The same figures in OpenMetrics text when the scraper asks for it.
    status, headers, text = get(b.admin_url + "/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text"), headers
    assert text.endswith("# EOF\n")
    om = {f.name: f for f in openmetrics_families(text)}
    assert value(om, "sluice_topic_records_in", topic=topic) == RECORDS


def test_lag_is_end_minus_committed_per_partition(broker_factory):
    b = broker_factory()
    topic, group = uniq("lag"), uniq("lagg")
    create_topic(b.bootstrap, topic, PARTITIONS)
    produce(b.bootstrap, topic, 2000)  # 500 per partition
    committed = {0: 100, 1: 200, 2: 300, 3: 0}
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in committed.items()],
                 asynchronous=False)
    finally:
        c.close()
    ends = {p: watermarks(b.bootstrap, topic, p)[1] for p in committed}
    assert all(e == 500 for e in ends.values()), ends

    fams = scrape(b)
    for p, o in committed.items():
        lag = value(fams, "sluice_consumer_group_lag", group=group, topic=topic,
                    partition=str(p))
        assert lag == ends[p] - o, f"partition {p}: lag {lag}, end {ends[p]}, committed {o}"
    assert value(fams, "sluice_consumer_group_lag_sum", group=group) == \
        sum(ends[p] - o for p, o in committed.items())
    assert value(fams, "sluice_consumer_group_members", group=group) == 0
    assert value(fams, "sluice_consumer_group_state", group=group, state="Empty") == 1


def test_health_ready_and_the_listeners_limits(broker_factory):
    b = broker_factory()
    status, headers, body = get(b.admin_url + "/v1/health")
    assert status == 200 and headers["Content-Type"] == "application/json", body
    health = json.loads(body)
    assert health["status"] == "ok" and health["state"] == "serving", health
    assert health["offline_log_dirs"] == []
    status, _, body = get(b.admin_url + "/v1/ready")
    assert status == 200, body
    assert get(b.admin_url + "/v1/health", method="POST")[0] == 405
    assert get(b.admin_url + "/nowhere")[0] == 404

    host, port = "127.0.0.1", b.admin_port

    def raw(request: bytes) -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(request)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    big = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * ADMIN_MAX_HEAD_BYTES + b"\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 431 "), "oversized head"
    assert raw(b"GET /metrics\r\n\r\n").startswith(b"HTTP/1.1 400 "), "no HTTP version"

    # Fill the listener with connections that send nothing: one more is refused with 503,
    # the Kafka port keeps serving, and the silent ones are closed after the read timeout.
    held = [socket.create_connection((host, port), timeout=10)
            for _ in range(ADMIN_MAX_CONNECTIONS)]
    try:
        deadline = time.monotonic() + 5
        while True:  # the accepts are counted as shard 0 gets to them
            answer = raw(b"GET /v1/health HTTP/1.1\r\n\r\n")
            if answer.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert b"too many admin connections" in answer
        md = admin(b.bootstrap).list_topics(timeout=10)
        assert md.brokers, "the Kafka port stopped serving"
        started = time.monotonic()
        for s in held:
            s.settimeout(ADMIN_READ_TIMEOUT_S + 5)
            assert s.recv(1) == b"", "a silent connection was answered instead of closed"
        assert time.monotonic() - started < ADMIN_READ_TIMEOUT_S + 5
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while get(b.admin_url + "/v1/health")[0] != 200:
        assert time.monotonic() < deadline, "the listener did not recover its connections"
        time.sleep(0.05)


def test_health_is_503_with_an_offline_log_dir(small_fs, broker_factory):  # noqa: F811
    fs = small_fs(48)
    b = broker_factory(settings={"io_mode": "buffered"}, name="offline", data_dir=fs.mnt / "d")
    topic = uniq("off")
    create_topic(b.bootstrap, topic, 1)
    produce(b.bootstrap, topic, 4, partitions=1)
    assert get(b.admin_url + "/v1/health")[0] == 200
    fs.fail()  # ext4 error: remounted read-only under the broker
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "retries": 0,
                  "message.timeout.ms": 10000})
    p.produce(topic, value=b"x", partition=0)
    p.flush(15)
    deadline = time.monotonic() + 10
    while True:
        status, _, body = get(b.admin_url + "/v1/health")
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 503, body
    health = json.loads(body)
    assert health["status"] == "unavailable"
    assert [d["log_dir"] for d in health["offline_log_dirs"]] == [str(b.data_dir)], health
    assert get(b.admin_url + "/v1/ready")[0] == 503
    fams = scrape(b)
    assert value(fams, "sluice_log_dir_offline", log_dir=str(b.data_dir)) == 1
    assert value(fams, "sluice_broker_state", state="serving") == 1
