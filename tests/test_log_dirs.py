"""Moving a replica between a broker's log dirs (AlterReplicaLogDirs, kafka-python's
`alter_replica_log_dirs`) while an idempotent producer writes to it, and what
DescribeLogDirs reports (docs/replication.md, "Moving a replica between log dirs")."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from kclients import consume_confluent, create_topic, uniq

pytestmark = pytest.mark.sluice_only


def kadmin(b):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)


def placed(ka, topic):
    """{partition: log dir} as DescribeLogDirs reports it (one broker)."""
    out = {}
    for broker in ka.describe_log_dirs():
        for d in broker["log_dirs"]:
            for t in d["topics"]:
                if t["name"] == topic:
                    for p in t["partitions"]:
                        out[p["partition_index"]] = d["log_dir"]
    return out


def wait_until(what, pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_replica_moves_between_log_dirs_under_load_and_stays_after_restart(broker_factory,
                                                                           tmp_path):
    from kafka import TopicPartitionReplica as TPR
    from kafka.errors import LogDirNotFoundError, NoError, UnknownTopicOrPartitionError
    dirs = [tmp_path / "disk-a", tmp_path / "disk-b"]
    b = broker_factory(settings={"log.dirs": ",".join(str(d) for d in dirs)}, name="dirs")
    topic = uniq("mv")
    # Small segments, so the move copies sealed segments and an active one.
    create_topic(b.bootstrap, topic, 2, config={"segment.bytes": str(64 * 1024)})
    ka = kadmin(b)
    try:
        before = wait_until("both partitions placed", lambda: len(placed(ka, topic)) == 2
                            and placed(ka, topic))
        src = before[0]
        dst = next(str(d) for d in dirs if str(d) != src)
        assert (dirs[0 if src == str(dirs[0]) else 1] / f"{topic}-0").is_dir()

        total = 20_000
        acked, errors = [0], []

        def produce():
            p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all",
                          "enable.idempotence": True, "linger.ms": 2,
                          "message.timeout.ms": 60_000})

            def done(err, _msg):
                if err is None:
                    acked[0] += 1
                else:
                    errors.append(err)
            for i in range(total):
                while True:
                    try:
                        p.produce(topic, value=f"r{i:06d}".encode() + b"x" * 200,
                                  partition=0, on_delivery=done)
                        break
                    except BufferError:
                        p.poll(0.05)
                if i % 200 == 0:
                    p.poll(0)
                    time.sleep(0.02)  # spread the stream over the move (about 2 s)
            assert p.flush(60) == 0

        t = threading.Thread(target=produce)
        t.start()
        try:
            wait_until("some records", lambda: acked[0] > 3000)
            res = ka.alter_replica_log_dirs({
                TPR(topic, 0, 0): dst,
                TPR(topic, 1, 0): "/no/such/dir",
                TPR("no-such-topic", 0, 0): dst,
            })
            assert res[TPR(topic, 0, 0)] is NoError, res
            assert res[TPR(topic, 1, 0)] is LogDirNotFoundError, res
            assert res[TPR("no-such-topic", 0, 0)] is UnknownTopicOrPartitionError, res
            wait_until("partition 0 in the other dir", lambda: placed(ka, topic).get(0) == dst)
            moved_at = acked[0]
        finally:
            t.join(120)
        assert not t.is_alive()
        assert errors == [], errors[:5]
        assert acked[0] == total
        assert moved_at < total, "the move should overlap the stream"
        assert placed(ka, topic)[1] == before[1], "partition 1 stays where it was"
        # Asking again for the dir it is in is a no-op.
        assert ka.alter_replica_log_dirs({TPR(topic, 0, 0): dst})[TPR(topic, 0, 0)] is NoError
    finally:
        ka.close()
    src_dir = next(d for d in dirs if str(d) == src)
    dst_dir = next(d for d in dirs if str(d) == dst)
    assert not (src_dir / f"{topic}-0").exists()
    assert sorted(p.name for p in dst_dir.iterdir() if p.name.startswith(f"{topic}-0")) \
        == [f"{topic}-0"], "no copy or old directory left behind"
    assert len([f for f in (dst_dir / f"{topic}-0").iterdir() if f.suffix == ".log"]) > 2

    def read_all():
        got = consume_confluent(b.bootstrap, topic, [0], total, timeout=60)
        return [g.value[:7] for g in got]
    want = [f"r{i:06d}".encode() for i in range(total)]
    assert read_all() == want
    # A restart finds the partition in its new dir, whole.
    b.restart()
    assert not (src_dir / f"{topic}-0").exists()
    assert read_all() == want
    ka = kadmin(b)
    try:
        assert placed(ka, topic)[0] == dst
    finally:
        ka.close()


@pytest.mark.cluster
def test_log_dirs_list_only_the_replicas_a_broker_hosts(broker_factory):
    from confluent_kafka.admin import NewTopic
    from kafka import TopicPartitionReplica as TPR
    from kafka.errors import NoError, ReplicaNotAvailableError
    from test_cluster import admin, broker_ids, cluster
    from test_replication import REPL, full_isr
    nodes, _ = cluster(broker_factory, n_voters=3, settings=REPL)
    wait_until("all brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3], timeout=40)
    a = admin(nodes[0])
    a.create_topics([NewTopic("pair", 1, replica_assignment=[[1, 2]])],
                    operation_timeout=20)["pair"].result(timeout=40)
    wait_until("full ISR", lambda: full_isr(nodes[0], "pair", 1), timeout=30)
    from kafka import KafkaAdminClient
    ka = KafkaAdminClient(bootstrap_servers=[b.bootstrap for b in nodes],
                          request_timeout_ms=30000)
    try:
        def hosts(node_id):
            (answer,) = ka.describe_log_dirs(topic_partitions=["pair"], brokers=[node_id])
            return any(t["name"] == "pair" for d in answer["log_dirs"] for t in d["topics"])
        assert hosts(1) and hosts(2) and not hosts(3)
        res = ka.alter_replica_log_dirs({TPR("pair", 0, 3): str(nodes[2].data_dir),
                                         TPR("pair", 0, 2): str(nodes[1].data_dir)})
        assert res[TPR("pair", 0, 3)] is ReplicaNotAvailableError, res
        assert res[TPR("pair", 0, 2)] is NoError, res
    finally:
        ka.close()
