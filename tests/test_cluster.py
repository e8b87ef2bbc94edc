"""Cluster I: several brokers on 127.0.0.1 form one cluster through the
metadata quorum (docs/cluster.md), driven by unmodified clients
(confluent-kafka's AdminClient and producer, kafka-python, kcat).

Each test starts its own brokers with Kafka's settings (node.id,
process.roles, listeners with a CONTROLLER listener,
controller.quorum.voters), on free ports, and stops them by PID.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port

pytestmark = [pytest.mark.sluice_only, pytest.mark.cluster]

# Fencing and elections fast enough for a test, still Kafka's mechanisms.
FAST = {
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
    "controller.quorum.election.timeout.ms": "500",
}
JOIN_TIMEOUT_S = 40.0


def wait_until(what, pred, timeout=30.0, every=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - report the last failure below
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def cluster(broker_factory, n_voters=3, extra=None, brokers_only=0, settings=None):
    """Starts `n_voters` combined broker+controller nodes (and `brokers_only`
    broker-only nodes); returns them after each answers Kafka requests."""
    cports = {i: free_port() for i in range(1, n_voters + 1)}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in cports.items())
    nodes = []
    learner_cports = []
    for i in range(1, n_voters + brokers_only + 1):
        cport = cports.get(i) or free_port()
        learner_cports.append(cport)
        s = dict(FAST)
        s.update(settings or {})
        s.update({
            "node.id": str(i),
            "process.roles": "broker,controller" if i in cports else "broker",
            "listeners": f"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{cport}",
            "controller.quorum.voters": voters,
        })
        s.update((extra or {}).get(i, {}))
        nodes.append(broker_factory(settings=s, name=f"node{i}", start=False))
    # free_port() hands out ports nothing holds yet, so a client port may repeat a
    # CONTROLLER port or another node's: draw again until all differ.
    taken = set(cports.values()) | set(learner_cports)
    for b in nodes:
        while b.port in taken:
            b.port = free_port()
        taken.add(b.port)
    for b in nodes:
        b.spawn()
    for b in nodes:
        wait_until(f"{b.name} to serve", lambda b=b: b.proc.poll() is None and port_ok(b),
                   timeout=JOIN_TIMEOUT_S)
    return nodes, voters


def port_ok(b):
    from conftest import port_accepts
    return port_accepts(b.port)


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap, "socket.timeout.ms": 5000})


def broker_ids(b):
    md = admin(b).list_topics(timeout=10)
    return sorted(md.brokers), md


def quorum_leader(b):
    """The metadata quorum's leader, from DescribeQuorum through kafka-python."""
    from kafka.admin import KafkaAdminClient
    a = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=10000)
    try:
        q = a.describe_metadata_quorum()
    finally:
        a.close()
    part = q["topics"][0]["partitions"][0]
    assert part["error"] is None, part
    assert {v["replica_id"] for v in part["current_voters"]} >= {part["leader_id"]}
    return part["leader_id"]


def create_topic(b, name, partitions=3):
    a = admin(b)  # keep the client alive until the answer arrives
    futs = a.create_topics([NewTopic(name, partitions, 1)], operation_timeout=20,
                           request_timeout=30)
    futs[name].result(timeout=40)


