"""Deleted segment files are freed off the shards (storage/reclaim.rs): the
kernel frees a file's blocks when its last handle closes, which took tens of
milliseconds per 256 MiB segment on ext4 and stopped a shard for seconds when
a large topic was deleted. Retention and topic deletion hand each deleted
segment's last handle to the broker's reclaim thread instead.

Real clients produce to a topic whose retention deletes segments and to one
that is then deleted; afterwards the detector line reports files freed by
the reclaim thread, the broker holds no handle to a deleted file once the
reclaim delay is over (their space is given back), readers get exactly the
records retention kept, and the broker keeps serving."""
from __future__ import annotations

import os
import re
import time

from confluent_kafka.admin import AdminClient

from kclients import (by_partition, consume_kafka_python, create_topic, produce_confluent,
                      uniq, wait_topic, watermarks)
from test_fetch_splice import records

SETTINGS = {"stall.detector.interval.ms": "200", "log.retention.check.interval.ms": "200"}


def reclaimed(log) -> int:
    """Files freed by the reclaim thread (a broker-wide count on every detector line)."""
    counts = re.findall(r"reclaimed_files=(\d+)", log.read_text(errors="replace"))
    return max((int(c) for c in counts), default=0)


def held_deleted(pid: int, under) -> list[str]:
    """The broker's fds that name deleted files under `under`."""
    out = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith(" (deleted)"):
            out.append(target)
    return out


def test_retention_and_topic_deletion_free_files_off_the_shards(broker_factory):
    b = broker_factory(settings=SETTINGS)
    kept = uniq("ret")
    # 1 MiB segments, 2 MiB kept per partition: retention deletes most of them.
    create_topic(b.bootstrap, kept, partitions=2,
                 config={"segment.bytes": str(1 << 20), "retention.bytes": str(2 << 20)})
    gone = uniq("del")
    create_topic(b.bootstrap, gone, partitions=2, config={"segment.bytes": str(1 << 20)})
    produced = records(8000, 11)  # about 8 MB
    kept_at = produce_confluent(b.bootstrap, kept, produced, conf={"linger.ms": 20})
    produce_confluent(b.bootstrap, gone, produced, conf={"linger.ms": 20})

    # Retention moves each partition's log start past deleted segments; wait
    # until it is done (the starts stay put for a second).
    deadline = time.monotonic() + 30
    starts, last = [0, 0], None
    while time.monotonic() < deadline:
        starts = [watermarks(b.bootstrap, kept, p)[0] for p in range(2)]
        if all(s > 0 for s in starts) and starts == last:
            break
        last = starts
        time.sleep(1.0)
    assert all(s > 0 for s in starts), f"retention deleted nothing: {starts}"

    a = AdminClient({"bootstrap.servers": b.bootstrap})
    fs = a.delete_topics([gone], operation_timeout=10, request_timeout=15)
    assert fs[gone].result(timeout=20) is None
    wait_topic(b.bootstrap, gone, present=False)

    # Every deleted segment's last handle is closed by the reclaim thread
    # (about 1 s after the segment is dropped), so nothing stays held.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and held_deleted(b.proc.pid, b.data_dir):
        time.sleep(0.2)
    assert held_deleted(b.proc.pid, b.data_dir) == [], "deleted files still held"
    # Each partition of the deleted topic had several segments, and retention
    # deleted more: all went through the reclaim thread.
    time.sleep(0.5)
    assert reclaimed(b.log_path) >= 8, "the reclaim thread freed too few files"

    # What retention kept reads back exactly, from each partition's new start.
    for p in range(2):
        want = [(r.key, r.value) for r, at in zip(produced, kept_at)
                if at is not None and at[0] == p and at[1] >= starts[p]]
        got = consume_kafka_python(b.bootstrap, kept, [p], len(want), timeout=60,
                                   start=starts[p])
        assert [(g.key, g.value) for g in by_partition(got).get(p, [])] == want, p
        assert got[0].offset == starts[p]
    assert b.alive()
