"""Transactions with confluent-kafka (librdkafka's transactional producer):
read_committed and read_uncommitted consumers, consume-transform-produce with
send_offsets_to_transaction, the transaction timeout, fencing by a second
producer with the same transactional.id, kill -9 in the middle of a
transaction, and WriteTxnMarkers (the coordinator-to-leader request) by hand."""

import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kclients import create_topic, uniq, watermarks
from rawwire import connect, frame, read_frame, string

SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}


def txn_producer(bs: str, tid: str, **extra) -> Producer:
    conf = {"bootstrap.servers": bs, "transactional.id": tid, "linger.ms": 5,
            "transaction.timeout.ms": 60000}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def read(bs: str, topic: str, isolation: str, expect_min: int = 0, timeout: float = 20.0,
         quiet: float = 2.0):
    """Everything readable from the start of `topic` at `isolation`, stopping
    once `expect_min` values arrived and nothing came for `quiet` seconds."""
    c = Consumer({"bootstrap.servers": bs, "group.id": uniq("txn-read"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": isolation})
    c.subscribe([topic])
    out = []
    end = time.time() + timeout
    last = time.time()
    try:
        while time.time() < end:
            m = c.poll(0.2)
            if m is None or m.error():
                if len(out) >= expect_min and time.time() - last > quiet:
                    break
                continue
            out.append(m.value().decode())
            last = time.time()
    finally:
        c.close()
    return out


@pytest.mark.sluice_only
def test_committed_and_aborted_transactions(broker_factory):
    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("txn")
    create_topic(bs, topic, partitions=3)
    p = txn_producer(bs, uniq("tid"))
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, key=str(i).encode(), value=f"c1-{i}".encode())
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(20):
        p.produce(topic, key=str(i).encode(), value=f"a-{i}".encode())
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=str(i).encode(), value=f"c2-{i}".encode())
    p.commit_transaction(30)

    committed = read(bs, topic, "read_committed", expect_min=40)
    assert sorted(committed) == sorted([f"c1-{i}" for i in range(30)] + [f"c2-{i}" for i in range(10)])
    uncommitted = read(bs, topic, "read_uncommitted", expect_min=60)
    assert len(uncommitted) == 60
    assert sum(1 for v in uncommitted if v.startswith("a-")) == 20


@pytest.mark.sluice_only
def test_read_committed_waits_for_open_transaction_and_never_blocks_past_lso(broker_factory):
    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("lso")
    create_topic(bs, topic, partitions=1)
    plain = Producer({"bootstrap.servers": bs})
    plain.produce(topic, value=b"before")
    plain.flush(10)
    p = txn_producer(bs, uniq("tid"))
    p.begin_transaction()
    p.produce(topic, value=b"in-txn")
    p.flush(10)
    plain.produce(topic, value=b"after-open-txn")
    plain.flush(10)
    # The open transaction holds the last stable offset at its first record:
    # read_committed gets what is below it and is not stuck.
    assert read(bs, topic, "read_committed", expect_min=1, timeout=8) == ["before"]
    p.commit_transaction(30)
    got = read(bs, topic, "read_committed", expect_min=3)
    assert got == ["before", "in-txn", "after-open-txn"]


@pytest.mark.sluice_only
def test_consume_transform_produce_commits_offsets_atomically(broker_factory):
    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    src, dst, group = uniq("src"), uniq("dst"), uniq("ctp")
    create_topic(bs, src, partitions=2)
    create_topic(bs, dst, partitions=2)
    plain = Producer({"bootstrap.servers": bs})
    for i in range(40):
        plain.produce(src, key=str(i).encode(), value=str(i).encode())
    plain.flush(10)

    c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "session.timeout.ms": 6000})
    c.subscribe([src])
    p = txn_producer(bs, uniq("ctp-tid"))

    def run_batch(n: int, commit: bool) -> int:
        got = []
        end = time.time() + 20
        while len(got) < n and time.time() < end:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m)
        p.begin_transaction()
        for m in got:
            p.produce(dst, key=m.key(), value=b"x" + m.value())
        positions = c.position(c.assignment())
        p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
            # The consumer must go back to the committed offsets.
            committed = c.committed(c.assignment(), timeout=10)
            for tp in committed:
                c.seek(TopicPartition(tp.topic, tp.partition,
                                      tp.offset if tp.offset >= 0 else 0))
        return len(got)

    assert run_batch(20, commit=True) == 20
    # An aborted batch: its output and its offsets vanish together.
    run_batch(10, commit=False)
    committed = {tp.partition: tp.offset for tp in c.committed(
        [TopicPartition(src, 0), TopicPartition(src, 1)], timeout=10)}
    assert sum(max(o, 0) for o in committed.values()) == 20
    c.close()
    out = read(bs, dst, "read_committed", expect_min=20)
    assert len(out) == 20 and len(set(out)) == 20


