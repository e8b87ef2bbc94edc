"""Acceptance 4: topic administration and produce/consume through the `sluice`
CLI, checked with real clients; and kcat -L metadata."""

import json
import subprocess

import pytest
from confluent_kafka.admin import ConfigResource

from kclients import (Rec, admin, consume_confluent, create_topic, kcat_bin, produce_confluent,
                      uniq, wait_topic)

pytestmark = pytest.mark.sluice_only


def cli(broker, *args, input: bytes | None = None, ok: bool = True, timeout: float = 30):
    from conftest import sluice_bin
    cmd = [str(sluice_bin()), *args, "--bootstrap", broker.bootstrap]
    res = subprocess.run(cmd, input=input if input is not None else b"", capture_output=True,
                         timeout=timeout)
    out, err = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
    if ok:
        assert res.returncode == 0, f"{' '.join(args)} -> {res.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return res.returncode, out, err


def topic_config(bs, name) -> dict:
    a = admin(bs)
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    return {k: e.value for k, e in a.describe_configs([res], request_timeout=15)[res].result(20).items()}


def test_cli_topic_lifecycle(broker):
    bs = broker.bootstrap
    name = uniq("cli")
    cli(broker, "topic", "create", name, "--partitions", "3", "--config", "retention.ms=3600000")
    md = wait_topic(bs, name, 3)
    assert sorted(md.topics[name].partitions) == [0, 1, 2]
    assert topic_config(bs, name)["retention.ms"] == "3600000"

    # Creating it again fails with a message that says so.
    rc, out, err = cli(broker, "topic", "create", name, "--partitions", "3", ok=False)
    assert rc != 0
    assert "exist" in (out + err).lower(), out + err

    other = uniq("cli-other")
    create_topic(bs, other, 1)
    _, out, _ = cli(broker, "topic", "list")
    listed = set(out.split())
    assert name in listed and other in listed, out

    _, out, _ = cli(broker, "topic", "describe", name)
    assert name in out
    assert "retention.ms" in out and "3600000" in out, out

    cli(broker, "topic", "add-partitions", name, "--total", "5")
    wait_topic(bs, name, 5)

    cli(broker, "topic", "alter-config", name, "--set", "retention.ms=5000")
    assert topic_config(bs, name)["retention.ms"] == "5000"

    cli(broker, "topic", "delete", name)
    wait_topic(bs, name, present=False)
    _, out, _ = cli(broker, "topic", "list")
    assert name not in out.split() and other in out.split(), out

    rc, out, err = cli(broker, "topic", "describe", name, ok=False)
    assert rc != 0, "describe of a deleted topic should fail"


def test_cli_produce_then_client_consume(broker):
    bs = broker.bootstrap
    name = uniq("clip")
    create_topic(bs, name, 1)
    lines = [b"k%d:value number %d" % (i, i) for i in range(50)]
    cli(broker, "produce", name, "--key-delimiter", ":", "--acks", "all",
        input=b"\n".join(lines) + b"\n")
    got = consume_confluent(bs, name, [0], 50)
    assert [(g.offset, g.key, g.value) for g in got] == \
        [(i, b"k%d" % i, b"value number %d" % i) for i in range(50)]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_cli_produce_partition_compression(broker, codec):
    bs = broker.bootstrap
    name = uniq("clic")
    create_topic(bs, name, 3)
    cli(broker, "produce", name, "--partition", "2", "--compression", codec,
        input=b"".join(b"line %d\n" % i for i in range(20)))
    got = consume_confluent(bs, name, range(3), 20)
    assert {g.partition for g in got} == {2}
    assert [g.value for g in sorted(got, key=lambda g: g.offset)] == [b"line %d" % i for i in range(20)]


def test_client_produce_then_cli_consume(broker):
    bs = broker.bootstrap
    name = uniq("clic")
    create_topic(bs, name, 2)
    recs = [Rec(b"key%d" % i, b"val%d" % i) for i in range(10)]
    produce_confluent(bs, name, recs, partition=1)

    _, out, _ = cli(broker, "consume", name, "--partition", "1", "--offset", "beginning",
                    "--count", "10", "--print-key", "--key-delimiter", "=")
    assert out.splitlines() == [f"key{i}=val{i}" for i in range(10)]

    # From an absolute offset, exiting at the end of the partition.
    _, out, _ = cli(broker, "consume", name, "--partition", "1", "--offset", "7", "-e")
    assert out.splitlines() == ["val7", "val8", "val9"]

    # From the end with -e: nothing.
    _, out, _ = cli(broker, "consume", name, "--partition", "1", "--offset", "end", "-e")
    assert out.strip() == ""


def test_cli_round_trip(broker):
    """sluice produce | sluice consume: keys and values come back in order."""
    name = uniq("clirt")
    create_topic(broker.bootstrap, name, 1)
    lines = [f"user{i % 4}|event {i}" for i in range(30)]
    cli(broker, "produce", name, "--key-delimiter", "|", "--acks", "all",
        input=("\n".join(lines) + "\n").encode())
    _, out, _ = cli(broker, "consume", name, "--offset", "beginning", "--count", "30",
                    "--print-key", "--key-delimiter", "|")
    assert out.splitlines() == lines


def test_kcat_metadata(broker):
    bs = broker.bootstrap
    name = uniq("kl")
    create_topic(bs, name, 4)
    res = subprocess.run([kcat_bin(), "-L", "-b", bs, "-J", "-m", "10"], capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    md = json.loads(res.stdout)
    assert len(md["brokers"]) == 1
    [br] = md["brokers"]
    assert br["name"].endswith(f":{broker.port}"), br
    topics = {t["topic"]: t for t in md["topics"]}
    assert name in topics
    parts = topics[name]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2, 3]
    assert all(p["leader"] == br["id"] for p in parts)
    # The plain text form lists it too.
    res = subprocess.run([kcat_bin(), "-L", "-b", bs, "-t", name, "-m", "10"], capture_output=True,
                         timeout=30)
    assert res.returncode == 0 and f'topic "{name}" with 4 partitions' in res.stdout.decode(), \
        res.stdout.decode() + res.stderr.decode()


def test_cli_produce_auto_creates_topic(broker):
    """The README's first example: produce to a topic nobody created, read it back."""
    name = uniq("greetings")
    cli(broker, "produce", name, input=b"hello\n")
    _, out, _ = cli(broker, "consume", name, "-e")
    assert out.splitlines() == ["hello"]


def test_cli_produce_unknown_topic_when_auto_create_off(broker_factory):
    b = broker_factory(settings={"auto.create.topics.enable": "false"}, name="noauto")
    code, _, err = cli(b, "produce", uniq("missing"), input=b"x\n", ok=False)
    assert code != 0 and "UNKNOWN_TOPIC_OR_PARTITION" in err, err
