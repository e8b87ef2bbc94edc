"""A confluent-kafka group member as its own process, for tests that kill it
with SIGKILL (a member that stops heartbeating without a LeaveGroup).

    python group_member_proc.py BOOTSTRAP GROUP TOPIC SESSION_TIMEOUT_MS

Prints one JSON line per assignment callback ({"assign": [partitions]}) and
exits by itself after 120 s at the latest.
"""

import json
import sys
import time

from confluent_kafka import Consumer


def main() -> None:
    bootstrap, group, topic, session_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": session_ms, "heartbeat.interval.ms": 500,
                  "socket.timeout.ms": 10000, "client.id": "doomed"})

    def on_assign(_c, parts):
        print(json.dumps({"assign": sorted(p.partition for p in parts)}), flush=True)

    def on_revoke(_c, parts):
        print(json.dumps({"revoke": sorted(p.partition for p in parts)}), flush=True)

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        c.poll(0.1)
    c.close()


if __name__ == "__main__":
    main()