@pytest.mark.sluice_only
def test_transaction_left_open_past_its_timeout_is_aborted(broker_factory):
    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("tmo")
    create_topic(bs, topic, partitions=1)
    p = txn_producer(bs, uniq("tid"), **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic, value=b"abandoned")
    p.flush(10)
    time.sleep(4)  # past the timeout; the coordinator checks every 0.5 s
    plain = Producer({"bootstrap.servers": bs})
    plain.produce(topic, value=b"later")
    plain.flush(10)
    assert read(bs, topic, "read_committed", expect_min=1) == ["later"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


@pytest.mark.sluice_only
def test_second_producer_with_same_transactional_id_fences_the_first(broker_factory):
    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("fence")
    create_topic(bs, topic, partitions=1)
    tid = uniq("tid")
    p1 = txn_producer(bs, tid)
    p1.begin_transaction()
    p1.produce(topic, value=b"zombie")
    p1.flush(10)
    p2 = txn_producer(bs, tid)  # aborts p1's open transaction, bumps the epoch
    p2.begin_transaction()
    p2.produce(topic, value=b"new")
    p2.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        p1.produce(topic, value=b"zombie-2")
        p1.commit_transaction(10)
    err = e.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), err
    assert read(bs, topic, "read_committed", expect_min=1) == ["new"]


@pytest.mark.sluice_only
def test_kill9_during_transaction_leaves_a_consistent_log(broker_factory):
    settings = dict(SETTINGS)
    b = broker_factory(settings=settings)
    bs = b.bootstrap
    topic = uniq("k9")
    create_topic(bs, topic, partitions=2)
    tid = uniq("tid")
    p = txn_producer(bs, tid, **{"transaction.timeout.ms": 3000})
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=str(i).encode(), value=f"ok-{i}".encode())
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=str(i).encode(), value=f"open-{i}".encode())
    p.flush(10)
    b.restart(kill=True)
    # The open transaction is still Ongoing after the restart; its timeout
    # aborts it and read_committed readers see only the committed one.
    got = read(bs, topic, "read_committed", expect_min=10, timeout=30, quiet=5)
    assert sorted(got) == sorted(f"ok-{i}" for i in range(10))
    # The id works again: a new producer fences the old one and commits.
    p2 = txn_producer(bs, tid, **{"transaction.timeout.ms": 3000})
    p2.begin_transaction()
    p2.produce(topic, value=b"after-restart")
    p2.commit_transaction(30)
    got = read(bs, topic, "read_committed", expect_min=11)
    assert sorted(got) == sorted([f"ok-{i}" for i in range(10)] + ["after-restart"])


