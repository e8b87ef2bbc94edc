"""Acceptance 8: a Go client, sarama (Debian's golang-github-shopify-sarama-dev,
sarama 1.22.1, built with Debian's Go 1.19), runs a ConsumerGroup against the
broker: two sarama members split a topic, consume every record once between
them, and their marked offsets are committed (checked with confluent-kafka).

franz-go and the Java client cannot be installed here (no Go module proxy,
no Maven), so sarama is the only non-librdkafka, non-Python group client."""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from groupclients import group_offsets, produce_parts
from kclients import create_topic, uniq

HERE = Path(__file__).resolve().parent
GOPATH = "/usr/share/gocode"  # where Debian installs Go libraries
BUILD_TIMEOUT_S = 240
RUN_TIMEOUT_S = 60
SPLIT_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def sarama_bin(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (Debian: apt-get install golang-go "
                    "golang-github-shopify-sarama-dev)")
    if not (Path(GOPATH) / "src/github.com/Shopify/sarama").is_dir():
        pytest.skip(f"sarama is not in {GOPATH} (Debian: apt-get install "
                    "golang-github-shopify-sarama-dev)")
    out = tmp_path_factory.mktemp("go") / "sarama_group"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": ""}
    res = subprocess.run([go, "build", "-o", str(out), "./go/sarama_group"], cwd=HERE, env=env,
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert res.returncode == 0, f"go build failed:\n{res.stderr[-3000:]}"
    return out


def test_sarama_consumer_group_splits_and_commits(group_broker, sarama_bin):
    bs = group_broker.bootstrap
    topic, group = uniq("sarama"), uniq("sarama-grp")
    create_topic(bs, topic, 4)
    # Each member stops after its share: the range assignor gives each 2 partitions.
    procs = [subprocess.Popen([str(sarama_bin), "-brokers", bs, "-group", group, "-topic", topic,
                               "-count", "20", "-timeout", f"{RUN_TIMEOUT_S - 15}s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    lines: list[list[dict]] = [[], []]

    def read(i):
        for line in procs[i].stdout:
            lines[i].append(json.loads(line))

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
    for t in readers:
        t.start()

    def claims(i) -> set:
        got = [ln["claims"] for ln in lines[i] if "claims" in ln and "records" not in ln]
        return set(got[-1]) if got else set()

    try:
        # Records are produced once the two members hold disjoint halves.
        deadline = time.monotonic() + SPLIT_TIMEOUT_S
        while not (claims(0) and claims(1) and not claims(0) & claims(1)
                   and claims(0) | claims(1) == {0, 1, 2, 3}):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                errs = [p.stderr.read()[-2000:] for p in procs]
                raise AssertionError(f"sarama members did not split within {SPLIT_TIMEOUT_S}s "
                                     f"(exit {[p.wait(5) for p in procs]}): {lines}\n"
                                     f"stderr: {errs}")
            time.sleep(0.05)
        produced = produce_parts(bs, topic, {p: 10 for p in range(4)})
        results = []
        for i, p in enumerate(procs):
            p.wait(RUN_TIMEOUT_S)
            readers[i].join(5)
            assert p.returncode == 0, f"sarama member exited {p.returncode}:\n{p.stderr.read()[-3000:]}"
            results.append(lines[i][-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    seen = [tuple(r) for res in results for r in res["records"]]
    want = {(p, o) for p, offs in produced.items() for o in offs}
    assert len(seen) == len(set(seen)), "a record was delivered twice"
    assert set(seen) == want
    per_member = [{p for p, _ in res["records"]} for res in results]
    assert not (per_member[0] & per_member[1]), f"a partition was read by both: {per_member}"
    assert group_offsets(bs, group, topic, 4) == {p: 10 for p in range(4)}
