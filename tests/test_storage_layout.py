"""Storage as a user sees it through the broker: Kafka's on-disk layout,
partitions spread over several log.dirs, segment roll by size, and retention
by size applied by the broker's housekeeping (earliest offset moves)."""
import time

from kclients import Rec, consume_confluent, create_topic, produce_confluent, uniq, watermarks


def test_partitions_spread_over_log_dirs(broker_factory, tmp_path):
    dirs = [tmp_path / "disk-a", tmp_path / "disk-b"]
    b = broker_factory(settings={"log.dirs": ",".join(str(d) for d in dirs)}, name="dirs")
    topic = uniq("spread")
    create_topic(b.bootstrap, topic, 4)
    produce_confluent(b.bootstrap, topic, [Rec(b"k", b"v")], partition=3)
    per_dir = {d.name: sorted(p.name for p in d.iterdir() if p.name.startswith(topic)) for d in dirs}
    # Each new partition goes to the dir holding the fewest partitions: 2 and 2.
    assert sorted(len(v) for v in per_dir.values()) == [2, 2], per_dir
    assert sorted(sum(per_dir.values(), [])) == [f"{topic}-{i}" for i in range(4)]
    got = consume_confluent(b.bootstrap, topic, [3], 1)
    assert [g.value for g in got] == [b"v"]


def test_segments_roll_by_size_and_retention_by_size(broker_factory):
    b = broker_factory(settings={"log.retention.check.interval.ms": "200"}, name="ret")
    topic = uniq("roll")
    # 64 KiB segments; keep about 256 KiB.
    create_topic(b.bootstrap, topic, 1, config={"segment.bytes": str(64 * 1024),
                                                "retention.bytes": str(256 * 1024)})
    value = b"x" * 1000
    recs = [Rec(None, value) for _ in range(1000)]  # ~1 MB: ~16 segments
    produce_confluent(b.bootstrap, topic, recs, partition=0,
                      conf={"batch.size": 16384, "linger.ms": 1})
    pdir = b.data_dir / f"{topic}-0"
    # 20-digit names, one .log/.index/.timeindex per segment
    deadline = time.monotonic() + 15
    low = 0
    total = None
    while time.monotonic() < deadline:
        low, high = watermarks(b.bootstrap, topic, 0)
        total = sum(p.stat().st_size for p in pdir.glob("*.log"))
        if low > 0 and total < 512 * 1024:
            break
        time.sleep(0.2)
    assert high == 1000
    assert low > 0, "retention.bytes never deleted a segment"
    logs = sorted(p.name for p in pdir.glob("*.log"))
    assert all(len(n) == len("00000000000000000000.log") and n[:20].isdigit() for n in logs), logs
    assert int(logs[0][:20]) == low, (logs[0], low)
    assert 2 <= len(logs) <= 8, logs
    for n in logs[:-1]:
        assert (pdir / (n[:20] + ".index")).exists() and (pdir / (n[:20] + ".timeindex")).exists()
    assert total < 512 * 1024, total
    # What is left reads back from the new log start, in order.
    got = consume_confluent(b.bootstrap, topic, [0], high - low, start=low)
    assert [g.offset for g in got] == list(range(low, high))
