"""Cluster II: a transactional producer survives the death of its transaction
coordinator's broker (docs/replication.md, docs/transactions.md).

Three brokers, an RF=3 topic and a replicated `__transaction_state`; an
unmodified confluent-kafka (librdkafka) transactional producer commits and
aborts transactions across all partitions while the broker coordinating its
transactional id is killed with SIGKILL in the middle of a transaction. The
producer handles errors the way librdkafka documents (retry a retriable
commit, abort and redo on an abortable error, give up on a fatal one), and a
read_committed consumer then finds every committed transaction exactly once,
in order, and nothing else; the aborted ones are in the log all the same. The
killed broker then returns, rejoins every ISR, and one more transaction commits.

The topic's partitions are led by all three brokers, so the coordinator must get
its commit and abort markers written on partitions other brokers lead (Kafka's
WriteTxnMarkers, coordinator to partition leader) before and after the failover.

Brokers are started by `broker_factory` and stopped by PID.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from rawwire import connect, read_frame
from test_cluster import JOIN_TIMEOUT_S, wait_until
from test_replication import create, full_isr, partitions, rcluster
from test_transactions import parse_write_txn_markers_v1, write_txn_markers_v1

pytestmark = [pytest.mark.sluice_only, pytest.mark.cluster]

TOPIC = "txn-flow"
NPARTS = 3
PER_PART = 8           # records per partition per transaction
TXNS = 24              # transactions before the last one (run after the restart)
KILL_AT = 9            # the coordinator dies in the middle of this transaction
ABORTED = {3, 7, 14, 20}  # transactions the producer aborts on purpose
TXN_STATE = "__transaction_state"
TXN_STATE_PARTS = 50   # transaction.state.log.num.partitions (default)
DEADLINE_S = 90.0      # bound on the whole transactional run


def java_hash_partition(key: str, n: int) -> int:
    """Kafka's placement of a transactional id: abs(String.hashCode) % n."""
    h = 0
    for ch in key:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (0 if h == -(1 << 31) else abs(h)) % n


def describe_txn(bootstraps: list[str], tid: str):
    """DescribeTransactions of `tid` from its coordinator, found with FindCoordinator
    key_type=1 (kafka-python's admin client)."""
    from kafka.admin import KafkaAdminClient
    a = KafkaAdminClient(bootstrap_servers=bootstraps, request_timeout_ms=10000)
    try:
        return a.describe_transactions([tid])[tid]
    finally:
        a.close()


def txn_coordinator(bootstraps: list[str], tid: str) -> int:
    """The broker coordinating the transactions of `tid`."""
    return describe_txn(bootstraps, tid).coordinator_id


def value(txn: int, attempt: int, part: int, seq: int) -> bytes:
    return f"t{txn}:a{attempt}:p{part}:s{seq}".encode()


