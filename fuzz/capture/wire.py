"""Just enough of Kafka's wire formats to cut a capture into fuzz seeds: the
record sets of a Produce request (v3-v11), and the key/value of each record
in a segment file (`.log`, record batches v2, uncompressed)."""

from __future__ import annotations

import struct

API_NAMES = {
    0: "produce", 1: "fetch", 2: "list_offsets", 3: "metadata", 8: "offset_commit",
    9: "offset_fetch", 10: "find_coordinator", 11: "join_group", 12: "heartbeat",
    13: "leave_group", 14: "sync_group", 15: "describe_groups", 16: "list_groups",
    18: "api_versions", 19: "create_topics", 20: "delete_topics", 22: "init_producer_id",
    24: "add_partitions_to_txn", 25: "add_offsets_to_txn", 26: "end_txn",
    28: "txn_offset_commit", 32: "describe_configs", 33: "alter_configs",
    37: "create_partitions", 42: "delete_groups", 44: "incremental_alter_configs",
    47: "offset_delete", 60: "describe_cluster", 61: "describe_producers",
    65: "describe_transactions", 66: "list_transactions",
}

# First flexible (compact encodings, tagged fields) Produce version.
PRODUCE_FLEXIBLE = 9


class Reader:
    def __init__(self, b: bytes):
        self.b, self.p = b, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.b):
            raise ValueError("truncated")
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        v = shift = 0
        while True:
            byte = self.take(1)[0]
            v |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return v
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def varint(self) -> int:
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def string(self, flexible: bool) -> bytes | None:
        n = self.uvarint() - 1 if flexible else self.i16()
        return None if n < 0 else self.take(n)

    def nbytes(self, flexible: bool) -> bytes | None:
        n = self.uvarint() - 1 if flexible else self.i32()
        return None if n < 0 else self.take(n)

    def array_len(self, flexible: bool) -> int:
        return self.uvarint() - 1 if flexible else self.i32()

    def tagged(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def extract_record_sets(frame: bytes) -> list[bytes]:
    """The non-empty record sets of a Produce request frame (no length prefix)."""
    r = Reader(frame)
    try:
        api_key, version = r.i16(), r.i16()
        if api_key != 0:
            return []
        flexible = version >= PRODUCE_FLEXIBLE
        r.i32()  # correlation id
        r.string(False)  # client id: int16 string in every header version
        if flexible:
            r.tagged()
        r.string(flexible)  # transactional id
        r.i16()  # acks
        r.i32()  # timeout
        out = []
        for _ in range(max(r.array_len(flexible), 0)):
            r.string(flexible)
            for _ in range(max(r.array_len(flexible), 0)):
                r.i32()
                records = r.nbytes(flexible)
                if records:
                    out.append(records)
                if flexible:
                    r.tagged()
            if flexible:
                r.tagged()
        return out
    except ValueError:
        return []


BATCH_HEADER = 61
ATTR_CONTROL = 0x20


def internal_records(log: bytes, control: bool = False) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record of the uncompressed data batches (with
    `control`: control batches) of a segment file; stops at the first batch
    that does not fit."""
    out = []
    pos = 0
    while pos + BATCH_HEADER <= len(log):
        (length,) = struct.unpack(">i", log[pos + 8:pos + 12])
        size = 12 + length
        if length < BATCH_HEADER - 12 or pos + size > len(log):
            break
        batch = log[pos:pos + size]
        (attrs,) = struct.unpack(">h", batch[21:23])
        (count,) = struct.unpack(">i", batch[57:61])
        pos += size
        if attrs & 7 or bool(attrs & ATTR_CONTROL) != control:
            continue
        r = Reader(batch[BATCH_HEADER:])
        try:
            for _ in range(count):
                body = Reader(r.take(r.varint()))
                body.take(1)  # attributes
                body.varint()  # timestamp delta (a varlong; same encoding)
                body.varint()  # offset delta
                klen = body.varint()
                key = None if klen < 0 else body.take(klen)
                vlen = body.varint()
                value = None if vlen < 0 else body.take(vlen)
                out.append((key, value))
        except ValueError:
            break
    return out
