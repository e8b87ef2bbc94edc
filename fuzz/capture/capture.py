"""Records the fuzz seed corpus from real clients (see fuzz/capture/README).

Starts a sluice broker on 127.0.0.1 that advertises a recording proxy
(recording_proxy.py), runs kcat, confluent-kafka, kafka-python and aiokafka
through the proxy (metadata, produce with every codec, fetch, list offsets,
admin, consumer groups, idempotent and transactional producers), stops the
broker, and writes under fuzz/corpus/:

  request/           request frames as sent (with their length prefix)
  record_batch/      the record sets of the captured Produce requests
  internal_records/  the __consumer_offsets and __transaction_state records and
                     the transaction markers the broker wrote (selector byte,
                     key length byte, key, value)
  storage_files/     index, time index, producer snapshot, .txnindex and
                     metadata files from the data dir (selector byte, file)

Every loop and client call is bounded in time; the broker and every client
are stopped by this script. Usage (from the repository root):

  SLUICE_BIN=target/debug/sluice .venv/bin/python fuzz/capture/capture.py [--out fuzz/corpus]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kclients as kc  # noqa: E402
from conftest import Broker, free_port  # noqa: E402
from groupclients import GROUP_SETTINGS  # noqa: E402
from recording_proxy import RecordingProxy  # noqa: E402
from wire import extract_record_sets, internal_records, API_NAMES  # noqa: E402

# Distinct frames kept per (API, version, client); captures repeat themselves
# (heartbeats, fetches) and differ only in correlation ids.
FRAMES_PER_KIND = 3
# Distinct record sets kept per (client, codec).
RECORD_SETS_PER_KIND = 3
# Internal records kept per kind (offset commit, group metadata, transaction).
INTERNAL_PER_KIND = 12
# Files of one kind kept from the data dir.
FILES_PER_KIND = 6
# Time given to the log cleaner (log.cleaner.backoff.ms is set far below it).
CLEANER_WAIT_S = 3.0
# Largest file kept in the corpus.
MAX_SEED_BYTES = 64 << 10

RECS = [kc.Rec(f"k{i}".encode(), f"value-{i}-".encode() * 3, (("h", b"v"),) if i % 2 else ())
        for i in range(8)]
KCAT_RECS = [kc.Rec(f"k{i}".encode(), f"value-{i}".encode(), ()) for i in range(8)]


def scenario(proxy: RecordingProxy, label: str, fn, *args, **kw) -> None:
    """Runs one client scenario with its frames labelled; a failure is reported, not fatal."""
    proxy.label = label
    t0 = time.monotonic()
    try:
        fn(*args, **kw)
        print(f"  {label}: ok ({time.monotonic() - t0:.1f}s)")
    except Exception:  # noqa: BLE001 - a client scenario that fails still leaves frames
        print(f"  {label}: FAILED\n{traceback.format_exc(limit=3)}")


# -- scenarios -------------------------------------------------------------

def kcat_all(bs: str, topic: str) -> None:
    k = kc.kcat_bin()
    subprocess.run([k, "-L", "-b", bs], capture_output=True, timeout=20, check=True)
    for codec in kc.CODECS:
        kc.produce_kcat(bs, topic, KCAT_RECS, codec=codec)
    kc.consume_kcat(bs, topic, [0], len(KCAT_RECS) * len(kc.CODECS), timeout=20)
    subprocess.run([k, "-Q", "-b", bs, "-t", f"{topic}:0:-1"], capture_output=True, timeout=20)
    subprocess.run([k, "-b", bs, "-G", kc.uniq("kcat-g"), topic, "-e", "-q",
                    "-X", "session.timeout.ms=6000"], capture_output=True, timeout=30)


def confluent_all(bs: str, topic: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic)
    a = kc.admin(bs)
    extra = kc.uniq("cf-admin")
    a.create_topics([NewTopic(extra, 1, 1, config={"retention.ms": "3600000"})],
                    request_timeout=15)[extra].result(20)
    kc.wait_topic(bs, extra)
    res = ConfigResource(ConfigResource.Type.TOPIC, extra)
    a.describe_configs([res], request_timeout=15)[res].result(20)
    inc = ConfigResource(ConfigResource.Type.TOPIC, extra, incremental_configs=[
        ConfigEntry("retention.ms", "7200000",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([inc], request_timeout=15)[inc].result(20)
    old_style = ConfigResource(ConfigResource.Type.TOPIC, extra,
                               set_config={"retention.ms": "3600000"})
    a.alter_configs([old_style], request_timeout=15)[old_style].result(20)
    broker = ConfigResource(ConfigResource.Type.BROKER, "0")
    a.describe_configs([broker], request_timeout=15)[broker].result(20)
    a.create_partitions([NewPartitions(extra, 2)], request_timeout=15)[extra].result(20)
    a.describe_cluster(request_timeout=15).result(20)
    a.delete_topics([extra], request_timeout=15)[extra].result(20)
    for codec in kc.CODECS:
        kc.produce_confluent(bs, topic, RECS, codec=codec, partition=0)
    kc.produce_confluent(bs, topic, RECS, codec="lz4", partition=0,
                         conf={"enable.idempotence": True})
    kc.consume_confluent(bs, topic, [0], 8, timeout=20)
    kc.watermarks(bs, topic, 0)
    # A consumer group: join, sync, heartbeats, commit, offset fetch, leave.
    group = kc.uniq("cf-g")
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500, "socket.timeout.ms": 10000,
                  "fetch.wait.max.ms": 100})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 20
        got = 0
        while got < 5 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got += 1
                c.commit(message=m, asynchronous=False)
        c.committed([TopicPartition(topic, 0)], timeout=10)
        c.offsets_for_times([TopicPartition(topic, 0, 0)], timeout=10)
        time.sleep(1.5)  # a few heartbeats
    finally:
        c.close()
    a.list_consumer_groups(request_timeout=15).result(20)
    a.describe_consumer_groups([group], request_timeout=15)[group].result(20)
    # A transactional producer: one committed transaction with offsets, one aborted.
    p = Producer({"bootstrap.servers": bs, "transactional.id": kc.uniq("cf-tx"),
                  "socket.timeout.ms": 10000, "linger.ms": 5})
    p.init_transactions(20)
    p.begin_transaction()
    for r in RECS[:3]:
        p.produce(topic, key=r.key, value=r.value, partition=0)
    meta = Consumer({"bootstrap.servers": bs, "group.id": group}).consumer_group_metadata()
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 3)], meta, 20)
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce(topic, key=b"aborted", value=b"x", partition=0)
    p.flush(10)
    p.abort_transaction(20)
    a.delete_consumer_groups([group], request_timeout=15)[group].result(20)


def kafka_python_all(bs: str, topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    a = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=15000)
    try:
        extra = kc.uniq("kp-admin")
        a.create_topics([NewTopic(extra, 1, 1)], timeout_ms=15000)
        kc.wait_topic(bs, extra)
        a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, extra)])
        a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, extra,
                                        configs={"retention.ms": "3600000"})])
        a.delete_topics([extra], timeout_ms=15000)
        for codec in kc.CODECS:
            kc.produce_kafka_python(bs, topic, RECS, codec=codec)
        kc.consume_kafka_python(bs, topic, [0], 8, timeout=20)
        group = kc.uniq("kp-g")
        c = KafkaConsumer(topic, bootstrap_servers=bs, group_id=group,
                          enable_auto_commit=False, auto_offset_reset="earliest",
                          session_timeout_ms=6000, heartbeat_interval_ms=500,
                          request_timeout_ms=15000, fetch_max_wait_ms=100)
        try:
            deadline = time.monotonic() + 20
            got = 0
            while got < 5 and time.monotonic() < deadline:
                for _tp, msgs in c.poll(timeout_ms=200).items():
                    got += len(msgs)
            c.commit()
            time.sleep(1.5)
        finally:
            c.close()
        a.list_groups()
        a.describe_groups([group])
        a.list_group_offsets(group)
        a.delete_group_offsets(group, [TopicPartition(topic, 0)])
        a.describe_cluster()
        a.describe_producers([TopicPartition(topic, 0)])
        p = KafkaProducer(bootstrap_servers=bs, transactional_id=kc.uniq("kp-tx"),
                          request_timeout_ms=10000, max_block_ms=15000)
        try:
            p.init_transactions()
            p.begin_transaction()
            for r in RECS[:3]:
                p.send(topic, key=r.key, value=r.value, partition=0)
            p.commit_transaction()
            a.list_transactions()
            a.describe_transactions([p.config["transactional_id"]])
        finally:
            p.close(timeout=5)
    finally:
        a.close()


def aiokafka_all(bs: str, topic: str) -> None:
    for codec in kc.CODECS:
        kc.produce_aiokafka(bs, topic, RECS, codec=codec)
    kc.consume_aiokafka(bs, topic, [0], 8, timeout=20)

    async def run():
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        a = AIOKafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=15000)
        await asyncio.wait_for(a.start(), 15)
        try:
            extra = kc.uniq("ak-admin")
            await asyncio.wait_for(a.create_topics([NewTopic(extra, 1, 1)]), 20)
            await asyncio.wait_for(a.delete_topics([extra]), 20)
        finally:
            await asyncio.wait_for(a.close(), 10)
        group = kc.uniq("ak-g")
        c = AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=500,
                             request_timeout_ms=15000, fetch_max_wait_ms=100)
        await asyncio.wait_for(c.start(), 20)
        try:
            batch = await asyncio.wait_for(c.getmany(timeout_ms=5000), 20)
            if batch:
                await asyncio.wait_for(c.commit(), 20)
            await asyncio.sleep(1.5)
        finally:
            await asyncio.wait_for(c.stop(), 15)
        p = AIOKafkaProducer(bootstrap_servers=bs, transactional_id=kc.uniq("ak-tx"),
                             request_timeout_ms=10000)
        await asyncio.wait_for(p.start(), 20)
        try:
            async with p.transaction():
                for r in RECS[:3]:
                    await p.send(topic, key=r.key, value=r.value, partition=0)
        finally:
            await asyncio.wait_for(p.stop(), 15)

    asyncio.run(run())


# -- writing the corpus ----------------------------------------------------

def digest(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()[:12]


def write_seeds(out: Path, seeds: dict[str, bytes]) -> int:
    """Writes `name -> bytes` into `out` (emptied first); returns the bytes written."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    total = 0
    for name, data in sorted(seeds.items()):
        (out / name).write_bytes(data)
        total += len(data)
    print(f"  {out}: {len(seeds)} files, {total} bytes")
    return total


