"""Acceptance 7: consumer-group administration through real admin clients:
confluent-kafka AdminClient (ListGroups, DescribeGroups, OffsetFetch,
OffsetCommit as alter_consumer_group_offsets, DeleteGroups) and kafka-python's
KafkaAdminClient.delete_group_offsets (OffsetDelete; confluent-kafka has no
call for it)."""

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException, TopicPartition)

from groupclients import ConfluentMember, produce_parts, pump, pump_for
from kclients import admin, create_topic, uniq

TIMEOUT_S = 15


def listed(bs) -> dict:
    a = admin(bs)  # kept referenced until the result: a collected client fails its requests
    res = a.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S + 5)
    assert not res.errors, res.errors
    return {g.group_id: g for g in res.valid}


def describe(bs, group):
    a = admin(bs)
    return a.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S + 5)


def offsets(bs, group) -> dict[tuple[str, int], int]:
    a = admin(bs)
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                        request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S + 5)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}


def error_code(fut) -> int | None:
    """The Kafka error code a future failed with, None if it succeeded. Offset
    results carry their errors per partition (the first one is returned)."""
    try:
        res = fut.result(TIMEOUT_S + 5)
    except KafkaException as e:
        return e.args[0].code()
    for tp in getattr(res, "topic_partitions", None) or []:
        if tp.error is not None:
            return tp.error.code()
    return None


class Group:
    """A group of two confluent members on topics t (2 partitions) and u (1),
    that consumed and committed 5 records on each partition."""

    def __init__(self, bs):
        self.bs = bs
        self.t, self.u, self.id = uniq("adm-t"), uniq("adm-u"), uniq("adm-g")
        create_topic(bs, self.t, 2)
        create_topic(bs, self.u, 1)
        self.members = [ConfluentMember(f"m{i}", bs, self.id, [self.t, self.u],
                                        **{"client.id": f"client-{i}"}) for i in range(2)]
        want = {(self.t, 0), (self.t, 1), (self.u, 0)}
        pump(self.members, lambda: all(m.owned for m in self.members) and
             self.members[0].owned | self.members[1].owned == want, what="both members assigned")
        pump_for(self.members, 0.5)
        produce_parts(bs, self.t, {0: 5, 1: 5})
        produce_parts(bs, self.u, {0: 5})
        pump(self.members, lambda: sum(len(m.got) for m in self.members) >= 15, what="15 records")

    def close(self):
        for m in self.members:
            m.close()


@pytest.fixture
def group(group_broker):
    g = Group(group_broker.bootstrap)
    yield g
    g.close()


def test_list_and_describe_active_group(group):
    bs, g = group.bs, group
    entry = listed(bs).get(g.id)
    assert entry is not None, f"{g.id} not listed"
    assert entry.state == ConsumerGroupState.STABLE and not entry.is_simple_consumer_group

    d = describe(bs, g.id)
    assert d.state == ConsumerGroupState.STABLE, d
    assert d.partition_assignor, d
    assert len(d.members) == 2, d.members
    assert {m.client_id for m in d.members} == {"client-0", "client-1"}
    ids = {m.c.memberid() for m in g.members}
    assert {m.member_id for m in d.members} == ids
    by_id = {m.c.memberid(): m for m in g.members}
    for md in d.members:
        assert md.host, md
        got = {(tp.topic, tp.partition) for tp in md.assignment.topic_partitions}
        assert got == by_id[md.member_id].owned, (md, by_id[md.member_id])

    assert offsets(bs, g.id) == {(g.t, 0): 5, (g.t, 1): 5, (g.u, 0): 5}


def test_admin_refusals_while_members_are_active(group):
    bs, g = group.bs, group
    a = admin(bs)
    # DeleteGroups on a group with members: NON_EMPTY_GROUP.
    assert error_code(a.delete_consumer_groups([g.id], request_timeout=TIMEOUT_S)[g.id]) == \
        KafkaError.NON_EMPTY_GROUP
    # A commit as a non-member (generation -1, what alter offsets sends) to a
    # group with members: UNKNOWN_MEMBER_ID; nothing changes.
    fut = a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(g.id, [TopicPartition(g.t, 0, 1)])],
        request_timeout=TIMEOUT_S)[g.id]
    assert error_code(fut) == KafkaError.UNKNOWN_MEMBER_ID
    # OffsetDelete for a topic the group is subscribed to: GROUP_SUBSCRIBED_TO_TOPIC.
    from kafka import KafkaAdminClient, TopicPartition as KTP
    from kafka.errors import GroupSubscribedToTopicError
    ka = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        res = ka.delete_group_offsets(g.id, [KTP(g.u, 0)])
        assert res == {KTP(g.u, 0): GroupSubscribedToTopicError}, res
    finally:
        ka.close()
    assert offsets(bs, g.id) == {(g.t, 0): 5, (g.t, 1): 5, (g.u, 0): 5}
    assert describe(bs, g.id).state == ConsumerGroupState.STABLE


def test_alter_delete_offsets_and_delete_group_when_empty(group):
    bs, g = group.bs, group
    g.close()
    d = describe(bs, g.id)
    assert d.state == ConsumerGroupState.EMPTY and not d.members, d
    assert listed(bs)[g.id].state == ConsumerGroupState.EMPTY

    a = admin(bs)
    fut = a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(g.id, [TopicPartition(g.t, 0, 1), TopicPartition(g.t, 1, 3)])],
        request_timeout=TIMEOUT_S)[g.id]
    res = fut.result(TIMEOUT_S + 5)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
    assert offsets(bs, g.id) == {(g.t, 0): 1, (g.t, 1): 3, (g.u, 0): 5}

    from kafka import KafkaAdminClient, TopicPartition as KTP
    from kafka.errors import NoError
    ka = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        assert ka.delete_group_offsets(g.id, [KTP(g.u, 0)]) == {KTP(g.u, 0): NoError}
    finally:
        ka.close()
    assert offsets(bs, g.id) == {(g.t, 0): 1, (g.t, 1): 3}

    # A new member of the group starts where the altered offsets say.
    m = ConfluentMember("again", bs, g.id, [g.t])
    try:
        pump([m], lambda: len(m.got) >= 6, what="records from the altered offsets")
        pump_for([m], 0.5)
        assert sorted((x.partition, x.offset) for x in m.got) == \
            [(0, o) for o in range(1, 5)] + [(1, 3), (1, 4)]
    finally:
        m.close()

    assert error_code(a.delete_consumer_groups([g.id], request_timeout=TIMEOUT_S)[g.id]) is None
    assert g.id not in listed(bs)
    assert offsets(bs, g.id) == {}
    unknown = uniq("no-such-group")
    assert error_code(a.delete_consumer_groups([unknown], request_timeout=TIMEOUT_S)[unknown]) == \
        KafkaError.GROUP_ID_NOT_FOUND