def test_transactional_producer_survives_its_coordinators_death(broker_factory):
    nodes = rcluster(broker_factory)  # all three brokers registered before any transaction
    create(nodes[0], TOPIC, NPARTS, 3)
    wait_until("full ISRs", lambda: full_isr(nodes[0], TOPIC, NPARTS), timeout=30)
    bootstraps = [b.bootstrap for b in nodes]
    tid = f"survivor-{time.time_ns()}"

    p = Producer({"bootstrap.servers": ",".join(bootstraps), "transactional.id": tid,
                  "linger.ms": 5, "transaction.timeout.ms": 30_000,
                  "message.timeout.ms": 30_000, "topic.metadata.refresh.interval.ms": 1000,
                  "socket.timeout.ms": 10_000})
    p.init_transactions(30)

    # __transaction_state is replicated on all three brokers, and the coordinator of the
    # id is the leader of the id's partition of it.
    ts = partitions(nodes[0], TXN_STATE)
    assert len(ts) == TXN_STATE_PARTS
    assert all(len(pm.replicas) == 3 for pm in ts.values()), \
        {i: pm.replicas for i, pm in ts.items()}
    wait_until("__transaction_state ISRs full",
               lambda: full_isr(nodes[0], TXN_STATE, TXN_STATE_PARTS), timeout=30)
    coordinator = txn_coordinator(bootstraps, tid)
    state_part = java_hash_partition(tid, TXN_STATE_PARTS)
    assert coordinator == partitions(nodes[0], TXN_STATE)[state_part].leader
    victim = nodes[coordinator - 1]
    survivors = [b for b in nodes if b is not victim]

    t0 = time.monotonic()
    deadline = t0 + DEADLINE_S
    committed: dict[int, int] = {}   # txn -> the attempt that committed
    attempts: dict[int, int] = {}    # txn -> attempts made
    handled: list[str] = []          # the errors the producer handled, for the report
    delivery_errors: list = []
    killed = False

    def fatal(txn, err):
        pytest.fail(f"fatal producer error in txn {txn}: {err}; the coordinator's view: "
                    f"{coordinator_view()}; handled errors {handled[-10:]}")

    def coordinator_view():
        try:
            d = describe_txn([b.bootstrap for b in nodes if b.alive()], tid)
            return f"{d.state} since {d.transaction_start_time_ms}, partitions " \
                   f"{sorted(d.topic_partitions)} (coordinator {d.coordinator_id})"
        except Exception as e:  # noqa: BLE001 - only for the failure message
            return f"<DescribeTransactions failed: {e!r}>"

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"transactions not done within {DEADLINE_S}s; committed "
                        f"{sorted(committed)}, handled errors {handled[-10:]}; the "
                        f"coordinator's view: {coordinator_view()}")
        return remaining

    def produce(txn, attempt, part, seq):
        while True:
            try:
                p.produce(TOPIC, value=value(txn, attempt, part, seq), partition=part,
                          on_delivery=lambda e, m: e is None
                          or delivery_errors.append((e.name(), m.value())))
                return
            except BufferError:
                p.poll(0.1)
                left()

    def end(txn, commit: bool, timeout: float | None = None):
        """commit_transaction / abort_transaction, retried while the error is retriable."""
        while True:
            try:
                t = min(timeout or 30.0, left())
                (p.commit_transaction if commit else p.abort_transaction)(t)
                return
            except KafkaException as e:
                err = e.args[0]
                if err.fatal():
                    fatal(txn, err)
                if err.retriable():
                    handled.append(f"txn {txn} {'commit' if commit else 'abort'} retried: "
                                   f"{err.name()}")
                    continue
                raise

    def run(txn: int, abort: bool):
        while True:
            attempt = attempts.get(txn, 0)
            attempts[txn] = attempt + 1
            try:
                p.begin_transaction()
                for seq in range(PER_PART):
                    for part in range(NPARTS):
                        produce(txn, attempt, part, seq)
                    if txn == KILL_AT and attempt == 0 and seq == PER_PART // 2:
                        # Mid-transaction: records of it are already on the partitions.
                        p.flush(min(30.0, left()))
                        victim.kill()
                        nonlocal killed
                        killed = True
                if abort:
                    # Delivered first, so the aborted records are in the log (not purged).
                    assert p.flush(min(30.0, left())) == 0
                    end(txn, commit=False)
                    return
                end(txn, commit=True)
                committed[txn] = attempt
                return
            except KafkaException as e:
                err = e.args[0]
                if err.fatal():
                    fatal(txn, err)
                if not err.txn_requires_abort():
                    raise
                handled.append(f"txn {txn} attempt {attempt} aborted and redone: {err.name()}")
                end(txn, commit=False)

    for txn in range(TXNS):
        run(txn, txn in ABORTED)
        left()
    txn_time = time.monotonic() - t0
    assert killed
    want_committed = set(range(TXNS)) - ABORTED
    assert set(committed) == want_committed, (sorted(committed), handled)
    # Another broker coordinates the id now.
    new_coordinator = txn_coordinator([b.bootstrap for b in survivors], tid)
    assert new_coordinator in {1, 2, 3} - {coordinator}

    # The killed broker returns and rejoins every ISR, the transaction state's included;
    # one more transaction commits.
    victim.start(timeout=JOIN_TIMEOUT_S)
    wait_until("victim back in the topic's ISRs",
               lambda: full_isr(survivors[0], TOPIC, NPARTS), timeout=60)
    wait_until("victim back in __transaction_state's ISRs",
               lambda: full_isr(survivors[0], TXN_STATE, TXN_STATE_PARTS), timeout=60)
    deadline = time.monotonic() + 30
    run(TXNS, abort=False)
    want_committed.add(TXNS)
    assert set(committed) == want_committed
    p.flush(10)
    # Only records of attempts that did not commit may have failed delivery (purged by
    # the abort).
    committed_prefixes = {f"t{t}:a{a}:".encode() for t, a in committed.items()}
    failed_committed = [(n, v) for n, v in delivery_errors
                        if any(v.startswith(c) for c in committed_prefixes)]
    assert failed_committed == [], failed_committed[:5]

    # A read_committed consumer: exactly the committed attempts, in order per partition.
    want = {part: [value(t, committed[t], part, s)
                   for t in sorted(want_committed) for s in range(PER_PART)]
            for part in range(NPARTS)}
    bootstrap = ",".join(b.bootstrap for b in nodes)
    got = read_to_end(bootstrap, sum(map(len, want.values())))
    for part in range(NPARTS):
        wanted = set(want[part])
        aborted_seen = [v for v in got[part] if v not in wanted]
        assert aborted_seen == [], \
            f"partition {part}: aborted or unknown records {aborted_seen[:5]}"
        assert got[part] == want[part], (
            f"partition {part}: read {len(got[part])}, want {len(want[part])}, "
            f"duplicates {len(got[part]) - len(set(got[part]))}")
    # The aborted transactions' records are in the log all the same: read_committed
    # filtered them out.
    raw = read_to_end(bootstrap, 0, "read_uncommitted")
    for part in range(NPARTS):
        for t in ABORTED:
            a = attempts[t] - 1  # the attempt aborted on purpose, after its records landed
            mine = [v for v in raw[part] if v.startswith(f"t{t}:a{a}:p{part}:".encode())]
            assert mine == [value(t, a, part, s) for s in range(PER_PART)], (part, t, mine)
    # A broker asked for a marker on a partition it does not lead refuses it (the
    # coordinator then follows the leadership).
    lead = partitions(nodes[0], TOPIC)[0].leader
    other = next(b for i, b in enumerate(nodes, start=1) if i != lead)
    s = connect(other.port)
    try:
        s.sendall(write_txn_markers_v1(1, [(1 << 40, 0, True, 0, [(TOPIC, [0])])]))
        resp = read_frame(s, timeout=20)
    finally:
        s.close()
    assert resp is not None and parse_write_txn_markers_v1(resp) == {(1 << 40, TOPIC, 0): 6}
    print(f"transactions: {len(committed)} committed, {len(ABORTED)} aborted on purpose, "
          f"{txn_time:.1f}s; coordinator {coordinator} -> {new_coordinator}; handled: {handled}")


def read_to_end(bootstrap: str, expect: int, isolation: str = "read_committed",
                timeout: float = 40.0):
    """Every record readable at `isolation` from offset 0, per partition, until each
    partition reports its end (partition EOF) after `expect` records arrived."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time_ns()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True, "topic.metadata.refresh.interval.ms": 1000})
    c.assign([TopicPartition(TOPIC, i, 0) for i in range(NPARTS)])
    got = {i: [] for i in range(NPARTS)}
    at_end: set[int] = set()
    total = 0
    deadline = time.monotonic() + timeout
    try:
        while (total < expect or len(at_end) < NPARTS) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    got[m.partition()].append(m.value())
                    at_end.discard(m.partition())
                    total += 1
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                else:
                    raise AssertionError(f"consumer error: {m.error()}")
    finally:
        c.close()
    assert len(at_end) == NPARTS, f"partitions not read to their end: {at_end}, {total} records"
    return got
