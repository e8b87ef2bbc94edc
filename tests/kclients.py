"""Thin, bounded wrappers around the real Kafka clients the suite drives:
confluent-kafka (librdkafka), kafka-python, aiokafka and the kcat binary.

All loops are bounded by deadlines; every client gets short socket/request
timeouts so that a broker that stops answering fails a test quickly instead of
hanging it.  Consumers use manual assignment (no consumer group needed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

logging.getLogger("kafka").setLevel(logging.CRITICAL)
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@dataclass(frozen=True)
class Rec:
    """A record as produced: key/value bytes or None, headers as (str, bytes) pairs."""
    key: bytes | None
    value: bytes | None
    headers: tuple = ()


@dataclass(frozen=True)
class Got:
    """A record as consumed."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()
    timestamp: int | None = None

    def rec(self) -> Rec:
        return Rec(self.key, self.value, self.headers)


def uniq(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def norm_headers(h) -> tuple:
    if not h:
        return ()
    return tuple((k if isinstance(k, str) else k.decode(), bytes(v) if v is not None else None)
                 for k, v in h)


# -- admin ---------------------------------------------------------------

def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def wait_topic(bootstrap: str, topic: str, partitions: int | None = None,
               timeout: float = 15.0, present: bool = True):
    """Wait until metadata shows the topic (with every partition led) or its absence."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md = a.list_topics(timeout=5)
        except KafkaException as e:
            last = e
            time.sleep(0.1)
            continue
        t = md.topics.get(topic)
        if not present:
            if t is None or t.error is not None:
                return md
        elif t is not None and t.error is None and t.partitions and \
                (partitions is None or len(t.partitions) == partitions) and \
                all(p.leader >= 0 for p in t.partitions.values()):
            return md
        last = t
        time.sleep(0.1)
    raise AssertionError(f"topic {topic!r} {'not ready' if present else 'still present'} "
                         f"after {timeout}s (last: {last})")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None):
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                   config=config or {})], operation_timeout=10, request_timeout=15)
    fs[topic].result(timeout=20)
    return wait_topic(bootstrap, topic, partitions)


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uniq("wm"),
                  "enable.auto.commit": False, "socket.timeout.ms": 10000})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


# -- producers -----------------------------------------------------------
# Each returns a list, aligned with `records`, of (partition, offset) as the
# producer's delivery report gave it, or None where the client gives no report.

def produce_confluent(bootstrap: str, topic: str, records: list[Rec], codec: str = "none",
                      conf: dict | None = None, partition: int | None = None,
                      timestamps: list[int] | None = None, timeout: float = 30.0):
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5,
                  "acks": "all", "message.timeout.ms": int(timeout * 1000),
                  "socket.timeout.ms": 10000, **(conf or {})})
    out: list = [None] * len(records)
    errors: list = []

    def cb(i):
        def _cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                out[i] = (msg.partition(), msg.offset())
        return _cb

    for i, r in enumerate(records):
        kw = {}
        if partition is not None:
            kw["partition"] = partition
        if timestamps is not None:
            kw["timestamp"] = timestamps[i]
        if r.headers:
            kw["headers"] = list(r.headers)
        while True:
            try:
                p.produce(topic, key=r.key, value=r.value, on_delivery=cb(i), **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(timeout)
    assert remaining == 0, f"confluent producer: {remaining} records not delivered in {timeout}s"
    assert not errors, f"confluent producer delivery errors: {errors[:5]}"
    return out


def produce_kafka_python(bootstrap: str, topic: str, records: list[Rec], codec: str = "none",
                         timeout: float = 30.0, **kw):
    from kafka import KafkaProducer
    # kafka-python 3.x is idempotent by default (InitProducerId, sequences).
    conf = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                compression_type=None if codec == "none" else codec,
                request_timeout_ms=10000, max_block_ms=10000)
    conf.update(kw)
    p = KafkaProducer(**conf)
    try:
        futs = [p.send(topic, key=r.key, value=r.value, headers=list(r.headers) or None)
                for r in records]
        p.flush(timeout)
        out = []
        for f in futs:
            md = f.get(timeout=timeout)
            out.append((md.partition, md.offset))
        return out
    finally:
        p.close(timeout=5)


def produce_aiokafka(bootstrap: str, topic: str, records: list[Rec], codec: str = "none",
                     timeout: float = 30.0):
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             compression_type=None if codec == "none" else codec,
                             request_timeout_ms=10000)
        await asyncio.wait_for(p.start(), 15)
        try:
            futs = [await p.send(topic, key=r.key, value=r.value,
                                 headers=list(r.headers) or None) for r in records]
            mds = await asyncio.wait_for(asyncio.gather(*futs), timeout)
            return [(md.partition, md.offset) for md in mds]
        finally:
            await asyncio.wait_for(p.stop(), 10)

    return asyncio.run(run())


def kcat_bin() -> str:
    if os.environ.get("BROKER_IMPL", "sluice").lower() == "tansu":
        import pytest
        pytest.skip("kcat (librdkafka 2.0.2) fails tansu's ApiVersions response")
    k = shutil.which("kcat") or shutil.which("kafkacat")
    assert k, "kcat is not installed (Debian package `kcat`)"
    return k


def produce_kcat(bootstrap: str, topic: str, records: list[Rec], codec: str = "none",
                 timeout: float = 30.0):
    """kcat -P: one record per stdin line, key before a TAB; headers are per
    invocation (-H), so every record must carry the same headers."""
    hdrs = {r.headers for r in records}
    assert len(hdrs) == 1, "kcat applies the same headers to every record"
    cmd = [kcat_bin(), "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-z", codec,
           "-X", "linger.ms=5", "-X", "acks=all", "-X", f"message.timeout.ms={int(timeout * 1000)}"]
    for k, v in hdrs.pop():
        cmd += ["-H", f"{k}={v.decode()}"]
    lines = []
    for r in records:
        assert r.key is not None and r.value is not None
        for part in (r.key, r.value):
            assert b"\n" not in part and b"\t" not in part
        lines.append(r.key + b"\t" + r.value)
    res = subprocess.run(cmd, input=b"\n".join(lines) + b"\n", capture_output=True,
                         timeout=timeout + 15)
    assert res.returncode == 0, f"kcat -P failed ({res.returncode}): {res.stderr.decode()[-2000:]}"
    assert b"ERROR" not in res.stderr and b"failed" not in res.stderr.lower(), \
        f"kcat -P reported errors: {res.stderr.decode()[-2000:]}"
    return [None] * len(records)


PRODUCERS = {
    "confluent": produce_confluent,
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
    "kcat": produce_kcat,
}


# -- consumers -----------------------------------------------------------
# Each reads `partitions` of `topic` from offset `start` (default the
# beginning) until `count` records arrived or `timeout` passed, and returns
# the records as Got, in the order received.

def consume_confluent(bootstrap: str, topic: str, partitions, count: int, timeout: float = 30.0,
                      conf: dict | None = None, start: int = 0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uniq("g"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "socket.timeout.ms": 10000, "fetch.wait.max.ms": 100, **(conf or {})})
    try:
        c.assign([TopicPartition(topic, p, start) for p in partitions])
        out: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"confluent consumer error: {m.error()}")
            out.append(Got(m.partition(), m.offset(), m.key(), m.value(),
                           norm_headers(m.headers()), m.timestamp()[1]))
        return out
    finally:
        c.close()


def consume_kafka_python(bootstrap: str, topic: str, partitions, count: int,
                         timeout: float = 30.0, start: int = 0):
    from kafka import KafkaConsumer, TopicPartition as KTP
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=15000,
                      fetch_max_wait_ms=100, consumer_timeout_ms=1000)
    try:
        tps = [KTP(topic, p) for p in partitions]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, start)
        out: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=200)
            for _tp, msgs in batch.items():
                for m in msgs:
                    out.append(Got(m.partition, m.offset, m.key, m.value,
                                   norm_headers(m.headers), m.timestamp))
        return out
    finally:
        c.close()


def consume_aiokafka(bootstrap: str, topic: str, partitions, count: int, timeout: float = 30.0,
                     start: int = 0):
    from aiokafka import AIOKafkaConsumer, TopicPartition as ATP

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             request_timeout_ms=15000, fetch_max_wait_ms=100)
        await asyncio.wait_for(c.start(), 15)
        try:
            tps = [ATP(topic, p) for p in partitions]
            c.assign(tps)
            for tp in tps:
                c.seek(tp, start)
            out: list[Got] = []
            deadline = time.monotonic() + timeout
            while len(out) < count and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=200)
                for _tp, msgs in batch.items():
                    for m in msgs:
                        out.append(Got(m.partition, m.offset, m.key, m.value,
                                       norm_headers(m.headers), m.timestamp))
            return out
        finally:
            await asyncio.wait_for(c.stop(), 10)

    return asyncio.run(run())


def consume_kcat(bootstrap: str, topic: str, partitions, count: int, timeout: float = 30.0,
                 start: int = 0):
    """kcat -C -J -e: reads until the end of every partition, then exits."""
    out: list[Got] = []
    for p in partitions:
        cmd = [kcat_bin(), "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", str(start),
               "-e", "-J", "-q", "-X", "fetch.wait.max.ms=100"]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout)
        assert res.returncode == 0, f"kcat -C failed ({res.returncode}): {res.stderr.decode()[-2000:]}"
        for line in res.stdout.decode().splitlines():
            if not line.strip():
                continue
            j = json.loads(line)
            h = j.get("headers") or []
            hdrs = tuple((h[i], h[i + 1].encode() if h[i + 1] is not None else None)
                         for i in range(0, len(h), 2))
            enc = lambda s: None if s is None else s.encode()  # noqa: E731
            out.append(Got(j["partition"], j["offset"], enc(j.get("key")), enc(j.get("payload")),
                           hdrs, j.get("ts")))
    return out


CONSUMERS = {
    "confluent": consume_confluent,
    "kafka-python": consume_kafka_python,
    "aiokafka": consume_aiokafka,
    "kcat": consume_kcat,
}


def by_partition(got: list[Got]) -> dict[int, list[Got]]:
    d: dict[int, list[Got]] = {}
    for g in got:
        d.setdefault(g.partition, []).append(g)
    for v in d.values():
        v.sort(key=lambda g: g.offset)
    return d
