"""Acceptance 3: topic administration through the clients' admin APIs."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   NewTopic)

from kclients import (Rec, admin, consume_confluent, create_topic, produce_confluent, uniq,
                      wait_topic, watermarks)


def create_error(bs, topic: NewTopic):
    a = admin(bs)
    fs = a.create_topics([topic], operation_timeout=10, request_timeout=15)
    with pytest.raises(KafkaException) as ei:
        fs[topic.topic].result(timeout=20)
    return ei.value.args[0].code()


def describe(bs, topic) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    a = admin(bs)
    fs = a.describe_configs([res], request_timeout=15)
    entries = fs[res].result(timeout=20)
    return {k: e.value for k, e in entries.items()}


def test_create_topic_and_errors(shared_broker):
    bs = shared_broker.bootstrap
    name = uniq("adm")
    md = create_topic(bs, name, 3)
    t = md.topics[name]
    assert sorted(t.partitions) == [0, 1, 2]
    for p in t.partitions.values():
        assert p.leader in md.brokers and list(p.replicas) == [p.leader] and list(p.isrs) == [p.leader]

    # Same name again.
    assert create_error(bs, NewTopic(name, 1, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    # Invalid names: a slash, 250 characters (Kafka allows 249), "." and "..".
    for bad in ["bad/name", "a" * 250, "..", "sp ace"]:
        assert create_error(bs, NewTopic(bad, 1, 1)) == KafkaError.TOPIC_EXCEPTION, bad
    # 249 characters is fine.
    long_ok = "b" * 240 + uniq("")[1:10]
    assert len(long_ok) == 249
    create_topic(bs, long_ok, 1)
    names = admin(bs).list_topics(timeout=10).topics
    assert name in names and long_ok in names
    for bad in ["bad/name", "a" * 250]:
        assert bad not in names
    # The original topic still has 3 partitions.
    assert len(names[name].partitions) == 3


def test_create_topic_validate_only_and_bad_partitions(shared_broker):
    bs = shared_broker.bootstrap
    name = uniq("vo")
    a = admin(bs)
    fs = a.create_topics([NewTopic(name, 2, 1)], validate_only=True, operation_timeout=10)
    fs[name].result(timeout=20)
    time.sleep(0.5)
    assert name not in admin(bs).list_topics(timeout=10).topics, "validate_only created the topic"
    # Replication factor larger than the cluster.
    code = create_error(bs, NewTopic(uniq("rf"), 1, 3))
    assert code == KafkaError.INVALID_REPLICATION_FACTOR


def test_delete_topic(broker_factory):
    b = broker_factory(settings={"auto.create.topics.enable": "false"})
    bs = b.bootstrap
    name = uniq("del")
    create_topic(bs, name, 2)
    produce_confluent(bs, name, [Rec(b"k", b"before-delete")], partition=0)
    assert watermarks(bs, name, 0) == (0, 1)

    a = admin(bs)
    fs = a.delete_topics([name], operation_timeout=10, request_timeout=15)
    assert fs[name].result(timeout=20) is None
    wait_topic(bs, name, present=False)
    md = admin(bs).list_topics(topic=name, timeout=10)
    assert md.topics[name].error is not None and \
        md.topics[name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Deleting it again: UNKNOWN_TOPIC_OR_PARTITION.
    fs = a.delete_topics([name], operation_timeout=10, request_timeout=15)
    with pytest.raises(KafkaException) as ei:
        fs[name].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Producing to it fails (auto-creation is off) with an unknown-topic error.
    errs = []
    p = Producer({"bootstrap.servers": bs, "message.timeout.ms": 5000,
                  "topic.metadata.propagation.max.ms": 2000})
    p.produce(name, b"after-delete", partition=0, on_delivery=lambda e, m: errs.append(e))
    p.flush(15)
    assert len(errs) == 1 and errs[0] is not None, errs
    assert errs[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                              KafkaError._UNKNOWN_PARTITION), errs[0]
    assert name not in admin(bs).list_topics(timeout=10).topics

    # Re-created with the same name it starts empty.
    create_topic(bs, name, 1)
    assert watermarks(bs, name, 0) == (0, 0)
    produce_confluent(bs, name, [Rec(b"k", b"after-recreate")], partition=0)
    got = consume_confluent(bs, name, [0], 1)
    assert [(g.offset, g.value) for g in got] == [(0, b"after-recreate")]


def test_create_partitions(shared_broker):
    bs = shared_broker.bootstrap
    name = uniq("cp")
    create_topic(bs, name, 2)
    produce_confluent(bs, name, [Rec(None, b"p1-before")], partition=1)
    a = admin(bs)
    fs = a.create_partitions([NewPartitions(name, 5)], operation_timeout=10,
                                     request_timeout=15)
    fs[name].result(timeout=20)
    wait_topic(bs, name, 5)
    d = produce_confluent(bs, name, [Rec(None, b"p4")], partition=4)
    assert d == [(4, 0)]
    got = consume_confluent(bs, name, range(5), 2)
    assert sorted((g.partition, g.offset, g.value) for g in got) == [(1, 0, b"p1-before"), (4, 0, b"p4")]
    # Shrinking is refused with INVALID_PARTITIONS.
    fs = a.create_partitions([NewPartitions(name, 3)], operation_timeout=10,
                                     request_timeout=15)
    with pytest.raises(KafkaException) as ei:
        fs[name].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    assert len(admin(bs).list_topics(timeout=10).topics[name].partitions) == 5


def test_describe_and_alter_configs(shared_broker):
    bs = shared_broker.bootstrap
    name = uniq("cfg")
    create_topic(bs, name, 1, config={"retention.ms": "3600000", "cleanup.policy": "delete"})
    cfg = describe(bs, name)
    assert cfg["retention.ms"] == "3600000"
    assert cfg["cleanup.policy"] == "delete"
    for k in ("max.message.bytes", "segment.bytes", "message.timestamp.type"):
        assert k in cfg, f"describe_configs lacks {k}: {sorted(cfg)}"
    assert cfg["message.timestamp.type"] == "CreateTime"

    # Incremental alter: set one key, the others stay.
    a = admin(bs)
    res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "12345", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "200000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=20)
    cfg = describe(bs, name)
    assert cfg["retention.ms"] == "12345"
    assert cfg["max.message.bytes"] == "200000"
    assert cfg["cleanup.policy"] == "delete"

    # Incremental DELETE returns a key to its default.
    res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=20)
    cfg = describe(bs, name)
    assert cfg["max.message.bytes"] != "200000"
    assert cfg["retention.ms"] == "12345"

    # A bad value is refused with INVALID_CONFIG and changes nothing.
    res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        a.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe(bs, name)["retention.ms"] == "12345"

    # Legacy AlterConfigs replaces the topic's whole set of overrides.
    res = ConfigResource(ConfigResource.Type.TOPIC, name, set_config={"retention.ms": "777777"})
    a.alter_configs([res], request_timeout=15)[res].result(timeout=20)
    assert describe(bs, name)["retention.ms"] == "777777"


def test_describe_configs_unknown_topic(shared_broker):
    res = ConfigResource(ConfigResource.Type.TOPIC, uniq("nope"))
    a = admin(shared_broker.bootstrap)
    fs = a.describe_configs([res], request_timeout=15)
    with pytest.raises(KafkaException) as ei:
        fs[res].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_admin(shared_broker):
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
    bs = shared_broker.bootstrap
    name = uniq("kpadm")
    a = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=15000)
    try:
        a.create_topics([KNewTopic(name, num_partitions=3, replication_factor=1)], timeout_ms=10000)
        wait_topic(bs, name, 3)
        assert name in a.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([KNewTopic(name, num_partitions=3, replication_factor=1)],
                            timeout_ms=10000)
        desc = {t.get("topic", t.get("name")): t for t in a.describe_topics([name])}
        assert len(desc[name]["partitions"]) == 3
        a.delete_topics([name], timeout_ms=10000)
        wait_topic(bs, name, present=False)
        assert name not in a.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([name], timeout_ms=10000)
    finally:
        a.close()
