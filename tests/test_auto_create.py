"""Acceptance 9: auto.create.topics.enable: off -> UNKNOWN_TOPIC_OR_PARTITION,
on -> the topic appears with num.partitions partitions."""

import subprocess

import pytest
from confluent_kafka import KafkaError, Producer

from kclients import (Rec, admin, consume_confluent, consume_kafka_python, kcat_bin,
                      produce_confluent, produce_kafka_python, uniq, wait_topic)


@pytest.mark.sluice_only
def test_auto_create_disabled(broker_factory):
    b = broker_factory(settings={"auto.create.topics.enable": "false"})
    bs = b.bootstrap
    topic = uniq("noauto")
    # Metadata asking for the topic (a producer allows auto-creation) says unknown.
    p = Producer({"bootstrap.servers": bs, "message.timeout.ms": 5000,
                  "topic.metadata.propagation.max.ms": 2000})
    md = p.list_topics(topic=topic, timeout=10)
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    errs = []
    p.produce(topic, b"v", on_delivery=lambda e, m: errs.append(e))
    assert p.flush(15) == 0
    assert len(errs) == 1 and errs[0] is not None
    assert errs[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), errs[0]

    # kafka-python's producer cannot get metadata for it either.
    from kafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
    with pytest.raises((KafkaTimeoutError, UnknownTopicOrPartitionError)):
        produce_kafka_python(bs, topic, [Rec(None, b"v")], max_block_ms=3000, timeout=5)

    assert topic not in admin(bs).list_topics(timeout=10).topics, "topic was created anyway"


@pytest.mark.sluice_only
def test_auto_create_enabled_uses_num_partitions(broker_factory):
    b = broker_factory(settings={"auto.create.topics.enable": "true", "num.partitions": "3"})
    bs = b.bootstrap
    topic = uniq("auto")
    d = produce_confluent(bs, topic, [Rec(b"k%d" % i, b"v%d" % i) for i in range(20)])
    md = wait_topic(bs, topic, 3)
    assert len(md.topics[topic].partitions) == 3
    got = consume_kafka_python(bs, topic, range(3), 20)
    assert sorted((g.partition, g.offset, g.value) for g in got) == \
        sorted((p, o, b"v%d" % i) for i, (p, o) in enumerate(d))


def test_auto_create_default_on(broker):
    """By default a producer's first record to a new topic creates it (1
    partition by default), with kafka-python and kcat too."""
    bs = broker.bootstrap
    t1, t2 = uniq("auto-kp"), uniq("auto-cf")
    assert produce_kafka_python(bs, t1, [Rec(b"a", b"1"), Rec(b"b", b"2")]) == [(0, 0), (0, 1)]
    assert produce_confluent(bs, t2, [Rec(b"c", b"3")]) == [(0, 0)]
    md = wait_topic(bs, t1, 1)
    assert len(md.topics[t2].partitions) == 1
    got = consume_confluent(bs, t1, [0], 2)
    assert [(g.key, g.value) for g in got] == [(b"a", b"1"), (b"b", b"2")]


def test_auto_create_kcat(broker):
    bs = broker.bootstrap
    t = uniq("auto-kcat")
    res = subprocess.run([kcat_bin(), "-P", "-b", bs, "-t", t, "-K", ":"], input=b"x:y\n",
                         capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    got = consume_confluent(bs, t, [0], 1)
    assert [(g.key, g.value) for g in got] == [(b"x", b"y")]
