"""kill -9 loop under sustained acks=all load.

Two producer subprocesses (tests/crash_producer.py: one idempotent, one plain)
write continuously to topics spread over both shards while the broker is
killed with SIGKILL at random moments and restarted, several times. After
each kill, before the restart, `sluice log verify` must find the data dir
clean (a torn tail of an active segment is only a warning). At the end every
acknowledged record must be at its acknowledged offset; with idempotence each
record is in the log exactly once and in sequence order per partition.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import sluice_bin
from kclients import consume_confluent, create_topic, uniq, wait_topic, watermarks

pytestmark = pytest.mark.sluice_only

PARTITIONS = 4
ROUNDS = 5
LOAD_S = (0.5, 3.0)  # random.uniform bounds: time under load before each kill
PRODUCER = Path(__file__).resolve().parent / "crash_producer.py"


def read_acks(path: Path) -> list[tuple[int, int, int]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append(tuple(int(x) for x in parts))
    return out


def verify(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(sluice_bin()), "log", "verify", "--quiet", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def check_topic(bootstrap: str, topic: str, acks, exactly_once: bool):
    by_pos = {}
    for p, o, s in acks:
        assert (p, o) not in by_pos, f"offset {p}/{o} acknowledged twice"
        by_pos[(p, o)] = s
    ends = {p: watermarks(bootstrap, topic, p)[1] for p in range(PARTITIONS)}
    got = consume_confluent(bootstrap, topic, range(PARTITIONS), sum(ends.values()), timeout=90)
    log = {(g.partition, g.offset): int(g.value[:12]) for g in got}
    assert len(log) == sum(ends.values()), "could not read the whole log back"
    wrong = [(k, s, log.get(k)) for k, s in by_pos.items() if log.get(k) != s]
    assert not wrong, f"{len(wrong)} acknowledged records missing or moved: {wrong[:5]}"
    if exactly_once:
        seqs = sorted(log.values())
        assert len(seqs) == len(set(seqs)), "a record is in the log twice"
        for p in range(PARTITIONS):
            in_order = [s for (pp, _o), s in sorted(log.items()) if pp == p]
            assert in_order == sorted(in_order), f"partition {p} out of sequence order"


@pytest.mark.parametrize("io_mode", ["direct", "buffered"])
def test_kill9_loop_under_acks_all_load(broker_factory, tmp_path, io_mode):
    rnd = random.Random()
    seed = rnd.randrange(1 << 30)
    rnd.seed(seed)
    b = broker_factory(settings={"io_mode": io_mode, "log.segment.bytes": 256 << 10},
                       name=f"crash-{io_mode}", smp=2)
    topics = {True: uniq("crash-idem"), False: uniq("crash-plain")}
    for t in topics.values():
        create_topic(b.bootstrap, t, PARTITIONS)
        wait_topic(b.bootstrap, t, PARTITIONS)
    stop = tmp_path / "stop"
    procs = {}
    for idem, t in topics.items():
        out = tmp_path / f"acks-{t}.txt"
        err = open(tmp_path / f"producer-{t}.log", "w")
        procs[idem] = (subprocess.Popen(
            [sys.executable, str(PRODUCER), b.bootstrap, t, str(PARTITIONS), str(out),
             str(stop), "1" if idem else "0"], stdout=err, stderr=subprocess.STDOUT), out, err)
    try:
        acked_before = 0
        for rnd_no in range(ROUNDS):
            time.sleep(rnd.uniform(*LOAD_S))
            b.kill()
            r = verify(b.data_dir)
            assert r.returncode == 0, \
                f"seed {seed} round {rnd_no}: log verify after kill -9 failed:\n{r.stdout}\n{r.stderr}"
            b.start()
            acked = sum(len(read_acks(out)) for _p, out, _e in procs.values())
            assert acked > acked_before or rnd_no == 0, f"seed {seed}: no progress in round {rnd_no}"
            acked_before = acked
        time.sleep(1.0)
    finally:
        stop.touch()
        for p, _out, err in procs.values():
            try:
                p.wait(180)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            err.close()
    for idem, (p, out, _err) in procs.items():
        assert p.returncode == 0, f"producer (idempotent={idem}) failed: " + \
            (tmp_path / f"producer-{topics[idem]}.log").read_text()[-2000:]
        acks = read_acks(out)
        assert len(acks) > 100, f"too little load: {len(acks)} acknowledged"
        check_topic(b.bootstrap, topics[idem], acks, exactly_once=idem)
    b.stop()
    r = verify(b.data_dir)
    assert r.returncode == 0, f"log verify after clean stop failed:\n{r.stdout}\n{r.stderr}"