def test_three_brokers_form_one_cluster(broker_factory):
    nodes, _ = cluster(broker_factory)
    # Every broker lists all three, the same cluster id and a controller.
    ids = set()
    for b in nodes:
        got, md = wait_until("three brokers in Metadata", lambda b=b: (
            broker_ids(b) if broker_ids(b)[0] == [1, 2, 3] else None))
        ids.add(md.cluster_id)
        assert md.controller_id in (1, 2, 3)
        for bid, bm in md.brokers.items():
            assert bm.host == "127.0.0.1" and bm.port == nodes[bid - 1].port
    assert len(ids) == 1, f"brokers disagree on the cluster id: {ids}"

    # A topic created through broker 2 is served by all; its leaders spread over brokers.
    create_topic(nodes[1], "spread", partitions=6)
    for b in nodes:
        md = wait_until("topic on every broker",
                        lambda b=b: admin(b).list_topics("spread", timeout=10).topics["spread"].partitions
                        if len(admin(b).list_topics("spread", timeout=10).topics["spread"].partitions) == 6
                        else None)
        assert {p.leader for p in md.values()} == {1, 2, 3}, "leaders must spread over brokers"
        for p in md.values():
            assert list(p.replicas) == [p.leader] and list(p.isrs) == [p.leader]

    # Clients produce to the leaders through any bootstrap broker, and read everything back.
    p = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all"})
    for i in range(60):
        p.produce("spread", value=f"v{i}".encode(), partition=i % 6)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": nodes[2].bootstrap, "group.id": "spread-g",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition("spread", i) for i in range(6)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 60 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(60))

    # A broker that does not lead a partition answers NOT_LEADER_OR_FOLLOWER (kafka-python,
    # sending straight to a chosen broker).
    md = admin(nodes[0]).list_topics("spread", timeout=10).topics["spread"].partitions
    part, info = next((i, pm) for i, pm in md.items() if pm.leader != 1)
    import struct
    from rawwire import connect, produce_v3, read_frame
    sock = connect(nodes[0].port)
    try:
        sock.sendall(produce_v3(7, "spread", b"", partition=part))
        resp = read_frame(sock)
    finally:
        sock.close()
    assert resp is not None
    # corr, [topic: name, [partition, error_code, ...]]
    name_len = struct.unpack_from(">h", resp, 8)[0]
    got_part, code = struct.unpack_from(">ih", resp, 10 + name_len + 4)
    assert (got_part, code) == (part, 6), f"expected NOT_LEADER_OR_FOLLOWER (6), got {code}"

    # Consumer groups and their coordinators live on the offsets partitions' leaders.
    cg = Consumer({"bootstrap.servers": nodes[1].bootstrap, "group.id": "cluster-group",
                   "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    cg.subscribe(["spread"])
    seen = 0
    deadline = time.monotonic() + 40
    while seen < 60 and time.monotonic() < deadline:
        m = cg.poll(0.5)
        if m is not None and m.error() is None:
            seen += 1
    cg.commit(asynchronous=False)
    committed = cg.committed([TopicPartition("spread", i) for i in range(6)], timeout=10)
    cg.close()
    assert seen == 60
    assert sum(tp.offset for tp in committed) == 60

    # `sluice cluster` shows the same cluster; the quorum's leader knows every voter's log end.
    from conftest import sluice_bin
    leader = quorum_leader(nodes[0])

    def cli(*args, node=nodes[leader - 1]):
        r = subprocess.run([str(sluice_bin()), "cluster", *args, "--bootstrap", node.bootstrap],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = cli("quorum")
    assert f"leader: {leader}" in out, out
    voters = [line.split() for line in out.splitlines() if " voter " in f" {line} "]
    assert sorted(v[0] for v in voters) == ["1", "2", "3"], out
    assert all(v[2] != "?" for v in voters), f"the leader must know each voter's log end:\n{out}"
    rows = cli("brokers").splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["1", "2", "3"], rows
    assert f"cluster id: {next(iter(ids))}" in cli("info")


def test_controller_failover_and_broker_fencing(broker_factory):
    nodes, _ = cluster(broker_factory)
    wait_until("three brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3])
    create_topic(nodes[0], "before", partitions=3)
    ctl = quorum_leader(nodes[0])
    victim = nodes[ctl - 1]
    victim.kill()
    survivors = [b for b in nodes if b is not victim]

    # A new topic is created from the survivors within 30 s of the kill.
    t0 = time.monotonic()
    wait_until("create after controller kill",
               lambda: create_topic(survivors[0], "after", partitions=2) is None, timeout=30, every=0.5)
    assert time.monotonic() - t0 < 30
    # The killed broker is fenced: gone from Metadata, its partitions without a leader.
    ids, md = wait_until("victim fenced", lambda: (
        broker_ids(survivors[1]) if broker_ids(survivors[1])[0] == sorted(b_id for b_id in (1, 2, 3) if b_id != ctl) else None),
        timeout=30)
    before = md.topics["before"].partitions
    for p in before.values():
        if list(p.replicas) == [ctl]:
            assert p.leader == -1, "an RF=1 partition of a fenced broker is offline"
    assert quorum_leader(survivors[0]) != ctl

    # It comes back on its data dir: unfenced, and leads its partitions again.
    victim.start(timeout=JOIN_TIMEOUT_S)
    wait_until("victim back", lambda: broker_ids(survivors[0])[0] == [1, 2, 3], timeout=30)
    wait_until("leaders back", lambda: all(
        p.leader != -1 for p in admin(survivors[0]).list_topics("before", timeout=10)
        .topics["before"].partitions.values()), timeout=30)


def test_quorum_loss_refuses_admin_but_leaders_keep_serving(broker_factory):
    nodes, _ = cluster(broker_factory, n_voters=5)
    wait_until("five brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4, 5], timeout=40)
    create_topic(nodes[0], "kept", partitions=5)
    leaders = {i: p.leader for i, p in
               admin(nodes[0]).list_topics("kept", timeout=10).topics["kept"].partitions.items()}
    # Kill three of five voters: no majority is left.
    for b in nodes[2:]:
        b.kill()
    survivor = nodes[0]
    # Admin is refused with a clear error within its timeout, not hung.
    a = admin(survivor)
    futs = a.create_topics([NewTopic("refused", 1, 1)], request_timeout=25)
    with pytest.raises(KafkaException) as e:
        futs["refused"].result(timeout=40)
    assert "quorum" in str(e.value).lower() or "timed out" in str(e.value).lower(), str(e.value)
    # The data path of a surviving leader keeps working.
    part = next(i for i, l in leaders.items() if l == 1)
    p = Producer({"bootstrap.servers": survivor.bootstrap, "acks": "all",
                  "message.timeout.ms": 20000})
    errors = []
    p.produce("kept", value=b"still here", partition=part,
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(25)
    assert errors == [None], errors


def test_broker_only_node_joins(broker_factory):
    nodes, _ = cluster(broker_factory, n_voters=3, brokers_only=1)
    wait_until("four brokers", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=40)
    # The broker-only node serves metadata changes made elsewhere.
    create_topic(nodes[0], "seen-by-4", partitions=4)
    wait_until("topic on broker 4", lambda: "seen-by-4" in admin(nodes[3]).list_topics(timeout=10).topics)
    # A clean stop fences the broker at once (well within broker.session.timeout.ms = 3 s).
    t0 = time.monotonic()
    assert nodes[3].stop() == 0
    wait_until("broker 4 gone after a clean stop",
               lambda: broker_ids(nodes[0])[0] == [1, 2, 3], timeout=10, every=0.05)
    assert time.monotonic() - t0 < 2.5, "fenced by the session timeout, not by the clean stop"
    # It comes back on its data dir.
    nodes[3].start(timeout=JOIN_TIMEOUT_S)
    wait_until("broker 4 back", lambda: broker_ids(nodes[0])[0] == [1, 2, 3, 4], timeout=20)


def test_controller_only_voters_with_broker_only_nodes(broker_factory):
    """process.roles split as Kafka allows: three controller-only voters, two brokers."""
    cports = {i: free_port() for i in (1, 2, 3)}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in cports.items())
    nodes = []
    learner_cports = []
    for i in (1, 2, 3, 4, 5):
        cport = cports.get(i) or free_port()
        learner_cports.append(cport)
        s = dict(FAST)
        s.update({"node.id": str(i), "controller.quorum.voters": voters,
                  "process.roles": "controller" if i in cports else "broker",
                  "listeners": f"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{cport}"})
        nodes.append(broker_factory(settings=s, name=f"node{i}", start=False))
    # free_port() hands out ports nothing holds yet, so a client port may repeat a
    # CONTROLLER port or another node's: draw again until all differ.
    taken = set(cports.values()) | set(learner_cports)
    for b in nodes:
        while b.port in taken:
            b.port = free_port()
        taken.add(b.port)
    for b in nodes:
        b.spawn()
    brokers = nodes[3:]
    for b in brokers:
        wait_until(f"{b.name} to serve", lambda b=b: port_ok(b), timeout=JOIN_TIMEOUT_S)
    wait_until("only the brokers listed", lambda: broker_ids(brokers[0])[0] == [4, 5], timeout=30)
    create_topic(brokers[1], "split", partitions=4)
    md = admin(brokers[0]).list_topics("split", timeout=10).topics["split"].partitions
    assert {p.leader for p in md.values()} == {4, 5}
    assert all(b.alive() for b in nodes[:3]), "controllers keep running"


def test_data_dir_of_another_cluster_is_refused(broker_factory, tmp_path):
    single = broker_factory(name="single")
    create_topic(single, "mine", partitions=1)
    single.stop()
    # Started as node 0 of a two-voter quorum on the single node's data dir: its metadata
    # log would meet another quorum.
    cport = free_port()
    other = broker_factory(
        name="intruder", start=False, data_dir=single.data_dir,
        settings={"node.id": "0", "listeners": f"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{cport}",
                  "controller.quorum.voters": f"0@127.0.0.1:{cport},2@127.0.0.1:{free_port()}"})
    other.spawn()
    rc = other.proc.wait(30)
    assert rc != 0
    log = other.log_path.read_text()
    assert "belongs to" in log and "refusing to start" in log, log[-2000:]
    other.stopped_on_purpose = True


def test_single_node_json_metadata_upgrades_in_place(broker_factory):
    """A data dir from before the metadata log (`__sluice_metadata.json`) keeps its topics,
    records and cluster id."""
    b = broker_factory(name="old")
    b.stop()
    data = b.data_dir
    # Rebuild the old layout by hand: the JSON image and a partition written by this broker.
    b.start()
    create_topic(b, "legacy", partitions=2)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(10):
        p.produce("legacy", value=f"r{i}".encode(), partition=i % 2)
    assert p.flush(10) == 0
    md = admin(b).list_topics("legacy", timeout=10)
    cluster_id, topic_id = md.cluster_id, None
    b.stop()
    meta_log = data / "__cluster_metadata-0"
    assert meta_log.is_dir() and (data / "meta.properties").exists()
    import shutil
    shutil.rmtree(meta_log)
    (data / "meta.properties").unlink()
    img = {"cluster_id": cluster_id, "next_producer_id": 5000, "topics": {
        "legacy": {"name": "legacy", "id": "7f3c1a52-1111-4222-8333-944455556666",
                   "configs": {}, "partitions": [
                       {"index": 0, "log_dir": 0, "leader_epoch": 0},
                       {"index": 1, "log_dir": 0, "leader_epoch": 0}]}}}
    (data / "__sluice_metadata.json").write_text(json.dumps(img))
    b.start()
    md = admin(b).list_topics("legacy", timeout=10)
    assert md.cluster_id == cluster_id
    assert len(md.topics["legacy"].partitions) == 2
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "legacy-g",
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition("legacy", 0), TopicPartition("legacy", 1)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert sorted(got) == sorted(f"r{i}".encode() for i in range(10))
    assert (data / "__sluice_metadata.json.imported").exists()
    # kcat sees the same single broker as node 0.
    out = subprocess.run(["kcat", "-b", b.bootstrap, "-L", "-J"], capture_output=True,
                         text=True, timeout=20)
    assert json.loads(out.stdout)["brokers"][0]["id"] == 0