def request_seeds(proxy: RecordingProxy) -> dict[str, bytes]:
    kept: dict[tuple, list[bytes]] = defaultdict(list)
    for c in proxy.captured:
        kind = (API_NAMES.get(c.api_key, f"api{c.api_key}"), c.api_version, c.label)
        # Correlation ids (bytes 8..12) differ between otherwise equal frames.
        same = [f for f in kept[kind] if f[:8] + f[12:] == c.frame[:8] + c.frame[12:]]
        if not same and len(kept[kind]) < FRAMES_PER_KIND and len(c.frame) <= MAX_SEED_BYTES:
            kept[kind].append(c.frame)
    return {f"{api}-v{v}-{label}-{digest(f)}": f
            for (api, v, label), frames in kept.items() for f in frames}


def record_set_seeds(proxy: RecordingProxy) -> dict[str, bytes]:
    kept: dict[tuple, list[bytes]] = defaultdict(list)
    for c in proxy.captured:
        if c.api_key != 0:
            continue
        for records in extract_record_sets(c.frame[4:]):
            codec = ["none", "gzip", "snappy", "lz4", "zstd"][records[22] & 7] \
                if len(records) > 22 and records[22] & 7 < 5 else "other"
            kind = (c.label, codec)
            if records not in kept[kind] and len(kept[kind]) < RECORD_SETS_PER_KIND \
                    and len(records) <= MAX_SEED_BYTES:
                kept[kind].append(records)
    return {f"{label}-{codec}-{digest(r)}": r for (label, codec), rs in kept.items() for r in rs}


