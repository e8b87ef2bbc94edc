"""Read-ahead for readers catching up from segment files (storage/readahead.rs):
after a fetch reads a partition's records from a file, the window after them
is read at once, and the reader's next fetch at that offset takes it. Real
clients must read exactly what was produced, alone and with another group
reading the same partitions at other offsets at the same time.

That windows were taken is read from the stall detector's per-shard line
(`ahead_taken`). Each partition gets more than the 4 MiB its recent-batch
cache keeps, so the oldest records are read from the files."""
from __future__ import annotations

import threading

from kclients import (by_partition, consume_confluent, consume_kafka_python, create_topic,
                      produce_confluent, uniq)
from test_fetch_splice import detector_sum, expect, records

DETECTOR = {"stall.detector.interval.ms": "200"}


def test_catching_up_readers_get_exactly_what_was_produced(broker_factory):
    b = broker_factory(settings=DETECTOR)
    topic = uniq("ra")
    # Small segments: windows end at segment ends, and reads cross them.
    create_topic(b.bootstrap, topic, partitions=2, config={"segment.bytes": str(3 << 20)})
    produced = records(12000, 7)
    offsets = produce_confluent(b.bootstrap, topic, produced, conf={"linger.ms": 20})
    want = expect(produced, offsets, 2)

    # Two groups at once (librdkafka with its defaults, and with small
    # limits so its reads are shorter and at other offsets), then
    # kafka-python alone.
    results: dict[str, list] = {}

    def run(name, **kw):
        results[name] = consume_confluent(b.bootstrap, topic, range(2), len(produced),
                                          timeout=60, **kw)

    small = {"max.partition.fetch.bytes": 200000, "fetch.max.bytes": 300000,
             "message.max.bytes": 100000}
    threads = [threading.Thread(target=run, args=("defaults",)),
               threading.Thread(target=run, args=("small",), kwargs={"conf": small})]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    results["kafka-python"] = consume_kafka_python(b.bootstrap, topic, range(2), len(produced),
                                                   timeout=60)
    assert sorted(results) == ["defaults", "kafka-python", "small"], "a reader failed"
    for name, got in results.items():
        parts = by_partition(got)
        for p in range(2):
            assert [g.rec() for g in parts.get(p, [])] == want[p], f"{name}, partition {p}"
            assert [g.offset for g in parts.get(p, [])] == list(range(len(want[p]))), name
    assert detector_sum(b.log_path, "ahead_taken") > 0, "no window read ahead was taken"
    assert b.alive()
