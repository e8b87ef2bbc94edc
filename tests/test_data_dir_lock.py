"""Acceptance 10: a data dir is locked by the broker that uses it."""

import time

import pytest

from conftest import tail
from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq

pytestmark = pytest.mark.sluice_only


def test_second_broker_on_same_data_dir_fails(broker_factory):
    first = broker_factory(name="first")
    topic = uniq("lock")
    create_topic(first.bootstrap, topic, 1)
    produce_confluent(first.bootstrap, topic, [Rec(None, b"one")], partition=0)

    second = broker_factory(name="second", data_dir=first.data_dir, start=False)
    proc = second.spawn()
    try:
        rc = proc.wait(15)
    except Exception:
        pytest.fail(f"second broker on a locked data dir still running after 15 s:\n"
                    f"{tail(second.log_path)}")
    second.stopped_on_purpose = True  # its exit is the expected outcome, not a crash
    assert rc != 0, "second broker exited 0"
    msg = second.log_path.read_text(errors="replace")
    assert "lock" in msg.lower() or str(first.data_dir) in msg, \
        f"no clear message about the locked data dir:\n{msg[-2000:]}"
    assert not second.alive()

    # The first broker is unharmed and keeps serving.
    assert first.alive()
    produce_confluent(first.bootstrap, topic, [Rec(None, b"two")], partition=0)
    got = consume_confluent(first.bootstrap, topic, [0], 2)
    assert [g.value for g in got] == [b"one", b"two"]


def test_lock_released_after_stop_and_after_kill(broker_factory):
    first = broker_factory(name="first")
    topic = uniq("lock2")
    create_topic(first.bootstrap, topic, 1)
    produce_confluent(first.bootstrap, topic, [Rec(None, b"a")], partition=0)
    rc = first.stop()
    assert rc in (0, -15), f"broker did not stop on SIGTERM (exit {rc}):\n{tail(first.log_path)}"

    # A different broker process (new port) opens the same dir after a clean stop...
    second = broker_factory(name="second", data_dir=first.data_dir)
    assert [g.value for g in consume_confluent(second.bootstrap, topic, [0], 1)] == [b"a"]
    # ...and after a SIGKILL (no stale lock).
    second.kill()
    t0 = time.monotonic()
    third = broker_factory(name="third", data_dir=first.data_dir)
    assert time.monotonic() - t0 < 15
    assert [g.value for g in consume_confluent(third.bootstrap, topic, [0], 1)] == [b"a"]
