"""Consumer groups with real clients: confluent-kafka (librdkafka), kafka-python
and aiokafka members joining, splitting partitions, committing, leaving, dying,
rejoining statically and cooperatively; committed offsets across kill -9.

Each test produces its records only once the group is settled (every member
holds its share), so "every record exactly once" is a property of the broker's
coordination and offset storage, not of a race the test happened to win.
"""

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from conftest import group_settings
from groupclients import (HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, SHORT_SESSION_TIMEOUT_MS,
                          AioMember, ConfluentMember, KafkaPythonMember, aio_pump, consumed_once,
                          group_offsets, merged, produce_parts, pump, pump_for, split_covers,
                          total, wait_threads)
from kclients import create_topic, uniq

# After the expected records arrived, keep polling this long so that a record
# delivered twice (or to a second member) would show up before the check.
QUIET_S = 1.0


def committed(member: ConfluentMember, topic: str, partitions: int) -> dict[int, int]:
    tps = member.c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return {tp.partition: tp.offset for tp in tps}


def close_all(members):
    for m in members:
        m.close()


def got_total(members) -> int:
    return sum(len(m.got) for m in members)


def test_three_members_consume_each_record_once(group_broker):
    """Acceptance 1: three confluent members split 6 partitions (2 each, range
    assignor); with manual commits every record is consumed exactly once, each
    partition by one member, and the committed offsets are the log ends."""
    bs = group_broker.bootstrap
    topic, group = uniq("g3"), uniq("grp")
    create_topic(bs, topic, 6)
    members = [ConfluentMember(f"m{i}", bs, group, [topic], **{"client.id": f"m{i}"})
               for i in range(3)]
    try:
        pump(members, lambda: split_covers(members, 6), what="a 3-way split of 6 partitions")
        assert sorted(len(m.partitions()) for m in members) == [2, 2, 2], members
        expected = produce_parts(bs, topic, {p: 10 for p in range(6)})
        pump(members, lambda: got_total(members) >= total(expected), what="60 records")
        pump_for(members, QUIET_S)
        readers = consumed_once(members, expected)
        assert all(len(r) == 1 for r in readers.values()), f"partition read by two members: {readers}"
        for m in members:
            read = {g.partition for g in m.got}
            assert read <= m.partitions(), f"{m.name} read partitions it does not own: {m}"
            assert not m.commit_errors and not m.errors, m
        assert committed(members[0], topic, 6) == {p: 10 for p in range(6)}
    finally:
        close_all(members)


def test_closed_member_partitions_move_to_the_others(group_broker):
    """Acceptance 2a: close() (LeaveGroup) hands the member's partitions to the
    other two well inside the session timeout; they resume from its commits and
    get every record produced after the close."""
    bs = group_broker.bootstrap
    topic, group = uniq("gleave"), uniq("grp")
    create_topic(bs, topic, 6)
    members = [ConfluentMember(f"m{i}", bs, group, [topic]) for i in range(3)]
    try:
        pump(members, lambda: split_covers(members, 6), what="a 3-way split")
        before = produce_parts(bs, topic, {p: 5 for p in range(6)})
        pump(members, lambda: got_total(members) >= total(before), what="first 30 records")
        leaving, rest = members[2], members[:2]
        moved = leaving.partitions()
        t0 = time.monotonic()
        leaving.close()
        pump(rest, lambda: split_covers(rest, 6), what="the leaver's partitions reassigned")
        took = time.monotonic() - t0
        assert took < SESSION_TIMEOUT_MS / 1000, \
            f"reassignment after LeaveGroup took {took:.1f}s, not faster than session expiry"
        assert moved <= rest[0].partitions() | rest[1].partitions()
        after = produce_parts(bs, topic, {p: 5 for p in range(6)})
        everything = merged(before, after)
        pump(rest, lambda: got_total(members) >= total(everything), what="records after the close")
        pump_for(rest, QUIET_S)
        consumed_once(members, everything)
        for m in rest:
            assert not m.commit_errors and not m.errors, m
    finally:
        close_all(members)


