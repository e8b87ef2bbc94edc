"""Idempotent producers (enable.idempotence): acknowledgements lost on the way
back (a proxy closes the connection instead of passing the Produce answer on)
make the clients retry batches the broker already stored; every record must
still be in the log exactly once, in the order it was sent."""

import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Producer

from conftest import free_port
from faultproxy import AckDroppingProxy
from kclients import create_topic, uniq

N = 3000
PARTITIONS = 3


def read_all(bs: str, topic: str, expect: int, timeout: float = 60.0):
    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("idem-read"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    end = time.time() + timeout
    idle_since = None
    try:
        while time.time() < end:
            m = c.poll(0.5)
            if m is None or m.error():
                if len(out) >= expect:
                    idle_since = idle_since or time.time()
                    if time.time() - idle_since > 2:
                        break
                continue
            idle_since = None
            out.append((m.partition(), m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return out


def check_exactly_once_in_order(got, n: int):
    values = [int(v) for (_, _, _, v) in got]
    dup = len(values) - len(set(values))
    assert dup == 0, f"{dup} duplicated records"
    assert set(values) == set(range(n)), f"missing {sorted(set(range(n)) - set(values))[:10]}"
    per_part = defaultdict(list)
    for p, off, _, v in sorted(got, key=lambda x: (x[0], x[1])):
        per_part[p].append(int(v))
    for p, vs in per_part.items():
        assert vs == sorted(vs), f"partition {p} out of order"


@pytest.mark.sluice_only
def test_confluent_idempotent_retries_after_lost_acks_are_not_duplicated(broker_factory):
    proxy_port = free_port()
    b = broker_factory(settings={"advertised.listeners": f"127.0.0.1:{proxy_port}"})
    proxy = AckDroppingProxy(proxy_port, b.port, drop_rate=0.15, max_drops=15).start()
    try:
        bs = f"127.0.0.1:{proxy_port}"
        topic = uniq("idem")
        create_topic(b.bootstrap, topic, partitions=PARTITIONS)
        p = Producer({"bootstrap.servers": bs, "enable.idempotence": True,
                      "linger.ms": 5, "batch.num.messages": 50,
                      "max.in.flight.requests.per.connection": 5,
                      "message.timeout.ms": 60000})
        errors = []
        for i in range(N):
            # Keys spread records over the partitions; the value is the send order.
            p.produce(topic, key=str(i % 11).encode(), value=str(i).encode(),
                      on_delivery=lambda e, m: e and errors.append(e))
            if i % 200 == 0:
                p.poll(0)
        left = p.flush(90)
        assert left == 0, f"{left} records not delivered"
        assert not errors, errors[:5]
        assert proxy.dropped >= 3, f"the proxy dropped only {proxy.dropped} acks"
        # Read back through the proxy (the broker advertises it), losing nothing now.
        proxy.drop_rate = 0.0
        got = read_all(bs, topic, N)
    finally:
        proxy.stop()
    check_exactly_once_in_order(got, N)


@pytest.mark.sluice_only
def test_kafka_python_idempotent_by_default_survives_lost_acks(broker_factory):
    from kafka import KafkaProducer

    proxy_port = free_port()
    b = broker_factory(settings={"advertised.listeners": f"127.0.0.1:{proxy_port}"})
    proxy = AckDroppingProxy(proxy_port, b.port, drop_rate=0.15, max_drops=10, seed=11).start()
    try:
        topic = uniq("idem-kp")
        create_topic(b.bootstrap, topic, partitions=PARTITIONS)
        kp = KafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy_port}", linger_ms=2, batch_size=256,
                           retries=20, request_timeout_ms=10000)
        assert kp.config["enable_idempotence"], "kafka-python 3 should default to idempotence"
        n = 1000
        futs = [kp.send(topic, key=str(i % 7).encode(), value=str(i).encode()) for i in range(n)]
        kp.flush(90)
        kp.close(10)
        failed = [f.exception for f in futs if f.failed()]
        assert not failed, failed[:3]
        assert proxy.dropped >= 2, f"the proxy dropped only {proxy.dropped} of {proxy.produce_answers} acks"
        proxy.drop_rate = 0.0
        got = read_all(f"127.0.0.1:{proxy_port}", topic, n)
    finally:
        proxy.stop()
    check_exactly_once_in_order(got, n)


@pytest.mark.sluice_only
def test_producer_state_survives_broker_kill(broker_factory):
    """kill -9 of the broker while an idempotent producer has batches in
    flight: after the restart the producer's retries of batches that were
    already stored must be recognised from the recovered producer state
    (snapshot plus log replay), so nothing is duplicated."""
    import threading

    b = broker_factory(settings={"log.segment.bytes": "65536"})
    bs = b.bootstrap
    topic = uniq("idem-kill")
    create_topic(bs, topic, partitions=2)
    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "linger.ms": 2,
                  "batch.num.messages": 20, "message.timeout.ms": 120000,
                  "reconnect.backoff.max.ms": 500})
    errors = []
    n = 6000
    sent = threading.Event()

    def produce():
        for i in range(n):
            while True:
                try:
                    p.produce(topic, key=str(i % 5).encode(), value=str(i).encode(),
                              on_delivery=lambda e, m: e and errors.append(e))
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 100 == 0:
                p.poll(0)
                time.sleep(0.002)
        sent.set()

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(1.0)
    b.restart(kill=True)
    t.join(timeout=120)
    assert sent.is_set()
    assert p.flush(120) == 0
    assert not errors, errors[:5]
    got = read_all(bs, topic, n)
    check_exactly_once_in_order(got, n)
