"""Consumer-group members built from the real clients (confluent-kafka,
kafka-python, aiokafka) for the group tests, with every wait bounded.

A member records what the client told it: each assignment/revocation callback
(`events`), the partitions it owns now (`owned`), and every record it was given
(`got`).  Members commit after processing (enable.auto.commit off), one commit
per record, synchronously, so a record a member has returned is committed
before the next poll can run a rebalance callback.

confluent members are driven round-robin from the test's own thread by
`pump()` (librdkafka joins and heartbeats in its own threads; polling only
serves callbacks and records).  kafka-python joins inside `poll()`, so each of
its members runs in a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from kclients import Got, norm_headers

# Broker settings for group tests (Kafka names; see the coordinator settings in
# docs/configuration.md): no initial rebalance delay, and short client session
# timeouts allowed, so that a test waits seconds, not Kafka's defaults.
GROUP_SETTINGS = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
}

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500
# A killed member is detected after its session timeout; short so the test is.
SHORT_SESSION_TIMEOUT_MS = 2000
# How long a group may take to settle after a change (join, leave, expiry):
# a heartbeat to learn of the rebalance, a JoinGroup and a SyncGroup round.
SETTLE_TIMEOUT_S = 20.0


def confluent_group_conf(bootstrap: str, group: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "max.poll.interval.ms": 30000,
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    conf.update(extra)
    return conf


class ConfluentMember:
    """One confluent-kafka consumer subscribed to `topics` in `group`."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: list[str],
                 commit: bool = True, **conf):
        self.name = name
        self.commit = commit
        self.events: list[tuple[str, tuple[int, ...]]] = []
        self.owned: set[tuple[str, int]] = set()
        self.got: list[Got] = []
        self.errors: list = []
        self.commit_errors: list = []
        self.closed = False
        self.c = Consumer(confluent_group_conf(bootstrap, group, **conf))
        # What the client does on a rebalance follows the assignor's protocol:
        # eager callbacks carry the whole assignment, cooperative ones the change.
        self.cooperative = conf.get("partition.assignment.strategy") == "cooperative-sticky"
        self.c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)

    # The client assigns after the callback returns (confluent-kafka calls
    # assign()/incremental_assign() itself when the callback did not).
    def _on_assign(self, _c, parts):
        tps = {(p.topic, p.partition) for p in parts}
        self.events.append(("assign", tuple(sorted(p for _, p in tps))))
        if self.cooperative:
            self.owned |= tps
        else:
            self.owned = tps

    def _on_revoke(self, _c, parts):
        tps = {(p.topic, p.partition) for p in parts}
        self.events.append(("revoke", tuple(sorted(p for _, p in tps))))
        if self.cooperative:
            self.owned -= tps
        else:
            self.owned = set()

    def _on_lost(self, _c, parts):
        tps = {(p.topic, p.partition) for p in parts}
        self.events.append(("lost", tuple(sorted(p for _, p in tps))))
        self.owned -= tps

    def poll_once(self, timeout: float = 0.05) -> None:
        if self.closed:
            return
        m = self.c.poll(timeout)
        if m is None:
            return
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                self.errors.append(m.error())
            return
        self.got.append(Got(m.partition(), m.offset(), m.key(), m.value(),
                            norm_headers(m.headers()), m.timestamp()[1]))
        if self.commit:
            try:
                self.c.commit(offsets=[TopicPartition(m.topic(), m.partition(), m.offset() + 1)],
                              asynchronous=False)
            except Exception as e:  # noqa: BLE001 - recorded; tests decide
                self.commit_errors.append((m.partition(), m.offset(), e))

    def partitions(self) -> set[int]:
        return {p for _, p in self.owned}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.c.close()

    def __repr__(self) -> str:
        return (f"<{self.name} owned={sorted(self.partitions())} got={len(self.got)} "
                f"events={self.events[-6:]} errors={self.errors[-3:]} "
                f"commit_errors={self.commit_errors[-3:]}>")


