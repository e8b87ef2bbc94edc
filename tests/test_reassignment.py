"""Operating replicated partitions (docs/replication.md, "Operations"): preferred leader
election (ElectLeaders and auto.leader.rebalance.enable), partition reassignment
(AlterPartitionReassignments / ListPartitionReassignments) under load, and unclean leader
election, driven by unmodified clients (kafka-python's admin client, confluent-kafka's
producer and consumer).
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from test_cluster import admin, broker_ids, cluster, wait_until
from test_replication import REPL, consume_all, create, full_isr, partitions, rcluster

pytestmark = [pytest.mark.sluice_only, pytest.mark.cluster]

ELECTION_NOT_NEEDED = 84
PREFERRED_LEADER_NOT_AVAILABLE = 80
INVALID_REPLICA_ASSIGNMENT = 39
NO_REASSIGNMENT_IN_PROGRESS = 85


def kadmin(nodes):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=[b.bootstrap for b in nodes],
                            request_timeout_ms=30000)


def election_codes(resp):
    return {(r.topic, p.partition_id): p.error_code
            for r in resp.replica_election_results for p in r.partition_result}


def leaders(b, name):
    return {i: p.leader for i, p in partitions(b, name).items()}


def test_preferred_leader_election_on_request(broker_factory):
    nodes, _ = cluster(broker_factory, n_voters=3,
                       settings={**REPL, "auto.leader.rebalance.enable": "false"})
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3], timeout=40)
    create(nodes[0], "pref", 3, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], "pref", 3), timeout=30)
    preferred = {i: p.replicas[0] for i, p in partitions(nodes[0], "pref").items()}
    assert leaders(nodes[0], "pref") == preferred
    # Broker 1 stops cleanly (its leadership moves) and returns as a follower.
    mine = [i for i, b in preferred.items() if b == 1]
    assert mine, preferred
    nodes[0].stop()
    wait_until("leadership moved", lambda: all(leaders(nodes[1], "pref")[i] not in (-1, 1)
                                               for i in mine), timeout=30)
    nodes[0].restart()
    wait_until("broker 1 back in every ISR", lambda: full_isr(nodes[1], "pref", 3), timeout=60)
    assert all(leaders(nodes[1], "pref")[i] != 1 for i in mine), "auto rebalance is off here"

    ka = kadmin(nodes)
    try:
        resp = ka.elect_leaders(0, {"pref": [0, 1, 2]})
        codes = election_codes(resp)
        for i in range(3):
            want = 0 if i in mine else ELECTION_NOT_NEEDED
            assert codes[("pref", i)] == want, codes
        wait_until("preferred leaders", lambda: leaders(nodes[2], "pref") == preferred, timeout=20)
        # Everything balanced: an election of every partition has nothing to do.
        assert set(election_codes(ka.elect_leaders(0, None)).values()) == {ELECTION_NOT_NEEDED}
        # The preferred replica out of the ISR cannot be elected.
        nodes[2].kill()
        wait_until("broker 3 fenced", lambda: broker_ids(nodes[0])[0] == [1, 2], timeout=30)
        theirs = [i for i, b in preferred.items() if b == 3]
        # A client that knows only the live brokers (each broker names itself controller).
        ka2 = kadmin(nodes[:2])
        try:
            resp = ka2.elect_leaders(0, {"pref": theirs}, raise_errors=False)
        finally:
            ka2.close()
        assert set(election_codes(resp).values()) == {PREFERRED_LEADER_NOT_AVAILABLE}
    finally:
        ka.close()


def test_auto_leader_rebalance_moves_leadership_back(broker_factory):
    nodes, _ = cluster(broker_factory, n_voters=3,
                       settings={**REPL, "auto.leader.rebalance.enable": "true",
                                 "leader.imbalance.check.interval.seconds": "1"})
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3], timeout=40)
    create(nodes[0], "auto", 3, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], "auto", 3), timeout=30)
    preferred = {i: p.replicas[0] for i, p in partitions(nodes[0], "auto").items()}
    victim = preferred[0]
    nodes[victim - 1].kill()
    rest = [b for b in nodes if b is not nodes[victim - 1]]
    wait_until("leadership moved", lambda: leaders(rest[0], "auto")[0] not in (-1, victim),
               timeout=30)
    nodes[victim - 1].restart()
    wait_until("leadership back at the preferred replicas",
               lambda: leaders(rest[0], "auto") == preferred, timeout=60)


def test_reassignment_under_load_moves_a_partition_and_loses_nothing(broker_factory):
    """{1,2,3} -> {2,3,4} while an idempotent acks=all producer writes: the new replica
    catches up, the old leader hands over and deletes its copy, every record survives."""
    nodes, _ = cluster(broker_factory, n_voters=3, brokers_only=1, settings=REPL)
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=40)
    a = admin(nodes[0])
    a.create_topics([NewTopic("moving", 1, replica_assignment=[[1, 2, 3]])],
                    operation_timeout=20)["moving"].result(timeout=40)
    wait_until("full ISR", lambda: full_isr(nodes[0], "moving", 1), timeout=30)
    assert partitions(nodes[0], "moving")[0].leader == 1

    total = 40_000
    errors = []
    acked = [0]

    def produce():
        p = Producer({"bootstrap.servers": ",".join(b.bootstrap for b in nodes), "acks": "all",
                      "enable.idempotence": True, "linger.ms": 5,
                      "message.timeout.ms": 60_000})

        def done(err, _msg):
            if err is None:
                acked[0] += 1
            else:
                errors.append(err)
        for i in range(total):
            while True:
                try:
                    p.produce("moving", value=f"m{i}".encode(), partition=0, on_delivery=done)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 500 == 0:
                p.poll(0)
                time.sleep(0.01)  # spread the stream over the reassignment
        assert p.flush(90) == 0

    t = threading.Thread(target=produce)
    t.start()
    ka = kadmin(nodes)
    try:
        from kafka import TopicPartition as KTP
        wait_until("some records", lambda: acked[0] > 2000, timeout=30)
        res = ka.alter_partition_reassignments({KTP("moving", 0): [2, 3, 4]})
        assert res == {KTP("moving", 0): None}, res
        # Until the new replica is in sync, the reassignment is listed (it may already be
        # done on a fast machine).
        listed = ka.list_partition_reassignments()
        if listed:
            r = listed[KTP("moving", 0)]
            assert (r["adding_replicas"], r["removing_replicas"]) == ([4], [1]), r
            assert sorted(r["replicas"]) == [1, 2, 3, 4], r
        wait_until("reassignment done", lambda: ka.list_partition_reassignments() == {},
                   timeout=60)
        pm = partitions(nodes[3], "moving")[0]
        assert sorted(pm.replicas) == [2, 3, 4] and sorted(pm.isrs) == [2, 3, 4], \
            (pm.replicas, pm.isrs)
        assert pm.leader in (2, 3, 4)
    finally:
        t.join(120)
        ka.close()
    assert not t.is_alive()
    assert errors == [], errors[:5]
    assert acked[0] == total
    got = consume_all(nodes[3], "moving", 1, total)
    assert got[0] == [f"m{i}".encode() for i in range(total)], len(got[0])
    wait_until("old replica deleted on broker 1",
               lambda: not (nodes[0].data_dir / "moving-0").exists(), timeout=20)
    assert (nodes[3].data_dir / "moving-0").is_dir()
    # Broker 1 restarts with no copy and stays out of the partition.
    nodes[0].restart()
    wait_until("broker 1 back", lambda: broker_ids(nodes[1])[0] == [1, 2, 3, 4], timeout=40)
    assert sorted(partitions(nodes[0], "moving")[0].replicas) == [2, 3, 4]
    assert not (nodes[0].data_dir / "moving-0").exists()


def test_reassignment_refusals_and_cancel(broker_factory):
    from kafka import TopicPartition as KTP
    from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError
    nodes, _ = cluster(broker_factory, n_voters=3, brokers_only=1, settings=REPL)
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=40)
    a = admin(nodes[0])
    a.create_topics([NewTopic("stay", 1, replica_assignment=[[1, 2, 3]])],
                    operation_timeout=20)["stay"].result(timeout=40)
    wait_until("full ISR", lambda: full_isr(nodes[0], "stay", 1), timeout=30)
    tp = KTP("stay", 0)
    # Broker 4 goes down (and is fenced) first: kafka-python sends admin requests to the
    # broker it took for the controller (each broker names itself), and fails if that is a
    # dead one.
    nodes[3].kill()
    wait_until("broker 4 fenced", lambda: broker_ids(nodes[0])[0] == [1, 2, 3], timeout=30)
    ka = kadmin(nodes[:3])
    try:
        assert ka.alter_partition_reassignments({tp: [2, 9]})[tp] is InvalidReplicationAssignmentError
        assert ka.alter_partition_reassignments({tp: None})[tp] is NoReassignmentInProgressError
        # Broker 4 is down: the reassignment waits for it, then is cancelled.
        res = ka.alter_partition_reassignments({tp: [2, 3, 4]})
        assert res[tp] is None, res
        listed = ka.list_partition_reassignments()
        assert listed[tp]["adding_replicas"] == [4] and listed[tp]["removing_replicas"] == [1]
        time.sleep(2)
        assert ka.list_partition_reassignments() == listed, "cannot complete without broker 4"
        assert ka.alter_partition_reassignments({tp: None})[tp] is None
        assert ka.list_partition_reassignments() == {}
        pm = partitions(nodes[0], "stay")[0]
        assert sorted(pm.replicas) == [1, 2, 3] and sorted(pm.isrs) == [1, 2, 3]
    finally:
        ka.close()


def test_unclean_leader_election_when_the_topic_allows_it(broker_factory):
    """The only in-sync replica dies: a topic with unclean.leader.election.enable=true gets
    an out-of-sync leader (and the loss is logged); one without stays offline."""
    nodes = rcluster(broker_factory)
    a = admin(nodes[0])
    for name, unclean in (("clean", "false"), ("dirty", "true")):
        a.create_topics(
            [NewTopic(name, 1, replica_assignment=[[1, 2]],
                      config={"unclean.leader.election.enable": unclean})],
            operation_timeout=20)[name].result(timeout=40)
        wait_until("full ISR", lambda n=name: full_isr(nodes[0], n, 1), timeout=30)
    # Broker 2 stops (SIGSTOP) and leaves both ISRs; leader 1 dies; broker 2 comes back.
    import os
    import signal
    os.kill(nodes[1].proc.pid, signal.SIGSTOP)
    try:
        wait_until("broker 2 out of the ISRs",
                   lambda: all(partitions(nodes[0], n)[0].isrs == [1] for n in ("clean", "dirty")),
                   timeout=30)
        nodes[0].kill()
    finally:
        os.kill(nodes[1].proc.pid, signal.SIGCONT)
    wait_until("dirty led by broker 2", lambda: partitions(nodes[2], "dirty")[0].leader == 2,
               timeout=40)
    assert partitions(nodes[2], "clean")[0].leader == -1
    assert "unclean leader election" in "".join(
        b.log_path.read_text() for b in nodes[1:])


def test_cli_decommission_reassign_and_elect(broker_factory):
    """`sluice cluster decommission --wait` empties a broker under a producer's load;
    `sluice cluster reassign` moves a partition back; `sluice cluster elect-leaders` makes
    the preferred replica lead again."""
    from test_cli import cli
    nodes, _ = cluster(broker_factory, n_voters=3, brokers_only=1,
                       settings={**REPL, "auto.leader.rebalance.enable": "false"})
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=40)
    create(nodes[0], "spread", 4, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], "spread", 4), timeout=30)
    on4 = [i for i, p in partitions(nodes[0], "spread").items() if 4 in p.replicas]
    assert on4
    p = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5})
    for i in range(4000):
        p.produce("spread", value=f"{i % 4}:{i}".encode(), partition=i % 4)
    assert p.flush(30) == 0

    _, plan, _ = cli(nodes[0], "cluster", "decommission", "--broker", "4", "--dry-run")
    assert "FROM" in plan and len(plan.strip().splitlines()) == 1 + len(on4), plan
    assert all(4 in p.replicas for i, p in partitions(nodes[0], "spread").items() if i in on4), \
        "a dry run moves nothing"
    _, out, _ = cli(nodes[0], "cluster", "decommission", "--broker", "4", "--wait", timeout=90)
    assert "broker 4 holds no replica now" in out, out
    ps = partitions(nodes[1], "spread")
    assert all(4 not in p.replicas and len(p.replicas) == 3 for p in ps.values()), \
        {i: p.replicas for i, p in ps.items()}
    wait_until("broker 4 deleted its copies",
               lambda: not any((nodes[3].data_dir / f"spread-{i}").exists() for i in on4),
               timeout=20)
    _, out, _ = cli(nodes[0], "cluster", "decommission", "--broker", "4")
    assert "holds no replica" in out

    # Move partition 0 onto {4, 1, 2} by hand, then back its preferred leader.
    _, out, _ = cli(nodes[0], "cluster", "reassign", "--topic", "spread", "--partition", "0",
                    "--replicas", "4,1,2", "--wait", timeout=90)
    assert "done" in out, out
    assert partitions(nodes[0], "spread")[0].replicas == [4, 1, 2]
    rc, out, _ = cli(nodes[0], "cluster", "reassign", "--topic", "spread", "--partition", "0",
                     "--cancel", ok=False)
    assert rc != 0 and "NO_REASSIGNMENT_IN_PROGRESS" in out, out
    _, out, _ = cli(nodes[0], "cluster", "reassign", "--list")
    assert "no reassignment in progress" in out
    _, out, _ = cli(nodes[0], "cluster", "elect-leaders", "--topic", "spread")
    assert "elected" in out or "not needed" in out, out
    wait_until("preferred leader of partition 0",
               lambda: partitions(nodes[0], "spread")[0].leader == 4, timeout=20)
    got = consume_all(nodes[2], "spread", 4, 4000)
    for part in range(4):
        assert got[part] == [f"{part}:{i}".encode() for i in range(part, 4000, 4)]


def test_replication_throttles_slow_only_the_named_catching_up_replicas(broker_factory):
    """Kafka's replication quotas: with follower.replication.throttled.rate set on broker 4
    and the leader rate on brokers 1-3 (kafka-python AlterConfigs on BROKER resources), a new
    replica named in a topic's throttled-replicas list catches up no faster than the rate;
    static broker settings stay refused, bad lists are refused, and removing the throttle
    lets the next move run free."""
    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ResourceType)
    from kafka import TopicPartition as KTP
    from kafka.admin import ConfigResource as KCR, ConfigResourceType as KCRT
    rate = 256 * 1024
    size = 2 * 1024 * 1024
    nodes, _ = cluster(broker_factory, n_voters=3, brokers_only=1,
                       settings={**REPL, "replication.quota.window.num": "2"})
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=40)
    a = admin(nodes[0])
    names = ("by-follower", "by-leader", "free")
    for f in a.create_topics([NewTopic(n, 1, replica_assignment=[[1, 2, 3]]) for n in names],
                             operation_timeout=20).values():
        f.result(timeout=40)
    for n in names:
        wait_until(f"{n} full ISR", lambda n=n: full_isr(nodes[0], n, 1), timeout=30)
    p = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all", "linger.ms": 20})
    for n in names:
        for i in range(size // 1024):
            while True:
                try:
                    p.produce(n, value=b"x" * 1000 + f"{i:024d}".encode(), partition=0)
                    break
                except BufferError:
                    p.poll(0.05)
    assert p.flush(60) == 0

    ka = kadmin(nodes)
    try:
        # The follower rate on broker 4; a static setting is refused.
        res = ka.alter_configs([KCR(KCRT.BROKER, "4",
                                    {"follower.replication.throttled.rate": str(rate)})])
        assert res == {"broker": {"4": "OK"}}, res
        # The leader rate on the current replicas' brokers.
        for b in ("1", "2", "3"):
            res = ka.alter_configs([KCR(KCRT.BROKER, b,
                                        {"leader.replication.throttled.rate": str(rate)})])
            assert res == {"broker": {b: "OK"}}, res
        res = ka.alter_configs([KCR(KCRT.BROKER, "4", {"log.dirs": "/elsewhere"})],
                               raise_on_unknown=False)
        assert "InvalidRequest" in res["broker"]["4"] and "dynamically" in res["broker"]["4"], res
        described = ka.describe_configs([KCR(KCRT.BROKER, "4")])
    finally:
        ka.close()
    # A malformed replica list is refused.
    bad = a.alter_configs([ConfigResource(ResourceType.TOPIC, "free", set_config={
        "follower.replication.throttled.replicas": "zero:four"})])
    with pytest.raises(Exception, match="partition:broker"):
        for f in bad.values():
            f.result(timeout=30)
    # The lists are LIST-typed, as in Kafka: IncrementalAlterConfigs APPEND and SUBTRACT.
    key = "follower.replication.throttled.replicas"

    def edit(value, op):
        for f in a.incremental_alter_configs([ConfigResource(
                ResourceType.TOPIC, "free", incremental_configs=[
                    ConfigEntry(key, value, incremental_operation=op)])]).values():
            f.result(timeout=30)
        fs = a.describe_configs([ConfigResource(ResourceType.TOPIC, "free")])
        return list(fs.values())[0].result(timeout=30)[key].value
    assert edit("0:9", AlterConfigOpType.APPEND) == "0:9"
    assert edit("0:8", AlterConfigOpType.APPEND) == "0:9,0:8"
    assert edit("0:9,0:8", AlterConfigOpType.SUBTRACT) == ""
    for n, conf in (("by-follower", {"follower.replication.throttled.replicas": "0:4"}),
                    ("by-leader", {"leader.replication.throttled.replicas": "0:1,0:2,0:3"})):
        for f in a.alter_configs([ConfigResource(ResourceType.TOPIC, n,
                                                 set_config=conf)]).values():
            f.result(timeout=30)
    # Broker 4 reports the dynamic value with its source (DescribeConfigs on broker 4).
    fs = a.describe_configs([ConfigResource(ResourceType.BROKER, "4")])
    entries = list(fs.values())[0].result(timeout=30)
    fr = entries["follower.replication.throttled.rate"]
    assert fr.value == str(rate) and fr.source == 2 and not fr.is_read_only, (fr, described)
    assert entries["log.dirs"].is_read_only

    ka = kadmin(nodes)
    try:
        start = time.monotonic()
        res = ka.alter_partition_reassignments({KTP(n, 0): [1, 2, 3, 4]
                                                for n in ("by-follower", "by-leader")})
        assert set(res.values()) == {None}, res
        seen = {}

        def done():
            left = ka.list_partition_reassignments()
            for n in ("by-follower", "by-leader"):
                if KTP(n, 0) not in left and n not in seen:
                    seen[n] = time.monotonic() - start
            return left == {}
        wait_until("throttled moves done", done, timeout=90, every=0.1)
        took = time.monotonic() - start
        # 2 MiB at 256 KiB/s after a burst of one window (256 KiB): at least 7 s on any
        # machine (a slow one only adds); unthrottled it is a local copy of 2 MiB.
        print(f"throttled catch-up: {took:.1f} s, per partition {seen}")
        assert took >= 6.0, f"throttled catch-up took only {took:.1f} s"
        assert min(seen.values()) >= 6.0, seen
        for n in ("by-follower", "by-leader"):
            wait_until(f"{n} ISR with broker 4",
                       lambda n=n: sorted(partitions(nodes[0], n)[0].isrs) == [1, 2, 3, 4],
                       timeout=20)
        # Throttles off (deleting the dynamic configs, IncrementalAlterConfigs): the next
        # move is not held back.
        for b in ("1", "2", "3", "4"):
            fs = a.incremental_alter_configs([ConfigResource(ResourceType.BROKER, b,
                incremental_configs=[ConfigEntry(k, None,
                                                 incremental_operation=AlterConfigOpType.DELETE)
                                     for k in ("leader.replication.throttled.rate",
                                               "follower.replication.throttled.rate")])])
            for f in fs.values():
                f.result(timeout=30)
        fs = a.describe_configs([ConfigResource(ResourceType.BROKER, "1")])
        lr = list(fs.values())[0].result(timeout=30)["leader.replication.throttled.rate"]
        assert lr.source == 5 and lr.value == "9223372036854775807", lr
        start = time.monotonic()
        res = ka.alter_partition_reassignments({KTP("free", 0): [1, 2, 3, 4]})
        assert set(res.values()) == {None}, res
        wait_until("free move done", lambda: ka.list_partition_reassignments() == {},
                   timeout=60, every=0.1)
        print(f"unthrottled catch-up: {time.monotonic() - start:.1f} s")
    finally:
        ka.close()
    got = consume_all(nodes[3], "by-follower", 1, size // 1024)
    assert len(got[0]) == size // 1024


def test_reassignment_survives_controller_failover_and_a_restart_of_the_new_replica(
        broker_factory):
    """A move {1,2,3} -> {2,3,4} slowed by a follower throttle, so faults land mid-move:
    kill -9 of the metadata quorum's leader (restarted later), then kill -9 and restart
    of broker 4, the replica being added. The move completes, nothing is lost, and the
    removed replica's copy goes."""
    from kafka import KafkaAdminClient, TopicPartition as KTP
    from kafka.admin import ConfigResource as KCR, ConfigResourceType as KCRT
    from test_cluster import quorum_leader
    nodes, _ = cluster(broker_factory, n_voters=3, brokers_only=1,
                       settings={**REPL, "replication.quota.window.num": "2"})
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=40)
    a = admin(nodes[0])
    a.create_topics([NewTopic("slow", 1, replica_assignment=[[1, 2, 3]],
                              config={"follower.replication.throttled.replicas": "0:4"})],
                    operation_timeout=20)["slow"].result(timeout=40)
    wait_until("full ISR", lambda: full_isr(nodes[0], "slow", 1), timeout=30)
    n = 2048
    p = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all", "linger.ms": 20})
    for i in range(n):
        while True:
            try:
                p.produce("slow", value=f"{i:06d}".encode() + b"y" * 1000, partition=0)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0

    def live_admin():
        return KafkaAdminClient(bootstrap_servers=[b.bootstrap for b in nodes if b.alive()],
                                request_timeout_ms=15000)

    def reassignments():
        ka = live_admin()
        try:
            return ka.list_partition_reassignments()
        finally:
            ka.close()

    ka = live_admin()
    try:
        res = ka.alter_configs([KCR(KCRT.BROKER, "4",
                                    {"follower.replication.throttled.rate": "262144"})])
        assert res == {"broker": {"4": "OK"}}, res
        res = ka.alter_partition_reassignments({KTP("slow", 0): [2, 3, 4]})
        assert res == {KTP("slow", 0): None}, res
    finally:
        ka.close()
    time.sleep(1.5)
    assert reassignments(), "the throttled move is still under way"
    ctl = quorum_leader(nodes[0])
    nodes[ctl - 1].kill()
    rest = [b for b in nodes if b.alive()]
    wait_until("a new quorum leader", lambda: quorum_leader(rest[0]) not in (None, ctl),
               timeout=30)
    assert reassignments(), "still moving after the controller failover"
    nodes[3].kill()
    time.sleep(1)
    nodes[3].restart()
    nodes[ctl - 1].restart()
    wait_until("move done", lambda: reassignments() == {}, timeout=120, every=0.5)
    wait_until("replicas and ISR {2,3,4}",
               lambda: (sorted(partitions(nodes[3], "slow")[0].replicas) == [2, 3, 4]
                        and sorted(partitions(nodes[3], "slow")[0].isrs) == [2, 3, 4]),
               timeout=30)
    got = consume_all(nodes[3], "slow", 1, n)
    assert [v[:6] for v in got[0]] == [f"{i:06d}".encode() for i in range(n)]
    wait_until("broker 1's copy deleted",
               lambda: not (nodes[0].data_dir / "slow-0").exists(), timeout=40)
