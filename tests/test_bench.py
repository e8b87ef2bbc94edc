"""`sluice bench` (issue 5): a short run of workloads/smoke.toml against a
broker leaves result.json, result.md and latency.svg and prints a progress
line; `compare` prints the side-by-side table; `sweep` starts its own brokers.

The figures are not checked against targets (benchmarks are not timed
assertions); only that they are consistent: every produced message consumed,
percentiles in order, rates above zero."""

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, port_accepts, sluice_bin

RUN_TIMEOUT_S = 120
SMOKE = REPO / "workloads" / "smoke.toml"
PERCENTILES = ["p50Us", "p75Us", "p95Us", "p99Us", "p99_9Us", "p99_99Us", "maxUs"]


def bench(*args, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    res = subprocess.run([str(sluice_bin()), "bench", *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"bench {args} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def check_latency(lat: dict, what: str) -> None:
    values = [lat[p] for p in PERCENTILES]
    assert lat["count"] > 0, f"{what}: no samples"
    assert values[0] > 0, f"{what}: p50 of 0 us"
    assert values == sorted(values), f"{what}: percentiles not monotonic: {values}"
    curve = [v for _, v in lat["distribution"]]
    assert curve == sorted(curve), f"{what}: distribution not monotonic"


@pytest.fixture(scope="module")
def smoke_runs(shared_broker, tmp_path_factory):
    """Two smoke runs (the second at a different rate, for compare)."""
    out = tmp_path_factory.mktemp("bench")
    a = bench("run", SMOKE, "--bootstrap", shared_broker.bootstrap, "--out", out / "a")
    b = bench("run", SMOKE, "--bootstrap", shared_broker.bootstrap, "--out", out / "b",
              "--set", "producerRate=800", "--label", "smoke-800")
    return out, a, b


def test_run_writes_json_markdown_and_svg(smoke_runs):
    out, res, _ = smoke_runs
    progress = [line for line in res.stderr.splitlines() if line.startswith("[bench")]
    assert any(" test " in line and "msg/s" in line and "pub p99" in line for line in progress), \
        f"no progress line in stderr:\n{res.stderr}"

    r = json.loads((out / "a" / "result.json").read_text())
    assert r["label"] == "smoke"
    assert r["messagesProduced"] > 0
    assert r["messagesFailed"] == 0
    # One subscription: every acknowledged message is consumed exactly once.
    assert r["messagesConsumed"] == r["messagesProduced"] == r["messagesExpected"]
    assert r["backlogEndMsgs"] == 0
    assert r["publishRateMsgS"] > 0 and r["consumeRateMsgS"] > 0
    assert r["publishRateMbS"] > 0 and r["consumeRateMbS"] > 0
    # At most the schedule's 500 msg/s (plus a tick's rounding); less when the
    # machine is loaded, which is what the latencies then show.
    assert r["publishRateMsgS"] < 600, r["publishRateMsgS"]
    assert r["coordinatedOmissionCorrected"] is True
    check_latency(r["publishLatency"], "publish")
    check_latency(r["endToEndLatency"], "end-to-end")
    assert r["timeline"], "no per-second samples"

    md = (out / "a" / "result.md").read_text()
    assert "| publish rate (msg/s) |" in md and "| end-to-end |" in md
    assert md.strip() in res.stdout, "the Markdown table is printed"

    svg = ET.parse(out / "a" / "latency.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2, "publish and end-to-end curves"


def test_set_override_and_label(smoke_runs):
    out, _, _ = smoke_runs
    r = json.loads((out / "b" / "result.json").read_text())
    assert r["label"] == "smoke-800"
    assert r["workload"]["producerRate"] == 800
    assert r["messagesConsumed"] == r["messagesProduced"]


def test_compare_prints_side_by_side_table(smoke_runs, tmp_path):
    out, _, _ = smoke_runs
    plot = tmp_path / "cmp.svg"
    res = bench("compare", out / "a" / "result.json", out / "b", "--plot", plot, timeout=30)
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "| metric | smoke | smoke-800 |", res.stdout
    rate = next(line for line in lines if line.startswith("| publish rate (msg/s) |"))
    assert "(x" in rate, "ratio to the first run"
    assert any(line.startswith("| end-to-end latency p99.9 (ms) |") for line in lines)
    assert len(ET.parse(plot).getroot().findall("{http://www.w3.org/2000/svg}polyline")) == 4


def test_bad_workload_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\npartitionPerTopic = 3\n')
    res = subprocess.run([str(sluice_bin()), "bench", "run", str(bad), "--bootstrap",
                          "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "partitionPerTopic" in res.stderr


@pytest.mark.sluice_only
def test_sweep_starts_a_broker_per_variant(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text(f"""
name = "tiny"
workload = "{SMOKE}"
set = ["warmupDurationSeconds=0.5", "testDurationSeconds=1.5", "producerRate=300"]
broker = {{ smp = "1", io_mode = "buffered", "group.initial.rebalance.delay.ms" = "0" }}
[[variant]]
name = "linger 0"
set = ["lingerMs=0"]
[[variant]]
name = "linger 5, 1 MiB segments"
set = ["lingerMs=5"]
broker = {{ "log.segment.bytes" = "1048576" }}
""")
    out = tmp_path / "out"
    res = bench("sweep", exp, "--out", out, timeout=2 * RUN_TIMEOUT_S)
    results = json.loads((out / "sweep.json").read_text())
    assert [r["label"] for r in results] == ["linger 0", "linger 5, 1 MiB segments"]
    assert len({r["bootstrap"] for r in results}) == 2, "one broker per variant"
    for r in results:
        assert r["messagesConsumed"] == r["messagesProduced"] > 0
    assert results[1]["workload"]["lingerMs"] == 5
    md = (out / "sweep.md").read_text()
    assert "| metric | linger 0 | linger 5, 1 MiB segments |" in md
    assert md.strip() in res.stdout
    ET.parse(out / "latency.svg")
    for d in ("00-linger_0", "01-linger_5__1_MiB_segments"):
        assert (out / d / "result.json").exists()
        assert (out / d / "broker.log").stat().st_size > 0, "broker log kept"
    # The brokers were stopped and their data dirs removed.
    for r in results:
        assert not port_accepts(int(r["bootstrap"].rsplit(":", 1)[1])), r["bootstrap"]
    assert not list(out.glob("data-*"))
