"""Load for tests/test_crash_loop.py: an acks=all producer (confluent-kafka)
that sends records carrying a sequence number to every partition of a topic,
round robin, until a stop file appears, and appends each acknowledged record
as "partition offset seq" to an output file as the delivery report arrives
(flushed at once, so a test reading the file never sees a record twice or a
half line beyond the last newline).

usage: crash_producer.py BOOTSTRAP TOPIC PARTITIONS OUT_FILE STOP_FILE IDEMPOTENT(0|1)
"""

import os
import sys
import time

from confluent_kafka import Producer

RUN_S_MAX = 300  # hard bound whatever happens to the stop file


def main() -> int:
    bootstrap, topic, partitions, out_path, stop_path, idem = sys.argv[1:7]
    partitions = int(partitions)
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
            "message.timeout.ms": 120000, "socket.timeout.ms": 5000,
            "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 500,
            "enable.idempotence": idem == "1"}
    if idem != "1":
        conf["max.in.flight.requests.per.connection"] = 1
    p = Producer(conf)
    out = open(out_path, "a", buffering=1)
    errors = 0

    def cb(err, msg):
        nonlocal errors
        if err is not None:
            errors += 1
            print(f"delivery error: {err}", file=sys.stderr, flush=True)
            return
        out.write(f"{msg.partition()} {msg.offset()} {int(msg.value()[:12])}\n")
        out.flush()

    seq = 0
    start = time.monotonic()
    while not os.path.exists(stop_path) and time.monotonic() - start < RUN_S_MAX:
        v = b"%012d" % seq + b"." * (seq % 300)
        try:
            p.produce(topic, value=v, partition=seq % partitions, on_delivery=cb)
            seq += 1
        except BufferError:
            p.poll(0.05)
            continue
        if seq % 50 == 0:
            p.poll(0.01)  # paces the load and serves delivery reports
    left = p.flush(150)
    out.close()
    print(f"sent {seq}, undelivered {left}, errors {errors}", file=sys.stderr, flush=True)
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
