"""The topic settings flush.messages and flush.ms (Kafka's names): with acks=0/1
the broker fdatasyncs a partition once that many messages are not yet durable
(before answering, as Kafka's append does), or at most flush.ms after an
append. By default neither ever syncs (acks=all syncs every request anyway).

Whether a sync happened is read from the stall detector's per-shard line
(`longest_fsync_us`), which times every partition fsync."""
from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic

from kclients import admin, create_topic, uniq

DETECTOR = {"stall.detector.interval.ms": "100"}


def produce_acks1(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 0})
    for i in range(n):
        p.produce(topic, value=b"m%d" % i)
        p.poll(0)
    assert p.flush(30) == 0


def longest_fsyncs(log, after: int) -> list[int]:
    """longest_fsync_us of every detector line from byte `after` of the log on."""
    text = log.read_text(errors="replace")[after:]
    return [int(v) for v in re.findall(r"longest_fsync_us=(\d+)", text)]


def settle(log, after: int, lines: int = 6, within: float = 10.0) -> list[int]:
    """Waits until at least `lines` detector lines follow `after` (both shards report)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = longest_fsyncs(log, after)
        if len(got) >= lines:
            return got
        time.sleep(0.1)
    raise AssertionError("no stall detector lines in the broker log")


def fsyncs_after_produce(broker_factory, config: dict, n: int, wait: float = 0.0,
                         lines: int = 6) -> list[int]:
    """Produces `n` acks=1 messages to a new topic with `config` on a fresh
    broker, waits `wait` seconds, and returns the detector's longest_fsync_us
    values logged from just before the produce on."""
    b = broker_factory(settings=DETECTOR)
    topic = uniq("fl")
    create_topic(b.bootstrap, topic, partitions=2, config=config)
    time.sleep(0.3)
    mark = len(b.log_path.read_text(errors="replace"))
    produce_acks1(b.bootstrap, topic, n)
    time.sleep(wait)
    return settle(b.log_path, mark, lines=lines)


def test_defaults_never_sync_acks1(broker_factory):
    got = fsyncs_after_produce(broker_factory, {}, 200)
    assert all(us == 0 for us in got), got


def test_flush_messages_syncs_before_answering(broker_factory):
    got = fsyncs_after_produce(broker_factory, {"flush.messages": "1"}, 50)
    assert any(us > 0 for us in got), got


def test_flush_ms_syncs_after_the_delay(broker_factory):
    got = fsyncs_after_produce(broker_factory, {"flush.ms": "300"}, 5, wait=1.0, lines=12)
    assert any(us > 0 for us in got), got


@pytest.mark.parametrize("key,value", [("flush.messages", "0"), ("flush.ms", "-1"),
                                       ("flush.messages", "x")])
def test_invalid_flush_settings_are_refused(shared_broker, key, value):
    topic = uniq("flbad")
    a = admin(shared_broker.bootstrap)  # kept: the futures need the client alive
    fs = a.create_topics([NewTopic(topic, 1, 1, config={key: value})], request_timeout=10)
    with pytest.raises(KafkaException) as e:
        fs[topic].result(timeout=10)
    assert "INVALID_CONFIG" in str(e.value) or "InvalidConfig" in str(e.value), str(e.value)
