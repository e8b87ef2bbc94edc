#!/usr/bin/env python3
"""What deleting a segment file costs the thread that does it: write N MiB
with O_DIRECT into DIR, fsync, then time unlink-while-open and the last
close, and (a second file) unlink of a closed file. The kernel frees the
blocks at whichever comes last. Usage: tools/unlink-cost.py DIR [MiB ...]
(default 256 1024). BENCHMARKS.md, "Freeing a deleted file stopped a shard"."""
import mmap
import os
import sys
import time


def write_file(path: str, mib: int) -> int:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
    buf.write(b"x" * (1 << 20))
    for _ in range(mib):
        os.write(fd, buf)
    os.fsync(fd)
    return fd


def main() -> None:
    d = sys.argv[1]
    sizes = [int(a) for a in sys.argv[2:]] or [256, 1024]
    path = os.path.join(d, "unlink-cost.dat")
    for mib in sizes:
        fd = write_file(path, mib)
        t0 = time.perf_counter()
        os.unlink(path)
        t1 = time.perf_counter()
        os.close(fd)
        t2 = time.perf_counter()
        os.close(write_file(path, mib))
        t3 = time.perf_counter()
        os.unlink(path)
        t4 = time.perf_counter()
        print(f"{mib} MiB: unlink while open {(t1 - t0) * 1e3:.3f} ms, last close "
              f"{(t2 - t1) * 1e3:.1f} ms; unlink of a closed file {(t4 - t3) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
