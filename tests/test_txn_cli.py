"""`sluice txn list|describe|producers` against transactions of a real
confluent-kafka transactional producer."""

import time

import pytest
from confluent_kafka import Producer

from kclients import create_topic, uniq
from test_cli import cli


def rows(out: str) -> list[dict]:
    lines = [l for l in out.splitlines() if l.strip()]
    head = lines[0].split()
    return [dict(zip(head, l.split())) for l in lines[1:]]


@pytest.mark.sluice_only
def test_cli_txn_list_describe_producers(broker_factory):
    b = broker_factory()
    topic, tid = uniq("txcli"), uniq("tid")
    create_topic(b.bootstrap, topic, partitions=2)
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": tid})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"x", partition=1)
    p.flush(10)

    _, out, _ = cli(b, "txn", "list")
    mine = [r for r in rows(out) if r["TRANSACTIONAL-ID"] == tid]
    assert len(mine) == 1 and mine[0]["STATE"] == "Ongoing", out
    pid = mine[0]["PRODUCER-ID"]
    _, out, _ = cli(b, "txn", "describe", tid)
    d = rows(out)[0]
    assert d["STATE"] == "Ongoing" and d["PRODUCER-ID"] == pid, out
    assert d["PARTITIONS"] == f"{topic}-1" and d["TIMEOUT-MS"] == "60000", out
    _, out, _ = cli(b, "txn", "producers", "--topic", topic)
    prods = rows(out)
    assert [(r["PARTITION"], r["PRODUCER-ID"], r["TXN-START-OFFSET"]) for r in prods] == [("1", pid, "0")], out

    p.commit_transaction(30)
    end = time.time() + 10
    while time.time() < end:
        _, out, _ = cli(b, "txn", "list", "--state", "CompleteCommit")
        if any(r["TRANSACTIONAL-ID"] == tid for r in rows(out)):
            break
        time.sleep(0.2)
    assert any(r["TRANSACTIONAL-ID"] == tid for r in rows(out)), out
    _, out, _ = cli(b, "txn", "producers", "--topic", topic, "--partition", "1")
    assert rows(out)[0]["TXN-START-OFFSET"] == "-1", out

    code, _, err = cli(b, "txn", "describe", "no-such-id", ok=False)
    assert code == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in err
    code, _, err = cli(b, "txn", "list", "--state", "Bogus", ok=False)
    assert code == 1 and "Bogus" in err
