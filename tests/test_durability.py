"""Acceptance 5: kill -9 right after acks=all acknowledgements loses nothing;
plus graceful restart keeps topics, configs and data."""

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource

from kclients import (Rec, admin, by_partition, consume_confluent, create_topic, uniq, wait_topic,
                      watermarks)

pytestmark = pytest.mark.sluice_only

N = 2000
PARTITIONS = 3


def produce_acked(bs, topic, n, start=0):
    """Produce n keyed records with acks=all; return {(partition, offset): Rec}
    of every acknowledged record, after all delivery reports arrived."""
    p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 2,
                  "batch.num.messages": 100, "message.timeout.ms": 30000,
                  "socket.timeout.ms": 10000})
    acked: dict = {}
    errors: list = []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = Rec(msg.key(), msg.value())

    for i in range(start, start + n):
        while True:
            try:
                p.produce(topic, key=b"k%d" % (i % 17), value=b"rec-%06d-" % i + b"x" * (i % 200),
                          on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0 and not errors, f"{remaining} undelivered, errors {errors[:3]}"
    assert len(acked) == n
    return acked


def check_all_there(bs, topic, acked):
    got = consume_confluent(bs, topic, range(PARTITIONS), len(acked), timeout=60)
    at = {}
    for g in got:
        assert (g.partition, g.offset) not in at, f"offset {g.partition}/{g.offset} twice"
        at[(g.partition, g.offset)] = g.rec()
    lost = [k for k in acked if k not in at]
    assert not lost, f"{len(lost)} acknowledged records lost after kill -9, e.g. {sorted(lost)[:5]}"
    wrong = [k for k in acked if at[k] != acked[k]]
    assert not wrong, f"records changed: {[(k, acked[k], at[k]) for k in wrong[:3]]}"
    assert len(at) == len(acked), f"{len(at) - len(acked)} unacknowledged extra records"
    parts = by_partition(got)
    for p in range(PARTITIONS):
        gs = parts.get(p, [])
        assert [g.offset for g in gs] == list(range(len(gs))), f"gap in partition {p}"
        # No unacknowledged or duplicated records beyond what we read.
        assert watermarks(bs, topic, p) == (0, len(gs)), f"partition {p} watermarks"


@pytest.mark.parametrize("io_mode", ["direct", "buffered"])
def test_kill9_after_acks_all_loses_nothing(broker_factory, io_mode):
    settings = {} if io_mode == "direct" else {"io_mode": io_mode}
    b = broker_factory(settings=settings or None, name=f"dur-{io_mode}")
    topic = uniq("dur")
    create_topic(b.bootstrap, topic, PARTITIONS)
    acked = produce_acked(b.bootstrap, topic, N)
    b.kill()  # SIGKILL right after the last acknowledgement
    b.start()
    wait_topic(b.bootstrap, topic, PARTITIONS)
    check_all_there(b.bootstrap, topic, acked)

    # Offsets continue after the recovered end: nothing is overwritten.
    more = produce_acked(b.bootstrap, topic, 300, start=N)
    ends = {}
    for (p, o) in acked:
        ends[p] = max(ends.get(p, -1), o)
    for (p, o) in more:
        assert o > ends.get(p, -1), f"offset {p}/{o} reused after recovery"
    b.kill()
    b.start()
    check_all_there(b.bootstrap, topic, {**acked, **more})


def test_graceful_restart_keeps_topics_configs_data(broker_factory):
    b = broker_factory(name="restart")
    bs = b.bootstrap
    t1, t2 = uniq("keep"), uniq("keep")
    create_topic(bs, t1, 3, config={"retention.ms": "86400000"})
    create_topic(bs, t2, 1)
    acked = produce_acked(bs, t1, 500)
    b.restart()
    md = wait_topic(bs, t1, 3)
    assert t2 in md.topics and len(md.topics[t2].partitions) == 1
    a = admin(bs)
    res = ConfigResource(ConfigResource.Type.TOPIC, t1)
    cfg = a.describe_configs([res], request_timeout=15)[res].result(20)
    assert cfg["retention.ms"].value == "86400000"
    check_all_there(bs, t1, acked)
