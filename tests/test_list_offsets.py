"""Acceptance 2: ListOffsets by timestamp, earliest and latest."""

import time

from confluent_kafka import Consumer, TopicPartition

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq, watermarks

PER_BATCH = 5
BATCHES = 8


def produce_timed(bs, topic, partition, base_ts):
    """40 records, in 8 separately flushed batches of 5, record i stamped
    base_ts + 1000*i: lookups must find records inside batches, not just
    batch starts."""
    recs, tss = [], []
    for b in range(BATCHES):
        chunk = [Rec(b"k%d" % (b * PER_BATCH + j), b"v%d-%d" % (partition, b * PER_BATCH + j))
                 for j in range(PER_BATCH)]
        ts = [base_ts + 1000 * (b * PER_BATCH + j) for j in range(PER_BATCH)]
        d = produce_confluent(bs, topic, chunk, partition=partition, timestamps=ts)
        assert [o for _, o in d] == list(range(b * PER_BATCH, (b + 1) * PER_BATCH))
        recs += chunk
        tss += ts
    return recs, tss


def test_offsets_for_times_confluent(shared_broker):
    bs = shared_broker.bootstrap
    topic = uniq("lo")
    create_topic(bs, topic, 2)
    n = PER_BATCH * BATCHES
    base = {0: int(time.time() * 1000) - 3_600_000, 1: int(time.time() * 1000) - 7_200_000}
    for p in (0, 1):
        produce_timed(bs, topic, p, base[p])

    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("g"), "enable.auto.commit": False,
                  "socket.timeout.ms": 10000})
    try:
        for p in (0, 1):
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) == (0, n)
            b = base[p]
            cases = {
                b - 10_000: 0,            # before the first record
                b: 0,                     # exactly the first
                b + 1: 1,                 # just after the first
                b + 7_000: 7,             # exact, inside the 2nd batch
                b + 12_500: 13,           # between records, inside the 3rd batch
                b + 1000 * (n - 1): n - 1,  # exactly the last
                b + 1000 * n: -1,         # after the last: no such offset
            }
            asked = [TopicPartition(topic, p, ts) for ts in cases]
            for tp, (ts, want) in zip(asked, cases.items()):
                [res] = c.offsets_for_times([tp], timeout=10)
                assert res.error is None, res.error
                assert res.offset == want, f"p{p} ts={ts - b:+} -> {res.offset}, want {want}"
    finally:
        c.close()

    # The timestamps come back on fetch too.
    got = consume_confluent(bs, topic, [0], n)
    assert [g.timestamp for g in sorted(got, key=lambda g: g.offset)] == \
        [base[0] + 1000 * i for i in range(n)]


def test_offsets_for_times_kafka_python(shared_broker):
    """kafka-python's offsets_for_times returns the offset and the record's timestamp;
    beginning_offsets / end_offsets are ListOffsets earliest / latest."""
    from kafka import KafkaConsumer, TopicPartition as KTP
    bs = shared_broker.bootstrap
    topic = uniq("lo-kp")
    create_topic(bs, topic, 1)
    n = PER_BATCH * BATCHES
    base = int(time.time() * 1000) - 600_000
    produce_timed(bs, topic, 0, base)
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                      request_timeout_ms=15000)
    try:
        tp = KTP(topic, 0)
        assert c.beginning_offsets([tp], timeout_ms=10000) == {tp: 0}
        assert c.end_offsets([tp], timeout_ms=10000) == {tp: n}
        for delta, want in [(-5, 0), (0, 0), (3_000, 3), (21_001, 22), (1000 * (n - 1), n - 1)]:
            r = c.offsets_for_times({tp: base + delta}, timeout_ms=10000)[tp]
            assert r is not None and r.offset == want, f"ts {delta:+} -> {r}, want {want}"
            assert r.timestamp == base + 1000 * want
        assert c.offsets_for_times({tp: base + 1000 * n}, timeout_ms=10000)[tp] is None
    finally:
        c.close()


def test_watermarks_empty_and_after_produce(shared_broker):
    bs = shared_broker.bootstrap
    topic = uniq("wm")
    create_topic(bs, topic, 3)
    for p in range(3):
        assert watermarks(bs, topic, p) == (0, 0)
    produce_confluent(bs, topic, [Rec(None, b"x%d" % i) for i in range(7)], partition=2)
    assert watermarks(bs, topic, 2) == (0, 7)
    assert watermarks(bs, topic, 0) == (0, 0)
