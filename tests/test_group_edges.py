"""Consumer groups: rebalance when a subscribed topic grows, the internal
topic's protections, error answers to bad group requests, and offset expiry.
(The main group acceptance tests are in test_groups.py.)"""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewPartitions

from kclients import admin, create_topic, uniq

GROUP_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
}


def consumer(bs: str, group: str, **extra) -> Consumer:
    conf = {
        "bootstrap.servers": bs,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    conf.update(extra)
    return Consumer(conf)


def poll_until(consumers, pred, timeout: float = 30.0):
    end = time.time() + timeout
    while time.time() < end:
        for c in consumers:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                pass
        if pred():
            return True
    return False


@pytest.mark.sluice_only
def test_adding_partitions_rebalances_the_group(broker_factory):
    b = broker_factory(settings=GROUP_SETTINGS)
    bs = b.bootstrap
    topic = uniq("grow")
    create_topic(bs, topic, partitions=2)
    assigned = {0: set(), 1: set()}

    def on_assign(i):
        def cb(c, parts):
            assigned[i] = {p.partition for p in parts}
        return cb

    group = uniq("grow-g")
    cs = [consumer(bs, group), consumer(bs, group)]
    for i, c in enumerate(cs):
        c.subscribe([topic], on_assign=on_assign(i))
    try:
        assert poll_until(cs, lambda: assigned[0] | assigned[1] == {0, 1}), assigned
        a = admin(bs)
        fs = a.create_partitions([NewPartitions(topic, 4)])
        fs[topic].result(timeout=15)
        # The leader sees the new partition count on its next metadata
        # refresh and rejoins; the group rebalances over all four.
        assert poll_until(cs, lambda: assigned[0] | assigned[1] == {0, 1, 2, 3}), assigned
        assert not (assigned[0] & assigned[1])
    finally:
        for c in cs:
            c.close()


@pytest.mark.sluice_only
def test_internal_offsets_topic_is_protected(broker_factory):
    b = broker_factory(settings=GROUP_SETTINGS)
    bs = b.bootstrap
    topic = uniq("prot")
    create_topic(bs, topic, partitions=1)
    c = consumer(bs, uniq("g"))
    c.subscribe([topic])
    c.poll(2)  # creates __consumer_offsets through FindCoordinator
    c.close()
    md = admin(bs).list_topics(timeout=10)
    assert "__consumer_offsets" in md.topics
    assert len(md.topics["__consumer_offsets"].partitions) == 50

    p = Producer({"bootstrap.servers": bs, "message.timeout.ms": 5000, "retries": 0})
    errs = []
    p.produce("__consumer_offsets", key=b"k", value=b"v", on_delivery=lambda e, m: errs.append(e))
    p.flush(10)
    assert errs and errs[0] is not None
    assert errs[0].code() == KafkaError.TOPIC_EXCEPTION, errs[0]

    a = admin(bs)
    f = a.delete_topics(["__consumer_offsets"], operation_timeout=10)
    with pytest.raises(KafkaException) as e:
        f["__consumer_offsets"].result(timeout=15)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    f = a.create_partitions([NewPartitions("__consumer_offsets", 60)])
    with pytest.raises(KafkaException) as e:
        f["__consumer_offsets"].result(timeout=15)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS


@pytest.mark.sluice_only
def test_bad_group_requests_get_kafka_errors(broker_factory):
    b = broker_factory(settings=GROUP_SETTINGS)
    bs = b.bootstrap
    topic = uniq("bad")
    create_topic(bs, topic, partitions=1)
    # A session timeout outside [group.min, group.max].session.timeout.ms.
    c = consumer(bs, uniq("g"), **{"session.timeout.ms": 500, "heartbeat.interval.ms": 100})
    errors = []
    c.subscribe([topic])
    end = time.time() + 15
    while not errors and time.time() < end:
        m = c.poll(0.2)
        if m is not None and m.error() is not None:
            errors.append(m.error())
    c.close()
    assert errors, "no error for a session timeout below group.min.session.timeout.ms"
    assert errors[0].code() == KafkaError.INVALID_SESSION_TIMEOUT, errors[0]

    # Committing an offset for a partition that does not exist.
    g = uniq("g")
    c = consumer(bs, g)
    with pytest.raises(KafkaException) as e:
        c.commit(offsets=[TopicPartition(topic, 7, 5)], asynchronous=False)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Metadata above offset.metadata.max.bytes (4096).
    tp = TopicPartition(topic, 0, 5, metadata="x" * 5000)
    with pytest.raises(KafkaException) as e:
        c.commit(offsets=[tp], asynchronous=False)
    assert e.value.args[0].code() == KafkaError.OFFSET_METADATA_TOO_LARGE
    # A normal commit outside the group protocol is kept.
    c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    got = c.committed([TopicPartition(topic, 0)], timeout=10)
    assert got[0].offset == 3
    c.close()
    # The broker still serves groups afterwards.
    assert admin(bs).list_consumer_groups().result(timeout=10) is not None


@pytest.mark.sluice_only
def test_offsets_of_an_empty_group_expire(broker_factory):
    settings = dict(GROUP_SETTINGS)
    # offsets.retention.minutes is whole minutes; 0 expires at the next check.
    settings.update({"offsets.retention.minutes": "0",
                     "offsets.retention.check.interval.ms": "500"})
    b = broker_factory(settings=settings)
    bs = b.bootstrap
    topic = uniq("exp")
    create_topic(bs, topic, partitions=1)
    g = uniq("g")
    c = consumer(bs, g)
    c.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    c.close()
    c = consumer(bs, g)
    end = time.time() + 20
    off = None
    while time.time() < end:
        off = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        if off < 0:
            break
        time.sleep(0.3)
    c.close()
    assert off is not None and off < 0, f"offset still committed: {off}"
    groups = admin(bs).list_consumer_groups().result(timeout=10).valid
    assert g not in {x.group_id for x in groups}


@pytest.mark.sluice_only
def test_batched_group_requests_from_kafka_python_admin(broker_factory):
    """kafka-python 3's admin client sends the batched forms: FindCoordinator
    v4 (several keys), OffsetFetch v8 (several groups in one request) and
    LeaveGroup v3+ (several members, static ones by instance id)."""
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient, MemberToRemove

    b = broker_factory(settings=GROUP_SETTINGS)
    bs = b.bootstrap
    topic = uniq("batch")
    create_topic(bs, topic, partitions=2)
    groups = [uniq("bg") for _ in range(3)]
    for i, g in enumerate(groups):
        c = consumer(bs, g)
        c.commit(offsets=[TopicPartition(topic, 0, 10 + i), TopicPartition(topic, 1, 20 + i)],
                 asynchronous=False)
        c.close()
    ka = KafkaAdminClient(bootstrap_servers=bs)
    try:
        got = ka.list_group_offsets({g: None for g in groups})
        assert set(got) == set(groups)
        for i, g in enumerate(groups):
            offs = {tp.partition: om.offset for tp, om in got[g].items() if tp.topic == topic}
            assert offs == {0: 10 + i, 1: 20 + i}, (g, got[g])
        # Only some partitions, for one group.
        one = ka.list_group_offsets({groups[0]: [KTP(topic, 1)]})
        assert {tp.partition: om.offset for tp, om in one[groups[0]].items()} == {1: 20}

        # Two static members, removed together by instance id.
        g = uniq("static")
        assigned = {}
        cs = []
        for name in ("s1", "s2"):
            c = consumer(bs, g, **{"group.instance.id": name})
            c.subscribe([topic], on_assign=lambda c_, ps, n=name: assigned.__setitem__(n, ps))
            cs.append(c)
        assert poll_until(cs, lambda: len(assigned) == 2 and all(assigned.values()))
        # Several groups at once: one batched FindCoordinator for their keys.
        desc = ka.describe_groups(groups + [g])
        assert set(desc) == set(groups + [g])
        assert all(desc[x]["group_state"] == "Empty" for x in groups), desc
        assert desc[g]["group_state"] == "Stable", desc[g]
        assert sorted(m["group_instance_id"] for m in desc[g]["members"]) == ["s1", "s2"]
        res = ka.remove_group_members(g, [MemberToRemove(group_instance_id="s1"),
                                          MemberToRemove(group_instance_id="s2"),
                                          MemberToRemove(group_instance_id="nobody")])
        codes = {k: v.__name__ for k, v in res.items()}
        assert codes["s1"] == "NoError" and codes["s2"] == "NoError", codes
        assert codes["nobody"] == "UnknownMemberIdError", codes
        for c in cs:
            c.close()
    finally:
        ka.close()
