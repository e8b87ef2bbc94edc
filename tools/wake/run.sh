#!/usr/bin/env bash
# The machine's own wake-up and timer figures, with no broker running:
# what a cross-shard hop and the stall detector's 1 ms tick cannot beat here.
# Needs gcc and 2 CPUs. Usage: tools/wake/run.sh [SECONDS]   (BENCHMARKS.md)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-8}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
gcc -O2 -pthread -o "$bin/pingpong" "$here/pingpong.c"
gcc -O2 -o "$bin/tick" "$here/tick.c"
gcc -O2 -pthread -o "$bin/membarrier" "$here/membarrier.c"
echo "## cross-thread wake-up round trip, CPU 0 <-> CPU 1"
"$bin/pingpong" 0
"$bin/pingpong" 1
echo "## membarrier(PRIVATE_EXPEDITED), as glommio calls it before each sleep"
"$bin/membarrier" 1 "$secs"
"$bin/membarrier" 0 "$secs"
echo "## 1 ms timer lateness of a plain thread on CPU 1, per second (SCHED_OTHER)"
"$bin/tick" 1 "$secs"
if command -v chrt >/dev/null && chrt -f 1 true 2>/dev/null; then
  echo "## the same under SCHED_FIFO (no other thread may take the core)"
  chrt -f 1 "$bin/tick" 1 "$secs"
fi
