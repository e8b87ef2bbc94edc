"""A torn or garbage tail on the active segment after a crash: recovery cuts
the log at the last valid batch, says how many bytes it dropped, and keeps
everything before it; `sluice log verify` reports the tail as a warning only."""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess

import pytest

from conftest import sluice_bin
from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq, wait_topic

pytestmark = pytest.mark.sluice_only


def logical_end(data: bytes) -> int:
    """End of the last whole v2 batch (direct mode pads the file with zeros)."""
    pos = 0
    while pos + 61 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        if length <= 0 or data[pos + 16] != 2 or pos + 12 + length > len(data):
            break
        pos += 12 + length
    return pos


@pytest.mark.parametrize("io_mode", ["direct", "buffered"])
@pytest.mark.parametrize("tail", ["half-batch", "garbage"])
def test_torn_tail_is_cut_with_a_log_line(broker_factory, io_mode, tail):
    b = broker_factory(settings={"io_mode": io_mode}, name=f"torn-{io_mode}-{tail}")
    topic = uniq("torn")
    create_topic(b.bootstrap, topic, 1)
    wait_topic(b.bootstrap, topic, 1)
    recs = [Rec(b"k%d" % i, b"value-%05d" % i) for i in range(500)]
    produce_confluent(b.bootstrap, topic, recs, partition=0)
    b.kill()

    pdir = b.data_dir / f"{topic}-0"
    active = sorted(p for p in os.listdir(pdir) if p.endswith(".log"))[-1]
    path = pdir / active
    data = path.read_bytes()
    end = logical_end(data)
    assert end > 0
    if tail == "half-batch":
        last_batch = data[:end]  # a copy of the whole log's bytes; take its first batch's half
        (length,) = struct.unpack_from(">i", last_batch, 8)
        junk = last_batch[: (12 + length) // 2]
    else:
        junk = random.Random(7).randbytes(3000)
    with open(path, "r+b") as f:
        f.truncate(end)
        f.seek(end)
        f.write(junk)

    r = subprocess.run([str(sluice_bin()), "log", "verify", "--quiet", str(b.data_dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"a torn tail must be a warning only:\n{r.stdout}\n{r.stderr}"
    assert "torn tail" in r.stdout, r.stdout

    b.start()
    wait_topic(b.bootstrap, topic, 1)
    got = consume_confluent(b.bootstrap, topic, [0], len(recs))
    assert [g.rec() for g in got] == recs, "data before the torn tail changed"
    log = b.log_path.read_text()
    m = re.search(r"truncating torn tail: dropped (\d+) bytes after position (\d+)", log)
    assert m, "no log line about the torn tail"
    assert (int(m.group(1)), int(m.group(2))) == (len(junk), end), m.group(0)
    # Appends continue right after the kept data.
    produce_confluent(b.bootstrap, topic, [Rec(b"k", b"after")], partition=0)
    got = consume_confluent(b.bootstrap, topic, [0], len(recs) + 1)
    assert got[-1].offset == len(recs) and got[-1].value == b"after"


def test_log_verify_refuses_a_running_broker(broker_factory):
    b = broker_factory(name="verify-running")
    r = subprocess.run([str(sluice_bin()), "log", "verify", str(b.data_dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "running broker" in r.stderr, r.stderr
    b.stop()
    r = subprocess.run([str(sluice_bin()), "log", "verify", str(b.data_dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
