"""Acceptance 8: fetch behaviour: OFFSET_OUT_OF_RANGE handled through
auto.offset.reset; long polling (an idle consumer does not spin, and a waiting
fetch wakes when data arrives)."""

import json
import threading
import time

from confluent_kafka import Consumer, TopicPartition

from kclients import Rec, create_topic, produce_confluent, uniq


def poll_values(c, n, timeout):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append((m.offset(), m.value()))
    return out


def test_offset_out_of_range_resets_to_earliest(shared_broker):
    bs = shared_broker.bootstrap
    topic = uniq("oor")
    create_topic(bs, topic, 1)
    produce_confluent(bs, topic, [Rec(None, b"v%d" % i) for i in range(5)], partition=0)
    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("g"), "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, 0, 1000)])  # far beyond the end (5)
        assert poll_values(c, 5, 20) == [(i, b"v%d" % i) for i in range(5)]
    finally:
        c.close()


def test_offset_out_of_range_resets_to_latest(shared_broker):
    bs = shared_broker.bootstrap
    topic = uniq("oorl")
    create_topic(bs, topic, 1)
    produce_confluent(bs, topic, [Rec(None, b"old%d" % i) for i in range(5)], partition=0)
    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("g"), "enable.auto.commit": False,
                  "auto.offset.reset": "latest", "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, 0, 1000)])
        assert poll_values(c, 1, 3) == [], "records before the reset point were delivered"
        # The consumer sits at 5 now: the next record is delivered.
        produce_confluent(bs, topic, [Rec(None, b"new")], partition=0)
        assert poll_values(c, 1, 20) == [(5, b"new")]
    finally:
        c.close()


def test_offset_out_of_range_kafka_python(shared_broker):
    from kafka import KafkaConsumer, TopicPartition as KTP
    bs = shared_broker.bootstrap
    topic = uniq("oorkp")
    create_topic(bs, topic, 1)
    produce_confluent(bs, topic, [Rec(None, b"v%d" % i) for i in range(3)], partition=0)
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100,
                      request_timeout_ms=15000)
    try:
        tp = KTP(topic, 0)
        c.assign([tp])
        c.seek(tp, 50)
        out = []
        deadline = time.monotonic() + 20
        while len(out) < 3 and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=200).values():
                out += [(m.offset, m.value) for m in msgs]
        assert out == [(i, b"v%d" % i) for i in range(3)]
    finally:
        c.close()


def test_idle_consumer_does_not_spin(shared_broker):
    """With fetch.wait.max.ms=500, an idle consumer sends about 2 fetches per
    second: librdkafka's own statistics count them.  A broker that answered
    empty fetches at once would see hundreds."""
    bs = shared_broker.bootstrap
    topic = uniq("idle")
    create_topic(bs, topic, 1)
    stats = []
    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("g"), "enable.auto.commit": False,
                  "fetch.wait.max.ms": 500, "statistics.interval.ms": 1000,
                  "stats_cb": lambda s: stats.append(json.loads(s))})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        # Let the consumer settle (metadata, first fetch), then measure 4 s.
        assert poll_values(c, 1, 2) == []

        def fetches():
            n = 0
            for b in (stats[-1]["brokers"].values() if stats else []):
                if b.get("nodeid", -1) >= 0:
                    n += b.get("req", {}).get("Fetch", 0)
            return n

        t0, f0 = time.monotonic(), fetches()
        t_poll_start = time.monotonic()
        assert poll_values(c, 1, 4) == []
        # An idle poll returns within its own bound.
        assert time.monotonic() - t_poll_start < 6
        # Let a fresh statistics report arrive.
        before = len(stats)
        deadline = time.monotonic() + 3
        while len(stats) == before and time.monotonic() < deadline:
            c.poll(0.2)
        elapsed = time.monotonic() - t0
        f1 = fetches()
        assert stats, "no statistics from librdkafka"
        sent = f1 - f0
        assert sent >= 1, "the consumer sent no fetch at all"
        assert sent <= elapsed / 0.5 * 2 + 4, f"{sent} fetches in {elapsed:.1f}s: broker does not long-poll"
    finally:
        c.close()


def test_waiting_fetch_wakes_when_data_arrives(shared_broker):
    """fetch.wait.max.ms=5000: a consumer parked in a long poll gets a new
    record well before the 5 s are up (three times in a row)."""
    bs = shared_broker.bootstrap
    topic = uniq("wake")
    create_topic(bs, topic, 1)
    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("g"), "enable.auto.commit": False,
                  "fetch.wait.max.ms": 5000, "fetch.min.bytes": 1})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        assert poll_values(c, 1, 2) == []
        for i in range(3):
            time.sleep(1.0)  # the consumer's fetch is now waiting at the broker
            sent_at = []

            def produce():
                sent_at.append(time.monotonic())
                produce_confluent(bs, topic, [Rec(None, b"w%d" % i)], partition=0,
                                  conf={"linger.ms": 0})

            th = threading.Thread(target=produce)
            th.start()
            got = poll_values(c, 1, 10)
            received = time.monotonic()
            th.join(20)
            assert got == [(i, b"w%d" % i)]
            lag = received - sent_at[0]
            # Producer start-up plus delivery is well under 2 s on loopback;
            # waiting out fetch.wait.max.ms would take up to 5 s.
            assert lag < 2.0, f"record {i} took {lag:.2f}s: waiting fetch not woken by produce"
    finally:
        c.close()


def test_answers_and_frames_cut_in_small_slices_arrive_whole(broker_factory):
    """socket.io.slice.bytes at its minimum: every large Produce frame is
    received, and every large Fetch answer sent, in 4 KiB pieces with the
    shard's other tasks run between them. Real clients must see exactly what
    they produced (two partitions, so one answer interleaves with the other
    connection's)."""
    from kclients import by_partition, consume_kafka_python, consume_confluent
    b = broker_factory(settings={"socket.io.slice.bytes": "4096"})
    topic = uniq("slice")
    create_topic(b.bootstrap, topic, 2)
    produced = [Rec(b"k%d" % i, bytes([i % 251]) * (1000 + i % 3000)) for i in range(6000)]
    offsets = produce_confluent(b.bootstrap, topic, produced,
                                conf={"linger.ms": 50, "batch.size": 1000000})
    want: dict[int, list[Rec]] = {0: [], 1: []}
    for r, (p, _off) in sorted(zip(produced, offsets), key=lambda x: x[1]):
        want[p].append(r)
    for got in (consume_confluent(b.bootstrap, topic, range(2), len(produced)),
                consume_kafka_python(b.bootstrap, topic, range(2), len(produced))):
        parts = by_partition(got)
        for p in range(2):
            assert [g.rec() for g in parts.get(p, [])] == want[p], f"partition {p}"
