"""Disk faults under a running broker, on a small loop-mounted ext4 data dir.

Disk full: produce fails with KAFKA_STORAGE_ERROR, nothing half-written stays
behind, reads keep working, and writes resume by themselves once space is
freed; after a restart `sluice log verify` finds the dir clean and every
acknowledged record is there exactly once.

Failed disk (ext4 remounted read-only after an error): the log dir goes
offline once (one log line), produce answers KAFKA_STORAGE_ERROR, Metadata and
DescribeLogDirs report it, and the broker keeps serving everything else.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, Producer

from conftest import sluice_bin
from kclients import admin, consume_confluent, create_topic, uniq, wait_topic, watermarks
from smallfs import small_fs  # noqa: F401  (fixture)

pytestmark = pytest.mark.sluice_only

PARTITIONS = 2
VALUE_BYTES = 1000
FILL_DEADLINE_S = 60


def verify(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([str(sluice_bin()), "log", "verify", "--quiet", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def list_offsets_error(port: int, topic: str, partition: int) -> int:
    """Error code of a ListOffsets v1 (latest) for one partition."""
    name = topic.encode()
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + struct.pack(">h", len(name)) + name \
        + struct.pack(">iiq", 1, partition, -1)
    client = b"t"
    req = struct.pack(">hhih", 2, 1, 7, len(client)) + client + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(req)) + req)
        (n,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
        resp = s.recv(n, socket.MSG_WAITALL)
    # correlation id, topic count, topic name, partition count, partition, error code
    pos = 4 + 4
    (tlen,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + tlen + 4
    _p, err = struct.unpack_from(">ih", resp, pos)
    return err


class Load:
    """An acks=all producer without retries (so the first error is the one reported)
    that remembers what was acknowledged: (partition, offset) -> seq."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                           "linger.ms": 5, "message.timeout.ms": 20000,
                           "socket.timeout.ms": 10000})
        self.acked: dict[tuple[int, int], int] = {}
        self.errors: list[KafkaError] = []
        self.seq = 0

    def _cb(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[(msg.partition(), msg.offset())] = int(msg.value()[:10])

    def send(self, n: int) -> None:
        for _ in range(n):
            v = b"%010d" % self.seq + b"x" * (VALUE_BYTES - 10)
            self.seq += 1
            while True:
                try:
                    self.p.produce(self.topic, value=v, partition=self.seq % PARTITIONS,
                                   on_delivery=self._cb)
                    break
                except BufferError:
                    self.p.poll(0.05)
        assert self.p.flush(30) == 0, "undelivered records"


def check_exactly_acked(bootstrap, topic, acked):
    """Every acknowledged record is at its offset, once; nothing else is in the log."""
    got = consume_confluent(bootstrap, topic, range(PARTITIONS), len(acked), timeout=60)
    at = {(g.partition, g.offset): int(g.value[:10]) for g in got}
    assert len(at) == len(got), "an offset was read twice"
    missing = [k for k in acked if at.get(k) != acked[k]]
    assert not missing, f"{len(missing)} acknowledged records missing or changed: {missing[:5]}"
    for p in range(PARTITIONS):
        n = sum(1 for (pp, _) in acked if pp == p)
        assert watermarks(bootstrap, topic, p) == (0, n), \
            f"partition {p}: unacknowledged or partial records in the log"


@pytest.mark.parametrize("io_mode", ["buffered", "direct"])
def test_disk_full_then_space_freed(small_fs, broker_factory, io_mode):  # noqa: F811
    fs = small_fs(48)
    data = fs.mnt / "data"
    b = broker_factory(settings={"io_mode": io_mode, "log.segment.bytes": 1 << 20},
                       name=f"full-{io_mode}", data_dir=data)
    topic = uniq("full")
    create_topic(b.bootstrap, topic, PARTITIONS)
    wait_topic(b.bootstrap, topic, PARTITIONS)
    # Leave ~6 MiB: a filler file takes the rest (deleted later to free space).
    filler = fs.mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, fs.free_bytes() - (6 << 20)))
        f.flush()
    load = Load(b.bootstrap, topic)
    deadline = time.monotonic() + FILL_DEADLINE_S
    while not load.errors and time.monotonic() < deadline:
        load.send(200)
    assert load.errors, "the disk never filled up"
    codes = {e.code() for e in load.errors}
    assert codes == {KafkaError.KAFKA_STORAGE_ERROR}, f"unexpected errors: {load.errors[:3]}"
    assert "disk full" in b.log_path.read_text(), "no log line about the full disk"

    # Reads keep working while the disk is full, and see exactly what was acknowledged.
    check_exactly_acked(b.bootstrap, topic, load.acked)
    assert b.alive()

    # Free space: writes resume without a restart.
    filler.unlink()
    load.errors.clear()
    load.send(300)
    assert not load.errors, f"writes did not resume: {load.errors[:3]}"
    assert "appends succeed again" in b.log_path.read_text()
    load.p.flush(10)

    b.stop()
    r = verify(data)
    assert r.returncode == 0, f"log verify failed:\n{r.stdout}\n{r.stderr}"
    b.start()
    wait_topic(b.bootstrap, topic, PARTITIONS)
    check_exactly_acked(b.bootstrap, topic, load.acked)