def data_dir_seeds(data: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    internal: dict[tuple, list[bytes]] = defaultdict(list)
    for topic, selector in (("__consumer_offsets", 0), ("__transaction_state", 1)):
        for log in sorted(data.glob(f"{topic}-*/*.log")):
            for key, value in internal_records(log.read_bytes()):
                if key is None:
                    continue
                tombstone = 2 if value is None else 0
                seed = bytes([selector | tombstone, len(key)]) + key + (value or b"")
                kind = (topic, key[:2], tombstone)
                if len(key) < 256 and seed not in internal[kind] \
                        and len(internal[kind]) < INTERNAL_PER_KIND:
                    internal[kind].append(seed)
    # Transaction markers: the control records in the user topics' segments.
    for log in sorted(data.glob("*/*.log")):
        if log.parent.name.startswith("__"):
            continue
        for key, value in internal_records(log.read_bytes(), control=True):
            if key is None or value is None:
                continue
            seed = bytes([4, len(key)]) + key + value
            if seed not in internal[("marker", b"", 0)] \
                    and len(internal[("marker", b"", 0)]) < INTERNAL_PER_KIND:
                internal[("marker", b"", 0)].append(seed)
    files: dict[int, list[bytes]] = defaultdict(list)
    kinds = {".index": 0, ".timeindex": 1, ".snapshot": 2, ".txnindex": 3}
    for f in sorted(data.rglob("*")):
        if not f.is_file():
            continue
        if f.name == "cleaner-offset.checkpoint":
            kind = 4
        elif f.name == "cleaner-swap":
            kind = 5
        elif f.name == "leader-epoch-checkpoint":
            kind = 6
        elif f.name == "__sluice_metadata.json":
            kind = 255
        else:
            kind = kinds.get(f.suffix)
        if kind is None:
            continue
        b = f.read_bytes()
        if b and len(b) <= MAX_SEED_BYTES and b not in files[kind] \
                and len(files[kind]) < FILES_PER_KIND:
            files[kind].append(b)
    names = {0: "index", 1: "timeindex", 2: "snapshot", 3: "txnindex", 4: "cleaner-checkpoint",
             5: "cleaner-swap", 6: "leader-epoch", 255: "metadata"}
    prefix = {"__consumer_offsets": "offsets", "__transaction_state": "txn", "marker": "marker"}
    internal_out = {f"{prefix[t]}-{'tombstone' if tomb else 'record'}-{digest(s)}": s
                    for (t, _v, tomb), seeds in internal.items() for s in seeds}
    files_out = {f"{names[k]}-{digest(b)}": bytes([k]) + b for k, bs in files.items() for b in bs}
    # The cleaner's swap manifest exists only while a pass is being committed, so no run
    # leaves one behind: one written by hand in its format (storage/compact_files.rs).
    files_out["cleaner-swap-handmade"] = bytes([5]) + b"version 1\nkeep 0 40\ndrop 40 90\n"
    return internal_out, files_out


def compacted(bs: str) -> None:
    """Rounds of the same keys on a compacted topic with tiny segments, then time for the
    cleaner: leaves a cleaner checkpoint and rolled segments with their index files."""
    topic = kc.uniq("compacted")
    kc.create_topic(bs, topic, 1, config={"cleanup.policy": "compact", "segment.bytes": "1024",
                                          "min.cleanable.dirty.ratio": "0.01"})
    for _ in range(6):
        kc.produce_confluent(bs, topic, RECS, partition=0)
    time.sleep(CLEANER_WAIT_S)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "fuzz" / "corpus")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-capture-"))
    proxy_port = free_port()
    # Small segments and a short cleaner interval so that the data dir holds
    # rolled segments (index files, producer snapshots) and cleaned partitions.
    settings = dict(GROUP_SETTINGS)
    settings.update({"advertised.listeners": f"127.0.0.1:{proxy_port}",
                     "log.segment.bytes": 4096, "log.index.interval.bytes": 256,
                     "log.cleaner.backoff.ms": 500, "offsets.topic.num.partitions": 2,
                     "offsets.topic.segment.bytes": 4096,
                     "transaction.state.log.num.partitions": 2,
                     "transaction.state.log.segment.bytes": 4096})
    broker = Broker(tmp, name="capture", settings=settings, smp=1)
    broker.start()
    proxy = RecordingProxy(proxy_port, broker.port).start()
    bs = f"127.0.0.1:{proxy_port}"
    try:
        topic = kc.uniq("capture")
        proxy.label = "setup"
        kc.create_topic(bs, topic, 1)
        scenario(proxy, "kcat", kcat_all, bs, topic)
        scenario(proxy, "confluent", confluent_all, bs, topic)
        scenario(proxy, "kafka-python", kafka_python_all, bs, topic)
        scenario(proxy, "aiokafka", aiokafka_all, bs, topic)
        scenario(proxy, "compacted", compacted, bs)
    finally:
        proxy.stop()
        broker.stop()
    print(f"captured {len(proxy.captured)} request frames")
    total = write_seeds(args.out / "request", request_seeds(proxy))
    total += write_seeds(args.out / "record_batch", record_set_seeds(proxy))
    internal, files = data_dir_seeds(broker.data_dir)
    total += write_seeds(args.out / "internal_records", internal)
    total += write_seeds(args.out / "storage_files", files)
    print(f"corpus: {total} bytes")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
