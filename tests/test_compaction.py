"""Log compaction through the broker with real clients: a compacted topic keeps the
latest value per key at its original offset, drops deleted keys once
delete.retention.ms has passed, shrinks on disk, and refuses records without a key."""
import time

from confluent_kafka import KafkaError, Producer

from kclients import Rec, consume_kafka_python, create_topic, produce_confluent, uniq

KEYS = 40
UPDATES = 50
DELETED = range(0, 5)  # keys whose last record is a tombstone
# The cleaner and housekeeping run often so the test finishes fast.
SETTINGS = {"log.cleaner.backoff.ms": "300", "log.retention.check.interval.ms": "300"}
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "2000",
    # Rolls the active segment (never cleaned) soon after the last write.
    "segment.ms": "1000",
}
WAIT_S = 30


def log_bytes(pdir) -> int:
    return sum(p.stat().st_size for p in pdir.glob("*.log"))


def test_compacted_topic_keeps_latest_per_key_and_drops_deleted(broker_factory):
    b = broker_factory(settings=SETTINGS, name="compact")
    topic = uniq("compact")
    create_topic(b.bootstrap, topic, 1, config=TOPIC_CONFIG)
    value = b"v" * 200
    recs = [Rec(f"key-{k}".encode(), b"%d-%d-" % (k, u) + value)
            for u in range(UPDATES) for k in range(KEYS)]
    recs += [Rec(f"key-{k}".encode(), None) for k in DELETED]
    # Two codecs: batches partly superseded are rebuilt and re-compressed.
    half = len(recs) // 2
    produce_confluent(b.bootstrap, topic, recs[:half], codec="lz4", partition=0,
                      conf={"batch.size": 4096})
    produce_confluent(b.bootstrap, topic, recs[half:], codec="zstd", partition=0,
                      conf={"batch.size": 4096})
    written = sum(len(r.key) + len(r.value or b"") for r in recs)
    latest = {f"key-{k}".encode(): b"%d-%d-" % (k, UPDATES - 1) + value
              for k in range(KEYS) if k not in DELETED}
    deleted = {f"key-{k}".encode() for k in DELETED}

    pdir = b.data_dir / f"{topic}-0"
    deadline = time.monotonic() + WAIT_S
    got = []
    while time.monotonic() < deadline:
        if log_bytes(pdir) < written // 10:
            got = consume_kafka_python(b.bootstrap, topic, [0], 10 ** 6, timeout=4)
            if not deleted & {g.key for g in got}:
                break
        time.sleep(0.5)
    size = log_bytes(pdir)
    assert size < written // 10, f"log did not shrink: {size} bytes on disk, {written} written"
    offsets = [g.offset for g in got]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    seen = {}
    for g in got:
        seen[g.key] = g.value
    assert not deleted & set(seen), "deleted keys are gone after delete.retention.ms"
    assert seen == latest, "the latest value of every live key"
    # Fully compacted: each live key once (the active segment was rolled and cleaned).
    assert len(got) == len(latest), [g.offset for g in got][:20]
    # Offsets are the original ones: the last update of key k was produced at k's slot.
    for g in got:
        k = int(g.key.split(b"-")[1])
        assert g.offset == (UPDATES - 1) * KEYS + k


def test_record_without_key_is_refused_on_compacted_topic(broker_factory):
    b = broker_factory(settings=SETTINGS, name="nokey")
    topic = uniq("compact-nokey")
    create_topic(b.bootstrap, topic, 1, config={"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 15000,
                  "socket.timeout.ms": 10000})
    errors = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(20) == 0
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]
    # Keyed records are accepted.
    produce_confluent(b.bootstrap, topic, [Rec(b"k", b"v")], partition=0)