@pytest.mark.sluice_only
def test_transaction_admin_apis_with_kafka_python(broker_factory):
    """DescribeTransactions, ListTransactions and DescribeProducers through
    kafka-python 3's admin client, while a confluent-kafka transaction is open
    and after it committed."""
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient

    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("adm")
    create_topic(bs, topic, partitions=2)
    tid = uniq("tid")
    p = txn_producer(bs, tid)
    p.begin_transaction()
    p.produce(topic, value=b"v", partition=1)
    p.flush(10)
    ka = KafkaAdminClient(bootstrap_servers=bs)
    try:
        d = ka.describe_transactions([tid])[tid]
        assert str(d.state.value) == "Ongoing", d
        assert d.topic_partitions == {KTP(topic, 1)}
        assert d.producer_id >= 0 and d.transaction_timeout_ms == 60000
        listed = [t for ts in ka.list_transactions().values() for t in ts]
        mine = [t for t in listed if t.transactional_id == tid]
        assert len(mine) == 1 and mine[0].producer_id == d.producer_id
        prods = ka.describe_producers([KTP(topic, 1)])[KTP(topic, 1)].active_producers
        assert [x.producer_id for x in prods] == [d.producer_id]
        assert prods[0].current_transaction_start_offset == 0
        p.commit_transaction(30)
        end = time.time() + 10
        while time.time() < end:
            d = ka.describe_transactions([tid])[tid]
            if str(d.state.value) == "CompleteCommit":
                break
            time.sleep(0.2)
        assert str(d.state.value) == "CompleteCommit", d
        prods = ka.describe_producers([KTP(topic, 1)])[KTP(topic, 1)].active_producers
        assert prods[0].current_transaction_start_offset == -1
        ongoing = ka.list_transactions(state_filters=["Ongoing"])
        assert not [t for ts in ongoing.values() for t in ts if t.transactional_id == tid]
    finally:
        ka.close()


