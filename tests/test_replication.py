"""Cluster II: replicated partitions on 3-broker clusters on 127.0.0.1 (docs/replication.md),
driven by unmodified clients (confluent-kafka's AdminClient, idempotent producer and
consumer; kafka-python for raw error codes).

Each test starts its own brokers (test_cluster.cluster) and stops them by PID.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from test_cluster import JOIN_TIMEOUT_S, admin, broker_ids, cluster, wait_until

pytestmark = [pytest.mark.sluice_only, pytest.mark.cluster]

# Followers that stop fetching leave the ISR after 3 s; fencing after 3 s (FAST).
REPL = {"replica.lag.time.max.ms": "3000", "replica.fetch.wait.max.ms": "200",
        "replica.fetch.backoff.ms": "200"}


def rcluster(broker_factory, n=3):
    nodes, _ = cluster(broker_factory, n_voters=n, settings=REPL)
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == list(range(1, n + 1)), timeout=40)
    return nodes


def create(b, name, partitions, rf, configs=None):
    a = admin(b)
    futs = a.create_topics([NewTopic(name, partitions, rf, config=configs or {})],
                           operation_timeout=20, request_timeout=30)
    futs[name].result(timeout=40)


def partitions(b, name):
    return admin(b).list_topics(name, timeout=10).topics[name].partitions


def full_isr(b, name, n):
    ps = partitions(b, name)
    return len(ps) == n and all(len(p.isrs) == len(p.replicas) and p.leader >= 0
                                for p in ps.values())


def rf3_topic(broker_factory, name, nparts, configs=None):
    """A 3-broker cluster with topic `name` (RF=3) in sync; (nodes, leader id of partition 0,
    its broker, the other brokers)."""
    nodes = rcluster(broker_factory)
    create(nodes[0], name, nparts, 3, configs)
    wait_until("full ISRs", lambda: full_isr(nodes[0], name, nparts), timeout=30)
    leader = partitions(nodes[0], name)[0].leader
    lead = nodes[leader - 1]
    return nodes, leader, lead, [b for b in nodes if b is not lead]


def consume_all(b, name, nparts, expect, timeout=60):
    """Every record of `name` from offset 0, per partition in order."""
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"check-{name}-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "topic.metadata.refresh.interval.ms": 1000})
    c.assign([TopicPartition(name, i, 0) for i in range(nparts)])
    got = {i: [] for i in range(nparts)}
    deadline = time.monotonic() + timeout
    total = 0
    while total < expect and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                got[m.partition()].append(m.value())
                total += 1
    c.close()
    return got


def test_rf3_topic_replicates_and_serves_through_any_broker(broker_factory):
    nodes = rcluster(broker_factory)
    create(nodes[0], "r3", 6, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[2], "r3", 6), timeout=30)
    ps = partitions(nodes[2], "r3")
    per_leader = {}
    for p in ps.values():
        assert len(set(p.replicas)) == 3, p.replicas
        per_leader[p.leader] = per_leader.get(p.leader, 0) + 1
    assert per_leader == {1: 2, 2: 2, 3: 2}, per_leader

    # 30k acks=all records through broker 1, read back exactly through broker 3.
    p = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5})
    for i in range(30_000):
        p.produce("r3", value=f"{i % 6}:{i}".encode(), partition=i % 6)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    got = consume_all(nodes[2], "r3", 6, 30_000)
    for part in range(6):
        want = [f"{part}:{i}".encode() for i in range(part, 30_000, 6)]
        assert got[part] == want, f"partition {part}: {len(got[part])} of {len(want)}"
    # Every replica holds the records: DescribeLogDirs-free check through the ISR staying full.
    assert full_isr(nodes[1], "r3", 6)


def test_leader_kill_under_idempotent_acks_all_loses_and_duplicates_nothing(broker_factory):
    nodes = rcluster(broker_factory)
    create(nodes[0], "stream", 3, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], "stream", 3), timeout=30)
    leader = partitions(nodes[0], "stream")[0].leader
    victim = nodes[leader - 1]
    bootstrap = ",".join(b.bootstrap for b in nodes)
    acked = {i: [] for i in range(3)}
    errors = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is None:
                acked[msg.partition()].append(msg.value())
            else:
                errors.append(err)

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 120_000, "linger.ms": 5,
                  "topic.metadata.refresh.interval.ms": 1000})
    total = 60_000
    killed_at = None
    for i in range(total):
        while True:
            try:
                p.produce("stream", value=f"{i % 3}:{i}".encode(), partition=i % 3,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        if i == total // 3:
            victim.kill()
            killed_at = time.monotonic()
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(150) == 0, "records still unacknowledged"
    assert errors == [], errors[:5]
    assert killed_at is not None
    survivor = next(b for b in nodes if b is not victim)
    got = consume_all(survivor, "stream", 3, total)
    for part in range(3):
        want = [f"{part}:{i}".encode() for i in range(part, total, 3)]
        assert got[part] == want, (
            f"partition {part}: read {len(got[part])}, acked {len(acked[part])}, "
            f"duplicates {len(got[part]) - len(set(got[part]))}")

    # The killed broker returns, catches up and rejoins every ISR within 60 s.
    victim.start(timeout=JOIN_TIMEOUT_S)
    t0 = time.monotonic()
    wait_until("victim back in every ISR", lambda: full_isr(survivor, "stream", 3), timeout=60)
    assert time.monotonic() - t0 < 60


def test_min_insync_replicas_refuses_acks_all_but_not_acks_1(broker_factory):
    nodes, leader, lead, others = rf3_topic(broker_factory, "strict", 1,
                                            {"min.insync.replicas": "3"})
    follower = others[0]
    follower.kill()
    wait_until("ISR shrunk", lambda: len(partitions(lead, "strict")[0].isrs) == 2, timeout=30)

    def produce(acks):
        res = []
        p = Producer({"bootstrap.servers": lead.bootstrap, "acks": acks,
                      "message.timeout.ms": 10_000, "retries": 0})
        p.produce("strict", value=b"x", partition=0, on_delivery=lambda e, m: res.append(e))
        p.flush(20)
        return res

    res = produce("all")
    assert len(res) == 1 and res[0] is not None
    assert res[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, res[0]
    assert produce("1") == [None]


def segment_bytes(b, topic, partition=0):
    """The records of a replica, all segments in offset order (followers store the leader's
    batches unchanged, so in-sync replicas hold the same bytes)."""
    d = b.data_dir / f"{topic}-{partition}"
    return b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))


def produce_acked(b, topic, values, acks="all", partition=0):
    res = []
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": acks, "linger.ms": 0,
                  "message.timeout.ms": 20_000})
    for v in values:
        p.produce(topic, value=v, partition=partition, on_delivery=lambda e, m: res.append(e))
    p.flush(30)
    return res


def test_divergent_tail_of_a_dead_leader_is_truncated_when_it_returns(broker_factory):
    """A leader that wrote past the high watermark (acks=1, followers paused) and died: a
    follower takes over, and the old leader, back, truncates its tail by leader epoch."""
    import os
    import signal
    nodes, leader, old, followers = rf3_topic(broker_factory, "div", 1)
    assert produce_acked(old, "div", [f"c{i}".encode() for i in range(100)]) == [None] * 100

    # Followers stop fetching (paused well inside the ISR lag and session timeouts); the
    # leader takes acks=1 records no follower gets, and dies.
    for f in followers:
        os.kill(f.proc.pid, signal.SIGSTOP)
    # Let the fetches they had waiting at the leader end (replica.fetch.wait.max.ms), so
    # the records below reach no follower, not even through a socket buffer.
    time.sleep(0.6)
    try:
        assert produce_acked(old, "div", [f"lost{i}".encode() for i in range(50)], acks="1") \
            == [None] * 50
        old.kill()
    finally:
        for f in followers:
            os.kill(f.proc.pid, signal.SIGCONT)
    wait_until("a follower leads", lambda: partitions(followers[0], "div")[0].leader
               in {2, 3, 1} - {leader}, timeout=30)
    new_leader = nodes[partitions(followers[0], "div")[0].leader - 1]
    assert produce_acked(new_leader, "div", [f"n{i}".encode() for i in range(30)]) == [None] * 30

    # The old leader returns: it truncates the divergent tail, catches up and rejoins.
    old.start(timeout=JOIN_TIMEOUT_S)
    wait_until("old leader back in the ISR", lambda: full_isr(new_leader, "div", 1), timeout=60)
    assert "truncating a divergent tail" in old.log_path.read_text()
    got = consume_all(new_leader, "div", 1, 130)[0]
    assert got == [f"c{i}".encode() for i in range(100)] + [f"n{i}".encode() for i in range(30)]
    # Every replica holds the same bytes: the lost tail is gone from the old leader too.
    for b in nodes:
        b.stop()
    data = [segment_bytes(b, "div") for b in nodes]
    assert data[0] == data[1] == data[2], [len(d) for d in data]
    assert b"lost" not in data[0]


def test_whole_cluster_kill_and_restart_keeps_every_acknowledged_record(broker_factory):
    nodes = rcluster(broker_factory)
    create(nodes[0], "keep", 3, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], "keep", 3), timeout=30)
    for part in range(3):
        vals = [f"{part}:{i}".encode() for i in range(2000)]
        assert produce_acked(nodes[part], "keep", vals, partition=part) == [None] * 2000
    for b in nodes:
        b.kill()
    for b in nodes:
        b.spawn()
    for b in nodes:
        wait_until(f"{b.name} back", lambda b=b: b.alive(), timeout=JOIN_TIMEOUT_S)
    wait_until("leaders and full ISRs", lambda: full_isr(nodes[0], "keep", 3), timeout=60)
    got = consume_all(nodes[1], "keep", 3, 6000)
    for part in range(3):
        assert got[part] == [f"{part}:{i}".encode() for i in range(2000)], \
            f"partition {part}: {len(got[part])} of 2000"


def test_consumer_group_keeps_its_offsets_when_its_coordinator_dies(broker_factory):
    nodes = rcluster(broker_factory)
    create(nodes[0], "work", 3, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], "work", 3), timeout=30)
    bootstrap = ",".join(b.bootstrap for b in nodes)
    assert produce_acked(nodes[0], "work", [f"w{i}".encode() for i in range(300)]) == [None] * 300
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "survivors",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 6000})
    c.subscribe(["work"])
    seen = 0
    deadline = time.monotonic() + 40
    while seen < 300 and time.monotonic() < deadline:
        for m in c.consume(100, 0.5):
            if m.error() is None:
                seen += 1
    assert seen == 300
    c.commit(asynchronous=False)
    before = {tp.partition: tp.offset
              for tp in c.committed([TopicPartition("work", i) for i in range(3)], timeout=10)}
    c.close()
    assert before == {0: 300, 1: -1001, 2: -1001}, before  # -1001: nothing committed
    # __consumer_offsets is replicated (offsets.topic.replication.factor, capped at 3).
    offsets_parts = partitions(nodes[0], "__consumer_offsets")
    assert all(len(p.replicas) == 3 for p in offsets_parts.values())

    a = admin(nodes[0])  # alive until the answer arrives
    desc = a.describe_consumer_groups(["survivors"])["survivors"].result(timeout=20)
    coordinator = desc.coordinator.id
    victim = nodes[coordinator - 1]
    victim.kill()
    survivors = [b for b in nodes if b is not victim]

    def committed_now():
        c2 = Consumer({"bootstrap.servers": ",".join(b.bootstrap for b in survivors),
                       "group.id": "survivors", "enable.auto.commit": False})
        try:
            got = c2.committed([TopicPartition("work", i) for i in range(3)], timeout=10)
            return {tp.partition: tp.offset for tp in got}
        finally:
            c2.close()

    after = wait_until("offsets from the new coordinator",
                       lambda: committed_now() if committed_now() == before else None, timeout=40)
    assert after == before


def test_clean_stop_moves_leadership_first(broker_factory):
    """Controlled shutdown: SIGTERM to a leader fences it and moves its partitions to other
    in-sync replicas before it stops serving; an idempotent acks=all stream carries on."""
    nodes, leader, victim, rest = rf3_topic(broker_factory, "rolling", 3)
    errors = []
    p = Producer({"bootstrap.servers": ",".join(b.bootstrap for b in nodes), "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 60_000})
    total = 20_000
    for i in range(total):
        p.produce("rolling", value=f"{i % 3}:{i}".encode(), partition=i % 3,
                  on_delivery=lambda e, m: e is None or errors.append(e))
        if i == total // 2:
            assert victim.stop() == 0
            # Gone from the leaders at once, not after broker.session.timeout.ms.
            ps = partitions(rest[0], "rolling")
            assert all(pm.leader != leader and pm.leader >= 0 for pm in ps.values()), \
                {i: pm.leader for i, pm in ps.items()}
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0 and errors == [], errors[:5]
    got = consume_all(rest[0], "rolling", 3, total)
    for part in range(3):
        assert got[part] == [f"{part}:{i}".encode() for i in range(part, total, 3)]
    assert "leadership moved to other in-sync replicas" in victim.log_path.read_text()


def test_kafka_python_consumer_validates_its_position_across_a_leader_change(broker_factory):
    """kafka-python validates a consumer's position with OffsetForLeaderEpoch (KIP-320) when
    the partition's leader epoch changes; the position survives a leader kill."""
    from kafka import KafkaConsumer, TopicPartition as KTP
    nodes, leader, _, _ = rf3_topic(broker_factory, "epochs", 1)
    assert produce_acked(nodes[leader - 1], "epochs", [f"a{i}".encode() for i in range(200)]) \
        == [None] * 200
    bootstrap = [b.bootstrap for b in nodes]
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="none", metadata_max_age_ms=1000,
                      request_timeout_ms=10000)
    tp = KTP("epochs", 0)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 200 and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(r.value for r in recs)
    assert len(got) == 200
    nodes[leader - 1].kill()
    rest = [b for b in nodes if b is not nodes[leader - 1]]
    wait_until("new leader", lambda: partitions(rest[0], "epochs")[0].leader not in (-1, leader),
               timeout=30)
    new_leader = nodes[partitions(rest[0], "epochs")[0].leader - 1]
    assert produce_acked(new_leader, "epochs", [f"b{i}".encode() for i in range(100)]) \
        == [None] * 100
    deadline = time.monotonic() + 40
    while len(got) < 300 and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(r.value for r in recs)
    c.close()
    assert got == [f"a{i}".encode() for i in range(200)] + [f"b{i}".encode() for i in range(100)]