def pump(members, until, timeout: float = SETTLE_TIMEOUT_S, what: str = "condition",
         also=None):
    """Polls every open member in turn until `until()` is true; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.poll_once(0.02)
        if also is not None:
            also()
        if until():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {members}")


def pump_for(members, seconds: float) -> None:
    """Polls every open member for `seconds` (callbacks and records keep flowing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll_once(0.02)


def split_covers(members, partitions: int, topic: str | None = None) -> bool:
    """True when the members own disjoint, non-empty sets covering every partition."""
    owned = [m.partitions() for m in members]
    if any(not o for o in owned):
        return False
    union = set().union(*owned)
    return union == set(range(partitions)) and sum(len(o) for o in owned) == partitions


def consumed_once(members, expected: dict[int, list[int]]) -> dict[int, set[str]]:
    """Asserts that the members between them got exactly the offsets `expected`
    (partition -> offsets), none twice; returns partition -> names of the members
    that read it."""
    seen: dict[tuple[int, int], str] = {}
    dups = []
    readers: dict[int, set[str]] = {}
    for m in members:
        for g in m.got:
            key = (g.partition, g.offset)
            if key in seen:
                dups.append((key, seen[key], m.name))
            seen[key] = m.name
            readers.setdefault(g.partition, set()).add(m.name)
    want = {(p, o) for p, offs in expected.items() for o in offs}
    assert not dups, f"records delivered twice: {dups[:10]}"
    assert set(seen) == want, (f"missing {sorted(want - set(seen))[:10]}, "
                               f"unexpected {sorted(set(seen) - want)[:10]}")
    return readers


# -- kafka-python: one thread per member ---------------------------------

class KafkaPythonMember(threading.Thread):
    def __init__(self, name: str, bootstrap: str, group: str, topic: str):
        super().__init__(name=name, daemon=True)
        self.member_name = name
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.lock = threading.Lock()
        self.owned: set[int] = set()
        self.events: list = []
        self.got: list[Got] = []
        self.error: BaseException | None = None
        self.stop_flag = threading.Event()
        self.started_ok = threading.Event()

    def partitions(self) -> set[int]:
        with self.lock:
            return set(self.owned)

    def run(self):
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                with member.lock:
                    member.events.append(("revoke", tuple(sorted(tp.partition for tp in revoked))))
                    member.owned = set()

            def on_partitions_assigned(self, assigned):
                with member.lock:
                    member.events.append(("assign", tuple(sorted(tp.partition for tp in assigned))))
                    member.owned = {tp.partition for tp in assigned}

        try:
            c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                              enable_auto_commit=False, auto_offset_reset="earliest",
                              session_timeout_ms=SESSION_TIMEOUT_MS,
                              heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                              max_poll_interval_ms=30000, request_timeout_ms=31000,
                              fetch_max_wait_ms=100, client_id=self.member_name)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
            return
        try:
            c.subscribe([self.topic], listener=Listener())
            self.started_ok.set()
            while not self.stop_flag.is_set():
                batch = c.poll(timeout_ms=100)
                n = 0
                for _tp, msgs in batch.items():
                    for m in msgs:
                        with self.lock:
                            self.got.append(Got(m.partition, m.offset, m.key, m.value))
                        n += 1
                if n:
                    c.commit()  # the positions just consumed, synchronously
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
        finally:
            c.close()

    def stop(self, timeout: float = 15.0):
        self.stop_flag.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.member_name} did not stop within {timeout}s"

    def __repr__(self) -> str:
        return (f"<{self.member_name} owned={sorted(self.partitions())} got={len(self.got)} "
                f"events={self.events[-6:]} error={self.error!r}>")


def wait_threads(members, until, timeout: float = SETTLE_TIMEOUT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        errs = [m for m in members if m.error is not None]
        assert not errs, f"member failed: {errs}"
        if until():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {members}")


# -- aiokafka: members as tasks of one event loop --------------------------

class AioMember:
    def __init__(self, name: str, bootstrap: str, group: str, topic: str):
        self.name = name
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.owned: set[int] = set()
        self.events: list = []
        self.got: list[Got] = []
        self.c = None

    def partitions(self) -> set[int]:
        return set(self.owned)

    async def start(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener
        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                member.events.append(("revoke", tuple(sorted(tp.partition for tp in revoked))))
                member.owned = set()

            def on_partitions_assigned(self, assigned):
                member.events.append(("assign", tuple(sorted(tp.partition for tp in assigned))))
                member.owned = {tp.partition for tp in assigned}

        self.c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                  enable_auto_commit=False, auto_offset_reset="earliest",
                                  session_timeout_ms=SESSION_TIMEOUT_MS,
                                  heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                                  max_poll_interval_ms=30000, request_timeout_ms=15000,
                                  fetch_max_wait_ms=100, client_id=self.name)
        await asyncio.wait_for(self.c.start(), 15)
        self.c.subscribe([self.topic], listener=Listener())

    async def poll_once(self):
        batch = await self.c.getmany(timeout_ms=50)
        n = 0
        for _tp, msgs in batch.items():
            for m in msgs:
                self.got.append(Got(m.partition, m.offset, m.key, m.value))
                n += 1
        if n:
            await asyncio.wait_for(self.c.commit(), 15)

    async def stop(self):
        if self.c is not None:
            await asyncio.wait_for(self.c.stop(), 15)

    def __repr__(self) -> str:
        return (f"<{self.name} owned={sorted(self.owned)} got={len(self.got)} "
                f"events={self.events[-6:]}>")


async def aio_pump(members, until, timeout: float = SETTLE_TIMEOUT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.gather(*(m.poll_once() for m in members))
        if until():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {members}")


# -- producing and checking ----------------------------------------------

def produce_parts(bootstrap: str, topic: str, counts: dict[int, int],
                  timeout: float = 30.0) -> dict[int, list[int]]:
    """Produces counts[p] records to each partition p (acks=all) and returns the
    offsets the delivery reports gave, partition -> sorted offsets."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "socket.timeout.ms": 10000, "message.timeout.ms": int(timeout * 1000)})
    out: dict[int, list[int]] = {}
    errors: list = []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            out.setdefault(msg.partition(), []).append(msg.offset())

    for part, n in counts.items():
        for i in range(n):
            p.produce(topic, key=b"k%d" % i, value=b"p%d-%d" % (part, i), partition=part,
                      on_delivery=cb)
        p.poll(0)
    remaining = p.flush(timeout)
    assert remaining == 0 and not errors, f"produce: {remaining} undelivered, errors {errors[:5]}"
    return {k: sorted(v) for k, v in out.items()}


def merged(*parts: dict[int, list[int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in parts:
        for k, v in d.items():
            out.setdefault(k, []).extend(v)
    return {k: sorted(v) for k, v in out.items()}


def total(d: dict[int, list[int]]) -> int:
    return sum(len(v) for v in d.values())


def group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The committed offsets of `group` for `topic` (OffsetFetch from a consumer
    that does not join the group), partition -> offset, uncommitted left out."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "socket.timeout.ms": 10000})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        c.close()
