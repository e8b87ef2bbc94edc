"""fetch.splice.enable: records read from segment files are sent with splice
(file -> pipe -> socket on a side io_uring ring) instead of being copied
through the broker. Real clients must read exactly what a copying broker
sends: whole batches, KIP-74 first batches, READ_COMMITTED filtering, from
rolled segments and from the active one; and a client that stops reading its
answer must not hold up anyone else's.

That the splice path was taken is read from the stall detector's per-shard
line (`spliced_bytes`). Each partition gets more than the 4 MiB its
recent-batch cache keeps, so the oldest records are read from the files."""
from __future__ import annotations

import random
import re
import socket
import time

from confluent_kafka import Producer

import rawwire
from kclients import (Rec, by_partition, consume_confluent, consume_kafka_python, create_topic,
                      produce_confluent, uniq)

SPLICE = {"fetch.splice.enable": "true", "stall.detector.interval.ms": "200"}


def detector_sum(log, field: str, within: float = 5.0) -> int:
    """The sum of `field=N` over the stall detector lines logged so far (waits for one more
    line, and up to `within` seconds for a non-zero sum)."""
    time.sleep(0.5)
    deadline = time.monotonic() + within
    total = 0
    while time.monotonic() < deadline:
        total = sum(int(v) for v in re.findall(field + r"=(\d+)",
                                                log.read_text(errors="replace")))
        if total:
            break
        time.sleep(0.2)
    return total


def spliced(log) -> int:
    """Bytes spliced according to the detector lines."""
    return detector_sum(log, "spliced_bytes")


def records(n: int, seed: int) -> list[Rec]:
    rnd = random.Random(seed)
    return [Rec(b"k%d" % i, bytes([i % 251]) * rnd.randint(50, 3000)) for i in range(n)]


def expect(produced: list[Rec], offsets, partitions: int) -> dict[int, list[Rec]]:
    want: dict[int, list[Rec]] = {p: [] for p in range(partitions)}
    for r, (p, _off) in sorted(zip(produced, offsets), key=lambda x: x[1]):
        want[p].append(r)
    return want


def test_spliced_fetches_match_what_was_produced(broker_factory):
    b = broker_factory(settings=SPLICE)
    topic = uniq("sp")
    # Small segments: most reads come from rolled segments, some from the active one.
    create_topic(b.bootstrap, topic, partitions=3, config={"segment.bytes": "262144"})
    produced = records(16000, 1)
    offsets = produce_confluent(b.bootstrap, topic, produced, conf={"linger.ms": 20})
    want = expect(produced, offsets, 3)

    # librdkafka (READ_COMMITTED by default) with small limits: many KIP-74
    # and partial-budget answers; kafka-python (READ_UNCOMMITTED) with defaults.
    small = {"max.partition.fetch.bytes": 40000, "fetch.max.bytes": 100000,
             "message.max.bytes": 50000}
    for got in (consume_confluent(b.bootstrap, topic, range(3), len(produced), conf=small),
                consume_kafka_python(b.bootstrap, topic, range(3), len(produced))):
        parts = by_partition(got)
        for p in range(3):
            assert [g.rec() for g in parts.get(p, [])] == want[p], f"partition {p}"
            assert [g.offset for g in parts.get(p, [])] == list(range(len(want[p])))
    assert spliced(b.log_path) > 0, "no bytes were spliced"


def test_read_committed_skips_aborted_data_in_spliced_ranges(broker_factory):
    b = broker_factory(settings=SPLICE)
    topic = uniq("spt")
    create_topic(b.bootstrap, topic, partitions=1, config={"segment.bytes": "131072"})
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": uniq("tx"),
                  "linger.ms": 5, "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    committed = []
    for t in range(6):
        p.begin_transaction()
        vals = [b"t%d-%d-" % (t, i) + b"x" * 2000 for i in range(600)]
        for v in vals:
            p.produce(topic, value=v, partition=0)
        assert p.flush(30) == 0
        if t % 2:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            committed += vals
    got = consume_confluent(b.bootstrap, topic, [0], len(committed), timeout=30,
                            conf={"isolation.level": "read_committed"})
    assert [g.value for g in got] == committed
    assert spliced(b.log_path) > 0, "no bytes were spliced"


def test_a_client_that_stops_reading_does_not_hold_up_others(broker_factory):
    b = broker_factory(settings=SPLICE)
    topic = uniq("sps")
    # Default segment size: every read is from the active segment.
    create_topic(b.bootstrap, topic, partitions=2)
    produced = records(12000, 2)
    offsets = produce_confluent(b.bootstrap, topic, produced, conf={"linger.ms": 20})
    want = expect(produced, offsets, 2)

    # Asks for everything with a tiny receive buffer and never reads.
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(5)
    stuck.connect(("127.0.0.1", b.port))
    try:
        for corr in range(3):
            stuck.sendall(rawwire.fetch_v4(corr, topic, [0, 1], 50 << 20, 50 << 20))
        time.sleep(1.0)
        got = consume_confluent(b.bootstrap, topic, range(2), len(produced), timeout=30)
        parts = by_partition(got)
        for p in range(2):
            assert [g.rec() for g in parts.get(p, [])] == want[p], f"partition {p}"
    finally:
        stuck.close()
    assert spliced(b.log_path) > 0, "no bytes were spliced"
    assert b.alive()