def test_killed_member_expires_and_partitions_move(group_broker):
    """Acceptance 2b: a member in another process killed with SIGKILL (no
    LeaveGroup, no more heartbeats) is removed after its session timeout, and
    the survivor gets all partitions and the records produced afterwards."""
    bs = group_broker.bootstrap
    topic, group = uniq("gkill"), uniq("grp")
    create_topic(bs, topic, 4)
    survivor = ConfluentMember("survivor", bs, group, [topic])
    script = Path(__file__).resolve().parent / "group_member_proc.py"
    proc = subprocess.Popen([sys.executable, str(script), bs, group, topic,
                             str(SHORT_SESSION_TIMEOUT_MS)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    doomed: dict = {"owned": set(), "lines": []}

    def read_lines():
        for line in proc.stdout:
            ev = json.loads(line)
            doomed["lines"].append(ev)
            if "assign" in ev:
                doomed["owned"] = set(ev["assign"])
            elif "revoke" in ev:
                doomed["owned"] = set()

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        def split():
            d, s = doomed["owned"], survivor.partitions()
            return d and s and not (d & s) and d | s == {0, 1, 2, 3}

        pump([survivor], split, what=f"a split with the subprocess member {doomed}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        t0 = time.monotonic()
        pump([survivor], lambda: survivor.partitions() == {0, 1, 2, 3},
             timeout=SHORT_SESSION_TIMEOUT_MS / 1000 + 15,
             what="the dead member's partitions reassigned after its session timeout")
        took = time.monotonic() - t0
        # Not before the session timeout: Kafka's coordinator goes by heartbeats,
        # not by connections (a static member may reconnect), and the last
        # heartbeat was at most one interval before the kill.
        earliest = (SHORT_SESSION_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS) / 1000 - 0.25
        assert took >= earliest, \
            f"member removed {took:.1f}s after SIGKILL, before its session could expire"
        expected = produce_parts(bs, topic, {p: 5 for p in range(4)})
        pump([survivor], lambda: len(survivor.got) >= total(expected), what="records after the kill")
        pump_for([survivor], QUIET_S)
        consumed_once([survivor], expected)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        survivor.close()


@pytest.mark.sluice_only
def test_committed_offsets_survive_kill9(broker_factory):
    """Acceptance 3: offsets committed (and acknowledged) right before kill -9
    are there after restart on the same data dir and port, and a new member of
    the group resumes exactly at them (auto.offset.reset=earliest would
    re-deliver from 0 if they were lost)."""
    b = broker_factory(settings=group_settings(), name="grp-restart")
    bs = b.bootstrap
    topic, group = uniq("gdur"), uniq("grp")
    create_topic(bs, topic, 3)
    produced = produce_parts(bs, topic, {p: 20 for p in range(3)})
    commit_at = {0: 5, 1: 12, 2: 20}
    first = ConfluentMember("first", bs, group, [topic], commit=False)
    try:
        pump([first], lambda: first.partitions() == {0, 1, 2}, what="first member assigned")
        pump([first], lambda: len(first.got) >= total(produced), what="all 60 records")
        first.c.commit(offsets=[TopicPartition(topic, p, o) for p, o in commit_at.items()],
                       asynchronous=False)
        b.kill()  # right after the commit was acknowledged
        b.start()
    finally:
        first.close()
    # Read without joining the group (a member would commit as it consumes).
    assert group_offsets(bs, group, topic, 3) == commit_at
    second = ConfluentMember("second", bs, group, [topic])
    try:
        pump([second], lambda: second.partitions() == {0, 1, 2}, what="new member assigned")
        expected = {p: [o for o in offs if o >= commit_at[p]] for p, offs in produced.items()}
        pump([second], lambda: len(second.got) >= total(expected), what="records after the commits")
        pump_for([second], QUIET_S)
        redelivered = [(g.partition, g.offset) for g in second.got
                       if g.offset < commit_at[g.partition]]
        assert not redelivered, f"records before the committed offsets re-delivered: {redelivered[:10]}"
        consumed_once([second], expected)
    finally:
        second.close()


def test_kafka_python_group_splits_and_commits(group_broker):
    """Acceptance 4a: kafka-python KafkaConsumer(group_id=...): a lone member
    gets every partition, a second member's join splits them, both consume
    and commit, every record once."""
    bs = group_broker.bootstrap
    topic, group = uniq("gkp"), uniq("grp")
    create_topic(bs, topic, 4)
    m1 = KafkaPythonMember("kp1", bs, group, topic)
    m2 = KafkaPythonMember("kp2", bs, group, topic)
    members = [m1, m2]
    m1.start()
    try:
        wait_threads([m1], lambda: m1.partitions() == {0, 1, 2, 3}, what="kp1 owning all")
        m2.start()
        wait_threads(members, lambda: split_covers(members, 4), what="kp1/kp2 split")
        expected = produce_parts(bs, topic, {p: 10 for p in range(4)})
        wait_threads(members, lambda: sum(len(m.got) for m in members) >= total(expected),
                     what="40 records")
        time.sleep(QUIET_S)
        readers = consumed_once(members, expected)
        assert all(len(r) == 1 for r in readers.values()), readers
    finally:
        for m in members:
            if m.is_alive():
                m.stop()
    assert all(m.error is None for m in members), members
    assert group_offsets(bs, group, topic, 4) == {p: 10 for p in range(4)}


def test_aiokafka_group_splits_and_commits(group_broker):
    """Acceptance 4b: the same with aiokafka AIOKafkaConsumer(group_id=...)."""
    bs = group_broker.bootstrap
    topic, group = uniq("gaio"), uniq("grp")
    create_topic(bs, topic, 4)

    async def run():
        a1 = AioMember("aio1", bs, group, topic)
        a2 = AioMember("aio2", bs, group, topic)
        try:
            await a1.start()
            await aio_pump([a1], lambda: a1.partitions() == {0, 1, 2, 3}, what="aio1 owning all")
            await a2.start()
            members = [a1, a2]
            await aio_pump(members, lambda: split_covers(members, 4), what="aio1/aio2 split")
            expected = await asyncio.to_thread(produce_parts, bs, topic, {p: 10 for p in range(4)})
            await aio_pump(members, lambda: sum(len(m.got) for m in members) >= total(expected),
                           what="40 records")
            deadline = time.monotonic() + QUIET_S
            while time.monotonic() < deadline:
                await asyncio.gather(*(m.poll_once() for m in members))
            readers = consumed_once(members, expected)
            assert all(len(r) == 1 for r in readers.values()), readers
        finally:
            await a1.stop()
            await a2.stop()

    asyncio.run(asyncio.wait_for(run(), 90))
    assert group_offsets(bs, group, topic, 4) == {p: 10 for p in range(4)}


def test_cooperative_sticky_incremental_rebalance(group_broker):
    """Acceptance 5: with cooperative-sticky, a second member joining takes
    partitions from the first incrementally: the first only ever revokes the
    partitions that move, keeps the rest, and every record is consumed once."""
    bs = group_broker.bootstrap
    topic, group = uniq("gcoop"), uniq("grp")
    create_topic(bs, topic, 6)
    coop = {"partition.assignment.strategy": "cooperative-sticky"}
    a = ConfluentMember("a", bs, group, [topic], **coop)
    b = None
    try:
        pump([a], lambda: a.partitions() == set(range(6)), what="a owning all 6")
        before = produce_parts(bs, topic, {p: 5 for p in range(6)})
        pump([a], lambda: len(a.got) >= total(before), what="a reading the first 30")
        mark = len(a.events)
        b = ConfluentMember("b", bs, group, [topic], **coop)
        members = [a, b]
        pump(members, lambda: split_covers(members, 6), what="a/b cooperative split")
        pump_for(members, 1.0)  # the follow-up rebalance of the cooperative protocol
        assert split_covers(members, 6), members
        later = a.events[mark:]
        revoked = {p for kind, ps in later if kind == "revoke" for p in ps}
        assert revoked and revoked != set(range(6)), f"a revoked {revoked}: {a.events}"
        assert all(kind != "lost" for kind, _ in later), a.events
        assert a.partitions() == set(range(6)) - revoked, a
        assert len(a.partitions()) == 3 and b.partitions() == revoked, members
        assert all(kind == "assign" for kind, _ in b.events), b.events
        after = produce_parts(bs, topic, {p: 5 for p in range(6)})
        everything = merged(before, after)
        pump(members, lambda: got_total(members) >= total(everything), what="all 60 records")
        pump_for(members, QUIET_S)
        consumed_once(members, everything)
        assert not a.commit_errors and not b.commit_errors, members
    finally:
        close_all([m for m in (a, b) if m is not None])


def test_static_member_rejoins_without_rebalance(group_broker):
    """Acceptance 6: a static member (group.instance.id) that closes and rejoins
    within the session timeout gets the same partitions back, and the other
    member sees no rebalance at all (no revoke/assign callback)."""
    bs = group_broker.bootstrap
    topic, group = uniq("gstatic"), uniq("grp")
    create_topic(bs, topic, 4)
    b = ConfluentMember("b", bs, group, [topic], **{"group.instance.id": "inst-b"})
    a = a2 = None
    try:
        # b joins first so that it is the leader; the member that bounces is a follower.
        pump([b], lambda: b.partitions() == {0, 1, 2, 3}, what="b owning all")
        a = ConfluentMember("a", bs, group, [topic], **{"group.instance.id": "inst-a"})
        pump([a, b], lambda: split_covers([a, b], 4), what="a/b split")
        pump_for([a, b], 1.0)
        a_parts, b_parts, b_mark = a.partitions(), b.partitions(), len(b.events)
        a.close()  # a static member does not send LeaveGroup on close
        t0 = time.monotonic()
        a2 = ConfluentMember("a2", bs, group, [topic], **{"group.instance.id": "inst-a"})
        pump([a2, b], lambda: bool(a2.partitions()), what="a's instance rejoining")
        assert time.monotonic() - t0 < SESSION_TIMEOUT_MS / 1000
        assert a2.partitions() == a_parts, (a2, a_parts)
        pump_for([a2, b], 3.0)  # six heartbeats of b: a rebalance would show up
        assert b.events[b_mark:] == [], f"the other member saw a rebalance: {b.events}"
        assert b.partitions() == b_parts and a2.partitions() == a_parts
        # And the rejoined instance works: records on its partitions reach it.
        expected = produce_parts(bs, topic, {p: 3 for p in range(4)})
        pump([a2, b], lambda: len(a2.got) + len(b.got) >= total(expected), what="12 records")
        pump_for([a2, b], QUIET_S)
        consumed_once([a2, b], expected)
        assert {g.partition for g in a2.got} == a_parts
    finally:
        close_all([m for m in (a, a2, b) if m is not None])
