"""Acceptance 1: records produced with every compression codec by every client
come back exactly, read by a *different* client.

For each (producer client, codec) pair the records go to a 4-partition topic
(with --smp 2 the partitions live on both shards) and are read back by the next
client in the ring confluent -> kafka-python -> aiokafka -> kcat -> confluent,
so every client both writes and reads every codec.
"""

import random
import zlib

import pytest

from kclients import CODECS, CONSUMERS, PRODUCERS, Rec, by_partition, create_topic, uniq

PARTITIONS = 4
N = 300
RING = ["confluent", "kafka-python", "aiokafka", "kcat"]
READER = {w: RING[(i + 1) % len(RING)] for i, w in enumerate(RING)}


def make_records(text_only: bool, seed: int) -> list[Rec]:
    """Keyed records with unique values: compressible text and random bytes.
    kcat reads/writes lines of text, so with kcat on either side the values
    are printable ASCII without TAB/newline and every record carries the same
    headers."""
    rnd = random.Random(seed)
    keys = [b"key-%02d" % i for i in range(12)]
    recs = []
    for i in range(N):
        key = keys[rnd.randrange(len(keys))]
        if text_only:
            body = ("lorem ipsum dolor sit amet " * rnd.randrange(1, 20)).encode()
            body += bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789{}[]:,.!") for _ in range(rnd.randrange(0, 40)))
            headers = (("trace", b"abc-123"), ("app", b"sluice-test"))
        else:
            if i % 3 == 0:
                body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
            else:
                body = (b"compressible payload \x00\n\t " * rnd.randrange(1, 40))
            headers = (("seq", b"%d" % i), ("bin", bytes([i % 256, 0, 255])))
            if i % 7 == 0:
                headers = ()
        recs.append(Rec(key, b"%06d|" % i + body, headers))
    if not text_only:
        # A tombstone (null value), an empty value and an empty key.
        recs.append(Rec(b"key-00", None, ()))
        recs.append(Rec(b"key-01", b"", (("empty", b""),)))
        recs.append(Rec(b"", b"%06d|empty-key" % len(recs), ()))
    return recs


def check_roundtrip(recs, delivered, got, partitions):
    # Exactly once: the same multiset of records came back.
    sent_sorted = sorted(recs, key=repr)
    got_sorted = sorted((g.rec() for g in got), key=repr)
    missing = [r for r in sent_sorted if r not in got_sorted]
    extra = [r for r in got_sorted if r not in sent_sorted]
    assert len(got) == len(recs) and not missing and not extra, \
        f"sent {len(recs)}, got {len(got)}; missing {missing[:3]}; unexpected {extra[:3]}"

    parts = by_partition(got)
    assert set(parts) <= set(range(partitions))
    assert len(parts) >= 2, f"all records in one partition ({set(parts)}): key hashing not exercised"

    index = {r: i for i, r in enumerate(recs)}
    key_part: dict = {}
    for p, gs in parts.items():
        # Offsets of a fresh partition are 0..n-1, no gaps, no duplicates.
        assert [g.offset for g in gs] == list(range(len(gs))), f"partition {p} offsets"
        # Records in a partition are in the order they were produced.
        order = [index[g.rec()] for g in gs]
        assert order == sorted(order), f"partition {p}: records out of production order"
        for g in gs:
            key_part.setdefault(g.key, set()).add(p)
    split = {k: v for k, v in key_part.items() if len(v) > 1}
    assert not split, f"same key in several partitions: {split}"

    # Where the producer reported (partition, offset), the consumer saw the
    # record exactly there.
    if delivered[0] is not None:
        at = {(g.partition, g.offset): g.rec() for g in got}
        for r, (p, o) in zip(recs, delivered):
            assert at.get((p, o)) == r, f"delivery report said {p}/{o} for {r}, found {at.get((p, o))}"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("writer", RING)
def test_codec_roundtrip(shared_broker, writer, codec):
    reader = READER[writer]
    bs = shared_broker.bootstrap
    topic = uniq(f"rt-{writer}-{codec}")
    create_topic(bs, topic, PARTITIONS)
    text_only = "kcat" in (writer, reader)
    recs = make_records(text_only, seed=zlib.crc32(f"{writer}/{codec}".encode()))
    delivered = PRODUCERS[writer](bs, topic, recs, codec)
    got = CONSUMERS[reader](bs, topic, range(PARTITIONS), len(recs), timeout=45)
    check_roundtrip(recs, delivered, got, PARTITIONS)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_large_compressed_batch_roundtrip(shared_broker, codec):
    """Large batches (about 1000 records of ~500 bytes, one partition) survive
    compression round trip: kafka-python writes, confluent reads."""
    bs = shared_broker.bootstrap
    topic = uniq(f"big-{codec}")
    create_topic(bs, topic, 1)
    rnd = random.Random(7)
    recs = [Rec(None if i % 2 else b"k%d" % i,
                b"%06d|" % i + bytes(rnd.choice(b"abcdef") for _ in range(500)), ())
            for i in range(1000)]
    delivered = PRODUCERS["kafka-python"](bs, topic, recs, codec, batch_size=256 * 1024,
                                          linger_ms=50)
    got = CONSUMERS["confluent"](bs, topic, [0], len(recs), timeout=45)
    assert [g.rec() for g in sorted(got, key=lambda g: g.offset)] == recs
    assert [o for _, o in delivered] == list(range(len(recs)))