@pytest.mark.sluice_only
def test_kafka_python_and_aiokafka_transactions(broker_factory):
    """kafka-python 3's transactional producer commits one transaction and
    aborts another; aiokafka's transactional producer commits a third;
    read_committed consumers of both libraries see exactly the committed ones."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaConsumer, KafkaProducer

    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("kptxn")
    create_topic(bs, topic, partitions=2)
    kp = KafkaProducer(bootstrap_servers=bs, transactional_id=uniq("kp-tid"))
    kp.init_transactions()
    kp.begin_transaction()
    for i in range(10):
        kp.send(topic, key=str(i).encode(), value=f"kp-c-{i}".encode())
    kp.commit_transaction()
    kp.begin_transaction()
    for i in range(5):
        kp.send(topic, key=str(i).encode(), value=f"kp-a-{i}".encode())
    kp.flush()
    kp.abort_transaction()
    kp.close()

    async def aio():
        p = AIOKafkaProducer(bootstrap_servers=bs, transactional_id=uniq("aio-tid"))
        await p.start()
        try:
            async with p.transaction():
                for i in range(5):
                    await p.send(topic, key=str(i).encode(), value=f"aio-c-{i}".encode())
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=uniq("aio-read"),
                             auto_offset_reset="earliest", isolation_level="read_committed")
        await c.start()
        got = []
        try:
            end = time.time() + 20
            while len(got) < 15 and time.time() < end:
                batch = await c.getmany(timeout_ms=500)
                for msgs in batch.values():
                    got += [m.value.decode() for m in msgs]
            await asyncio.sleep(1.0)
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                got += [m.value.decode() for m in msgs]
        finally:
            await c.stop()
        return got

    got = asyncio.run(aio())
    want = sorted([f"kp-c-{i}" for i in range(10)] + [f"aio-c-{i}" for i in range(5)])
    assert sorted(got) == want
    kc = KafkaConsumer(topic, bootstrap_servers=bs, group_id=uniq("kp-read"),
                       auto_offset_reset="earliest", isolation_level="read_committed",
                       consumer_timeout_ms=3000)
    got = [m.value.decode() for m in kc]
    kc.close()
    assert sorted(got) == want


@pytest.mark.sluice_only
def test_kill9_right_after_commit_keeps_the_transaction_committed(broker_factory):
    """EndTxn is answered once PrepareCommit is durable; the markers follow.
    A kill -9 right after commit_transaction() returns may hit before some
    markers are written: after the restart the coordinator finds the
    transaction in PrepareCommit and writes them, so read_committed readers
    see the whole transaction."""
    b = broker_factory(settings=SETTINGS)
    bs = b.bootstrap
    topic = uniq("k9c")
    create_topic(bs, topic, partitions=4)
    want = []
    for round_ in range(3):
        p = txn_producer(bs, uniq("tid"))
        p.begin_transaction()
        for part in range(4):
            for i in range(5):
                v = f"r{round_}-p{part}-{i}"
                want.append(v)
                p.produce(topic, value=v.encode(), partition=part)
        p.commit_transaction(30)
        b.restart(kill=True)
    got = read(bs, topic, "read_committed", expect_min=len(want), timeout=30)
    assert sorted(got) == sorted(want)


def _uvarint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _read_uvarint(buf: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[at]
        at += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, at


def write_txn_markers_v1(corr: int, markers) -> bytes:
    """WriteTxnMarkers v1 (flexible; request header v2). `markers`: (producer id, epoch,
    commit, coordinator epoch, [(topic, [partitions])])."""
    body = _uvarint(len(markers) + 1)
    for pid, epoch, commit, coordinator_epoch, topics in markers:
        body += struct.pack(">qh?", pid, epoch, commit) + _uvarint(len(topics) + 1)
        for topic, parts in topics:
            name = topic.encode()
            body += _uvarint(len(name) + 1) + name + _uvarint(len(parts) + 1)
            body += b"".join(struct.pack(">i", p) for p in parts) + b"\0"
        body += struct.pack(">i", coordinator_epoch) + b"\0"
    header = struct.pack(">hhi", 27, 1, corr) + string("raw-coordinator") + b"\0"
    return frame(header + body + b"\0")


def parse_write_txn_markers_v1(resp: bytes) -> dict:
    """{(producer id, topic, partition): error code} of a WriteTxnMarkers v1 answer."""
    at = 4 + 1  # correlation id, header tagged fields (none)
    codes = {}
    n, at = _read_uvarint(resp, at)
    for _ in range(n - 1):
        (pid,) = struct.unpack_from(">q", resp, at)
        at += 8
        nt, at = _read_uvarint(resp, at)
        for _ in range(nt - 1):
            ln, at = _read_uvarint(resp, at)
            topic = resp[at:at + ln - 1].decode()
            at += ln - 1
            np_, at = _read_uvarint(resp, at)
            for _ in range(np_ - 1):
                part, code = struct.unpack_from(">ih", resp, at)
                at += 6 + 1  # tagged fields
                codes[(pid, topic, part)] = code
            at += 1
        at += 1
    return codes


@pytest.mark.sluice_only
def test_write_txn_markers_writes_markers_as_a_partition_leader(broker_factory):
    """A coordinator's WriteTxnMarkers v1, by hand: each marker is written on the partitions
    this broker leads (one control batch: the log end moves by one), unknown partitions
    answer UNKNOWN_TOPIC_OR_PARTITION, and a marker for an older producer epoch than the
    partition's is refused with INVALID_PRODUCER_EPOCH."""
    b = broker_factory(settings=SETTINGS)
    topic = uniq("wtm")
    create_topic(b.bootstrap, topic, partitions=2)
    before = [watermarks(b.bootstrap, topic, p)[1] for p in range(2)]
    s = connect(b.port)
    try:
        s.sendall(write_txn_markers_v1(7, [
            (7001, 5, True, 3, [(topic, [0, 1]), ("no-such-topic", [0])]),
            (7002, 0, False, 3, [(topic, [9])]),
        ]))
        resp = read_frame(s, timeout=20)
        assert resp is not None and struct.unpack(">i", resp[:4])[0] == 7
        assert parse_write_txn_markers_v1(resp) == {
            (7001, topic, 0): 0, (7001, topic, 1): 0,
            (7001, "no-such-topic", 0): 3, (7002, topic, 9): 3,
        }
        assert [watermarks(b.bootstrap, topic, p)[1] for p in range(2)] == \
            [h + 1 for h in before]
        s.sendall(write_txn_markers_v1(8, [(7001, 4, False, 3, [(topic, [0])])]))
        resp = read_frame(s, timeout=20)
        assert resp is not None
        assert parse_write_txn_markers_v1(resp) == {(7001, topic, 0): 47}
    finally:
        s.close()
    # The committed marker is an ordinary control batch: consumers skip it.
    assert read(b.bootstrap, topic, "read_committed", quiet=1.0) == []
