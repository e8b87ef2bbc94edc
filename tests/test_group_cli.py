"""`sluice group list|describe|reset-offsets|delete|delete-offsets`, checked
against what real clients see: lag computed from the same log end offsets a
confluent-kafka consumer reads (watermarks), and a real group member resuming
from offsets the CLI reset."""

import time

import pytest

from groupclients import ConfluentMember, group_offsets, produce_parts, pump, pump_for
from kclients import Rec, create_topic, produce_confluent, uniq, watermarks
from test_cli import cli

pytestmark = pytest.mark.sluice_only


def tables(out: str) -> list[list[dict]]:
    """The output's tables (blocks separated by blank lines, header first) as
    lists of rows keyed by header; lines that are not tables are skipped."""
    result = []
    for block in out.strip().split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or not lines[0].split()[0].isupper():
            continue
        head = lines[0].split()
        rows = [dict(zip(head, ln.split())) for ln in lines[1:]]
        assert all(len(ln.split()) == len(head) for ln in lines[1:]), block
        result.append(rows)
    return result


def describe(broker, group):
    _, out, _ = cli(broker, "group", "describe", group)
    ts = tables(out)
    summary = ts[0][0]
    offsets = next((t for t in ts if t and "LOG-END-OFFSET" in t[0]), [])
    members = next((t for t in ts if t and "MEMBER-ID" in t[0]), [])
    return summary, members, {(r["TOPIC"], int(r["PARTITION"])): r for r in offsets}, out


def consume_and_commit(bs, group, topic, partitions, produced, commit_at):
    """A member that reads everything, then commits `commit_at` (partition -> offset)."""
    from confluent_kafka import TopicPartition
    m = ConfluentMember("c", bs, group, [topic], commit=False, **{"client.id": "lag-client"})
    pump([m], lambda: m.partitions() == set(range(partitions)), what="member assigned")
    pump([m], lambda: len(m.got) >= sum(len(v) for v in produced.values()), what="all records")
    m.c.commit(offsets=[TopicPartition(topic, p, o) for p, o in commit_at.items()],
               asynchronous=False)
    return m


def test_cli_group_describe_lag_matches_log_end(group_broker):
    b = group_broker
    bs = b.bootstrap
    topic, group = uniq("clig"), uniq("cli-grp")
    create_topic(bs, topic, 3)
    produced = produce_parts(bs, topic, {0: 10, 1: 7, 2: 4})
    commit_at = {0: 3, 1: 7, 2: 1}
    m = consume_and_commit(bs, group, topic, 3, produced, commit_at)
    try:
        summary, members, rows, out = describe(b, group)
        assert summary["STATE"] == "Stable" and summary["PROTOCOL-TYPE"] == "consumer", out
        assert summary["MEMBERS"] == "1", out
        assert len(members) == 1 and members[0]["MEMBER-ID"] == m.c.memberid(), out
        assert members[0]["CLIENT-ID"] == "lag-client", out
        assert members[0]["PARTITIONS"] == f"{topic}:0,1,2", out
        assert set(rows) == {(topic, p) for p in range(3)}, out
        for p in range(3):
            _, high = watermarks(bs, topic, p)
            r = rows[(topic, p)]
            assert int(r["LOG-END-OFFSET"]) == high == len(produced[p]), (p, high, out)
            assert int(r["CURRENT-OFFSET"]) == commit_at[p], out
            assert int(r["LAG"]) == high - commit_at[p], out
            assert r["CONSUMER-ID"] == m.c.memberid() and r["CLIENT-ID"] == "lag-client", out

        _, out, _ = cli(b, "group", "list")
        listed = {r["GROUP"]: r for r in tables(out)[0]}
        assert listed[group]["STATE"] == "Stable" and listed[group]["PROTOCOL-TYPE"] == "consumer"
    finally:
        m.close()

    summary, members, rows, out = describe(b, group)
    assert summary["STATE"] == "Empty" and summary["MEMBERS"] == "0", out
    assert "no active members" in out and not members, out
    assert all(r["CONSUMER-ID"] == "-" for r in rows.values()), out
    assert {p: int(rows[(topic, p)]["LAG"]) for p in range(3)} == {0: 7, 1: 0, 2: 3}, out


