"""Consumer groups with KafkaJS (Node.js, npm `kafkajs`): two members split a
topic, consume every record once and auto-commit. Skipped when node or the
npm package is missing (ci/test installs both)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kclients import create_topic, uniq

NODE_DIR = Path(__file__).resolve().parent / "node"


def node_ready() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        return "kafkajs is not installed (cd tests/node && npm ci)"
    return None


@pytest.mark.sluice_only
def test_kafkajs_group_splits_and_commits(broker_factory):
    why = node_ready()
    if why:
        pytest.skip(why)
    b = broker_factory(settings={"group.initial.rebalance.delay.ms": "0",
                                 "group.min.session.timeout.ms": "1000"})
    topic, group, count = uniq("kjs"), uniq("kjs-g"), 400
    create_topic(b.bootstrap, topic, partitions=4)
    env = dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1")
    out = subprocess.run(["node", str(NODE_DIR / "group_consumers.js"), b.bootstrap, topic,
                          group, str(count)], capture_output=True, text=True, timeout=90,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["seen"] == count and r["unique"] == count, r
    # The partitions each member consumed from: both members took part, and
    # no partition was read by both (records were produced only after both
    # had joined). KafkaJS's GROUP_JOIN payload ("assigned") can still show
    # the previous generation's assignment, so it only gates the produce.
    a, bb = set(r["partitions"]["a"]), set(r["partitions"]["b"])
    assert a and bb and not (a & bb) and a | bb == {0, 1, 2, 3}, r
    assert r["committed"] == count, r
