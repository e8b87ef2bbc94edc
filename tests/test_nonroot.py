"""The broker runs as a normal user with the default 8 MiB memlock limit
(glommio's io_memory is sized from RLIMIT_MEMLOCK), and real clients work."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, port_accepts, sluice_bin, tail
from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq

NOBODY = 65534
MEMLOCK_BYTES = 8 * 1024 * 1024


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root (to drop to an unprivileged user) and setpriv")
def test_runs_as_normal_user_with_default_memlock():
    exe = sluice_bin()
    if os.environ.get("BROKER_IMPL", "sluice") != "sluice":
        pytest.skip("sluice only")
    # The binary's directories must be searchable by the unprivileged user.
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            "test", "-x", str(exe)])
    if probe.returncode != 0:
        pytest.skip(f"{exe} is not executable by uid {NOBODY}")
    work = Path(tempfile.mkdtemp(prefix="sluice-nonroot-"))
    work.chmod(0o777)
    data = work / "data"
    log = work / "broker.log"
    port = free_port()
    cmd = ["prlimit", f"--memlock={MEMLOCK_BYTES}:{MEMLOCK_BYTES}",
           "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           str(exe), "start", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
           "--set", f"admin.listeners=http://127.0.0.1:{free_port()}",
           "--smp", os.environ.get("SLUICE_SMP", "2")]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(work))
    try:
        deadline = time.monotonic() + 15
        while not port_accepts(port):
            assert proc.poll() is None, f"broker exited {proc.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"broker not ready:\n{tail(log)}"
            time.sleep(0.05)
        bs = f"127.0.0.1:{port}"
        topic = uniq("nonroot")
        create_topic(bs, topic, 2)
        recs = [Rec(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
        produce_confluent(bs, topic, recs)
        got = consume_confluent(bs, topic, [0, 1], len(recs))
        assert sorted(g.value for g in got) == sorted(r.value for r in recs)
        text = log.read_text(errors="replace")
        assert "memlock_limit=Some(8388608)" in text, text[-2000:]
        owner = data.stat().st_uid
        assert owner == NOBODY, f"data dir owned by {owner}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, f"unclean exit {proc.returncode}:\n{tail(log)}"
