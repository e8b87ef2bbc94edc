"""Acceptance 7: a batch over the size limit gets MESSAGE_TOO_LARGE (10), is
not stored, and the broker keeps serving."""

import pytest
from confluent_kafka import KafkaError, Producer

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq, watermarks

# librdkafka checks its own message.max.bytes before sending: make it large so
# that the broker is the one that refuses.
CLIENT = {"message.max.bytes": 10_000_000, "linger.ms": 0, "compression.type": "none",
          "message.timeout.ms": 15000, "retries": 0}


def produce_one(bs, topic, value: bytes):
    """Produce one record to partition 0; return the delivery error (or None)."""
    p = Producer({"bootstrap.servers": bs, "acks": "all", **CLIENT})
    res = []
    p.produce(topic, value=value, partition=0, on_delivery=lambda e, m: res.append(e))
    assert p.flush(20) == 0
    assert len(res) == 1
    return res[0]


def test_topic_max_message_bytes(shared_broker):
    bs = shared_broker.bootstrap
    topic = uniq("big")
    create_topic(bs, topic, 1, config={"max.message.bytes": "1000"})
    err = produce_one(bs, topic, b"x" * 5000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert watermarks(bs, topic, 0) == (0, 0), "the oversized record was stored"
    # Still serving: a small record goes in at offset 0 and comes back.
    assert produce_one(bs, topic, b"small") is None
    got = consume_confluent(bs, topic, [0], 1)
    assert [(g.offset, g.value) for g in got] == [(0, b"small")]
    # A record just under the limit (the batch, with overhead, fits) is fine too.
    assert produce_one(bs, topic, b"y" * 800) is None
    assert watermarks(bs, topic, 0) == (0, 2)


def test_topic_limit_does_not_affect_other_topics(shared_broker):
    bs = shared_broker.bootstrap
    small, normal = uniq("small"), uniq("normal")
    create_topic(bs, small, 1, config={"max.message.bytes": "1000"})
    create_topic(bs, normal, 1)
    assert produce_one(bs, normal, b"z" * 50_000) is None
    assert produce_one(bs, small, b"z" * 50_000).code() == KafkaError.MSG_SIZE_TOO_LARGE
    got = consume_confluent(bs, normal, [0], 1)
    assert [len(g.value) for g in got] == [50_000]


@pytest.mark.sluice_only
def test_broker_message_max_bytes(broker_factory):
    b = broker_factory(settings={"message.max.bytes": "2000"})
    bs = b.bootstrap
    topic = uniq("bmax")
    create_topic(bs, topic, 1)
    err = produce_one(bs, topic, b"q" * 10_000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert produce_one(bs, topic, b"ok") is None
    assert watermarks(bs, topic, 0) == (0, 1)


def test_default_limit_allows_just_under_one_megabyte(shared_broker):
    """The default message.max.bytes (1048588) takes a ~1000000-byte record
    and refuses a 2 MB one."""
    bs = shared_broker.bootstrap
    topic = uniq("mb")
    create_topic(bs, topic, 1)
    assert produce_one(bs, topic, b"m" * 1_000_000) is None
    err = produce_one(bs, topic, b"m" * 2_000_000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    d = produce_confluent(bs, topic, [Rec(None, b"after")], partition=0)
    assert d == [(0, 1)]


def test_min_insync_replicas_above_isr_gets_not_enough_replicas(broker):
    """One node means an ISR of 1: acks=all to a topic asking for 2 in-sync
    replicas is refused with NOT_ENOUGH_REPLICAS (nothing stored); acks=1 works."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = uniq("misr")
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, 1, 1, config={"min.insync.replicas": "2"})])[topic].result(10)
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0,
                  "message.timeout.ms": 5000})
    p.produce(topic, b"x", partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(10)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors
    p1 = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1"})
    ok = []
    p1.produce(topic, b"y", partition=0, on_delivery=lambda e, m: ok.append((e, m.offset())))
    p1.flush(10)
    assert ok == [(None, 0)], ok