def test_failed_disk_takes_log_dir_offline(small_fs, broker_factory):  # noqa: F811
    from kafka import KafkaAdminClient

    fs = small_fs(48)
    data = fs.mnt / "data"
    b = broker_factory(settings={"io_mode": "buffered"}, name="ro", data_dir=data)
    topic = uniq("ro")
    create_topic(b.bootstrap, topic, PARTITIONS)
    wait_topic(b.bootstrap, topic, PARTITIONS)
    load = Load(b.bootstrap, topic)
    load.send(50)
    assert not load.errors and len(load.acked) == 50

    ka = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=10000)
    try:
        healthy = ka.describe_log_dirs()
        fs.fail()  # ext4 error -> remounted read-only under the broker
        load.send(20)
        codes = {e.code() for e in load.errors}
        assert KafkaError.KAFKA_STORAGE_ERROR in codes, f"errors: {load.errors[:3]}"
        assert codes <= {KafkaError.KAFKA_STORAGE_ERROR}, f"errors: {load.errors[:3]}"
        load.errors.clear()
        load.send(5)  # still refused, and no second log line
        assert {e.code() for e in load.errors} == {KafkaError.KAFKA_STORAGE_ERROR}

        log = b.log_path.read_text()
        assert log.count("log dir is now OFFLINE") == 1, "expected exactly one offline log line"

        # DescribeLogDirs shows the dir with KAFKA_STORAGE_ERROR (and no partitions, as Kafka).
        def dir_state(answer):
            (d,) = answer[0]["log_dirs"]
            return d["error_code"], {(t["name"], p["partition_index"])
                                     for t in d["topics"] for p in t["partitions"]}
        assert dir_state(healthy) == (0, {(topic, p) for p in range(PARTITIONS)}), healthy
        offline = ka.describe_log_dirs()
        assert dir_state(offline) == (56, set()), offline

        # The broker keeps serving: metadata (partition error 56), topic creation in memory.
        md = admin(b.bootstrap).list_topics(topic, timeout=10)
        errs = {p.error.code() if p.error else 0 for p in md.topics[topic].partitions.values()}
        assert errs == {KafkaError.KAFKA_STORAGE_ERROR}, errs
        # ListOffsets on an offline partition answers KAFKA_STORAGE_ERROR too (asked over the
        # raw protocol: clients retry that error until they time out).
        assert list_offsets_error(b.port, topic, 0) == KafkaError.KAFKA_STORAGE_ERROR
        assert b.alive()
    finally:
        ka.close()
    b.kill()