def test_cli_reset_offsets_then_consumer_resumes(group_broker):
    b = group_broker
    bs = b.bootstrap
    topic, group = uniq("clireset"), uniq("cli-grp")
    create_topic(bs, topic, 2)
    produced = produce_parts(bs, topic, {0: 10, 1: 10})
    m = consume_and_commit(bs, group, topic, 2, produced, {0: 10, 1: 10})
    try:
        # Kafka refuses to reset the offsets of a group with active members.
        rc, out, err = cli(b, "group", "reset-offsets", group, "--topic", topic, "--to-earliest",
                           "--execute", ok=False)
        assert rc != 0 and "inactive" in err and "Stable" in err, (out, err)
        assert group_offsets(bs, group, topic, 2) == {0: 10, 1: 10}
    finally:
        m.close()

    # Dry runs print the plan and commit nothing.
    for args, want in [(["--to-earliest"], {0: 0, 1: 0}), (["--to-latest"], {0: 10, 1: 10}),
                       (["--to-offset", "4"], {0: 4, 1: 4}), (["--to-offset", "99"], {0: 10, 1: 10}),
                       (["--shift-by", "-3"], {0: 7, 1: 7})]:
        _, out, err = cli(b, "group", "reset-offsets", group, "--topic", topic, *args)
        plan = {int(r["PARTITION"]): int(r["NEW-OFFSET"]) for r in tables(out)[0]}
        assert plan == want, (args, out)
        assert "dry run" in err, err
    assert group_offsets(bs, group, topic, 2) == {0: 10, 1: 10}

    _, out, _ = cli(b, "group", "reset-offsets", group, "--topic", topic, "--partition", "1",
                    "--shift-by", "-3", "--execute")
    assert group_offsets(bs, group, topic, 2) == {0: 10, 1: 7}
    cli(b, "group", "reset-offsets", group, "--topic", topic, "--partition", "0",
        "--to-offset", "4", "--execute")
    assert group_offsets(bs, group, topic, 2) == {0: 4, 1: 7}

    # A real member of the group resumes exactly there.
    r = ConfluentMember("resumer", bs, group, [topic])
    try:
        pump([r], lambda: len(r.got) >= 6 + 3, what="records from the reset offsets")
        pump_for([r], 0.5)
        assert sorted((g.partition, g.offset) for g in r.got) == \
            [(0, o) for o in range(4, 10)] + [(1, o) for o in range(7, 10)]
    finally:
        r.close()


def test_cli_reset_offsets_to_datetime(group_broker):
    b = group_broker
    bs = b.bootstrap
    topic, group = uniq("clitime"), uniq("cli-grp")
    create_topic(bs, topic, 1)
    base_ms = (int(time.time()) - 3600) * 1000
    stamps = [base_ms + 1000 * i for i in range(10)]
    produce_confluent(bs, topic, [Rec(b"k", b"v%d" % i) for i in range(10)], partition=0,
                      timestamps=stamps)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamps[6] / 1000))
    cli(b, "group", "reset-offsets", group, "--topic", topic, "--to-datetime", iso + "Z",
        "--execute")
    assert group_offsets(bs, group, topic, 1) == {0: 6}
    # 0.5 s after record 6: the first record at or after it is record 7.
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamps[6] / 1000)) + ".500+00:00"
    _, out, _ = cli(b, "group", "reset-offsets", group, "--topic", topic, "--to-datetime", later)
    assert int(tables(out)[0][0]["NEW-OFFSET"]) == 7, out
    # After the last record: the log end.
    _, out, _ = cli(b, "group", "reset-offsets", group, "--topic", topic,
                    "--to-datetime", "2999-01-01T00:00:00Z")
    assert int(tables(out)[0][0]["NEW-OFFSET"]) == 10, out


def test_cli_group_delete_and_delete_offsets(group_broker):
    b = group_broker
    bs = b.bootstrap
    t, u, group = uniq("clidel-t"), uniq("clidel-u"), uniq("cli-grp")
    create_topic(bs, t, 2)
    create_topic(bs, u, 1)
    for topic in (t, u):
        cli(b, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")
    produce_parts(bs, t, {0: 3, 1: 3})
    m = ConfluentMember("m", bs, group, [t])
    try:
        pump([m], lambda: len(m.got) >= 6, what="records of t")
        rc, _, err = cli(b, "group", "delete", group, ok=False)
        assert rc != 0 and "NON_EMPTY_GROUP (68)" in err, err
        rc, _, err = cli(b, "group", "delete-offsets", group, "--topic", t, ok=False)
        assert rc != 0 and "GROUP_SUBSCRIBED_TO_TOPIC (86)" in err, err
    finally:
        m.close()
    assert group_offsets(bs, group, t, 2) == {0: 3, 1: 3}
    assert group_offsets(bs, group, u, 1) == {0: 0}

    _, out, _ = cli(b, "group", "delete-offsets", group, "--topic", u)
    assert group_offsets(bs, group, u, 1) == {}
    assert group_offsets(bs, group, t, 2) == {0: 3, 1: 3}

    _, out, _ = cli(b, "group", "delete", group)
    assert f"deleted group {group}" in out
    _, out, _ = cli(b, "group", "list")
    assert group not in out.split()
    assert group_offsets(bs, group, t, 2) == {}
    rc, _, err = cli(b, "group", "describe", group, ok=False)
    assert rc != 0 and "GROUP_ID_NOT_FOUND (69)" in err, err
    rc, _, err = cli(b, "group", "delete", uniq("no-such-group"), ok=False)
    assert rc != 0 and "GROUP_ID_NOT_FOUND (69)" in err, err
